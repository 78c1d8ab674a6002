//! The demo conference page and the browser SDK, built into the binary so `prism` serves them
//! with no extra step: the page at `/`, the SDK's ES modules at `/sdk/`. With the development
//! keys, `POST /api/token` mints tokens for the page (see [`Config::token_endpoint_enabled`]).
//!
//! The files are plain JavaScript from `clients/web` (no build step), embedded as they are.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::auth::{AccessToken, Grants};
use crate::config::Config;

/// One embedded file: where it is served, its type, its contents.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! web_file {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("../../../clients/web/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page and the SDK. `every_sdk_module_is_embedded` checks this list against
/// clients/web/src, so a new module cannot be forgotten.
const ASSETS: &[Asset] = &[
    web_file!("/", "demo/index.html", "text/html; charset=utf-8"),
    web_file!("/demo.js", "demo/demo.js", JS),
    web_file!("/demo.css", "demo/demo.css", "text/css; charset=utf-8"),
    web_file!("/sdk/index.js", "src/index.js", JS),
    web_file!("/sdk/room.js", "src/room.js", JS),
    web_file!("/sdk/signaling.js", "src/signaling.js", JS),
    web_file!("/sdk/negotiation.js", "src/negotiation.js", JS),
    web_file!("/sdk/sdp.js", "src/sdp.js", JS),
    web_file!("/sdk/emitter.js", "src/emitter.js", JS),
    web_file!("/sdk/participant.js", "src/participant.js", JS),
    web_file!("/sdk/errors.js", "src/errors.js", JS),
    web_file!("/sdk/stats.js", "src/stats.js", JS),
    web_file!("/sdk/data.js", "src/data.js", JS),
    web_file!("/sdk/quality.js", "src/quality.js", JS),
];

/// Tokens from the demo endpoint last this long.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
const MAX_NAME_LEN: usize = 128;

/// The page, the SDK and (with the dev keys) the token endpoint, as `config` asks.
pub fn routes(config: &Config) -> Router<AppState> {
    let mut router = Router::new();
    if config.web.demo {
        for asset in ASSETS {
            let (content_type, body) = (asset.content_type, asset.body);
            router = router.route(
                asset.path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            // Embedded in the binary: a new build is a new page.
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        body,
                    )
                }),
            );
        }
    }
    if config.token_endpoint_enabled() {
        router = router.route("/api/token", post(mint_token));
    }
    router
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    name: String,
}

/// `POST /api/token {room, identity, name}` → `{"token": "<JWT>"}`, signed with the dev key.
async fn mint_token(
    State(app): State<AppState>,
    request: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(request) = request.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON {{room, identity, name}}: {e}"),
        )
    })?;
    for (field, value, required) in [
        ("room", &request.room, true),
        ("identity", &request.identity, true),
        ("name", &request.name, false),
    ] {
        let value = value.trim();
        if (required && value.is_empty())
            || value.len() > MAX_NAME_LEN
            || value.chars().any(char::is_control)
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field} must be 1 to {MAX_NAME_LEN} bytes of printable text"),
            ));
        }
    }
    let config = app.rooms.config();
    // token_endpoint_enabled() guarantees a dev key is configured; sign with that one.
    let (key, secret) = config
        .keys
        .iter()
        .find(|(_, secret)| secret.as_str() == crate::config::DEV_API_SECRET)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the token endpoint is off",
            )
        })?;
    let token = AccessToken::new(key, secret)
        .identity(request.identity.trim())
        .name(request.name.trim())
        .room(request.room.trim())
        .ttl(DEMO_TOKEN_TTL)
        .grants(Grants::default())
        .to_jwt()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(serde_json::json!({ "token": token })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_module_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/web/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".js"))
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS
            .iter()
            .filter_map(|a| a.path.strip_prefix("/sdk/"))
            .map(str::to_owned)
            .collect();
        served.sort();
        assert_eq!(served, on_disk);
    }
}
