//! Joins and leaves clean up after themselves: 1,000 join/offer/leave cycles leave no room,
//! participant, connection, route or task behind; a participant that vanishes without a leave
//! is removed and the others are told.

mod common;

use std::time::Duration;

use common::*;
use prism_proto::signal::{
    DisconnectReason, LeaveRequest, SessionDescription, SignalRequest,
    signal_request::Message as Req, signal_response::Message as Resp,
};
use prism_server::transport::WorkerSnapshot;

async fn join_offer_leave(server: &prism_server::Server, room: &str, identity: &str, sdp: &str) {
    let mut c = RawClient::connect(server, &token(room, identity))
        .await
        .expect("connect");
    c.wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    c.send(&SignalRequest {
        message: Some(Req::Offer(SessionDescription {
            r#type: "offer".into(),
            sdp: sdp.to_owned(),
            id: 1,
        })),
    })
    .await;
    let answer = c
        .wait_for(|m| match m {
            Resp::Answer(a) => Some(a),
            Resp::Error(e) => panic!("offer refused: {e:?}"),
            _ => None,
        })
        .await;
    assert!(answer.sdp.contains("a=ice-lite"), "the server is ICE-lite");
    c.send(&SignalRequest {
        message: Some(Req::Leave(LeaveRequest {})),
    })
    .await;
    // The server closes the socket once it has cleaned up.
    while c.recv().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_join_leave_cycles_leave_nothing_behind() {
    let server = start().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let sdp = client_offer();
    // One warm-up cycle first: tasks started once per process are not per-join leaks.
    join_offer_leave(&server, "warm-up", "warm-up", &sdp).await;
    eventually(Duration::from_secs(5), || async {
        server.rooms().room_count() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks_before = metrics.num_alive_tasks();
    const CYCLES: usize = 1000;
    const PARALLEL: usize = 8;
    let server = std::sync::Arc::new(server);
    let mut lanes = Vec::new();
    for lane in 0..PARALLEL {
        let server = server.clone();
        let sdp = sdp.clone();
        lanes.push(tokio::spawn(async move {
            for i in (lane..CYCLES).step_by(PARALLEL) {
                // A few rooms, so rooms are created and closed over and over too.
                join_offer_leave(
                    &server,
                    &format!("room-{}", i % 5),
                    &format!("user-{i}"),
                    &sdp,
                )
                .await;
            }
        }));
    }
    for lane in lanes {
        lane.await.expect("lane");
    }
    assert_nothing_left_behind(&server, Duration::from_secs(10), tasks_before, "").await;
    if let Ok(server) = std::sync::Arc::try_unwrap(server) {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn vanished_participant_is_removed_and_others_are_told() {
    let server = start().await;
    let mut alice = RawClient::connect(&server, &token("r", "alice"))
        .await
        .unwrap();
    alice
        .wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    let bob = RawClient::connect(&server, &token("r", "bob"))
        .await
        .unwrap();
    alice
        .wait_for(|m| matches!(m, Resp::ParticipantJoined(_)).then_some(()))
        .await;
    // Bob's process dies: the socket closes with no leave message.
    drop(bob);
    let left = alice
        .wait_for(|m| match m {
            Resp::ParticipantLeft(l) => Some(l),
            _ => None,
        })
        .await;
    assert_eq!(left.identity, "bob");
    assert_eq!(left.reason, DisconnectReason::SignalingClosed as i32);
    assert_eq!(server.rooms().participant_count(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_comes_up_is_removed_after_the_join_timeout() {
    use prism_client::{ConnectOptions, Room, RoomEvent};

    let mut config = test_config();
    config.room.join_timeout_secs = 3;
    let server = start_with(config).await;
    // A watcher with a real, connected peer stays; Alice joins signaling but never sets up
    // media, so she is removed after the join timeout and the watcher is told.
    let (watcher, mut events) = Room::connect(
        &http_url(&server),
        &token("r", "watcher"),
        ConnectOptions::default(),
    )
    .await
    .expect("watcher connects");
    let mut alice = RawClient::connect(&server, &token("r", "alice"))
        .await
        .unwrap();
    alice
        .wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    let left = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await {
                Some(RoomEvent::ParticipantLeft {
                    identity, reason, ..
                }) => return Some((identity, reason)),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("the watcher is told within 15 s")
    .expect("the watcher stays connected");
    assert_eq!(
        left,
        ("alice".to_owned(), DisconnectReason::ConnectionTimeout)
    );
    // Alice herself is told why before her socket closes.
    let told = alice
        .wait_for(|m| match m {
            Resp::Leave(l) => Some(l.reason),
            _ => None,
        })
        .await;
    assert_eq!(told, DisconnectReason::ConnectionTimeout as i32);
    watcher.leave().await.expect("watcher leaves");
    server.shutdown().await;
}

/// The same with real peers: connected (ICE, DTLS, SRTP), publishing, subscribed to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_publishers_and_subscribers_leave_nothing_behind() {
    use prism_client::synthetic::{OpusConfig, OpusSource};
    use prism_client::{ConnectOptions, Room, TrackOptions};

    let server = start().await;
    let url = http_url(&server);
    // A participant that stays while others come and go, subscribed to everything.
    let (watcher, _watcher_events) =
        Room::connect(&url, &token("churn", "watcher"), ConnectOptions::default())
            .await
            .expect("watcher");
    const CYCLES: usize = 40;
    const PARALLEL: usize = 4;
    let mut lanes = Vec::new();
    for lane in 0..PARALLEL {
        let url = url.clone();
        lanes.push(tokio::spawn(async move {
            for i in (lane..CYCLES).step_by(PARALLEL) {
                let (room, _events) = Room::connect(
                    &url,
                    &token("churn", &format!("guest-{i}")),
                    ConnectOptions::default(),
                )
                .await
                .expect("guest connects");
                let track = room
                    .publish_track(TrackOptions::audio("mic"))
                    .await
                    .expect("publish");
                let mut source = OpusSource::new(OpusConfig::default());
                for _ in 0..5 {
                    track.write_rtp(&source.next_packet()).await.expect("write");
                }
                room.leave().await.expect("leave");
            }
        }));
    }
    for lane in lanes {
        lane.await.expect("lane");
    }
    let only_watcher = eventually(Duration::from_secs(10), || async {
        let snapshots = server.worker_snapshots().await;
        let connections: usize = snapshots.iter().map(|s| s.connections).sum();
        let down_tracks: usize = snapshots.iter().map(|s| s.down_tracks).sum();
        let receivers: usize = snapshots.iter().map(|s| s.receivers).sum();
        let pending: usize = snapshots.iter().map(|s| s.pending_subscriptions).sum();
        server.rooms().participant_count() == 1
            && connections == 1
            && down_tracks == 0
            && receivers == 0
            && pending == 0
    })
    .await;
    assert!(
        only_watcher,
        "only the watcher is left: {:?}",
        server.worker_snapshots().await
    );
    watcher.leave().await.expect("watcher leaves");
    let empty = eventually(Duration::from_secs(10), || async {
        server.rooms().room_count() == 0
            && server
                .worker_snapshots()
                .await
                .iter()
                .all(|s| *s == WorkerSnapshot::default())
    })
    .await;
    assert!(empty, "nothing left: {:?}", server.worker_snapshots().await);
    server.shutdown().await;
}
