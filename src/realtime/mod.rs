//! The Socket.IO side: namespace registration, the JWT connect middleware, and
//! the dispatch of client events to the handlers of each concern.

pub mod ack;
pub mod admin;
pub mod binary;
pub mod broadcast;
pub mod chat;
pub mod closing;
pub mod docs;
pub mod expiry;
pub mod hooks;
pub mod incoming;
pub mod limits;
pub mod messages;
pub mod namespaces;
pub mod online;
pub mod order;
pub mod patterns;
pub mod positions;
pub mod private;
pub mod recover;
pub mod refresh;
pub mod reply;
pub mod rooms;
pub mod session;
pub mod slow;
pub mod tasks;
pub mod typing;
pub mod user_conns;
pub mod yjs;
pub mod yjs_ws;

use std::sync::Arc;

use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use tokio::sync::oneshot;

use crate::auth::{AuthError, Verifier, find_token};
use crate::config::Config;
use crate::presence::Presence;
use crate::store::MessageStore;
use incoming::QueueEvents;
use reply::Code;
use session::{Incoming, Job, Session};
use typing::Typing;

/// Everything the handlers share.
pub struct Ctx {
    pub config: Config,
    pub verifier: Verifier,
    pub store: Arc<dyn MessageStore>,
    /// Collaborative documents (in the same database as the messages).
    pub docs: Arc<crate::documents::Docs>,
    /// Yjs documents (see `yjs`).
    pub ydocs: Arc<crate::yjs::YDocs>,
    pub presence: Presence,
    /// Who is connected, per namespace (see `online`).
    pub online: Presence,
    pub typing: Typing,
    pub feeds: Arc<crate::feeds::Feeds>,
    /// The Redis connection when running as one of several nodes.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Presence across nodes, when running as one of several.
    pub cluster: Option<crate::presence::cluster::ClusterPresence>,
    /// The connections the accept loop guards (empty when embedded in
    /// another server).
    pub connections: Arc<crate::edge::guarded_io::Connections>,
    /// Child namespaces of patterns, removed when empty.
    pub namespaces: namespaces::DynNamespaces,
    /// Message and event rate limits.
    pub limits: limits::Limits,
    /// Token deadlines of the sockets.
    pub expiries: Arc<expiry::Expiries>,
    /// Each conversation's messages delivered in seq order (`order`).
    pub delivery_order: Arc<order::DeliveryOrder>,
    /// The Admin UI, with `--admin-ui` only.
    pub admin: Option<Arc<admin::Admin>>,
    /// Connections per user (`--max-connections-per-user`).
    pub user_conns: Arc<user_conns::UserConns>,
    /// Connection state recovery, unless `--recovery-window 0`.
    pub recovery: Option<Arc<crate::recovery::Recovery>>,
    /// Webhooks, with `--webhook-url`.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// The backend's hooks (join, publish, rpc), when any is configured.
    pub hooks: Option<Arc<dyn crate::hooks::Hooks>>,
}

/// A refused connection; the client reads the display text as `err.message`.
#[derive(Debug, thiserror::Error)]
#[error("Authentication failed: {0}")]
pub struct AuthFailure(pub AuthError);

/// Why a CONNECT was refused; the client reads the text as `err.message`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefused {
    #[error(transparent)]
    Auth(#[from] AuthFailure),
    #[error(transparent)]
    TooMany(#[from] user_conns::TooMany),
}

/// Registers `/` and the configured tenant namespaces (single node).
pub fn register(
    io: &SocketIo<LocalAdapter>,
    config: &Config,
) -> Result<(), socketioxide::NsInsertError> {
    let handler = || connected::<LocalAdapter>.with(authenticate::<LocalAdapter>);
    io.ns("/", handler());
    for ns in &config.namespaces {
        if ns.contains('{') {
            io.dyn_ns(ns.clone(), handler())?;
        } else {
            io.ns(ns.clone(), handler());
        }
    }
    if config.admin_ui {
        io.ns(
            admin::NAMESPACE,
            admin::connected::<LocalAdapter>.with(admin::authenticate::<LocalAdapter>),
        );
    }
    if config.yjs_socketio() {
        io.dyn_ns(
            yjs::NAMESPACE,
            yjs::connected::<LocalAdapter>.with(yjs::authenticate::<LocalAdapter>),
        )?;
    }
    Ok(())
}

/// The connect middleware: verifies the JWT and sets the socket up.
///
/// Handlers are registered here rather than in the connect handler because
/// socketioxide sends the CONNECT packet before it spawns the connect handler:
/// events the client sends right away would otherwise find no handler.
pub(crate) async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<serde_json::Value>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) -> Result<(), ConnectRefused> {
    let connecting = ctx.namespaces.connecting(s.ns());
    let auth = auth.ok();
    let result = match identify(&s, auth.as_ref(), &ctx).await {
        Ok(identity) => admit(&s, identity, &ctx, &io),
        Err(e) => Err(e),
    };
    if result.is_ok() {
        recover::begin(&s, auth.as_ref()).await;
    }
    drop(connecting);
    if result.is_err() {
        ctx.namespaces.remove_if_empty(&io, s.ns(), None);
    }
    result
}

/// The token a connecting socket presents: its handshake `auth.token`, an
/// `Authorization: Bearer` header, or the `token` query parameter.
pub(crate) fn socket_token<A: Adapter>(
    s: &SocketRef<A>,
    auth: Option<&serde_json::Value>,
) -> Option<String> {
    let parts = s.req_parts();
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    find_token(auth, header, parts.uri.query()).map(|t| t.into_owned())
}

/// Finds and verifies the connection's token.
async fn identify<A: Adapter>(
    s: &SocketRef<A>,
    auth: Option<&serde_json::Value>,
    ctx: &Arc<Ctx>,
) -> Result<crate::auth::Identity, ConnectRefused> {
    let token = socket_token(s, auth).ok_or(AuthFailure(AuthError::Missing))?;
    let identity = ctx.verifier.verify_fresh(&token).await.map_err(|e| {
        tracing::debug!(ns = s.ns(), reason = %e, "connection refused");
        AuthFailure(e)
    })?;
    Ok(identity)
}

/// Sets the socket of a verified user up, or says why not.
fn admit<A: Adapter>(
    s: &SocketRef<A>,
    identity: crate::auth::Identity,
    ctx: &Arc<Ctx>,
    io: &SocketIo<A>,
) -> Result<(), ConnectRefused> {
    let parts = s.req_parts();
    if !identity.may_open(s.ns()) {
        tracing::debug!(ns = s.ns(), user = identity.user_id, "wrong tenant");
        return Err(AuthFailure(AuthError::WrongTenant).into());
    }
    let user_conn = ctx.user_conns.acquire(&identity.user_id).inspect_err(|_| {
        tracing::debug!(ns = s.ns(), user = identity.user_id, "too many connections");
    })?;
    s.extensions.insert(user_conn);
    let exp = identity.expires_at;
    let session = Arc::new(Session::<A>::new(
        identity,
        ctx.clone(),
        s.ns(),
        &s.id.to_string(),
        parts
            .extensions
            .get::<crate::edge::conn_limits::ClientAddr>()
            .map(|a| a.0),
    ));
    s.join(session.user_room());
    let target = refresh::SocketExpiry {
        io: io.clone(),
        ns: s.ns().to_string(),
        sid: s.id,
    };
    let _ = session
        .expiry
        .set(ctx.expiries.track(exp, Arc::new(target)));
    if online::tracked(ctx) {
        // Held until the socket is connected (`connected` releases it): a
        // CONNECT that fails never runs its disconnect handler, so nothing
        // may be counted for it.
        session.hold();
        let _ = session.push(s.clone(), Job::Online);
    }
    s.extensions.insert(session);
    s.on_fallback(QueueEvents);
    s.on_disconnect(disconnected::<A>);
    crate::metrics::connection_opened(ctx.namespaces.label(s.ns()));
    admin::socket_connected(ctx, s);
    Ok(())
}

pub(crate) async fn connected<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<Arc<Ctx>>,
    io: SocketIo<A>,
) {
    if !ctx.namespaces.still_registered(&io, &s) {
        tracing::info!(ns = s.ns(), sid = %s.id, "namespace removed while connecting; closing");
        let _ = s.disconnect();
        return;
    }
    if let Some(session) = s.extensions.get::<Arc<Session<A>>>() {
        tracing::debug!(ns = s.ns(), sid = %s.id, user = session.identity.user_id, "connected");
    }
    recover::connected(&s);
}

/// Runs the socket's clean-up through its queue, after any event still
/// waiting, so nothing the socket did can outlive it.
async fn disconnected<A: Adapter>(
    s: SocketRef<A>,
    io: SocketIo<A>,
    reason: socketioxide::socket::DisconnectReason,
) {
    user_conns::release(&s);
    let Some(session) = s.extensions.get::<Arc<Session<A>>>() else {
        return;
    };
    admin::socket_disconnected(&session.ctx, &s, reason);
    tracing::debug!(ns = s.ns(), sid = %s.id, user = session.identity.user_id, "disconnected");
    crate::metrics::connection_closed(session.ctx.namespaces.label(s.ns()));
    if let Some(key) = session.expiry.get() {
        session.ctx.expiries.untrack(*key);
    }
    let (tx, rx) = oneshot::channel();
    let recoverable = recover::recoverable(reason);
    if session
        .push(s.clone(), Job::Disconnect(tx, recoverable))
        .is_ok()
    {
        let _ = rx.await;
    }
    session
        .ctx
        .namespaces
        .remove_if_empty(&io, s.ns(), Some(s.id));
}

/// Ends `socket` on the server's initiative: it gets `server:closing
/// { reason }` and then a Socket.IO disconnect (socket.io-client does not
/// reconnect by itself after one: the application decides, e.g. after
/// fetching a new token). See `closing` for how nothing owed is lost.
pub use closing::closing;

/// Runs one job of a socket's queue (see `session`): an event, or the
/// clean-up once the socket is gone. Every path through a socket's life is
/// started from here, above the concern files.
pub(crate) async fn run<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>, job: Job<A>) {
    match job {
        Job::Event(incoming) => dispatch(session, socket, incoming).await,
        Job::Disconnect(done, recoverable) => {
            recover::keep(session, socket, recoverable);
            rooms::on_disconnect(session, socket).await;
            online::went(session, socket).await;
            let _ = done.send(());
        }
        Job::Recover(restored) => recover::restore(session, socket, *restored).await,
        Job::Barrier(done) => {
            let _ = done.send(());
        }
        Job::Online => online::came(session, socket).await,
    }
}

/// Routes one client event to its handler.
async fn dispatch<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    incoming: Incoming<A>,
) {
    let Incoming {
        event,
        data,
        binary,
        ack,
    } = incoming;
    if let Some(reason) = session.closing_reason() {
        let (code, why) = closing::refusal(reason);
        return reply::error(ack, code, &why);
    }
    admin::event_received(&session.ctx, socket, &event, &data);
    crate::metrics::event_in(&event);
    if binary {
        return reply::error(ack, Code::InvalidPayload, binary::REFUSED);
    }
    match event.as_str() {
        "room:join" => rooms::join(session, socket, data, ack, rooms::Dialect::Room).await,
        "chat:join" => rooms::join(session, socket, data, ack, rooms::Dialect::Chat).await,
        "room:leave" => rooms::leave(session, socket, data, ack).await,
        "room:members" => rooms::members(session, socket, data, ack).await,
        "chat:send" => chat::send(session, socket, data, ack, chat::Dialect::Send).await,
        "chat:message" => chat::send(session, socket, data, ack, chat::Dialect::Message).await,
        "private:send" => private::send(session, socket, data, ack).await,
        "chat:history" => chat::history(session, socket.ns(), data, ack).await,
        "typing:start" => typing::start(session, socket, data, ack).await,
        "typing:stop" => typing::stop(session, socket, data, ack).await,
        "ping" => chat::ping(socket, data, ack).await,
        "auth:refresh" => refresh::refresh(session, socket, data, ack).await,
        "doc:join" => docs::join(session, socket, data, ack).await,
        "doc:operation" => docs::operation(session, socket, data, ack).await,
        "doc:cursor" => docs::cursor(session, socket, data, ack).await,
        "doc:leave" => docs::leave(session, socket, data, ack),
        _ if hooks::is_rpc(session, &event) => hooks::rpc(session, socket, &event, data, ack).await,
        _ if crate::edge::escaped_names::is_marked(&event) => {
            tracing::debug!("event name with escapes refused");
            reply::error(
                ack,
                Code::InvalidPayload,
                "event names with JSON escapes (\\\" \\\\ \\u…) or DEL characters are not supported",
            );
        }
        _ => {
            tracing::debug!(event, "unknown event");
            reply::error(ack, Code::NotFound, "unknown event");
        }
    }
}
