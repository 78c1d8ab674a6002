//! Readiness and drain mode: readiness is true on a healthy node, false while it drains, and
//! true again after; joins during the drain are refused with a clear reason while the
//! participants already in keep their session.

mod common;

use std::time::Duration;

use common::*;
use prism_server::auth::Grants;

async fn get(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or_default();
    (status, body)
}

async fn drain(
    base: &str,
    method: reqwest::Method,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}/admin/drain"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or_default();
    (status, body)
}

fn admin_token() -> String {
    let grants = Grants {
        room_admin: true,
        ..Grants::default()
    };
    token_with("", "operator", grants, Duration::from_secs(60))
}

#[tokio::test]
async fn readiness_follows_drain_mode_and_joins_are_refused_meanwhile() {
    let server = start().await;
    let base = http_url(&server);
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(
        (status, &body["ready"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );

    // Someone is in a room before the drain.
    let (inside, _events) = join(&server, "drain", "inside").await;

    // Only a node-wide admin may drain.
    assert_eq!(drain(&base, reqwest::Method::PUT, None).await.0, 401);
    let joiner = token("drain", "someone");
    assert_eq!(
        drain(&base, reqwest::Method::PUT, Some(&joiner)).await.0,
        403
    );
    let room_admin = token_with(
        "drain",
        "room-admin",
        Grants {
            room_admin: true,
            ..Grants::default()
        },
        Duration::from_secs(60),
    );
    assert_eq!(
        drain(&base, reqwest::Method::PUT, Some(&room_admin))
            .await
            .0,
        403
    );

    let (status, body) = drain(&base, reqwest::Method::PUT, Some(&admin_token())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["draining"], true);
    assert_eq!(body["participants"], 1);
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(body["reasons"].to_string().contains("draining"), "{body}");

    // A join is refused before the WebSocket upgrade, with the reason.
    let (status, body) = get(&format!(
        "{base}/rtc?access_token={}",
        token("drain", "late")
    ))
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "draining");
    assert!(body["message"].as_str().unwrap().contains("draining"));
    // The SDK reports it too, and the participant already inside is still there.
    let refused =
        prism_client::Room::connect(&base, &token("drain", "late"), Default::default()).await;
    assert!(refused.is_err(), "joining a draining node fails");
    assert_eq!(server.rooms().participant_count(), 1);

    let (status, body) = drain(&base, reqwest::Method::DELETE, Some(&admin_token())).await;
    assert_eq!(
        (status, &body["draining"]),
        (200, &serde_json::json!(false)),
        "{body}"
    );
    let (status, _) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200);
    let (_after, _e) = join(&server, "drain", "after").await;
    assert_eq!(server.rooms().participant_count(), 2);
    let _ = inside.leave().await;
}
