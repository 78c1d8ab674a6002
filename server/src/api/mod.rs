//! HTTP entry points: WebSocket signaling at `/rtc`, WHIP/WHEP ([`whip`]), health endpoints, the demo page and SDK,
//! and the gRPC control plane ([`grpc`]) on the same port. Errors are JSON bodies
//! with an HTTP status, produced by [`ApiError`].

mod dashboard;
pub mod grpc;
mod health;
mod session;
mod session_spans;
mod signaling;
mod web;
pub mod whip;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::TokenVerifier;
use crate::metrics::Metrics;
use crate::room::RoomManager;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub rooms: Arc<RoomManager>,
    pub verifier: Arc<TokenVerifier>,
    /// Live WHIP/WHEP sessions.
    pub whip: Arc<whip::Sessions>,
    /// None when metrics are off (`telemetry.metrics = false`): `/metrics` is 404.
    pub metrics: Option<Arc<Metrics>>,
}

pub fn router(state: AppState) -> Router {
    let web = web::routes(state.rooms.config());
    Router::new()
        .route("/rtc", get(signaling::rtc))
        .route("/healthz", get(|| async { "ok" }))
        .merge(whip::routes())
        .route("/readyz", get(health::ready))
        .route(
            "/admin/drain",
            get(health::drain_state)
                .put(health::start_drain)
                .delete(health::stop_drain),
        )
        .route("/metrics", get(metrics))
        .merge(web)
        .merge(if state.rooms.config().web.dashboard {
            dashboard::routes()
        } else {
            Router::new()
        })
        .with_state(state)
}

/// Prometheus scrape (OpenMetrics text), computed from the live counters on each request.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let Some(metrics) = &state.metrics else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are off (telemetry.metrics = false)",
        )
        .into_response();
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// An HTTP error with a JSON body: `{"error": "...", "message": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
