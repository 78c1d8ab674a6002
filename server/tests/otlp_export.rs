//! OpenTelemetry as an operator's collector sees it: a real OTLP/gRPC receiver (the
//! collector's TraceService and MetricsService, from opentelemetry-proto) on loopback, Prism
//! configured to export to it, a real call with the Rust SDK, and the receiver finds the join
//! spans, a control-plane call's span and the forwarded-packets metric growing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;

/// Everything the receiver was sent.
#[derive(Default, Clone)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Received {
    async fn start() -> (Self, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let service = received.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("OTLP receiver runs");
        });
        (received, addr)
    }

    fn span(&self, pick: impl Fn(&Span) -> bool) -> Option<Span> {
        self.spans.lock().unwrap().iter().find(|s| pick(s)).cloned()
    }

    /// The latest value of a cumulative sum `name`, summed over its data points (workers).
    fn counter(&self, name: &str) -> Option<f64> {
        let exports = self.metrics.lock().unwrap();
        exports.iter().rev().find_map(|export| {
            let metric = export
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .find(|m| m.name == name)?;
            let Some(Data::Sum(sum)) = &metric.data else {
                return None;
            };
            Some(
                sum.data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        None => 0.0,
                    })
                    .sum(),
            )
        })
    }

    /// The latest count of histogram `name`, over its data points.
    fn histogram_count(&self, name: &str) -> Option<u64> {
        let exports = self.metrics.lock().unwrap();
        exports.iter().rev().find_map(|export| {
            let metric = export
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .find(|m| m.name == name)?;
            let Some(Data::Histogram(h)) = &metric.data else {
                return None;
            };
            Some(h.data_points.iter().map(|p| p.count).sum())
        })
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// Polls `check` every 100 ms until it gives a value, for at most 30 s.
async fn within<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receives_traces_and_metrics_of_a_call() {
    let (received, collector) = Received::start().await;
    let mut config = test_config();
    config.telemetry.otlp_endpoint = format!("http://{collector}");
    config.telemetry.otlp_interval_ms = 300;
    config.log.level = "warn".into();
    // What `prism` does at start: logs plus the OTLP span exporter, on this runtime.
    let telemetry =
        prism_server::telemetry::init(&config.log, &config.telemetry).expect("telemetry starts");
    let server = start_with(config).await;

    let _call = video_call(&server, "otel", "alice", "bob").await;
    control(&server)
        .await
        .list_rooms(&[])
        .await
        .expect("ListRooms");

    for identity in ["alice", "bob"] {
        let join = within(&format!("the join span of {identity}"), || {
            received
                .span(|s| s.name == "join" && attribute(s, "identity").as_deref() == Some(identity))
        })
        .await;
        assert_eq!(attribute(&join, "room").as_deref(), Some("otel"));
        assert_eq!(attribute(&join, "outcome").as_deref(), Some("connected"));
        assert!(attribute(&join, "participant").is_some_and(|p| p.starts_with("PA_")));
        assert!(join.end_time_unix_nano > join.start_time_unix_nano);
    }
    let publish = within("alice's publish span", || {
        received.span(|s| s.name == "publish" && attribute(s, "track").is_some())
    })
    .await;
    let subscribe = within("bob's subscribe span", || {
        received.span(|s| {
            s.name == "subscribe" && attribute(s, "outcome").as_deref() == Some("subscribed")
        })
    })
    .await;
    assert_eq!(attribute(&subscribe, "track"), attribute(&publish, "track"));
    within("a negotiation span", || {
        received.span(|s| s.name == "negotiate")
    })
    .await;
    let grpc = within("the ListRooms span", || {
        received.span(|s| s.name == "prism.control.RoomService/ListRooms")
    })
    .await;
    assert_eq!(attribute(&grpc, "rpc.system").as_deref(), Some("grpc"));

    let first = within("prism_rtp_forwarded > 0", || {
        received.counter("prism_rtp_forwarded").filter(|&v| v > 0.0)
    })
    .await;
    let later = within("prism_rtp_forwarded growing", || {
        received
            .counter("prism_rtp_forwarded")
            .filter(|&v| v > first)
    })
    .await;
    eprintln!("forwarded packets over OTLP: {first} then {later}");
    let joins = within("two joins in prism_join_seconds", || {
        received
            .histogram_count("prism_join_seconds")
            .filter(|&n| n >= 2)
    })
    .await;
    assert_eq!(joins, 2);
    within("the first packet histogram", || {
        received
            .histogram_count("prism_first_packet_seconds")
            .filter(|&n| n >= 1)
    })
    .await;

    server.shutdown().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap()
        .expect("spans flushed");
}
