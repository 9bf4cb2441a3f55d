//! `GET /events`: Server-Sent Events for one user (docs/http-api.md). The JWT
//! comes as for sockets, from `Authorization: Bearer` or `?token=`. The first
//! event is `connected { userId }`; then everything addressed to the user's
//! private room; a comment line every heartbeat interval keeps proxies open.
//! Like a socket, the stream gets `auth:expiring { expiresAt }` shortly before
//! its token's `exp` and ends at `exp`; a stream the server ends gets a last
//! `server:closing { reason }` (`token_expired`, `disconnected`,
//! `slow_consumer`).

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
use crate::feeds::{EndReason, FeedEvent};
use crate::realtime::Ctx;
use crate::realtime::patterns::pattern_matches;

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
    let identity = match ctx.verifier.verify_fresh(&token).await {
        Ok(id) => id,
        Err(e) => return refuse(e.to_string()),
    };
    if !identity.may_open(&ns) {
        return refuse("wrong tenant".into());
    }
    let (rx, end) = ctx.feeds.subscribe(&ns, &identity.user_id);
    let first = Event::default()
        .event("connected")
        .json_data(serde_json::json!({ "userId": identity.user_id }))
        .unwrap_or_default();
    let exp = identity.expires_at;
    let warn_at = exp.saturating_sub(ctx.config.auth_expiry_warning_secs);
    let stream = FeedStream {
        first: Some(first),
        rx,
        end,
        timer: Box::pin(tokio::time::sleep_until(instant_of(warn_at))),
        warned: false,
        exp,
        done: false,
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

/// The monotonic instant of `epoch_secs`.
fn instant_of(epoch_secs: u64) -> tokio::time::Instant {
    let now = crate::auth::now_secs();
    tokio::time::Instant::now() + Duration::from_secs(epoch_secs.saturating_sub(now))
}

fn json_event(name: &str, data: serde_json::Value) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_default()
}

/// The user's feed as an SSE stream; dropping it (the client went away)
/// removes the feed.
struct FeedStream {
    first: Option<Event>,
    rx: mpsc::Receiver<FeedEvent>,
    end: EndReason,
    /// The warning, then the expiry.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    warned: bool,
    exp: u64,
    done: bool,
    ctx: Arc<Ctx>,
    ns: String,
    user: String,
}

impl FeedStream {
    /// The last event: why the server ends the stream.
    fn closing(&mut self, reason: &str) -> Event {
        self.done = true;
        json_event("server:closing", serde_json::json!({ "reason": reason }))
    }
}

impl Stream for FeedStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            if self.warned {
                tracing::info!(
                    ns = self.ns,
                    user = self.user,
                    "token expired; ending SSE stream"
                );
                crate::metrics::server_disconnect("token_expired");
                return Poll::Ready(Some(Ok(self.closing("token_expired"))));
            }
            self.warned = true;
            let exp = self.exp;
            self.timer.as_mut().reset(instant_of(exp));
            let warning = json_event(
                "auth:expiring",
                serde_json::json!({ "expiresAt": exp * 1000 }),
            );
            return Poll::Ready(Some(Ok(warning)));
        }
        loop {
            return match self.rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => {
                    // `event_names` keeps line breaks out; an SSE line could not carry one.
                    if ev.event.contains(['\n', '\r']) {
                        tracing::warn!(event = ?ev.event, "event name with a line break not sent over SSE");
                        continue;
                    }
                    Poll::Ready(Some(Ok(Event::default().event(&*ev.event).data(&*ev.data))))
                }
                Poll::Ready(None) => {
                    let reason = self.end.get().copied().unwrap_or("closed");
                    Poll::Ready(Some(Ok(self.closing(reason))))
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Drop for FeedStream {
    fn drop(&mut self) {
        self.rx.close();
        self.ctx.feeds.prune(&self.ns, &self.user);
    }
}
