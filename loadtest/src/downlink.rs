//! What the server tells each subscriber about its downlink, recorded over the run: its
//! connection-quality reports (estimate, allocation, grade) as a bounded time series, and per
//! subscribed video track the layers it forwarded (from stream-state updates): time on each,
//! switches, and pauses with their reason.
//!
//! Memory stays bounded however long the run: at most [`MAX_QUALITY_SAMPLES`] reports are kept
//! per subscriber (past that, every other one is dropped and from then on only every second,
//! fourth, ... report is kept, so the series still spans the run), and at most
//! [`MAX_LAYER_EVENTS`] layer changes per track. Counts, minima, maxima and times are exact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prism_client::proto::ConnectionQualityUpdate;
use prism_client::proto::connection_quality_update::Quality as Grade;
use prism_client::{StreamState, VideoQuality};
use serde::Serialize;

/// Reports kept per subscriber.
pub const MAX_QUALITY_SAMPLES: usize = 256;
/// Layer changes kept per subscribed track.
pub const MAX_LAYER_EVENTS: usize = 256;

/// The grade's name in the report.
pub fn grade_name(grade: Grade) -> &'static str {
    match grade {
        Grade::Excellent => "excellent",
        Grade::Good => "good",
        Grade::Poor => "poor",
        Grade::Lost => "lost",
    }
}

/// Time spent in each of a sequence of states, counted from the window's start once it began.
#[derive(Debug, Clone, Default)]
struct Timeline {
    current: Option<(String, Instant)>,
    /// Closed intervals, within the window.
    time: BTreeMap<String, Duration>,
    window_start: Option<Instant>,
}

impl Timeline {
    fn current(&self) -> Option<&str> {
        self.current.as_ref().map(|(k, _)| k.as_str())
    }

    /// The part of [`at`, `now`) inside the window.
    fn counted(&self, at: Instant, now: Instant) -> Duration {
        let from = self.window_start.map_or(at, |w| w.max(at));
        now.saturating_duration_since(from)
    }

    /// From `now` on the state is `key`.
    fn set(&mut self, key: String, now: Instant) {
        if let Some((k, at)) = self.current.take() {
            let d = self.counted(at, now);
            *self.time.entry(k).or_default() += d;
        }
        self.current = Some((key, now));
    }

    fn start_window(&mut self, now: Instant) {
        self.time.clear();
        self.window_start = Some(now);
    }

    /// Time in each state up to `now`, the current one included.
    fn totals(&self, now: Instant) -> BTreeMap<String, Duration> {
        let mut time = self.time.clone();
        if let Some((k, at)) = &self.current {
            *time.entry(k.clone()).or_default() += self.counted(*at, now);
        }
        time
    }
}

/// Exact minimum and maximum.
#[derive(Debug, Clone, Copy, Default)]
struct MinMax(Option<(u64, u64)>);

impl MinMax {
    fn add(&mut self, v: u64) {
        self.0 = Some(self.0.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }
}

/// One connection-quality report as the load tester kept it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualitySample {
    /// Seconds since the run started.
    pub t_secs: f64,
    /// excellent / good / poor / lost.
    pub quality: &'static str,
    /// The server's estimate of the downlink, bits per second (0 = none yet).
    pub estimate_bps: u64,
    /// What the server's allocator chose to send within it.
    pub allocated_bps: u64,
    /// What the subscriber's requests would need uncapped.
    pub wanted_bps: u64,
    /// Downlink loss fraction the subscriber reported.
    pub loss: f32,
    /// Round-trip time, ms (0 = unknown).
    pub rtt_ms: u32,
    /// Video tracks paused for bandwidth.
    pub paused_tracks: u32,
}

/// One subscriber's connection-quality reports.
#[derive(Debug, Clone)]
pub struct QualityLog {
    samples: Vec<QualitySample>,
    /// One report in `stride` is kept.
    stride: u64,
    seen: u64,
    grades: Timeline,
    /// In the window (or the whole run before it): reports, estimate and allocation extremes,
    /// worst loss.
    reports: u64,
    estimate: MinMax,
    allocated: MinMax,
    max_loss: f32,
    window_start_secs: Option<f64>,
}

impl Default for QualityLog {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            stride: 1,
            seen: 0,
            grades: Timeline::default(),
            reports: 0,
            estimate: MinMax::default(),
            allocated: MinMax::default(),
            max_loss: 0.0,
            window_start_secs: None,
        }
    }
}

impl QualityLog {
    /// Records a report received at `now` (`started`: the run's start).
    pub fn record(&mut self, report: &ConnectionQualityUpdate, now: Instant, started: Instant) {
        let grade = grade_name(report.quality());
        if self.grades.current() != Some(grade) {
            self.grades.set(grade.to_owned(), now);
        }
        self.reports += 1;
        self.estimate.add(report.estimate_bps);
        self.allocated.add(report.allocated_bps);
        self.max_loss = self.max_loss.max(report.loss);
        let keep = self.seen.is_multiple_of(self.stride);
        self.seen += 1;
        if !keep {
            return;
        }
        if self.samples.len() >= MAX_QUALITY_SAMPLES {
            // Thin out: keep every other sample (those at multiples of twice the stride).
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
            if !(self.seen - 1).is_multiple_of(self.stride) {
                return;
            }
        }
        self.samples.push(QualitySample {
            t_secs: now.saturating_duration_since(started).as_secs_f64(),
            quality: grade,
            estimate_bps: report.estimate_bps,
            allocated_bps: report.allocated_bps,
            wanted_bps: report.wanted_bps,
            loss: report.loss,
            rtt_ms: report.rtt_ms,
            paused_tracks: report.paused_tracks,
        });
    }

    /// The measured window starts: summaries count from here (the series keeps the whole run).
    pub fn start_window(&mut self, now: Instant, started: Instant) {
        self.grades.start_window(now);
        self.reports = 0;
        self.estimate = MinMax::default();
        self.allocated = MinMax::default();
        self.max_loss = 0.0;
        self.window_start_secs = Some(now.saturating_duration_since(started).as_secs_f64());
    }

    /// Whether any report arrived.
    pub fn received_any(&self) -> bool {
        self.seen > 0
    }

    /// The kept reports, oldest first.
    pub fn samples(&self) -> &[QualitySample] {
        &self.samples
    }

    /// Kept reports within the window (all of them before it started).
    pub fn window_samples(&self) -> impl Iterator<Item = &QualitySample> {
        let from = self.window_start_secs.unwrap_or(f64::NEG_INFINITY);
        self.samples.iter().filter(move |s| s.t_secs >= from)
    }

    /// What the report shows of this subscriber, up to `now`.
    pub fn summary(&self, now: Instant) -> QualitySummary {
        let median = |f: fn(&QualitySample) -> u64| {
            let mut v: Vec<u64> = self.window_samples().map(f).collect();
            v.sort_unstable();
            (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
        };
        let kbps = |bps: u64| bps as f64 / 1000.0;
        let range = |m: MinMax, p50: Option<u64>| {
            let (lo, hi) = m.0?;
            Some(KbpsRange {
                p50: kbps(p50.unwrap_or(lo)),
                min: kbps(lo),
                max: kbps(hi),
            })
        };
        QualitySummary {
            reports: self.reports,
            last_quality: self.samples.last().map(|s| s.quality),
            estimate_kbps: range(self.estimate, median(|s| s.estimate_bps)),
            allocated_kbps: range(self.allocated, median(|s| s.allocated_bps)),
            max_loss: self.max_loss,
            time_in_quality_secs: secs(self.grades.totals(now)),
            samples_kept_every: self.stride,
        }
    }
}

/// Median, minimum and maximum of a bitrate, kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KbpsRange {
    /// Median of the kept reports.
    pub p50: f64,
    /// Lowest reported (exact).
    pub min: f64,
    /// Highest reported (exact).
    pub max: f64,
}

/// One subscriber's reports, summarized over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualitySummary {
    /// Reports received in the window.
    pub reports: u64,
    /// The grade of the last report.
    pub last_quality: Option<&'static str>,
    /// The server's downlink estimate.
    pub estimate_kbps: Option<KbpsRange>,
    /// What the server allocated within it.
    pub allocated_kbps: Option<KbpsRange>,
    /// Worst downlink loss reported (fraction).
    pub max_loss: f32,
    /// Seconds in each grade (a grade holds from its report to the next).
    pub time_in_quality_secs: BTreeMap<String, f64>,
    /// 1 while every report is kept in `samples`; 2, 4, ... once a long run thinned them.
    pub samples_kept_every: u64,
}

/// A change of what the server forwards of one video track.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerEvent {
    /// Seconds since the run started.
    pub t_secs: f64,
    /// The layer forwarded ("f 1280x720"), or "paused (<reason>)".
    pub layer: String,
}

/// The layers one subscribed video track went through.
#[derive(Debug, Clone, Default)]
pub struct LayerLog {
    timeline: Timeline,
    /// The last layer forwarded (pauses in between do not reset it).
    last_layer: Option<String>,
    paused: bool,
    switches: u64,
    pauses: BTreeMap<&'static str, u64>,
    events: Vec<LayerEvent>,
    events_dropped: u64,
}

/// How a forwarded layer is named: RID and size as the publisher declared them, like the
/// report's `layer` ("f 1280x720"); for a track without simulcast, the name `name_of_size`
/// gives its size (the scenario's layer), if any; the quality rank when nothing is known.
pub fn layer_label(
    state: &StreamState,
    name_of_size: impl Fn(u32, u32) -> Option<String>,
) -> String {
    if state.paused {
        return format!("paused ({})", state.reason.as_str());
    }
    let size = (state.width > 0).then(|| format!("{}x{}", state.width, state.height));
    match (state.rid.is_empty(), size) {
        (false, Some(size)) => format!("{} {size}", state.rid),
        (false, None) => state.rid.clone(),
        (true, Some(size)) => match name_of_size(state.width, state.height) {
            Some(name) => format!("{name} {size}"),
            None => size,
        },
        (true, None) => match state.quality {
            VideoQuality::Low => "low",
            VideoQuality::Medium => "medium",
            VideoQuality::High | VideoQuality::QualityUnspecified => "high",
        }
        .to_owned(),
    }
}

impl LayerLog {
    /// Records a stream-state update received at `now`, named `label` ([`layer_label`]).
    pub fn record(&mut self, state: &StreamState, label: String, now: Instant, started: Instant) {
        if self.timeline.current() == Some(label.as_str()) {
            return;
        }
        if state.paused {
            if !self.paused {
                *self.pauses.entry(state.reason.as_str()).or_default() += 1;
            }
        } else {
            if self.last_layer.as_ref().is_some_and(|l| *l != label) {
                self.switches += 1;
            }
            self.last_layer = Some(label.clone());
        }
        self.paused = state.paused;
        if self.events.len() < MAX_LAYER_EVENTS {
            self.events.push(LayerEvent {
                t_secs: now.saturating_duration_since(started).as_secs_f64(),
                layer: label.clone(),
            });
        } else {
            self.events_dropped += 1;
        }
        self.timeline.set(label, now);
    }

    /// The measured window starts: counts and times restart (the event list keeps the run).
    pub fn start_window(&mut self, now: Instant) {
        self.timeline.start_window(now);
        self.switches = 0;
        self.pauses.clear();
    }

    /// Whether any update arrived.
    pub fn is_empty(&self) -> bool {
        self.timeline.current.is_none()
    }

    /// What the report shows of this track, up to `now`.
    pub fn summary(&self, now: Instant) -> LayerSummary {
        let time = self.timeline.totals(now);
        let known: Duration = time.values().sum();
        let minutes = known.as_secs_f64() / 60.0;
        LayerSummary {
            switches: self.switches,
            switches_per_min: (known >= Duration::from_secs(1))
                .then(|| self.switches as f64 / minutes),
            pauses: self
                .pauses
                .iter()
                .map(|(r, n)| ((*r).to_owned(), *n))
                .collect(),
            time_on_secs: secs(time),
            current: self.timeline.current().map(str::to_owned),
            events: self.events.clone(),
            events_dropped: self.events_dropped,
        }
    }
}

/// One subscribed video track's layers, summarized over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSummary {
    /// Changes of the forwarded layer (a pause and a resume on the same layer is none).
    pub switches: u64,
    /// Switches per minute of known state (none under a second of it).
    pub switches_per_min: Option<f64>,
    /// Pauses, by reason (requested, no_layer, bandwidth, none).
    pub pauses: BTreeMap<String, u64>,
    /// Seconds on each layer and paused (by reason), from the server's updates.
    pub time_on_secs: BTreeMap<String, f64>,
    /// What is forwarded now.
    pub current: Option<String>,
    /// Every change over the whole run (the first [`MAX_LAYER_EVENTS`]).
    pub events: Vec<LayerEvent>,
    /// Changes beyond those.
    pub events_dropped: u64,
}

fn secs(time: BTreeMap<String, Duration>) -> BTreeMap<String, f64> {
    time.into_iter()
        .map(|(k, d)| (k, (d.as_secs_f64() * 1000.0).round() / 1000.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_client::PauseReason;

    fn report(grade: Grade, estimate: u64) -> ConnectionQualityUpdate {
        ConnectionQualityUpdate {
            quality: grade as i32,
            estimate_bps: estimate,
            allocated_bps: estimate / 2,
            wanted_bps: estimate,
            loss: 0.01,
            rtt_ms: 2,
            paused_tracks: 0,
        }
    }

    fn state(rid: &str, w: u32, paused: Option<PauseReason>) -> StreamState {
        StreamState {
            paused: paused.is_some(),
            reason: paused.unwrap_or_default(),
            rid: rid.into(),
            quality: VideoQuality::High,
            width: w,
            height: w * 9 / 16,
        }
    }

    #[test]
    fn quality_summary_over_the_window() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = QualityLog::default();
        log.record(&report(Grade::Excellent, 100_000), at(0), t0);
        log.record(&report(Grade::Excellent, 3_000_000), at(2), t0);
        log.start_window(at(3), t0);
        log.record(&report(Grade::Good, 800_000), at(4), t0);
        log.record(&report(Grade::Good, 1_000_000), at(6), t0);
        log.record(&report(Grade::Excellent, 1_200_000), at(8), t0);
        let s = log.summary(at(13));
        assert_eq!(s.reports, 3);
        assert_eq!(s.last_quality, Some("excellent"));
        let e = s.estimate_kbps.unwrap();
        assert_eq!((e.p50, e.min, e.max), (1000.0, 800.0, 1200.0));
        assert_eq!(s.allocated_kbps.unwrap().p50, 500.0);
        // Excellent from 3 (window start) to 4 and from 8 to 13; good from 4 to 8.
        assert_eq!(s.time_in_quality_secs["excellent"], 6.0);
        assert_eq!(s.time_in_quality_secs["good"], 4.0);
        assert_eq!(log.samples().len(), 5);
        assert_eq!(log.samples()[2].t_secs, 4.0);
        assert_eq!(log.samples()[2].quality, "good");
    }

    #[test]
    fn quality_samples_stay_bounded_and_span_the_run() {
        let t0 = Instant::now();
        let mut log = QualityLog::default();
        let n = MAX_QUALITY_SAMPLES as u64 * 5;
        for i in 0..n {
            log.record(
                &report(Grade::Excellent, 1000 + i),
                t0 + Duration::from_secs(2 * i),
                t0,
            );
        }
        let kept = log.samples();
        assert!(kept.len() <= MAX_QUALITY_SAMPLES, "{}", kept.len());
        assert!(kept.len() >= MAX_QUALITY_SAMPLES / 2, "{}", kept.len());
        assert_eq!(kept[0].t_secs, 0.0);
        // Evenly spaced at the stride, and the latest is near the end of the run.
        let stride = log.summary(t0).samples_kept_every;
        assert_eq!(stride, 8);
        for w in kept.windows(2) {
            assert_eq!(w[1].t_secs - w[0].t_secs, 2.0 * stride as f64);
        }
        let last = kept.last().unwrap().t_secs;
        assert!(last >= (2 * (n - stride)) as f64, "{last}");
        // Extremes are exact even for reports that were not kept.
        let e = log.summary(t0).estimate_kbps.unwrap();
        assert_eq!((e.min, e.max), (1.0, (1000 + n - 1) as f64 / 1000.0));
    }

    fn label(s: &StreamState) -> String {
        layer_label(s, |w, _| (w == 960).then(|| "x".to_owned()))
    }

    fn record(log: &mut LayerLog, s: StreamState, now: Instant, t0: Instant) {
        log.record(&s, label(&s), now, t0);
    }

    #[test]
    fn layers_switches_pauses_and_time() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = LayerLog::default();
        assert!(log.is_empty());
        record(&mut log, state("q", 320, None), at(0), t0);
        record(&mut log, state("f", 1280, None), at(1), t0);
        log.start_window(at(2));
        record(&mut log, state("f", 1280, None), at(3), t0); // repeated: nothing changes
        record(&mut log, state("h", 640, None), at(10), t0);
        record(
            &mut log,
            state("h", 640, Some(PauseReason::Bandwidth)),
            at(20),
            t0,
        );
        record(
            &mut log,
            state("h", 640, Some(PauseReason::Requested)),
            at(25),
            t0,
        );
        record(&mut log, state("h", 640, None), at(30), t0); // resume on h: no switch
        record(&mut log, state("f", 1280, None), at(50), t0);
        let s = log.summary(at(62));
        assert_eq!(s.switches, 2, "f->h, h->f");
        assert_eq!(s.pauses.get("bandwidth"), Some(&1));
        assert_eq!(s.pauses.get("requested"), None, "still the same pause");
        assert_eq!(s.time_on_secs["f 1280x720"], 8.0 + 12.0);
        assert_eq!(s.time_on_secs["h 640x360"], 10.0 + 20.0);
        assert_eq!(s.time_on_secs["paused (bandwidth)"], 5.0);
        assert_eq!(s.time_on_secs["paused (requested)"], 5.0);
        assert_eq!(s.switches_per_min, Some(2.0));
        assert_eq!(s.current.as_deref(), Some("f 1280x720"));
        assert_eq!(s.events.len(), 7);
        assert_eq!(s.events[0].layer, "q 320x180");
        assert_eq!(s.events[3].layer, "paused (bandwidth)");
        assert_eq!(s.events[3].t_secs, 20.0);
    }

    #[test]
    fn layer_events_are_capped() {
        let t0 = Instant::now();
        let mut log = LayerLog::default();
        for i in 0..(MAX_LAYER_EVENTS as u64 + 10) {
            let rid = if i % 2 == 0 { "q" } else { "f" };
            let s = state(rid, 0, None);
            log.record(&s, label(&s), t0 + Duration::from_millis(i), t0);
        }
        let s = log.summary(t0 + Duration::from_secs(60));
        assert_eq!(s.events.len(), MAX_LAYER_EVENTS);
        assert_eq!(s.events_dropped, 10);
        assert_eq!(s.switches, MAX_LAYER_EVENTS as u64 + 9);
    }

    #[test]
    fn labels() {
        assert_eq!(label(&state("h", 640, None)), "h 640x360");
        assert_eq!(label(&state("h", 0, None)), "h");
        assert_eq!(label(&state("", 1280, None)), "1280x720");
        assert_eq!(label(&state("", 960, None)), "x 960x540");
        assert_eq!(label(&state("", 0, None)), "high");
        assert_eq!(
            label(&state("", 0, Some(PauseReason::NoLayer))),
            "paused (no_layer)"
        );
    }
}
