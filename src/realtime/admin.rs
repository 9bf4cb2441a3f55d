//! The server side of `@socket.io/admin-ui` 0.5 (`--admin-ui`): the `/admin`
//! namespace that the UI connects to, as the Node `instrument()` serves it.
//!
//! * Login: `auth: { username, password }` checked against the bcrypt hash
//!   (`--admin-password-hash`), or `auth: { sessionId }` from an earlier
//!   login (the `session` event). Without credentials (dev mode only) anyone
//!   on loopback may connect. Every password login costs one bcrypt check,
//!   whatever the user name (so names cannot be told apart by the time the
//!   answer takes); an address (IPv6: its /64) has one check at a time and
//!   waits, doubling, after `--admin-login-max-failures`; checks beyond the
//!   two running and `--admin-login-waiting` waiting are refused at once, so
//!   a flood cannot queue in front of the administrator.
//! * On connect: `session`, `config { supportedFeatures }`, `all_sockets`
//!   (development mode) and `server_stats`, which every node then sends
//!   every 2 s to the admin sockets of every node.
//! * Development mode: `socket_connected`, `socket_disconnected`,
//!   `room_joined` and `room_left` as switchboard's sockets come, go, join
//!   and leave rooms.
//! * `event_received` (development mode) for each event switchboard's
//!   sockets send, with its first argument (a placeholder above
//!   `--admin-ui-max-event-bytes`).
//! * Nothing the UI is sent carries a credential: headers, query parameters
//!   and event fields named like one (`*authorization`, `cookie`, `token`,
//!   `key`, `secret`, `password`…), JWT-shaped strings and `auth:refresh`'s
//!   argument are `"[redacted]"`; the address is the peer's, or the
//!   forwarded one from a `--trusted-proxy` only.
//! * Not sent: `event_sent`, `socket_updated`, and `aggregatedEvents` is
//!   always empty.
//! * Commands `emit`, `join`, `leave`, `_disconnect` with the filter of
//!   `instrument()`: a socket id or a room of the namespace, or none for
//!   every socket of it. They act on the sockets of the node the admin
//!   socket is connected to.
//!
//! When `--admin-ui` is off nothing here exists: `Ctx::admin` is `None` and
//! the hooks are one `Option` test.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
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
use subtle::ConstantTimeEq;
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
/// Addresses whose failed logins are remembered; past it the oldest go.
const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// What the UI is shown instead of a credential.
const REDACTED: &str = "[redacted]";

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
    /// (at most [`EVENTS_WAITING`] and `--admin-ui-queue-bytes` waiting: they
    /// only inform the UI, so more are dropped, and counted, rather than held
    /// when delivery stalls).
    events: std::sync::OnceLock<mpsc::Sender<Queued>>,
    /// Estimated JSON bytes of the events in `events`.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    /// `--admin-ui-max-event-bytes`.
    max_event_bytes: usize,
    trusted_proxies: Vec<IpAddr>,
    logins: Logins,
}

/// An event waiting for the `/admin` namespace, with its estimated size.
type Queued = (&'static str, Args, usize);

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
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: config.admin_ui_queue_bytes,
            max_event_bytes: config.admin_ui_max_event_bytes,
            trusted_proxies: config.trusted_proxies.clone(),
            logins: Logins::new(config),
        }))
    }

    fn send(&self, event: &'static str, args: Vec<Value>) {
        let Some(tx) = self.events.get() else { return };
        let size = args.iter().map(json_size).sum::<usize>();
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before + size > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            crate::metrics::limit_hit("admin_events_bytes");
            return;
        }
        if tx.try_send((event, Args(args), size)).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            crate::metrics::limit_hit("admin_events_waiting");
        }
    }

    /// What the UI is shown of an event's first argument: no credential,
    /// and a placeholder rather than a copy of a large payload.
    fn shown_argument(&self, event: &str, data: &Value) -> Value {
        // `auth:refresh` carries the new token.
        if secret_name(event) {
            return json!(REDACTED);
        }
        let size = json_size(data);
        if size > self.max_event_bytes {
            crate::metrics::limit_hit("admin_event_bytes");
            return json!(format!(
                "[{size} bytes, not shown: over --admin-ui-max-event-bytes]"
            ));
        }
        redacted(data)
    }
}

// ==== logins ====

/// Why an admin login was refused; the UI shows the message.
#[derive(Debug, thiserror::Error)]
pub enum LoginRefused {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed logins from your address: retry in {0} s")]
    Backoff(u64),
    #[error("a login from your address is being checked: retry once it is answered")]
    Busy,
    #[error("too many logins being checked: retry in a moment")]
    Full,
}

impl LoginRefused {
    fn limit(&self) -> Option<&'static str> {
        match self {
            LoginRefused::InvalidCredentials => None,
            LoginRefused::Backoff(_) => Some("admin_login_backoff"),
            LoginRefused::Busy => Some("admin_login_busy"),
            LoginRefused::Full => Some("admin_login_waiting"),
        }
    }
}

/// The login attempts of every address, and the password checks.
struct Logins {
    max_failures: u32,
    backoff: Duration,
    backoff_max: Duration,
    by_address: Arc<Mutex<HashMap<IpAddr, Attempts>>>,
    /// Checks running or waiting; a login that finds none left is refused
    /// at once rather than queued behind a flood (`--admin-login-waiting`).
    admitted: Arc<tokio::sync::Semaphore>,
    /// Checks running at once: bcrypt costs tens of milliseconds of CPU each
    /// on purpose, so they must not take every blocking thread.
    running: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug)]
struct Attempts {
    failures: u32,
    last_failure: Instant,
    checking: bool,
}

impl Logins {
    fn new(config: &Config) -> Logins {
        Logins {
            max_failures: config.admin_login_max_failures,
            backoff: Duration::from_millis(config.admin_login_backoff_ms),
            backoff_max: Duration::from_millis(config.admin_login_backoff_max_ms),
            by_address: Default::default(),
            admitted: Arc::new(tokio::sync::Semaphore::new(
                PASSWORD_CHECKS + config.admin_login_waiting,
            )),
            running: Arc::new(tokio::sync::Semaphore::new(PASSWORD_CHECKS)),
        }
    }

    /// How long an address with `failures` must wait after its last one.
    fn wait_after(&self, failures: u32) -> Duration {
        if self.max_failures == 0 || failures < self.max_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.max_failures).min(30);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }

    /// Failures are forgotten after this long without one (twice the
    /// longest wait: at the longest wait, an address keeps it).
    fn memory(&self) -> Duration {
        self.backoff_max.saturating_mul(2)
    }

    /// Starts a login attempt from `address`, unless it must wait or already
    /// has one being checked.
    fn begin(&self, address: IpAddr, now: Instant) -> Result<Attempt, LoginRefused> {
        let mut by_address = self.by_address.lock().unwrap();
        if by_address.len() >= MAX_TRACKED_ADDRESSES && !by_address.contains_key(&address) {
            self.prune(&mut by_address, now);
        }
        let a = by_address.entry(address).or_insert(Attempts {
            failures: 0,
            last_failure: now,
            checking: false,
        });
        if a.failures > 0 && now.saturating_duration_since(a.last_failure) >= self.memory() {
            a.failures = 0;
        }
        let until = a.last_failure + self.wait_after(a.failures);
        if until > now {
            let secs = (until - now).as_millis().div_ceil(1000) as u64;
            return Err(LoginRefused::Backoff(secs.max(1)));
        }
        if a.checking {
            return Err(LoginRefused::Busy);
        }
        a.checking = true;
        Ok(Attempt {
            by_address: self.by_address.clone(),
            address,
            failed: None,
        })
    }

    /// Makes room in a full table: forgets what is old, else the address
    /// whose last failure is the oldest.
    fn prune(&self, by_address: &mut HashMap<IpAddr, Attempts>, now: Instant) {
        let memory = self.memory();
        by_address.retain(|_, a| {
            a.checking || (a.failures > 0 && now.saturating_duration_since(a.last_failure) < memory)
        });
        if by_address.len() >= MAX_TRACKED_ADDRESSES
            && let Some(oldest) = by_address
                .iter()
                .filter(|(_, a)| !a.checking)
                .min_by_key(|(_, a)| a.last_failure)
                .map(|(ip, _)| *ip)
        {
            by_address.remove(&oldest);
        }
    }
}

/// One login being checked; on drop its address may try again, and its
/// failure (if any) counts.
struct Attempt {
    by_address: Arc<Mutex<HashMap<IpAddr, Attempts>>>,
    address: IpAddr,
    failed: Option<bool>,
}

impl Attempt {
    fn finish(mut self, ok: bool) {
        self.failed = Some(!ok);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut by_address = self.by_address.lock().unwrap();
        let Some(a) = by_address.get_mut(&self.address) else {
            return;
        };
        a.checking = false;
        match self.failed {
            Some(true) => {
                a.failures = a.failures.saturating_add(1);
                a.last_failure = Instant::now();
            }
            Some(false) => a.failures = 0,
            // Abandoned (the client went away): no answer was given.
            None => {}
        }
        if a.failures == 0 {
            by_address.remove(&self.address);
        }
    }
}

/// The address logins are counted by: the client's (see
/// [`crate::edge::conn_limits::client_ip`]); an IPv6 client's /64, which one
/// host usually has whole.
fn login_key(client: Option<IpAddr>) -> IpAddr {
    match client {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        Some(v4) => v4,
        // Embedded in another server, without the peer's address.
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// The client's address of a request: the peer, or the address a trusted
/// proxy forwarded (as the accept loop counts connections).
fn client_addr(parts: &axum::http::request::Parts, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()?
        .0
        .ip();
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|h| h.to_str().ok());
    Some(crate::edge::conn_limits::client_ip(
        peer, forwarded, trusted,
    ))
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

/// A fresh login's session id, for the connect handler to send.
#[derive(Clone)]
struct NewSession(String);

/// Starts the event and stats tasks; call once after registering `/admin`.
pub fn start<A: Adapter>(io: &SocketIo<A>, admin: &Arc<Admin>, ctx: &Arc<Ctx>) {
    let (tx, mut rx) = mpsc::channel::<Queued>(EVENTS_WAITING);
    if admin.events.set(tx).is_err() {
        return;
    }
    let events_io = io.clone();
    let events_admin = admin.clone();
    tokio::spawn(async move {
        while let Some((event, args, size)) = rx.recv().await {
            if let Some(ns) = events_io.of(NAMESPACE) {
                let _ = ns.emit(event, &args).await;
            }
            drop(args);
            events_admin.queued_bytes.fetch_sub(size, Ordering::AcqRel);
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
) -> Result<(), LoginRefused> {
    let Some(admin) = ctx.admin.clone() else {
        return Err(LoginRefused::InvalidCredentials);
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
    let address = login_key(client_addr(s.req_parts(), &admin.trusted_proxies));
    if let Err(refused) = check_password(&admin, &auth, &username, hash, address).await {
        if let Some(limit) = refused.limit() {
            crate::metrics::limit_hit(limit);
        }
        tracing::info!(ns = NAMESPACE, %address, reason = %refused, "admin login refused");
        return Err(refused);
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
    tracing::info!(ns = NAMESPACE, sid = %s.id, %address, "admin logged in");
    Ok(())
}

/// One password login from `address`, within its limits.
async fn check_password(
    admin: &Admin,
    auth: &Value,
    username: &str,
    hash: String,
    address: IpAddr,
) -> Result<(), LoginRefused> {
    let attempt = admin.logins.begin(address, Instant::now())?;
    let given_user = auth.get("username").and_then(Value::as_str);
    let password = auth.get("password").and_then(Value::as_str);
    if given_user.is_none() && password.is_none() {
        // No credentials, or a session id that is not (or no longer) known:
        // nothing to check, but a guess all the same.
        attempt.finish(false);
        return Err(LoginRefused::InvalidCredentials);
    }
    // The name is compared in constant time and the password is checked
    // whatever the name, so that the time of the answer says nothing of it.
    let name_ok: bool = given_user
        .unwrap_or_default()
        .as_bytes()
        .ct_eq(username.as_bytes())
        .into();
    let password = password.unwrap_or_default().to_string();
    let Ok(admitted) = admin.logins.admitted.clone().try_acquire_owned() else {
        return Err(LoginRefused::Full);
    };
    // bcrypt takes tens of milliseconds on purpose: not on the runtime, and
    // a few at a time.
    let Ok(running) = admin.logins.running.clone().acquire_owned().await else {
        return Err(LoginRefused::Full);
    };
    // The check owns its permits and its attempt: a client that goes away
    // mid-check neither frees a slot early nor escapes the failure count.
    let ok = tokio::task::spawn_blocking(move || {
        let _permits = (admitted, running);
        let ok = name_ok & bcrypt::verify(password, &hash).unwrap_or(false);
        attempt.finish(ok);
        ok
    })
    .await
    .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(LoginRefused::InvalidCredentials)
    }
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
        let _ = s.emit("all_sockets", &all_sockets(&io, &admin));
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
            move_in_room(&io, &ctx, args, Move::Join)
        },
    );
    s.on(
        "leave",
        async |io: SocketIo<A>, State(ctx): State<Arc<Ctx>>, TryData::<Args>(args)| {
            move_in_room(&io, &ctx, args, Move::Leave)
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

/// The UI's `join` and `leave` commands.
#[derive(Clone, Copy)]
enum Move {
    Join,
    Leave,
}

/// `join`/`leave` `(nsp, room, filter?)`: moves the sockets of `nsp` that
/// `filter` selects into or out of `room`, and tells the UI.
fn move_in_room<A: Adapter, E>(io: &SocketIo<A>, ctx: &Ctx, args: Result<Args, E>, how: Move) {
    let Ok(Args(args)) = args else { return };
    let (Some(nsp), Some(room)) = (arg_str(&args, 0), arg_str(&args, 1)) else {
        return;
    };
    for target in targets(io, &nsp, arg_str(&args, 2).as_deref()) {
        match how {
            Move::Join => {
                target.join(room.clone());
                room_joined(ctx, &target, &room);
            }
            Move::Leave => {
                target.leave(room.clone());
                room_left(ctx, &target, &room);
            }
        }
    }
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
fn all_sockets<A: Adapter>(io: &SocketIo<A>, admin: &Admin) -> Vec<Value> {
    io.nsps()
        .into_iter()
        .filter(|ns| ns.ns_path() != NAMESPACE)
        .flat_map(|ns| ns.sockets())
        .map(|s| serialize(&s, admin))
        .collect()
}

/// A socket as `instrument()` serializes it, without its credentials.
pub fn serialize<A: Adapter>(s: &SocketRef<A>, admin: &Admin) -> Value {
    let parts = s.req_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes());
            let shown = if secret_name(k.as_str()) || looks_like_jwt(&v) {
                REDACTED.to_string()
            } else if k == axum::http::header::REFERER {
                redacted_url(&v)
            } else {
                v.into_owned()
            };
            (k.as_str().to_string(), Value::String(shown))
        })
        .collect();
    let (query, shown_query) = redacted_query(parts.uri.query().unwrap_or_default());
    let url = match parts.uri.query() {
        Some(_) => format!("{}?{shown_query}", parts.uri.path()),
        None => parts.uri.path().to_string(),
    };
    let address = client_addr(parts, &admin.trusted_proxies)
        .map(|ip| ip.to_string())
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
            "url": url,
            "xdomain": headers.contains_key("origin"),
        },
        "rooms": rooms,
    })
}

// ==== what the UI must not see ====

/// A header, query parameter, field or event named like a credential:
/// `authorization`, `proxy-authorization`, `cookie`, `token`,
/// `access_token`, `x-api-key`, `secret`, `password`, `auth:refresh`…
fn secret_name(name: &str) -> bool {
    const WORDS: [&str; 11] = [
        "auth",
        "token",
        "key",
        "secret",
        "passw",
        "pwd",
        "cookie",
        "session",
        "jwt",
        "signature",
        "credential",
    ];
    let name = name.to_ascii_lowercase();
    WORDS.iter().any(|w| name.contains(w))
}

/// Whether `s` holds a JWT (`eyJ…`.`…`.`…`) anywhere, whatever it is named.
fn looks_like_jwt(s: &str) -> bool {
    s.contains("eyJ")
        && s.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .any(|piece| piece.starts_with("eyJ") && piece.matches('.').count() == 2)
}

/// A query string's parameters (decoded) and the query string itself, with
/// the values of credentials replaced.
fn redacted_query(query: &str) -> (serde_json::Map<String, Value>, String) {
    let mut params = serde_json::Map::new();
    let mut shown = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = crate::auth::percent_decode(k).into_owned();
        let value = crate::auth::percent_decode(v);
        if secret_name(&name) || looks_like_jwt(&value) {
            shown.push(format!("{k}={REDACTED}"));
            params.insert(name, json!(REDACTED));
        } else {
            shown.push(pair.to_string());
            params.insert(name, Value::String(value.into_owned()));
        }
    }
    (params, shown.join("&"))
}

/// A URL (a `Referer`) with the values of credentials in its query replaced.
fn redacted_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{}", redacted_query(query).1),
        None => url.to_string(),
    }
}

/// A copy of an event argument without credentials: fields named like one
/// and JWT-shaped strings are replaced.
fn redacted(v: &Value) -> Value {
    match v {
        Value::String(s) if looks_like_jwt(s) => json!(REDACTED),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if secret_name(k) {
                        json!(REDACTED)
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// About the length of `v` in JSON (escapes and number digits estimated),
/// without writing it.
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(fields) => {
            2 + fields
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
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
            vec![serialize(s, admin), Value::String(iso_date(now_ms()))],
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
        args.extend(data.as_ref().map(|d| admin.shown_argument(event, d)));
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
    use super::*;

    fn logins(max_failures: u32) -> Logins {
        Logins::new(&Config {
            admin_login_max_failures: max_failures,
            admin_login_backoff_ms: 1000,
            admin_login_backoff_max_ms: 4000,
            ..Config::default()
        })
    }

    #[test]
    fn one_check_per_address_and_backoff_after_failures() {
        let l = logins(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = l.begin(a, Instant::now()).unwrap();
        assert!(matches!(
            l.begin(a, Instant::now()),
            Err(LoginRefused::Busy)
        ));
        // another address is not held up
        l.begin(b, Instant::now()).unwrap().finish(true);
        first.finish(false);
        l.begin(a, Instant::now()).unwrap().finish(false);
        // two failures: 1 s, then 2 s after the next, up to 4 s
        assert!(matches!(
            l.begin(a, Instant::now()),
            Err(LoginRefused::Backoff(1))
        ));
        l.begin(a, Instant::now() + Duration::from_millis(1100))
            .unwrap()
            .finish(false);
        assert!(matches!(
            l.begin(a, Instant::now()),
            Err(LoginRefused::Backoff(2))
        ));
        assert_eq!(l.wait_after(10), Duration::from_secs(4));
        // forgotten after twice the longest wait without a failure
        l.begin(a, Instant::now() + Duration::from_secs(9))
            .unwrap()
            .finish(false);
        assert!(l.begin(a, Instant::now()).is_ok());
        // an abandoned check leaves nothing behind
        drop(l.begin(b, Instant::now()).unwrap());
        assert!(l.by_address.lock().unwrap().get(&b).is_none());
    }

    #[test]
    fn no_backoff_with_zero_failures_allowed() {
        let l = logins(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..20 {
            l.begin(a, Instant::now()).unwrap().finish(false);
        }
    }

    #[test]
    fn addresses_counted_by_ipv6_slash_64() {
        let k = |s: &str| login_key(Some(s.parse().unwrap()));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:127.0.0.2"), k("127.0.0.2"));
        assert_eq!(login_key(None), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn credentials_are_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
            "access_token",
            "Token",
            "client_secret",
            "password",
            "auth:refresh",
        ] {
            assert!(secret_name(name), "{name}");
        }
        for name in [
            "user-agent",
            "x-forwarded-for",
            "EIO",
            "transport",
            "sid",
            "room",
        ] {
            assert!(!secret_name(name), "{name}");
        }
        assert!(looks_like_jwt(jwt));
        assert!(looks_like_jwt(&format!("Bearer {jwt}")));
        assert!(!looks_like_jwt("eyJ not one"));

        let (params, shown) = redacted_query(&format!(
            "EIO=4&transport=polling&token={jwt}&acc%65ss_token=x&t={jwt}&n=a%20b"
        ));
        assert!(!shown.contains(jwt) && !shown.contains("=x"), "{shown}");
        assert!(shown.starts_with("EIO=4&transport=polling&token=[redacted]"));
        assert_eq!(params["access_token"], REDACTED);
        assert_eq!(params["t"], REDACTED);
        assert_eq!(params["n"], "a b");
        assert_eq!(
            redacted_url(&format!("https://app.example/chat?room=1&token={jwt}")),
            "https://app.example/chat?room=1&token=[redacted]"
        );

        let arg = json!({ "token": "abc", "nested": [{ "apiKey": 1 }, jwt], "text": "hi" });
        assert_eq!(
            redacted(&arg),
            json!({ "token": REDACTED, "nested": [{ "apiKey": REDACTED }, REDACTED], "text": "hi" })
        );
    }

    #[test]
    fn sizes_are_estimated_without_writing() {
        let v = json!({ "a": "x".repeat(1000), "b": [1, 2, null] });
        let written = serde_json::to_string(&v).unwrap().len();
        let estimated = json_size(&v);
        assert!(
            estimated >= written && estimated < written + 64,
            "{estimated} vs {written}"
        );
    }

    #[test]
    fn dates_as_javascript_writes_them() {
        assert_eq!(iso_date(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_date(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso_date(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
