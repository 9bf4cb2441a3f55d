//! Who is online, per namespace, for the `user.online` and `user.offline`
//! webhooks: a user's first socket anywhere (on any node when clustered)
//! and their last. Tracked only when the webhooks want either event.
//!
//! It is presence in a room no client can name (the empty one) in a
//! registry of its own, so the cluster's counting (one Lua script per change,
//! a dead node's share taken back by the survivors) applies unchanged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::Ctx;
use super::rooms::{record_join, record_leave};
use super::session::Session;

/// The presence room that stands for "connected to the namespace".
pub const ONLINE_ROOM: &str = "";

/// Whether this node counts who is online.
pub fn tracked(ctx: &Ctx) -> bool {
    ctx.webhooks
        .as_ref()
        .is_some_and(|w| w.wants("user.online") || w.wants("user.offline"))
}

/// The socket is connected: counted, and `user.online` when it is the
/// user's first (a job of the socket's queue, so it precedes its joins).
pub async fn came<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>) {
    let ctx = &session.ctx;
    let Some(w) = &ctx.webhooks else { return };
    let id = &session.identity;
    let sid = socket.id.to_string();
    let ns = socket.ns();
    let change = record_join(
        ctx,
        &ctx.online,
        ns,
        ONLINE_ROOM,
        &id.user_id,
        &id.name,
        &sid,
    )
    .await;
    session.online.store(true, Ordering::Release);
    if change.user {
        let data = json!({ "namespace": ns, "userId": id.user_id });
        w.emit("user.online", data).await;
    }
}

/// The socket is gone (after it left its rooms): `user.offline` when it was
/// the user's last.
pub async fn went<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>) {
    if !session.online.swap(false, Ordering::AcqRel) {
        return;
    }
    let ctx = &session.ctx;
    let Some(w) = &ctx.webhooks else { return };
    let user = &session.identity.user_id;
    let sid = socket.id.to_string();
    let ns = socket.ns();
    let change = record_leave(ctx, &ctx.online, ns, ONLINE_ROOM, user, &sid).await;
    if change.user {
        let data = json!({ "namespace": ns, "userId": user });
        w.emit("user.offline", data).await;
    }
}
