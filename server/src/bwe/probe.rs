//! Bandwidth probes: when the allocator wants more than the estimate allows, the worker sends
//! padding packets between frames of a video down track at a rate above the estimate for a
//! short while. The feedback on everything that left in that
//! window shows whether the link carried it: if it did, the estimate moves there at once.
//!
//! [`ProbeCluster`] measures one probe from the per-packet reports; [`ProbeController`] decides
//! when to probe and how hard, backing off while probes keep failing so a link at its limit is
//! not pushed every second.

use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// How long a probe sends.
pub const PROBE_DURATION: Duration = Duration::from_millis(200);
/// Packets leaving this long after the window still count: the pacer releases the padding
/// behind what it already holds (a keyframe, say).
const DEPARTURE_GRACE: Duration = Duration::from_millis(500);
/// A cluster with fewer reported packets measures nothing.
pub const MIN_PACKETS: u32 = 10;
/// Feedback for a cluster that has not come this long after its end is given up.
const RESULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// What the link was shown to carry (0 when the probe failed to measure anything).
    pub bps: f64,
    /// The rate the probe aimed at.
    pub target_bps: f64,
    pub at: Instant,
    /// The probe's packets queued on the way (their delay grew): the link did not carry it,
    /// whatever the rates read.
    pub queued: bool,
}

impl ProbeResult {
    /// The link carried (nearly) what the probe sent, without queueing it.
    pub fn succeeded(&self) -> bool {
        !self.queued && self.bps >= 0.85 * self.target_bps
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
    /// Padding packets reported so far: all of them completes the cluster.
    padding_reported: u16,
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
            padding_reported: 0,
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
            self.padding_reported += 1;
            // Reports come in send order: everything that left beside the padding is in.
            self.complete |= self.padding_reported >= count;
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
            queued: false,
        };
        let (from, to) = match (self.padding, self.padding_span) {
            (Some(_), Some(span)) => span,
            (Some(_), None) => {
                tracing::debug!("probe failed: no report on its padding");
                return Some(failed);
            }
            (None, _) => (self.start, self.end),
        };
        let mut packets = 0u32;
        let mut lost = 0u32;
        let (mut sent_bytes, mut last_sent_size) = (0u64, 0u64);
        let (mut first_departure, mut last_departure) = (None::<Instant>, None::<Instant>);
        // Arrived packets: arrival (receiver clock), size, one-way delay up to a constant.
        let mut arrived: Vec<(Duration, u64, f64)> = Vec::with_capacity(self.samples.len());
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
                    let sent_at = departure.saturating_duration_since(from).as_secs_f64();
                    arrived.push((at, size, at.as_secs_f64() - sent_at));
                }
                None => lost += 1,
            }
        }
        if packets < MIN_PACKETS || lost * 10 > packets {
            tracing::debug!(
                packets,
                lost,
                "probe failed: too few packets or too many lost"
            );
            return Some(failed);
        }
        let (Some(fd), Some(ld)) = (first_departure, last_departure) else {
            return Some(failed);
        };
        // The last packet's bytes were on the wire after the send span ended.
        let send_span = ld.saturating_duration_since(fd).as_secs_f64();
        if send_span < 0.02 {
            tracing::debug!(packets, send_span, "probe failed: sent in too short a span");
            return Some(failed);
        }
        let send_bps = (sent_bytes - last_sent_size) as f64 * 8.0 / send_span;
        arrived.sort_by_key(|&(at, _, _)| at);
        let Some((recv_bps, queued)) = receive_rate(&arrived) else {
            tracing::debug!(packets, "probe failed: received in too short a span");
            return Some(failed);
        };
        tracing::debug!(
            packets,
            lost,
            send_bps,
            recv_bps,
            queued,
            target_bps = self.target_bps,
            "probe measured"
        );
        Some(ProbeResult {
            bps: send_bps.min(recv_bps),
            target_bps: self.target_bps,
            at: now,
            queued,
        })
    }
}

/// A packet that waited this much longer than the probe's fastest one met a queue.
const QUEUED: f64 = 0.020;
/// Fewest packets a stretch needs to measure a rate.
const MIN_STRETCH_PACKETS: usize = 4;

/// The rate a probe's packets (by arrival) came in at, and whether they queued.
///
/// A token bucket in front of the bottleneck (a policer, `tc tbf`) lets the first few
/// kilobytes through at once, which would read as room the link does not have. So the rate
/// is taken over the second half of the probe, when the bucket is spent; and when the delay
/// grew on the way, over the stretch from where the queue began (or the last third when that
/// is too short): a queue drains at the bottleneck's own rate.
fn receive_rate(arrived: &[(Duration, u64, f64)]) -> Option<(f64, bool)> {
    let n = arrived.len();
    // Queueing is a trend (the last quarter waited longer than the first), not the jitter
    // of single packets.
    let quarter = (n / 4).max(1);
    let mean = |ps: &[(Duration, u64, f64)]| ps.iter().map(|p| p.2).sum::<f64>() / ps.len() as f64;
    let (head, tail) = (mean(&arrived[..quarter]), mean(&arrived[n - quarter..]));
    let queued_from = (tail - head > QUEUED)
        .then(|| arrived.iter().position(|p| p.2 - head > QUEUED))
        .flatten();
    let from = match queued_from {
        // From the last packet before the queue (its arrival starts the drain).
        Some(i) if n - i >= MIN_STRETCH_PACKETS => i.saturating_sub(1).min(n / 2),
        Some(_) => n - (n / 3).max(MIN_STRETCH_PACKETS).min(n),
        None => n / 2,
    };
    let stretch = &arrived[from..];
    if stretch.len() < MIN_STRETCH_PACKETS {
        return None;
    }
    let (first, last) = (stretch.first()?, stretch.last()?);
    let span = last.0.checked_sub(first.0)?.as_secs_f64();
    if span < 0.01 {
        return None;
    }
    // The first packet's bytes were on the wire before the span started.
    let bytes: u64 = stretch.iter().skip(1).map(|p| p.1).sum();
    Some((bytes as f64 * 8.0 / span, queued_from.is_some()))
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
    /// but at most at 1.5 times the estimate, or twice right after a probe got through (a
    /// link that has just pushed back is not asked to double).
    pub fn poll(&mut self, now: Instant, estimate_bps: f64, wanted_bps: f64) -> Option<f64> {
        self.poll_step(now, estimate_bps, wanted_bps, wanted_bps)
    }

    /// Like [`Self::poll`], with `next_step_bps`: what the allocation would need for its next
    /// upgrade. The probe aims just above that (and at least 20% above the estimate), up to
    /// 1.5 times the estimate (after a probe got through it aims at everything wanted, up to
    /// twice): a probe asks the link for what the next decision needs, not for everything at
    /// once. A 200 ms probe at twice a 600 kbit/s link's rate overflows a 100 ms buffer.
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
        let step = if self.last_succeeded { 2.0 } else { 1.5 };
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
        cluster.result(t0 + Duration::from_secs(3)).unwrap()
    }

    /// Sends 1000-byte packets at `send_bps` through a token bucket of `bucket` bytes (full at
    /// the start) filling at `link_bps`, as `tc tbf` does.
    fn probe_through_bucket(send_bps: f64, link_bps: f64, bucket: f64) -> ProbeResult {
        let seconds = (PROBE_DURATION + Duration::from_millis(100)).as_secs_f64();
        probe_through_bucket_for(send_bps, link_bps, bucket, seconds)
    }

    fn probe_through_bucket_for(
        send_bps: f64,
        link_bps: f64,
        bucket: f64,
        seconds: f64,
    ) -> ProbeResult {
        let t0 = Instant::now();
        let mut cluster = ProbeCluster::new(t0, send_bps);
        let gap = 8000.0 / send_bps;
        let (mut tokens, mut clock) = (bucket, 0.0f64);
        let mut id = 0;
        let mut at = 0.0;
        while at < seconds {
            // The packet leaves once the bucket holds its bytes (FIFO behind earlier ones).
            let start = clock.max(at);
            tokens = (tokens + (start - clock) * link_bps / 8.0).min(bucket);
            let wait = ((1000.0 - tokens) * 8.0 / link_bps).max(0.0);
            clock = start + wait;
            tokens = (tokens + wait * link_bps / 8.0 - 1000.0).min(bucket);
            let arrival = Duration::from_secs_f64(clock + 0.02);
            cluster.observe(&report(id, t0 + Duration::from_secs_f64(at), Some(arrival)));
            id += 1;
            at += gap;
        }
        cluster.result(t0 + Duration::from_secs(3)).unwrap()
    }

    #[test]
    fn a_token_bucket_burst_is_not_taken_for_capacity() {
        // 6 kB of burst (the bucket of the constrained-link browser test) ahead of 600 kbit/s.
        let r = probe_through_bucket(1_200_000.0, 600_000.0, 6000.0);
        assert!((r.bps - 600_000.0).abs() < 60_000.0, "{}", r.bps);
        assert!(!r.succeeded());
        // A short probe that the bucket almost covers (the browser test's probes: ~20 kB).
        let r = probe_through_bucket_for(1_100_000.0, 600_000.0, 6000.0, 0.12);
        assert!(r.bps < 700_000.0, "{}", r.bps);
        assert!(!r.succeeded());
        // A probe the bucket's rate carries still succeeds.
        let r = probe_through_bucket(500_000.0, 600_000.0, 6000.0);
        assert!(r.succeeded(), "{}", r.bps);
    }

    #[test]
    fn jitter_is_not_taken_for_a_queue() {
        let t0 = Instant::now();
        let mut cluster = ProbeCluster::new(t0, 1_000_000.0);
        // 1 Mbit/s on a link with room, each packet delayed 0-30 ms at random.
        let mut seed = 7u64;
        for id in 0..30u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = Duration::from_micros((seed >> 33) % 30_000);
            let sent = Duration::from_millis(id * 8);
            let arrival = sent + Duration::from_millis(20) + jitter;
            cluster.observe(&report(id, t0 + sent, Some(arrival)));
        }
        let r = cluster.result(t0 + Duration::from_secs(3)).unwrap();
        assert!(!r.queued, "{r:?}");
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
    fn a_cluster_is_complete_once_its_padding_is_reported_however_late_it_left() {
        let t0 = Instant::now();
        let mut cluster = ProbeCluster::new(t0, 1e6).with_padding(1, 100, 12);
        // The pacer held the padding 300 ms behind a keyframe.
        for i in 0..12u64 {
            let left = Duration::from_millis(300 + i * 8);
            let mut r = report(100 + i, t0 + left, Some(left + Duration::from_millis(20)));
            r.rtp_sequence_number = 100 + i as u16;
            assert!(
                cluster.result(t0 + left).is_none(),
                "not before the last one"
            );
            cluster.observe(&r);
        }
        let r = cluster
            .result(t0 + Duration::from_millis(450))
            .expect("complete");
        assert!(r.succeeded(), "{r:?}");
    }

    #[test]
    fn failed_probes_back_off() {
        let t0 = Instant::now();
        let mut c = ProbeController::default();
        assert_eq!(c.poll(t0, 1e6, 900e3), None, "no deficit, no probe");
        let target = c.poll(t0, 1e6, 3e6).unwrap();
        assert_eq!(target, 1.5e6, "at most 1.5 times the estimate");
        assert_eq!(c.poll(t0, 1e6, 3e6), None, "one at a time");
        let failed = ProbeResult {
            bps: 1e6,
            target_bps: 2e6,
            at: t0 + Duration::from_secs(1),
            queued: true,
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
