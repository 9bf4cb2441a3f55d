//! The plain HTTP side, beside Socket.IO: the backend API, SSE, health and
//! metrics; in dev mode a token route, and with `--static-dir` files.

pub mod api;
mod dev_token;
mod events;
mod health;
pub mod openapi;
pub mod plain_ws;
pub mod static_files;
mod yjs_ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::hub::Hub;
use crate::realtime::Ctx;
pub use api::ApiKey;

/// The server's HTTP routes. `dev_secret` is given only in dev mode on a
/// loopback address, and mounts `POST /dev/token`.
/// `plain` is given when plain WebSocket clients are served (`/ws`).
pub fn routes(
    hub: Hub,
    key: ApiKey,
    dev_secret: Option<String>,
    plain: Option<plain_ws::Plain>,
) -> Router {
    let ctx: Arc<Ctx> = hub.ctx().clone();
    let max_body = ctx.config.max_payload_bytes as usize;
    let metrics = crate::metrics::init();
    let dev = match dev_secret {
        Some(secret) => dev_token::routes(secret),
        None => Router::new(),
    };
    let yjs = if ctx.config.yjs_websocket() {
        Router::new()
            .route(yjs_ws::PATH, get(yjs_ws::upgrade))
            .with_state(hub.clone())
    } else {
        Router::new()
    };
    let plain = match plain {
        Some(plain) => Router::new()
            .route(plain_ws::PATH, get(plain_ws::upgrade))
            .with_state(plain),
        None => Router::new(),
    };
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/events", get(events::events))
        .with_state(ctx)
        .route(
            "/metrics",
            get(move || async move {
                match &metrics {
                    Some(h) => h.render().into_response(),
                    None => {
                        (StatusCode::NOT_FOUND, "metrics recorder not installed").into_response()
                    }
                }
            }),
        )
        // Nested, so its JSON 404 covers /api only: a fallback on this whole
        // router made socketioxide's layer wrap two services, and polling
        // requests of one session landed on different engine.io instances.
        .nest(api::PREFIX, openapi::routes(hub, key, max_body))
        .merge(dev)
        .merge(yjs)
        .merge(plain)
        .layer(middleware::from_fn(count_requests))
}

/// Counts HTTP requests by matched route and status.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let res = next.run(req).await;
    crate::metrics::http_request(&route, res.status().as_u16());
    res
}

/// Engine.IO answers an over-size long-polling body with an empty 413; give
/// it the JSON error body every other refusal has.
pub async fn json_payload_too_large(res: Response) -> Response {
    use axum::body::HttpBody;
    if res.status() != StatusCode::PAYLOAD_TOO_LARGE || res.body().size_hint().exact() != Some(0) {
        return res;
    }
    crate::metrics::limit_hit("max_payload_bytes");
    api::ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "packet larger than --max-payload-bytes",
    )
    .into_response()
}

/// What [`rewrite_polling_names`] needs to know.
#[derive(Clone, Copy)]
pub struct PollingRules {
    /// `--max-payload-bytes`.
    pub max: usize,
    /// The server speaks msgpack: text Socket.IO packets are refused.
    pub msgpack: bool,
}

/// Long-polling bodies get the same event-name rewrite as websocket frames
/// (see [`crate::edge::escaped_names`]). Only bodies with a backslash are touched;
/// a body over `max` gets the JSON 413 Engine.IO would have given. With
/// msgpack, a body with a text Socket.IO packet gets `400 parser_mismatch`
/// (see [`crate::edge::parser_mismatch`]).
pub async fn rewrite_polling_names(
    axum::extract::State(PollingRules { max, msgpack }): axum::extract::State<PollingRules>,
    req: Request,
    next: Next,
) -> Response {
    let polling_post = req.method() == axum::http::Method::POST
        && req.uri().path().starts_with("/socket.io")
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "transport=polling"));
    if !polling_post {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            crate::metrics::limit_hit("max_payload_bytes");
            return api::ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "packet larger than --max-payload-bytes",
            )
            .into_response();
        }
    };
    if msgpack && crate::edge::parser_mismatch::has_text_packet(&bytes) {
        crate::edge::parser_mismatch::seen("polling");
        return api::ApiError::new(
            StatusCode::BAD_REQUEST,
            "parser_mismatch",
            crate::edge::parser_mismatch::REASON,
        )
        .into_response();
    }
    let body = if bytes.contains(&b'\\') {
        let mut owned = bytes.to_vec();
        crate::edge::escaped_names::rewrite_polling_body(&mut owned);
        axum::body::Body::from(owned)
    } else {
        axum::body::Body::from(bytes)
    };
    next.run(Request::from_parts(parts, body)).await
}

/// Long-polling answers go through connection state recovery's view of
/// outgoing packets (see [`crate::recovery::frames`]): the CONNECT reply
/// gets its pid, a message the socket already has is left out.
pub async fn recovery_polling(
    axum::extract::State(frames): axum::extract::State<Arc<crate::recovery::frames::Frames>>,
    req: Request,
    next: Next,
) -> Response {
    let sid = (req.method() == axum::http::Method::GET
        && req.uri().path().starts_with("/socket.io"))
    .then(|| req.uri().query())
    .flatten()
    .filter(|q| q.split('&').any(|kv| kv == "transport=polling"))
    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sid=")))
    .map(str::to_string);
    let res = next.run(req).await;
    let Some(sid) = sid else {
        return res;
    };
    if res.status() != StatusCode::OK {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // engineioxide's answers are single buffers of at most its payload limit.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match crate::recovery::frames::polling_body(&frames, &sid, &bytes) {
        Some(new) => {
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(new))
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}
