//! The server side of `@socket.io/admin-ui` 0.5 (`--admin-ui`): the `/admin`
//! namespace that the UI connects to, as the Node `instrument()` serves it.
//!
//! * Login: `auth: { username, password }` checked against the bcrypt hash
//!   (`--admin-password-hash`), or `auth: { sessionId }` from an earlier
//!   login (the `session` event). Without credentials (dev mode only) anyone
//!   on loopback may connect.
//! * On connect: `session`, `config { supportedFeatures }`, `all_sockets`
//!   (development mode) and `server_stats`, which every node then sends
//!   every 2 s to the admin sockets of every node.
//! * Development mode: `socket_connected`, `socket_disconnected`,
//!   `room_joined` and `room_left` as switchboard's sockets come, go, join
//!   and leave rooms.
//! * `event_received` (development mode) for each event switchboard's
//!   sockets send, with its first argument.
//! * Not sent: `event_sent`, `socket_updated`, and `aggregatedEvents` is
//!   always empty.
//! * Commands `emit`, `join`, `leave`, `_disconnect` with the filter of
//!   `instrument()`: a socket id or a room of the namespace, or none for
//!   every socket of it. They act on the sockets of the node the admin
//!   socket is connected to.
//!
//! When `--admin-ui` is off nothing here exists: `Ctx::admin` is `None` and
//! the hooks are one `Option` test.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;
use tokio::sync::mpsc;

use super::Ctx;
use crate::config::{AdminUiMode, Config};

/// The namespace the UI connects to.
pub const NAMESPACE: &str = "/admin";

/// Lifecycle events waiting for the `/admin` namespace.
const EVENTS_WAITING: usize = 4096;
/// Password checks at once.
const PASSWORD_CHECKS: usize = 2;
/// Login sessions remembered (`auth: { sessionId }`).
const MAX_SESSIONS: usize = 1024;

/// The Admin UI state of the server.
pub struct Admin {
    username: Option<String>,
    hash: Option<String>,
    development: bool,
    sessions: Mutex<HashSet<String>>,
    server_id: String,
    hostname: String,
    started: Instant,
    /// Lifecycle events, sent in order by one task to the `/admin` namespace
    /// (at most [`EVENTS_WAITING`] waiting: they only inform the UI, so more
    /// are dropped, and counted, rather than held when delivery stalls).
    events: std::sync::OnceLock<mpsc::Sender<(&'static str, Args)>>,
    /// Password checks running at once: bcrypt costs tens of milliseconds of
    /// CPU each on purpose, so a flood of logins waits instead of taking
    /// every blocking thread.
    checks: tokio::sync::Semaphore,
}

impl Admin {
    pub fn new(config: &Config) -> Option<Arc<Admin>> {
        if !config.admin_ui {
            return None;
        }
        if config.admin_username.is_none() {
            tracing::warn!(
                "--admin-ui without credentials: anyone who reaches this server may use the Admin UI (dev mode only)"
            );
        }
        let hostname = hostname();
        let server_id = if config.redis_url.is_some() {
            format!("{hostname}#{}", std::process::id())
        } else {
            hostname.clone()
        };
        Some(Arc::new(Admin {
            username: config.admin_username.clone(),
            hash: config.admin_password_hash.clone(),
            development: config.admin_ui_mode == AdminUiMode::Development,
            sessions: Mutex::new(HashSet::new()),
            server_id,
            hostname,
            started: Instant::now(),
            events: Default::default(),
            checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS),
        }))
    }

    fn send(&self, event: &'static str, args: Vec<Value>) {
        if let Some(tx) = self.events.get()
            && tx.try_send((event, Args(args))).is_err()
        {
            crate::metrics::limit_hit("admin_events_waiting");
        }
    }
}

/// Variadic Socket.IO arguments: serialized as a tuple (several arguments)
/// and read from all the arguments of an event.
#[derive(Debug, Default)]
pub struct Args(pub Vec<Value>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    out.push(v);
                }
                Ok(Args(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

/// A refused admin login; the UI shows the message.
#[derive(Debug, thiserror::Error)]
#[error("invalid credentials")]
pub struct InvalidCredentials;

/// A fresh login's session id, for the connect handler to send.
#[derive(Clone)]
struct NewSession(String);

/// Starts the event and stats tasks; call once after registering `/admin`.
pub fn start<A: Adapter>(io: &SocketIo<A>, admin: &Arc<Admin>, ctx: &Arc<Ctx>) {
    let (tx, mut rx) = mpsc::channel::<(&'static str, Args)>(EVENTS_WAITING);
    if admin.events.set(tx).is_err() {
        return;
    }
    let events_io = io.clone();
    tokio::spawn(async move {
        while let Some((event, args)) = rx.recv().await {
            if let Some(ns) = events_io.of(NAMESPACE) {
                let _ = ns.emit(event, &args).await;
            }
        }
    });
    let (io, admin, ctx) = (io.clone(), admin.clone(), ctx.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ns) = io.of(NAMESPACE) else { return };
            let stats = server_stats(&io, &admin, &ctx);
            // Through the adapter: in a cluster, every node's admin sockets
            // get every node's stats.
            let _ = ns.emit("server_stats", &stats).await;
        }
    });
}

/// The connect middleware of `/admin`.
pub async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Value>,
    State(ctx): State<Arc<Ctx>>,
) -> Result<(), InvalidCredentials> {
    let Some(admin) = ctx.admin.clone() else {
        return Err(InvalidCredentials);
    };
    let (Some(username), Some(hash)) = (admin.username.clone(), admin.hash.clone()) else {
        return Ok(());
    };
    let auth = auth.unwrap_or(Value::Null);
    if let Some(id) = auth.get("sessionId").and_then(Value::as_str)
        && admin.sessions.lock().unwrap().contains(id)
    {
        return Ok(());
    }
    let given_user = auth.get("username").and_then(Value::as_str);
    let password = auth
        .get("password")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if given_user != Some(username.as_str()) {
        tracing::info!(ns = NAMESPACE, "admin login refused");
        return Err(InvalidCredentials);
    }
    // bcrypt takes tens of milliseconds on purpose: not on the runtime, and
    // a few at a time.
    let Ok(_permit) = admin.checks.acquire().await else {
        return Err(InvalidCredentials);
    };
    let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !ok {
        tracing::info!(ns = NAMESPACE, "admin login refused");
        return Err(InvalidCredentials);
    }
    let id = random_id();
    {
        // Bounded: past the cap, earlier sessions end (their UIs log in again).
        let mut sessions = admin.sessions.lock().unwrap();
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(id.clone());
    }
    s.extensions.insert(NewSession(id));
    tracing::info!(ns = NAMESPACE, sid = %s.id, "admin logged in");
    Ok(())
}

/// The connect handler of `/admin`.
pub async fn connected<A: Adapter>(s: SocketRef<A>, State(ctx): State<Arc<Ctx>>, io: SocketIo<A>) {
    let Some(admin) = ctx.admin.clone() else {
        return;
    };
    if let Some(NewSession(id)) = s.extensions.get::<NewSession>() {
        let _ = s.emit("session", &id);
    }
    register_commands(&s);
    let mut features = vec![
        "EMIT",
        "JOIN",
        "LEAVE",
        "DISCONNECT",
        "MJOIN",
        "MLEAVE",
        "MDISCONNECT",
        "AGGREGATED_EVENTS",
    ];
    // The UI shows its Sockets, Rooms, Clients and Events pages only with
    // ALL_EVENTS (its "development mode").
    if admin.development {
        features.push("ALL_EVENTS");
    }
    let _ = s.emit("config", &json!({ "supportedFeatures": features }));
    if admin.development {
        let _ = s.emit("all_sockets", &all_sockets(&io));
    }
    let _ = s.emit("server_stats", &server_stats(&io, &admin, &ctx));
}

fn register_commands<A: Adapter>(s: &SocketRef<A>) {
    s.on("emit", async |io: SocketIo<A>, TryData::<Args>(args)| {
        let Ok(Args(args)) = args else { return };
        let (Some(nsp), Some(ev)) = (arg_str(&args, 0), arg_str(&args, 2)) else {
            return;
        };
        let payload = Args(args.get(3..).unwrap_or_default().to_vec());
        for target in targets(&io, &nsp, arg_str(&args, 1).as_deref()) {
            let _ = target.emit(ev.clone(), &payload);
        }
    });
    s.on(
        "join",
        async |io: SocketIo<A>, State(ctx): State<Arc<Ctx>>, TryData::<Args>(args)| {
            let Ok(Args(args)) = args else { return };
            let (Some(nsp), Some(room)) = (arg_str(&args, 0), arg_str(&args, 1)) else {
                return;
            };
            for target in targets(&io, &nsp, arg_str(&args, 2).as_deref()) {
                target.join(room.clone());
                room_joined(&ctx, &target, &room);
            }
        },
    );
    s.on(
        "leave",
        async |io: SocketIo<A>, State(ctx): State<Arc<Ctx>>, TryData::<Args>(args)| {
            let Ok(Args(args)) = args else { return };
            let (Some(nsp), Some(room)) = (arg_str(&args, 0), arg_str(&args, 1)) else {
                return;
            };
            for target in targets(&io, &nsp, arg_str(&args, 2).as_deref()) {
                target.leave(room.clone());
                room_left(&ctx, &target, &room);
            }
        },
    );
    s.on(
        "_disconnect",
        async |io: SocketIo<A>, TryData::<Args>(args)| {
            let Ok(Args(args)) = args else { return };
            let Some(nsp) = arg_str(&args, 0) else { return };
            for target in targets(&io, &nsp, arg_str(&args, 2).as_deref()) {
                tracing::info!(ns = nsp, sid = %target.id, "disconnected from the Admin UI");
                let _ = target.disconnect();
            }
        },
    );
}

fn arg_str(args: &[Value], i: usize) -> Option<String> {
    args.get(i)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// This node's sockets of `nsp` that `filter` (a socket id or a room)
/// selects; all of them without a filter. Never the admin namespace.
fn targets<A: Adapter>(io: &SocketIo<A>, nsp: &str, filter: Option<&str>) -> Vec<SocketRef<A>> {
    if nsp == NAMESPACE {
        return Vec::new();
    }
    let Some(ns) = io.of(nsp) else {
        return Vec::new();
    };
    ns.sockets()
        .into_iter()
        .filter(|s| match filter {
            None => true,
            Some(f) => s.id.as_str() == f || s.rooms().iter().any(|r| r == f),
        })
        .collect()
}

/// Every socket of this node, as `all_sockets` lists them.
fn all_sockets<A: Adapter>(io: &SocketIo<A>) -> Vec<Value> {
    io.nsps()
        .into_iter()
        .filter(|ns| ns.ns_path() != NAMESPACE)
        .flat_map(|ns| ns.sockets())
        .map(|s| serialize(&s))
        .collect()
}

/// A socket as `instrument()` serializes it.
pub fn serialize<A: Adapter>(s: &SocketRef<A>) -> Value {
    let parts = s.req_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        // Credentials stay on the server.
        .filter(|(k, _)| {
            *k != axum::http::header::AUTHORIZATION && *k != axum::http::header::COOKIE
        })
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let query: serde_json::Map<String, Value> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k != "token")
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let address = headers
        .get("x-forwarded-for")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        })
        .unwrap_or_default();
    let data =
        match s.extensions.get::<Arc<super::session::Session<A>>>().map(
            |session| json!({ "userId": session.identity.user_id, "name": session.identity.name }),
        ) {
            Some(d) => d,
            None => json!({}),
        };
    let mut rooms = vec![s.id.to_string()];
    rooms.extend(s.rooms().into_iter().map(|r| r.to_string()));
    let now = now_ms();
    json!({
        "id": s.id.to_string(),
        "clientId": s.id.to_string(),
        "transport": transport(s),
        "nsp": s.ns(),
        "data": data,
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": now,
            "secure": false,
            "time": iso_date(now),
            "url": parts.uri.to_string(),
            "xdomain": headers.contains_key("origin"),
        },
        "rooms": rooms,
    })
}

fn transport<A: Adapter>(s: &SocketRef<A>) -> &'static str {
    match s.transport_type() {
        socketioxide::TransportType::Polling => "polling",
        socketioxide::TransportType::Websocket => "websocket",
    }
}

fn server_stats<A: Adapter>(io: &SocketIo<A>, admin: &Admin, ctx: &Ctx) -> Value {
    let mut polling = 0;
    let mut total = 0;
    let namespaces: Vec<Value> = io
        .nsps()
        .into_iter()
        .map(|ns| {
            let name = ns.ns_path().to_string();
            let sockets = ns.sockets();
            total += sockets.len();
            polling += sockets.iter().filter(|s| transport(s) == "polling").count();
            json!({ "name": name, "socketsCount": sockets.len() })
        })
        .collect();
    // Engine.IO connections: the accept loop's count when it runs, else
    // the sockets (embedded servers).
    let clients = if ctx.connections.is_empty() {
        total
    } else {
        ctx.connections.len()
    };
    json!({
        "serverId": admin.server_id,
        "hostname": admin.hostname,
        "pid": std::process::id(),
        "uptime": admin.started.elapsed().as_secs_f64(),
        "clientsCount": clients,
        "pollingClientsCount": polling,
        "aggregatedEvents": [],
        "namespaces": namespaces,
    })
}

// ==== hooks from switchboard's own paths ====

fn dev(ctx: &Ctx) -> Option<&Admin> {
    ctx.admin.as_deref().filter(|a| a.development)
}

pub fn socket_connected<A: Adapter>(ctx: &Ctx, s: &SocketRef<A>) {
    if let Some(admin) = dev(ctx) {
        admin.send(
            "socket_connected",
            vec![serialize(s), Value::String(iso_date(now_ms()))],
        );
    }
}

pub fn socket_disconnected<A: Adapter>(ctx: &Ctx, s: &SocketRef<A>, reason: DisconnectReason) {
    if let Some(admin) = dev(ctx) {
        let reason = match reason {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::HeartbeatTimeout => "ping timeout",
            DisconnectReason::ClientNSDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNSDisconnect => "server namespace disconnect",
            DisconnectReason::ClosingServer => "server shutting down",
            DisconnectReason::MultipleHttpPollingError | DisconnectReason::PacketParsingError => {
                "parse error"
            }
        };
        admin.send(
            "socket_disconnected",
            vec![
                json!(s.ns()),
                json!(s.id.to_string()),
                json!(reason),
                Value::String(iso_date(now_ms())),
            ],
        );
    }
}

pub fn event_received<A: Adapter>(ctx: &Ctx, s: &SocketRef<A>, event: &str, data: &Option<Value>) {
    if let Some(admin) = dev(ctx) {
        let mut args = vec![json!(event)];
        args.extend(data.clone());
        admin.send(
            "event_received",
            vec![
                json!(s.ns()),
                json!(s.id.to_string()),
                Value::Array(args),
                Value::String(iso_date(now_ms())),
            ],
        );
    }
}

pub fn room_joined<A: Adapter>(ctx: &Ctx, s: &SocketRef<A>, room: &str) {
    room_event(ctx, s, room, "room_joined");
}

pub fn room_left<A: Adapter>(ctx: &Ctx, s: &SocketRef<A>, room: &str) {
    room_event(ctx, s, room, "room_left");
}

fn room_event<A: Adapter>(ctx: &Ctx, s: &SocketRef<A>, room: &str, event: &'static str) {
    if let Some(admin) = dev(ctx) {
        admin.send(
            event,
            vec![
                json!(s.ns()),
                json!(room),
                json!(s.id.to_string()),
                Value::String(iso_date(now_ms())),
            ],
        );
    }
}

// ==== small helpers ====

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `ms` since the epoch as JavaScript's `Date.toJSON()` writes it.
fn iso_date(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchboard".into())
}

#[cfg(test)]
mod tests {
    use super::iso_date;

    #[test]
    fn dates_as_javascript_writes_them() {
        assert_eq!(iso_date(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_date(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso_date(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
