//! Sender reports for subscribers that carry the publisher's clock.
//!
//! A publisher's SR pairs an NTP wall-clock time with an RTP timestamp of its stream. A
//! subscriber receives that stream with rewritten timestamps, so the server's SR for it states
//! the same instant with the timestamp translated through the down track's munger. Extrapolating
//! the publisher's pair to "now" keeps the NTP time current (receivers also use it for RTT and
//! need reports to advance); both components advance by the same elapsed time, so the pair
//! stays on the publisher's NTP↔RTP line and audio/video sync survives.

use std::time::{Duration, Instant};

/// NTP timestamps are 32.32 fixed-point seconds.
const NTP_FRACTION: f64 = 4_294_967_296.0;

/// The last sender report of one publisher stream, as the server received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    pub ntp: u64,
    pub rtp: u32,
    pub received_at: Instant,
}

fn ntp_add(ntp: u64, elapsed: Duration) -> u64 {
    ntp.wrapping_add((elapsed.as_secs_f64() * NTP_FRACTION) as u64)
}

fn rtp_add(rtp: u32, elapsed: Duration, clock_rate: u32) -> u32 {
    rtp.wrapping_add((elapsed.as_secs_f64() * clock_rate as f64).round() as u64 as u32)
}

impl SenderClock {
    /// The publisher's (NTP, RTP) pair extrapolated to `now`, with the RTP timestamp passed
    /// through `translate` (the down track's rewriting). None when the down track does not
    /// currently forward this stream.
    pub fn translated_at(
        &self,
        now: Instant,
        clock_rate: u32,
        translate: impl FnOnce(u32) -> Option<u32>,
    ) -> Option<(u64, u32)> {
        let elapsed = now.saturating_duration_since(self.received_at);
        let rtp = translate(rtp_add(self.rtp, elapsed, clock_rate))?;
        Some((ntp_add(self.ntp, elapsed), rtp))
    }
}

/// The middle 32 bits of an NTP timestamp, as echoed in a receiver report's LSR field.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time from a receiver report block: the time since we sent the SR it refers to,
/// less the delay the receiver says it held it (DLSR, 1/65536 s units).
pub fn round_trip(sr_sent_at: Instant, rr_received_at: Instant, dlsr: u32) -> Duration {
    let held = Duration::from_secs_f64(dlsr as f64 / 65_536.0);
    rr_received_at
        .saturating_duration_since(sr_sent_at)
        .saturating_sub(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NTP time (seconds) a receiver infers for `rtp` from an SR pair.
    fn inferred_seconds(sr: (u64, u32), rtp: u32, clock_rate: u32) -> f64 {
        let delta = rtp.wrapping_sub(sr.1) as i32 as f64 / clock_rate as f64;
        sr.0 as f64 / NTP_FRACTION + delta
    }

    #[test]
    fn translated_report_stays_on_the_publishers_line() {
        let t0 = Instant::now();
        let clock = SenderClock {
            ntp: (3_900_000_000u64 << 32) | 0x8000_0000,
            rtp: u32::MAX - 1_000, // wraps while extrapolating
            received_at: t0,
        };
        let offset = 123_456_789u32; // the munger's timestamp offset
        for (elapsed_ms, clock_rate) in [(0u64, 90_000u32), (730, 90_000), (2_500, 48_000)] {
            let now = t0 + Duration::from_millis(elapsed_ms);
            let sub = clock
                .translated_at(now, clock_rate, |ts| Some(ts.wrapping_add(offset)))
                .unwrap();
            // A frame the publisher stamped at RTP time x: the subscriber sees x + offset. Both
            // reports must map it to the same wall-clock instant (within 1 ms).
            for frame in [
                clock.rtp,
                clock.rtp.wrapping_add(90_000),
                clock.rtp.wrapping_sub(4_500),
            ] {
                let publisher_view = inferred_seconds((clock.ntp, clock.rtp), frame, clock_rate);
                let subscriber_view = inferred_seconds(sub, frame.wrapping_add(offset), clock_rate);
                assert!(
                    (publisher_view - subscriber_view).abs() < 0.001,
                    "{elapsed_ms} ms at {clock_rate} Hz: {publisher_view} vs {subscriber_view}"
                );
            }
        }
    }

    #[test]
    fn no_report_for_a_stream_not_forwarded() {
        let clock = SenderClock {
            ntp: 1,
            rtp: 2,
            received_at: Instant::now(),
        };
        assert_eq!(clock.translated_at(Instant::now(), 90_000, |_| None), None);
    }

    #[test]
    fn round_trip_subtracts_the_receivers_hold_time() {
        let t0 = Instant::now();
        let rtt = round_trip(t0, t0 + Duration::from_millis(150), 65_536 / 10);
        assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
        assert_eq!(
            round_trip(t0 + Duration::from_secs(1), t0, 0),
            Duration::ZERO
        );
        assert_eq!(ntp_middle(0x1234_5678_9abc_def0), 0x5678_9abc);
    }
}
