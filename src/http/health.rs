//! Liveness and readiness.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::realtime::Ctx;

/// 200 while the process serves.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the store (and Redis, when configured) answer, else 503.
pub async fn readyz(State(ctx): State<Arc<Ctx>>) -> (StatusCode, Json<Value>) {
    let store = ctx.store.ping().await.err().map(|e| e.to_string());
    let redis = match &ctx.redis {
        None => None,
        Some(conn) => {
            let mut conn = conn.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer within 2 s".to_string()),
            }
        }
    };
    // A JWKS that cannot be fetched is reported; the node stays ready while
    // it holds keys from an earlier fetch (tokens still verify).
    let (jwks, no_keys) = match ctx.verifier.jwks_source() {
        None => (None, false),
        Some(j) => (j.problem(), j.key_count() == 0),
    };
    if store.is_none() && redis.is_none() && !no_keys {
        let mut body = json!({ "status": "ready" });
        if let Some(problem) = jwks {
            body["jwks"] = json!(problem);
        }
        (StatusCode::OK, Json(body))
    } else {
        let jwks = jwks.or_else(|| no_keys.then(|| "no keys yet".to_string()));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "store": store, "redis": redis, "jwks": jwks })),
        )
    }
}
