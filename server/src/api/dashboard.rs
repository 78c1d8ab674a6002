//! The live dashboard: a page at `/dashboard` (plain JavaScript and canvas, embedded in the
//! binary, no CDN) polling `GET /api/dashboard`, a JSON snapshot of every room, participant and
//! track joined with what the media workers hold: per layer and per down track packet and byte
//! counts (the page turns them into bitrates), layer forwarded, loss, round-trip time, and each
//! subscriber's downlink estimate and allocation. The JSON needs a node-wide admin token
//! (`Authorization: Bearer`, as `/admin/drain`); the page asks for one and keeps it in the
//! browser's local storage.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prism_proto::signal::{TrackKind, participant_info};
use serde::Serialize;

use super::AppState;
use crate::transport::{ConnDetail, DownTrackDetail, LayerDetail};

/// A worker that does not answer this fast is left out of one snapshot.
const WORKER_DEADLINE: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("../../../clients/web/dashboard/index.html");
const SCRIPT: &str = include_str!("../../../clients/web/dashboard/dashboard.js");
const STYLE: &str = include_str!("../../../clients/web/dashboard/dashboard.css");

pub fn routes() -> Router<AppState> {
    let file = |content_type: &'static str, body: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        })
    };
    Router::new()
        .route("/dashboard", file("text/html; charset=utf-8", PAGE))
        .route(
            "/dashboard/dashboard.js",
            file("text/javascript; charset=utf-8", SCRIPT),
        )
        .route(
            "/dashboard/dashboard.css",
            file("text/css; charset=utf-8", STYLE),
        )
        .route("/api/dashboard", get(snapshot))
}

#[derive(Serialize)]
struct Snapshot {
    /// Server time (Unix milliseconds), for rates between two snapshots.
    at_ms: u64,
    draining: bool,
    workers: Vec<WorkerView>,
    rooms: Vec<RoomView>,
}

#[derive(Serialize)]
struct WorkerView {
    index: usize,
    connections: usize,
    queued_commands: usize,
    rtp_forwarded: u64,
    /// False when it did not answer within a second (its connections are missing below).
    answered: bool,
}

#[derive(Serialize)]
struct RoomView {
    name: String,
    sid: String,
    worker: usize,
    participants: Vec<ParticipantView>,
}

#[derive(Serialize)]
struct ParticipantView {
    sid: String,
    identity: String,
    name: String,
    state: &'static str,
    connected: bool,
    rtt_ms: Option<u64>,
    estimate_bps: Option<u64>,
    allocated_bps: Option<u64>,
    published: Vec<PublishedView>,
    subscribed: Vec<SubscribedView>,
}

#[derive(Serialize)]
struct PublishedView {
    sid: String,
    name: String,
    kind: &'static str,
    mime_type: String,
    muted: bool,
    subscribers: usize,
    layers: Vec<LayerDetail>,
}

#[derive(Serialize)]
struct SubscribedView {
    /// Whose track and what it is called.
    publisher: String,
    name: String,
    kind: &'static str,
    #[serde(flatten)]
    media: DownTrackDetail,
}

fn kind_name(kind: i32) -> &'static str {
    if kind == TrackKind::Video as i32 {
        "video"
    } else {
        "audio"
    }
}

fn state_name(state: i32) -> &'static str {
    match participant_info::State::try_from(state) {
        Ok(participant_info::State::Joining) => "joining",
        Ok(participant_info::State::Joined) => "joined",
        Ok(participant_info::State::Active) => "active",
        _ => "disconnected",
    }
}

async fn snapshot(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = super::health::admin(&app, &headers) {
        return e.into_response();
    }
    let mut workers = Vec::new();
    let mut conns: HashMap<u64, ConnDetail> = HashMap::new();
    for w in app.rooms.transport().workers() {
        let details = tokio::time::timeout(WORKER_DEADLINE, w.details()).await;
        let answered = matches!(details, Ok(Ok(_)));
        if let Ok(Ok(details)) = details {
            conns.extend(details.into_iter().map(|d| (d.conn, d)));
        }
        workers.push(WorkerView {
            index: w.index,
            connections: w
                .stats
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            queued_commands: w.queued_commands(),
            rtp_forwarded: w
                .stats
                .rtp_forwarded
                .load(std::sync::atomic::Ordering::Relaxed),
            answered,
        });
    }
    let mut rooms: Vec<RoomView> = app
        .rooms
        .rooms()
        .iter()
        .map(|room| {
            let roster = room.roster();
            // Track sid -> (publisher identity, track name, kind), for the subscriptions.
            let tracks: HashMap<&str, (&str, &str, i32)> = roster
                .iter()
                .flat_map(|(p, _)| {
                    p.tracks.iter().map(move |t| {
                        (
                            t.sid.as_str(),
                            (p.identity.as_str(), t.name.as_str(), t.kind),
                        )
                    })
                })
                .collect();
            let mut participants: Vec<ParticipantView> = roster
                .iter()
                .map(|(p, conn)| {
                    let detail = conns.remove(&conn.0);
                    let published = p
                        .tracks
                        .iter()
                        .map(|t| {
                            let media = detail
                                .as_ref()
                                .and_then(|d| d.published.iter().find(|m| m.track_id == t.cid));
                            PublishedView {
                                sid: t.sid.clone(),
                                name: t.name.clone(),
                                kind: kind_name(t.kind),
                                mime_type: t.mime_type.clone(),
                                muted: t.muted,
                                subscribers: media.map_or(0, |m| m.subscribers),
                                layers: media.map(|m| m.layers.clone()).unwrap_or_default(),
                            }
                        })
                        .collect();
                    let mut subscribed: Vec<SubscribedView> = detail
                        .as_ref()
                        .map(|d| d.subscribed.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|media| {
                            let (publisher, name, kind) = tracks
                                .get(media.track_sid.as_str())
                                .copied()
                                .unwrap_or(("", "", TrackKind::Video as i32));
                            SubscribedView {
                                publisher: publisher.to_owned(),
                                name: name.to_owned(),
                                kind: kind_name(kind),
                                media,
                            }
                        })
                        .collect();
                    subscribed.sort_by(|a, b| (&a.publisher, b.kind).cmp(&(&b.publisher, a.kind)));
                    ParticipantView {
                        sid: p.sid.clone(),
                        identity: p.identity.clone(),
                        name: p.name.clone(),
                        state: state_name(p.state),
                        connected: detail.as_ref().is_some_and(|d| d.connected),
                        rtt_ms: detail.as_ref().and_then(|d| d.rtt_ms),
                        estimate_bps: detail.as_ref().and_then(|d| d.estimate_bps),
                        allocated_bps: detail.as_ref().and_then(|d| d.allocated_bps),
                        published,
                        subscribed,
                    }
                })
                .collect();
            participants.sort_by(|a, b| a.identity.cmp(&b.identity));
            RoomView {
                name: room.name.clone(),
                sid: room.sid.clone(),
                worker: room.worker.index,
                participants,
            }
        })
        .collect();
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Json(Snapshot {
        at_ms,
        draining: app.rooms.is_draining(),
        workers,
        rooms,
    })
    .into_response()
}
