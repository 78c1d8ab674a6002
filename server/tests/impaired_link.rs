//! Retransmission over a real impaired link: the server (with a publisher beside it) lives in
//! one network namespace, a subscriber in another, joined by a veth pair that this test makes
//! and removes. The link is capped with `tc tbf` and drops 5% of the UDP datagrams each way
//! with nftables (this kernel has no netem). The subscriber's stream must still be at least
//! 99.5% complete. Needs root, `ip`, `tc` and `nft` (scripts/test.sh installs the last two).

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use prism_client::synthetic::{Vp8Config, Vp8Source, parse_vp8};
use prism_client::{Codec, ConnectOptions, Room, RoomEvent, TrackOptions};
use prism_server::auth::{AccessToken, Grants};

const KEY: &str = "impaired-link-key";
const SECRET: &str = "impaired-link-secret-at-least-32-bytes-long";
const LOSS_PERCENT: u32 = 5;
const SECONDS_OF_MEDIA: u64 = 8;

/// Two namespaces and the veth between them, removed on drop.
struct Link {
    server_ns: String,
    client_ns: String,
    server_ip: Ipv4Addr,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (install iproute2 and nftables)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Link {
    fn new() -> Self {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test makes network namespaces and needs root"
        );
        let id = std::process::id();
        let (server_ns, client_ns) = (format!("prism-srv-{id}"), format!("prism-cli-{id}"));
        let (veth_s, veth_c) = (format!("ps{id}"), format!("pc{id}"));
        // 10.77.x.0/30, x from the pid, so parallel runs do not collide.
        let x = (id % 250) as u8;
        let (server_ip, client_ip) = (Ipv4Addr::new(10, 77, x, 1), Ipv4Addr::new(10, 77, x, 2));
        let link = Link {
            server_ns: server_ns.clone(),
            client_ns: client_ns.clone(),
            server_ip,
        };
        run(&["ip", "netns", "add", &server_ns]);
        run(&["ip", "netns", "add", &client_ns]);
        run(&[
            "ip", "link", "add", &veth_s, "netns", &server_ns, "type", "veth", "peer", "name",
            &veth_c, "netns", &client_ns,
        ]);
        for (ns, dev, addr) in [
            (&server_ns, &veth_s, server_ip),
            (&client_ns, &veth_c, client_ip),
        ] {
            let cidr = format!("{addr}/30");
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // A rate cap on the server's side of the link (what the subscriber downloads through).
        run(&[
            "ip", "netns", "exec", &server_ns, "tc", "qdisc", "add", "dev", &veth_s, "root", "tbf",
            "rate", "8mbit", "burst", "64kbit", "latency", "100ms",
        ]);
        link
    }

    /// Random loss both ways, in the subscriber's namespace. Added once media flows: the
    /// DTLS handshake of rtc 0.21.1 can stall on a lost flight (`tests/sim_handshake.rs`),
    /// and this test is about repairing media, not about the handshake.
    fn add_loss(client_ns: &str) {
        let nft = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", client_ns, "nft"];
            full.extend_from_slice(args);
            run(&full);
        };
        nft(&["add", "table", "inet", "impair"]);
        for hook in ["input", "output"] {
            let chain = format!("{{ type filter hook {hook} priority 0; }}");
            nft(&["add", "chain", "inet", "impair", hook, &chain]);
            let rule = format!("meta l4proto udp numgen random mod 100 lt {LOSS_PERCENT} drop");
            let mut args = vec!["add", "rule", "inet", "impair", hook];
            args.extend(rule.split(' '));
            nft(&args);
        }
    }

    /// Runs `work` on a thread inside namespace `ns`: every socket it opens lives there.
    fn spawn_in<T: Send + 'static>(
        ns: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).expect("namespace file");
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            work()
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn token(identity: &str) -> String {
    AccessToken::new(KEY, SECRET)
        .identity(identity)
        .room("impaired")
        .grants(Grants::default())
        .ttl(Duration::from_secs(600))
        .to_jwt()
        .expect("token")
}

/// What the server side reports once the subscriber is done.
struct ServerSide {
    sent: u64,
    retransmitted: u64,
}

#[test]
fn five_percent_loss_each_way_on_a_capped_veth_is_repaired() {
    let link = Link::new();
    let server_ip = link.server_ip;
    let (url_tx, url_rx) = std_mpsc::channel::<String>();
    // The subscriber says when it has seen enough; the publisher answers with the last
    // packet it sent, which the subscriber then waits for (retransmissions take round trips).
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let (last_tx, last_rx) = tokio::sync::oneshot::channel::<u64>();
    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel::<()>();

    // The server and a publisher beside it (its media reaches the server over loopback).
    let server = Link::spawn_in(&link.server_ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut config = test_config();
            config.bind = IpAddr::V4(server_ip);
            config.rtc.workers = 1;
            config.keys = [(KEY.to_owned(), SECRET.to_owned())].into();
            let server = start_with(config).await;
            let url = http_url(&server);
            let (publisher, _events) =
                Room::connect(&url, &token("publisher"), ConnectOptions::default())
                    .await
                    .expect("publisher connects");
            let video = publisher
                .publish_track(TrackOptions::video("camera", Codec::Vp8, 640, 360))
                .await
                .expect("publish");
            url_tx.send(url).unwrap();
            let mut source = Vp8Source::new(Vp8Config {
                bitrate_bps: 1_000_000,
                keyframe_interval: Duration::from_secs(60),
                ..Vp8Config::default()
            });
            let mut keyframes = video.keyframe_requests();
            let mut tick = tokio::time::interval(source.frame_interval());
            let mut sent = 0u64;
            while done_rx.try_recv().is_err() {
                tick.tick().await;
                if keyframes.try_recv().is_some() {
                    source.request_keyframe();
                }
                for packet in source.next_frame() {
                    let _ = video.write_rtp(&packet).await;
                    sent += 1;
                }
            }
            let _ = last_tx.send(sent - 1);
            // Keep answering NACKs until the subscriber has its last packets (or gave up).
            let _ = finished_rx.await;
            let w = &server.transport().workers()[0].stats;
            let retransmitted = w.nack_retransmitted.load(Ordering::Relaxed);
            let _ = publisher.leave().await;
            ServerSide {
                sent,
                retransmitted,
            }
        })
    });

    let url = url_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server starts in its namespace");
    // The subscriber, across the impaired link.
    let client_ns = link.client_ns.clone();
    let subscriber = Link::spawn_in(&link.client_ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let seen: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
            let (room, mut events) =
                Room::connect(&url, &token("subscriber"), ConnectOptions::default())
                    .await
                    .expect("subscriber connects across the link");
            {
                let seen = seen.clone();
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        if let RoomEvent::TrackSubscribed { remote, .. } = event {
                            let seen = seen.clone();
                            tokio::spawn(async move {
                                while let Ok(packet) = remote.read_rtp().await {
                                    if let Some(stamp) = parse_vp8(&packet.payload) {
                                        seen.lock().unwrap().insert(stamp.counter);
                                    }
                                }
                            });
                        }
                    }
                });
            }
            let flowing = eventually(Duration::from_secs(30), || async {
                seen.lock().unwrap().len() > 30
            })
            .await;
            assert!(flowing, "video reaches the subscriber across the link");
            Link::add_loss(&client_ns);
            tokio::time::sleep(Duration::from_secs(SECONDS_OF_MEDIA)).await; // media runs under loss
            done_tx.send(()).unwrap();
            let last = last_rx.await.expect("the publisher stops");
            eventually(Duration::from_secs(5), || async {
                seen.lock().unwrap().contains(&last)
            })
            .await;
            let _ = finished_tx.send(());
            let _ = room.leave().await;
            let seen = seen.lock().unwrap().clone();
            (seen, last)
        })
    });
    let (seen, last) = subscriber.join().expect("subscriber thread");
    let side = server.join().expect("server thread");
    let first = *seen.first().expect("something arrived");
    assert_eq!(last, side.sent - 1);
    let expected = last - first + 1;
    let complete = seen.range(first..=last).count() as f64 / expected as f64;
    eprintln!(
        "{} of {expected} packets ({:.3}%) through {LOSS_PERCENT}% loss each way at 8 Mbit/s; {} retransmitted",
        seen.len(),
        complete * 100.0,
        side.retransmitted
    );
    assert!(side.retransmitted > 0, "the server retransmitted");
    assert!(
        complete >= 0.995,
        "stream {:.3}% complete",
        complete * 100.0
    );
    drop(link);
}
