//! The simulation's event loop: one server worker, publishers and subscribers on a simulated
//! network, all in virtual time. Each step jumps to the earliest thing that can happen (a
//! datagram arriving, a server or client timer, a media frame, a scheduled PLI), so tens of
//! seconds of media take seconds of real time. Signaling is out of band and instantaneous: the
//! server's events are applied to the clients at the step they were emitted.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prism_client::synthetic::{OpusConfig, Vp8Config};
use prism_server::media::layers::LayerRequest;
use prism_server::sim::{SimPolicy, SimWorker};
use prism_server::transport::{ConnEvent, ConnId, SubscribeSpec};

use super::net::{LinkConfig, Network};
use super::peer::{Publisher, SimPeer, StreamStateChange, Subscriber};

/// How many steps may happen at one instant before the loop is declared stuck.
const MAX_STEPS_PER_INSTANT: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Publisher(usize),
    Subscriber(usize),
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub net: Network,
    pub server: SimWorker,
    pub publishers: Vec<Publisher>,
    pub subscribers: Vec<Subscriber>,
    /// Every connection in the order it was opened (the order events are applied in).
    conns: Vec<(ConnId, Role)>,
    by_addr: HashMap<SocketAddr, Role>,
    conn_of: HashMap<Role, ConnId>,
    /// Published tracks by publisher connection, as the server announced them.
    tracks: Vec<(ConnId, String)>,
    out: Vec<(SocketAddr, BytesMut)>,
    touched: Vec<Role>,
    steps_at_now: u32,
    pub steps: u64,
}

pub fn server_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7882))
}

fn publisher_addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 1, 0, 1 + i as u8),
        5000,
    ))
}

fn subscriber_addr(i: usize) -> SocketAddr {
    let (hi, lo) = ((i / 250) as u8, (i % 250) as u8);
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 2, hi, 1 + lo), 5000))
}

impl World {
    /// A world whose links all behave like `link` until configured otherwise.
    pub fn new(seed: u64, link: LinkConfig, policy: SimPolicy) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            net: Network::new(seed, link, start),
            server: SimWorker::new(server_addr(), policy, start),
            publishers: Vec::new(),
            subscribers: Vec::new(),
            conns: Vec::new(),
            by_addr: HashMap::new(),
            conn_of: HashMap::new(),
            tracks: Vec::new(),
            out: Vec::new(),
            touched: Vec::new(),
            steps_at_now: 0,
            steps: 0,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn publisher_addr(&self, i: usize) -> SocketAddr {
        publisher_addr(i)
    }

    pub fn subscriber_addr(&self, i: usize) -> SocketAddr {
        subscriber_addr(i)
    }

    /// Both directions between the server and `client`.
    pub fn configure_path(&mut self, client: SocketAddr, up: LinkConfig, down: LinkConfig) {
        self.net.configure(client, server_addr(), up);
        self.net.configure(server_addr(), client, down);
    }

    /// Connects a publisher of one VP8 track (client offer, server answer); media starts once
    /// the connection is up.
    pub fn add_publisher(&mut self, config: Vp8Config) -> usize {
        let i = self.publishers.len();
        let publisher =
            Publisher::new(publisher_addr(i), config, self.now).expect("publisher peer");
        self.connect_publisher(publisher)
    }

    /// Connects a publisher of one VP8 and one Opus track.
    pub fn add_publisher_with_audio(&mut self, video: Vp8Config, audio: OpusConfig) -> usize {
        let i = self.publishers.len();
        let mut publisher =
            Publisher::new(publisher_addr(i), video, self.now).expect("publisher peer");
        publisher.add_audio(audio).expect("audio track");
        self.connect_publisher(publisher)
    }

    /// Connects a simulcast publisher of one VP8 track (`(rid, config)` per layer, lowest
    /// first).
    pub fn add_simulcast_publisher(&mut self, layers: Vec<(String, Vp8Config)>) -> usize {
        let i = self.publishers.len();
        let publisher = Publisher::simulcast(publisher_addr(i), layers, self.now)
            .expect("simulcast publisher peer");
        self.connect_publisher(publisher)
    }

    /// Connects a simulcast publisher of one VP8 track and one Opus track.
    pub fn add_simulcast_publisher_with_audio(
        &mut self,
        layers: Vec<(String, Vp8Config)>,
        audio: OpusConfig,
    ) -> usize {
        let i = self.publishers.len();
        let mut publisher = Publisher::simulcast(publisher_addr(i), layers, self.now)
            .expect("simulcast publisher peer");
        publisher.add_audio(audio).expect("audio track");
        self.connect_publisher(publisher)
    }

    /// A subscriber's settings for one publisher's video track: a layer request, and whether
    /// it is pinned.
    pub fn track_settings(
        &mut self,
        subscriber: usize,
        publisher: usize,
        request: LayerRequest,
        pinned: bool,
    ) {
        let conn = self.conn_of[&Role::Subscriber(subscriber)];
        let publisher_conn = self.conn_of[&Role::Publisher(publisher)];
        for (p, track_id) in self.tracks.clone() {
            if p == publisher_conn && track_id.starts_with("video") {
                let sid = Self::track_sid(p, &track_id);
                self.server
                    .track_settings(conn, sid, request, pinned, self.now);
            }
        }
    }

    fn connect_publisher(&mut self, mut publisher: Publisher) -> usize {
        let i = self.publishers.len();
        let conn = self.connect(&mut publisher.peer);
        self.publishers.push(publisher);
        self.register(conn, publisher_addr(i), Role::Publisher(i));
        i
    }

    /// Connects a subscriber; it subscribes to every track published, now and later.
    pub fn add_subscriber(&mut self) -> usize {
        let i = self.subscribers.len();
        let mut subscriber = Subscriber::new(subscriber_addr(i), self.now).expect("subscriber");
        let conn = self.connect(&mut subscriber.peer);
        self.subscribers.push(subscriber);
        self.register(conn, subscriber_addr(i), Role::Subscriber(i));
        for (publisher, track_id) in self.tracks.clone() {
            self.subscribe(conn, publisher, track_id);
        }
        i
    }

    fn connect(&mut self, peer: &mut SimPeer) -> ConnId {
        let conn = self.server.open(self.now).expect("open");
        let offer = peer.offer(self.now).expect("client offer");
        let answer = self
            .server
            .client_offer(conn, offer, self.now)
            .expect("server answer")
            .expect("no glare on the first offer");
        peer.apply_answer(answer, self.now).expect("apply answer");
        conn
    }

    fn register(&mut self, conn: ConnId, addr: SocketAddr, role: Role) {
        self.conns.push((conn, role));
        self.conn_of.insert(role, conn);
        self.by_addr.insert(addr, role);
        self.touched.push(role);
    }

    /// The track sid subscribers know a publisher's track by.
    pub fn track_sid(publisher: ConnId, track_id: &str) -> String {
        format!("TR_{}_{track_id}", publisher.0)
    }

    /// The server's connection of a publisher or subscriber.
    pub fn publisher_conn(&self, i: usize) -> Option<ConnId> {
        self.conn_of.get(&Role::Publisher(i)).copied()
    }

    pub fn subscriber_conn(&self, i: usize) -> Option<ConnId> {
        self.conn_of.get(&Role::Subscriber(i)).copied()
    }

    /// Every published track: (publisher connection, track id).
    pub fn tracks(&self) -> &[(ConnId, String)] {
        &self.tracks
    }

    /// A subscriber's layer request for every track it receives.
    pub fn request_layer(&mut self, subscriber: usize, request: LayerRequest) {
        let Some(conn) = self.subscriber_conn(subscriber) else {
            return;
        };
        for (publisher, track_id) in self.tracks.clone() {
            let sid = Self::track_sid(publisher, &track_id);
            self.server.request_layer(conn, sid, request, self.now);
        }
    }

    fn subscribe(&mut self, subscriber: ConnId, publisher: ConnId, track_id: String) {
        let spec = SubscribeSpec {
            subscriber,
            publisher,
            track_sid: Self::track_sid(publisher, &track_id),
            track_id,
            publisher_sid: format!("PA_{}", publisher.0),
            layers: Vec::new(),
            screen_share: false,
        };
        self.server.subscribe(spec, self.now);
    }

    /// Whether every client's peer connection is up.
    pub fn all_connected(&self) -> bool {
        let publishers = self.publishers.iter().map(|p| &p.peer);
        publishers
            .chain(self.subscribers.iter().map(|s| &s.peer))
            .all(|p| p.connected_at.is_some())
    }

    /// Runs until every client is connected; panics if that takes over `limit`.
    ///
    /// Tests impair links after this: with rtc 0.21.1 a lost DTLS flight can stall the
    /// handshake for good (either side; `sim_handshake.rs` reproduces both).
    pub fn connect_all(&mut self, limit: Duration) {
        let connected = self.run_until_true(limit, World::all_connected);
        assert!(connected, "every client connects within {limit:?}");
    }

    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    pub fn run_until(&mut self, end: Instant) {
        loop {
            let next = self.next_event().max(self.now);
            if next > end {
                self.now = end;
                return;
            }
            if next == self.now {
                self.steps_at_now += 1;
                assert!(
                    self.steps_at_now < MAX_STEPS_PER_INSTANT,
                    "the simulation is stuck at {:?}",
                    self.elapsed()
                );
            } else {
                self.steps_at_now = 0;
            }
            self.now = next;
            self.step();
        }
    }

    /// Runs until `done` holds (checked after every step) or `limit` passes; whether it held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let next = self.next_event().max(self.now).min(end);
            self.run_until(next);
            if next == end {
                break;
            }
        }
        done(self)
    }

    fn next_event(&self) -> Instant {
        let peers = self.publishers.iter().map(|p| &p.peer);
        let peers = peers.chain(self.subscribers.iter().map(|s| &s.peer));
        [self.net.next_delivery(), Some(self.server.next_deadline())]
            .into_iter()
            .chain(peers.map(|p| p.deadline()))
            .chain(self.publishers.iter().map(|p| p.next_frame()))
            .chain(self.subscribers.iter().map(|s| s.next_pli()))
            .flatten()
            .min()
            .unwrap_or(self.now + Duration::from_secs(1))
    }

    fn step(&mut self) {
        self.steps += 1;
        let now = self.now;
        while let Some(d) = self.net.pop_due(now) {
            if d.to == server_addr() {
                self.server.receive(d.from, &d.data, now);
            } else if let Some(&role) = self.by_addr.get(&d.to) {
                self.peer_mut(role).receive(d.from, d.data, now);
                self.touched.push(role);
            }
        }
        for (i, p) in self.publishers.iter_mut().enumerate() {
            if p.send_due_frame(now) {
                self.touched.push(Role::Publisher(i));
            }
        }
        for (i, s) in self.subscribers.iter_mut().enumerate() {
            if s.send_due_pli(now) {
                self.touched.push(Role::Subscriber(i));
            }
        }
        for i in 0..self.publishers.len() {
            if self.publishers[i].peer.fire_timeout(now) {
                self.touched.push(Role::Publisher(i));
            }
        }
        for i in 0..self.subscribers.len() {
            if self.subscribers[i].peer.fire_timeout(now) {
                self.touched.push(Role::Subscriber(i));
            }
        }
        self.server.advance(now);
        if self.signal() {
            self.server.advance(now);
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable_by_key(|r| match r {
            Role::Publisher(i) => (0, *i),
            Role::Subscriber(i) => (1, *i),
        });
        touched.dedup();
        for role in touched.drain(..) {
            match role {
                Role::Publisher(i) => {
                    let p = &mut self.publishers[i];
                    p.drain(now);
                    if p.peer.connected_at.is_some() {
                        p.start_media(now);
                    }
                    p.peer.flush(&mut self.net, now);
                }
                Role::Subscriber(i) => {
                    let s = &mut self.subscribers[i];
                    s.drain(now);
                    s.peer.flush(&mut self.net, now);
                }
            }
        }
        self.touched = touched;
        self.server.take_datagrams(&mut self.out);
        for (to, data) in self.out.drain(..) {
            self.net.send(server_addr(), to, data, now);
        }
    }

    fn peer_mut(&mut self, role: Role) -> &mut SimPeer {
        match role {
            Role::Publisher(i) => &mut self.publishers[i].peer,
            Role::Subscriber(i) => &mut self.subscribers[i].peer,
        }
    }

    /// Applies the server's events for every connection; whether any needed the server again.
    fn signal(&mut self) -> bool {
        let mut acted = false;
        for k in 0..self.conns.len() {
            let (conn, role) = self.conns[k];
            for event in self.server.drain_events(conn) {
                match event {
                    ConnEvent::Offer { sdp, id } => {
                        let now = self.now;
                        let answer = self.peer_mut(role).answer(sdp, now).expect("answer");
                        self.server
                            .client_answer(conn, answer, id, now)
                            .expect("server applies the answer");
                        self.touched.push(role);
                        acted = true;
                    }
                    ConnEvent::StreamState {
                        track_sid,
                        paused,
                        rid,
                        rank,
                        ..
                    } => {
                        if let Role::Subscriber(i) = role {
                            self.subscribers[i].stream_states.push(StreamStateChange {
                                at: self.now,
                                track_sid,
                                paused,
                                rid,
                                rank,
                            });
                        }
                    }
                    ConnEvent::ConnectionQuality(report) => {
                        if let Role::Subscriber(i) = role {
                            self.subscribers[i].quality.push((self.now, report));
                        }
                    }
                    ConnEvent::TrackOpened {
                        track_id,
                        first_layer: true,
                        ..
                    } => {
                        self.tracks.push((conn, track_id.clone()));
                        let subscribers: Vec<ConnId> = (0..self.subscribers.len())
                            .filter_map(|i| self.conn_of.get(&Role::Subscriber(i)).copied())
                            .collect();
                        for s in subscribers {
                            self.subscribe(s, conn, track_id.clone());
                        }
                        acted = true;
                    }
                    _ => {}
                }
            }
        }
        acted
    }
}
