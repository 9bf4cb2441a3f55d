//! Room broadcasts: counted, and delivered at least on this node when the
//! cluster cannot be reached.

use serde::Serialize;
use socketioxide::BroadcastError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;

use super::session::Session;
use crate::names::client_room;

/// Emits `event` through the adapter (every node). If that fails because the
/// other nodes cannot be reached (Redis down), this node's sockets still get
/// it: each node keeps serving its own clients during an outage.
pub async fn broadcast<A: Adapter, T: Serialize + ?Sized>(
    op: BroadcastOperators<A>,
    event: &str,
    data: &T,
) {
    crate::metrics::event_out(event);
    match op.clone().emit(event, data).await {
        Ok(()) => {}
        // Only the cluster hop failed (local delivery is skipped after it):
        // deliver here. Other errors mean some local sockets already got it.
        Err(BroadcastError::Adapter(e)) => {
            tracing::debug!(
                event,
                "cluster broadcast failed ({e}); delivering on this node"
            );
            if let Err(e) = op.local().emit(event, data).await {
                tracing::debug!(event, "local broadcast failed: {e}");
            }
        }
        Err(BroadcastError::Socket(errs)) => socket_failures(event, &errs),
        Err(e) => tracing::debug!(event, "broadcast incomplete: {e}"),
    }
}

/// Some sockets could not take a broadcast: a full queue is a slow consumer,
/// which is closed (see `slow`); a closed socket is already gone. Neither is
/// the sender's failure: every other member got the packet, and the message
/// was stored before it was broadcast.
pub fn socket_failures(event: &str, errs: &[socketioxide::SocketError]) {
    if errs
        .iter()
        .any(|e| matches!(e, socketioxide::SocketError::InternalChannelFull))
    {
        super::slow::overflow_seen();
    }
    tracing::debug!(event, "broadcast incomplete: {} sockets", errs.len());
}

/// Everyone in the room but the acting user (all of the user's tabs).
pub fn others<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    room_id: &str,
) -> BroadcastOperators<A> {
    socket
        .within(client_room(room_id))
        .except(session.user_room())
}
