//! Metrics: Prometheus text at `/metrics` ([`Metrics`]), and the same families over OTLP
//! (`crate::telemetry`). Both read [`catalog::FAMILIES`] when asked.
//!
//! The media hot path counts with relaxed atomics in each worker's `WorkerStats` and records
//! distributions in lock-free fixed-bucket histograms ([`histogram`]); it knows nothing of
//! Prometheus or OpenTelemetry. So metrics cost the forwarding path no lock and no allocation,
//! whether anyone scrapes or not.

pub mod catalog;
pub mod histogram;
pub mod process;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

pub use catalog::Sources;
pub use histogram::{AtomicHistogram, HistogramSnapshot, WorkerHistograms};

use catalog::{FAMILIES, Kind, Read};

/// What `/metrics` serves.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::with_prefix(catalog::PREFIX);
        registry.register_collector(Box::new(PrismCollector { sources }));
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
    sources: Sources,
}

impl std::fmt::Debug for PrismCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrismCollector")
    }
}

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
    }
}

/// A histogram read from the atomics, in the exported unit.
struct HistogramValue {
    snapshot: HistogramSnapshot,
    scale: f64,
}

impl EncodeMetric for HistogramValue {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let buckets: Vec<(f64, u64)> = s
            .counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let le = s.bounds.get(i).map_or(f64::MAX, |&b| b as f64 * self.scale);
                (le, n)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            s.sum() as f64 * self.scale,
            s.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for PrismCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers = self.sources.transport.workers();
        for f in FAMILIES {
            // The unit stays in the name (`_seconds`, `_bytes`), as Prometheus names go.
            let mut family = match f.read {
                Read::Node(read) => {
                    let Some(value) = read(&self.sources) else {
                        continue;
                    };
                    let d = encoder.encode_descriptor(f.name, f.help, None, metric_type(f.kind))?;
                    match f.kind {
                        Kind::Counter => ConstCounter::new(value).encode(d)?,
                        // Counts print as integers.
                        _ if value.fract() == 0.0 => ConstGauge::new(value as i64).encode(d)?,
                        _ => ConstGauge::new(value).encode(d)?,
                    }
                    continue;
                }
                _ => encoder.encode_descriptor(f.name, f.help, None, metric_type(f.kind))?,
            };
            for w in workers {
                let labels = [("worker", w.index.to_string())];
                let metric = family.encode_family(&labels)?;
                match f.read {
                    Read::Worker(read) => ConstGauge::new(read(w) as i64).encode(metric)?,
                    Read::Counter(read) => {
                        ConstCounter::new(read(&w.stats).load(Ordering::Relaxed)).encode(metric)?
                    }
                    Read::Histogram(read) => HistogramValue {
                        snapshot: read(&w.stats).snapshot(),
                        scale: f.unit.histogram_scale(),
                    }
                    .encode(metric)?,
                    Read::Node(_) => {}
                }
            }
        }
        Ok(())
    }
}
