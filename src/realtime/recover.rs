//! Connection state recovery, the socket side (the wire side is
//! `crate::recovery`): a reconnecting client's claim is checked in the
//! connect middleware, its rooms are restored and what it missed replayed
//! before any event of its own; a socket whose transport died is kept for
//! `--recovery-window`. See docs/protocol.md, "Reconnecting".

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;

use super::session::{Job, Session};
use crate::plain::bridge::Bridged;
use crate::recovery::offset::Offset;
use crate::recovery::written::Written;
use crate::recovery::{Claim, Restored, SessionBody, new_pid};
use crate::store::{Conversation, Page};

/// Messages read from history per batch of a replay.
const REPLAY_BATCH: usize = 200;

/// A socket that ends for one of these can be recovered: its transport
/// died, or the server is going down. Not after the client's own
/// `socket.disconnect()`, nor after the server ended it on purpose.
pub fn recoverable(reason: DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::TransportClose
            | DisconnectReason::TransportError
            | DisconnectReason::HeartbeatTimeout
            | DisconnectReason::ClosingServer
    )
}

/// In the connect middleware, once the token is verified: gives the socket
/// its pid (the claimed one when its session can be restored, else a new
/// one) and, when restoring, queues the restore ahead of everything else.
pub async fn begin<A: Adapter>(s: &SocketRef<A>, auth: Option<&serde_json::Value>) {
    let Some(session) = s.extensions.get::<Arc<Session<A>>>() else {
        return;
    };
    let Some(recovery) = session.ctx.recovery.clone() else {
        return;
    };
    // A plain client's socket (`plain::bridge`) is never recovered: its
    // client catches up with history, so nothing is kept for it.
    if s.req_parts().extensions.get::<Bridged>().is_some() {
        return;
    }
    let fresh = || (new_pid(), Written::default(), None, crate::store::now_ms());
    let (pid, written, restored, since_ms) = match Claim::read(auth) {
        None => fresh(),
        Some(claim) => {
            let attempt = match claim {
                Ok(c) => recovery
                    .attempt(&c, &session.identity.user_id, s.ns())
                    .await
                    .map(|r| (c.pid, r)),
                Err(f) => Err(f),
            };
            match attempt {
                Ok((pid, r)) => {
                    crate::metrics::recovery("recovered");
                    let (written, since) = (r.written.clone(), r.since_ms);
                    (pid, written, Some(r), since)
                }
                Err(f) => {
                    tracing::debug!(ns = s.ns(), reason = f.label(), "not recovered");
                    crate::metrics::recovery(f.label());
                    fresh()
                }
            }
        }
    };
    recovery
        .frames
        .register(&s.id.to_string(), s.ns(), pid.clone(), written);
    let _ = session.pid.set(pid);
    let _ = session.recovery_since.set(since_ms);
    if let Some(r) = restored {
        for (room, _) in &r.rooms {
            session.restoring(room, true);
        }
        session.hold();
        let _ = session.push(s.clone(), Job::Recover(Box::new(r)));
    }
}

/// In the connect handler: a restore waiting in the queue runs now.
pub fn connected<A: Adapter>(s: &SocketRef<A>) {
    if let Some(session) = s.extensions.get::<Arc<Session<A>>>() {
        session.release(s.clone());
    }
}

/// Restores the rooms of a recovered socket and replays, room by room,
/// what it missed: first from history up to now, then it joins, then once
/// more, so a message stored meanwhile comes from the second read or live,
/// whichever is first (the edge leaves out the one that comes second).
pub async fn restore<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>, r: Restored) {
    let ctx = &session.ctx;
    let Some(recovery) = &ctx.recovery else {
        return;
    };
    let ns = socket.ns();
    let mut replayed = 0u64;
    for (room_id, held) in r.rooms {
        // A token that no longer allows the room (auth:refresh narrowed
        // it, or a new token does) does not get it back.
        if !session.may_join(&room_id) {
            session.restoring(&room_id, false);
            continue;
        }
        // Gone meanwhile: the rooms not entered yet stay in what is kept.
        if !socket.connected() {
            return;
        }
        let conv = Conversation::room(ns, &room_id);
        let mut pos = held.upto;
        for joined in [false, true] {
            if joined {
                super::rooms::enter(session, socket, &room_id, super::rooms::Dialect::Room).await;
                session.restoring(&room_id, false);
            }
            loop {
                let batch = match ctx
                    .store
                    .history(&conv, Page::After(pos), REPLAY_BATCH)
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(ns = socket.ns(), sid = %socket.id, "replay stopped, the store failed: {e}");
                        return incomplete(session, socket);
                    }
                };
                for m in &batch {
                    pos = m.seq;
                    if held.above.contains(&m.seq) {
                        continue;
                    }
                    let offset = Offset::new(ns, &room_id, m.seq).encode();
                    if !emit_waiting(socket, "chat:message", &(m, offset)).await {
                        return incomplete(session, socket);
                    }
                    replayed += 1;
                }
                if batch.len() < REPLAY_BATCH {
                    break;
                }
                // Messages keep coming faster than they are replayed.
                if replayed > 2 * recovery.max_replay as u64 {
                    return incomplete(session, socket);
                }
            }
        }
    }
    // The private messages read when the claim was checked, then those
    // stored until now: one stored after that read may have been broadcast
    // before this socket could receive it. What the socket was sent already
    // is left out at the edge.
    let again = ctx
        .store
        .direct_since(
            ns,
            &session.identity.user_id,
            r.since_ms,
            recovery.max_replay + 1,
        )
        .await
        .unwrap_or_default();
    let mut private = r.private;
    let read: std::collections::HashSet<String> = private.iter().map(|m| m.id.clone()).collect();
    private.extend(again.into_iter().filter(|m| {
        let tag = crate::recovery::direct_tag(
            ns,
            &m.sender_id,
            m.to_user_id.as_deref().unwrap_or_default(),
        );
        !read.contains(&m.id) && !r.written.base.get(&tag).is_some_and(|h| h.has(m.seq))
    }));
    for m in &private {
        let Some(offset) = super::positions::offset_of(ctx, ns, m) else {
            continue;
        };
        if !emit_waiting(socket, "private:message", &(m, offset)).await {
            return incomplete(session, socket);
        }
        replayed += 1;
    }
    crate::metrics::recovery_replayed(replayed);
}

/// How long a replayed message may wait for room in the socket's queue.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Emits one replayed message, waiting while the socket's queue is full
/// (a replay is larger than what live traffic puts there at once). False
/// when the socket is gone or does not drain within [`REPLAY_WAIT`].
async fn emit_waiting<A: Adapter, T: serde::Serialize>(
    socket: &SocketRef<A>,
    event: &str,
    data: &T,
) -> bool {
    let deadline = tokio::time::Instant::now() + REPLAY_WAIT;
    loop {
        match socket.emit(event, data) {
            Ok(()) => return true,
            Err(socketioxide::SendError::Socket(
                socketioxide::SocketError::InternalChannelFull,
            )) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            Err(_) => return false,
        }
    }
}

/// A replay that could not finish: the transport is closed, so that the
/// client comes back and recovers from what it got.
fn incomplete<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>) {
    if let Some(conn) = super::slow::connection_of(&session.ctx, socket) {
        conn.close(1013, "recovery incomplete: reconnect");
    }
}

/// The socket is gone (before its rooms are cleaned up): when it can be
/// recovered, what it needs is kept for the window.
pub fn keep<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>, recoverable: bool) {
    let Some(recovery) = &session.ctx.recovery else {
        return;
    };
    let Some(written) = recovery.frames.take(&socket.id.to_string(), socket.ns()) else {
        return;
    };
    save(session, socket, recovery, written, recoverable);
}

/// At a graceful shutdown, before the transports close: every socket is
/// kept as it stands (its disconnect, if it runs in time, keeps it again
/// with what was written since).
pub fn keep_now<A: Adapter>(socket: &SocketRef<A>) {
    let Some(session) = socket.extensions.get::<Arc<Session<A>>>() else {
        return;
    };
    let Some(recovery) = &session.ctx.recovery else {
        return;
    };
    let Some(written) = recovery
        .frames
        .update(&socket.id.to_string(), socket.ns(), |w| w.clone())
    else {
        return;
    };
    save(&session, socket, recovery, written, true);
}

fn save<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    recovery: &crate::recovery::Recovery,
    written: Written,
    recoverable: bool,
) {
    let Some(pid) = session.pid.get() else {
        return;
    };
    if !recoverable || written.broken || session.closing_reason().is_some() {
        return;
    }
    let body = SessionBody {
        user: session.identity.user_id.clone(),
        ns: socket.ns().to_string(),
        rooms: session.rooms_to_keep(),
        written,
        since_ms: session.recovery_since.get().copied().unwrap_or(0),
    };
    recovery.save(pid, &body);
}
