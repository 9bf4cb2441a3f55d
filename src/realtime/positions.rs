//! Where each socket stands in each room's history, for connection state
//! recovery (see `recover`): the offset that ends each `chat:message`, and
//! the position noted when a socket joins or leaves a room.

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::session::Session;
use crate::recovery::offset::{Offset, room_tag};

/// The offset that ends a `chat:message` or `private:message`, when
/// recovery is on.
pub fn offset_of(ctx: &super::Ctx, ns: &str, m: &crate::store::Message) -> Option<String> {
    ctx.recovery.as_ref()?;
    let room = match (&m.room_id, &m.to_user_id) {
        (Some(room), _) => room_tag(ns, room),
        (None, Some(to)) => crate::recovery::direct_tag(ns, &m.sender_id, to),
        (None, None) => return None,
    };
    Some(Offset { room, seq: m.seq }.encode())
}

/// Before `room:join` puts the socket in a room: where the room's history
/// stands, so that a recovery replays what comes after.
pub async fn joining<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>, room_id: &str) {
    let Some(recovery) = &session.ctx.recovery else {
        return;
    };
    let sid = socket.id.to_string();
    let tag = room_tag(socket.ns(), room_id);
    let known = recovery
        .frames
        .update(&sid, socket.ns(), |w| w.base.contains_key(&tag))
        .unwrap_or(true);
    if known {
        return;
    }
    match recovery.latest_seq(socket.ns(), room_id).await {
        Ok(upto) => {
            recovery
                .frames
                .update(&sid, socket.ns(), |w| w.joined(tag, upto));
        }
        // Without a position the socket cannot be recovered exactly.
        Err(_) => {
            recovery
                .frames
                .update(&sid, socket.ns(), |w| w.broken = true);
        }
    }
}

/// The socket left a room: it is not restored, and a later join starts afresh.
pub fn left<A: Adapter>(session: &Session<A>, socket: &SocketRef<A>, room_id: &str) {
    if let Some(recovery) = &session.ctx.recovery {
        let tag = room_tag(socket.ns(), room_id);
        recovery
            .frames
            .update(&socket.id.to_string(), socket.ns(), |w| {
                w.base.remove(&tag);
            });
    }
}
