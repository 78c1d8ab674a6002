//! What Prism measures, defined once: `/metrics` (Prometheus) and the OTLP export both walk
//! [`FAMILIES`], so the two always carry the same metrics under the same names.
//!
//! Every value is read when someone asks (a scrape, an export): counters and histograms from
//! the workers' `WorkerStats`, gauges from the room manager and the workers' queues, process
//! figures from `/proc/self`. Labels are bounded: `worker` (one per core) and nothing per room
//! or participant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::AtomicHistogram;
use super::process;
use crate::room::RoomManager;
use crate::transport::{Transport, WorkerHandle, WorkerStats};

/// What a metric's value means over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The unit, for OTLP and for converting integer histogram values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    Seconds,
    Bytes,
    BitsPerSecond,
}

impl Unit {
    /// UCUM, as OTLP wants it.
    pub fn ucum(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Seconds => "s",
            Unit::Bytes => "By",
            Unit::BitsPerSecond => "bit/s",
        }
    }

    /// Histograms store integers: microseconds for seconds, else the unit itself.
    pub fn histogram_scale(self) -> f64 {
        match self {
            Unit::Seconds => 1e-6,
            _ => 1.0,
        }
    }
}

/// Where a family's samples come from.
#[derive(Clone, Copy)]
pub enum Read {
    /// One value for the node.
    Node(fn(&Sources) -> Option<f64>),
    /// One value per media worker, labelled `worker`.
    Worker(fn(&WorkerHandle) -> u64),
    /// A counter per media worker in its `WorkerStats`, labelled `worker`.
    Counter(fn(&WorkerStats) -> &AtomicU64),
    /// One histogram per media worker, labelled `worker`.
    Histogram(fn(&WorkerStats) -> &AtomicHistogram),
}

/// A metric family: its name without the `prism_` prefix (and without `_total`, which the
/// Prometheus encoder adds to counters), help text, kind, unit and source.
#[derive(Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub read: Read,
}

/// What the families read.
#[derive(Clone)]
pub struct Sources {
    pub rooms: Arc<RoomManager>,
    pub transport: Arc<Transport>,
}

/// Every metric name carries this prefix.
pub const PREFIX: &str = "prism";

const fn gauge(
    name: &'static str,
    help: &'static str,
    read: fn(&Sources) -> Option<f64>,
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Gauge,
        unit: Unit::None,
        read: Read::Node(read),
    }
}

const fn worker_gauge(
    name: &'static str,
    help: &'static str,
    read: fn(&WorkerHandle) -> u64,
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Gauge,
        unit: Unit::None,
        read: Read::Worker(read),
    }
}

const fn counter(
    name: &'static str,
    help: &'static str,
    read: fn(&WorkerStats) -> &AtomicU64,
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Counter,
        unit: Unit::None,
        read: Read::Counter(read),
    }
}

const fn histogram(
    name: &'static str,
    help: &'static str,
    unit: Unit,
    read: fn(&WorkerStats) -> &AtomicHistogram,
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Histogram,
        unit,
        read: Read::Histogram(read),
    }
}

/// Every metric, in the order `/metrics` lists them.
pub const FAMILIES: &[Family] = &[
    gauge("rooms", "rooms open", |s| Some(s.rooms.room_count() as f64)),
    gauge("participants", "participants in all rooms", |s| {
        Some(s.rooms.participant_count() as f64)
    }),
    gauge("published_tracks", "tracks published", |s| {
        Some(s.rooms.track_counts().0 as f64)
    }),
    gauge("subscribed_tracks", "subscriptions to tracks", |s| {
        Some(s.rooms.track_counts().1 as f64)
    }),
    worker_gauge("connections", "peer connections per media worker", |w| {
        w.stats.connections.load(Ordering::Relaxed) as u64
    }),
    worker_gauge(
        "worker_queued_commands",
        "commands waiting in a media worker's queue (signaling, subscriptions, data)",
        |w| w.queued_commands() as u64,
    ),
    counter("datagrams_received", "UDP datagrams received", |s| {
        &s.datagrams_in
    }),
    counter("received_bytes", "UDP bytes received", |s| &s.bytes_in),
    counter("datagrams_sent", "UDP datagrams sent", |s| &s.datagrams_out),
    counter("sent_bytes", "UDP bytes sent", |s| &s.bytes_out),
    counter("send_syscalls", "sendmmsg/sendto calls", |s| {
        &s.send_syscalls
    }),
    counter("send_errors", "datagrams the kernel refused to send", |s| {
        &s.send_errors
    }),
    counter(
        "datagrams_unroutable",
        "datagrams no connection claimed",
        |s| &s.unroutable_datagrams,
    ),
    counter(
        "datagrams_rejected",
        "datagrams a connection refused (malformed, failed authentication or decryption)",
        |s| &s.rejected_datagrams,
    ),
    counter(
        "rtp_received",
        "RTP packets received from publishers",
        |s| &s.rtp_received,
    ),
    counter(
        "rtp_forwarded",
        "RTP packets forwarded to subscribers",
        |s| &s.rtp_forwarded,
    ),
    counter(
        "rtp_forward_errors",
        "RTP packets the engine refused to send to a subscriber",
        |s| &s.rtp_forward_errors,
    ),
    counter(
        "layer_switches",
        "simulcast layer switches started for down tracks already forwarding",
        |s| &s.layer_switches,
    ),
    counter(
        "nacks_received",
        "sequence numbers subscribers NACKed",
        |s| &s.nacks_received,
    ),
    counter(
        "nack_retransmitted",
        "NACKed packets resent from the cache",
        |s| &s.nack_retransmitted,
    ),
    counter(
        "nack_missed",
        "NACKed packets no longer in the cache",
        |s| &s.nack_missed,
    ),
    counter(
        "nack_suppressed",
        "NACKed packets not resent (resent too recently or too often)",
        |s| &s.nack_suppressed,
    ),
    counter("pli_received", "PLIs received from subscribers", |s| {
        &s.pli_received
    }),
    counter("fir_received", "FIRs received from subscribers", |s| {
        &s.fir_received
    }),
    counter(
        "keyframe_requests",
        "keyframe requests (PLI) sent to publishers",
        |s| &s.keyframe_requests,
    ),
    counter(
        "keyframe_requests_throttled",
        "keyframe requests not sent: one for that layer went out within the throttle interval",
        |s| &s.keyframe_requests_throttled,
    ),
    counter(
        "sender_reports_sent",
        "sender reports sent to subscribers",
        |s| &s.sender_reports_sent,
    ),
    counter(
        "data_messages_sent",
        "data messages written to data channels",
        |s| &s.data.messages_out,
    ),
    counter(
        "data_messages_dropped",
        "relayed data messages not written",
        |s| &s.data.messages_dropped,
    ),
    counter(
        "bwe_probes",
        "bandwidth probes started (downlink estimation)",
        |s| &s.bwe_probes,
    ),
    counter(
        "probe_packets",
        "padding packets sent to probe subscribers' downlinks",
        |s| &s.probe_packets,
    ),
    counter(
        "bwe_allocation_changes",
        "downlink allocator decisions that changed a down track's layer or pause",
        |s| &s.bwe_allocation_changes,
    ),
    counter(
        "bwe_pauses",
        "video down tracks paused for lack of downlink bandwidth",
        |s| &s.bwe_pauses,
    ),
    counter(
        "pacer_dropped",
        "packets the pacers dropped because their queue was full",
        |s| &s.pacer_dropped,
    ),
    histogram(
        "join_seconds",
        "from a participant's join request to its peer connection being connected",
        Unit::Seconds,
        |s| &s.histograms.join,
    ),
    histogram(
        "first_packet_seconds",
        "from a subscription to the first packet forwarded on it",
        Unit::Seconds,
        |s| &s.histograms.first_packet,
    ),
    histogram(
        "worker_loop_seconds",
        "busy time of one turn of a media worker's loop (wake-up to sends flushed)",
        Unit::Seconds,
        |s| &s.histograms.loop_busy,
    ),
    histogram(
        "downlink_estimate_bps",
        "per subscriber, its downlink bandwidth estimate (recorded each second)",
        Unit::BitsPerSecond,
        |s| &s.histograms.estimate,
    ),
    histogram(
        "downlink_allocation_bps",
        "per subscriber, the bitrate allocated to its tracks (recorded each second)",
        Unit::BitsPerSecond,
        |s| &s.histograms.allocation,
    ),
    Family {
        name: "process_cpu_seconds",
        help: "CPU time of the server process (user and system)",
        kind: Kind::Counter,
        unit: Unit::Seconds,
        read: Read::Node(|_| process::usage().map(|p| p.cpu_seconds)),
    },
    Family {
        name: "process_resident_memory_bytes",
        help: "resident memory of the server process",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        read: Read::Node(|_| process::usage().map(|p| p.resident_bytes as f64)),
    },
];

/// The full name a family has in Prometheus' text format (`prism_..._total` for counters).
pub fn prometheus_name(f: &Family) -> String {
    match f.kind {
        Kind::Counter => format!("{PREFIX}_{}_total", f.name),
        _ => format!("{PREFIX}_{}", f.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(
                f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                f.name
            );
            assert!(
                !f.name.ends_with("_total"),
                "{}: the encoder adds _total",
                f.name
            );
            if f.kind == Kind::Histogram {
                assert!(matches!(f.read, Read::Histogram(_)), "{}", f.name);
            }
        }
    }
}
