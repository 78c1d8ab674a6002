//! What the browser side relies on, checked without a browser: the demo page and SDK served
//! from the binary, the dev token endpoint (and its absence with real keys), a full room
//! refused before the upgrade, and `trackSettings` on the signaling.

mod common;

use std::time::Duration;

use common::*;
use prism_proto::signal::{
    ErrorCode, SignalRequest, UpdateTrackSettings, VideoQuality, signal_request::Message as Req,
    signal_response::Message as Resp,
};
use prism_server::auth::TokenVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Error as WsError;

/// A plain HTTP/1.1 exchange: status, lower-cased headers, body.
async fn http(
    server: &prism_server::Server,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_demo_page_and_sdk_are_served_and_the_dev_token_endpoint_mints_tokens() {
    let server = start().await;
    let (status, head, body) = http(&server, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("<title>Prism"), "{body}");
    let (status, head, body) = http(&server, "GET", "/sdk/index.js", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("export { connect, Room"));

    let request = r#"{"room":"web","identity":"alice-1","name":"Alice"}"#;
    let (status, _, body) = http(&server, "POST", "/api/token", request).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = json["token"].as_str().unwrap();
    let claims = TokenVerifier::new(&test_config().keys)
        .verify(token)
        .unwrap();
    assert_eq!(
        (
            claims.room.as_str(),
            claims.sub.as_str(),
            claims.name.as_str()
        ),
        ("web", "alice-1", "Alice")
    );
    // The token joins.
    let mut client = RawClient::connect(&server, token).await.unwrap();
    client
        .wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;

    for bad in [
        r#"{"room":"","identity":"x"}"#,
        r#"{"room":"r"}"#,
        "not json",
        r#"{"room":"r","identity":"x","admin":true}"#,
    ] {
        let (status, _, body) = http(&server, "POST", "/api/token", bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
}

#[tokio::test]
async fn no_token_endpoint_with_real_keys() {
    let mut config = test_config();
    config.keys = [(
        "prod".to_owned(),
        "0123456789abcdef0123456789abcdef".to_owned(),
    )]
    .into();
    let server = start_with(config).await;
    let request = r#"{"room":"web","identity":"alice"}"#;
    let (status, _, _) = http(&server, "POST", "/api/token", request).await;
    assert_eq!(
        status, 404,
        "a public token mint must not exist with real keys"
    );
    // The page itself still works (it asks for ?token=...).
    assert_eq!(http(&server, "GET", "/", "").await.0, 200);
}

#[tokio::test]
async fn a_full_room_is_refused_before_the_upgrade() {
    let mut config = test_config();
    config.room.max_participants = 1;
    let server = start_with(config).await;
    let mut first = RawClient::connect(&server, &token("small", "a"))
        .await
        .unwrap();
    first
        .wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    let url = format!(
        "ws://{}/rtc?access_token={}",
        server.http_addr(),
        token("small", "b")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403);
            let body: serde_json::Value =
                serde_json::from_slice(&response.body().clone().unwrap_or_default()).unwrap();
            assert_eq!(body["error"], "room_full");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same identity rejoining replaces itself: not refused.
    let mut again = RawClient::connect(&server, &token("small", "a"))
        .await
        .unwrap();
    again
        .wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
}

#[tokio::test]
async fn track_settings_for_an_unknown_subscription_are_an_error() {
    let server = start().await;
    let mut client = RawClient::connect(&server, &token("settings", "a"))
        .await
        .unwrap();
    client
        .wait_for(|m| matches!(m, Resp::Join(_)).then_some(()))
        .await;
    client
        .send(&SignalRequest {
            message: Some(Req::TrackSettings(UpdateTrackSettings {
                track_sid: "TR_nope".into(),
                quality: VideoQuality::Low as i32,
                width: 320,
                height: 180,
                paused: false,
                pinned: false,
            })),
        })
        .await;
    let error = client
        .wait_for(|m| match m {
            Resp::Error(e) => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(error.code(), ErrorCode::NotFound);
    assert_eq!(error.request, "trackSettings");
}
