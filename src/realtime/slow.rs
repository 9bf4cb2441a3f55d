//! Slow consumers: sockets that cannot keep up with what is sent to them.
//!
//! socketioxide queues at most `--max-queued-packets` per socket and drops
//! what comes after, without a word. A dropped chat message or ack would be a
//! silent gap, so a socket whose queue overflows is disconnected instead:
//! its connection is closed (websocket close 1008, reason "slow consumer"),
//! socket.io-client reconnects by itself and the application catches up with
//! `chat:history`. Nothing is lost that was acked: messages are stored before
//! they are acked or broadcast.
//!
//! Overflows are seen three ways:
//! * an ack or direct emit to the socket fails with a full queue: that
//!   socket is closed at once ([`disconnect`]);
//! * a room broadcast reports a full queue without saying whose
//!   ([`overflow_seen`]): every websocket whose writes are blocked at that
//!   moment is closed, since a full queue means its writer has been stuck;
//! * a websocket that cannot write for `--write-stall-timeout-ms` is closed
//!   ([`watch_stalls`]), which also covers broadcasts from other nodes, whose
//!   failures this node never hears of.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio::sync::Notify;

use super::Ctx;
use super::session::Session;
use crate::edge::guarded_io::ConnHandle;
use crate::edge::ws_frames::CLOSE_POLICY;

/// The close reason the client reads (its `disconnect` details carry it).
pub const SLOW_CONSUMER_REASON: &str = "slow consumer: reconnect and catch up with chat:history";

/// A broadcast found a full queue whose socket it could not name.
static OVERFLOW: Notify = Notify::const_new();

/// How long a websocket's writes must have been blocked to be taken for the
/// one whose queue a broadcast found full.
const BLOCKED_AT_OVERFLOW: Duration = Duration::from_millis(100);

/// The connection that carries `socket`: the websocket it was upgraded to,
/// or the one it was opened on.
pub fn connection_of<A: Adapter>(ctx: &Ctx, socket: &SocketRef<A>) -> Option<ConnHandle> {
    ctx.connections
        .by_sid(&socket.id.to_string())
        .or_else(|| socket.req_parts().extensions.get::<ConnHandle>().cloned())
}

/// Disconnects `socket` as a slow consumer (once; logged once). `what` says
/// what could not be queued.
pub fn disconnect<A: Adapter>(socket: &SocketRef<A>, what: &str) {
    let Some(session) = socket.extensions.get::<Arc<Session<A>>>() else {
        return;
    };
    if session.slow.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::info!(
        ns = socket.ns(),
        sid = %socket.id,
        user = session.identity.user_id,
        what,
        "slow consumer: outgoing queue full; disconnecting"
    );
    crate::metrics::slow_consumer_disconnect();
    match connection_of(&session.ctx, socket) {
        Some(conn) => {
            conn.close(CLOSE_POLICY, SLOW_CONSUMER_REASON);
        }
        // Embedded in another server (no guarded connection): the best
        // left is a Socket.IO disconnect, which needs room in the queue.
        None => {
            if let Err(e) = socket.clone().disconnect() {
                tracing::warn!(sid = %socket.id, "slow consumer not disconnected: {e}");
            }
        }
    }
}

/// A broadcast could not queue a packet for some socket on this node.
pub fn overflow_seen() {
    OVERFLOW.notify_one();
}

/// Closes the websockets that stall: at once after an overflow was seen,
/// and every so often those blocked for `--write-stall-timeout-ms`.
pub async fn watch_stalls(ctx: Arc<Ctx>) {
    let timeout = Duration::from_millis(ctx.config.write_stall_timeout_ms);
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let min = tokio::select! {
            _ = tick.tick() => timeout,
            () = OVERFLOW.notified() => BLOCKED_AT_OVERFLOW,
        };
        for conn in ctx.connections.stalled(min) {
            if !conn.close(CLOSE_POLICY, SLOW_CONSUMER_REASON) {
                continue;
            }
            tracing::info!(
                blocked_ms = conn.write_blocked_for().unwrap_or_default().as_millis() as u64,
                "slow consumer: websocket writes blocked; disconnecting"
            );
            crate::metrics::slow_consumer_disconnect();
        }
    }
}
