//! The report of a run: built from the participants' counters, printed as tables, written as
//! JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_client::TrackKind;
use serde::Serialize;

use crate::downlink::{LayerSummary, QualitySample, QualitySummary};
use crate::participant::{Participant, Status, lock};
use crate::procstat::Sample;
use crate::scenario::Scenario;
use crate::stats::{Histogram, Percentiles, TrackStats};

/// Why NACK and PLI counts may be absent.
pub const NACK_PLI_NOTE: &str = "NACKs sent and PLIs sent are n/a for subscribers whose peer \
    connection statistics could not be read at both ends of the window";

/// What the runner hands over to build a report.
#[derive(Debug)]
pub struct RunRecord {
    /// The scenario.
    pub scenario: Scenario,
    /// Every participant, joined or not.
    pub participants: Vec<Arc<Participant>>,
    /// When the run started.
    pub started: Instant,
    /// When the measured window started, if it did.
    pub window_start: Option<Instant>,
    /// When measuring stopped (the end of the window, or the interruption).
    pub measured_until: Instant,
    /// Start to end of the run.
    pub elapsed: Duration,
    /// Length of the join phase, if it ended.
    pub join_phase: Option<Duration>,
    /// Length of the measured window, if it started (cut short when interrupted).
    pub window: Option<Duration>,
    /// Packets received by every subscriber within the window.
    pub window_rx_packets: u64,
    /// RTP bytes received by every subscriber within the window.
    pub window_rx_bytes: u64,
    /// Packets sent by every publisher within the window.
    pub window_tx_packets: u64,
    /// The server, when measured.
    pub server: Option<ServerRecord>,
    /// The load tester's own CPU seconds within the window.
    pub tester_window_cpu_secs: Option<f64>,
    /// The whole machine's busy fraction (0..=1 of all cores) within the window.
    pub machine_busy: Option<f64>,
    /// Set when the run did not complete, with why.
    pub partial: Option<String>,
}

/// The server's measurements.
#[derive(Debug, Clone)]
pub struct ServerRecord {
    /// Its pid.
    pub pid: u32,
    /// Once-a-second samples over the whole run.
    pub samples: Vec<Sample>,
    /// CPU seconds it used within the measured window.
    pub window_cpu_secs: Option<f64>,
    /// RSS at the start of the run, bytes.
    pub rss_start: Option<u64>,
    /// Peak RSS, bytes.
    pub rss_peak: u64,
    /// RSS at the end, bytes.
    pub rss_end: Option<u64>,
    /// A sampling error (the process may have died).
    pub error: Option<String>,
}

/// The whole report (this is also the JSON document).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Why the run is incomplete, if it is.
    pub partial: Option<String>,
    /// What the figures cannot show (unsupported features, unavailable counters).
    pub notes: Vec<String>,
    /// Phases.
    pub timing: Timing,
    /// Joins.
    pub participants: ParticipantSummary,
    /// Video subscriptions, summarized.
    pub video: Option<KindSummary>,
    /// Audio subscriptions, summarized.
    pub audio: Option<KindSummary>,
    /// Traffic within the window.
    pub traffic: Traffic,
    /// The server's connection-quality reports to subscribers, summarized (none when no
    /// subscriber got one: a server without downlink estimation, or no media).
    pub downlink: Option<DownlinkSummary>,
    /// The server's CPU and memory, when measured.
    pub server: Option<ServerSummary>,
    /// The load tester and the machine (the tester shares the machine with the server).
    pub machine: MachineSummary,
    /// Every published track.
    pub publications: Vec<PublicationRow>,
    /// Every subscribed track of every subscriber.
    pub subscriptions: Vec<SubscriptionRow>,
    /// Every subscriber's downlink as the server reported it, with the reports over time.
    pub subscribers: Vec<SubscriberRow>,
}

/// Phase lengths.
#[derive(Debug, Serialize)]
pub struct Timing {
    /// Start to end.
    pub elapsed_secs: f64,
    /// Join phase.
    pub join_phase_secs: Option<f64>,
    /// Measured window (loss, latency, bitrate and server CPU per packet are over it).
    pub window_secs: Option<f64>,
    /// When the window started, seconds since the run started (the `t_secs` of time series
    /// count from the run's start too).
    pub window_start_secs: Option<f64>,
}

/// Joins.
#[derive(Debug, Serialize)]
pub struct ParticipantSummary {
    /// Participants in the scenario.
    pub planned: u64,
    /// Joined and still connected at the end.
    pub joined: u64,
    /// Joins that failed.
    pub failed: u64,
    /// Joined, then disconnected by the server during the run.
    pub disconnected: u64,
    /// Never got to try (the run ended first).
    pub not_started: u64,
    /// Failure and disconnect reasons, with counts.
    pub errors: BTreeMap<String, u64>,
    /// Token to signaling join, ms.
    pub connect_ms: Option<Percentiles>,
    /// Tracks subscribers should receive in total.
    pub tracks_expected: u64,
    /// Tracks whose media arrived.
    pub tracks_received: u64,
}

/// Summary of one kind of track over all subscriptions.
#[derive(Debug, Serialize)]
pub struct KindSummary {
    /// Subscribed tracks with media.
    pub tracks: u64,
    /// Packets the publishers sent within the span each subscriber saw.
    pub packets_expected: u64,
    /// Distinct packets received.
    pub packets_received: u64,
    /// Expected minus received.
    pub packets_lost: u64,
    /// Lost / expected over all tracks, %.
    pub loss_pct: f64,
    /// Packets received twice or more.
    pub duplicates: u64,
    /// Packets with no readable or an altered stamp.
    pub bad_payloads: u64,
    /// Tracks that had media before the window and none within it.
    pub stalled: u64,
    /// Token to first packet, ms, over tracks.
    pub join_ms: Option<Percentiles>,
    /// Loss per track, %, over tracks.
    pub loss_pct_per_track: Option<Percentiles>,
    /// One-way latency, ms, over every packet.
    pub latency_ms: Option<Percentiles>,
    /// Received bitrate per track, kbit/s.
    pub bitrate_kbps: Option<Percentiles>,
    /// Received layer -> tracks.
    pub layers: BTreeMap<String, u64>,
    /// Layer changes the server announced (stream-state updates) in the window, all tracks.
    pub layer_switches: u64,
    /// Layer switches per minute, over tracks.
    pub switches_per_min: Option<Percentiles>,
    /// Share of track-time on each layer and paused (by reason), %, from the server's updates.
    pub time_on_layer_pct: BTreeMap<String, f64>,
    /// Pauses by reason (requested, no_layer, bandwidth).
    pub pauses: BTreeMap<String, u64>,
    /// NACKs sent (not available, see the notes).
    pub nacks_sent: Option<u64>,
    /// PLIs sent (not available, see the notes).
    pub plis_sent: Option<u64>,
}

/// Traffic within the window.
#[derive(Debug, Serialize)]
pub struct Traffic {
    /// Packets received by subscribers (= forwarded by the server and delivered), per second.
    pub forwarded_pps: Option<f64>,
    /// Their bitrate, Mbit/s.
    pub forwarded_mbps: Option<f64>,
    /// Packets sent by publishers, per second.
    pub published_pps: Option<f64>,
}

/// The server over the run.
#[derive(Debug, Serialize)]
pub struct ServerSummary {
    /// Its pid.
    pub pid: u32,
    /// CPU within the window, % of one core.
    pub cpu_window_pct: Option<f64>,
    /// Highest one-second CPU sample, % of one core.
    pub cpu_peak_pct: Option<f64>,
    /// CPU seconds within the window.
    pub cpu_window_secs: Option<f64>,
    /// CPU time per packet delivered to a subscriber within the window, µs.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// RSS at the start, MiB.
    pub rss_start_mib: Option<f64>,
    /// Peak RSS, MiB.
    pub rss_peak_mib: f64,
    /// RSS at the end, MiB.
    pub rss_end_mib: Option<f64>,
    /// A sampling error.
    pub error: Option<String>,
    /// Once-a-second samples.
    pub samples: Vec<Sample>,
}

/// Who else used the CPU.
#[derive(Debug, Serialize)]
pub struct MachineSummary {
    /// CPUs online.
    pub cpus: usize,
    /// The load tester's CPU within the window, % of one core.
    pub tester_cpu_window_pct: Option<f64>,
    /// All cores busy within the window, % of the machine (100 = every core saturated).
    pub machine_busy_pct: Option<f64>,
}

/// One published track.
#[derive(Debug, Serialize)]
pub struct PublicationRow {
    /// Room.
    pub room: String,
    /// Publisher.
    pub publisher: String,
    /// Track sid.
    pub track_sid: String,
    /// audio / video.
    pub kind: &'static str,
    /// Published layer (video).
    pub layer: Option<String>,
    /// Packets sent.
    pub packets_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Keyframes sent.
    pub keyframes: u64,
    /// PLI/FIR received from the server.
    pub keyframe_requests: u64,
    /// Frames (video) or packets (audio) per second it should send.
    pub target_rate: f64,
    /// What it achieved within the window (below target = the load tester fell behind).
    pub window_rate: Option<f64>,
    /// Failed writes.
    pub write_errors: u64,
}

/// One subscriber's copy of one track.
#[derive(Debug, Serialize)]
pub struct SubscriptionRow {
    /// Room.
    pub room: String,
    /// Subscriber.
    pub subscriber: String,
    /// Publisher.
    pub publisher: String,
    /// Track sid.
    pub track_sid: String,
    /// audio / video.
    pub kind: &'static str,
    /// Token to first packet, ms.
    pub join_ms: Option<f64>,
    /// Packets expected.
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Lost.
    pub lost: u64,
    /// Loss, %.
    pub loss_pct: f64,
    /// Duplicates.
    pub duplicates: u64,
    /// NACKs sent (n/a: null).
    pub nacks_sent: Option<u64>,
    /// PLIs sent (n/a: null).
    pub plis_sent: Option<u64>,
    /// One-way latency, ms.
    pub latency_ms: Option<Percentiles>,
    /// Received bitrate, kbit/s.
    pub bitrate_kbps: Option<f64>,
    /// Received layer (from the keyframes' resolution), video only.
    pub layer: Option<String>,
    /// The layers the server forwarded over time, switches and pauses (video, once the server
    /// sent a stream state).
    pub layers: Option<LayerSummary>,
}

/// The server's connection-quality reports over all subscribers, within the window.
#[derive(Debug, Serialize)]
pub struct DownlinkSummary {
    /// Subscribers that got at least one report.
    pub subscribers: u64,
    /// Reports received.
    pub reports: u64,
    /// The server's downlink estimate, kbit/s, over every kept report of every subscriber.
    pub estimate_kbps: Option<Percentiles>,
    /// What it allocated within the estimate, kbit/s, same reports.
    pub allocated_kbps: Option<Percentiles>,
    /// Lowest estimate any subscriber was given, kbit/s.
    pub min_estimate_kbps: Option<f64>,
    /// Share of subscriber-time in each grade, %.
    pub time_in_quality_pct: BTreeMap<String, f64>,
}

/// One subscriber's downlink, as the server reported it.
#[derive(Debug, Serialize)]
pub struct SubscriberRow {
    /// Room.
    pub room: String,
    /// Subscriber.
    pub subscriber: String,
    /// Its reports, summarized over the window.
    #[serde(flatten)]
    pub quality: QualitySummary,
    /// Layer switches over its video tracks, in the window.
    pub layer_switches: u64,
    /// Those per minute (per track-minute of known state).
    pub switches_per_min: Option<f64>,
    /// Seconds its video tracks spent paused (any reason), summed over tracks.
    pub paused_secs: f64,
    /// Share of its video track-time on each layer, %.
    pub time_on_layer_pct: BTreeMap<String, f64>,
    /// The reports over the whole run (bounded; see `samples_kept_every`).
    pub samples: Vec<QualitySample>,
}

fn kind_name(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn layer_name(scenario: &Scenario, stats: &TrackStats) -> String {
    match stats.resolution {
        None => "unknown (no keyframe)".into(),
        Some((w, h)) => match scenario.video.layer_for(w, h) {
            Some(l) => format!("{} {w}x{h}", l.name),
            None => format!("{w}x{h}"),
        },
    }
}

impl Report {
    /// Builds the report from a run's record.
    pub fn build(record: &RunRecord) -> Self {
        let scenario = &record.scenario;
        let mut notes = scenario.limitations();
        let feedback_missing = record.participants.iter().any(|p| {
            lock(&p.subscriptions)
                .iter()
                .any(|s| lock(&s.stats).feedback_in_window().is_none())
        });
        if feedback_missing && record.window.is_some() {
            notes.push(NACK_PLI_NOTE.into());
        }

        let mut joined = 0;
        let mut failed = 0;
        let mut disconnected = 0;
        let mut not_started = 0;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut connect = vec![];
        let mut tracks_expected = 0;
        let mut tracks_received = 0;
        let mut rows = vec![];
        let mut publications = vec![];
        let mut per_kind: BTreeMap<&'static str, Vec<(TrackStats, Option<LayerSummary>)>> =
            BTreeMap::new();
        let mut subscribers = vec![];
        let now = record.measured_until;
        for p in &record.participants {
            let status = lock(&p.status).clone();
            let started = lock(&p.token_at).is_some();
            match &status {
                Status::Joined { connect: c } => {
                    joined += 1;
                    connect.push(ms(*c));
                }
                Status::Failed(e) => {
                    failed += 1;
                    *errors.entry(e.clone()).or_default() += 1;
                }
                Status::Disconnected(e) => {
                    disconnected += 1;
                    *errors.entry(format!("disconnected: {e}")).or_default() += 1;
                }
                Status::Joining if !started => not_started += 1,
                Status::Joining => {
                    failed += 1;
                    *errors
                        .entry("join still in progress at the end".into())
                        .or_default() += 1;
                }
            }
            tracks_expected += u64::from(p.expected_tracks);
            let mut own_layers = vec![];
            for s in lock(&p.subscriptions).iter() {
                let stats = lock(&s.stats).clone();
                let layers = {
                    let log = lock(&s.layers);
                    (s.kind == TrackKind::Video && !log.is_empty()).then(|| log.summary(now))
                };
                own_layers.extend(layers.clone());
                if stats.first_packet_at.is_some() {
                    tracks_received += 1;
                }
                rows.push(SubscriptionRow {
                    room: p.room.clone(),
                    subscriber: p.identity.clone(),
                    publisher: s.publisher.clone(),
                    track_sid: s.track_sid.clone(),
                    kind: kind_name(s.kind),
                    join_ms: stats.join_time().map(ms),
                    expected: stats.sequence.expected(),
                    received: stats.sequence.received(),
                    lost: stats.sequence.lost(),
                    loss_pct: stats.loss() * 100.0,
                    duplicates: stats.sequence.duplicates(),
                    nacks_sent: stats.feedback_in_window().map(|(n, _)| n),
                    plis_sent: stats.feedback_in_window().map(|(_, p)| p),
                    latency_ms: stats.latency.percentiles_ms(),
                    bitrate_kbps: stats.bitrate_bps().map(|b| b / 1000.0),
                    layer: (s.kind == TrackKind::Video).then(|| layer_name(scenario, &stats)),
                    layers: layers.clone(),
                });
                per_kind
                    .entry(kind_name(s.kind))
                    .or_default()
                    .push((stats, layers));
            }
            let subscribed = !lock(&p.subscriptions).is_empty();
            if p.role.subscribes && (subscribed || lock(&p.downlink).received_any()) {
                subscribers.push(subscriber_row(p, &own_layers, now));
            }
            for publication in lock(&p.publications).iter() {
                let s = lock(&publication.stats).clone();
                publications.push(PublicationRow {
                    room: p.room.clone(),
                    publisher: p.identity.clone(),
                    track_sid: publication.track_sid.clone(),
                    kind: kind_name(publication.kind),
                    layer: publication.layer.clone(),
                    packets_sent: s.packets,
                    bytes_sent: s.bytes,
                    keyframes: s.keyframes,
                    keyframe_requests: s.keyframe_requests,
                    target_rate: publication.target_rate,
                    window_rate: s
                        .frames_at_window_start
                        .zip(record.window.filter(|w| !w.is_zero()))
                        .map(|(f0, w)| (s.frames - f0) as f64 / w.as_secs_f64()),
                    write_errors: s.write_errors,
                });
            }
        }

        let behind = publications
            .iter()
            .filter(|p| p.window_rate.is_some_and(|r| r < 0.95 * p.target_rate))
            .count();
        if behind > 0 {
            let worst = publications
                .iter()
                .filter_map(|p| Some(p.window_rate? / p.target_rate))
                .fold(f64::INFINITY, f64::min);
            notes.push(format!(
                "the load tester fell behind its own schedule: {behind} of {} published tracks \
                 sent under 95% of their frame/packet rate (worst {:.0}%); it is saturated, so \
                 latency and bitrate reflect the tester as much as the server",
                publications.len(),
                worst * 100.0
            ));
        }
        let summarize = |kind: &'static str| {
            per_kind
                .get(kind)
                .map(|tracks| summarize_kind(scenario, kind, tracks))
        };
        let window = record.window.map(|w| w.as_secs_f64()).filter(|w| *w > 0.0);
        let downlink = summarize_downlink(&record.participants, &subscribers);
        let traffic = Traffic {
            forwarded_pps: window.map(|w| record.window_rx_packets as f64 / w),
            forwarded_mbps: window.map(|w| record.window_rx_bytes as f64 * 8.0 / w / 1e6),
            published_pps: window.map(|w| record.window_tx_packets as f64 / w),
        };
        let server = record.server.as_ref().map(|s| {
            let cpu_window_secs = s.window_cpu_secs;
            ServerSummary {
                pid: s.pid,
                cpu_window_pct: cpu_window_secs.zip(window).map(|(c, w)| c / w * 100.0),
                cpu_peak_pct: s.samples.iter().map(|x| x.cpu_pct).reduce(f64::max),
                cpu_window_secs,
                cpu_us_per_forwarded_packet: cpu_window_secs
                    .filter(|_| record.window_rx_packets > 0)
                    .map(|c| c / record.window_rx_packets as f64 * 1e6),
                rss_start_mib: s.rss_start.map(mib),
                rss_peak_mib: mib(s.rss_peak),
                rss_end_mib: s.rss_end.map(mib),
                error: s.error.clone(),
                samples: s.samples.clone(),
            }
        });
        Report {
            scenario: scenario.clone(),
            partial: record.partial.clone(),
            notes,
            timing: Timing {
                elapsed_secs: record.elapsed.as_secs_f64(),
                join_phase_secs: record.join_phase.map(|d| d.as_secs_f64()),
                window_secs: window,
                window_start_secs: record
                    .window_start
                    .map(|w| w.saturating_duration_since(record.started).as_secs_f64()),
            },
            participants: ParticipantSummary {
                planned: record.participants.len() as u64,
                joined,
                failed,
                disconnected,
                not_started,
                errors,
                connect_ms: Percentiles::of(&connect),
                tracks_expected,
                tracks_received,
            },
            video: summarize("video"),
            audio: summarize("audio"),
            traffic,
            downlink,
            server,
            machine: MachineSummary {
                cpus: crate::procstat::cpu_count(),
                tester_cpu_window_pct: record
                    .tester_window_cpu_secs
                    .zip(window)
                    .map(|(c, w)| c / w * 100.0),
                machine_busy_pct: record.machine_busy.map(|b| b * 100.0),
            },
            publications,
            subscriptions: rows,
            subscribers,
        }
    }

    /// Whether the run went as planned: complete, everyone joined and stayed, every track came.
    pub fn is_clean(&self) -> bool {
        let p = &self.participants;
        self.partial.is_none()
            && p.failed == 0
            && p.disconnected == 0
            && p.not_started == 0
            && p.tracks_received >= p.tracks_expected
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// The human-readable tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.scenario;
        let _ = writeln!(
            out,
            "== prism-loadtest: {:?} - {} room(s) x {} participant(s) ({} video pub, {} audio pub, {} sub per room) ==",
            s.name,
            s.rooms,
            s.participants_per_room(),
            s.video_publishers,
            s.audio_publishers,
            s.subscribers
        );
        if let Some(why) = &self.partial {
            let _ = writeln!(out, "PARTIAL REPORT: {why}");
        }
        let t = &self.timing;
        let _ = writeln!(
            out,
            "elapsed {:.1} s; join phase {}; measured window {}",
            t.elapsed_secs,
            opt(t.join_phase_secs, |v| format!("{v:.1} s")),
            opt(t.window_secs, |v| format!("{v:.1} s")),
        );
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let p = &self.participants;
        let _ = writeln!(
            out,
            "\nparticipants: planned {}, joined {}, failed {}, disconnected {}, not started {}; \
             tracks received {}/{}",
            p.planned,
            p.joined,
            p.failed,
            p.disconnected,
            p.not_started,
            p.tracks_received,
            p.tracks_expected
        );
        for (e, n) in &p.errors {
            let _ = writeln!(out, "  {n} x {e}");
        }

        let _ = writeln!(
            out,
            "\n{:<32} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "", "n", "p50", "p95", "p99", "max"
        );
        row(&mut out, "connect (token->join) ms", p.connect_ms.as_ref());
        for (name, k) in [("video", &self.video), ("audio", &self.audio)] {
            let Some(k) = k else { continue };
            row(
                &mut out,
                &format!("{name} join (token->1st pkt) ms"),
                k.join_ms.as_ref(),
            );
            row(
                &mut out,
                &format!("{name} loss per track %"),
                k.loss_pct_per_track.as_ref(),
            );
            row(
                &mut out,
                &format!("{name} one-way latency ms"),
                k.latency_ms.as_ref(),
            );
            row(
                &mut out,
                &format!("{name} bitrate kbit/s"),
                k.bitrate_kbps.as_ref(),
            );
            if k.switches_per_min.is_some() {
                row(
                    &mut out,
                    &format!("{name} layer switches/min"),
                    k.switches_per_min.as_ref(),
                );
            }
        }
        if let Some(d) = &self.downlink {
            row(
                &mut out,
                "downlink estimate kbit/s",
                d.estimate_kbps.as_ref(),
            );
            row(
                &mut out,
                "downlink allocated kbit/s",
                d.allocated_kbps.as_ref(),
            );
        }
        for (name, k) in [("video", &self.video), ("audio", &self.audio)] {
            let Some(k) = k else { continue };
            let _ = writeln!(
                out,
                "\n{name}: {} tracks; packets expected {}, received {}, lost {} ({:.3}%), \
                 duplicates {}, bad payloads {}, stalled tracks {}; NACKs sent {}, PLIs sent {}",
                k.tracks,
                k.packets_expected,
                k.packets_received,
                k.packets_lost,
                k.loss_pct,
                k.duplicates,
                k.bad_payloads,
                k.stalled,
                k.nacks_sent
                    .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
                k.plis_sent
                    .map_or_else(|| "n/a".to_owned(), |n| n.to_string())
            );
            if !k.layers.is_empty() {
                let layers: Vec<String> =
                    k.layers.iter().map(|(l, n)| format!("{l}: {n}")).collect();
                let _ = writeln!(out, "{name} received layer: {}", layers.join(", "));
            }
            if !k.time_on_layer_pct.is_empty() {
                let pauses = if k.pauses.is_empty() {
                    "none".to_owned()
                } else {
                    join_map(&k.pauses, |n| n.to_string())
                };
                let _ = writeln!(
                    out,
                    "{name} time on layer (server's stream states): {}; {} switches; pauses: {pauses}",
                    join_map(&k.time_on_layer_pct, |v| format!("{v:.1}%")),
                    k.layer_switches,
                );
            }
        }
        if let Some(d) = &self.downlink {
            let _ = writeln!(
                out,
                "\ndownlink (server's connection-quality reports): {} subscribers, {} reports, \
                 lowest estimate {}; time in grade: {}",
                d.subscribers,
                d.reports,
                opt(d.min_estimate_kbps, |v| format!("{v:.0} kbit/s")),
                join_map(&d.time_in_quality_pct, |v| format!("{v:.1}%")),
            );
            self.render_subscribers(&mut out);
        }
        let tr = &self.traffic;
        let _ = writeln!(
            out,
            "\ntraffic in window: delivered to subscribers {} pkt/s, {} Mbit/s; published {} pkt/s",
            opt(tr.forwarded_pps, |v| format!("{v:.0}")),
            opt(tr.forwarded_mbps, |v| format!("{v:.1}")),
            opt(tr.published_pps, |v| format!("{v:.0}")),
        );
        let requests: u64 = self.publications.iter().map(|x| x.keyframe_requests).sum();
        let keyframes: u64 = self.publications.iter().map(|x| x.keyframes).sum();
        let _ = writeln!(
            out,
            "publishers: {} tracks, {} keyframes sent, {} keyframe requests (PLI/FIR) received",
            self.publications.len(),
            keyframes,
            requests
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                out,
                "server pid {}: CPU in window {} of one core (peak 1 s sample {}), {} CPU \
                 -> {} per delivered packet; RSS {} -> {} MiB (peak {:.1} MiB)",
                sv.pid,
                opt(sv.cpu_window_pct, |v| format!("{v:.1}%")),
                opt(sv.cpu_peak_pct, |v| format!("{v:.0}%")),
                opt(sv.cpu_window_secs, |v| format!("{v:.2} s")),
                opt(sv.cpu_us_per_forwarded_packet, |v| format!("{v:.2} µs")),
                opt(sv.rss_start_mib, |v| format!("{v:.1}")),
                opt(sv.rss_end_mib, |v| format!("{v:.1}")),
                sv.rss_peak_mib,
            );
            if let Some(e) = &sv.error {
                let _ = writeln!(out, "server sampling error: {e}");
            }
        }
        let m = &self.machine;
        let _ = writeln!(
            out,
            "machine ({} CPUs) busy in window {}; load tester itself {} of one core",
            m.cpus,
            opt(m.machine_busy_pct, |v| format!("{v:.0}%")),
            opt(m.tester_cpu_window_pct, |v| format!("{v:.0}%")),
        );
        let mut worst: Vec<&SubscriptionRow> =
            self.subscriptions.iter().filter(|r| r.lost > 0).collect();
        worst.sort_by(|a, b| b.loss_pct.total_cmp(&a.loss_pct));
        if !worst.is_empty() {
            let _ = writeln!(out, "\nworst subscriptions by loss:");
            let _ = writeln!(
                out,
                "  {:<14} {:<10} {:<10} {:<5} {:>9} {:>9} {:>8} {:>10} {:>10}  layer",
                "room",
                "subscriber",
                "publisher",
                "kind",
                "expected",
                "received",
                "loss %",
                "p99 ms",
                "kbit/s"
            );
            for r in worst.iter().take(10) {
                let _ = writeln!(
                    out,
                    "  {:<14} {:<10} {:<10} {:<5} {:>9} {:>9} {:>8.3} {:>10} {:>10}  {}",
                    r.room,
                    r.subscriber,
                    r.publisher,
                    r.kind,
                    r.expected,
                    r.received,
                    r.loss_pct,
                    opt(r.latency_ms.map(|l| l.p99), |v| format!("{v:.1}")),
                    opt(r.bitrate_kbps, |v| format!("{v:.0}")),
                    r.layer.as_deref().unwrap_or("-"),
                );
            }
        }
        out
    }
}

impl Report {
    /// The subscribers with the lowest downlink estimate (at most 10).
    fn render_subscribers(&self, out: &mut String) {
        let mut rows: Vec<&SubscriberRow> = self
            .subscribers
            .iter()
            .filter(|r| r.quality.estimate_kbps.is_some())
            .collect();
        rows.sort_by(|a, b| {
            let p50 = |r: &SubscriberRow| r.quality.estimate_kbps.map_or(0.0, |e| e.p50);
            p50(a).total_cmp(&p50(b))
        });
        let shown = rows.len().min(10);
        let _ = writeln!(
            out,
            "downlink per subscriber ({shown} of {}, lowest estimate first; kbit/s):",
            rows.len()
        );
        let _ = writeln!(
            out,
            "  {:<14} {:<10} {:>7} {:>8} {:>8} {:>8} {:>9} {:<9} {:>8} {:>8}  layers",
            "room",
            "subscriber",
            "reports",
            "est p50",
            "est min",
            "est max",
            "alloc p50",
            "grade",
            "sw/min",
            "paused s"
        );
        for r in rows.iter().take(shown) {
            let q = &r.quality;
            let e = q.estimate_kbps;
            let _ = writeln!(
                out,
                "  {:<14} {:<10} {:>7} {:>8} {:>8} {:>8} {:>9} {:<9} {:>8} {:>8.1}  {}",
                r.room,
                r.subscriber,
                q.reports,
                opt(e.map(|e| e.p50), |v| format!("{v:.0}")),
                opt(e.map(|e| e.min), |v| format!("{v:.0}")),
                opt(e.map(|e| e.max), |v| format!("{v:.0}")),
                opt(q.allocated_kbps.map(|a| a.p50), |v| format!("{v:.0}")),
                q.last_quality.unwrap_or("-"),
                opt(r.switches_per_min, |v| format!("{v:.1}")),
                r.paused_secs,
                join_map(&r.time_on_layer_pct, |v| format!("{v:.0}%")),
            );
        }
    }
}

/// `k v, k v` with each value formatted by `f`.
fn join_map<V>(map: &BTreeMap<String, V>, f: impl Fn(&V) -> String) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {}", f(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}

fn row(out: &mut String, name: &str, p: Option<&Percentiles>) {
    match p {
        Some(p) => {
            let _ = writeln!(
                out,
                "{name:<32} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                p.count, p.p50, p.p95, p.p99, p.max
            );
        }
        None => {
            let _ = writeln!(out, "{name:<32} {:>8} {:>10}", 0, "n/a");
        }
    }
}

fn summarize_kind(
    scenario: &Scenario,
    kind: &'static str,
    tracks: &[(TrackStats, Option<LayerSummary>)],
) -> KindSummary {
    let mut latency = Histogram::default();
    let mut layers = BTreeMap::new();
    let (mut expected, mut received, mut lost, mut dups, mut bad) = (0, 0, 0, 0, 0);
    let mut join = vec![];
    let mut loss = vec![];
    let mut bitrate = vec![];
    let mut with_media = 0;
    let mut stalled = 0;
    let mut feedback: Option<(u64, u64)> = None;
    let mut switches = 0;
    let mut switch_rates = vec![];
    let mut time_on = BTreeMap::new();
    let mut pauses: BTreeMap<String, u64> = BTreeMap::new();
    for (_, l) in tracks {
        let Some(l) = l else { continue };
        switches += l.switches;
        switch_rates.extend(l.switches_per_min);
        add_times(&mut time_on, &l.time_on_secs);
        for (reason, n) in &l.pauses {
            *pauses.entry(reason.clone()).or_default() += n;
        }
    }
    for (t, _) in tracks {
        if let Some((n, p)) = t.feedback_in_window() {
            let (tn, tp) = feedback.get_or_insert((0, 0));
            *tn += n;
            *tp += p;
        }
        if t.window_start.is_some() && t.first_packet_at.is_some() && t.last_packet_at.is_none() {
            stalled += 1;
        }
        if t.first_packet_at.is_none() {
            continue;
        }
        with_media += 1;
        latency.merge(&t.latency);
        expected += t.sequence.expected();
        received += t.sequence.received();
        lost += t.sequence.lost();
        dups += t.sequence.duplicates();
        bad += t.bad_payloads;
        if let Some(j) = t.join_time() {
            join.push(ms(j));
        }
        if t.sequence.expected() > 0 {
            loss.push(t.loss() * 100.0);
        }
        if let Some(b) = t.bitrate_bps() {
            bitrate.push(b / 1000.0);
        }
        if kind == "video" {
            *layers.entry(layer_name(scenario, t)).or_default() += 1;
        }
    }
    KindSummary {
        tracks: with_media,
        packets_expected: expected,
        packets_received: received,
        packets_lost: lost,
        loss_pct: if expected > 0 {
            lost as f64 / expected as f64 * 100.0
        } else {
            0.0
        },
        duplicates: dups,
        bad_payloads: bad,
        stalled,
        join_ms: Percentiles::of(&join),
        loss_pct_per_track: Percentiles::of(&loss),
        latency_ms: latency.percentiles_ms(),
        bitrate_kbps: Percentiles::of(&bitrate),
        layers,
        layer_switches: switches,
        switches_per_min: Percentiles::of(&switch_rates),
        time_on_layer_pct: shares(&time_on),
        pauses,
        nacks_sent: feedback.map(|(n, _)| n),
        plis_sent: feedback.map(|(_, p)| p),
    }
}

/// Adds each state's seconds of `from` into `into`.
fn add_times(into: &mut BTreeMap<String, f64>, from: &BTreeMap<String, f64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Each state's share of the total, %.
fn shares(time: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let total: f64 = time.values().sum();
    if total <= 0.0 {
        return BTreeMap::new();
    }
    time.iter()
        .map(|(k, v)| (k.clone(), (v / total * 1000.0).round() / 10.0))
        .collect()
}

fn subscriber_row(p: &Participant, layers: &[LayerSummary], now: Instant) -> SubscriberRow {
    let (quality, samples) = {
        let log = lock(&p.downlink);
        (log.summary(now), log.samples().to_vec())
    };
    let mut time_on = BTreeMap::new();
    for l in layers {
        add_times(&mut time_on, &l.time_on_secs);
    }
    let known: f64 = time_on.values().sum();
    let switches: u64 = layers.iter().map(|l| l.switches).sum();
    SubscriberRow {
        room: p.room.clone(),
        subscriber: p.identity.clone(),
        quality,
        layer_switches: switches,
        switches_per_min: (known >= 1.0).then(|| switches as f64 / (known / 60.0)),
        paused_secs: time_on
            .iter()
            .filter(|(k, _)| k.starts_with("paused"))
            .fold(0.0, |sum, (_, v)| sum + v),
        time_on_layer_pct: shares(&time_on),
        samples,
    }
}

fn summarize_downlink(
    participants: &[Arc<Participant>],
    subscribers: &[SubscriberRow],
) -> Option<DownlinkSummary> {
    let mut estimates = vec![];
    let mut allocated = vec![];
    for p in participants {
        let log = lock(&p.downlink);
        for s in log.window_samples() {
            estimates.push(s.estimate_bps as f64 / 1000.0);
            allocated.push(s.allocated_bps as f64 / 1000.0);
        }
    }
    let reporting: Vec<&SubscriberRow> = subscribers
        .iter()
        .filter(|s| s.quality.reports > 0)
        .collect();
    if reporting.is_empty() {
        return None;
    }
    let mut time = BTreeMap::new();
    for s in &reporting {
        add_times(&mut time, &s.quality.time_in_quality_secs);
    }
    Some(DownlinkSummary {
        subscribers: reporting.len() as u64,
        reports: reporting.iter().map(|s| s.quality.reports).sum(),
        estimate_kbps: Percentiles::of(&estimates),
        allocated_kbps: Percentiles::of(&allocated),
        min_estimate_kbps: reporting
            .iter()
            .filter_map(|s| s.quality.estimate_kbps.map(|e| e.min))
            .reduce(f64::min),
        time_in_quality_pct: shares(&time),
    })
}
