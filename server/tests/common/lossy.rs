//! A UDP relay between clients and the server that drops a chosen share of the datagrams of
//! chosen clients, on loopback and without privileges. The server advertises the relay's
//! address (127.0.0.2, its own port) as its candidate; each client gets its own upstream socket,
//! so the server sees one address per client, as through a NAT.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::net::UdpSocket;

/// Drop rates by client IP, per direction (percent).
#[derive(Debug, Default, Clone)]
pub struct Impairment {
    /// Client IP → percent of server→client datagrams dropped.
    pub to_client: HashMap<IpAddr, u32>,
    /// Client IP → percent of client→server datagrams dropped.
    pub from_client: HashMap<IpAddr, u32>,
}

/// What the relay saw, per client IP.
#[derive(Debug, Default)]
pub struct Counts {
    /// RTP datagrams delivered to the client (RTCP not counted).
    pub rtp_to_client: AtomicU64,
    pub dropped_to_client: AtomicU64,
    pub dropped_from_client: AtomicU64,
}

pub struct LossyRelay {
    pub counts: Arc<Mutex<HashMap<IpAddr, Arc<Counts>>>>,
}

fn is_rtp(datagram: &[u8]) -> bool {
    // SRTP keeps the RTP header in the clear: version 2, and not an RTCP packet type.
    datagram.len() >= 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1])
}

impl LossyRelay {
    /// Relays `front` (where clients send) to `server`, dropping per `impairment` with a fixed
    /// seed so a run is repeatable up to scheduling.
    pub async fn start(front: SocketAddr, server: SocketAddr, impairment: Impairment) -> Self {
        let front = Arc::new(UdpSocket::bind(front).await.expect("relay front"));
        let counts: Arc<Mutex<HashMap<IpAddr, Arc<Counts>>>> = Arc::default();
        let relay_counts = counts.clone();
        tokio::spawn(async move {
            let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut rng = StdRng::seed_from_u64(7);
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let count = relay_counts
                    .lock()
                    .unwrap()
                    .entry(client.ip())
                    .or_default()
                    .clone();
                let loss = impairment
                    .from_client
                    .get(&client.ip())
                    .copied()
                    .unwrap_or(0);
                if loss > 0 && rng.random_range(0..100) < loss {
                    count.dropped_from_client.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let socket = match upstream.get(&client) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("upstream"));
                        upstream.insert(client, s.clone());
                        let (front, s2) = (front.clone(), s.clone());
                        let loss = impairment.to_client.get(&client.ip()).copied().unwrap_or(0);
                        let count = count.clone();
                        tokio::spawn(async move {
                            let mut rng = StdRng::seed_from_u64(client.port() as u64);
                            let mut buf = vec![0u8; 2048];
                            while let Ok(n) = s2.recv(&mut buf).await {
                                if loss > 0 && rng.random_range(0..100) < loss {
                                    count.dropped_to_client.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                if is_rtp(&buf[..n]) {
                                    count.rtp_to_client.fetch_add(1, Ordering::Relaxed);
                                }
                                let _ = front.send_to(&buf[..n], client).await;
                            }
                        });
                        s.connect(server).await.expect("connect upstream");
                        s
                    }
                };
                let _ = socket.send(&buf[..n]).await;
            }
        });
        Self { counts }
    }

    pub fn counts(&self, ip: IpAddr) -> Arc<Counts> {
        self.counts.lock().unwrap().entry(ip).or_default().clone()
    }
}
