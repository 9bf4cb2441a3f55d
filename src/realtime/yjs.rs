//! The y-socket.io provider's wire (docs/protocol.md §18). A client opens
//! namespace `/yjs|<docName>` with `auth: { token }`; the events carry
//! binary Yjs messages:
//!
//! * `sync-step-1` (a state vector), both ways: the client's is answered
//!   through its ack with what it lacks; the server's (sent on connect) is
//!   answered with what the server lacks, applied like an update;
//! * `sync-update`: checked, stored, applied, relayed to the namespace;
//! * `awareness-update`: applied and relayed; the server sends the whole
//!   awareness on connect, and removes a socket's clients when it goes.
//!
//! A refused connection gets `connect_error` with the reason; an update the
//! server will not take ends the socket (logged and counted). After such a
//! server disconnect socket.io-client does not come back by itself: the
//! app sees the provider's `connection-close` and may call `connect()`.
//!
//! What one client sends reaches the document's other clients through
//! [`deliver`]: this node's y-socket.io sockets and y-websocket peers
//! (`realtime::yjs_ws`), and the other nodes (`cluster::yjs_relay`).

use std::sync::Arc;

use bytes::Bytes;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef, State, TryData};

use super::Ctx;
use super::user_conns::{TooMany, UserConn};
use crate::auth::AuthError;
use crate::documents::store::DocKey;
use crate::yjs::{Kind, RelayEvent, YDoc, YDocs, YError, YRelayed};

/// The namespace pattern of y-socket.io's documents.
pub const NAMESPACE: &str = "/yjs|{doc}";
/// What precedes the document name in the namespace.
const PREFIX: &str = "/yjs|";
/// Awareness clients one socket may speak for (a provider has one).
pub const MAX_CLIENTS_PER_SOCKET: usize = 8;

/// The room of the token's `rooms` claim that stands for Yjs document `d`.
pub fn claim_room(doc: &str) -> String {
    format!("yjs:{doc}")
}

/// The room a document's sockets are in within its namespace: the tenant
/// scope, so that two tenants' documents of one name stay apart.
fn scope_room(key: &DocKey) -> String {
    key.namespace.clone()
}

/// A document's key for the identity's tenant.
pub fn doc_key(tenant: Option<&str>, name: &str) -> DocKey {
    let scope = tenant
        .map(|t| format!("/{t}"))
        .unwrap_or_else(|| "/".into());
    DocKey::new(&scope, name)
}

/// Where an update or awareness change came from: not sent back there.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A y-socket.io socket of this node.
    Socket(socketioxide::socket::Sid),
    /// A y-websocket peer of this node (its id in the document's fanout).
    Peer(u64),
    /// The backend (HTTP API).
    Backend,
    /// Another node (already relayed).
    Node,
}

/// Hands what one client sent (already applied and stored) to the
/// document's other clients: this node's sockets and peers, and the other
/// nodes unless it came from one. `seq` is an update's seq in the store.
pub(crate) async fn deliver<A: Adapter>(
    io: &SocketIo<A>,
    ydocs: &YDocs,
    doc: &YDoc,
    kind: Kind,
    seq: u64,
    bytes: Bytes,
    origin: Origin,
) {
    let event = match kind {
        Kind::Update => "sync-update",
        Kind::Awareness => "awareness-update",
    };
    if let Some(ops) = io.of(format!("{PREFIX}{}", doc.key.doc_id)) {
        let ops = ops.local().within(scope_room(&doc.key));
        let ops = match origin {
            Origin::Socket(sid) => ops.except(sid),
            _ => ops,
        };
        let _ = ops.emit(event, &bytes).await;
    }
    let from = match origin {
        Origin::Peer(id) => id,
        _ => 0,
    };
    doc.publish(kind, bytes.clone(), from);
    if !matches!(origin, Origin::Node) {
        ydocs.relay(&doc.key, kind, seq, bytes);
    }
}

/// The handler of what other nodes relay: one task takes the messages in
/// order (an update that finds this copy behind reads the store's tail).
/// Beyond `max_bytes` waiting, a message is dropped and counted (a later
/// update's seq shows the gap). Once the relay has subscribed again after
/// Redis was away, every loaded document reads the store's tail.
pub fn from_other_nodes<A: Adapter>(
    io: SocketIo<A>,
    ctx: Arc<Ctx>,
    max_bytes: usize,
) -> Arc<dyn Fn(RelayEvent) + Send + Sync> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RelayEvent>();
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taken = waiting.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let n = event_size(&event);
            // A task per message: a panic in one does not end the relay.
            let (io, ctx) = (io.clone(), ctx.clone());
            let _ = tokio::spawn(async move {
                match event {
                    RelayEvent::Message(m) => relayed(&io, &ctx, m).await,
                    RelayEvent::Subscribed => catch_up_all(&io, &ctx).await,
                }
            })
            .await;
            taken.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Arc::new(move |event| {
        let n = event_size(&event);
        let before = waiting.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if (before > 0 && before + n > max_bytes) || tx.send(event).is_err() {
            waiting.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("switchboard_redis_dropped_total", "path" => "yjs", "reason" => "consumer_behind")
                .increment(1);
        }
    })
}

fn event_size(event: &RelayEvent) -> usize {
    match event {
        RelayEvent::Message(m) => m.bytes.len() + 128,
        RelayEvent::Subscribed => 128,
    }
}

/// What another node relayed: applied to this node's copy if it has the
/// document loaded, and what changed handed to its clients here.
async fn relayed<A: Adapter>(io: &SocketIo<A>, ctx: &Ctx, m: YRelayed) {
    let send = match m.kind {
        Kind::Update => ctx.ydocs.apply_relayed(&m.key, m.bytes, m.seq).await,
        Kind::Awareness => ctx.ydocs.get_loaded(&m.key).and_then(|d| {
            let changed = d
                .awareness_apply_relayed(&m.bytes)
                .inspect_err(|e| tracing::debug!("a relayed awareness update was skipped: {e}"))
                .ok()
                .flatten()?;
            Some((d, Bytes::from(changed)))
        }),
    };
    if let Some((doc, bytes)) = send {
        deliver(io, &ctx.ydocs, &doc, m.kind, m.seq, bytes, Origin::Node).await;
    }
}

/// Every loaded document reads what the store holds after its copy (the
/// relay was away), and this node's clients get what it brought.
async fn catch_up_all<A: Adapter>(io: &SocketIo<A>, ctx: &Ctx) {
    for doc in ctx.ydocs.all_loaded() {
        catch_up(io, ctx, &doc, true).await;
    }
}

/// With several nodes, this node's copy may lack what the others stored:
/// the store's tail, handed to this node's clients (`now`: even if it was
/// read moments ago).
pub(crate) async fn catch_up<A: Adapter>(io: &SocketIo<A>, ctx: &Ctx, doc: &YDoc, now: bool) {
    if ctx.cluster.is_none() {
        return;
    }
    match ctx.ydocs.catch_up(doc, now).await {
        Ok(Some(brought)) => {
            deliver(io, &ctx.ydocs, doc, Kind::Update, 0, brought, Origin::Node).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(doc = doc.key.key(), "yjs document not caught up: {e}"),
    }
}

/// How often other nodes' awareness states are checked for age.
const EXPIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// The age past which another node's client's state is dropped: the
/// providers' own timeout (30 s, renewed every 15 s) and some slack.
pub const REMOTE_AWARENESS_MAX_AGE_MS: u64 = 35_000;

/// With several nodes: the cursors of another node's clients that were not
/// renewed in time (that node died) are removed, and this node's clients
/// told, so that newcomers are not sent them.
pub async fn expire_remote_awareness<A: Adapter>(io: SocketIo<A>, ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        for doc in ctx.ydocs.all_loaded() {
            if let Some(removal) = doc.awareness_expire(REMOTE_AWARENESS_MAX_AGE_MS) {
                let removal = Bytes::from(removal);
                deliver(
                    &io,
                    &ctx.ydocs,
                    &doc,
                    Kind::Awareness,
                    0,
                    removal,
                    Origin::Node,
                )
                .await;
            }
        }
    }
}

/// Whether an awareness message is within the connection's event rate.
/// One that changed nothing (a provider's echo of what it received) is
/// charged one time in [`QUIET_ECHOES`]: every client echoes every change,
/// so charging each would cut off the clients of a busy document.
pub(crate) fn awareness_within_rate(
    limits: &super::limits::SocketLimits,
    changed: bool,
    echoes: &std::sync::atomic::AtomicU32,
) -> bool {
    let nth = echoes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if changed || nth.is_multiple_of(QUIET_ECHOES) {
        return limits.event();
    }
    true
}

/// See [`awareness_within_rate`].
pub const QUIET_ECHOES: u32 = 10;

/// Who may open document `name`: a valid name, a valid token whose `rooms`
/// claim covers `yjs:<name>`, the join hook's yes (if one is set), and a
/// connection within the user's cap. The same for both providers.
pub(crate) async fn admit_identity(
    ctx: &Ctx,
    name: &str,
    token: Option<&str>,
) -> Result<(crate::auth::Identity, Arc<UserConn>, DocKey), YRefused> {
    if !crate::names::valid_room_id(name) {
        return Err(YRefused::Name);
    }
    let identity = ctx
        .verifier
        .verify_fresh(token.ok_or(AuthError::Missing)?)
        .await?;
    let room = claim_room(name);
    if !identity.may_join(&room) {
        return Err(YRefused::Forbidden);
    }
    let key = doc_key(identity.tenant.as_deref(), name);
    if let Some(hooks) = &ctx.hooks {
        match hooks.join(&key.namespace, &identity.user_id, &room).await {
            Ok(crate::hooks::Verdict::Refuse { message, .. }) => {
                return Err(YRefused::ByHook(message));
            }
            Ok(_) => {}
            Err(_) if hooks.join_fails_open() => {}
            Err(e) => return Err(YRefused::HookUnavailable(e.to_string())),
        }
    }
    let conn = ctx.user_conns.acquire(&identity.user_id)?;
    Ok((identity, conn, key))
}

/// Why a y-socket.io connection was refused (the client's `err.message`).
#[derive(Debug, thiserror::Error)]
pub enum YRefused {
    #[error("invalid document name: 1-128 characters of A-Z a-z 0-9 _ . : @ -")]
    Name,
    #[error("Authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("Forbidden: your token does not allow this document")]
    Forbidden,
    #[error("Forbidden: {0}")]
    ByHook(String),
    #[error("the join hook did not answer: {0}")]
    HookUnavailable(String),
    #[error(transparent)]
    TooMany(#[from] TooMany),
    #[error("{0}")]
    Doc(#[from] YError),
}

/// What a y-socket.io socket holds: its document (given back when the
/// socket is dropped, however it ends) and the awareness clients it spoke
/// for.
pub struct YSocket {
    docs: Arc<YDocs>,
    pub doc: Arc<YDoc>,
    /// The socket's key in the token-expiry schedule.
    expiry: u64,
    expiries: Arc<super::expiry::Expiries>,
    /// The socket's event bucket (`--events-per-sec`, `--event-burst`).
    limits: super::limits::SocketLimits,
    /// Awareness messages that changed nothing (see [`awareness_within_rate`]).
    echoes: std::sync::atomic::AtomicU32,
    _conn: Arc<UserConn>,
}

/// However the socket ends (socketioxide drops a socket whose CONNECT could
/// not be sent without running its disconnect handlers).
impl Drop for YSocket {
    fn drop(&mut self) {
        self.expiries.untrack(self.expiry);
        crate::metrics::yjs_connections(-1);
        self.docs.release(&self.doc);
    }
}

/// The connect middleware: the document's name, the token and its
/// permission, the user's connection cap, then the document (loaded if need
/// be). Handlers are registered here, before the CONNECT is answered.
pub(crate) async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<serde_json::Value>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) -> Result<(), YRefused> {
    // A made-up name is a namespace socketioxide keeps: removed again once
    // no socket is in it (see `namespaces`).
    let connecting = ctx.namespaces.connecting(s.ns());
    let result = admit(&s, auth.ok(), &ctx, &io).await;
    drop(connecting);
    if result.is_err() {
        ctx.namespaces.remove_if_empty(&io, s.ns(), None);
    }
    result
}

async fn admit<A: Adapter>(
    s: &SocketRef<A>,
    auth: Option<serde_json::Value>,
    ctx: &Arc<Ctx>,
    io: &SocketIo<A>,
) -> Result<(), YRefused> {
    let name = s.ns().strip_prefix(PREFIX).unwrap_or_default();
    let token = super::socket_token(s, auth.as_ref());
    let (identity, conn, key) = admit_identity(ctx, name, token.as_deref()).await?;
    let doc = ctx.ydocs.open(&key).await?;
    s.join(scope_room(&key));
    // Ended when its token expires, like any socket (the provider cannot
    // refresh a token: the app connects again with a fresh one).
    let target = TokenExpiry {
        io: io.clone(),
        ns: s.ns().to_string(),
        sid: s.id,
    };
    let expiry = ctx.expiries.track(identity.expires_at, Arc::new(target));
    s.extensions.insert(Arc::new(YSocket {
        docs: ctx.ydocs.clone(),
        doc,
        expiry,
        expiries: ctx.expiries.clone(),
        limits: ctx.limits.socket(),
        echoes: Default::default(),
        _conn: conn,
    }));
    s.on("sync-step-1", sync_step_1::<A>);
    s.on("sync-update", sync_update::<A>);
    s.on("awareness-update", awareness_update::<A>);
    s.on_disconnect(disconnected::<A>);
    crate::metrics::yjs_connections(1);
    Ok(())
}

fn ysocket<A: Adapter>(s: &SocketRef<A>) -> Option<Arc<YSocket>> {
    s.extensions.get::<Arc<YSocket>>()
}

/// Connected: the server's sync step 1, and the awareness of the others.
pub(crate) async fn connected<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) {
    if !ctx.namespaces.still_registered(&io, &s) {
        let _ = s.disconnect();
        return;
    }
    let Some(y) = ysocket(&s) else { return };
    catch_up(&io, &ctx, &y.doc, true).await;
    let sv = Bytes::from(y.doc.state_vector());
    if let Ok(answer) = s.emit_with_ack::<_, Bytes>("sync-step-1", &sv) {
        let s = s.clone();
        tokio::spawn(async move {
            if let Ok(update) = answer.await
                && !update.is_empty()
            {
                take_update(&ctx, &io, &s, &y, update).await;
            }
        });
    }
    if let Some(all) = ysocket(&s).and_then(|y| y.doc.awareness_all()) {
        let _ = s.emit("awareness-update", &Bytes::from(all));
    }
}

/// The client's sync step 1: answered with what it lacks.
async fn sync_step_1<A: Adapter>(
    s: SocketRef<A>,
    Data(sv): Data<Bytes>,
    ack: AckSender<A>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) {
    let Some(y) = ysocket(&s) else { return };
    if !within_rate(&s, &y) {
        return;
    }
    catch_up(&io, &ctx, &y.doc, false).await;
    match y.doc.diff(&sv) {
        Ok(update) => {
            let _ = ack.send(&Bytes::from(update));
        }
        Err(e) => refuse(&s, &e),
    }
}

async fn sync_update<A: Adapter>(
    s: SocketRef<A>,
    Data(update): Data<Bytes>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) {
    let Some(y) = ysocket(&s) else { return };
    if !within_rate(&s, &y) {
        return;
    }
    take_update(&ctx, &io, &s, &y, update).await;
}

/// Stores and applies an update from the socket, then hands it to the
/// others of the document (on every node).
async fn take_update<A: Adapter>(
    ctx: &Ctx,
    io: &SocketIo<A>,
    s: &SocketRef<A>,
    y: &YSocket,
    update: Bytes,
) {
    match ctx.ydocs.apply(&y.doc, &update).await {
        Ok(None) => {}
        Ok(Some(seq)) => {
            deliver(
                io,
                &ctx.ydocs,
                &y.doc,
                Kind::Update,
                seq,
                update,
                Origin::Socket(s.id),
            )
            .await;
        }
        Err(e) => refuse(s, &e),
    }
}

async fn awareness_update<A: Adapter>(
    s: SocketRef<A>,
    Data(update): Data<Bytes>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) {
    let Some(y) = ysocket(&s) else { return };
    let limit = y.docs.limits().max_awareness_bytes;
    let owner = s.id.to_string();
    let (changed, reply) =
        match y
            .doc
            .awareness_apply(&update, limit, &owner, MAX_CLIENTS_PER_SOCKET)
        {
            Ok(applied) => (applied.changed, applied.reply),
            Err(e) => return refuse(&s, &e),
        };
    if let Some(reply) = reply {
        let _ = s.emit("awareness-update", &Bytes::from(reply));
    }
    if !awareness_within_rate(&y.limits, changed.is_some(), &y.echoes) {
        return too_fast(&s);
    }
    if let Some(changed) = changed {
        let origin = Origin::Socket(s.id);
        let changed = Bytes::from(changed);
        deliver(&io, &ctx.ydocs, &y.doc, Kind::Awareness, 0, changed, origin).await;
    }
}

/// Gone: its awareness clients are removed, and the others told at once.
async fn disconnected<A: Adapter>(s: SocketRef<A>, io: SocketIo<A>, State(ctx): State<Arc<Ctx>>) {
    ctx.namespaces.remove_if_empty(&io, s.ns(), Some(s.id));
    let Some(y) = ysocket(&s) else { return };
    if let Some(removal) = y.doc.awareness_remove(&s.id.to_string()) {
        let removal = Bytes::from(removal);
        deliver(
            &io,
            &ctx.ydocs,
            &y.doc,
            Kind::Awareness,
            0,
            removal,
            Origin::Socket(s.id),
        )
        .await;
    }
}

/// Whether the socket's event is within `--events-per-sec`; past it the
/// socket is ended.
fn within_rate<A: Adapter>(s: &SocketRef<A>, y: &YSocket) -> bool {
    let within = y.limits.event();
    if !within {
        too_fast(s);
    }
    within
}

fn too_fast<A: Adapter>(s: &SocketRef<A>) {
    crate::metrics::limit_hit("events_per_sec");
    refuse(s, &"too many events: slow down");
}

/// Ends a socket whose message the server will not take: logged, counted
/// (the provider stays disconnected until the app connects it again).
fn refuse<A: Adapter>(s: &SocketRef<A>, why: &dyn std::fmt::Display) {
    tracing::info!(ns = s.ns(), sid = %s.id, "yjs message refused: {why}; disconnecting");
    crate::metrics::yjs_refused();
    let _ = s.clone().disconnect();
}

/// A y-socket.io socket in the token-expiry schedule: no warning (the
/// provider has no way to refresh), a disconnect at expiry.
struct TokenExpiry<A: Adapter> {
    io: SocketIo<A>,
    ns: String,
    sid: socketioxide::socket::Sid,
}

impl<A: Adapter> super::expiry::Expiring for TokenExpiry<A> {
    fn warn(&self, _exp: u64) {}

    fn expire(&self) {
        let Some(socket) = self.io.of(&self.ns).and_then(|ns| ns.get_socket(self.sid)) else {
            return;
        };
        tracing::info!(ns = socket.ns(), sid = %socket.id, "token expired; disconnecting");
        crate::metrics::server_disconnect("token_expired");
        let _ = socket.disconnect();
    }
}
