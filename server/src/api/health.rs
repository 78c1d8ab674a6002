//! Liveness, readiness and drain mode, for load balancers and orchestrators.
//!
//! - `GET /healthz`: the process answers HTTP (liveness).
//! - `GET /readyz`: 200 when this node should get new participants; 503 with the reasons while
//!   it is draining or when a media worker did not answer within [`WORKER_DEADLINE`] (stalled).
//! - `PUT /admin/drain` / `DELETE /admin/drain`: enter and leave drain mode; `GET` reads it.
//!   Needs an access token with `room_admin` for every room (no `room` claim), as the gRPC
//!   control plane does. While draining, joins are refused (HTTP 503 `draining` before the
//!   WebSocket upgrade) and the rooms here end as their participants leave.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::signaling::bearer;
use super::{ApiError, AppState};

/// A worker that does not answer a snapshot request this fast counts as stalled.
const WORKER_DEADLINE: Duration = Duration::from_secs(1);

pub async fn ready(State(app): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if app.rooms.is_draining() {
        reasons.push("draining".to_owned());
    }
    for w in app.rooms.transport().workers() {
        match tokio::time::timeout(WORKER_DEADLINE, w.snapshot()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => reasons.push(format!("media worker {}: {e}", w.index)),
            Err(_) => reasons.push(format!("media worker {} is stalled", w.index)),
        }
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": reasons.is_empty(), "reasons": reasons })),
    )
        .into_response()
}

pub async fn drain_state(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match admin(&app, &headers) {
        Ok(()) => drained(&app),
        Err(e) => e.into_response(),
    }
}

pub async fn start_drain(State(app): State<AppState>, headers: HeaderMap) -> Response {
    set_draining(&app, &headers, true)
}

pub async fn stop_drain(State(app): State<AppState>, headers: HeaderMap) -> Response {
    set_draining(&app, &headers, false)
}

fn set_draining(app: &AppState, headers: &HeaderMap, on: bool) -> Response {
    if let Err(e) = admin(app, headers) {
        return e.into_response();
    }
    app.rooms.set_draining(on);
    drained(app)
}

fn drained(app: &AppState) -> Response {
    Json(json!({
        "draining": app.rooms.is_draining(),
        "rooms": app.rooms.room_count(),
        "participants": app.rooms.participant_count(),
    }))
    .into_response()
}

/// A node-wide admin: a valid access token granting room_admin with no room restriction.
pub(super) fn admin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <access token>`",
        )
    })?;
    let claims = app.verifier.verify(&token).map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("invalid access token: {e}"),
        )
    })?;
    if !claims.grants.room_admin || !claims.room.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "this needs an access token granting room_admin for every room (no room claim)",
        ));
    }
    Ok(())
}
