//! A small Socket.IO v5 client over a websocket (Engine.IO v4), enough to talk
//! to the server as socket.io-client does: connect with auth, emit with and
//! without acks, receive events, answer pings.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

const CLOSE: &str = "\u{0}close";
pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    events: Mutex<VecDeque<(String, Value)>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    notify: Notify,
    closed: Mutex<bool>,
    /// Replies to send when the server emits these events with an ack id.
    auto_acks: Mutex<HashMap<String, Value>>,
}

pub struct Client {
    ns: String,
    out: mpsc::UnboundedSender<String>,
    shared: Arc<Shared>,
    next_ack: u64,
    pub sid: String,
}

/// What the server answered to the namespace connect.
#[derive(Debug)]
pub enum ConnectError {
    /// A `connect_error` packet: its message.
    Refused(String),
    Other(String),
}

impl ConnectError {
    pub fn message(&self) -> &str {
        match self {
            ConnectError::Refused(m) | ConnectError::Other(m) => m,
        }
    }
}

/// Splits `<nsp>,<id><json>` (the part after the packet type).
fn split_packet(rest: &str) -> (String, Option<u64>, &str) {
    let (ns, rest) = if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => (rest[..i].to_string(), &rest[i + 1..]),
            None => (rest.to_string(), ""),
        }
    } else {
        ("/".to_string(), rest)
    };
    let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    let id = rest[..digits].parse().ok();
    (ns, id, &rest[digits..])
}

impl Client {
    /// Connects a websocket and opens namespace `ns` with the given auth payload.
    pub async fn connect(
        addr: SocketAddr,
        ns: &str,
        auth: Option<Value>,
    ) -> Result<Client, ConnectError> {
        Self::connect_url(
            &format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
            ns,
            auth,
        )
        .await
    }

    pub async fn connect_url(
        url: &str,
        ns: &str,
        auth: Option<Value>,
    ) -> Result<Client, ConnectError> {
        Self::connect_with(url, None, ns, auth).await
    }

    /// Like [`Client::connect_url`], with an optional `Authorization: Bearer` header.
    pub async fn connect_with(
        url: &str,
        bearer: Option<&str>,
        ns: &str,
        auth: Option<Value>,
    ) -> Result<Client, ConnectError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        if let Some(t) = bearer {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let shared = Arc::new(Shared::default());
        let (connected_tx, connected_rx) = oneshot::channel::<Result<String, ConnectError>>();
        let mut connected_tx = Some(connected_tx);

        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if text == CLOSE {
                    break;
                }
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_shared = shared.clone();
        let pong = out.clone();
        let my_ns = ns.to_string();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let text = text.as_str();
                match text.as_bytes().first() {
                    Some(b'2') => {
                        let _ = pong.send("3".into());
                        continue;
                    }
                    Some(b'4') => {}
                    _ => continue, // open packet, noop
                }
                let kind = text.as_bytes().get(1).copied();
                let (ns, id, json) = split_packet(&text[2..]);
                if ns != my_ns {
                    continue;
                }
                match kind {
                    Some(b'0') => {
                        let sid = serde_json::from_str::<Value>(json)
                            .ok()
                            .and_then(|v| v.get("sid").and_then(|s| s.as_str()).map(String::from))
                            .unwrap_or_default();
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(Ok(sid));
                        }
                    }
                    Some(b'4') => {
                        let msg = serde_json::from_str::<Value>(json)
                            .ok()
                            .and_then(|v| {
                                v.get("message").and_then(|m| m.as_str()).map(String::from)
                            })
                            .unwrap_or_else(|| json.to_string());
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(Err(ConnectError::Refused(msg)));
                        }
                    }
                    Some(b'2') => {
                        let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(json) else {
                            continue;
                        };
                        if args.is_empty() {
                            continue;
                        }
                        let name = args.remove(0).as_str().unwrap_or_default().to_string();
                        let data = if args.is_empty() {
                            Value::Null
                        } else {
                            args.remove(0)
                        };
                        if let Some(id) = id
                            && let Some(reply) = reader_shared.auto_acks.lock().unwrap().get(&name)
                        {
                            let prefix = if ns == "/" {
                                String::new()
                            } else {
                                format!("{ns},")
                            };
                            let _ = pong.send(format!("43{prefix}{id}[{reply}]"));
                        }
                        reader_shared.events.lock().unwrap().push_back((name, data));
                        reader_shared.notify.notify_waiters();
                    }
                    Some(b'3') => {
                        let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(json) else {
                            continue;
                        };
                        let data = if args.is_empty() {
                            Value::Null
                        } else {
                            args.remove(0)
                        };
                        if let Some(id) = id
                            && let Some(tx) = reader_shared.acks.lock().unwrap().remove(&id)
                        {
                            let _ = tx.send(data);
                        }
                    }
                    Some(b'1') => break, // server disconnected the namespace
                    _ => {}
                }
            }
            *reader_shared.closed.lock().unwrap() = true;
            reader_shared.notify.notify_waiters();
        });

        let prefix = if ns == "/" {
            String::new()
        } else {
            format!("{ns},")
        };
        let auth = auth.map(|a| a.to_string()).unwrap_or_default();
        let _ = out.send(format!("40{prefix}{auth}"));
        let sid = tokio::time::timeout(WAIT, connected_rx)
            .await
            .map_err(|_| ConnectError::Other("connect timed out".into()))?
            .map_err(|_| ConnectError::Other("connection closed".into()))??;
        Ok(Client {
            ns: ns.to_string(),
            out,
            shared,
            next_ack: 0,
            sid,
        })
    }

    fn prefix(&self) -> String {
        if self.ns == "/" {
            String::new()
        } else {
            format!("{},", self.ns)
        }
    }

    /// Sends raw text (a whole Engine.IO packet).
    pub fn send_raw(&self, text: String) {
        let _ = self.out.send(text);
    }

    /// Emits without asking for an ack.
    pub fn emit(&self, event: &str, data: Value) {
        let body = serde_json::json!([event, data]);
        self.send_raw(format!("42{}{}", self.prefix(), body));
    }

    /// Emits with an ack id and returns the receiver of the ack.
    pub fn emit_ack(&mut self, event: &str, data: Value) -> oneshot::Receiver<Value> {
        self.next_ack += 1;
        let id = self.next_ack;
        let (tx, rx) = oneshot::channel();
        self.shared.acks.lock().unwrap().insert(id, tx);
        let body = serde_json::json!([event, data]);
        self.send_raw(format!("42{}{}{}", self.prefix(), id, body));
        rx
    }

    /// Answers the server's `event` emits that ask for an ack with `reply`.
    pub fn auto_ack(&self, event: &str, reply: Value) {
        self.shared
            .auto_acks
            .lock()
            .unwrap()
            .insert(event.to_string(), reply);
    }

    /// Emits a raw argument array (`["event", ...]`) with an ack id.
    pub async fn ack_args(&mut self, args: Value) -> Value {
        self.ack_text(&args.to_string()).await
    }

    /// Emits a raw argument array, as JSON text exactly as given, with an ack id.
    pub async fn ack_text(&mut self, args: &str) -> Value {
        self.next_ack += 1;
        let id = self.next_ack;
        let (tx, rx) = oneshot::channel();
        self.shared.acks.lock().unwrap().insert(id, tx);
        self.send_raw(format!("42{}{}{}", self.prefix(), id, args));
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("no ack in time")
            .expect("ack channel closed")
    }

    /// Emits and waits for the ack.
    pub async fn ack(&mut self, event: &str, data: Value) -> Value {
        let rx = self.emit_ack(event, data);
        tokio::time::timeout(WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for {event} within {WAIT:?}"))
            .expect("ack channel closed")
    }

    /// Waits up to `within` for the next `event`; earlier events of other
    /// names stay queued.
    pub async fn try_recv(&self, event: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.notify.notified();
            {
                let mut q = self.shared.events.lock().unwrap();
                if let Some(i) = q.iter().position(|(n, _)| n == event) {
                    return q.remove(i).map(|(_, d)| d);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub async fn recv(&self, event: &str) -> Value {
        self.try_recv(event, WAIT)
            .await
            .unwrap_or_else(|| panic!("no {event} event within {WAIT:?}"))
    }

    /// Asserts that no `event` arrives within `within`.
    pub async fn expect_none(&self, event: &str, within: Duration) {
        if let Some(v) = self.try_recv(event, within).await {
            panic!("unexpected {event}: {v}");
        }
    }

    /// Waits until the server closes the connection.
    pub async fn closed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.notify.notified();
            if *self.shared.closed.lock().unwrap() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Closes the websocket (the server sees a transport close).
    pub fn close(self) {
        let _ = self.out.send(CLOSE.into());
    }
}
