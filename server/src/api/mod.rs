//! HTTP entry points: WebSocket signaling at `/rtc`, WHIP/WHEP ([`whip`]), health endpoints, the demo page and SDK,
//! and the gRPC control plane ([`grpc`]) on the same port. Errors are JSON bodies
//! with an HTTP status, produced by [`ApiError`].

pub mod grpc;
mod session;
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
use crate::room::RoomManager;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub rooms: Arc<RoomManager>,
    pub verifier: Arc<TokenVerifier>,
    /// Live WHIP/WHEP sessions.
    pub whip: Arc<whip::Sessions>,
}

pub fn router(state: AppState) -> Router {
    let web = web::routes(state.rooms.config());
    Router::new()
        .route("/rtc", get(signaling::rtc))
        .route("/healthz", get(|| async { "ok" }))
        .merge(whip::routes())
        .merge(web)
        .with_state(state)
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
