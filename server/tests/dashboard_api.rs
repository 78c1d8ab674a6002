//! `/api/dashboard`, the live dashboard's data: refused without a node-wide admin token, and
//! with one it shows a call as the workers hold it (who publishes what, who receives it, bytes
//! flowing), joined with the rooms' rosters.

mod common;

use std::time::Duration;

use common::*;
use prism_server::auth::Grants;

async fn get(server: &prism_server::Server, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}/api/dashboard", http_url(server)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_data_needs_an_admin_token_and_shows_the_call() {
    let server = start().await;
    assert_eq!(get(&server, None).await.status(), 401);
    let participant = token("dash", "eve");
    assert_eq!(get(&server, Some(&participant)).await.status(), 403);

    let _call = video_call(&server, "dash", "alice", "bob").await;

    let admin = token_with(
        "",
        "ops",
        Grants {
            room_admin: true,
            ..Grants::default()
        },
        Duration::from_secs(60),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (flowing, last) = loop {
        let response = get(&server, Some(&admin)).await;
        assert_eq!(response.status(), 200);
        let snapshot: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
        if shows_media_flowing(&snapshot) || tokio::time::Instant::now() >= deadline {
            break (shows_media_flowing(&snapshot), snapshot);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        flowing,
        "the dashboard never showed media flowing: {last:#}"
    );
    assert_eq!(last["workers"].as_array().map(Vec::len), Some(2));
    server.shutdown().await;
}

/// Alice publishes with bytes arriving, Bob receives her camera with bytes going out.
fn shows_media_flowing(snapshot: &serde_json::Value) -> bool {
    let room = &snapshot["rooms"][0];
    let people = room["participants"].as_array().cloned().unwrap_or_default();
    let find = |who: &str| people.iter().find(|p| p["identity"] == who).cloned();
    let (Some(alice), Some(bob)) = (find("alice"), find("bob")) else {
        return false;
    };
    let layer_bytes = alice["published"][0]["layers"][0]["bytes"]
        .as_u64()
        .unwrap_or(0);
    let received = &bob["subscribed"][0];
    room["name"] == "dash"
        && layer_bytes > 0
        && received["publisher"] == "alice"
        && received["name"] == "camera"
        && received["bytes"].as_u64().unwrap_or(0) > 0
        && received["layer"].is_string()
}
