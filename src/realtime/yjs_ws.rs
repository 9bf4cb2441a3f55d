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
use super::yjs::{Origin, YRefused, admit_identity, awareness_within_rate, catch_up, deliver};
use crate::auth::AuthError;
use crate::yjs::wire::{self, Message};
use crate::yjs::{Held, Kind, YError};

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

impl Close {
    fn from_doc(e: &YError) -> Self {
        match e {
            YError::Busy | YError::Store(_) => Close(1013, e.to_string()),
            YError::UpdateTooLarge(_) | YError::DocTooLarge(_) => Close(4413, e.to_string()),
            YError::Malformed(_) => Close(4400, e.to_string()),
        }
    }
}

impl From<YError> for Close {
    fn from(e: YError) -> Self {
        Close::from_doc(&e)
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
    let end = run(&io, &ctx, &peer, &mut tx, &mut rx).await;
    match end {
        Some(Close(code, why)) => {
            tracing::info!(doc = name, "y-websocket peer closed: {why}");
            if code != 1000 {
                crate::metrics::yjs_refused();
            }
            close(&mut tx, &mut rx, code, &why).await;
        }
        // The peer closed: tungstenite's answer to its close goes out on a
        // flush.
        None => {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, tx.close()).await;
        }
    }
    // Its cursor goes at once, for everyone.
    if let Some(removal) = peer.held.doc.awareness_remove(&peer.owner()) {
        let removal = Bytes::from(removal);
        deliver(
            &io,
            &ctx.ydocs,
            &peer.held.doc,
            Kind::Awareness,
            0,
            removal,
            Origin::Peer(peer.id),
        )
        .await;
    }
}

/// An admitted peer: its document, its place in the expiry schedule and
/// its connection count, all given back when it is dropped (however the
/// task ends), and its bounds.
struct Peer {
    id: u64,
    held: Held,
    expiry: u64,
    expiries: Arc<super::expiry::Expiries>,
    expired: Arc<tokio::sync::Notify>,
    limits: super::limits::SocketLimits,
    /// Awareness messages that changed nothing (see
    /// `yjs::awareness_within_rate`).
    echoes: std::sync::atomic::AtomicU32,
    _conn: Arc<UserConn>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.expiries.untrack(self.expiry);
        crate::metrics::yjs_connections(-1);
    }
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
        return Err(Close::stop(4400, YRefused::Name));
    }
    let token = match token {
        Some(t) => t,
        None => read_token(ctx, rx).await?,
    };
    let (identity, conn, key) = admit_identity(ctx, name, Some(&token)).await?;
    let held = ctx.ydocs.open_held(&key).await?;
    crate::metrics::yjs_connections(1);
    let expired = Arc::new(tokio::sync::Notify::new());
    let expiry = ctx.expiries.track(
        identity.expires_at,
        Arc::new(Expiry(expired.clone())) as Arc<dyn super::expiry::Expiring>,
    );
    Ok(Peer {
        id: NEXT_PEER.fetch_add(1, Ordering::Relaxed),
        held,
        expiry,
        expiries: ctx.expiries.clone(),
        expired,
        limits: ctx.limits.socket(),
        echoes: Default::default(),
        _conn: conn,
    })
}

/// The token of a peer that did not put it in the URL: its first message
/// (pings aside), an auth message, within `--connect-timeout-ms`.
async fn read_token(
    ctx: &Ctx,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Result<String, Close> {
    let wait = Duration::from_millis(ctx.config.connect_timeout_ms);
    let first = tokio::time::timeout(wait, async {
        loop {
            match rx.next().await {
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    match first {
        Ok(Some(Ok(WsMessage::Binary(b)))) => match wire::decode(&b) {
            Ok(Message::Auth(t)) => Ok(t.to_string()),
            _ => Err(Close::stop(4401, YRefused::Auth(AuthError::Missing))),
        },
        Ok(_) => Err(Close::stop(4401, YRefused::Auth(AuthError::Missing))),
        Err(_) => {
            crate::metrics::limit_hit("connect_timeout_ms");
            Err(Close::stop(4408, "no token in time (--connect-timeout-ms)"))
        }
    }
}

impl From<YRefused> for Close {
    fn from(r: YRefused) -> Self {
        let code = match &r {
            YRefused::Name => 4400,
            YRefused::Auth(_) => 4401,
            YRefused::Forbidden | YRefused::ByHook(_) => 4403,
            YRefused::HookUnavailable(_) | YRefused::TooMany(_) => 1013,
            YRefused::Doc(e) => return Close::from_doc(e),
        };
        Close(code, r.to_string())
    }
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
) -> Option<Close> {
    let doc = &peer.held.doc;
    // Subscribed first: nothing applied from here on is missed.
    let mut others = doc.subscribe();
    catch_up(io, ctx, doc, true).await;
    send(tx, wire::sync_step1(&doc.state_vector())).await.ok()?;
    if let Some(all) = doc.awareness_all() {
        send(tx, wire::awareness(&all)).await.ok()?;
    }
    let ping_every = ctx.config.ping_interval();
    let dead_after = ping_every + ctx.config.ping_timeout();
    let mut pings = tokio::time::interval(ping_every);
    pings.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            // The others' first: a peer's own updates take places in the
            // fanout too, and reading its next message only after those
            // keeps a fast writer from being taken for a slow reader.
            biased;
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
            _ = peer.expired.notified() => {
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
    let too_fast = || {
        crate::metrics::limit_hit("events_per_sec");
        Close(1008, "too many messages: slow down".into())
    };
    let msg = wire::decode(bytes).map_err(|e| Close::stop(4400, e))?;
    // Awareness is charged once applied (an echo that changes nothing
    // counts less); everything else before.
    if !matches!(msg, Message::Awareness(_)) && !peer.limits.event() {
        return Err(too_fast());
    }
    let doc = &peer.held.doc;
    match msg {
        Message::SyncStep1(sv) => {
            catch_up(io, ctx, doc, false).await;
            Ok(Some(wire::sync_step2(&doc.diff(sv)?)))
        }
        Message::SyncStep2(update) | Message::Update(update) => {
            if let Some(seq) = ctx.ydocs.apply(doc, update).await? {
                let update = Bytes::copy_from_slice(update);
                let origin = Origin::Peer(peer.id);
                deliver(io, &ctx.ydocs, doc, Kind::Update, seq, update, origin).await;
            }
            Ok(None)
        }
        Message::Awareness(update) => {
            let limit = ctx.ydocs.limits().max_awareness_bytes;
            let max_new = super::yjs::MAX_CLIENTS_PER_SOCKET;
            let applied = doc.awareness_apply(update, limit, &peer.owner(), max_new)?;
            let changed = applied.changed;
            if !awareness_within_rate(&peer.limits, changed.is_some(), &peer.echoes) {
                return Err(too_fast());
            }
            // Back to the sender too, as y-websocket's own server does: a
            // provider alone on a document hears from the server that way
            // (it reconnects after 30 s of silence). Its renewals (every
            // 15 s) change the clock, so they are passed on.
            if let Some(changed) = changed {
                let changed = Bytes::from(changed);
                deliver(
                    io,
                    &ctx.ydocs,
                    doc,
                    Kind::Awareness,
                    0,
                    changed,
                    Origin::Peer(0),
                )
                .await;
            }
            Ok(applied.reply.map(|r| wire::awareness(&r)))
        }
        Message::QueryAwareness => Ok(doc.awareness_all().map(|a| wire::awareness(&a))),
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
