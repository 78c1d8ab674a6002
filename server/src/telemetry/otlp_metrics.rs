//! The metric families of `/metrics`, pushed over OTLP/gRPC every `telemetry.otlp_interval_ms`.
//!
//! Counters and gauges are observable instruments whose callbacks read the same sources a
//! scrape reads (`metrics::catalog`), when the exporter collects. Histograms live in the
//! workers' lock-free atomic histograms, which the OpenTelemetry SDK cannot read directly (its
//! data points cannot be built from outside), so a bridge replays each bucket's growth since the
//! last export into an SDK histogram with the same bounds, as that many values equal to the
//! bucket's mean: counts, bucket counts and sum come out exact. The replay runs in the
//! exporter's thread, never in a worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::TelemetryError;
use crate::config::TelemetryConfig;
use crate::metrics::catalog::{FAMILIES, Family, Kind, PREFIX, Read, Sources};
use crate::metrics::{AtomicHistogram, HistogramSnapshot};
use crate::transport::WorkerStats;

/// The running export; [`shutdown`](Self::shutdown) pushes a last time and stops it.
pub struct OtlpMetrics {
    provider: SdkMeterProvider,
}

impl OtlpMetrics {
    /// Starts exporting to `config.otlp_endpoint`. Call inside the tokio runtime that will
    /// carry the gRPC client.
    pub fn start(config: &TelemetryConfig, sources: Sources) -> Result<Self, TelemetryError> {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(Duration::from_millis(config.otlp_interval_ms))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(super::resource(config))
            .build();
        register(&provider.meter("prism"), &sources);
        tracing::info!(endpoint = %config.otlp_endpoint, "exporting metrics over OTLP");
        Ok(Self { provider })
    }

    /// Blocks until the last export is done: call it from a blocking context.
    pub fn shutdown(self) -> Result<(), TelemetryError> {
        Ok(self.provider.shutdown()?)
    }
}

fn full_name(f: &Family) -> String {
    format!("{PREFIX}_{}", f.name)
}

/// The `worker` attribute of each worker, as `/metrics` labels it.
fn worker_labels(sources: &Sources) -> Arc<Vec<[KeyValue; 1]>> {
    Arc::new(
        sources
            .transport
            .workers()
            .iter()
            .map(|w| [KeyValue::new("worker", w.index.to_string())])
            .collect(),
    )
}

fn register(meter: &Meter, sources: &Sources) {
    let labels = worker_labels(sources);
    let mut bridged: Vec<Bridged> = Vec::new();
    for f in FAMILIES {
        let (name, help, unit) = (full_name(f), f.help, f.unit.ucum());
        let sources = sources.clone();
        let labels = labels.clone();
        match (f.read, f.kind) {
            (Read::Node(read), Kind::Counter) => {
                meter
                    .f64_observable_counter(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_callback(move |o| {
                        if let Some(v) = read(&sources) {
                            o.observe(v, &[]);
                        }
                    })
                    .build();
            }
            (Read::Node(read), _) => {
                meter
                    .f64_observable_gauge(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_callback(move |o| {
                        if let Some(v) = read(&sources) {
                            o.observe(v, &[]);
                        }
                    })
                    .build();
            }
            (Read::Worker(read), _) => {
                meter
                    .u64_observable_gauge(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_callback(move |o| {
                        for (w, l) in sources.transport.workers().iter().zip(labels.iter()) {
                            o.observe(read(w), l);
                        }
                    })
                    .build();
            }
            (Read::Counter(read), _) => {
                meter
                    .u64_observable_counter(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_callback(move |o| {
                        for (w, l) in sources.transport.workers().iter().zip(labels.iter()) {
                            o.observe(read(&w.stats).load(std::sync::atomic::Ordering::Relaxed), l);
                        }
                    })
                    .build();
            }
            (Read::Histogram(read), _) => {
                let scale = f.unit.histogram_scale();
                let bounds = sources
                    .transport
                    .workers()
                    .first()
                    .map(|w| read(&w.stats).bounds())
                    .unwrap_or_default();
                let histogram = meter
                    .f64_histogram(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_boundaries(bounds.iter().map(|&b| b as f64 * scale).collect())
                    .build();
                bridged.push(Bridged {
                    histogram,
                    read,
                    scale,
                    last: Mutex::new(vec![HistogramSnapshot::default(); labels.len()]),
                });
            }
        }
    }
    // The SDK runs observable callbacks before it collects the synchronous instruments, so a
    // callback that observes nothing is where the bridge replays, once per export.
    let sources = sources.clone();
    meter
        .u64_observable_gauge(format!("{PREFIX}_histogram_bridge"))
        .with_description("never exported: replays the atomic histograms before each export")
        .with_callback(move |_| {
            for b in &bridged {
                b.replay(&sources, &labels);
            }
        })
        .build();
}

/// One histogram family and what was replayed of it so far, per worker.
struct Bridged {
    histogram: Histogram<f64>,
    read: fn(&WorkerStats) -> &AtomicHistogram,
    scale: f64,
    last: Mutex<Vec<HistogramSnapshot>>,
}

impl Bridged {
    fn replay(&self, sources: &Sources, labels: &[[KeyValue; 1]]) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        for ((w, l), last) in sources
            .transport
            .workers()
            .iter()
            .zip(labels)
            .zip(last.iter_mut())
        {
            let now = (self.read)(&w.stats).snapshot();
            for (i, (&count, &sum)) in now.counts.iter().zip(&now.sums).enumerate() {
                let n = count.saturating_sub(last.counts.get(i).copied().unwrap_or(0));
                if n == 0 {
                    continue;
                }
                let added = sum.saturating_sub(last.sums.get(i).copied().unwrap_or(0));
                // The mean of values that all fell in this bucket lies in the bucket too.
                let mean = added as f64 / n as f64 * self.scale;
                for _ in 0..n {
                    self.histogram.record(mean, l);
                }
            }
            *last = now;
        }
    }
}
