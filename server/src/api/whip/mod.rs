//! WHIP ingest (RFC 9725) at `/whip/{room}` and WHEP playback (the WHEP draft) at
//! `/whep/{room}`: standard tools publish and play without any Prism SDK.
//!
//! `POST` with an SDP offer and `Authorization: Bearer <access token>` (a publish grant for
//! WHIP, subscribe for WHEP, for the room in the URL) creates a session: `201 Created`, the
//! SDP answer, `Location` (the session URL), `ETag`. On the session URL, `PATCH` with
//! `application/trickle-ice-sdpfrag` trickles candidates or restarts ICE, and `DELETE` ends it.
//! `OPTIONS` answers CORS preflights and lists the configured ICE servers as `Link` headers.
//! The session URL is the capability for PATCH and DELETE (an unguessable id), as RFC 9725
//! allows; the token is checked on POST.
//!
//! A WHIP publisher joins the room under its token's identity; its tracks are published when
//! their media arrives, simulcast included. A WHEP viewer joins as `<identity>#<session>` (many
//! viewers may share one token) and receives the room's tracks, or with `?participant=<identity>`
//! one participant's, on the audio/video sections it offered: a viewer cannot renegotiate, so
//! each section carries one track at a time and switches to another when its source leaves
//! (see `WorkerHandle::viewer_offer`). Both count as participants for limits, webhooks and
//! the control plane.

mod sdp;
mod session;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prism_proto::signal::{DisconnectReason, ParticipantPermission};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ApiError, AppState};
use crate::auth::{Claims, Grants};
use crate::room::{JoinSpec, RoomError};
use crate::transport::{ConnId, TransportError};
pub use session::Sessions;
use session::{Joined, Kind};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const CHANNEL: usize = 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(whip_post).options(options_endpoint))
        .route(
            "/whip/{room}/{session}",
            axum::routing::patch(whip_patch)
                .delete(whip_delete)
                .options(options_session),
        )
        .route("/whep/{room}", post(whep_post).options(options_endpoint))
        .route(
            "/whep/{room}/{session}",
            axum::routing::patch(whep_patch)
                .delete(whep_delete)
                .options(options_session),
        )
        .layer(axum::middleware::map_response(cors))
}

/// Browsers call WHIP/WHEP from any page: every response may be read cross-origin.
async fn cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Accept-Post"),
    );
    response
}

#[derive(Debug, Default, Deserialize)]
pub struct WhepParams {
    participant: Option<String>,
}

async fn whip_post(
    State(app): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(app, Kind::Whip, room, None, &headers, &body).await
}

async fn whep_post(
    State(app): State<AppState>,
    Path(room): Path<String>,
    Query(params): Query<WhepParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let follow = params.participant.filter(|p| !p.is_empty());
    create(app, Kind::Whep, room, follow, &headers, &body).await
}

async fn whip_patch(
    State(app): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    patch(app, Kind::Whip, room, id, &headers, &body).await
}

async fn whep_patch(
    State(app): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    patch(app, Kind::Whep, room, id, &headers, &body).await
}

async fn whip_delete(
    State(app): State<AppState>,
    Path((room, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete(app, Kind::Whip, room, id).await
}

async fn whep_delete(
    State(app): State<AppState>,
    Path((room, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete(app, Kind::Whep, room, id).await
}

/// Preflight and discovery on the endpoint: methods, accepted offer type, ICE servers.
async fn options_endpoint(State(app): State<AppState>) -> Response {
    let mut response = preflight("POST, OPTIONS");
    response
        .headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP));
    add_ice_servers(&app, response.headers_mut());
    response
}

async fn options_session(State(app): State<AppState>) -> Response {
    let mut response = preflight("PATCH, DELETE, OPTIONS");
    response
        .headers_mut()
        .insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    add_ice_servers(&app, response.headers_mut());
    response
}

fn preflight(methods: &'static str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// `Link: <stun:...>; rel="ice-server"` per configured URL (RFC 9725 section 4.6), with TURN
/// credentials when configured.
fn add_ice_servers(app: &AppState, headers: &mut HeaderMap) {
    for server in &app.rooms.config().rtc.ice_servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if !server.username.is_empty() {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    server.username.replace('"', ""),
                    server.credential.replace('"', "")
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                headers.append(header::LINK, v);
            }
        }
    }
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn unsupported_type(expected: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("the body must be {expected}"),
    )
}

fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// Checks the bearer token: valid (401 otherwise), for this room, with the grant the
/// endpoint needs (403 otherwise).
fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    room: &str,
    kind: Kind,
) -> Result<Claims, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthenticated("an access token is required: Authorization: Bearer <token>")
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthenticated("the Authorization header must be Bearer <token>"))?;
    if kind == Kind::Whip
        && let Some(key) = app.rooms.config().room.stream_keys.get(room)
        && constant_time_eq(key.as_bytes(), token.as_bytes())
    {
        return Ok(stream_key_claims(room));
    }
    let claims = app
        .verifier
        .verify(token)
        .map_err(|e| unauthenticated(format!("invalid access token: {e}")))?;
    let denied = |m: String| ApiError::new(StatusCode::FORBIDDEN, "permission_denied", m);
    if claims.room != room {
        return Err(denied(format!(
            "the token is for room {:?}, not {room:?}",
            claims.room
        )));
    }
    let granted = claims.grants.room_join
        && match kind {
            Kind::Whip => claims.grants.can_publish,
            Kind::Whep => claims.grants.can_subscribe,
        };
    if !granted {
        let grant = match kind {
            Kind::Whip => "room_join and can_publish",
            Kind::Whep => "room_join and can_subscribe",
        };
        return Err(denied(format!("the token does not grant {grant}")));
    }
    Ok(claims)
}

/// A publisher that authenticated with the room's stream key: it may join and publish, nothing
/// else, as identity `stream-key` (a reconnect replaces the previous session).
fn stream_key_claims(room: &str) -> Claims {
    Claims {
        iss: String::new(),
        sub: "stream-key".into(),
        name: "WHIP".into(),
        metadata: String::new(),
        room: room.to_owned(),
        nbf: 0,
        exp: u64::MAX,
        iat: 0,
        grants: Grants {
            room_join: true,
            can_publish: true,
            can_subscribe: false,
            can_publish_data: false,
            room_create: false,
            room_list: false,
            room_admin: false,
        },
    }
}

/// Compares secrets without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn invalid_sdp(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_sdp", message)
}

fn nothing_usable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_ACCEPTABLE, "no_usable_media", message)
}

/// What must hold of an offer before anything is created for it.
fn check_offer(kind: Kind, offer: &str) -> Result<(), ApiError> {
    let sections = sdp::media_sections(offer).map_err(invalid_sdp)?;
    let usable = sections.iter().any(|s| {
        !s.rejected
            && match kind {
                Kind::Whip => s.direction.sends(),
                Kind::Whep => s.direction.receives(),
            }
    });
    if !usable {
        return Err(nothing_usable(match kind {
            Kind::Whip => "the offer sends no audio or video (WHIP offers are sendonly)",
            Kind::Whep => "the offer receives no audio or video (WHEP offers are recvonly)",
        }));
    }
    Ok(())
}

fn room_error(e: RoomError) -> ApiError {
    let (status, code) = match &e {
        RoomError::RoomNotFound(_) => (StatusCode::NOT_FOUND, "room_not_found"),
        RoomError::RoomFull(..) => (StatusCode::FORBIDDEN, "room_full"),
        RoomError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        RoomError::NotAllowed(_) => (StatusCode::FORBIDDEN, "permission_denied"),
        RoomError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, e.to_string())
}

fn transport_error(e: TransportError) -> ApiError {
    match e {
        TransportError::InvalidSdp(m) => invalid_sdp(format!("the offer was refused: {m}")),
        TransportError::Overloaded => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
        }
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Percent-encodes a path segment (room names are free text).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn create(
    app: AppState,
    kind: Kind,
    room_name: String,
    follow: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    if !content_type_is(headers, SDP) {
        return Err(unsupported_type(SDP));
    }
    let claims = authenticate(&app, headers, &room_name, kind)?;
    let offer = std::str::from_utf8(body)
        .map_err(|_| invalid_sdp("the offer is not UTF-8 text"))?
        .to_owned();
    check_offer(kind, &offer)?;
    let offer = match kind {
        Kind::Whip => offer,
        Kind::Whep => sdp::receive_only(&offer),
    };
    // Refused before anything is created, like /rtc: draining node, no room, full room.
    if app.rooms.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            RoomError::Draining.to_string(),
        ));
    }
    match app.rooms.get(&room_name) {
        Some(room) => {
            let max = room.settings.max_participants;
            let full = max > 0 && room.participant_count() as u32 >= max;
            let replaces = kind == Kind::Whip && room.participant(&claims.sub).is_some();
            if full && !replaces {
                return Err(room_error(RoomError::RoomFull(room_name, max)));
            }
        }
        None if !app.rooms.config().room.auto_create => {
            return Err(room_error(RoomError::RoomNotFound(room_name)));
        }
        None => {}
    }
    let id = random_hex();
    let identity = match kind {
        Kind::Whip => claims.sub.clone(),
        Kind::Whep => format!("{}#{}", claims.sub, &id[..8]),
    };
    let spec = JoinSpec {
        identity,
        name: claims.name.clone(),
        metadata: claims.metadata.clone(),
        permission: ParticipantPermission {
            can_publish: kind == Kind::Whip,
            can_subscribe: kind == Kind::Whep,
            can_publish_data: false,
        },
        // A viewer following one participant subscribes itself (see `session`).
        auto_subscribe: kind == Kind::Whep && follow.is_none(),
    };
    let (outbox_tx, outbox) = mpsc::channel(CHANNEL);
    let (events_tx, events) = mpsc::channel(CHANNEL);
    // A room can close between lookup and join when its last participant just left; the
    // next lookup then creates a fresh one.
    let mut attempt = 0;
    let (room, conn, answer, joined) = loop {
        attempt += 1;
        let room = app.rooms.get_or_create(&room_name).map_err(room_error)?;
        let conn = ConnId::next();
        if let Err(e) = room.worker.open(conn, events_tx.clone()).await {
            app.rooms.release(&room);
            return Err(transport_error(e));
        }
        let fail = |e: ApiError| {
            room.worker.close(conn);
            app.rooms.release(&room);
            e
        };
        // The offer is answered before joining, so a refused offer leaves no trace in the
        // room (no join/leave events).
        let answer = match kind {
            Kind::Whip => match room.worker.offer(conn, offer.clone()).await {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    return Err(fail(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the offer was not answered",
                    )));
                }
                Err(e) => return Err(fail(transport_error(e))),
            },
            Kind::Whep => match room.worker.viewer_offer(conn, offer.clone()).await {
                Ok(answer) => answer,
                Err(e) => return Err(fail(transport_error(e))),
            },
        };
        let accepted = sdp::media_sections(&answer).is_ok_and(|sections| {
            sections
                .iter()
                .any(|s| !s.rejected && s.direction != sdp::Direction::Inactive)
        });
        if !accepted {
            return Err(fail(nothing_usable(
                "no offered audio or video section could be accepted (codecs?)",
            )));
        }
        match room.join(spec.clone(), conn, outbox_tx.clone()) {
            Ok(joined) => break (room, conn, answer, joined),
            Err(RoomError::RoomClosed(_)) if attempt < 3 => {
                room.worker.close(conn);
            }
            Err(e) => return Err(fail(room_error(e))),
        }
    };
    drop((outbox_tx, events_tx));
    let etag = format!("\"{}\"", random_hex());
    let location = format!("/{}/{}/{}", kind.path(), encode_segment(&room_name), id);
    tracing::info!(room = %room.name, participant = %joined.participant_sid, session = %id, kind = kind.path(), "whip/whep session created");
    session::spawn(
        &app.whip,
        app.rooms.clone(),
        Joined {
            kind,
            id,
            room,
            conn,
            participant_sid: joined.participant_sid,
            etag: etag.clone(),
            offer,
            outbox,
            events,
            follow,
            started,
        },
    );
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    add_ice_servers(&app, h);
    Ok(response)
}

fn unknown_session() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such WHIP/WHEP session (it ended, or never existed)",
    )
}

async fn patch(
    app: AppState,
    kind: Kind,
    room: String,
    id: String,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let entry = app.whip.get(kind, &room, &id).ok_or_else(unknown_session)?;
    if !content_type_is(headers, SDPFRAG) {
        return Err(unsupported_type(SDPFRAG));
    }
    let body = std::str::from_utf8(body).map_err(|_| invalid_sdp("the body is not UTF-8 text"))?;
    let frag = sdp::parse_sdpfrag(body).map_err(invalid_sdp)?;
    let _one_at_a_time = entry.patching.lock().await;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let etag = entry.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(tag) = if_match
        && tag.trim() != "*"
        && tag.trim() != etag
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("the session's ETag is {etag}"),
        ));
    }
    let offer = entry
        .offer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let restart = match (&frag.ufrag, &frag.pwd) {
        (Some(u), Some(p)) if sdp::attribute(&offer, "ice-ufrag") != Some(u.as_str()) => {
            Some((u.clone(), p.clone()))
        }
        _ => None,
    };
    let Some((ufrag, pwd)) = restart else {
        // Trickle: hand the candidates over (an ICE-lite server learns addresses from the
        // checks themselves, so this is for completeness).
        for c in frag.candidates {
            entry
                .room
                .worker
                .candidate(entry.conn, c.candidate, c.mid, c.mline_index)
                .map_err(transport_error)?;
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // ICE restart: the engine restarts ICE when a renegotiation brings new remote
    // credentials, so the session's offer is applied again with the new ones. Its answer
    // carries new server credentials too, already routed by the worker when it returns (the
    // previous ones stay routed until the new generation connects). A restart refused by
    // its precondition (412 above) changes nothing; a failed one answers an error and does
    // not end the session (RFC 9725 section 4.4.2).
    let restarted = sdp::with_ice_credentials(&offer, &ufrag, &pwd);
    let answer = match entry.room.worker.offer(entry.conn, restarted.clone()).await {
        Ok(Some(answer)) => answer,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "negotiation_pending",
                "the session is renegotiating; retry",
            ));
        }
        Err(e) => return Err(transport_error(e)),
    };
    for c in frag.candidates {
        let _ = entry
            .room
            .worker
            .candidate(entry.conn, c.candidate, c.mid, c.mline_index);
    }
    let new_etag = format!("\"{}\"", random_hex());
    *entry.offer.lock().unwrap_or_else(|p| p.into_inner()) = restarted;
    *entry.etag.lock().unwrap_or_else(|p| p.into_inner()) = new_etag.clone();
    let mut response = (StatusCode::OK, sdp::restart_answer_frag(&answer)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
    if let Ok(v) = HeaderValue::from_str(&new_etag) {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}

async fn delete(app: AppState, kind: Kind, room: String, id: String) -> Result<Response, ApiError> {
    if app.whip.get(kind, &room, &id).is_none() {
        return Err(unknown_session());
    }
    let entry = app.whip.remove(&id).ok_or_else(unknown_session)?;
    entry.end(DisconnectReason::ClientInitiated).await;
    tracing::debug!(session = %id, participant = %entry.participant_sid, "whip/whep session deleted");
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_room_names_for_urls() {
        assert_eq!(super::encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(super::encode_segment("Room-1_x.y~"), "Room-1_x.y~");
    }
}
