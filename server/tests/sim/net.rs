//! A simulated network in virtual time: one [`Link`] per direction between two addresses, each
//! with a one-way delay, jitter, random loss and an optional rate cap, and a queue of datagrams
//! in flight ordered by delivery time. Loss and jitter are hashes of the link's seed and each
//! datagram's send time and length (see [`Link`]), so a run is a function of its seed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

/// SplitMix64: small, fast and the same on every platform and crate version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How one direction between two endpoints behaves.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    pub delay: Duration,
    /// Extra delay drawn uniformly in [0, jitter] per datagram.
    pub jitter: Duration,
    /// Probability that a datagram is lost, in [0, 1].
    pub loss: f64,
    /// Rate cap in bits per second (None: unlimited).
    pub rate_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops (with a rate cap).
    pub buffer_bytes: usize,
    /// Whether jitter may reorder datagrams (otherwise each leaves after the previous one).
    pub reorder: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            buffer_bytes: 64 * 1024,
            reorder: false,
        }
    }
}

impl LinkConfig {
    pub fn delay_ms(ms: u64) -> Self {
        Self {
            delay: Duration::from_millis(ms),
            ..Self::default()
        }
    }

    pub fn jitter_ms(self, ms: u64) -> Self {
        Self {
            jitter: Duration::from_millis(ms),
            ..self
        }
    }

    pub fn loss(self, loss: f64) -> Self {
        Self { loss, ..self }
    }

    pub fn rate(self, bps: u64, buffer_bytes: usize) -> Self {
        Self {
            rate_bps: Some(bps),
            buffer_bytes,
            ..self
        }
    }
}

/// What happened to the datagrams offered to one link.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    pub sent: u64,
    pub bytes: u64,
    pub lost: u64,
    pub overflowed: u64,
}

/// One direction of a path.
///
/// Each datagram's fate is a hash of the link's seed, its send time, its length and how many
/// datagrams of that length the link took at that instant, not a draw from a running
/// sequence: the engine emits some datagrams of one instant in an order that varies between
/// runs (it iterates hash maps), and a sequence would hand their draws to different datagrams.
/// Datagrams sent at the same instant share one jitter draw, as a burst queued together does.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    seed: u64,
    /// The instant the per-instant state below describes.
    burst_at: Option<Instant>,
    burst_jitter: Duration,
    burst_lengths: HashMap<usize, u64>,
    /// When the bottleneck finishes serialising what it already holds.
    busy_until: Option<Instant>,
    last_arrival: Option<Instant>,
    pub stats: LinkStats,
}

/// A uniform number in [0, 1) from a hash of `parts`.
fn draw(parts: &[u64]) -> f64 {
    let mut rng = Rng::new(0);
    for part in parts {
        rng.0 ^= part.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        rng.next_u64();
    }
    rng.unit()
}

impl Link {
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            seed,
            burst_at: None,
            burst_jitter: Duration::ZERO,
            burst_lengths: HashMap::new(),
            busy_until: None,
            last_arrival: None,
            stats: LinkStats::default(),
        }
    }

    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    /// When a datagram of `len` bytes offered at `now` arrives, or None if it is lost.
    /// `epoch` is the start of the simulation, so draws depend on virtual time only.
    pub fn transmit(&mut self, len: usize, now: Instant, epoch: Instant) -> Option<Instant> {
        self.stats.sent += 1;
        self.stats.bytes += len as u64;
        let t = now.saturating_duration_since(epoch).as_nanos() as u64;
        if self.burst_at != Some(now) {
            self.burst_at = Some(now);
            self.burst_lengths.clear();
            self.burst_jitter = self.config.jitter.mul_f64(draw(&[self.seed, t, 1]));
        }
        let nth = self.burst_lengths.entry(len).or_default();
        *nth += 1;
        let lose = draw(&[self.seed, t, 2, len as u64, *nth]) < self.config.loss;
        let mut leaves = now;
        if let Some(rate) = self.config.rate_bps.filter(|r| *r > 0) {
            let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
            let backlog_bytes = (start - now).as_secs_f64() * rate as f64 / 8.0;
            if backlog_bytes + len as f64 > self.config.buffer_bytes as f64 {
                self.stats.overflowed += 1;
                return None;
            }
            leaves = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = Some(leaves);
        }
        if lose {
            self.stats.lost += 1;
            return None;
        }
        let jitter = if self.config.reorder {
            // Reordering asked for: each datagram its own jitter.
            self.config
                .jitter
                .mul_f64(draw(&[self.seed, t, 3, len as u64, *nth]))
        } else {
            self.burst_jitter
        };
        let mut arrives = leaves + self.config.delay + jitter;
        if !self.config.reorder {
            arrives = arrives.max(self.last_arrival.unwrap_or(arrives));
            self.last_arrival = Some(arrives);
        }
        Some(arrives)
    }
}

/// A datagram on its way.
#[derive(Debug)]
pub struct Datagram {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: BytesMut,
    /// Order of sending, which breaks ties between equal delivery times.
    order: u64,
}

impl PartialEq for Datagram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Datagram {}
impl PartialOrd for Datagram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Datagram {
    /// Reversed, so the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// Drops chosen datagrams on one link, whatever its loss rate: the next `count` whose length
/// is in `lengths` (to lose one particular handshake flight, say).
#[derive(Debug, Clone)]
pub struct DropRule {
    pub lengths: std::ops::RangeInclusive<usize>,
    pub count: u32,
}

/// A datagram offered to a link, as a trace records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub len: usize,
    pub delivered: bool,
}

/// Every link and everything in flight.
#[derive(Debug)]
pub struct Network {
    epoch: Instant,
    links: HashMap<(SocketAddr, SocketAddr), Link>,
    drop_rules: HashMap<(SocketAddr, SocketAddr), DropRule>,
    default_link: LinkConfig,
    seed: u64,
    in_flight: BinaryHeap<Datagram>,
    sent: u64,
    /// Every datagram offered, when tracing (set it to `Some(vec![])`): for finding where two
    /// runs that should be identical part.
    pub trace: Option<Vec<Offered>>,
}

impl Network {
    /// A network where paths nobody configured behave like `default_link`.
    pub fn new(seed: u64, default_link: LinkConfig, epoch: Instant) -> Self {
        Self {
            epoch,
            links: HashMap::new(),
            drop_rules: HashMap::new(),
            default_link,
            seed,
            in_flight: BinaryHeap::new(),
            sent: 0,
            trace: None,
        }
    }

    /// Seeds each link from the network's seed and its endpoints, so adding a link never changes
    /// another link's draws.
    fn link_seed(&self, from: SocketAddr, to: SocketAddr) -> u64 {
        let mut h = Rng::new(self.seed);
        for addr in [from, to] {
            let key = match addr {
                SocketAddr::V4(a) => u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port()),
                SocketAddr::V6(a) => u128::from(*a.ip()) as u64 ^ u64::from(a.port()),
            };
            h.0 ^= key.wrapping_mul(0x100_0000_01b3);
            h.next_u64();
        }
        h.next_u64()
    }

    /// Sets how datagrams from `from` to `to` travel.
    pub fn configure(&mut self, from: SocketAddr, to: SocketAddr, config: LinkConfig) {
        let seed = self.link_seed(from, to);
        self.links
            .entry((from, to))
            .or_insert_with(|| Link::new(config, seed))
            .set_config(config);
    }

    /// Makes every link, existing or future, behave like `config`.
    pub fn configure_all(&mut self, config: LinkConfig) {
        self.default_link = config;
        for link in self.links.values_mut() {
            link.set_config(config);
        }
    }

    /// Drops datagrams from `from` to `to` as `rule` says (replacing an earlier rule).
    pub fn drop_when(&mut self, from: SocketAddr, to: SocketAddr, rule: DropRule) {
        self.drop_rules.insert((from, to), rule);
    }

    /// Whether a drop rule takes this datagram.
    fn dropped_by_rule(&mut self, from: SocketAddr, to: SocketAddr, len: usize) -> bool {
        let Some(rule) = self.drop_rules.get_mut(&(from, to)) else {
            return false;
        };
        if rule.count == 0 || !rule.lengths.contains(&len) {
            return false;
        }
        rule.count -= 1;
        true
    }

    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> Option<&Link> {
        self.links.get(&(from, to))
    }

    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, data: BytesMut, now: Instant) {
        if !self.links.contains_key(&(from, to)) {
            let seed = self.link_seed(from, to);
            self.links
                .insert((from, to), Link::new(self.default_link, seed));
        }
        let ruled_out = self.dropped_by_rule(from, to, data.len());
        let Some(link) = self.links.get_mut(&(from, to)) else {
            return;
        };
        let mut arrival = link.transmit(data.len(), now, self.epoch);
        if ruled_out && arrival.take().is_some() {
            link.stats.lost += 1;
        }
        if let Some(trace) = &mut self.trace {
            trace.push(Offered {
                at: now,
                from,
                to,
                len: data.len(),
                delivered: arrival.is_some(),
            });
        }
        if let Some(at) = arrival {
            self.sent += 1;
            self.in_flight.push(Datagram {
                at,
                from,
                to,
                data,
                order: self.sent,
            });
        }
    }

    /// When the next datagram arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|d| d.at)
    }

    /// The next datagram that has arrived by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Datagram> {
        if self.in_flight.peek()?.at <= now {
            self.in_flight.pop()
        } else {
            None
        }
    }
}
