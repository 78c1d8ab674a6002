//! The delay-based overuse detector: is the bottleneck's queue growing?
//!
//! The engine's detector (a Kalman filter on the delay change between packet groups, compared
//! with a 12.5 ms threshold, as in the early GCC draft) only fires when the queue grows by
//! more than 12.5 ms per group. Video at 30 frames a second sent 25% above the link's rate
//! grows the queue by about 8 ms per frame: that detector never fires, and the first signal is
//! loss once the queue overflows (a 600 kbit/s link with a 100 ms buffer behind a 750 kbit/s
//! layer overflowed 0.8 s after the link dropped, and frames were lost before the cut).
//!
//! This is the trendline detector of current GCC implementations instead: the delay changes
//! are accumulated and smoothed, a line is fitted through the last [`WINDOW`] of them over
//! time, and its slope (ms of queue per ms), scaled by how many groups back it reaches, is
//! compared with a threshold that adapts to the path's own noise. A queue that grows steadily
//! by a few per cent of the time passed fires within a few hundred milliseconds; jitter that
//! comes and goes does not move a 20-group fit.
//!
//! Pure: instants are parameters.

use std::collections::VecDeque;
use std::time::Instant;

pub use rtc::interceptor::Usage;

/// Groups in the fitted line.
const WINDOW: usize = 20;
/// Weight of the previous smoothed delay against the new accumulated one.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by the number of groups seen, up to this many, and by this gain.
const MAX_DELTAS: u32 = 60;
const GAIN: f64 = 4.0;
const INITIAL_THRESHOLD_MS: f64 = 12.5;
const MIN_THRESHOLD_MS: f64 = 6.0;
const MAX_THRESHOLD_MS: f64 = 600.0;
/// Threshold adaptation per ms, up (the trend is above it) and down.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A trend this far above the threshold is a real queue, not noise to adapt to.
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
const MAX_ADAPT_STEP_MS: f64 = 100.0;
/// The trend must stay above the threshold this long (of send time), over two groups at least.
const OVERUSE_TIME_MS: f64 = 10.0;
/// And the fitted line must rise this much across the window: a queue of a few milliseconds
/// (a path that changed its delay once, a burst the link absorbs) is not worth a cut, and on a
/// quiet path the threshold adapts down to where such a step would cross it.
const MIN_RISE_MS: f64 = 15.0;

#[derive(Debug, Clone)]
pub struct TrendlineDetector {
    first: Option<Instant>,
    last_departure: Option<Instant>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (ms since the first group, smoothed delay in ms), oldest first.
    history: VecDeque<(f64, f64)>,
    deltas: u32,
    previous_trend: f64,
    threshold_ms: f64,
    last_threshold_update: Option<Instant>,
    /// Send time spent above the threshold, in ms; None while below it.
    over_for_ms: Option<f64>,
    over_count: u32,
    usage: Usage,
}

impl Default for TrendlineDetector {
    fn default() -> Self {
        Self {
            first: None,
            last_departure: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            history: VecDeque::with_capacity(WINDOW + 1),
            deltas: 0,
            previous_trend: 0.0,
            threshold_ms: INITIAL_THRESHOLD_MS,
            last_threshold_update: None,
            over_for_ms: None,
            over_count: 0,
            usage: Usage::Normal,
        }
    }
}

impl TrendlineDetector {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// One closed packet group: it left at `departure`, and arrived `delta_ms` later (or
    /// earlier, when negative) relative to the previous group than it left.
    pub fn update(&mut self, departure: Instant, delta_ms: f64) -> Usage {
        let first = *self.first.get_or_insert(departure);
        let send_delta_ms = self.last_departure.map_or(0.0, |last| {
            departure.saturating_duration_since(last).as_secs_f64() * 1000.0
        });
        self.last_departure = Some(departure);
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated_ms += delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let x = departure.saturating_duration_since(first).as_secs_f64() * 1000.0;
        self.history.push_back((x, self.smoothed_ms));
        if self.history.len() > WINDOW {
            self.history.pop_front();
        }
        let trend = if self.history.len() == WINDOW {
            slope(&self.history).unwrap_or(self.previous_trend)
        } else {
            self.previous_trend
        };
        let span_ms = match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        };
        self.detect(departure, trend, trend * span_ms, send_delta_ms);
        self.usage
    }

    fn detect(&mut self, now: Instant, trend: f64, rise_ms: f64, send_delta_ms: f64) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = f64::from(self.deltas.min(MAX_DELTAS)) * trend * GAIN;
        if modified > self.threshold_ms {
            let over = match self.over_for_ms {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.over_for_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS
                && self.over_count > 1
                && trend >= self.previous_trend
                && rise_ms >= MIN_RISE_MS
            {
                self.over_for_ms = Some(0.0);
                self.over_count = 0;
                if self.usage != Usage::Over {
                    tracing::trace!(
                        trend,
                        modified,
                        threshold = self.threshold_ms,
                        history = ?self.history,
                        "queue growing"
                    );
                }
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold_ms {
            self.over_for_ms = None;
            self.over_count = 0;
            self.usage = Usage::Under;
        } else {
            self.over_for_ms = None;
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = trend;
        self.adapt_threshold(now, modified);
    }

    /// The threshold follows the trend's own size, slowly up and faster down, so a path
    /// whose delay wobbles does not read as overuse, and a quiet path stays sensitive.
    fn adapt_threshold(&mut self, now: Instant, modified: f64) {
        let last = *self.last_threshold_update.get_or_insert(now);
        self.last_threshold_update = Some(now);
        if modified.abs() > self.threshold_ms + MAX_ADAPT_OFFSET_MS {
            return;
        }
        let k = if modified.abs() < self.threshold_ms {
            K_DOWN
        } else {
            K_UP
        };
        let elapsed_ms =
            (now.saturating_duration_since(last).as_secs_f64() * 1000.0).min(MAX_ADAPT_STEP_MS);
        self.threshold_ms = (self.threshold_ms
            + k * (modified.abs() - self.threshold_ms) * elapsed_ms)
            .clamp(MIN_THRESHOLD_MS, MAX_THRESHOLD_MS);
    }
}

/// Least-squares slope of `points`; None when they share one x.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Feeds `groups` groups `interval_ms` apart whose delay changes by `delta(i)`; returns
    /// the index of the first group read as overuse.
    fn first_overuse(
        d: &mut TrendlineDetector,
        t0: Instant,
        groups: usize,
        interval_ms: u64,
        delta: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        (0..groups).find(|&i| {
            d.update(t0 + Duration::from_millis(i as u64 * interval_ms), delta(i)) == Usage::Over
        })
    }

    /// Deterministic jitter in [-amp, amp] ms.
    fn jitter(i: usize, amp: f64) -> f64 {
        let x = (i as u64).wrapping_mul(2_654_435_761) % 1000;
        (x as f64 / 500.0 - 1.0) * amp
    }

    #[test]
    fn a_steady_path_with_jitter_is_never_overuse() {
        let mut d = TrendlineDetector::default();
        // Arrival jitter of up to 10 ms on each group: the delay changes by the difference
        // of two jitters, and sums back to a bounded delay.
        let over = first_overuse(&mut d, Instant::now(), 3000, 33, |i| {
            jitter(i + 1, 10.0) - jitter(i, 10.0)
        });
        assert_eq!(over, None);
    }

    #[test]
    fn a_queue_growing_a_quarter_faster_than_time_fires_within_half_a_second() {
        let mut d = TrendlineDetector::default();
        let t0 = Instant::now();
        // A second of a steady path, then frames every 33 ms that take 41 ms to drain: a
        // layer 25% above the link's rate (the engine's detector never fires on this).
        let quiet = 30;
        let over = first_overuse(&mut d, t0, 300, 33, |i| if i < quiet { 0.0 } else { 8.0 })
            .expect("a growing queue is overuse");
        let after_ms = (over - quiet) * 33;
        assert!(after_ms <= 500, "fired {after_ms} ms after the queue began");
    }

    #[test]
    fn a_full_queue_that_stops_growing_is_no_longer_overuse() {
        let mut d = TrendlineDetector::default();
        let t0 = Instant::now();
        let mut seen_over = false;
        let mut last = Usage::Normal;
        // Grows for 20 groups, then stays full (a dropping buffer: no more delay, only loss).
        for i in 0..200 {
            let delta = if (10..30).contains(&i) { 8.0 } else { 0.0 };
            last = d.update(t0 + Duration::from_millis(i * 33), delta);
            seen_over |= last == Usage::Over;
        }
        assert!(seen_over);
        assert_ne!(last, Usage::Over);
    }

    #[test]
    fn a_draining_queue_is_underuse() {
        let mut d = TrendlineDetector::default();
        let t0 = Instant::now();
        let mut usage = Usage::Normal;
        for i in 0..60 {
            let delta = if i < 20 { 0.0 } else { -6.0 };
            usage = d.update(t0 + Duration::from_millis(i * 33), delta);
        }
        assert_eq!(usage, Usage::Under);
    }
}
