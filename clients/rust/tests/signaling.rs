//! Signaling behaviour against a scripted stand-in server (no media).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prism_client::{ClientError, ConnectOptions, Room, RoomEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn bad_token_is_unauthorized_with_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let body = "invalid token";
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    });
    let err = Room::connect(&format!("http://{addr}"), "bad", ConnectOptions::default())
        .await
        .unwrap_err();
    match err {
        ClientError::Unauthorized { status, body } => {
            assert_eq!(status, 401);
            assert_eq!(body, "invalid token");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

/// Join, read the client's offer, send garbage (an Error event, not a crash), then see the
/// client leave cleanly.
#[tokio::test]
// The handshake callback's signature is tungstenite's.
#[allow(clippy::result_large_err)]
async fn offer_after_join_malformed_messages_and_leave() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_hdr_async(
            socket,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                let query = req.uri().query().unwrap_or_default().to_owned();
                assert!(query.contains("access_token=tok"), "{query}");
                assert!(query.contains("auto_subscribe=false"), "{query}");
                Ok(resp)
            },
        )
        .await
        .unwrap();
        let join = r#"{"join":{"room":{"sid":"RM_1","name":"r"},
            "participant":{"sid":"PA_me","identity":"me"},"pingIntervalMs":100}}"#;
        ws.send(Message::Text(join.into())).await.unwrap();
        let mut saw_offer = false;
        let mut saw_ping = false;
        let mut saw_leave = false;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if let Some(offer) = value.get("offer") {
                assert_eq!(offer["type"], "offer");
                assert_eq!(offer["id"], 1);
                let sdp = offer["sdp"].as_str().unwrap();
                assert!(sdp.contains("m=application"), "data channel m-line: {sdp}");
                assert!(sdp.contains("a=candidate"), "gathered candidates: {sdp}");
                saw_offer = true;
                ws.send(Message::Text("{not json".into())).await.unwrap();
                ws.send(Message::Text(r#"{"pong":{"timestamp":"1"}}"#.into()))
                    .await
                    .unwrap();
            } else if value.get("ping").is_some() {
                saw_ping = true;
            } else if value.get("leave").is_some() {
                saw_leave = true;
            }
        }
        (saw_offer, saw_ping, saw_leave)
    });

    let options = ConnectOptions {
        auto_subscribe: false,
        ..Default::default()
    };
    let (room, mut events) = Room::connect(&format!("http://{addr}"), "tok", options)
        .await
        .unwrap();
    assert_eq!(room.local_participant().identity, "me");
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(RoomEvent::Error(e)) => return e,
                Some(_) => continue,
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("an error event for the malformed message");
    assert!(matches!(event, ClientError::Protocol(_)), "{event:?}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    room.leave().await.unwrap();
    assert!(room.is_closed());
    let (saw_offer, saw_ping, saw_leave) = server.await.unwrap();
    assert!(saw_offer && saw_ping && saw_leave);
    // The last event is Disconnected, then the stream ends.
    let mut last = None;
    while let Some(e) = events.recv().await {
        last = Some(e);
    }
    assert!(
        matches!(last, Some(RoomEvent::Disconnected { .. })),
        "{last:?}"
    );
}
