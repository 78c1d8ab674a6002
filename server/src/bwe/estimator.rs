//! The send-side estimate of one subscriber's downlink, from transport-wide CC feedback.
//!
//! Our own rate control and delay detector ([`super::packet_groups`], [`super::trendline`]:
//! the engine's detector misses a layer 25% above the link), because the engine's `Gcc` does
//! not fit an SFU's downlink:
//! - it climbs 8% a second with no probing, so a link that recovers from 500 kbit/s to 3 Mbit/s
//!   takes over 20 s to be used again; here probes (see [`super::probe`]) move the estimate in
//!   one step to what the link was shown to carry;
//! - it keeps raising the estimate while the sender is application-limited (a subscriber on the
//!   low layer sends 200 kbit/s, and an estimate that grows to 10 Mbit/s on that says nothing);
//!   here growth without a probe stops at 1.5 times the acknowledged rate, as in libwebrtc;
//! - it has no REMB input.
//!
//! Pure: every instant is a parameter, so a feedback sequence gives one trajectory.

use std::time::{Duration, Instant};

use std::collections::VecDeque;

use rtc::interceptor::PacketReport;

use super::packet_groups::PacketGroups;
use super::probe::{ProbeCluster, ProbeResult};
use super::trendline::{TrendlineDetector, Usage};

/// Estimate before any feedback: enough for a 720p layer on a good link, and corrected within
/// a second or two on a weak one (delay grows, the estimate drops to what is acknowledged).
pub const DEFAULT_INITIAL_BPS: f64 = 1_500_000.0;
pub const DEFAULT_MIN_BPS: f64 = 50_000.0;
pub const DEFAULT_MAX_BPS: f64 = 50_000_000.0;

/// On overuse the estimate falls to this fraction of what the receiver acknowledged.
const DECREASE_FACTOR: f64 = 0.85;
/// Multiplicative growth per second while far from the last known ceiling.
const INCREASE_PER_SECOND: f64 = 1.08;
/// A delay-based decrease to more than this fraction of the estimate is not made.
const MIN_DELAY_CUT: f64 = 0.9;
/// Without a probe, the estimate may not exceed this multiple of the acknowledged rate.
const APP_LIMITED_HEADROOM: f64 = 1.5;
/// Loss above which the estimate falls (and below which it may grow), as in GCC.
const HIGH_LOSS: f64 = 0.10;
const LOW_LOSS: f64 = 0.02;
/// Loss is judged over intervals this long, of at least this many packets: random loss of a
/// few per cent over a 30-packet sample reads above 10% too often (each time a decrease), and a
/// single burst of losses (a keyframe overflowing a queue once) is not a lasting limit.
const LOSS_INTERVAL: Duration = Duration::from_millis(1000);
const LOSS_MIN_PACKETS: u32 = 50;
/// Loss this heavy is a queue overflowing, not noise.
const OVERFLOW_LOSS: f64 = 0.25;
/// After an overflow the estimate falls to this fraction of what got through, so the queue
/// that overflowed can drain.
const OVERFLOW_DECREASE_FACTOR: f64 = 0.85;
/// Loss in the first second of feedback is not judged (see `on_reports`).
const LOSS_WARMUP: Duration = Duration::from_secs(1);
const OVERFLOW_WINDOW: Duration = Duration::from_millis(200);
const OVERFLOW_MIN_PACKETS: u32 = 40;
/// The acknowledged rate is read over this window of arrivals, and the link's rate under a
/// standing queue over the shorter one.
const ACKED_WINDOW: Duration = Duration::from_millis(500);
const BUSY_WINDOW: Duration = Duration::from_millis(150);
/// Packets that arrived this much more spread out than they left (plus 2 ms) queued.
const QUEUED_SPREAD: f64 = 1.05;
const QUEUED_MIN_PACKETS: usize = 10;
/// Minimum time between two decreases: the first one needs a round trip to show.
const MIN_DECREASE_GAP: Duration = Duration::from_millis(300);
/// After a probe's result, delay growth of groups sent this long after it is still the probe's.
const PROBE_ECHO: Duration = Duration::from_millis(200);
/// REMB counts only while no transport-wide feedback arrives.
const REMB_TAKES_OVER_AFTER: Duration = Duration::from_secs(2);

/// Why the estimate last changed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    #[default]
    Initial,
    DelayIncrease,
    Overuse,
    Loss,
    Probe,
    Remb,
}

#[derive(Debug)]
pub struct SendSideBwe {
    groups: PacketGroups,
    detector: TrendlineDetector,
    acked: AckedRate,
    /// The same over the last [`BUSY_WINDOW`]: while a queue stands, packets arrive back to
    /// back and this reads the link's rate, where the longer window may read what an
    /// application-limited sender sent before.
    busy: AckedRate,
    estimate: f64,
    min: f64,
    max: f64,
    cause: Cause,
    /// The acknowledged rate at the last overuse: growth near it is additive.
    ceiling: Option<f64>,
    last_decrease: Option<Instant>,
    last_update: Option<Instant>,
    loss: Option<f64>,
    /// Which of the last loss windows were above HIGH_LOSS (a bit each, newest lowest):
    /// moderate loss acts when two of the last three windows had it; bursts do not.
    lossy_windows: u32,
    /// When the delay detector last said the queue was growing.
    last_overuse: Option<Instant>,
    first_feedback: Option<Instant>,
    /// Bytes reported and bytes delivered in the loss window, the arrivals it spans (receiver
    /// clock), and
    /// the delivered rate of the last window.
    window_bytes: (u64, u64),
    window_arrivals: Option<(Duration, Duration)>,
    window_delivered_bps: Option<f64>,
    /// Lost and reported packets since `loss_window_start`.
    loss_window: (u32, u32),
    loss_window_start: Option<Instant>,
    /// The same over the last OVERFLOW_WINDOW or so, for overflows.
    recent_window: (u32, u32),
    recent_window_start: Option<Instant>,
    last_feedback: Option<Instant>,
    remb: Option<(Instant, f64)>,
    probe: Option<ProbeCluster>,
    last_probe: Option<ProbeResult>,
    /// When the last probe's result came in (see `probe_echo`).
    probe_ended: Option<Instant>,
    rtt: Duration,
    /// The first transport-wide sequence number the feedback being resolved covers (see
    /// [`super::feedback_scope`]); unacknowledged packets before it were never reported on.
    feedback_start: Option<u16>,
    /// Packets no feedback reported on (lost feedback), for the trace.
    unreported: u64,
    /// Retransmissions sent outside transport-wide CC (RTX): cumulative bytes over time.
    repair: RepairRate,
}

impl Default for SendSideBwe {
    fn default() -> Self {
        Self::new(DEFAULT_INITIAL_BPS, DEFAULT_MIN_BPS, DEFAULT_MAX_BPS)
    }
}

impl SendSideBwe {
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        Self {
            groups: PacketGroups::default(),
            detector: TrendlineDetector::default(),
            acked: AckedRate::new(ACKED_WINDOW),
            busy: AckedRate::new(BUSY_WINDOW),
            estimate: initial.clamp(min, max),
            min,
            max,
            cause: Cause::Initial,
            ceiling: None,
            last_decrease: None,
            last_update: None,
            loss: None,
            loss_window: (0, 0),
            loss_window_start: None,
            recent_window: (0, 0),
            recent_window_start: None,
            lossy_windows: 0,
            last_overuse: None,
            first_feedback: None,
            window_bytes: (0, 0),
            window_arrivals: None,
            window_delivered_bps: None,
            last_feedback: None,
            remb: None,
            probe: None,
            last_probe: None,
            probe_ended: None,
            rtt: Duration::from_millis(100),
            feedback_start: None,
            unreported: 0,
            repair: RepairRate::default(),
        }
    }

    /// The estimate in bits per second.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// Smoothed loss fraction the subscriber reported, if any feedback arrived.
    pub fn loss(&self) -> Option<f64> {
        self.loss
    }

    /// When transport-wide feedback last arrived.
    pub fn last_feedback(&self) -> Option<Instant> {
        self.last_feedback
    }

    /// Whether the link has shown a limit: an overuse or loss decrease, or a REMB. Until then
    /// the estimate is only a starting guess and should not cut what is being sent.
    pub fn limit_seen(&self) -> bool {
        self.last_decrease.is_some() || self.remb.is_some()
    }

    /// When the subscriber last said anything about the link (transport-wide feedback or REMB).
    pub fn last_signal(&self) -> Option<Instant> {
        self.last_feedback.max(self.remb.map(|(at, _)| at))
    }

    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt.clamp(Duration::from_millis(1), Duration::from_secs(2));
    }

    /// A probe starts now; packets leaving in its window are measured as one cluster.
    pub fn start_probe(&mut self, cluster: ProbeCluster) {
        self.probe = Some(cluster);
    }

    /// The result of the last probe that completed, taken once.
    pub fn take_probe_result(&mut self) -> Option<ProbeResult> {
        self.last_probe.take()
    }

    /// A REMB from a subscriber: used only while it sends no transport-wide feedback.
    pub fn on_remb(&mut self, now: Instant, bps: f64) {
        self.remb = Some((now, bps));
        let twcc_silent = self
            .last_feedback
            .is_none_or(|at| now.saturating_duration_since(at) > REMB_TAKES_OVER_AFTER);
        if twcc_silent {
            self.set(bps, Cause::Remb);
        }
    }

    /// `total` bytes of retransmissions the feedback does not cover had left by `now`.
    pub fn note_repair_total(&mut self, now: Instant, total: u64) {
        self.repair.note(now, total);
    }

    /// A transport-wide feedback packet starting at `base` is about to be resolved.
    pub fn note_feedback_start(&mut self, base: u16) {
        self.feedback_start = Some(match self.feedback_start {
            Some(earlier) if precedes(earlier, base) => earlier,
            _ => base,
        });
    }

    /// Transport-wide feedback resolved into per-packet reports (send order).
    pub fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let feedback_start = self.feedback_start.take();
        if reports.is_empty() {
            return;
        }
        self.last_feedback = Some(now);
        self.first_feedback.get_or_insert(now);
        let mut usage = self.detector.usage();
        let mut lost = 0u32;
        let mut reported = 0u32;
        for report in reports {
            // Nothing was said about a packet without a transport-wide number (no feedback can
            // name it), nor about one before the feedback's start that no earlier feedback
            // acknowledged: that feedback was lost. Neither is a loss of the link.
            let arrived = report.arrived && report.arrival.is_some();
            if !report.is_twcc
                || (!arrived
                    && feedback_start
                        .is_some_and(|start| precedes(report.twcc_sequence_number, start)))
            {
                self.unreported += 1;
                continue;
            }
            // Loss of what left before the last cut says nothing about the rate after it.
            let judged = self.last_decrease.is_none_or(|at| report.departure >= at);
            if judged {
                reported += 1;
            }
            self.window_bytes.0 += report.size as u64;
            match report.arrival.filter(|_| report.arrived) {
                Some(arrival) => {
                    self.acked.add(arrival, report.departure, report.size);
                    self.busy.add(arrival, report.departure, report.size);
                    self.window_bytes.1 += report.size as u64;
                    self.window_arrivals = Some(match self.window_arrivals {
                        Some((first, last)) => (first.min(arrival), last.max(arrival)),
                        None => (arrival, arrival),
                    });
                }
                None => lost += u32::from(judged),
            }
            if let Some(group) = self.groups.add(report) {
                usage = self.detector.update(group.departure, group.delta_ms);
                // A probe sends above the estimate on purpose, and the queue it builds is its
                // own measurement (see `apply_probe_result`), not a reason to cut.
                if usage == Usage::Over && self.probe_echo(group.departure) {
                    usage = Usage::Normal;
                }
            }
            if let Some(cluster) = self.probe.as_mut() {
                cluster.observe(report);
            }
        }
        // Loss over the last interval of at least LOSS_INTERVAL and LOSS_MIN_PACKETS: a batch of ten
        // with two losses is not 20%, and loss that has stopped must stop counting at once (a
        // long average kept cutting the estimate long after an overflow was over).
        self.loss_window.0 += lost;
        self.loss_window.1 += reported;
        let window_start = *self.loss_window_start.get_or_insert(now);
        let mut loss_sample = None;
        let (mut l, mut n) = self.loss_window;
        let age = now.saturating_duration_since(window_start);
        // A full window; or, for an overflow, a short one (a queue that overflows loses a
        // quarter or more at once, and every 100 ms of waiting loses more). The short one is
        // also judged on its own: the long window may hold most of a second from before the
        // link dropped, which would dilute the overflow and delay the cut by that second.
        let full = age >= LOSS_INTERVAL && n >= LOSS_MIN_PACKETS;
        let overflowing = |l: u32, n: u32| {
            n >= OVERFLOW_MIN_PACKETS && f64::from(l) > OVERFLOW_LOSS * f64::from(n)
        };
        let mut overflow = age >= OVERFLOW_WINDOW && overflowing(l, n);
        self.recent_window.0 += lost;
        self.recent_window.1 += reported;
        let recent_start = *self.recent_window_start.get_or_insert(now);
        if now.saturating_duration_since(recent_start) >= OVERFLOW_WINDOW {
            let (rl, rn) = self.recent_window;
            if !overflow && overflowing(rl, rn) {
                overflow = true;
                (l, n) = (rl, rn);
            }
            if rn >= OVERFLOW_MIN_PACKETS || overflow {
                self.recent_window = (0, 0);
                self.recent_window_start = Some(now);
            }
        }
        // The first feedback of a connection can report packets the receiver was not yet
        // ready for (its feedback starts while media already flows) as lost: not the link.
        let warming_up = self
            .first_feedback
            .is_some_and(|at| now.saturating_duration_since(at) < LOSS_WARMUP);
        if (full || overflow) && warming_up {
            self.restart_loss_window(now);
        } else if full || overflow {
            loss_sample = Some(f64::from(l) / f64::from(n));
            tracing::trace!(
                lost = l,
                reported = n,
                unreported = self.unreported,
                "downlink loss interval"
            );
            // What got through while we sent more than that: the link's rate.
            self.window_delivered_bps = self.window_arrivals.and_then(|(first, last)| {
                let span = last.saturating_sub(first).as_secs_f64();
                (span > 0.05).then(|| self.window_bytes.1 as f64 * 8.0 / span)
            });
            self.loss = loss_sample;
            self.restart_loss_window(now);
        }
        let loss = self.loss.unwrap_or(0.0);
        // What the link delivered: the acknowledged packets, and the retransmissions beside
        // them that no feedback covers (at the same loss).
        let acked = self
            .acked
            .bps()
            .map(|a| a + self.repair.bps() * (1.0 - loss));

        if let Some(result) = self.probe.as_ref().and_then(|c| c.result(now)) {
            self.probe = None;
            self.probe_ended = Some(now);
            self.last_probe = Some(result);
            if self.apply_probe_result(now, &result, loss) {
                return;
            }
        }
        // Only what left after the last cut: before it, the sender sent more than now.
        let busy = self.busy.queued_bps(self.last_decrease);
        self.update(now, usage, loss_sample, acked, busy);
    }

    /// Whether a group that left at `departure` may still carry a probe's queue: sent while a
    /// probe runs, or before its result came in plus [`PROBE_ECHO`] (the queue drains, and the
    /// delay trend still holds the rise).
    fn probe_echo(&self, departure: Instant) -> bool {
        self.probe.is_some()
            || self
                .probe_ended
                .is_some_and(|end| departure < end + PROBE_ECHO)
    }

    /// Takes a finished probe's result into the estimate; true when it set the estimate.
    fn apply_probe_result(&mut self, now: Instant, result: &ProbeResult, loss: f64) -> bool {
        // A probe shows what the link carried: the probe rate when it got through, the
        // receive rate when it saturated the link (less a margin: that rate is the link's
        // whole capacity). Either counts when above the estimate.
        // Not above the probe's own rate: media bursts inside the window can read higher
        // than what was shown to fit.
        let shown = if result.succeeded() {
            result.bps.min(result.target_bps)
        } else {
            0.9 * result.bps
        };
        // A probe that queued found the link's rate, which growth without a probe does not
        // pass; one that got through lifts that bound.
        if result.queued && result.bps > 0.0 {
            self.ceiling = Some(result.bps);
        } else if result.succeeded() {
            self.ceiling = None;
        }
        if shown > self.estimate && loss < HIGH_LOSS {
            self.set(shown, Cause::Probe);
            self.last_update = Some(now);
            return true;
        }
        // A probe that queued below the estimate measured the bottleneck draining: the
        // estimate was above the link (a token bucket's burst can make an earlier probe
        // read high), so it comes down to what the queue drained at, with a margin.
        if result.queued && result.bps > 0.0 && shown < self.estimate {
            self.last_decrease = Some(now);
            self.set(shown, Cause::Overuse);
            self.restart_loss_window(now);
            self.last_update = Some(now);
            return true;
        }
        false
    }

    fn update(
        &mut self,
        now: Instant,
        usage: Usage,
        fresh_loss: Option<f64>,
        acked: Option<f64>,
        busy: Option<f64>,
    ) {
        let loss = self.loss.unwrap_or(0.0);
        let since_decrease = self
            .last_decrease
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        if usage == Usage::Over {
            self.last_overuse = Some(now);
            if since_decrease >= MIN_DECREASE_GAP.max(self.rtt) {
                // While a queue stands, what arrives is the link's rate: the reading of the
                // cut. (The longer acknowledged window reads too low after a keyframe's
                // queue on a link with room, the sender being limited to its layers before
                // it, and too high right after the link dropped, holding what arrived
                // before.) No queue standing: the trend still holds one that a cut already
                // answered, and what arrives now measures the sender, not the link.
                // The queue a cut answered takes a while to drain, and the trend to fall: a
                // second reading of the same link asks for a few per cent more. Only a cut
                // that matters counts (each one can move a layer down).
                if let Some(link) = busy
                    && link * DECREASE_FACTOR < MIN_DELAY_CUT * self.estimate
                {
                    let target = link * DECREASE_FACTOR;
                    tracing::trace!(link, acked = ?acked, "queue standing: delay cut");
                    self.ceiling = Some(link);
                    self.last_decrease = Some(now);
                    self.set(target, Cause::Overuse);
                    self.restart_loss_window(now);
                }
            }
            self.last_update = Some(now);
            return;
        }
        if let Some(fresh) = fresh_loss {
            self.lossy_windows = (self.lossy_windows << 1 | u32::from(fresh > HIGH_LOSS)) & 0b1111;
        }
        // Overflow-sized loss acts at once, moderate loss (10-25%) once two of the last three
        // windows had it: one burst (a keyframe overflowing a queue once) is not a limit of
        // the link.
        // Overflow-sized loss says the link carried what got through, whether a queue
        // overflowed or a policer (a token bucket with little or no queue) dropped the rest.
        let overflow = |l: f64| l > OVERFLOW_LOSS;
        let act = fresh_loss.filter(|&l| {
            overflow(l) || (l > HIGH_LOSS && (self.lossy_windows & 0b111).count_ones() >= 2)
        });
        if let Some(loss) = act {
            if since_decrease >= MIN_DECREASE_GAP.max(self.rtt) {
                self.last_decrease = Some(now);
                // Moderate loss: by half the loss, as GCC does. Overflow: to the share that got
                // through, relative to the estimate (not to what arrives now: after a cut we
                // send less, and that measures us, not the link).
                let target = if overflow(loss) {
                    // We sent more than got through, so what got through measures the link,
                    // retransmissions beside it included: the lower of the loss window's
                    // and the acknowledged-rate window's reading (the one may hold a token
                    // bucket's burst over a short span, the other what arrived before the
                    // link dropped).
                    let repair = self.repair.bps() * (1.0 - loss);
                    let delivered = match (self.window_delivered_bps.map(|w| w + repair), acked) {
                        (Some(w), Some(a)) => Some(w.min(a)),
                        (w, a) => w.or(a),
                    };
                    (self.estimate * (1.0 - loss))
                        .min(delivered.map_or(f64::MAX, |d| d * OVERFLOW_DECREASE_FACTOR))
                } else {
                    self.estimate * (1.0 - 0.5 * loss)
                };
                // What got through is the link's ceiling for now: growth near it is careful.
                if let Some(acked) = acked {
                    self.ceiling = Some(acked);
                }
                self.set(target, Cause::Loss);
                self.restart_loss_window(now);
            }
            self.last_update = Some(now);
            return;
        }
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        if usage == Usage::Under || loss > LOW_LOSS {
            return; // hold: a queue is draining, or loss is in the tolerated band
        }
        let near_ceiling = self.ceiling.is_some_and(|c| self.estimate > 0.85 * c);
        let grown = if near_ceiling {
            // About one packet per round trip: approach a known ceiling, do not jump over it.
            let per_second = 1200.0 * 8.0 / (self.rtt + Duration::from_millis(100)).as_secs_f64();
            self.estimate + per_second * elapsed.as_secs_f64()
        } else {
            self.estimate * INCREASE_PER_SECOND.powf(elapsed.as_secs_f64())
        };
        // Growth without a probe is bounded by what the link has actually delivered, and by
        // the rate it was last seen to top out at: above it, only a probe may lift the
        // estimate (an application-limited sender learns nothing about the link by growing).
        let limit = acked.map_or(self.estimate, |a| APP_LIMITED_HEADROOM * a + 10_000.0);
        let limit = self.ceiling.map_or(limit, |c| limit.min(c));
        let target = grown.min(limit.max(self.estimate));
        if target > self.estimate {
            self.set(target, Cause::DelayIncrease);
        }
    }

    /// Loss counted before a decrease belongs to the episode that decrease answered.
    fn restart_loss_window(&mut self, now: Instant) {
        self.loss_window = (0, 0);
        self.loss_window_start = Some(now);
        self.recent_window = (0, 0);
        self.recent_window_start = Some(now);
        self.window_bytes = (0, 0);
        self.window_arrivals = None;
    }

    fn set(&mut self, bps: f64, cause: Cause) {
        self.estimate = bps.clamp(self.min, self.max);
        self.cause = cause;
    }
}

/// Whether transport-wide sequence number `a` comes before `b` (modulo 2^16).
fn precedes(a: u16, b: u16) -> bool {
    (b.wrapping_sub(a) as i16) > 0
}

/// The rate of retransmissions sent outside transport-wide CC over the last half second.
#[derive(Debug, Default)]
struct RepairRate {
    samples: VecDeque<(Instant, u64)>,
}

impl RepairRate {
    const WINDOW: Duration = Duration::from_millis(500);

    fn note(&mut self, now: Instant, total: u64) {
        if self.samples.back().is_some_and(|&(_, t)| t == total) && self.samples.len() > 1 {
            // Nothing new: move the newest sample's instant forward instead of adding one.
            self.samples.pop_back();
        }
        self.samples.push_back((now, total));
        while self.samples.len() > 2 && self.samples[1].0 + Self::WINDOW <= now {
            self.samples.pop_front();
        }
    }

    fn bps(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(a, ta)), Some(&(b, tb))) if b > a => {
                (tb - ta) as f64 * 8.0 / b.duration_since(a).as_secs_f64().max(0.1)
            }
            _ => 0.0,
        }
    }
}

/// What the receiver got over a window of its own arrival clock (feedback batches arrive
/// every 100 ms, so timing by feedback arrival would misjudge the span).
#[derive(Debug)]
struct AckedRate {
    window: Duration,
    /// (arrival, departure, size), in report order.
    samples: VecDeque<(Duration, Instant, usize)>,
    bytes: usize,
}

impl AckedRate {
    fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
            bytes: 0,
        }
    }

    fn add(&mut self, arrival: Duration, departure: Instant, size: usize) {
        // Arrival order may differ from send order; the window is approximate at its edges.
        self.samples.push_back((arrival, departure, size));
        self.bytes += size;
        while let Some(&(at, _, s)) = self.samples.front() {
            if arrival.saturating_sub(at) <= self.window {
                break;
            }
            self.samples.pop_front();
            self.bytes -= s;
        }
    }

    /// None until the window spans 100 ms.
    fn bps(&self) -> Option<f64> {
        let (&(first, _, first_size), &(last, _, _)) =
            (self.samples.front()?, self.samples.back()?);
        let span = last.checked_sub(first)?;
        (span >= Duration::from_millis(100))
            .then(|| (self.bytes - first_size) as f64 * 8.0 / span.as_secs_f64())
    }

    /// The rate of the window's packets that left at `since` or later, when they arrived more
    /// spread out than they left: they queued at the bottleneck, and their arrival rate is the
    /// bottleneck's. None when they arrived as they left (the rate is the sender's own), or
    /// when too few of them span too little time to tell.
    fn queued_bps(&self, since: Option<Instant>) -> Option<f64> {
        let mut arrived: Option<(Duration, Duration)> = None;
        let mut sent: Option<(Instant, Instant)> = None;
        let (mut bytes, mut packets, mut first_size) = (0, 0, 0);
        for &(a, d, size) in &self.samples {
            if since.is_some_and(|at| d < at) {
                continue;
            }
            match arrived {
                None => first_size = size,
                Some((first, _)) if a < first => first_size = size,
                _ => {}
            }
            arrived = Some(arrived.map_or((a, a), |(x, y)| (x.min(a), y.max(a))));
            sent = Some(sent.map_or((d, d), |(x, y)| (x.min(d), y.max(d))));
            bytes += size;
            packets += 1;
        }
        let (first, last) = arrived?;
        let span = last.saturating_sub(first);
        if packets < QUEUED_MIN_PACKETS || span < Duration::from_millis(100) {
            return None;
        }
        let sent = sent?;
        let sent_span = sent.1.saturating_duration_since(sent.0).as_secs_f64();
        (span.as_secs_f64() > QUEUED_SPREAD * sent_span + 0.002)
            .then(|| (bytes - first_size) as f64 * 8.0 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Packets of `size` bytes sent every `gap`, over a link that delivers `link_bps` after a
    /// base delay of 20 ms (a queue forms when sending faster), fed back every 100 ms.
    struct Path {
        t0: Instant,
        id: u64,
        queue_free_at: Duration,
        link_bps: f64,
    }

    impl Path {
        fn new(link_bps: f64) -> Self {
            Self {
                t0: Instant::now(),
                id: 0,
                queue_free_at: Duration::ZERO,
                link_bps,
            }
        }

        /// Sends at `send_bps` (the estimate, at most `send_bps`, when `follow`) for `millis`,
        /// feeding back to `bwe` every 100 ms.
        fn run(&mut self, bwe: &mut SendSideBwe, from_ms: u64, millis: u64, send_bps: f64) {
            self.run_with(bwe, from_ms, millis, send_bps, false)
        }

        fn run_with(
            &mut self,
            bwe: &mut SendSideBwe,
            from_ms: u64,
            millis: u64,
            send_bps: f64,
            follow: bool,
        ) {
            let size = 1200usize;
            let rate = |bwe: &SendSideBwe| {
                if follow {
                    bwe.estimate().min(send_bps)
                } else {
                    send_bps
                }
            };
            let mut gap = Duration::from_secs_f64(size as f64 * 8.0 / rate(bwe));
            let mut t = self.t0 + ms(from_ms);
            let end = t + ms(millis);
            let mut batch = Vec::new();
            let mut next_feedback = t + ms(100);
            while t < end {
                let depart = t.duration_since(self.t0);
                let service = Duration::from_secs_f64(size as f64 * 8.0 / self.link_bps);
                let start = self.queue_free_at.max(depart);
                self.queue_free_at = start + service;
                // A 200 ms buffer: beyond it the packet is lost.
                let arrived = self.queue_free_at - depart < ms(200);
                if !arrived {
                    self.queue_free_at = start;
                }
                batch.push(PacketReport {
                    ssrc: 1,
                    id: self.id,
                    rtp_sequence_number: self.id as u16,
                    is_twcc: true,
                    twcc_sequence_number: self.id as u16,
                    size,
                    arrived,
                    departure: t,
                    arrival: arrived.then_some(self.queue_free_at + ms(20)),
                    ecn: Ecn::default(),
                });
                self.id += 1;
                t += gap;
                if t >= next_feedback {
                    bwe.on_reports(next_feedback + ms(20), &batch);
                    batch.clear();
                    gap = Duration::from_secs_f64(size as f64 * 8.0 / rate(bwe));
                    next_feedback += ms(100);
                }
            }
        }
    }

    #[test]
    fn overuse_brings_the_estimate_under_the_link() {
        let mut bwe = SendSideBwe::new(2_000_000.0, 50_000.0, 10_000_000.0);
        let mut path = Path::new(500_000.0);
        path.run_with(&mut bwe, 0, 3000, 2_000_000.0, true);
        // It oscillates around the capacity (probing upward, backing off on delay).
        assert!(
            bwe.estimate() < 600_000.0,
            "estimate {} over a 500 kbit/s link",
            bwe.estimate()
        );
        assert!(bwe.estimate() > 200_000.0, "estimate {}", bwe.estimate());
    }

    #[test]
    fn an_application_limited_sender_does_not_inflate_the_estimate() {
        let mut bwe = SendSideBwe::new(500_000.0, 50_000.0, 10_000_000.0);
        let mut path = Path::new(10_000_000.0);
        path.run(&mut bwe, 0, 20_000, 200_000.0);
        assert!(
            bwe.estimate() <= 500_000.0 + 1.0,
            "estimate {} from 200 kbit/s of traffic",
            bwe.estimate()
        );
    }

    #[test]
    fn heavy_loss_lowers_the_estimate() {
        let mut bwe = SendSideBwe::new(1_000_000.0, 50_000.0, 10_000_000.0);
        let t0 = Instant::now();
        for batch in 0..40u64 {
            let at = t0 + ms(batch * 100);
            let reports: Vec<_> = (0..10u64)
                .map(|i| PacketReport {
                    ssrc: 1,
                    id: batch * 10 + i,
                    rtp_sequence_number: 0,
                    is_twcc: true,
                    twcc_sequence_number: 0,
                    size: 1200,
                    arrived: i % 3 != 0,
                    departure: at + ms(i * 10),
                    arrival: (i % 3 != 0).then_some(ms(batch * 100 + i * 10 + 20)),
                    ecn: Ecn::default(),
                })
                .collect();
            bwe.on_reports(at + ms(120), &reports);
        }
        assert!(bwe.estimate() < 500_000.0, "estimate {}", bwe.estimate());
        assert_eq!(bwe.cause(), Cause::Loss);
    }

    /// Every other feedback packet lost on the way back: the packets it covered come out of the
    /// engine unacknowledged, before the next feedback's start. They are not the link's loss.
    fn half_the_feedback_lost(scoped: bool, twcc: bool) -> SendSideBwe {
        let mut bwe = SendSideBwe::new(1_000_000.0, 50_000.0, 10_000_000.0);
        let t0 = Instant::now();
        for batch in 0..40u64 {
            let at = t0 + ms(batch * 200);
            let reports: Vec<_> = (0..20u64)
                .map(|i| {
                    let seq = batch * 20 + i;
                    let arrived = i >= 10;
                    PacketReport {
                        ssrc: 1,
                        id: seq,
                        rtp_sequence_number: seq as u16,
                        is_twcc: twcc,
                        twcc_sequence_number: seq as u16,
                        size: 1200,
                        arrived,
                        departure: at + ms(i * 10),
                        arrival: arrived.then_some(ms(batch * 200 + i * 10 + 20)),
                        ecn: Ecn::default(),
                    }
                })
                .collect();
            if scoped {
                bwe.note_feedback_start((batch * 20 + 10) as u16);
            }
            bwe.on_reports(at + ms(220), &reports);
        }
        bwe
    }

    #[test]
    fn packets_of_a_lost_feedback_are_not_counted_as_lost() {
        let unscoped = half_the_feedback_lost(false, true);
        assert_eq!(
            unscoped.cause(),
            Cause::Loss,
            "without the scope it reads 50% loss"
        );
        let scoped = half_the_feedback_lost(true, true);
        assert_ne!(scoped.cause(), Cause::Loss);
        assert_eq!(scoped.loss(), Some(0.0));
        assert!(
            scoped.estimate() >= 1_000_000.0,
            "estimate {}",
            scoped.estimate()
        );
    }

    #[test]
    fn packets_without_a_transport_wide_number_are_not_judged() {
        let bwe = half_the_feedback_lost(false, false);
        assert_ne!(bwe.cause(), Cause::Loss);
        assert_eq!(bwe.loss(), None, "no packet could be reported on");
    }

    #[test]
    fn sequence_order_wraps() {
        assert!(precedes(65_530, 3));
        assert!(!precedes(3, 65_530));
        assert!(precedes(1, 2));
        assert!(!precedes(2, 2));
    }

    #[test]
    fn a_probe_that_queued_below_the_estimate_brings_it_down() {
        let mut bwe = SendSideBwe::new(700_000.0, 50_000.0, 10_000_000.0);
        let t0 = Instant::now();
        let mut path = Path::new(10_000_000.0);
        path.t0 = t0;
        path.run(&mut bwe, 0, 1000, 300_000.0);
        bwe.last_probe = None;
        bwe.probe = None;
        // The result as the worker gets it: a cluster that queued and drained at 560k.
        let result = ProbeResult {
            bps: 560_000.0,
            target_bps: 1_000_000.0,
            at: t0 + ms(1000),
            queued: true,
        };
        assert!(bwe.apply_probe_result(t0 + ms(1000), &result, 0.0));
        assert!(
            (bwe.estimate() - 504_000.0).abs() < 1.0,
            "estimate {}",
            bwe.estimate()
        );
        assert!(bwe.limit_seen());
    }

    #[test]
    fn remb_counts_only_without_transport_feedback() {
        let mut bwe = SendSideBwe::default();
        let t0 = Instant::now();
        bwe.on_remb(t0, 400_000.0);
        assert_eq!(bwe.estimate(), 400_000.0);
        let mut path = Path::new(10_000_000.0);
        path.t0 = t0;
        path.run(&mut bwe, 0, 1000, 300_000.0);
        let before = bwe.estimate();
        bwe.on_remb(t0 + ms(1100), 100_000.0);
        assert_eq!(bwe.estimate(), before, "TWCC is flowing: REMB is ignored");
    }
}
