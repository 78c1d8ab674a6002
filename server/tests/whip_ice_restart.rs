//! ICE restart by PATCH (RFC 9725 section 4.4.2) end to end on loopback, with WebRTC peers
//! built directly with the `webrtc` crate: a WHIP publisher restarts ICE from a new UDP socket
//! (a network change) and its media keeps reaching a WHEP viewer; the viewer then restarts
//! ICE on its own session (same socket) and keeps receiving. The server answers each restart
//! with new credentials of its own, routes the new ufrag and the client's new address, and
//! drops the previous generation's routes once the new one is connected. Entity tags: a
//! restart with a stale `If-Match` is refused (412) and changes nothing; after a restart the
//! old tag is stale for trickle too.

mod common;
#[path = "common/whip_peer.rs"]
mod whip_peer;

use std::time::Duration;

use common::*;
use prism_server::Server;
use prism_server::transport::WorkerSnapshot;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use whip_peer::*;
// Not common::send_vp8 (that one drives an SDK track).
use whip_peer::send_vp8;

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
}

/// The UDP ports of a description's candidates.
fn ports_of(sdp: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = candidates_of(sdp)
        .iter()
        .filter_map(|c| c.split_whitespace().nth(5)?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `sdp` with its ICE credentials replaced: what a WHIP client applies as the answer to its
/// restart offer (the previous answer, with the server's new credentials from the PATCH
/// response; nothing else is renegotiated).
fn with_ice(sdp: &str, ufrag: &str, pwd: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            let ending = &line[line.trim_end().len()..];
            if line.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}{ending}")
            } else if line.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}{ending}")
            } else {
                line.to_owned()
            }
        })
        .collect()
}

/// The trickle-ice-sdpfrag a client PATCHes: its credentials and candidates (RFC 8840).
fn sdpfrag(ufrag: &str, pwd: &str, candidates: &[String]) -> String {
    let mut frag = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    );
    for c in candidates {
        frag.push_str(c);
        frag.push_str("\r\n");
    }
    frag.push_str("a=end-of-candidates\r\n");
    frag
}

struct Patched {
    status: u16,
    etag: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn patch(http: &reqwest::Client, url: &str, if_match: &str, body: String) -> Patched {
    let response = http
        .patch(url)
        .header("content-type", SDPFRAG)
        .header("if-match", if_match)
        .body(body)
        .send()
        .await
        .expect("PATCH");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, content_type) = (header("etag"), header("content-type"));
    let status = response.status().as_u16();
    let body = response.text().await.expect("PATCH body");
    Patched {
        status,
        etag,
        content_type,
        body,
    }
}

/// Restarts ICE on the client side: an offer with new credentials, applied locally, then the
/// local description once it names the new ufrag and has gathered a candidate (on a port not
/// in `old_ports` when given: the peer moved to a new socket). Returns that description.
async fn restart_offer(peer: &Peer, old_ufrag: &str, old_ports: Option<&[u16]>) -> String {
    let offer = peer
        .pc
        .create_offer(Some(RTCOfferOptions { ice_restart: true }))
        .await
        .expect("restart offer");
    assert_ne!(
        attribute(&offer.sdp, "ice-ufrag"),
        Some(old_ufrag),
        "a restart offer has new credentials"
    );
    peer.pc
        .set_local_description(offer)
        .await
        .expect("local restart offer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(local) = peer.pc.local_description().await {
            let ports = ports_of(&local.sdp);
            // (The `webrtc` crate's description still lists the closed socket's candidate
            // beside the new one.)
            let gathered = !ports.is_empty()
                && old_ports.is_none_or(|old| ports.iter().any(|p| !old.contains(p)));
            if attribute(&local.sdp, "ice-ufrag") != Some(old_ufrag) && gathered {
                return local.sdp;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted peer gathered no new candidate within 5 s: {:?}",
            peer.pc.local_description().await.map(|d| d.sdp)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn routes(server: &Server) -> (usize, usize) {
    server
        .worker_snapshots()
        .await
        .iter()
        .fold((0, 0), |(u, a), s: &WorkerSnapshot| {
            (u + s.ufrag_routes, a + s.address_routes)
        })
}

/// Waits until the workers hold exactly `ufrags` ufrag routes and `addrs` address routes.
async fn wait_routes(server: &Server, ufrags: usize, addrs: usize, what: &str) {
    let settled = eventually(Duration::from_secs(10), || async {
        routes(server).await == (ufrags, addrs)
    })
    .await;
    assert!(
        settled,
        "{what}: expected {ufrags} ufrag and {addrs} address routes, got {:?}",
        routes(server).await
    );
}

/// What the server's 200 to a restart PATCH must be; returns its new ufrag and password.
fn restart_answer(patched: &Patched, old_etag: &str, old_ufrag: &str) -> (String, String) {
    assert_eq!(patched.status, 200, "restart PATCH: {}", patched.body);
    assert_eq!(patched.content_type.as_deref(), Some(SDPFRAG));
    let etag = patched
        .etag
        .as_deref()
        .expect("a restart answers a new ETag");
    assert_ne!(etag, old_etag, "the ICE session's entity tag changes");
    let ufrag = attribute(&patched.body, "ice-ufrag").expect("server ufrag");
    let pwd = attribute(&patched.body, "ice-pwd").expect("server pwd");
    assert_ne!(ufrag, old_ufrag, "the server changes its credentials too");
    assert!(
        !candidates_of(&patched.body).is_empty(),
        "the server's candidates: {}",
        patched.body
    );
    (ufrag.to_owned(), pwd.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_by_patch_keeps_media_flowing_and_checks_entity_tags() {
    let _turn = exclusive().await;
    let server = start().await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .pool_idle_timeout(None)
        .build()
        .expect("http client");
    let room = "restart";

    // --- A WHIP publisher that moves to a new socket when it restarts ICE.
    let mut p = Peer::moving().await;
    let (track, ssrc) = p.add_vp8().await;
    let offer = p.offer(true).await;
    let p_ufrag = attribute(&offer, "ice-ufrag").expect("ufrag").to_owned();
    let p_ports = ports_of(&offer);
    assert!(!p_ports.is_empty(), "the publisher gathered candidates");
    let created_p = post(&http, &server, "/whip/restart", &token(room, "pub"), offer).await;
    let p_url = format!("{}{}", http_url(&server), created_p.location);
    let server_ufrag = attribute(&created_p.answer, "ice-ufrag")
        .expect("server ufrag")
        .to_owned();
    p.accept(created_p.answer.clone()).await;
    p.connected().await;
    let sender = send_vp8(track, ssrc, 640);
    let published = publishes(&server, room, "pub", 1).await;
    assert!(published, "the publisher publishes its track");

    // --- A WHEP viewer.
    let mut v = Peer::new().await;
    v.add_recvonly(RtpCodecKind::Video).await;
    let offer = v.offer(true).await;
    let v_ufrag = attribute(&offer, "ice-ufrag").expect("ufrag").to_owned();
    let created_v = post(&http, &server, "/whep/restart", &token(room, "view"), offer).await;
    let v_url = format!("{}{}", http_url(&server), created_v.location);
    let v_server_ufrag = attribute(&created_v.answer, "ice-ufrag")
        .expect("server ufrag")
        .to_owned();
    v.accept(created_v.answer.clone()).await;
    v.connected().await;
    let video = tokio::time::timeout(Duration::from_secs(10), v.tracks.recv())
        .await
        .expect("a track within 10 s")
        .expect("track");
    let (mut packets, counter) = count_packets(video);
    wait_until(&mut packets, "the viewer receives the publisher", |r| {
        r.packets >= 30 && r.widths == [640]
    })
    .await;
    // One ufrag and one address per connection.
    wait_routes(&server, 2, 2, "before any restart").await;

    // --- A restart whose If-Match names a stale entity tag is refused and changes nothing:
    // the session, its credentials and its media go on.
    let stale = patch(
        &http,
        &p_url,
        "\"stale-entity-tag\"",
        sdpfrag(
            "unusedufrag",
            "unusedpasswordunusedpassword",
            &candidates_of(&created_p.answer),
        ),
    )
    .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert!(stale.body.contains("precondition_failed"), "{}", stale.body);
    let before = packets.borrow().packets;
    wait_until(&mut packets, "media after the refused restart", |r| {
        r.packets >= before + 30
    })
    .await;
    wait_routes(&server, 2, 2, "after the refused restart").await;

    // --- The publisher restarts ICE from a new socket: PATCH with its new credentials and
    // candidates and `If-Match: *` (RFC 9725 section 4.4.2); 200 with the server's new ones.
    let local = restart_offer(&p, &p_ufrag, Some(&p_ports)).await;
    let new_p_ufrag = attribute(&local, "ice-ufrag").expect("ufrag").to_owned();
    let new_p_pwd = attribute(&local, "ice-pwd").expect("pwd").to_owned();
    let new_ports: Vec<u16> = ports_of(&local)
        .into_iter()
        .filter(|p| !p_ports.contains(p))
        .collect();
    let restarted = patch(
        &http,
        &p_url,
        "*",
        sdpfrag(&new_p_ufrag, &new_p_pwd, &candidates_of(&local)),
    )
    .await;
    let (s_ufrag, s_pwd) = restart_answer(&restarted, &created_p.etag, &server_ufrag);
    let new_etag = restarted.etag.clone().expect("etag");
    let at_restart = packets.borrow().packets;
    p.accept(with_ice(&created_p.answer, &s_ufrag, &s_pwd))
        .await;
    // The old socket is closed: whatever arrives from now on came from the new one.
    let after = wait_until(&mut packets, "media after the publisher's restart", |r| {
        r.packets >= at_restart + 100
    })
    .await;
    assert_eq!(after.widths, vec![640], "the same publisher's video");
    println!(
        "publisher restart: ports {p_ports:?} -> {new_ports:?}; viewer had {before} packets \
         before the refused restart, {at_restart} at the restart, {} after",
        after.packets
    );
    // The new generation is connected: the old ufrag and address are no longer routed.
    wait_routes(&server, 2, 2, "after the publisher's restart").await;

    // --- The old entity tag is stale now, for trickle too; the new one is accepted.
    let trickle = sdpfrag(&new_p_ufrag, &new_p_pwd, &candidates_of(&local));
    let old = patch(&http, &p_url, &created_p.etag, trickle.clone()).await;
    assert_eq!(old.status, 412, "{}", old.body);
    let current = patch(&http, &p_url, &new_etag, trickle).await;
    assert_eq!(current.status, 204, "{}", current.body);
    assert_eq!(current.etag, None, "a trickle PATCH answers no ETag");

    // --- The viewer restarts ICE on its WHEP session, keeping its socket: the address it
    // used before stays routed (it is the new generation's too).
    let local = restart_offer(&v, &v_ufrag, None).await;
    let restarted = patch(
        &http,
        &v_url,
        "*",
        sdpfrag(
            attribute(&local, "ice-ufrag").expect("ufrag"),
            attribute(&local, "ice-pwd").expect("pwd"),
            &candidates_of(&local),
        ),
    )
    .await;
    let (s_ufrag, s_pwd) = restart_answer(&restarted, &created_v.etag, &v_server_ufrag);
    let at_restart = packets.borrow().packets;
    v.accept(with_ice(&created_v.answer, &s_ufrag, &s_pwd))
        .await;
    let after = wait_until(&mut packets, "media after the viewer's restart", |r| {
        r.packets >= at_restart + 100
    })
    .await;
    println!(
        "viewer restart: {at_restart} packets at the restart, {} after",
        after.packets
    );
    wait_routes(&server, 2, 2, "after the viewer's restart").await;
    assert!(
        server
            .rooms()
            .get(room)
            .is_some_and(|r| r.participant_count() == 2),
        "both sessions lived through their restarts"
    );

    // --- DELETE both; nothing is left.
    for url in [&p_url, &v_url] {
        let r = http.delete(url).send().await.expect("DELETE");
        assert_eq!(r.status(), 200);
    }
    sender.abort();
    counter.abort();
    for peer in [p, v] {
        let _ = peer.pc.close().await;
    }
    drop(http);
    assert_nothing_left_behind(
        &server,
        Duration::from_secs(10),
        tasks_before + PEER_TASK_SLACK,
        "after the restarts",
    )
    .await;
    server.shutdown().await;
}
