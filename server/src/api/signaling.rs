//! `GET /rtc`: authenticate the access token before upgrading, then hand the socket to a
//! [`session`](super::session).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, AppState, session};
use crate::room::{JoinSpec, RoomError};
use prism_proto::signal::ParticipantPermission;

#[derive(Debug, Deserialize)]
pub struct RtcParams {
    access_token: Option<String>,
    auto_subscribe: Option<String>,
}

pub async fn rtc(
    State(app): State<AppState>,
    Query(params): Query<RtcParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = params
        .access_token
        .or_else(|| bearer(&headers))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "an access token is required (access_token query parameter or Authorization: Bearer)",
            )
        })?;
    let claims = app.verifier.verify(&token).map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("invalid access token: {e}"),
        )
    })?;
    if !claims.grants.room_join {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "the token does not grant room_join",
        ));
    }
    if claims.room.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "the token names no room",
        ));
    }
    let auto_subscribe = match params.auto_subscribe.as_deref() {
        None | Some("1") | Some("true") => true,
        Some("0") | Some("false") => false,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("auto_subscribe must be true or false, not {other:?}"),
            ));
        }
    };
    // Checked before the upgrade so a refused join is a plain HTTP error (a browser cannot read
    // the status of a failed upgrade, so the browser SDK repeats the request as a plain GET to
    // learn why). Nothing is created here: a client that never completes the upgrade, or that
    // only asks why, leaves no room behind. (A join racing
    // others for the last place may still be refused after the upgrade, with a ROOM_FULL
    // error message and close.)
    if app.rooms.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            RoomError::Draining.to_string(),
        ));
    }
    match app.rooms.get(&claims.room) {
        Some(room) => {
            let max = room.settings.max_participants;
            // Someone rejoining under their identity replaces themselves: not refused.
            let full = max > 0 && room.participant_count() as u32 >= max;
            if full && room.participant(&claims.sub).is_none() {
                let e = RoomError::RoomFull(claims.room.clone(), max);
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "room_full",
                    e.to_string(),
                ));
            }
        }
        None if !app.rooms.config().room.auto_create => {
            let e = RoomError::RoomNotFound(claims.room.clone());
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "room_not_found",
                e.to_string(),
            ));
        }
        None => {}
    }
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            format!("expected a WebSocket upgrade: {e}"),
        )
    })?;
    let spec = JoinSpec {
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        metadata: claims.metadata.clone(),
        permission: ParticipantPermission {
            can_publish: claims.grants.can_publish,
            can_subscribe: claims.grants.can_subscribe,
            can_publish_data: claims.grants.can_publish_data,
        },
        auto_subscribe,
    };
    let rooms = app.rooms.clone();
    Ok(upgrade
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| session::run(rooms, claims.room, spec, socket)))
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
}
