//! A stream's bitrate as the worker receives it, over the last second: what forwarding one
//! layer costs a subscriber's link (the allocator's input). Sampled from the layer's running
//! byte count at each housekeeping tick, so the hot path only adds to counters.

use std::time::{Duration, Instant};

/// Bytes a packet costs on the wire beyond its payload: IP, UDP, RTP header with extensions,
/// SRTP tag. Audio sends 50 small packets a second, so this is a third of its cost.
pub const PACKET_OVERHEAD: u64 = 60;

const SLOTS: usize = 11;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    /// (when, wire bytes so far), a ring; `next` is the oldest.
    samples: [Option<(Instant, u64)>; SLOTS],
    next: usize,
    bps: Option<u64>,
}

impl RateMeter {
    /// Records the running total of wire bytes at `now` (call about every 100 ms).
    pub fn sample(&mut self, now: Instant, wire_bytes: u64) {
        self.samples[self.next] = Some((now, wire_bytes));
        self.next = (self.next + 1) % SLOTS;
        // The samples within the window, oldest first.
        let mut within = (0..SLOTS)
            .filter_map(|i| self.samples[(self.next + i) % SLOTS])
            .filter(|(at, _)| {
                now.saturating_duration_since(*at) <= WINDOW + Duration::from_millis(50)
            })
            .peekable();
        let Some(&(first_at, first_bytes)) = within.peek() else {
            self.bps = None;
            return;
        };
        let span = now.saturating_duration_since(first_at);
        if span < Duration::from_millis(500) {
            self.bps = None;
            return;
        }
        // The interval that carried the most bytes is left out: a keyframe (five or more
        // times a frame, often one the server itself asked for at a layer switch) would
        // otherwise lift a layer's rate for a whole second, and the allocator would move a
        // subscriber off the layer it just chose. The pacer spreads a keyframe; the steady
        // rate is what a layer costs.
        let mut busiest = (Duration::ZERO, 0u64);
        let mut previous = None;
        for (at, bytes) in within {
            if let Some((p_at, p_bytes)) = previous {
                let delta: u64 = bytes - p_bytes;
                if delta > busiest.1 {
                    busiest = (at.saturating_duration_since(p_at), delta);
                }
            }
            previous = Some((at, bytes));
        }
        let rest = span.saturating_sub(busiest.0);
        let bytes = wire_bytes - first_bytes - busiest.1;
        self.bps = Some(if rest >= Duration::from_millis(300) {
            bytes * 8 * 1000 / rest.as_millis().max(1) as u64
        } else {
            (wire_bytes - first_bytes) * 8 * 1000 / span.as_millis().max(1) as u64
        });
    }

    /// Bits per second over the last second; None until half a second has been seen.
    pub fn bps(&self) -> Option<u64> {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_steady_stream() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        let mut bytes = 0;
        for i in 0..30u64 {
            // 500 kbit/s: 6250 bytes per 100 ms.
            bytes += 6250;
            m.sample(t0 + Duration::from_millis(100 * i), bytes);
            if i < 5 {
                assert_eq!(m.bps(), None);
            }
        }
        assert_eq!(m.bps(), Some(500_000));
    }

    #[test]
    fn a_keyframe_does_not_lift_the_rate() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        let mut bytes = 0;
        for i in 0..30u64 {
            // 500 kbit/s, and a 40 kB keyframe in the 100 ms before sample 25.
            bytes += 6250 + if i == 25 { 40_000 } else { 0 };
            m.sample(t0 + Duration::from_millis(100 * i), bytes);
        }
        assert_eq!(m.bps(), Some(500_000));
    }

    #[test]
    fn a_stopped_stream_reads_zero() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..30u64 {
            let bytes = if i < 15 { i * 1000 } else { 15_000 };
            m.sample(t0 + Duration::from_millis(100 * i), bytes);
        }
        assert_eq!(m.bps(), Some(0));
    }
}
