//! WHIP ingest and WHEP playback end to end on loopback: plain HTTP (reqwest) and WebRTC peers
//! built directly with the `webrtc` crate, no Prism signaling. Publish over WHIP, play over
//! WHEP, trickle candidates by PATCH, switch a viewer's source when its publisher leaves,
//! DELETE, and nothing left behind.

mod common;
#[path = "common/whip_peer.rs"]
mod whip_peer;

use std::time::{Duration, Instant};

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use whip_peer::*;
// Not common::send_vp8 (that one drives an SDK track).
use whip_peer::send_vp8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_whip_play_over_whep_trickle_switch_and_delete() {
    let _turn = exclusive().await;
    let server = start().await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    // No idle pooled connections: their tasks would outlive the requests.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        // No idle timeout: hyper-util then spawns no pool reaper task, which would outlive
        // the client by up to its interval and fail the task count of the leak checks.
        .pool_idle_timeout(None)
        .build()
        .expect("http client");
    let room = "whip room";
    let path_room = "whip%20room";

    // --- WHIP publisher A, its candidates trickled by PATCH instead of in the offer.
    let mut a = Peer::new().await;
    let (a_track, a_ssrc) = a.add_vp8().await;
    let full = a.offer(true).await;
    let a_candidates = candidates_of(&full);
    assert!(
        !a_candidates.is_empty(),
        "the publisher gathered candidates"
    );
    let stripped: String = full
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .collect();
    let pub_token = token(room, "broadcaster-a");
    let created_a = post(
        &http,
        &server,
        &format!("/whip/{path_room}"),
        &pub_token,
        stripped,
    )
    .await;
    assert!(
        created_a
            .location
            .starts_with(&format!("/whip/{path_room}/")),
        "{}",
        created_a.location
    );
    let session_a = format!("{}{}", http_url(&server), created_a.location);

    // A mismatched ETag is refused; the right one (or none) is accepted.
    let mut frag = String::from("a=ice-ufrag:");
    frag.push_str(
        full.lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .expect("ufrag"),
    );
    frag.push_str("\r\na=ice-pwd:");
    frag.push_str(
        full.lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-pwd:"))
            .expect("pwd"),
    );
    frag.push_str("\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n");
    for c in &a_candidates {
        frag.push_str(c);
        frag.push_str("\r\n");
    }
    frag.push_str("a=end-of-candidates\r\n");
    let stale = http
        .patch(&session_a)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "\"not-the-etag\"")
        .body(frag.clone())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(stale.status(), 412);
    let trickled = http
        .patch(&session_a)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", created_a.etag.as_str())
        .body(frag)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(trickled.status(), 204, "{:?}", trickled.text().await);

    a.accept(created_a.answer).await;
    a.connected().await;
    let a_sender = send_vp8(a_track, a_ssrc, 640);

    // The publisher is a participant with a published video track.
    let published = publishes(&server, room, "broadcaster-a", 1).await;
    assert!(published, "broadcaster-a publishes one track");

    // --- WHEP viewer: recvonly audio + video, gathered offer.
    let mut v = Peer::new().await;
    v.add_recvonly(RtpCodecKind::Audio).await;
    v.add_recvonly(RtpCodecKind::Video).await;
    let offer = v.offer(true).await;
    let view_token = token(room, "viewer");
    let created_v = post(
        &http,
        &server,
        &format!("/whep/{path_room}"),
        &view_token,
        offer,
    )
    .await;
    assert!(
        created_v
            .location
            .starts_with(&format!("/whep/{path_room}/"))
    );
    v.accept(created_v.answer).await;
    v.connected().await;
    let video = loop {
        let track = tokio::time::timeout(Duration::from_secs(10), v.tracks.recv())
            .await
            .expect("a track within 10 s")
            .expect("track");
        if track.kind().await == RtpCodecKind::Video {
            break track;
        }
    };
    let (mut packets, counter) = count_packets(video);
    let first = wait_until(&mut packets, "viewer receives A's keyframes", |r| {
        r.packets >= 30 && !r.widths.is_empty()
    })
    .await;
    assert_eq!(first.widths, vec![640], "A's video");
    assert_eq!(
        server.rooms().get(room).map(|r| r.participant_count()),
        Some(2),
        "publisher and viewer are participants"
    );

    // --- A second publisher B; A leaves: the viewer's same track switches to B without any
    // renegotiation (none is possible).
    let mut b = Peer::new().await;
    let (b_track, b_ssrc) = b.add_vp8().await;
    let offer = b.offer(true).await;
    let created_b = post(
        &http,
        &server,
        &format!("/whip/{path_room}"),
        &token(room, "broadcaster-b"),
        offer,
    )
    .await;
    b.accept(created_b.answer).await;
    b.connected().await;
    let b_sender = send_vp8(b_track, b_ssrc, 320);

    let deleted = http.delete(&session_a).send().await.expect("DELETE");
    assert_eq!(deleted.status(), 200);
    a_sender.abort();
    assert!(
        server
            .rooms()
            .get(room)
            .is_some_and(|r| r.participant("broadcaster-a").is_none()),
        "DELETE removed the publisher"
    );
    let again = http.delete(&session_a).send().await.expect("DELETE");
    assert_eq!(again.status(), 404, "a deleted session is gone");
    let after_a = packets.borrow().packets;
    let switched = wait_until(&mut packets, "viewer receives B after A left", |r| {
        r.packets >= after_a + 30 && r.widths.last() == Some(&320)
    })
    .await;
    assert_eq!(switched.widths, vec![640, 320], "A's video, then B's");
    assert_eq!(
        switched.ssrc, first.ssrc,
        "the viewer's stream keeps its SSRC"
    );

    // --- Everything ends with DELETE.
    for location in [created_v.location, created_b.location] {
        let r = http
            .delete(format!("{}{location}", http_url(&server)))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(r.status(), 200);
    }
    b_sender.abort();
    for p in [a, b, v] {
        let _ = p.pc.close().await;
    }
    counter.abort();
    drop(http);
    let started = Instant::now();
    assert_nothing_left_behind(
        &server,
        Duration::from_secs(10),
        tasks_before + PEER_TASK_SLACK,
        "after DELETE",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_follows_one_participant_and_a_dead_session_is_removed() {
    let _turn = exclusive().await;
    let mut config = test_config();
    config.room.join_timeout_secs = 2;
    let server = start_with(config).await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    // No idle pooled connections: their tasks would outlive the requests.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        // No idle timeout: hyper-util then spawns no pool reaper task, which would outlive
        // the client by up to its interval and fail the task count of the leak checks.
        .pool_idle_timeout(None)
        .build()
        .expect("http client");
    let room = "follow";

    // Two publishers; the viewer follows "b" only, so its one video section carries b's
    // track although a published first.
    let mut senders = Vec::new();
    let mut peers = Vec::new();
    for (identity, width) in [("a", 640), ("b", 320)] {
        let mut p = Peer::new().await;
        let (track, ssrc) = p.add_vp8().await;
        let offer = p.offer(true).await;
        let created = post(
            &http,
            &server,
            "/whip/follow",
            &token(room, identity),
            offer,
        )
        .await;
        p.accept(created.answer).await;
        p.connected().await;
        senders.push(send_vp8(track, ssrc, width));
        peers.push(p);
    }
    let rooms = server.rooms().clone();
    let both = eventually(Duration::from_secs(10), || {
        let rooms = rooms.clone();
        async move {
            rooms.get(room).is_some_and(|r| {
                ["a", "b"]
                    .iter()
                    .all(|i| r.participant(i).is_some_and(|p| p.tracks.len() == 1))
            })
        }
    })
    .await;
    assert!(both, "a and b publish");
    let mut v = Peer::new().await;
    v.add_recvonly(RtpCodecKind::Video).await;
    let offer = v.offer(true).await;
    let created = post(
        &http,
        &server,
        "/whep/follow?participant=b",
        &token(room, "v"),
        offer,
    )
    .await;
    v.accept(created.answer).await;
    v.connected().await;
    let track = tokio::time::timeout(Duration::from_secs(10), v.tracks.recv())
        .await
        .expect("track")
        .expect("track");
    let (mut packets, counter) = count_packets(track);
    let got = wait_until(&mut packets, "follower receives b's keyframes", |r| {
        r.packets >= 60 && !r.widths.is_empty()
    })
    .await;
    assert_eq!(got.widths, vec![320], "only b's video, never a's");
    let r = server.rooms().get(room).expect("room");
    assert!(
        r.participants()
            .iter()
            .any(|p| p.identity.starts_with("v#")),
        "the viewer is a participant named after its token's identity"
    );

    // A viewer whose peer goes away without DELETE is removed when its connection fails.
    let _ = v.pc.close().await;
    for s in senders {
        s.abort();
    }
    for p in peers {
        let _ = p.pc.close().await;
    }
    let rooms = server.rooms().clone();
    let gone = eventually(Duration::from_secs(30), || {
        let rooms = rooms.clone();
        async move { rooms.participant_count() == 0 }
    })
    .await;
    assert!(gone, "sessions whose peers left are removed");
    let stale = http
        .delete(format!("{}{}", http_url(&server), created.location))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(stale.status(), 404);
    counter.abort();
    drop(http);
    assert_nothing_left_behind(
        &server,
        Duration::from_secs(10),
        tasks_before + PEER_TASK_SLACK,
        "after peers left",
    )
    .await;
    server.shutdown().await;
}
