//! Counters per subscribed track and per published track, a mergeable latency histogram, and
//! percentiles.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Log-bucketed histogram of durations in microseconds, ~2% relative precision, mergeable.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u32>,
    count: u64,
    max_us: u64,
}

/// Relative width of a bucket.
const GROWTH: f64 = 1.02;
/// Buckets cover 1 µs .. ~ 1000 s.
const BUCKETS: usize = 1400;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us <= 1 {
            return 0;
        }
        ((us as f64).ln() / GROWTH.ln())
            .ceil()
            .min((BUCKETS - 1) as f64) as usize
    }

    fn value(index: usize) -> u64 {
        GROWTH.powi(index as i32).round() as u64
    }

    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[Self::index(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in microseconds (upper bound of its bucket), `None` if empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(Self::value(i).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    /// p50/p95/p99/max in milliseconds.
    pub fn percentiles_ms(&self) -> Option<Percentiles> {
        let ms = |q: f64| self.quantile_us(q).map(|us| us as f64 / 1000.0);
        Some(Percentiles {
            p50: ms(0.50)?,
            p95: ms(0.95)?,
            p99: ms(0.99)?,
            max: self.max_us as f64 / 1000.0,
            count: self.count,
        })
    }
}

/// p50/p95/p99/max of a set of values, and how many values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Values the percentiles are over.
    pub count: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (any order), `None` if empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        Some(Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
            count: v.len() as u64,
        })
    }
}

/// Packet counters of one source as seen by one receiver, from the stamp counters (the SFU
/// rewrites RTP sequence numbers, the stamps it cannot touch).
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    first: Option<u64>,
    highest: u64,
    unique: u64,
    duplicates: u64,
    /// Bit `i` set = counter `highest - i` received; covers the last 1024 counters.
    recent: [u64; 16],
}

const WINDOW: u64 = 1024;

impl SequenceTracker {
    fn bit(&mut self, behind: u64) -> (&mut u64, u64) {
        (
            &mut self.recent[(behind / 64) as usize],
            1u64 << (behind % 64),
        )
    }

    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.recent = [0; 16];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let old = self.recent;
        for i in (0..16).rev() {
            let src = i as isize - words as isize;
            let mut v = if src >= 0 {
                old[src as usize] << bits
            } else {
                0
            };
            if bits > 0 && src > 0 {
                v |= old[src as usize - 1] >> (64 - bits);
            }
            self.recent[i] = v;
        }
    }

    /// Records counter `c`.
    pub fn record(&mut self, c: u64) {
        let Some(first) = self.first else {
            self.first = Some(c);
            self.highest = c;
            self.unique = 1;
            self.recent[0] = 1;
            return;
        };
        if c < first {
            // Older than the first packet we saw: we did not expect it; count it as received
            // and widen the range.
            self.first = Some(c);
            self.unique += 1;
            return;
        }
        if c > self.highest {
            self.shift(c - self.highest);
            self.highest = c;
            self.recent[0] |= 1;
            self.unique += 1;
            return;
        }
        let behind = self.highest - c;
        if behind >= WINDOW {
            // Too old to tell a duplicate apart; count it (rare: a second late).
            self.unique += 1;
            return;
        }
        let (word, mask) = self.bit(behind);
        if *word & mask != 0 {
            self.duplicates += 1;
        } else {
            *word |= mask;
            self.unique += 1;
        }
    }

    /// Packets the source sent between the first and the highest counter seen.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.unique
    }

    /// Packets received more than once.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Expected minus received (never negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }
}

/// Loss accounting for a stream that may switch between simulcast layers: each layer numbers
/// its packets on its own, so counters are tracked per stretch of one layer (a segment, which
/// the server starts on a keyframe of the new layer) and summed.
#[derive(Debug, Default, Clone)]
pub struct LayeredSequence {
    layer: Option<u8>,
    current: SequenceTracker,
    /// Totals of the finished segments: expected, received, duplicates.
    done: (u64, u64, u64),
    /// Layer changes seen.
    pub switches: u64,
}

impl LayeredSequence {
    /// Records counter `c` of layer `layer`; `keyframe_start` marks where a switch may begin.
    /// A packet of another layer that starts no keyframe is a late one from before a switch:
    /// received, not counted against either segment.
    pub fn record(&mut self, layer: u8, c: u64, keyframe_start: bool) {
        match self.layer {
            Some(l) if l == layer => self.current.record(c),
            Some(_) if !keyframe_start => self.done.1 += 1,
            current => {
                if current.is_some() {
                    self.switches += 1;
                    let t = std::mem::take(&mut self.current);
                    self.done.0 += t.expected();
                    self.done.1 += t.received();
                    self.done.2 += t.duplicates();
                }
                self.layer = Some(layer);
                self.current.record(c);
            }
        }
    }

    pub fn expected(&self) -> u64 {
        self.done.0 + self.current.expected()
    }

    pub fn received(&self) -> u64 {
        self.done.1 + self.current.received()
    }

    pub fn duplicates(&self) -> u64 {
        self.done.2 + self.current.duplicates()
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }
}

/// Everything measured for one subscriber's copy of one track.
#[derive(Debug, Clone)]
pub struct TrackStats {
    /// When the subscriber's token was minted (the join clock starts here).
    pub token_at: Instant,
    /// First packet of this track.
    pub first_packet_at: Option<Instant>,
    /// Last packet.
    pub last_packet_at: Option<Instant>,
    /// Counters of the stamps, per simulcast layer segment.
    pub sequence: LayeredSequence,
    /// RTP packets read (including any without a readable stamp).
    pub packets: u64,
    /// Packets whose payload had no readable stamp or a corrupted filler.
    pub bad_payloads: u64,
    /// RTP bytes (12-byte header + payload) read.
    pub bytes: u64,
    /// One-way latency of every stamped packet.
    pub latency: Histogram,
    /// Resolution of the last VP8 keyframe received.
    pub resolution: Option<(u16, u16)>,
    /// Keyframes received.
    pub keyframes: u64,
    /// Start of the measured window, once it started: counters count from here.
    pub window_start: Option<Instant>,
    /// NACKs and PLIs the subscriber's engine had sent for this track at the window's start
    /// and end (read from its peer connection's statistics).
    pub feedback_at_start: Option<(u64, u64)>,
    pub feedback_at_end: Option<(u64, u64)>,
}

impl TrackStats {
    /// Fresh counters for a subscriber that minted its token at `token_at`.
    pub fn new(token_at: Instant) -> Self {
        Self {
            token_at,
            first_packet_at: None,
            last_packet_at: None,
            sequence: LayeredSequence::default(),
            packets: 0,
            bad_payloads: 0,
            bytes: 0,
            latency: Histogram::default(),
            resolution: None,
            keyframes: 0,
            window_start: None,
            feedback_at_start: None,
            feedback_at_end: None,
        }
    }

    /// Starts the measured window: packet, loss, latency and bitrate counters restart; join
    /// time and the last resolution stay.
    pub fn start_window(&mut self, now: Instant) {
        *self = Self {
            token_at: self.token_at,
            first_packet_at: self.first_packet_at,
            resolution: self.resolution,
            window_start: Some(now),
            ..Self::new(self.token_at)
        };
    }

    /// NACKs and PLIs sent during the window, when both ends were read.
    pub fn feedback_in_window(&self) -> Option<(u64, u64)> {
        let ((n0, p0), (n1, p1)) = self.feedback_at_start.zip(self.feedback_at_end)?;
        Some((n1.saturating_sub(n0), p1.saturating_sub(p0)))
    }

    /// Token to first packet.
    pub fn join_time(&self) -> Option<Duration> {
        self.first_packet_at.map(|t| t - self.token_at)
    }

    /// Mean received bitrate between the first and the last packet, bits per second.
    pub fn bitrate_bps(&self) -> Option<f64> {
        let from = match self.window_start {
            Some(w) => w.max(self.first_packet_at?),
            None => self.first_packet_at?,
        };
        let span = (self.last_packet_at? - from).as_secs_f64();
        (span >= 0.5).then(|| self.bytes as f64 * 8.0 / span)
    }

    /// Lost / expected, 0..=1.
    pub fn loss(&self) -> f64 {
        match self.sequence.expected() {
            0 => 0.0,
            e => self.sequence.lost() as f64 / e as f64,
        }
    }
}

/// Counters of one published track.
#[derive(Debug, Clone, Default)]
pub struct PublishStats {
    /// RTP packets written.
    pub packets: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Keyframes generated (scheduled and requested).
    pub keyframes: u64,
    /// PLI/FIR the server sent for this track.
    pub keyframe_requests: u64,
    /// Frames (video) or packets (audio) generated.
    pub frames: u64,
    /// `frames` when the measured window started.
    pub frames_at_window_start: Option<u64>,
    /// Writes that failed.
    pub write_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_us(0.5).unwrap() as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        let p99 = h.quantile_us(0.99).unwrap() as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        assert_eq!(h.quantile_us(1.0), Some(1_000_000));
        let mut other = Histogram::default();
        other.record(Duration::from_secs(5));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.percentiles_ms().unwrap().max, 5000.0);
        assert!(Histogram::default().percentiles_ms().is_none());
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max, p.count),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn sequence_tracker_counts_loss_duplicates_and_reordering() {
        let mut s = SequenceTracker::default();
        for c in [10, 11, 13, 12, 12, 16, 11] {
            s.record(c);
        }
        assert_eq!(s.expected(), 7); // 10..=16
        assert_eq!(s.received(), 5); // 10 11 12 13 16
        assert_eq!(s.duplicates(), 2);
        assert_eq!(s.lost(), 2); // 14 15
        // A big jump keeps working, and late packets inside the window are still deduplicated.
        s.record(2000);
        s.record(1990);
        s.record(1990);
        assert_eq!(s.duplicates(), 3);
        assert_eq!(s.expected(), 1991);
        assert_eq!(s.received(), 7);
    }

    #[test]
    fn layered_sequence_counts_each_segment_on_its_own() {
        let mut s = LayeredSequence::default();
        // Layer 0: counters 100..=109 with 105 lost.
        for c in (100..110).filter(|&c| c != 105) {
            s.record(0, c, c == 100);
        }
        // Switch to layer 2 on its keyframe; a late layer-0 packet after it is not a switch.
        s.record(2, 5000, true);
        s.record(0, 105, false);
        for c in 5001..5010 {
            s.record(2, c, false);
        }
        // Back to layer 0 much later: its counters moved on; the gap is not loss.
        s.record(0, 400, true);
        s.record(0, 401, false);
        assert_eq!(s.switches, 2);
        assert_eq!(s.expected(), 10 + 10 + 2);
        assert_eq!(s.received(), 9 + 1 + 10 + 2);
        assert_eq!(s.lost(), 0, "the late packet filled the one hole");
    }

    #[test]
    fn sequence_tracker_shift_across_words() {
        let mut s = SequenceTracker::default();
        for c in 0..300u64 {
            s.record(c);
        }
        for c in (0..300u64).rev().take(200) {
            s.record(c);
        }
        assert_eq!(s.received(), 300);
        assert_eq!(s.duplicates(), 200);
        assert_eq!(s.lost(), 0);
    }
}
