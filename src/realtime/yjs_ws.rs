//! The y-websocket provider's wire (docs/protocol.md §18): one websocket
//! per document at `/yjs/<docName>`, the token in the `token` query
//! parameter (or, without it, in an auth message sent first), messages as
//! `yjs::wire` reads them. The same documents as y-socket.io's: what one
//! provider's client sends reaches the other's (`realtime::yjs::deliver`).
//!
//! A refusal is y-protocols' "permission denied" with the reason, then a
//! close whose code tells the provider whether to come back: 4400-4499
//! (bad name, bad token, forbidden, a message it must not send again) stop
//! it; 1008 (too fast) and 1013 (server busy, or the peer read too slowly)
//! let it reconnect with its backoff and sync again from what is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use super::Ctx;
use super::user_conns::UserConn;
use super::yjs::{Origin, claim_room, deliver, doc_key};
use crate::auth::AuthError;
use crate::yjs::wire::{self, Message};
use crate::yjs::{Kind, YDoc, YError};

/// Longest a write to a peer may take before it is closed as not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a closed peer is read from, waiting for its close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Peer ids (unique on this node; 0 stands for none).
static NEXT_PEER: AtomicU64 = AtomicU64::new(1);

/// Why a peer is closed: the close code and the reason it reads.
#[derive(Debug)]
struct Close(u16, String);

impl Close {
    fn stop(code: u16, why: impl std::fmt::Display) -> Self {
        Close(code, why.to_string())
    }
}

impl From<YError> for Close {
    fn from(e: YError) -> Self {
        match e {
            YError::Busy | YError::Store(_) => Close(1013, e.to_string()),
            YError::UpdateTooLarge(_) | YError::DocTooLarge(_) => Close(4413, e.to_string()),
            YError::Malformed(_) => Close(4400, e.to_string()),
        }
    }
}

/// The largest message a peer may send: an update (or awareness update)
/// and a few bytes of framing.
pub fn max_message_bytes(ctx: &Ctx) -> usize {
    let limits = ctx.ydocs.limits();
    limits.max_update_bytes.max(limits.max_awareness_bytes) + 64
}

/// One peer, from its token to its close (the upgrade is `http::yjs_ws`'s).
pub async fn serve<A: Adapter>(
    io: SocketIo<A>,
    ctx: Arc<Ctx>,
    socket: WebSocket,
    name: String,
    token: Option<String>,
) {
    let (mut tx, mut rx) = socket.split();
    let peer = match admit(&ctx, &mut rx, &name, token).await {
        Ok(p) => p,
        Err(Close(code, why)) => {
            crate::metrics::yjs_refused();
            tracing::info!(doc = name, "y-websocket peer refused: {why}");
            let _ = send(&mut tx, wire::permission_denied(&why)).await;
            close(&mut tx, &mut rx, code, &why).await;
            return;
        }
    };
    crate::metrics::yjs_connections(1);
    let expired = Arc::new(tokio::sync::Notify::new());
    let expiry = ctx.expiries.track(
        peer.expires_at,
        Arc::new(Expiry(expired.clone())) as Arc<dyn super::expiry::Expiring>,
    );
    let end = run(&io, &ctx, &peer, &mut tx, &mut rx, &expired).await;
    ctx.expiries.untrack(expiry);
    crate::metrics::yjs_connections(-1);
    if let Some(Close(code, why)) = end {
        tracing::info!(doc = name, "y-websocket peer closed: {why}");
        if code != 1000 {
            crate::metrics::yjs_refused();
        }
        close(&mut tx, &mut rx, code, &why).await;
    }
    // Its cursor goes at once, for everyone.
    if let Some(removal) = peer.doc.awareness_remove(&peer.owner()) {
        let removal = Bytes::from(removal);
        deliver(
            &io,
            &ctx.ydocs,
            &peer.doc,
            Kind::Awareness,
            0,
            removal,
            Origin::Peer(peer.id),
        )
        .await;
    }
    ctx.ydocs.release(&peer.doc);
}

/// An admitted peer: its document (held until it goes) and its bounds.
struct Peer {
    id: u64,
    doc: Arc<YDoc>,
    expires_at: u64,
    limits: super::limits::SocketLimits,
    _conn: Arc<UserConn>,
}

impl Peer {
    /// Its name as the owner of awareness clients.
    fn owner(&self) -> String {
        format!("ws:{}", self.id)
    }
}

/// The name, the token (from the URL, or an auth message within
/// `--connect-timeout-ms`), its permission, the user's connection cap, and
/// the document.
async fn admit(
    ctx: &Arc<Ctx>,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    name: &str,
    token: Option<String>,
) -> Result<Peer, Close> {
    if !crate::names::valid_room_id(name) {
        return Err(Close::stop(4400, super::yjs::YRefused::Name));
    }
    let token = match token {
        Some(t) => t,
        None => {
            let wait = Duration::from_millis(ctx.config.connect_timeout_ms);
            match tokio::time::timeout(wait, rx.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => match wire::decode(&b) {
                    Ok(Message::Auth(t)) => t.to_string(),
                    _ => return Err(Close::stop(4401, auth_failed(AuthError::Missing))),
                },
                Ok(_) => return Err(Close::stop(4401, auth_failed(AuthError::Missing))),
                Err(_) => {
                    crate::metrics::limit_hit("connect_timeout_ms");
                    return Err(Close::stop(4408, "no token in time (--connect-timeout-ms)"));
                }
            }
        }
    };
    let identity = ctx
        .verifier
        .verify_fresh(&token)
        .await
        .map_err(|e| Close::stop(4401, auth_failed(e)))?;
    if !identity.may_join(&claim_room(name)) {
        return Err(Close::stop(4403, super::yjs::YRefused::Forbidden));
    }
    let conn = ctx
        .user_conns
        .acquire(&identity.user_id)
        .map_err(|e| Close(1013, e.to_string()))?;
    let doc = ctx
        .ydocs
        .open(&doc_key(identity.tenant.as_deref(), name))
        .await?;
    Ok(Peer {
        id: NEXT_PEER.fetch_add(1, Ordering::Relaxed),
        doc,
        expires_at: identity.expires_at,
        limits: ctx.limits.socket(),
        _conn: conn,
    })
}

fn auth_failed(e: AuthError) -> String {
    super::yjs::YRefused::Auth(e).to_string()
}

/// The connected peer: the server's sync step 1 and the awareness of the
/// others, then its messages, the others' (through the document's fanout),
/// and pings, until one side ends it. Returns the close to send, if any.
async fn run<A: Adapter>(
    io: &SocketIo<A>,
    ctx: &Arc<Ctx>,
    peer: &Peer,
    tx: &mut futures_util::stream::SplitSink<WebSocket, WsMessage>,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    expired: &tokio::sync::Notify,
) -> Option<Close> {
    // Subscribed first: nothing applied from here on is missed.
    let mut others = peer.doc.subscribe();
    if ctx.cluster.is_some()
        && let Err(e) = ctx.ydocs.catch_up(&peer.doc).await
    {
        tracing::warn!(doc = peer.doc.key.key(), "yjs document not caught up: {e}");
    }
    send(tx, wire::sync_step1(&peer.doc.state_vector()))
        .await
        .ok()?;
    if let Some(all) = peer.doc.awareness_all() {
        send(tx, wire::awareness(&all)).await.ok()?;
    }
    let ping_every = ctx.config.ping_interval();
    let dead_after = ping_every + ctx.config.ping_timeout();
    let mut pings = tokio::time::interval(ping_every);
    pings.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            msg = rx.next() => {
                heard = tokio::time::Instant::now();
                match msg {
                    Some(Ok(WsMessage::Binary(b))) => {
                        match take(io, ctx, peer, &b).await {
                            Ok(Some(answer)) => send(tx, answer).await.ok()?,
                            Ok(None) => {}
                            Err(close) => return Some(close),
                        }
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        return Some(Close::stop(4400, "y-websocket messages are binary"));
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
            relayed = others.recv() => match relayed {
                Ok(m) if m.from == peer.id => {}
                Ok(m) => {
                    let frame = match m.kind {
                        Kind::Update => wire::update(&m.bytes),
                        Kind::Awareness => wire::awareness(&m.bytes),
                    };
                    send(tx, frame).await.ok()?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    crate::metrics::server_disconnect("slow_consumer");
                    return Some(Close(1013, "too slow to read the document's updates".into()));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
            _ = pings.tick() => {
                if heard.elapsed() > dead_after {
                    crate::metrics::server_disconnect("ping_timeout");
                    return None;
                }
                tokio::time::timeout(WRITE_TIMEOUT, tx.send(WsMessage::Ping(Bytes::new())))
                    .await
                    .ok()?
                    .ok()?;
            }
            _ = expired.notified() => {
                crate::metrics::server_disconnect("token_expired");
                return Some(Close(4401, "token expired: connect again with a fresh one".into()));
            }
        }
    }
}

/// One message from the peer; returns the answer to send it, if any.
async fn take<A: Adapter>(
    io: &SocketIo<A>,
    ctx: &Arc<Ctx>,
    peer: &Peer,
    bytes: &[u8],
) -> Result<Option<Vec<u8>>, Close> {
    if !peer.limits.event() {
        crate::metrics::limit_hit("events_per_sec");
        return Err(Close(1008, "too many messages: slow down".into()));
    }
    let msg = wire::decode(bytes).map_err(|e| Close::stop(4400, e))?;
    match msg {
        Message::SyncStep1(sv) => {
            if ctx.cluster.is_some()
                && let Err(e) = ctx.ydocs.catch_up(&peer.doc).await
            {
                tracing::warn!(doc = peer.doc.key.key(), "yjs document not caught up: {e}");
            }
            Ok(Some(wire::sync_step2(&peer.doc.diff(sv)?)))
        }
        Message::SyncStep2(update) | Message::Update(update) => {
            if let Some(seq) = ctx.ydocs.apply(&peer.doc, update).await? {
                let update = Bytes::copy_from_slice(update);
                let origin = Origin::Peer(peer.id);
                deliver(io, &ctx.ydocs, &peer.doc, Kind::Update, seq, update, origin).await;
            }
            Ok(None)
        }
        Message::Awareness(update) => {
            let limit = ctx.ydocs.limits().max_awareness_bytes;
            let max_new = super::yjs::MAX_CLIENTS_PER_SOCKET;
            peer.doc
                .awareness_apply(update, limit, &peer.owner(), max_new)?;
            // Back to the sender too, as y-websocket's own server does: a
            // provider alone on a document hears from the server that way
            // (it reconnects after 30 s of silence).
            let update = Bytes::copy_from_slice(update);
            deliver(
                io,
                &ctx.ydocs,
                &peer.doc,
                Kind::Awareness,
                0,
                update,
                Origin::Peer(0),
            )
            .await;
            Ok(None)
        }
        Message::QueryAwareness => Ok(peer.doc.awareness_all().map(|a| wire::awareness(&a))),
        Message::Auth(_) => Ok(None),
    }
}

async fn send(
    tx: &mut futures_util::stream::SplitSink<WebSocket, WsMessage>,
    frame: Vec<u8>,
) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, tx.send(WsMessage::Binary(frame.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends the close, then reads (and drops) what the peer still sends until
/// its close, for at most [`CLOSE_WAIT`]: a socket dropped with unread data
/// is reset, and the peer would see 1006 instead of the reason.
async fn close(
    tx: &mut futures_util::stream::SplitSink<WebSocket, WsMessage>,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    code: u16,
    why: &str,
) {
    // A close reason is at most 123 bytes.
    let mut reason = why.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if let Ok(Ok(())) =
        tokio::time::timeout(WRITE_TIMEOUT, tx.send(WsMessage::Close(Some(frame)))).await
    {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(m)) = rx.next().await {
                if matches!(m, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// A peer in the token-expiry schedule: closed at expiry (the provider
/// cannot refresh a token).
struct Expiry(Arc<tokio::sync::Notify>);

impl super::expiry::Expiring for Expiry {
    fn warn(&self, _exp: u64) {}

    fn expire(&self) {
        self.0.notify_one();
    }
}
