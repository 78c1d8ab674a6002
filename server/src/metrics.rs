//! Prometheus metrics at `/metrics`, read at scrape time.
//!
//! The media hot path counts with relaxed atomics in each worker's `WorkerStats` and knows
//! nothing of Prometheus: a scrape reads those atomics, the room manager's counts and the
//! process's own CPU and memory, and encodes them. So metrics cost the forwarding path no lock
//! and no allocation, whether anyone scrapes or not. Labels stay bounded: the only one is the
//! worker index (one per core).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::room::RoomManager;
use crate::transport::{Transport, WorkerStats};

/// What `/metrics` serves.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(rooms: Arc<RoomManager>, transport: Arc<Transport>) -> Self {
        let mut registry = Registry::with_prefix("prism");
        registry.register_collector(Box::new(PrismCollector { rooms, transport }));
        Self { registry }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

struct PrismCollector {
    rooms: Arc<RoomManager>,
    transport: Arc<Transport>,
}

impl std::fmt::Debug for PrismCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrismCollector")
    }
}

/// A counter kept per worker in `WorkerStats`: name, help, how to read it.
type WorkerCounter = (&'static str, &'static str, fn(&WorkerStats) -> &AtomicU64);

const WORKER_COUNTERS: &[WorkerCounter] = &[
    ("datagrams_received", "UDP datagrams received", |s| {
        &s.datagrams_in
    }),
    ("received_bytes", "UDP bytes received", |s| &s.bytes_in),
    ("datagrams_sent", "UDP datagrams sent", |s| &s.datagrams_out),
    ("sent_bytes", "UDP bytes sent", |s| &s.bytes_out),
    ("send_syscalls", "sendmmsg/sendto calls", |s| {
        &s.send_syscalls
    }),
    ("send_errors", "datagrams the kernel refused to send", |s| {
        &s.send_errors
    }),
    (
        "datagrams_unroutable",
        "datagrams no connection claimed",
        |s| &s.unroutable_datagrams,
    ),
    (
        "datagrams_rejected",
        "datagrams a connection refused (malformed, failed authentication or decryption)",
        |s| &s.rejected_datagrams,
    ),
    (
        "rtp_received",
        "RTP packets received from publishers",
        |s| &s.rtp_received,
    ),
    (
        "rtp_forwarded",
        "RTP packets forwarded to subscribers",
        |s| &s.rtp_forwarded,
    ),
    (
        "rtp_forward_errors",
        "RTP packets the engine refused to send to a subscriber",
        |s| &s.rtp_forward_errors,
    ),
    (
        "nacks_received",
        "sequence numbers subscribers NACKed",
        |s| &s.nacks_received,
    ),
    (
        "nack_retransmitted",
        "NACKed packets resent from the cache",
        |s| &s.nack_retransmitted,
    ),
    (
        "nack_missed",
        "NACKed packets no longer in the cache",
        |s| &s.nack_missed,
    ),
    (
        "nack_suppressed",
        "NACKed packets not resent (resent too recently or too often)",
        |s| &s.nack_suppressed,
    ),
    ("pli_received", "PLIs received from subscribers", |s| {
        &s.pli_received
    }),
    ("fir_received", "FIRs received from subscribers", |s| {
        &s.fir_received
    }),
    (
        "keyframe_requests",
        "keyframe requests (PLI) sent to publishers",
        |s| &s.keyframe_requests,
    ),
    (
        "keyframe_requests_throttled",
        "keyframe requests not sent: one for that layer went out within the throttle interval",
        |s| &s.keyframe_requests_throttled,
    ),
    (
        "sender_reports_sent",
        "sender reports sent to subscribers",
        |s| &s.sender_reports_sent,
    ),
    (
        "data_messages_sent",
        "data messages written to data channels",
        |s| &s.data.messages_out,
    ),
    (
        "data_messages_dropped",
        "relayed data messages not written",
        |s| &s.data.messages_dropped,
    ),
];

impl Collector for PrismCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (published, subscribed) = self.rooms.track_counts();
        let gauges: [(&str, &str, usize); 4] = [
            ("rooms", "rooms open", self.rooms.room_count()),
            (
                "participants",
                "participants in all rooms",
                self.rooms.participant_count(),
            ),
            ("published_tracks", "tracks published", published),
            ("subscribed_tracks", "subscriptions to tracks", subscribed),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }

        let workers = self.transport.workers();
        let per_worker = |read: &dyn Fn(&WorkerStats) -> u64| {
            let family = Family::<[(&'static str, String); 1], Gauge<u64, AtomicU64>>::default();
            for w in workers {
                family
                    .get_or_create(&[("worker", w.index.to_string())])
                    .set(read(&w.stats));
            }
            family
        };
        // Connections are a gauge; the rest are counters (monotonic since start).
        let connections = per_worker(&|s: &WorkerStats| {
            let c: &AtomicUsize = &s.connections;
            c.load(Ordering::Relaxed) as u64
        });
        connections.encode(encoder.encode_descriptor(
            "connections",
            "peer connections per media worker",
            None,
            connections.metric_type(),
        )?)?;
        for (name, help, field) in WORKER_COUNTERS {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for w in workers {
                let counter = ConstCounter::new(field(&w.stats).load(Ordering::Relaxed));
                let labels = [("worker", w.index.to_string())];
                counter.encode(family.encode_family(&labels)?)?;
            }
        }

        if let Some(p) = process_usage() {
            let cpu = ConstCounter::new(p.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time of the server process (user and system)",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = ConstGauge::new(p.resident_bytes as i64);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "resident memory of the server process",
                None,
                rss.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

struct ProcessUsage {
    cpu_seconds: f64,
    resident_bytes: u64,
}

/// CPU time and resident memory from /proc/self (Linux); None elsewhere.
fn process_usage() -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads configuration values.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if hz <= 0 || page <= 0 {
        return None;
    }
    Some(ProcessUsage {
        cpu_seconds: ticks as f64 / hz as f64,
        resident_bytes: resident_pages * page as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_reads_proc() {
        let p = process_usage().expect("Linux /proc");
        assert!(p.resident_bytes > 1 << 20);
        assert!(p.cpu_seconds >= 0.0);
    }
}
