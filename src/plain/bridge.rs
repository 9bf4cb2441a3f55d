//! One plain client, from its token to its close: a Socket.IO socket of its
//! own, opened inside the server over an in-memory stream (engineioxide
//! serves it as it would a websocket), so that rooms, presence, history,
//! rate limits, hooks, cluster delivery and the Hub treat it as any other
//! socket. This file only translates: the client's JSON into the socket's
//! events (`protocol`), the socket's packets into the client's JSON
//! (`events`), and the two ends' closes.
//!
//! Backpressure runs straight through: while the client does not read, the
//! bridge does not read the socket, whose queue fills, and the server's
//! slow-consumer rules close the client's websocket (its [`ConnHandle`] is
//! the socket's connection).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes as Utf8BytesOut;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::DuplexStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite_client::WebSocketStream;
use tokio_tungstenite_client::tungstenite::Message as Inner;
use tokio_tungstenite_client::tungstenite::Utf8Bytes;
use tokio_tungstenite_client::tungstenite::protocol::{Role, WebSocketConfig};

use crate::edge::conn_limits::ClientAddr;
use crate::edge::guarded_io::ConnHandle;
use crate::plain::events::{self, Packet};
use crate::plain::protocol::{self, Answer, Request, Style};
use crate::plain::translations::Translations;

/// Starts a Socket.IO websocket session on one end of an in-memory stream
/// (the request carries the URI and extensions a real one would); false if
/// the server refused it.
pub type Open = Arc<dyn Fn(DuplexStream, axum::http::Request<()>) -> bool + Send + Sync>;

/// The Engine.IO request the bridged socket is opened with.
const INNER_URI: &str = "/socket.io/?EIO=4&transport=websocket";

/// Bytes the in-memory stream holds each way before the writer waits.
const STREAM_BYTES: usize = 32 * 1024;

/// Requests sent to the socket and not yet acked (the socket itself holds
/// at most 1,024 waiting events; this is a backstop).
const MAX_PENDING: usize = 2048;

/// Events a backend sent with an ack request that the client may answer.
const MAX_SERVER_ACKS: usize = 256;

/// The largest request passed to the socket. The largest a client needs is
/// far less (content is at most `--max-message-chars`, a token a few KiB),
/// and the socket's websocket keeps a read buffer the size of the largest
/// frame it was given.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Close codes (docs/protocol.md §19).
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
pub const CLOSE_NO_NAMESPACE: u16 = 4004;
pub const CLOSE_PING_TIMEOUT: u16 = 4008;

/// What a bridge needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    /// Refusals made here (malformed messages): the same rate as events.
    pub events_per_sec: u32,
    pub event_burst: u32,
    pub max_rate_refusals: u32,
    /// Size of the websocket read buffer (see `lib.rs`).
    pub read_buffer: usize,
    /// Broadcasts already turned into plain JSON, shared by the bridges.
    pub translations: Arc<Translations>,
}

/// In the extensions of a bridged socket's request: its client is a plain
/// one (connection state recovery leaves it out).
#[derive(Debug, Clone, Copy)]
pub struct Bridged;

/// Longest a write to the client may take before it is closed as a slow
/// consumer (the server's stall watcher usually closes it first).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one message to the client, within `WRITE_TIMEOUT`. `Err(None)`:
/// the client is gone; `Err(Some(_))`: it does not read.
async fn send_out(outer: &mut WebSocket, msg: Message) -> Result<(), Option<End>> {
    match timeout(WRITE_TIMEOUT, outer.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(End::new(
            crate::edge::ws_frames::CLOSE_POLICY,
            SLOW_CONSUMER,
        ))),
    }
}

/// The reason a client that does not read is closed with (as a Socket.IO one).
const SLOW_CONSUMER: &str = "slow consumer: reconnect and catch up with chat:history";

/// Who connects, as the upgrade request said.
pub struct Client {
    pub token: Option<String>,
    pub namespace: String,
    pub addr: Option<ClientAddr>,
    pub conn: Option<ConnHandle>,
}

/// Why the bridge ends, and what the client is told.
struct End(u16, String);

impl End {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        End(code, reason.into())
    }
}

/// Serves one plain client until either side ends.
pub async fn serve(mut outer: WebSocket, open: Open, settings: Settings, client: Client) {
    let ns = client.namespace.clone();
    let (token, auth_id) = match client.token.clone() {
        Some(t) => (t, None),
        None => match first_auth(&mut outer, settings.connect_timeout).await {
            Ok(first) => first,
            Err(end) => return close(outer, end).await,
        },
    };
    let (ours, theirs) = tokio::io::duplex(STREAM_BYTES);
    let mut req = axum::http::Request::new(());
    *req.uri_mut() = axum::http::Uri::from_static(INNER_URI);
    if let Some(addr) = client.addr {
        req.extensions_mut().insert(addr);
    }
    req.extensions_mut().insert(Bridged);
    if let Some(conn) = &client.conn {
        conn.mark_bridged();
        req.extensions_mut().insert(conn.clone());
    }
    if !open(theirs, req) {
        return close(outer, End::new(1011, "internal error")).await;
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer)
        .write_buffer_size(0);
    let mut inner = WebSocketStream::from_raw_socket(ours, Role::Client, Some(config)).await;
    match timeout(settings.connect_timeout, handshake(&mut inner, &ns, &token)).await {
        Ok(Ok(())) => {}
        Ok(Err(end)) => return close(outer, end).await,
        Err(_) => return close(outer, End::new(1011, "connect timed out")).await,
    }
    let (user, name) = claims(&token);
    let hello = json!({ "type": "connected", "userId": user, "name": name, "namespace": ns });
    let mut greeting = send_out(&mut outer, text(&hello)).await;
    if let (Ok(()), Some(id)) = (&greeting, auth_id) {
        let ack = json!({ "type": "ack", "id": id, "success": true });
        greeting = send_out(&mut outer, text(&ack)).await;
    }
    if greeting.is_err() {
        let _ = inner.send(Inner::text(events::disconnect(&ns))).await;
        return;
    }
    crate::metrics::plain_connection(1);
    let mut bridge = Bridge::new(ns, settings);
    let end = bridge.run(&mut outer, &mut inner).await;
    crate::metrics::plain_connection(-1);
    match end {
        // The client left: its socket leaves as `socket.disconnect()` does.
        None => {
            let _ = inner
                .send(Inner::text(events::disconnect(&bridge.ns)))
                .await;
            let _ = inner.close(None).await;
        }
        Some(end) => {
            let _ = inner.close(None).await;
            close(outer, end).await;
        }
    }
}

/// Waits for `{ type: "auth", token }`, the first message of a client
/// that gave no token in the URL.
async fn first_auth(
    outer: &mut WebSocket,
    within: Duration,
) -> Result<(String, Option<Value>), End> {
    // Ping and pong frames are not messages: the first message is awaited.
    let first = async {
        loop {
            match outer.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    };
    let first = timeout(within, first).await.map_err(|_| {
        End::new(
            CLOSE_UNAUTHORIZED,
            format!(
                "Unauthorized: no auth message within {} ms",
                within.as_millis()
            ),
        )
    })?;
    let expected = || {
        End::new(
            CLOSE_UNAUTHORIZED,
            "Unauthorized: expected an auth message first",
        )
    };
    match first {
        Some(Ok(Message::Text(t))) => {
            let parsed = protocol::parse(t.as_str());
            match parsed.request {
                Ok(Request::Auth(token)) => Ok((token, parsed.id)),
                _ if parsed.kind.as_deref() == Some("auth") => {
                    Err(End::new(CLOSE_UNAUTHORIZED, "Unauthorized: missing token"))
                }
                _ => Err(expected()),
            }
        }
        _ => Err(expected()),
    }
}

/// Engine.IO open, then Socket.IO CONNECT with the token.
async fn handshake(
    inner: &mut WebSocketStream<DuplexStream>,
    ns: &str,
    token: &str,
) -> Result<(), End> {
    let gone = || End::new(1011, "internal error: socket closed while connecting");
    loop {
        let Some(Ok(Inner::Text(frame))) = inner.next().await else {
            return Err(gone());
        };
        match events::read(frame.as_str(), ns) {
            Packet::Open => {
                inner
                    .send(Inner::text(events::connect(ns, token)))
                    .await
                    .map_err(|_| gone())?;
            }
            Packet::Ping => {
                let _ = inner.send(Inner::text("3")).await;
            }
            Packet::Connected => return Ok(()),
            Packet::ConnectError(message) => return Err(refused(&message)),
            Packet::Close | Packet::Disconnect => return Err(gone()),
            _ => {}
        }
    }
}

/// The close for a refused CONNECT.
fn refused(message: &str) -> End {
    if let Some(why) = message.strip_prefix("Authentication failed: ") {
        End::new(CLOSE_UNAUTHORIZED, format!("Unauthorized: {why}"))
    } else if message.contains("too many connections") {
        End::new(1013, message)
    } else if message == "Invalid namespace" {
        End::new(CLOSE_NO_NAMESPACE, message)
    } else {
        End::new(1008, message)
    }
}

/// `sub` and `name` of a token the server has just accepted.
fn claims(token: &str) -> (Value, Value) {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let sub = payload.get("sub").cloned().unwrap_or(Value::Null);
    let name = payload.get("name").cloned().unwrap_or_else(|| sub.clone());
    (sub, name)
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn close(mut outer: WebSocket, End(code, reason): End) {
    let _ = outer
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Wait briefly for the client's close, so the reason reaches it.
    let _ = timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = outer.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// A refusal made by the bridge: the `error` message's parts.
struct Refusal<'a> {
    id: Option<&'a Value>,
    kind: Option<&'a str>,
    code: &'static str,
    message: String,
}

/// A request sent to the socket, waiting for its ack.
struct Pending {
    id: Option<Value>,
    kind: String,
    answer: Answer,
}

/// The state of one bridged connection.
struct Bridge {
    ns: String,
    settings: Settings,
    next_ack: u64,
    pending: HashMap<u64, Pending>,
    /// Rooms joined with `join`: their messages take the `message` shape.
    message_style: HashSet<String>,
    /// Acks a backend waits for from this client.
    server_acks: VecDeque<u64>,
    /// The reason of the last `server:closing`.
    closing: Option<String>,
    /// Refusals made here: a token bucket, and refusals once it is empty.
    tokens: f64,
    refilled: Instant,
    rate_refusals: u32,
    /// When the current 10 s window of `rate_refusals` began.
    refusals_since: Instant,
    /// When the next ping frame is due, or when the one sent expires.
    ping_at: Instant,
    awaiting_pong: bool,
}

impl Bridge {
    fn new(ns: String, settings: Settings) -> Self {
        let now = Instant::now();
        Bridge {
            ns,
            next_ack: 0,
            pending: HashMap::new(),
            message_style: HashSet::new(),
            server_acks: VecDeque::new(),
            closing: None,
            tokens: f64::from(settings.event_burst),
            refilled: now,
            rate_refusals: 0,
            refusals_since: now,
            ping_at: now + settings.ping_interval,
            awaiting_pong: false,
            settings,
        }
    }

    /// Runs until one side ends: `None` when the client went away.
    async fn run(
        &mut self,
        outer: &mut WebSocket,
        inner: &mut WebSocketStream<DuplexStream>,
    ) -> Option<End> {
        loop {
            tokio::select! {
                msg = outer.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Err(end) = self.on_client(t.as_str(), outer, inner).await {
                            return end;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let r = Refusal { id: None, kind: None, code: "invalid_payload", message: "text JSON messages only".into() };
                        if let Err(end) = self.refuse_here(r, outer).await {
                            return end;
                        }
                    }
                    Some(Ok(Message::Pong(_))) => {
                        if self.awaiting_pong {
                            self.awaiting_pong = false;
                            self.ping_at = Instant::now() + self.settings.ping_interval;
                        }
                    }
                    Some(Ok(Message::Ping(_))) => {}
                    // The close answered (tungstenite queued it) before the bridge ends.
                    Some(Ok(Message::Close(_))) => {
                        let _ = timeout(Duration::from_secs(1), outer.flush()).await;
                        return None;
                    }
                    Some(Err(_)) | None => return None,
                },
                frame = inner.next() => match frame {
                    Some(Ok(Inner::Text(f))) => {
                        if let Err(end) = self.on_socket(f, outer, inner).await {
                            return end;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Some(End::new(1001, "server going away")),
                },
                () = sleep_until(self.ping_at) => {
                    if self.awaiting_pong {
                        return Some(End::new(CLOSE_PING_TIMEOUT, "ping timeout"));
                    }
                    if let Err(end) = send_out(outer, Message::Ping(Default::default())).await {
                        return end;
                    }
                    self.awaiting_pong = true;
                    self.ping_at = Instant::now() + self.settings.ping_timeout;
                }
            }
        }
    }

    /// One message of the client. `Err` ends the bridge.
    async fn on_client(
        &mut self,
        text: &str,
        outer: &mut WebSocket,
        inner: &mut WebSocketStream<DuplexStream>,
    ) -> Result<(), Option<End>> {
        let parsed = protocol::parse(text);
        let kind = parsed.kind.clone().unwrap_or_default();
        // A refusal of this request, with its id and type.
        let refusal = |code, message: String| Refusal {
            id: parsed.id.as_ref(),
            kind: parsed.kind.as_deref(),
            code,
            message,
        };
        // Read first (the websocket already bounds it), so that the refusal
        // carries the request's id.
        if text.len() > MAX_REQUEST_BYTES {
            let message = format!("a request is at most {MAX_REQUEST_BYTES} bytes");
            return self.refuse_here(refusal("too_large", message), outer).await;
        }
        let (event, data, answer) = match parsed.request {
            Ok(Request::Emit {
                event,
                data,
                answer,
            }) => (event, data, answer),
            Ok(Request::Auth(token)) => {
                ("auth:refresh", json!({ "token": token }), Answer::Refreshed)
            }
            Ok(Request::AnswerServer(ack, data)) => {
                if let Some(at) = self.server_acks.iter().position(|a| *a == ack) {
                    self.server_acks.remove(at);
                    let frame = events::ack(&self.ns, ack, &data);
                    return inner.send(Inner::text(frame)).await.map_err(|_| gone());
                }
                let r = refusal("invalid_payload", "no event waits for this ackId".into());
                return self.refuse_here(r, outer).await;
            }
            Err(refused) => {
                let r = refusal(refused.code, refused.message);
                return self.refuse_here(r, outer).await;
            }
        };
        if self.pending.len() >= MAX_PENDING {
            let r = refusal(
                "rate_limited",
                "too many requests waiting for an answer".into(),
            );
            return self.refuse_here(r, outer).await;
        }
        // A room's messages take the join's shape from the join on: one can
        // arrive before the join's ack.
        match &answer {
            Answer::Joined(room, Style::Message) => {
                self.message_style.insert(room.clone());
            }
            Answer::Joined(room, Style::RoomMsg) => {
                self.message_style.remove(room);
            }
            _ => {}
        }
        self.next_ack += 1;
        let ack = self.next_ack;
        self.pending.insert(
            ack,
            Pending {
                id: parsed.id,
                kind,
                answer,
            },
        );
        let frame = events::event(&self.ns, ack, event, &data);
        inner.send(Inner::text(frame)).await.map_err(|_| gone())
    }

    /// A refusal made by the bridge itself, under the event rate: a client
    /// that keeps sending what cannot be read is closed as a flooder.
    async fn refuse_here(
        &mut self,
        mut r: Refusal<'_>,
        outer: &mut WebSocket,
    ) -> Result<(), Option<End>> {
        let now = Instant::now();
        let per_sec = f64::from(self.settings.events_per_sec.max(1));
        let burst = f64::from(self.settings.event_burst.max(1));
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * per_sec).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
        } else {
            // Counted within 10 s, as the socket's refusals are.
            if now.duration_since(self.refusals_since) > Duration::from_secs(10) {
                self.refusals_since = now;
                self.rate_refusals = 0;
            }
            self.rate_refusals += 1;
            if self.rate_refusals > self.settings.max_rate_refusals {
                crate::metrics::limit_hit("events_per_sec");
                let closing =
                    json!({ "type": "system", "event": "closing", "reason": "rate_limited" });
                let _ = send_out(outer, text(&closing)).await;
                return Err(Some(End::new(1008, "rate_limited")));
            }
            r.code = "rate_limited";
            r.message = "too many messages that could not be read".into();
        }
        let error = protocol::error_value(r.id, r.kind, json!(r.code), json!(r.message));
        send_out(outer, text(&error)).await
    }

    /// One packet of the socket. `Err` ends the bridge.
    async fn on_socket(
        &mut self,
        frame: Utf8Bytes,
        outer: &mut WebSocket,
        inner: &mut WebSocketStream<DuplexStream>,
    ) -> Result<(), Option<End>> {
        // A broadcast another bridge of the room has translated already.
        let styles = &self.message_style;
        let translations = &self.settings.translations;
        if let Some(text) = translations.find(&frame, |room| styles.contains(room)) {
            return send_out(outer, Message::Text(text)).await;
        }
        match events::read(frame.as_str(), &self.ns) {
            Packet::Ping => inner.send(Inner::text("3")).await.map_err(|_| gone()),
            Packet::Event { name, args, ack } => {
                match name.as_str() {
                    "server:closing" => {
                        self.closing = args
                            .first()
                            .and_then(|a| a.get("reason"))
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                    }
                    "room:left" => {
                        if let Some(room) = args
                            .first()
                            .and_then(|a| a.get("roomId"))
                            .and_then(Value::as_str)
                        {
                            self.message_style.remove(room);
                        }
                    }
                    _ => {}
                }
                // What the text depends on, and whether others may reuse it.
                let kept =
                    ack.is_none() && !matches!(name.as_str(), "server:closing" | "room:left");
                let room = match name.as_str() {
                    "chat:message" => args
                        .first()
                        .and_then(|a| a.get("roomId"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                };
                let styles = &self.message_style;
                let message_shape = room.as_deref().is_some_and(|r| styles.contains(r));
                let mut msg = events::to_plain(&name, args, |room| styles.contains(room));
                if let Some(ack) = ack {
                    // The oldest unanswered one is given up (its backend has
                    // timed out by now, or soon will).
                    if self.server_acks.len() >= MAX_SERVER_ACKS {
                        self.server_acks.pop_front();
                    }
                    self.server_acks.push_back(ack);
                    msg["ackId"] = json!(ack);
                }
                let out = Utf8BytesOut::from(msg.to_string());
                if kept {
                    let t = &self.settings.translations;
                    t.keep(&frame, room.as_deref(), message_shape, out.clone());
                }
                send_out(outer, Message::Text(out)).await
            }
            Packet::Ack { id, mut args } => {
                let Some(p) = self.pending.remove(&id) else {
                    return Ok(());
                };
                let ack = if args.is_empty() {
                    Value::Null
                } else {
                    args.swap_remove(0)
                };
                let success = ack.get("success") != Some(&Value::Bool(false));
                match &p.answer {
                    Answer::Joined(room, Style::Message) if !success => {
                        self.message_style.remove(room);
                    }
                    Answer::Left(room) if success => {
                        self.message_style.remove(room);
                    }
                    _ => {}
                }
                let reply = protocol::answer(p.id.as_ref(), &p.kind, &p.answer, ack);
                if let Some(reply) = reply {
                    send_out(outer, text(&reply)).await?;
                }
                if success {
                    crate::metrics::acks_written(1);
                }
                Ok(())
            }
            Packet::Disconnect => Err(Some(self.server_ended())),
            // The transport itself closes: the server is shutting down.
            Packet::Close => Err(gone()),
            _ => Ok(()),
        }
    }

    /// The close for a socket the server ended, by the reason it gave.
    fn server_ended(&self) -> End {
        match self.closing.as_deref() {
            Some("token_expired") => End::new(CLOSE_UNAUTHORIZED, "Unauthorized: token expired"),
            Some("rate_limited") => End::new(1008, "rate_limited"),
            _ => End::new(1000, "disconnected by the server"),
        }
    }
}

fn gone() -> Option<End> {
    Some(End::new(1001, "server going away"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connects_close_with_a_code() {
        let End(code, reason) = refused("Authentication failed: token expired");
        assert_eq!(
            (code, reason.as_str()),
            (4001, "Unauthorized: token expired")
        );
        assert_eq!(refused("too many connections for this user").0, 1013);
        assert_eq!(refused("Invalid namespace").0, 4004);
    }

    #[test]
    fn claims_of_a_token() {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"ann","name":"Ann"}"#);
        assert_eq!(claims(&format!("h.{body}.s")), (json!("ann"), json!("Ann")));
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"bo"}"#);
        assert_eq!(claims(&format!("h.{body}.s")), (json!("bo"), json!("bo")));
    }
}
