//! The gRPC control plane end to end: every RPC through a real gRPC client over loopback,
//! success and error cases, and its effect on connected SDK participants (removed, muted,
//! unsubscribed, permissions changed, data received).

mod common;

use std::time::Duration;

use common::*;
use prism_client::control::{
    CreateRoomRequest, MuteRoomTrackRequest, SendDataRequest, UpdateParticipantRequest,
    UpdateSubscriptionsRequest,
};
use prism_client::proto::{DisconnectReason, ParticipantPermission};
use prism_client::{ClientError, Codec, DataOptions, Grants, RoomEvent, TrackOptions};
use prism_proto::control::room_service_client::RoomServiceClient;
use prism_proto::control::{ListRoomsRequest, WatchRoomRequest};
use prism_server::auth::AccessToken;
use prism_server::config::{DEV_API_KEY, DEV_API_SECRET};
use tonic::Code;

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(e) => e
            .rpc_code()
            .unwrap_or_else(|| panic!("not a gRPC error: {e}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn message<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Rpc(status)) => status.message().to_owned(),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

/// A raw generated client, for calls with hand-made credentials.
async fn raw_client(server: &prism_server::Server) -> RoomServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(http_url(server))
        .unwrap()
        .connect()
        .await
        .unwrap();
    RoomServiceClient::new(channel)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn admin_token(room: &str, grants: Grants) -> String {
    AccessToken::new(DEV_API_KEY, DEV_API_SECRET)
        .identity("ops")
        .room(room)
        .grants(grants)
        .to_jwt()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_grants_are_checked() {
    let server = start().await;
    let mut raw = raw_client(&server).await;
    let list = ListRoomsRequest { names: vec![] };

    let e = raw
        .list_rooms(with_token(list.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("Bearer"), "{}", e.message());

    let e = raw
        .list_rooms(with_token(list.clone(), Some("not.a.jwt")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let wrong_secret = AccessToken::new(DEV_API_KEY, "another-secret-another-secret-xx")
        .identity("ops")
        .grants(Grants {
            room_list: true,
            ..Grants::default()
        })
        .to_jwt()
        .unwrap();
    let e = raw
        .list_rooms(with_token(list.clone(), Some(&wrong_secret)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("signature"), "{}", e.message());

    // A valid join token grants nothing administrative.
    let join_only = token("r", "alice");
    let e = raw
        .list_rooms(with_token(list.clone(), Some(&join_only)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("room_list"), "{}", e.message());

    // room_admin scoped to room "a" works on "a", not on "b".
    let admin_a = admin_token(
        "a",
        Grants {
            room_admin: true,
            room_create: true,
            ..Grants::default()
        },
    );
    let create = |name: &str| CreateRoomRequest {
        name: name.into(),
        empty_timeout: 60,
        ..Default::default()
    };
    raw.create_room(with_token(create("a"), Some(&admin_a)))
        .await
        .expect("scoped create");
    let e = raw
        .create_room(with_token(create("b"), Some(&admin_a)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("limited to room"), "{}", e.message());
    let e = raw
        .delete_room(with_token(
            prism_proto::control::DeleteRoomRequest { room: "b".into() },
            Some(&admin_a),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    raw.delete_room(with_token(
        prism_proto::control::DeleteRoomRequest { room: "a".into() },
        Some(&admin_a),
    ))
    .await
    .expect("scoped delete");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_created_listed_kept_while_empty_and_deleted() {
    let server = start().await;
    let control = control(&server).await;

    assert_eq!(
        code(control.create_room(CreateRoomRequest::default()).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            control
                .create_room(CreateRoomRequest {
                    name: "x".repeat(300),
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument
    );

    let kept = control
        .create_room(CreateRoomRequest {
            name: "kept".into(),
            empty_timeout: 600,
            max_participants: 7,
            metadata: "{\"topic\":\"ops\"}".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (
            kept.name.as_str(),
            kept.max_participants,
            kept.empty_timeout
        ),
        ("kept", 7, 600)
    );
    assert_eq!(kept.metadata, "{\"topic\":\"ops\"}");
    // Creating it again returns the same room, unchanged.
    let again = control
        .create_room(CreateRoomRequest {
            name: "kept".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.sid, kept.sid);
    assert_eq!(again.max_participants, 7);

    let brief = control
        .create_room(CreateRoomRequest {
            name: "brief".into(),
            empty_timeout: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let names = |rooms: Vec<prism_client::proto::Room>| {
        rooms.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(control.list_rooms(&[]).await.unwrap()),
        ["brief", "kept"]
    );
    assert_eq!(
        names(
            control
                .list_rooms(&["kept".into(), "nope".into()])
                .await
                .unwrap()
        ),
        ["kept"]
    );

    // The server's own empty timeout is 0 here; created rooms keep theirs.
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.rooms().get("brief").is_none()
        })
        .await,
        "a room created with a 1 s empty timeout closes after it"
    );
    assert!(
        server.rooms().get("kept").is_some(),
        "a room with 600 s stays"
    );
    let _ = brief;

    // Someone joins the kept room; deleting it disconnects them with ROOM_DELETED.
    let (alice, mut alice_events) = join(&server, "kept", "alice").await;
    assert_eq!(alice.room_info().sid, kept.sid);
    control.delete_room("kept").await.unwrap();
    let (reason, text) = wait_event(&mut alice_events, "disconnect", |e| match e {
        RoomEvent::Disconnected { reason, message } => Some((reason, message)),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::RoomDeleted);
    assert!(text.contains("ROOM_DELETED"), "{text}");
    assert!(control.list_rooms(&[]).await.unwrap().is_empty());
    assert_eq!(code(control.delete_room("kept").await), Code::NotFound);
    assert!(message(control.delete_room("kept").await).contains("\"kept\""));
    assert_eq!(code(control.delete_room("").await), Code::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_participants_refuses_the_next_one_clearly() {
    let server = start().await;
    let control = control(&server).await;
    control
        .create_room(CreateRoomRequest {
            name: "small".into(),
            empty_timeout: 60,
            max_participants: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_alice, _e) = join(&server, "small", "alice").await;
    let refused = prism_client::Room::connect(
        &http_url(&server),
        &token("small", "bob"),
        prism_client::ConnectOptions::default(),
    )
    .await;
    match refused {
        Err(ClientError::RoomFull(m)) => {
            assert!(m.contains("\"small\" is full (1 participants)"), "{m}")
        }
        other => panic!("expected RoomFull, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_are_listed_found_and_removed() {
    let server = start().await;
    let control = control(&server).await;
    let (_alice, mut alice_events) = join(&server, "team", "alice").await;
    let (_bob, mut bob_events) = join(&server, "team", "bob").await;

    let listed = control.list_participants("team").await.unwrap();
    let identities: Vec<&str> = listed.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(identities, ["alice", "bob"]);
    assert_eq!(
        code(control.list_participants("nope").await),
        Code::NotFound
    );

    let bob_info = control.get_participant("team", "bob").await.unwrap();
    assert_eq!(bob_info.identity, "bob");
    assert_eq!(
        code(control.get_participant("team", "carol").await),
        Code::NotFound
    );
    assert!(message(control.get_participant("team", "carol").await).contains("\"carol\""));
    assert_eq!(
        code(control.get_participant("team", "").await),
        Code::InvalidArgument
    );

    control.remove_participant("team", "bob").await.unwrap();
    let reason = wait_event(&mut bob_events, "bob disconnected", |e| match e {
        RoomEvent::Disconnected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::ParticipantRemoved);
    let (who, why) = wait_event(&mut alice_events, "bob left", |e| match e {
        RoomEvent::ParticipantLeft {
            identity, reason, ..
        } => Some((identity, reason)),
        _ => None,
    })
    .await;
    assert_eq!(
        (who.as_str(), why),
        ("bob", DisconnectReason::ParticipantRemoved)
    );
    assert_eq!(
        code(control.remove_participant("team", "bob").await),
        Code::NotFound
    );
    assert_eq!(control.list_participants("team").await.unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_change_live() {
    let server = start().await;
    let control = control(&server).await;
    let (alice, mut alice_events) = join(&server, "live", "alice").await;
    let (_bob, mut bob_events) = join(&server, "live", "bob").await;
    let video = alice
        .publish_track(TrackOptions::video("cam", Codec::Vp8, 320, 180))
        .await
        .unwrap();
    let track_sid = video.sid().to_owned();
    let sender = send_vp8(video);
    let subscribed = wait_event(&mut bob_events, "bob subscribed", |e| match e {
        RoomEvent::TrackSubscribed { track, .. } => Some(track.sid),
        _ => None,
    })
    .await;
    assert_eq!(subscribed, track_sid);

    // Name and metadata, and bob loses can_subscribe: his subscription ends.
    let updated = control
        .update_participant(UpdateParticipantRequest {
            room: "live".into(),
            identity: "bob".into(),
            name: Some("Bob B.".into()),
            metadata: Some("m1".into()),
            permission: Some(ParticipantPermission {
                can_publish: true,
                can_subscribe: false,
                can_publish_data: true,
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.metadata.as_str()),
        ("Bob B.", "m1")
    );
    // Told of his new permissions, then (through the worker) of the subscription's end.
    let (mut me, mut gone) = (None, None);
    while me.is_none() || gone.is_none() {
        let event = wait_event(
            &mut bob_events,
            "bob's update and unsubscription",
            |e| match e {
                RoomEvent::LocalParticipantUpdated(_) | RoomEvent::TrackUnsubscribed { .. } => {
                    Some(e)
                }
                _ => None,
            },
        )
        .await;
        match event {
            RoomEvent::LocalParticipantUpdated(p) => me = Some(p),
            RoomEvent::TrackUnsubscribed { track_sid, .. } => gone = Some(track_sid),
            _ => {}
        }
    }
    assert_eq!(gone.unwrap(), track_sid);
    assert!(!me.unwrap().permission.unwrap().can_subscribe);
    let seen = wait_event(&mut alice_events, "alice sees bob's update", |e| match e {
        RoomEvent::ParticipantUpdated(p) if p.identity == "bob" && p.name == "Bob B." => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(seen.metadata, "m1");

    // Alice loses can_publish: her track is unpublished for everyone.
    control
        .update_participant(UpdateParticipantRequest {
            room: "live".into(),
            identity: "alice".into(),
            permission: Some(ParticipantPermission {
                can_publish: false,
                can_subscribe: true,
                can_publish_data: true,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let unpublished = wait_event(&mut bob_events, "alice's track unpublished", |e| match e {
        RoomEvent::TrackUnpublished { track_sid, .. } => Some(track_sid),
        _ => None,
    })
    .await;
    assert_eq!(unpublished, track_sid);
    assert!(
        control
            .get_participant("live", "alice")
            .await
            .unwrap()
            .tracks
            .is_empty()
    );
    assert!(
        server
            .rooms()
            .get("live")
            .unwrap()
            .participant("alice")
            .unwrap()
            .tracks
            .is_empty()
    );
    // And she cannot publish again.
    let refused = alice
        .publish_track(TrackOptions::video("cam2", Codec::Vp8, 320, 180))
        .await;
    assert!(refused.is_err(), "{refused:?}");

    assert_eq!(
        code(
            control
                .update_participant(UpdateParticipantRequest {
                    room: "live".into(),
                    identity: "zed".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::NotFound
    );
    sender.abort();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_are_muted_and_subscriptions_changed() {
    let server = start().await;
    let control = control(&server).await;
    let (alice, mut alice_events) = join(&server, "subs", "alice").await;
    let (_bob, mut bob_events) = join_with(&server, "subs", "bob", Grants::default(), false).await;
    let video = alice
        .publish_track(TrackOptions::video("cam", Codec::Vp8, 320, 180))
        .await
        .unwrap();
    let track_sid = video.sid().to_owned();
    let sender = send_vp8(video);

    let sub = |subscribe: bool, sids: Vec<String>| UpdateSubscriptionsRequest {
        room: "subs".into(),
        identity: "bob".into(),
        track_sids: sids,
        subscribe,
    };
    control
        .update_subscriptions(sub(true, vec![track_sid.clone()]))
        .await
        .unwrap();
    let remote = wait_event(&mut bob_events, "bob subscribed", |e| match e {
        RoomEvent::TrackSubscribed { remote, .. } => Some(remote),
        _ => None,
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), remote.read_rtp())
        .await
        .expect("media within 10 s")
        .expect("media");

    let muted = control
        .mute_published_track(MuteRoomTrackRequest {
            room: "subs".into(),
            identity: "alice".into(),
            track_sid: track_sid.clone(),
            muted: true,
        })
        .await
        .unwrap();
    assert!(muted.muted);
    for (who, events) in [("alice", &mut alice_events), ("bob", &mut bob_events)] {
        let (sid, m) = wait_event(events, &format!("{who} told of the mute"), |e| match e {
            RoomEvent::TrackMuted {
                track_sid, muted, ..
            } => Some((track_sid, muted)),
            _ => None,
        })
        .await;
        assert_eq!((sid.as_str(), m), (track_sid.as_str(), true));
    }
    let mute = |identity: &str, sid: &str| MuteRoomTrackRequest {
        room: "subs".into(),
        identity: identity.into(),
        track_sid: sid.into(),
        muted: true,
    };
    assert_eq!(
        code(control.mute_published_track(mute("alice", "TR_nope")).await),
        Code::NotFound
    );
    assert_eq!(
        code(control.mute_published_track(mute("bob", &track_sid)).await),
        Code::NotFound,
        "bob does not publish it"
    );
    assert_eq!(
        code(control.mute_published_track(mute("alice", "")).await),
        Code::InvalidArgument
    );

    control
        .update_subscriptions(sub(false, vec![track_sid.clone()]))
        .await
        .unwrap();
    let gone = wait_event(&mut bob_events, "bob unsubscribed", |e| match e {
        RoomEvent::TrackUnsubscribed { track_sid, .. } => Some(track_sid),
        _ => None,
    })
    .await;
    assert_eq!(gone, track_sid);
    assert_eq!(
        code(
            control
                .update_subscriptions(sub(true, vec!["TR_nope".into()]))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(control.update_subscriptions(sub(true, vec![])).await),
        Code::InvalidArgument
    );
    let mut carol = sub(true, vec![track_sid.clone()]);
    carol.identity = "carol".into();
    assert_eq!(
        code(control.update_subscriptions(carol).await),
        Code::NotFound
    );
    sender.abort();
    server.shutdown().await;
}

async fn next_data(
    events: &mut prism_client::RoomEvents,
    what: &str,
) -> (String, Vec<u8>, String, bool) {
    wait_event(events, what, |e| match e {
        RoomEvent::DataReceived {
            participant_identity,
            payload,
            topic,
            reliable,
        } => Some((participant_identity, payload.to_vec(), topic, reliable)),
        _ => None,
    })
    .await
}

/// Data sent to a participant whose data channel is not open yet is dropped: wait until
/// every participant has received a control-plane message.
async fn wait_data_ready(
    control: &prism_client::control::ControlClient,
    room: &str,
    events: &mut [&mut prism_client::RoomEvents],
) {
    let mut ready = vec![false; events.len()];
    for _ in 0..100 {
        control
            .send_data(SendDataRequest {
                room: room.into(),
                data: b"ready?".to_vec(),
                topic: "ready".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, e) in events.iter_mut().enumerate() {
            while let Some(event) = e.try_recv() {
                if matches!(&event, RoomEvent::DataReceived { topic, .. } if topic == "ready") {
                    ready[i] = true;
                }
            }
        }
        if ready.iter().all(|r| *r) {
            // Drain stragglers of the handshake.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for e in events.iter_mut() {
                while e.try_recv().is_some() {}
            }
            return;
        }
    }
    panic!("data channels never opened: {ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_messages_are_relayed_with_the_senders_identity() {
    let server = start().await;
    let control = control(&server).await;
    let (alice, mut alice_events) = join(&server, "chat", "alice").await;
    let (bob, mut bob_events) = join(&server, "chat", "bob").await;
    let (_carol, mut carol_events) = join(&server, "chat", "carol").await;
    let no_data = Grants {
        can_publish_data: false,
        ..Grants::default()
    };
    let (mute, mut mute_events) = join_with(&server, "chat", "mute", no_data, true).await;
    wait_data_ready(
        &control,
        "chat",
        &mut [
            &mut alice_events,
            &mut bob_events,
            &mut carol_events,
            &mut mute_events,
        ],
    )
    .await;

    // To everyone else, reliable.
    alice
        .publish_data(&b"hello all"[..], true, &[] as &[&str])
        .await
        .unwrap();
    for (who, events) in [
        ("bob", &mut bob_events),
        ("carol", &mut carol_events),
        ("mute", &mut mute_events),
    ] {
        let got = next_data(events, &format!("{who} gets alice's message")).await;
        assert_eq!(
            got,
            ("alice".into(), b"hello all".to_vec(), String::new(), true),
            "{who}"
        );
    }

    // To carol only, with a topic; bob's next message is the one that follows, not this one.
    alice
        .publish_data_with(
            &b"psst"[..],
            DataOptions {
                destination_identities: vec!["carol".into()],
                topic: "dm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = next_data(&mut carol_events, "carol gets the direct message").await;
    assert_eq!(got, ("alice".into(), b"psst".to_vec(), "dm".into(), true));

    // From the control plane: an empty sender identity.
    control
        .send_data(SendDataRequest {
            room: "chat".into(),
            data: b"from ops".to_vec(),
            topic: "ops".into(),
            destination_identities: vec!["bob".into(), "alice".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let got = next_data(&mut bob_events, "bob gets the server's message").await;
    assert_eq!(
        got,
        (String::new(), b"from ops".to_vec(), "ops".into(), true),
        "bob never got the direct message to carol"
    );
    let got = next_data(&mut alice_events, "alice gets the server's message").await;
    assert_eq!(got.1, b"from ops");

    // Lossy: unordered, no retransmission; on loopback it arrives (retried in case the very
    // first lossy message races the channel's opening).
    let mut received = None;
    for i in 0..20u8 {
        bob.publish_data(vec![i], false, &["alice"]).await.unwrap();
        if let Ok(got) = tokio::time::timeout(
            Duration::from_millis(300),
            next_data(&mut alice_events, "lossy"),
        )
        .await
        {
            received = Some(got);
            break;
        }
    }
    let got = received.expect("a lossy message arrives");
    assert_eq!((got.0.as_str(), got.3), ("bob", false));

    // Without can_publish_data nothing is relayed, and the sender is told.
    mute.publish_data(&b"shh"[..], true, &[] as &[&str])
        .await
        .unwrap();
    let refused = wait_event(&mut mute_events, "mute told", |e| match e {
        RoomEvent::Error(ClientError::Server {
            request, message, ..
        }) if request == "data" => Some(message),
        _ => None,
    })
    .await;
    assert!(refused.contains("may not publish data"), "{refused}");
    control
        .send_data(SendDataRequest {
            room: "chat".into(),
            data: b"marker".to_vec(),
            destination_identities: vec!["carol".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let got = next_data(&mut carol_events, "carol's next message").await;
    assert_eq!(got.1, b"marker", "mute's message was not relayed");

    // Errors.
    let send = |room: &str, data: Vec<u8>| SendDataRequest {
        room: room.into(),
        data,
        ..Default::default()
    };
    assert_eq!(
        code(control.send_data(send("nope", b"x".to_vec())).await),
        Code::NotFound
    );
    assert_eq!(
        code(control.send_data(send("chat", vec![0; 64 * 1024])).await),
        Code::InvalidArgument
    );
    let mut bad_kind = send("chat", b"x".to_vec());
    bad_kind.kind = 9;
    assert_eq!(
        code(control.send_data(bad_kind).await),
        Code::InvalidArgument
    );
    assert!(matches!(
        alice
            .publish_data(vec![0; 20 * 1024], true, &[] as &[&str])
            .await,
        Err(ClientError::InvalidArgument(_))
    ));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_room_streams_the_rooms_events_until_it_closes() {
    use futures::StreamExt;
    let server = start().await;
    let control = control(&server).await;
    assert_eq!(
        code(control.watch_room("nope").await.map(|_| ())),
        Code::NotFound
    );
    control
        .create_room(CreateRoomRequest {
            name: "watched".into(),
            empty_timeout: 60,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = Box::pin(control.watch_room("watched").await.unwrap());
    let (alice, _events) = join(&server, "watched", "alice").await;
    alice.leave().await.unwrap();
    control.delete_room("watched").await.unwrap();
    let mut seen = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            let event = event.expect("event");
            seen.push(event.event.clone());
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "the stream ends with the room; saw {seen:?}"
    );
    // participant_updated (ACTIVE) may or may not come before the leave, depending on timing.
    seen.retain(|e| e != "participant_updated");
    assert_eq!(
        seen,
        ["participant_joined", "participant_left", "room_finished"]
    );

    // Raw: missing credentials on a stream are refused too.
    let mut raw = raw_client(&server).await;
    let e = raw
        .watch_room(with_token(
            WatchRoomRequest {
                room: "watched".into(),
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_plain_http_share_the_port() {
    let server = start().await;
    let channel = tonic::transport::Endpoint::from_shared(http_url(&server))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "prism.control.RoomService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Plain HTTP still works on the same port.
    let body = reqwest::get(format!("{}/healthz", http_url(&server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    let missing = reqwest::get(format!("{}/nope", http_url(&server)))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_timeout_counts_from_the_last_leave_and_deleted_rooms_leave_no_timer() {
    let server = start().await;
    let control = control(&server).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    control
        .create_room(CreateRoomRequest {
            name: "timed".into(),
            empty_timeout: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Someone comes and goes 1.2 s into the 2 s: the room now has 2 s from their leave.
    let mut c = RawClient::connect(&server, &token("timed", "visitor"))
        .await
        .unwrap();
    c.wait_for(|m| {
        matches!(m, prism_proto::signal::signal_response::Message::Join(_)).then_some(())
    })
    .await;
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.rooms().participant_count() == 0
        })
        .await
    );
    let left = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        server.rooms().get("timed").is_some(),
        "closed before 2 s from the last leave"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.rooms().get("timed").is_none()
        })
        .await
    );
    assert!(left.elapsed() >= Duration::from_millis(1500));

    // A deleted room's timer does not outlive it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = metrics.num_alive_tasks();
    control
        .create_room(CreateRoomRequest {
            name: "long".into(),
            empty_timeout: 3600,
            ..Default::default()
        })
        .await
        .unwrap();
    control.delete_room("long").await.unwrap();
    let settled = eventually(Duration::from_secs(5), || async {
        metrics.num_alive_tasks() <= before
    })
    .await;
    assert!(
        settled,
        "tasks: {before} before, {} after",
        metrics.num_alive_tasks()
    );
    server.shutdown().await;
}
