//! What one connection's interceptor chain and its worker share about the downlink.
//!
//! The chain (estimator, pacer) lives inside the engine's peer connection, out of the
//! worker's reach; both run on the worker's thread, so the mutex here is never contended and
//! is taken once per feedback packet or per pacer wake-up, never per forwarded packet of
//! another connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, PacketReport};

use super::estimator::SendSideBwe;

#[derive(Debug, Default)]
pub struct LinkState {
    estimator: Mutex<SendSideBwe>,
    /// Pacing rate in bits per second; 0 = not pacing (no feedback to pace by).
    pacing_bps: AtomicU64,
    /// Packets the pacer dropped (queue full, or video waited too long).
    pub pacer_dropped: AtomicU64,
    /// Bytes of retransmissions the pacer released: they use the link but carry no
    /// transport-wide sequence number (the engine numbers only the primary streams), so the
    /// feedback never counts them.
    pub repair_bytes: AtomicU64,
}

pub type SharedLink = Arc<LinkState>;

impl LinkState {
    pub fn new(estimator: SendSideBwe) -> SharedLink {
        Arc::new(Self {
            estimator: Mutex::new(estimator),
            ..Default::default()
        })
    }

    pub fn estimator(&self) -> MutexGuard<'_, SendSideBwe> {
        // Poisoning needs a panic while held; the estimate is plain numbers, still usable.
        self.estimator.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pacing_bps(&self) -> u64 {
        self.pacing_bps.load(Ordering::Relaxed)
    }

    pub fn set_pacing_bps(&self, bps: u64) {
        self.pacing_bps.store(bps, Ordering::Relaxed);
    }
}

/// The engine's congestion-control interceptor drives this; it forwards to the shared
/// estimator. Its `target_bitrate` is what the engine announces on the RTCP read path; nothing
/// of ours reads that (the pacer reads [`LinkState::pacing_bps`]).
pub struct SharedEstimator(pub SharedLink);

impl BandwidthEstimator for SharedEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let repair = self.0.repair_bytes.load(Ordering::Relaxed);
        let mut estimator = self.0.estimator();
        estimator.note_repair_total(now, repair);
        estimator.on_reports(now, reports);
    }

    fn target_bitrate(&self) -> f64 {
        self.0.estimator().estimate()
    }
}
