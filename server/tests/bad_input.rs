//! Bad input never takes the server or a room down: refused tokens before the upgrade,
//! malformed signaling answered with errors, garbage datagrams dropped and counted.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use prism_proto::signal::{
    ErrorCode, Ping, SessionDescription, SignalRequest, UpdateSubscriptionRequest,
    signal_request::Message as Req, signal_response::Message as Resp,
};
use prism_server::auth::{AccessToken, Grants};
use prism_server::config::DEV_API_KEY;
use tokio_tungstenite::tungstenite::Error as WsError;

async fn refused_status(server: &prism_server::Server, query: &str) -> (u16, serde_json::Value) {
    let url = format!("ws://{}/rtc{query}", server.http_addr());
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).expect("JSON error body");
            (response.status().as_u16(), json)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connection was accepted"),
    }
}

#[tokio::test]
async fn missing_forged_and_expired_tokens_get_401() {
    let server = start().await;
    let (status, body) = refused_status(&server, "").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthenticated");

    let forged = AccessToken::new(DEV_API_KEY, "another-secret-that-is-long-enough-123")
        .identity("mallory")
        .room("r")
        .to_jwt()
        .unwrap();
    let (status, body) = refused_status(&server, &format!("?access_token={forged}")).await;
    assert_eq!(status, 401, "{body}");

    // Expired long ago (well past the verifier's leeway), and not a JWT at all.
    let claims_exp_in_past = {
        let mut c = AccessToken::new(DEV_API_KEY, prism_server::config::DEV_API_SECRET)
            .identity("old")
            .room("r")
            .claims_at(1_000_000);
        c.exp = 1_000_060;
        prism_server::auth::sign(&c, prism_server::config::DEV_API_SECRET).unwrap()
    };
    for t in [claims_exp_in_past, "not-a-jwt".to_owned()] {
        let (status, body) = refused_status(&server, &format!("?access_token={t}")).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("invalid access token")
        );
    }

    let no_join = token_with(
        "r",
        "x",
        Grants {
            room_join: false,
            ..Grants::default()
        },
        Duration::from_secs(60),
    );
    let (status, _) = refused_status(&server, &format!("?access_token={no_join}")).await;
    assert_eq!(status, 403);
    assert_eq!(
        server.rooms().room_count(),
        0,
        "refused joins leave no room behind"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_messages_get_errors_and_the_session_goes_on() {
    let server = start().await;
    let mut a = RawClient::connect(&server, &token("room-a", "alice"))
        .await
        .unwrap();
    a.wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    let mut b = RawClient::connect(&server, &token("room-b", "bob"))
        .await
        .unwrap();
    b.wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;

    let expect_error = |code: ErrorCode| {
        move |m: Resp| match m {
            Resp::Error(e) => {
                assert_eq!(e.code, code as i32, "{e:?}");
                assert!(!e.message.is_empty());
                Some(e.message)
            }
            _ => None,
        }
    };

    a.send_text("this is not json").await;
    let message = a.wait_for(expect_error(ErrorCode::BadRequest)).await;
    assert!(message.contains("malformed"), "{message}");

    a.send_text(r#"{"offer":{"sdp":42}}"#).await;
    a.wait_for(expect_error(ErrorCode::BadRequest)).await;

    a.send_text("{}").await;
    let message = a.wait_for(expect_error(ErrorCode::BadRequest)).await;
    assert!(message.contains("empty message"), "{message}");

    a.send(&SignalRequest {
        message: Some(Req::Offer(SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0\r\nthis is not sdp\r\n".into(),
            id: 1,
        })),
    })
    .await;
    a.wait_for(expect_error(ErrorCode::InvalidSdp)).await;

    a.send(&SignalRequest {
        message: Some(Req::Answer(SessionDescription {
            r#type: "answer".into(),
            sdp: "v=0\r\n".into(),
            id: 7,
        })),
    })
    .await;
    a.wait_for(expect_error(ErrorCode::InvalidState)).await;

    a.send(&SignalRequest {
        message: Some(Req::Subscription(UpdateSubscriptionRequest {
            track_sids: vec!["TR_missing".into()],
            subscribe: true,
        })),
    })
    .await;
    let message = a.wait_for(expect_error(ErrorCode::NotFound)).await;
    assert!(message.contains("TR_missing"), "{message}");

    // Both sessions, in both rooms, still answer.
    for client in [&mut a, &mut b] {
        client
            .send(&SignalRequest {
                message: Some(Req::Ping(Ping { timestamp: 99 })),
            })
            .await;
        let ts = client
            .wait_for(|m| match m {
                Resp::Pong(p) => Some(p.timestamp),
                _ => None,
            })
            .await;
        assert_eq!(ts, 99);
    }
    assert_eq!(server.rooms().participant_count(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_subscribe_only_token_cannot_publish() {
    let server = start().await;
    let viewer = token_with(
        "room",
        "viewer",
        Grants {
            can_publish: false,
            ..Grants::default()
        },
        Duration::from_secs(60),
    );
    let mut c = RawClient::connect(&server, &viewer).await.unwrap();
    c.wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    c.send(&SignalRequest {
        message: Some(Req::Offer(SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n".into(),
            id: 1,
        })),
    })
    .await;
    let code = c
        .wait_for(|m| match m {
            Resp::Error(e) => Some(e.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::NotAllowed as i32);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_datagrams_are_dropped_and_counted() {
    let server = start().await;
    let mut c = RawClient::connect(&server, &token("room", "alice"))
        .await
        .unwrap();
    c.wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = 0u64;
    for w in server.transport().workers() {
        let to = w.bound;
        for i in 0..200u32 {
            // RTP-looking, DTLS-looking, STUN-looking with an unknown ufrag, and random bytes.
            let mut datagram = vec![0u8; 20 + (i as usize % 200)];
            for (j, b) in datagram.iter_mut().enumerate() {
                *b = (i as usize * 31 + j * 7) as u8;
            }
            datagram[0] = [0x80, 0x16, 0x00, 0xff][i as usize % 4];
            if datagram[0] == 0 {
                datagram[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            }
            socket.send_to(&datagram, to).await.unwrap();
            sent += 1;
        }
    }
    let counted = eventually(Duration::from_secs(5), || async {
        let dropped: u64 = server
            .transport()
            .workers()
            .iter()
            .map(|w| {
                w.stats.unroutable_datagrams.load(Ordering::Relaxed)
                    + w.stats.rejected_datagrams.load(Ordering::Relaxed)
            })
            .sum();
        dropped >= sent
    })
    .await;
    assert!(counted, "every garbage datagram is counted as dropped");

    c.send(&SignalRequest {
        message: Some(Req::Ping(Ping { timestamp: 1 })),
    })
    .await;
    c.wait_for(|m| matches!(m, Resp::Pong(_)).then_some(()))
        .await;
    server.shutdown().await;
}
