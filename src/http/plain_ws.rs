//! `GET /ws`: the plain WebSocket clients' upgrade (docs/protocol.md §19);
//! the client itself is `plain::bridge`'s. Refusals happen on the
//! websocket, as closes with a code and reason a client can read.

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use crate::edge::conn_limits::ClientAddr;
use crate::edge::guarded_io::ConnHandle;
use crate::plain::bridge::{self, Client, Open, Settings};

pub const PATH: &str = "/ws";

/// What the route needs: how to open a bridged socket, and the limits.
#[derive(Clone)]
pub struct Plain {
    pub open: Open,
    pub settings: Settings,
    /// `--max-payload-bytes`.
    pub max_message: usize,
}

#[derive(Deserialize)]
pub struct Params {
    token: Option<String>,
    namespace: Option<String>,
}

/// The longest namespace a client may name.
const MAX_NAMESPACE_CHARS: usize = 128;

/// Whether a plain client may ask for namespace `ns` (the server still
/// decides whether it exists): not the admin's, not a Yjs document's.
fn plain_namespace(ns: &str) -> bool {
    ns.starts_with('/')
        && ns.len() <= MAX_NAMESPACE_CHARS
        && !ns.contains([',', '|'])
        && !ns.chars().any(char::is_control)
        && ns != "/admin"
}

pub async fn upgrade(
    State(plain): State<Plain>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    addr: Option<Extension<ClientAddr>>,
    conn: Option<Extension<ConnHandle>>,
    ws: WebSocketUpgrade,
) -> Response {
    let header_token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned);
    let client = Client {
        token: params.token.or(header_token),
        namespace: params.namespace.unwrap_or_else(|| "/".into()),
        addr: addr.map(|Extension(a)| a),
        conn: conn.map(|Extension(c)| c),
    };
    ws.max_message_size(plain.max_message)
        .max_frame_size(plain.max_message)
        .read_buffer_size(plain.settings.read_buffer)
        .write_buffer_size(0)
        .on_upgrade(move |mut socket| async move {
            if !plain_namespace(&client.namespace) {
                use axum::extract::ws::{CloseFrame, Message};
                let close = CloseFrame {
                    code: bridge::CLOSE_NO_NAMESPACE,
                    reason: "Invalid namespace".into(),
                };
                let _ = futures_util::SinkExt::send(&mut socket, Message::Close(Some(close))).await;
                return;
            }
            bridge::serve(socket, plain.open, plain.settings, client).await
        })
}

#[cfg(test)]
mod tests {
    use super::plain_namespace;

    #[test]
    fn namespaces_a_plain_client_may_name() {
        assert!(plain_namespace("/"));
        assert!(plain_namespace("/acme"));
        assert!(plain_namespace("/t-blue"));
        assert!(!plain_namespace("acme"));
        assert!(!plain_namespace("/admin"));
        assert!(!plain_namespace("/yjs|notes"));
        assert!(!plain_namespace("/a,b"));
        assert!(!plain_namespace(&format!("/{}", "a".repeat(200))));
    }
}
