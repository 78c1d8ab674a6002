//! Bandwidth probes: when the allocator wants more than the estimate allows, the worker sends
//! extra packets (retransmissions of recently sent ones, which the subscriber discards) at a
//! rate above the estimate for a short while. The feedback on everything that left in that
//! window shows whether the link carried it: if it did, the estimate moves there at once.
//!
//! [`ProbeCluster`] measures one probe from the per-packet reports; [`ProbeController`] decides
//! when to probe and how hard, backing off while probes keep failing so a link at its limit is
//! not pushed every second.

use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// How long a probe sends.
pub const PROBE_DURATION: Duration = Duration::from_millis(200);
/// Packets leaving this long after the window still count (the pacer may release late).
const DEPARTURE_GRACE: Duration = Duration::from_millis(50);
/// A cluster with fewer reported packets measures nothing.
const MIN_PACKETS: u32 = 10;
/// Feedback for a cluster that has not come this long after its end is given up.
const RESULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// What the link was shown to carry (0 when the probe failed to measure anything).
    pub bps: f64,
    /// The rate the probe aimed at.
    pub target_bps: f64,
    pub at: Instant,
}

impl ProbeResult {
    /// The link carried (nearly) what the probe sent.
    pub fn succeeded(&self) -> bool {
        self.bps >= 0.85 * self.target_bps
    }
}

/// One probe's window and what the feedback said about the packets that left in it.
#[derive(Debug, Clone)]
pub struct ProbeCluster {
    pub target_bps: f64,
    start: Instant,
    end: Instant,
    /// The probe's own padding: SSRC, first sequence number, count. The rates are measured
    /// over the span its packets left in (media keeps leaving after the padding is out, at
    /// the media rate, which would dilute the measure).
    padding: Option<(u32, u16, u16)>,
    padding_span: Option<(Instant, Instant)>,
    /// Every report in the window: departure, size, arrival (None: lost). Bounded.
    samples: Vec<(Instant, u32, Option<Duration>)>,
    /// A report for a packet that left after the window: the feedback covers the whole cluster.
    complete: bool,
}

/// Reports kept per cluster (a 200 ms probe at 20 Mbit/s is about 400 packets).
const MAX_SAMPLES: usize = 1024;

impl ProbeCluster {
    pub fn new(start: Instant, target_bps: f64) -> Self {
        Self {
            target_bps,
            start,
            end: start + PROBE_DURATION + DEPARTURE_GRACE,
            padding: None,
            padding_span: None,
            samples: Vec::new(),
            complete: false,
        }
    }

    /// The probe's padding packets: `count` from `first_seq` on `ssrc`.
    pub fn with_padding(mut self, ssrc: u32, first_seq: u16, count: u16) -> Self {
        self.padding = Some((ssrc, first_seq, count));
        self
    }

    pub fn observe(&mut self, report: &PacketReport) {
        if report.departure < self.start {
            return;
        }
        if report.departure >= self.end {
            self.complete = true;
            return;
        }
        if let Some((ssrc, first, count)) = self.padding
            && report.ssrc == ssrc
            && report.rtp_sequence_number.wrapping_sub(first) < count
        {
            let d = report.departure;
            self.padding_span = Some(match self.padding_span {
                Some((a, b)) => (a.min(d), b.max(d)),
                None => (d, d),
            });
        }
        if self.samples.len() < MAX_SAMPLES {
            let arrival = report.arrival.filter(|_| report.arrived);
            self.samples
                .push((report.departure, report.size as u32, arrival));
        }
    }

    /// The measured rate once the feedback covers the whole window (or it timed out): the
    /// lower of the rate sent and the rate received, as libwebrtc's probe estimator does.
    pub fn result(&self, now: Instant) -> Option<ProbeResult> {
        let timed_out = now >= self.end + RESULT_TIMEOUT;
        if !self.complete && !timed_out {
            return None;
        }
        let failed = ProbeResult {
            bps: 0.0,
            target_bps: self.target_bps,
            at: now,
        };
        let (from, to) = match (self.padding, self.padding_span) {
            (Some(_), Some(span)) => span,
            (Some(_), None) => return Some(failed),
            (None, _) => (self.start, self.end),
        };
        let mut packets = 0u32;
        let mut lost = 0u32;
        let (mut sent_bytes, mut last_sent_size) = (0u64, 0u64);
        let (mut first_departure, mut last_departure) = (None::<Instant>, None::<Instant>);
        let mut arrived_bytes = 0u64;
        let mut first_arrival: Option<(Duration, u64)> = None;
        let mut last_arrival: Option<Duration> = None;
        for &(departure, size, arrival) in &self.samples {
            if departure < from || departure > to {
                continue;
            }
            let size = u64::from(size);
            packets += 1;
            sent_bytes += size;
            first_departure = Some(first_departure.map_or(departure, |f| f.min(departure)));
            if last_departure.is_none_or(|l| departure >= l) {
                last_departure = Some(departure);
                last_sent_size = size;
            }
            match arrival {
                Some(at) => {
                    arrived_bytes += size;
                    if first_arrival.is_none_or(|(f, _)| at < f) {
                        first_arrival = Some((at, size));
                    }
                    last_arrival = Some(last_arrival.map_or(at, |l| l.max(at)));
                }
                None => lost += 1,
            }
        }
        if packets < MIN_PACKETS || lost * 10 > packets {
            return Some(failed);
        }
        let (Some(fd), Some(ld), Some((fa, first_arrival_size)), Some(la)) =
            (first_departure, last_departure, first_arrival, last_arrival)
        else {
            return Some(failed);
        };
        // The first packet's bytes were on the wire before the span started (receive side),
        // the last one's after it ended (send side).
        let send_span = ld.saturating_duration_since(fd).as_secs_f64();
        let recv_span = la.saturating_sub(fa).as_secs_f64();
        if send_span < 0.02 || recv_span < 0.02 {
            return Some(failed);
        }
        let send_bps = (sent_bytes - last_sent_size) as f64 * 8.0 / send_span;
        let recv_bps = (arrived_bytes - first_arrival_size) as f64 * 8.0 / recv_span;
        Some(ProbeResult {
            bps: send_bps.min(recv_bps),
            target_bps: self.target_bps,
            at: now,
        })
    }
}

/// First wait after a failed probe; it doubles on each further failure, up to a few seconds:
/// a link that recovers must be found within seconds, and a failed probe only queues for a
/// few hundred milliseconds.
const FAILED_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// After a successful probe the next may follow soon: the climb to the wanted rate continues.
const SUCCESS_GAP: Duration = Duration::from_millis(200);

/// Decides when one subscriber's link is probed, and at what rate.
#[derive(Debug, Default)]
pub struct ProbeController {
    next_allowed: Option<Instant>,
    backoff: Option<Duration>,
    /// The last probe got through: the next may aim at everything wanted.
    last_succeeded: bool,
    /// No probe before this (the link pushed back).
    hold_until: Option<Instant>,
}

impl ProbeController {
    /// A probe's target rate if one should start now: the subscriber wants `wanted_bps`, the
    /// estimate allows `estimate_bps`. The probe aims a little above what the next step needs,
    /// but at most at twice the estimate (a link is not asked to double in one go).
    pub fn poll(&mut self, now: Instant, estimate_bps: f64, wanted_bps: f64) -> Option<f64> {
        self.poll_step(now, estimate_bps, wanted_bps, wanted_bps)
    }

    /// Like [`Self::poll`], with `next_step_bps`: what the allocation would need for its next
    /// upgrade. The probe aims just above that (and at least 20% above the estimate), up to
    /// twice the estimate (after a probe got through it aims at everything wanted): a probe
    /// asks the link for what the next decision needs, not for everything at once.
    pub fn poll_step(
        &mut self,
        now: Instant,
        estimate_bps: f64,
        wanted_bps: f64,
        next_step_bps: f64,
    ) -> Option<f64> {
        if wanted_bps <= estimate_bps || self.next_allowed.is_some_and(|at| now < at) {
            return None;
        }
        if self.hold_until.is_some_and(|at| now < at) {
            return None;
        }
        let step = 2.0;
        let aim = if self.last_succeeded {
            wanted_bps
        } else {
            next_step_bps.min(wanted_bps)
        };
        let target = (aim * 1.1).clamp(estimate_bps * 1.2, estimate_bps * step);
        self.next_allowed = Some(now + PROBE_DURATION + RESULT_TIMEOUT);
        Some(target)
    }

    /// The probe [`Self::poll`] asked for could not start (no packet boundary to send it at):
    /// it may be asked for again at once.
    pub fn retry_now(&mut self) {
        self.next_allowed = None;
    }

    /// A probe finished: schedule the next one.
    pub fn on_result(&mut self, result: &ProbeResult) {
        self.last_succeeded = result.succeeded();
        if result.succeeded() {
            self.backoff = None;
            self.next_allowed = Some(result.at + SUCCESS_GAP);
        } else {
            let backoff = self
                .backoff
                .map_or(FAILED_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
            self.backoff = Some(backoff);
            self.next_allowed = Some(result.at + backoff);
        }
    }

    /// The link got worse (an overuse or loss decrease): the next probe waits at least the
    /// first backoff, so a probe does not land on a queue that is still draining.
    pub fn on_decrease(&mut self, now: Instant) {
        self.hold_until = Some(now + FAILED_BACKOFF);
        self.last_succeeded = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    fn report(id: u64, departure: Instant, arrival: Option<Duration>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1000,
            arrived: arrival.is_some(),
            departure,
            arrival,
            ecn: Ecn::default(),
        }
    }

    /// Sends 1000-byte packets at `send_bps` through a link of `link_bps`.
    fn probe(send_bps: f64, link_bps: f64) -> ProbeResult {
        let t0 = Instant::now();
        let mut cluster = ProbeCluster::new(t0, send_bps);
        let gap = Duration::from_secs_f64(8000.0 / send_bps);
        let service = Duration::from_secs_f64(8000.0 / link_bps);
        let mut free = Duration::ZERO;
        let mut id = 0;
        let mut at = Duration::ZERO;
        while at < PROBE_DURATION + Duration::from_millis(100) {
            free = free.max(at) + service;
            cluster.observe(&report(id, t0 + at, Some(free)));
            id += 1;
            at += gap;
        }
        cluster.result(t0 + Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn a_link_with_room_shows_the_probe_rate() {
        let r = probe(2_000_000.0, 10_000_000.0);
        assert!((r.bps - 2_000_000.0).abs() < 100_000.0, "{}", r.bps);
        assert!(r.succeeded());
    }

    #[test]
    fn a_full_link_shows_its_capacity() {
        let r = probe(2_000_000.0, 800_000.0);
        assert!((r.bps - 800_000.0).abs() < 50_000.0, "{}", r.bps);
        assert!(!r.succeeded());
    }

    #[test]
    fn no_result_before_the_feedback_covers_the_window() {
        let t0 = Instant::now();
        let mut cluster = ProbeCluster::new(t0, 1e6);
        cluster.observe(&report(0, t0, Some(Duration::ZERO)));
        assert!(cluster.result(t0 + Duration::from_millis(400)).is_none());
        assert_eq!(
            cluster.result(t0 + Duration::from_secs(3)).unwrap().bps,
            0.0
        );
    }

    #[test]
    fn failed_probes_back_off() {
        let t0 = Instant::now();
        let mut c = ProbeController::default();
        assert_eq!(c.poll(t0, 1e6, 900e3), None, "no deficit, no probe");
        let target = c.poll(t0, 1e6, 3e6).unwrap();
        assert_eq!(target, 2e6, "at most twice the estimate");
        assert_eq!(c.poll(t0, 1e6, 3e6), None, "one at a time");
        let failed = ProbeResult {
            bps: 1e6,
            target_bps: 2e6,
            at: t0 + Duration::from_secs(1),
        };
        c.on_result(&failed);
        assert_eq!(c.poll(t0 + Duration::from_millis(2500), 1e6, 3e6), None);
        assert!(c.poll(t0 + Duration::from_millis(3100), 1e6, 3e6).is_some());
        c.on_result(&ProbeResult {
            at: t0 + Duration::from_secs(4),
            ..failed
        });
        assert_eq!(c.poll(t0 + Duration::from_millis(7500), 1e6, 3e6), None);
        assert!(c.poll(t0 + Duration::from_millis(8100), 1e6, 3e6).is_some());
    }
}
