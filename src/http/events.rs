//! `GET /events`: Server-Sent Events for one user (PROTOCOL.md §10). The JWT
//! comes as for sockets, from `Authorization: Bearer` or `?token=`. The first
//! event is `connected { userId }`; then everything addressed to the user's
//! private room; a comment line every heartbeat interval keeps proxies open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::api::ApiError;
use crate::auth::find_token;
use crate::feeds::FeedEvent;
use crate::hub::pattern_matches;
use crate::realtime::Ctx;

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

pub async fn events(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", "bad query")
            .into_response();
    };
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    if ns != "/"
        && !ctx
            .config
            .namespaces
            .iter()
            .any(|p| pattern_matches(p, &ns))
    {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_namespace",
            "Invalid namespace",
        )
        .into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    // Only the header or the query: there is no handshake body here.
    let token = find_token(None, authorization, None).or(q.token.map(Into::into));
    let refuse = |reason: String| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("Authentication failed: {reason}"),
        )
        .into_response()
    };
    let Some(token) = token else {
        return refuse("missing token".into());
    };
    let identity = match ctx.verifier.verify(&token) {
        Ok(id) => id,
        Err(e) => return refuse(e.to_string()),
    };
    if !identity.may_open(&ns) {
        return refuse("wrong tenant".into());
    }
    let rx = ctx.feeds.subscribe(&ns, &identity.user_id);
    let first = Event::default()
        .event("connected")
        .json_data(serde_json::json!({ "userId": identity.user_id }))
        .unwrap_or_default();
    let stream = FeedStream {
        first: Some(first),
        rx,
        ctx: ctx.clone(),
        ns,
        user: identity.user_id,
    };
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(ctx.config.sse_heartbeat_secs))
                .text("heartbeat"),
        )
        .into_response()
}

/// The user's feed as an SSE stream; dropping it (the client went away)
/// removes the feed.
struct FeedStream {
    first: Option<Event>,
    rx: mpsc::Receiver<FeedEvent>,
    ctx: Arc<Ctx>,
    ns: String,
    user: String,
}

impl Stream for FeedStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(first)));
        }
        self.rx
            .poll_recv(cx)
            .map(|ev| ev.map(|ev| Ok(Event::default().event(&*ev.event).data(&*ev.data))))
    }
}

impl Drop for FeedStream {
    fn drop(&mut self) {
        self.rx.close();
        self.ctx.feeds.prune(&self.ns, &self.user);
    }
}
