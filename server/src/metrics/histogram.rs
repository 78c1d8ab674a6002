//! Fixed-bucket histograms that record with two relaxed atomic adds: no lock, no allocation,
//! so the media workers can record from their loop. `/metrics` and the OTLP export read them.
//!
//! Values are integers in a base unit (microseconds for durations, bits per second for
//! rates); each bucket keeps its count and the sum of its values, so the exported sum is exact
//! and the OTLP bridge can replay a bucket's delta as values that stay inside the bucket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Join time and time to first packet: 50 ms to 20 s (microseconds).
pub const SETUP_BOUNDS_US: &[u64] = &[
    50_000, 100_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000,
    3_000_000, 5_000_000, 10_000_000, 20_000_000,
];
/// One turn of a media worker's loop: 10 µs to 100 ms (microseconds).
pub const LOOP_BOUNDS_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];
/// Downlink estimates and allocations: 64 kbps to 50 Mbps.
pub const BITRATE_BOUNDS_BPS: &[u64] = &[
    64_000, 128_000, 256_000, 512_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000,
    8_000_000, 12_000_000, 20_000_000, 50_000_000,
];

/// A histogram over fixed upper bounds (inclusive, as Prometheus' `le`), plus +Inf.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [u64],
    /// Per bucket, the last one for values above every bound.
    counts: Box<[AtomicU64]>,
    sums: Box<[AtomicU64]>,
}

/// A consistent-enough copy for export: per-bucket counts and sums (not cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    pub counts: Vec<u64>,
    pub sums: Vec<u64>,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> u64 {
        self.sums.iter().sum()
    }
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        let zeros = || (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts: zeros(),
            sums: zeros(),
        }
    }

    pub fn record(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sums[i].fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration in microseconds (the unit of the duration bounds).
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let load = |v: &[AtomicU64]| v.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        HistogramSnapshot {
            bounds: self.bounds,
            counts: load(&self.counts),
            sums: load(&self.sums),
        }
    }
}

/// The distributions each media worker records, beside its counters in `WorkerStats`.
///
/// The bandwidth estimator records through [`record_estimate`](Self::record_estimate) and
/// [`record_allocation`](Self::record_allocation), once per subscriber per second. With
/// `telemetry.metrics = false` nothing is recorded.
#[derive(Debug)]
pub struct WorkerHistograms {
    enabled: AtomicBool,
    /// From a participant's join request to its peer connection being connected.
    pub join: AtomicHistogram,
    /// From a subscription to the first packet forwarded on it.
    pub first_packet: AtomicHistogram,
    /// Busy time of one turn of the worker loop (from wake-up to the sends flushed).
    pub loop_busy: AtomicHistogram,
    /// Per subscriber, its downlink estimate (bits per second).
    pub estimate: AtomicHistogram,
    /// Per subscriber, the bitrate the allocator gave its tracks (bits per second).
    pub allocation: AtomicHistogram,
}

impl Default for WorkerHistograms {
    fn default() -> Self {
        Self {
            enabled: AtomicBool::new(true),
            join: AtomicHistogram::new(SETUP_BOUNDS_US),
            first_packet: AtomicHistogram::new(SETUP_BOUNDS_US),
            loop_busy: AtomicHistogram::new(LOOP_BOUNDS_US),
            estimate: AtomicHistogram::new(BITRATE_BOUNDS_BPS),
            allocation: AtomicHistogram::new(BITRATE_BOUNDS_BPS),
        }
    }
}

impl WorkerHistograms {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// A subscriber's downlink estimate, in bits per second.
    pub fn record_estimate(&self, bps: u64) {
        if self.enabled() {
            self.estimate.record(bps);
        }
    }

    /// What the allocator gave a subscriber's tracks in all, in bits per second.
    pub fn record_allocation(&self, bps: u64) {
        if self.enabled() {
            self.allocation.record(bps);
        }
    }

    pub fn record_join(&self, d: Duration) {
        if self.enabled() {
            self.join.record_duration(d);
        }
    }

    pub fn record_first_packet(&self, d: Duration) {
        if self.enabled() {
            self.first_packet.record_duration(d);
        }
    }

    pub fn record_loop(&self, d: Duration) {
        if self.enabled() {
            self.loop_busy.record_duration(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_inclusive_buckets() {
        let h = AtomicHistogram::new(&[10, 20]);
        for v in [0, 10, 11, 20, 21, u64::MAX / 4] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2]);
        assert_eq!(s.sums, vec![10, 31, 21 + u64::MAX / 4]);
        assert_eq!(s.count(), 6);
    }

    #[test]
    fn durations_are_microseconds() {
        let h = AtomicHistogram::new(SETUP_BOUNDS_US);
        h.record_duration(Duration::from_millis(120));
        let s = h.snapshot();
        assert_eq!(s.sum(), 120_000);
        assert_eq!(s.counts[2], 1, "120 ms is in the 200 ms bucket");
    }

    #[test]
    fn disabled_records_nothing() {
        let w = WorkerHistograms::default();
        w.set_enabled(false);
        w.record_estimate(1_000_000);
        w.record_join(Duration::from_secs(1));
        assert_eq!(w.estimate.snapshot().count(), 0);
        assert_eq!(w.join.snapshot().count(), 0);
        w.set_enabled(true);
        w.record_allocation(300_000);
        assert_eq!(w.allocation.snapshot().counts[3], 1);
    }
}
