//! One worker driven in virtual time, for deterministic simulations (tests of the feedback loop
//! and bandwidth estimation over a simulated network). It owns the same sans-I/O core as a real
//! worker and drives it the way the run loop does, with the caller's clock and no socket: the
//! caller delivers datagrams, takes the ones the server sends, and advances time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use super::peer::PeerSettings;
use super::worker::{HOUSEKEEPING, MediaPolicy, Worker};
use super::{ConnEvent, ConnId, SubscribeSpec, TransportError, WorkerCommand, WorkerStats};
use crate::config::Config;
use crate::media::layers::LayerRequest;

/// Events a connection may queue between two drains before new ones are dropped.
const EVENT_QUEUE: usize = 4096;

/// How a simulated worker treats media and connections (the configuration's defaults unless
/// changed).
#[derive(Debug, Clone)]
pub struct SimPolicy {
    /// At most one keyframe request per layer this often.
    pub keyframe_interval: Duration,
    pub dynacast: bool,
    pub ice_disconnected_timeout: Duration,
    pub ice_failed_timeout: Duration,
    pub bwe: crate::config::BweConfig,
}

impl Default for SimPolicy {
    fn default() -> Self {
        let config = Config::default();
        Self {
            keyframe_interval: Duration::from_millis(config.room.keyframe_request_interval_ms),
            dynacast: config.room.dynacast,
            ice_disconnected_timeout: Duration::from_millis(config.rtc.ice_disconnected_timeout_ms),
            ice_failed_timeout: Duration::from_millis(config.rtc.ice_failed_timeout_ms),
            bwe: config.bwe,
        }
    }
}

/// A media worker in virtual time, listening on `addr` (never bound: datagrams go through the
/// caller's simulated network).
pub struct SimWorker {
    worker: Worker,
    stats: Arc<WorkerStats>,
    events: HashMap<ConnId, mpsc::Receiver<ConnEvent>>,
    next_housekeeping: Instant,
    addr: SocketAddr,
}

impl SimWorker {
    /// A worker whose clock starts at `start`.
    pub fn new(addr: SocketAddr, policy: SimPolicy, start: Instant) -> Self {
        let settings = PeerSettings {
            advertised: vec![addr],
            ice_disconnected_timeout: policy.ice_disconnected_timeout,
            ice_failed_timeout: policy.ice_failed_timeout,
            bwe: policy.bwe.clone(),
        };
        let policy = MediaPolicy {
            keyframe_interval: policy.keyframe_interval,
            dynacast: policy.dynacast,
        };
        let stats = Arc::new(WorkerStats::default());
        Self {
            worker: Worker::new(0, addr, settings, policy, stats.clone()),
            stats,
            events: HashMap::new(),
            next_housekeeping: start,
            addr,
        }
    }

    /// The server's address, as its candidates advertise it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Runs one command now and returns its reply (commands reply before they return).
    fn call<T>(
        &mut self,
        now: Instant,
        make: impl FnOnce(oneshot::Sender<T>) -> WorkerCommand,
    ) -> Result<T, TransportError> {
        let (tx, mut rx) = oneshot::channel();
        self.worker.handle_command(make(tx), now);
        rx.try_recv().map_err(|_| TransportError::WorkerGone)
    }

    /// Creates the server side of a new connection.
    pub fn open(&mut self, now: Instant) -> Result<ConnId, TransportError> {
        let conn = ConnId::next();
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        self.call(now, |reply| WorkerCommand::Open {
            conn,
            events,
            reply,
        })??;
        self.events.insert(conn, rx);
        Ok(conn)
    }

    /// The events the worker emitted for `conn` since the last call (server offers among them).
    pub fn drain_events(&mut self, conn: ConnId) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        if let Some(rx) = self.events.get_mut(&conn) {
            while let Ok(event) = rx.try_recv() {
                out.push(event);
            }
        }
        out
    }

    /// Applies the client's offer; the answer, or None on glare (see `WorkerHandle::offer`).
    pub fn client_offer(
        &mut self,
        conn: ConnId,
        sdp: String,
        now: Instant,
    ) -> Result<Option<String>, TransportError> {
        self.call(now, |reply| WorkerCommand::Offer { conn, sdp, reply })?
    }

    /// Applies the client's answer to the server's offer `id` (from [`ConnEvent::Offer`]).
    pub fn client_answer(
        &mut self,
        conn: ConnId,
        sdp: String,
        id: u32,
        now: Instant,
    ) -> Result<(), TransportError> {
        self.call(now, |reply| WorkerCommand::Answer {
            conn,
            sdp,
            id,
            reply,
        })?
    }

    /// Forwards a publisher's track to a subscriber (the server then offers to it).
    pub fn subscribe(&mut self, spec: SubscribeSpec, now: Instant) {
        self.worker
            .handle_command(WorkerCommand::Subscribe(spec), now);
    }

    /// A subscriber's layer request for one of its tracks.
    pub fn request_layer(
        &mut self,
        subscriber: ConnId,
        track_sid: String,
        request: LayerRequest,
        now: Instant,
    ) {
        self.track_settings(subscriber, track_sid, request, false, now);
    }

    /// A subscriber's layer request, and whether it pins the track (shows it large).
    pub fn track_settings(
        &mut self,
        subscriber: ConnId,
        track_sid: String,
        request: LayerRequest,
        pinned: bool,
        now: Instant,
    ) {
        let command = WorkerCommand::LayerRequest {
            subscriber,
            track_sid,
            request,
            pinned,
        };
        self.worker.handle_command(command, now);
    }

    /// What the downlink allocator of `conn` decided last: estimate, allocated and wanted bits
    /// per second, video tracks paused for bandwidth.
    pub fn downlink(&self, conn: ConnId) -> Option<(u64, u64, u64, u32)> {
        self.worker.downlink(conn)
    }

    /// Closes a connection.
    pub fn close(&mut self, conn: ConnId, now: Instant) {
        self.worker
            .handle_command(WorkerCommand::Close { conn }, now);
        self.events.remove(&conn);
    }

    /// A datagram from `from` reaches the server. Its effects run on the next [`Self::advance`].
    pub fn receive(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        self.worker.handle_datagram(from, datagram, now);
    }

    /// Brings the worker to `now` as one wake of its run loop does: housekeeping when due,
    /// expired connection timers, then everything the connections produced.
    pub fn advance(&mut self, now: Instant) {
        if now >= self.next_housekeeping {
            self.worker.housekeeping(now);
            // Missed ticks are skipped, like the run loop's interval.
            while self.next_housekeeping <= now {
                self.next_housekeeping += HOUSEKEEPING;
            }
        }
        self.worker.fire_timeouts(now);
        self.worker.process_dirty(now);
    }

    /// The datagrams the server sent since the last call, with their destinations.
    pub fn take_datagrams(&mut self, out: &mut Vec<(SocketAddr, BytesMut)>) {
        let first = out.len();
        self.worker.take_datagrams(out);
        let sent = &out[first..];
        let bytes: usize = sent.iter().map(|(_, d)| d.len()).sum();
        self.stats
            .datagrams_out
            .fetch_add(sent.len() as u64, Relaxed);
        self.stats.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// When the worker next needs [`Self::advance`] without any input: its next housekeeping
    /// tick or connection timer.
    pub fn next_deadline(&self) -> Instant {
        self.worker
            .next_deadline()
            .map_or(self.next_housekeeping, |d| d.min(self.next_housekeeping))
    }
}
