//! Webhooks: a receiver on loopback gets every event once, in order per room, signed, also
//! after answering 500 twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use prism_client::control::CreateRoomRequest;
use prism_client::{Codec, TrackOptions};
use prism_proto::control::RoomEvent;
use prism_server::config::{DEV_API_KEY, DEV_API_SECRET};
use prism_server::webhooks;

#[derive(Default)]
struct Receiver {
    requests: usize,
    accepted: Vec<RoomEvent>,
    bad_signatures: usize,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = shared.lock().unwrap();
    r.requests += 1;
    // The first two requests fail: those events must come again.
    if r.requests <= 2 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let signature = headers
        .get(webhooks::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let key = headers.get("x-prism-api-key").and_then(|v| v.to_str().ok());
    if !webhooks::verify(DEV_API_SECRET, &body, signature) || key != Some(DEV_API_KEY) {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let event: RoomEvent = prism_proto::from_json(std::str::from_utf8(&body).unwrap()).unwrap();
    assert_eq!(
        headers.get("x-prism-event").and_then(|v| v.to_str().ok()),
        Some(event.event.as_str())
    );
    r.accepted.push(event);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_signed_despite_failures() {
    let shared: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(shared.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = test_config();
    config.webhooks.urls = vec![format!("http://{addr}/hook")];
    config.webhooks.retry_initial_ms = 50;
    config.webhooks.retry_max_ms = 200;
    let server = start_with(config).await;
    let control = control(&server).await;

    // Room "a": a participant joins, publishes, unpublishes, leaves; the room closes.
    let (alice, _alice_events) = join(&server, "a", "alice").await;
    let track = alice
        .publish_track(TrackOptions::video("cam", Codec::Vp8, 320, 180))
        .await
        .unwrap();
    track.unpublish().await.unwrap();
    alice.leave().await.unwrap();

    // Room "b": created by the control plane, joined, deleted.
    control
        .create_room(CreateRoomRequest {
            name: "b".into(),
            empty_timeout: 60,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_bob, _bob_events) = join(&server, "b", "bob").await;
    control.delete_room("b").await.unwrap();

    let expected: HashMap<&str, Vec<&str>> = HashMap::from([
        (
            "a",
            vec![
                "room_started",
                "participant_joined",
                "track_published",
                "track_unpublished",
                "participant_left",
                "room_finished",
            ],
        ),
        (
            "b",
            vec![
                "room_started",
                "participant_joined",
                "participant_left",
                "room_finished",
            ],
        ),
    ]);
    let total: usize = expected.values().map(Vec::len).sum();
    let all_in = eventually(Duration::from_secs(15), || async {
        shared.lock().unwrap().accepted.len() >= total
    })
    .await;
    // A little longer: nothing more (no duplicate) may arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = std::mem::take(&mut *shared.lock().unwrap());
    let r = &received;
    assert!(all_in, "got {} of {total} events", r.accepted.len());
    assert_eq!(r.bad_signatures, 0);
    assert_eq!(
        r.requests,
        total + 2,
        "each event once, plus the two refused attempts"
    );
    let ids: HashSet<&str> = r.accepted.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), total, "no event delivered twice");
    for (room, kinds) in &expected {
        let got: Vec<&str> = r
            .accepted
            .iter()
            .filter(|e| e.room.as_ref().is_some_and(|x| x.name == *room))
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(&got, kinds, "room {room}");
    }
    let left = r
        .accepted
        .iter()
        .find(|e| e.event == "participant_left" && e.room.as_ref().unwrap().name == "b")
        .unwrap();
    assert_eq!(left.participant.as_ref().unwrap().identity, "bob");
    assert_eq!(
        left.reason,
        prism_client::proto::DisconnectReason::RoomDeleted as i32
    );
    let published = r
        .accepted
        .iter()
        .find(|e| e.event == "track_published")
        .unwrap();
    assert_eq!(published.track.as_ref().unwrap().sid, track.sid());

    let stats = server.webhooks().unwrap().stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.delivered.load(Relaxed), total as u64);
    assert_eq!(
        (stats.failed.load(Relaxed), stats.dropped.load(Relaxed)),
        (0, 0)
    );
    assert_eq!(stats.attempts.load(Relaxed), total as u64 + 2);
    server.shutdown().await;
    receiver.abort();
}
