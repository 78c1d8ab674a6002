//! Logs, traces and OTLP metrics.
//!
//! [`init`] installs the process's tracing subscriber: the log output (`log.level`, text or
//! JSON) and, when `telemetry.otlp_endpoint` is set, a tracing-opentelemetry layer exporting
//! spans over OTLP/gRPC. [`otlp_metrics::OtlpMetrics`] pushes the metric families `/metrics`
//! serves. Without an endpoint neither exists: no exporter, no OpenTelemetry work at all.
//!
//! Spans (target `prism_server`, info level): `join` (request to peer connection connected),
//! `negotiate` (a client offer answered, or a server offer until its answer is applied),
//! `publish` (addTrack to the track's media arriving), `subscribe` (the subscriber learns of a
//! track to media being negotiated for it), and `grpc` (each control-plane call).

pub mod otlp_metrics;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("invalid telemetry.trace_filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    #[error("OTLP shutdown: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
}

/// The installed tracing pipeline; [`shutdown`](Self::shutdown) flushes the spans not yet
/// exported.
#[must_use = "dropping it without shutdown loses the spans not exported yet"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

/// `service.name` and the version, on every exported span and metric.
pub(crate) fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// Installs the global tracing subscriber: logs (`PRISM_LOG` overrides `log.level`) and, with
/// an OTLP endpoint, span export. The OTLP/gRPC client runs on the current tokio runtime, so
/// with an endpoint this must be called inside one that outlives the returned value.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let log_filter =
        EnvFilter::try_from_env("PRISM_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let logs = if log.json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let (tracer, spans) = if telemetry.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(telemetry.otlp_endpoint.clone())
            .build()?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(telemetry.otlp_interval_ms))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_resource(resource(telemetry))
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("prism"))
            .with_filter(EnvFilter::builder().parse(&telemetry.trace_filter)?);
        (Some(provider), Some(layer))
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(log_filter))
        .with(spans)
        .try_init()?;
    if tracer.is_some() {
        tracing::info!(endpoint = %telemetry.otlp_endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { tracer })
}

impl Telemetry {
    /// Exports the spans still batched and stops the exporter. Blocks: call it from a
    /// blocking context (`spawn_blocking`) while the runtime still runs.
    pub fn shutdown(self) -> Result<(), TelemetryError> {
        if let Some(tracer) = self.tracer {
            tracer.shutdown()?;
        }
        Ok(())
    }
}
