//! What one connection's interceptor chain and its worker share about the downlink.
//!
//! The chain (estimator, pacer, prober) lives inside the engine's peer connection, out of the
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
    /// Probe bytes the prober still has to send, and when the worker asked.
    probe: Mutex<ProbeBudget>,
    /// Packets the pacer dropped because its queue was full.
    pub pacer_dropped: AtomicU64,
    /// Packets waiting in the pacer.
    pub pacer_queued: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ProbeBudget {
    pub bytes: u64,
    pub due: Option<Instant>,
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

    /// Asks the prober to send `bytes` more probe padding from `now` on.
    pub fn add_probe_bytes(&self, bytes: u64, now: Instant) {
        let mut p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        p.bytes += bytes;
        p.due.get_or_insert(now);
    }

    /// The probe bytes to send now (all of them: the pacer spreads them out).
    pub fn take_probe_bytes(&self) -> u64 {
        let mut p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        p.due = None;
        std::mem::take(&mut p.bytes)
    }

    pub fn probe_due(&self) -> Option<Instant> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner()).due
    }
}

/// The engine's congestion-control interceptor drives this; it forwards to the shared
/// estimator. Its `target_bitrate` is what the engine announces on the RTCP read path; nothing
/// of ours reads that (the pacer reads [`LinkState::pacing_bps`]).
pub struct SharedEstimator(pub SharedLink);

impl BandwidthEstimator for SharedEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.0.estimator().on_reports(now, reports);
    }

    fn target_bitrate(&self) -> f64 {
        self.0.estimator().estimate()
    }
}
