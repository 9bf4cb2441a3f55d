//! `POST /dev/token { sub, name? }` -> `{ token }`: dev mode mints a token
//! for whoever asks, so a newcomer can try the server (and the demo page in
//! `examples/web`) by typing a name, without JWT tooling.
//!
//! Mounted only in dev mode on a loopback address (see `Switchboard::build`);
//! with a configured key the path does not exist. The tokens are signed with
//! the process's random dev secret and die with it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, ApiJson};
use crate::auth::{TokenSpec, mint_hs256};
use crate::config::MAX_NAME_CHARS;

/// Lifetime of a minted token: a working day, as the token dev mode prints.
pub const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Longest `sub` the server accepts in a token (see `auth::Verifier::verify`).
const MAX_SUB_CHARS: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: String,
    /// Display name; `sub` when absent or empty, as for any token.
    #[serde(default)]
    name: Option<String>,
}

pub fn routes(dev_secret: String) -> Router {
    Router::new()
        .route("/dev/token", post(mint))
        // Two short strings; nothing needs more.
        .layer(DefaultBodyLimit::max(4096))
        .with_state(Arc::new(dev_secret))
}

async fn mint(
    State(secret): State<Arc<String>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    // Dev mode lets any origin use the server (CORS), so without this check
    // any web page open in the developer's browser could mint tokens for
    // their dev server. Pages on loopback origins, and clients that send no
    // Origin (curl), may.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin.to_str().is_ok_and(is_loopback_origin)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "dev tokens are only given to pages on a loopback origin",
        ));
    }
    let bad = |error: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", error);
    let sub_chars = req.sub.chars().count();
    if sub_chars == 0 || sub_chars > MAX_SUB_CHARS {
        return Err(bad("sub must be 1-128 characters"));
    }
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(bad("name must be at most 128 characters"));
    }
    let token = mint_hs256(
        secret.as_bytes(),
        &TokenSpec {
            sub: req.sub,
            name: req.name.filter(|n| !n.is_empty()),
            ttl_secs: DEV_TOKEN_TTL_SECS,
            ..TokenSpec::default()
        },
    );
    Ok(axum::Json(json!({ "token": token })))
}

/// `http://localhost:5173`, `http://127.0.0.1:3000`, `http://[::1]` and the like.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false; // includes the opaque origin "null"
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h),
        None => authority.split(':').next(),
    };
    match host {
        Some("localhost") => true,
        Some(h) => h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_origin;

    #[test]
    fn loopback_origins() {
        for o in [
            "http://localhost",
            "http://localhost:5173",
            "http://127.0.0.1:3000",
            "https://127.8.9.10",
            "http://[::1]:3000",
        ] {
            assert!(is_loopback_origin(o), "{o}");
        }
        for o in [
            "null",
            "https://example.com",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://10.0.0.1:3000",
            "http://[::2]",
            "file://",
        ] {
            assert!(!is_loopback_origin(o), "{o}");
        }
    }
}
