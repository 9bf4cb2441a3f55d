//! Joining, leaving and listing rooms, with per-user presence.
//!
//! A client room id `X` is the Socket.IO room `room:X`; each user's sockets
//! are also in `user:{id}`. Clients can only name the former, so they never
//! reach the private rooms.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::Ctx;
use super::broadcast::broadcast;
use super::broadcast::others;
use super::reply::{self, Ack, Code, Refusal};
use super::session::Session;
use crate::names::client_room;
use crate::presence::cluster::Reported;
use crate::presence::{Change, Presence};

/// Records a socket joining `room` in `local` (this node's registry) and,
/// when clustered, in Redis: what changed on any node. If Redis fails, this
/// node's view decides.
pub(super) async fn record_join(
    ctx: &Ctx,
    local: &Presence,
    ns: &str,
    room: &str,
    user: &str,
    name: &str,
    sid: &str,
) -> Change {
    let here = local.join(ns, room, user, name, sid);
    match &ctx.cluster {
        None => here,
        Some(_) if !here.counted => here,
        Some(c) => match c.join(ns, room, user, name).await {
            Ok(total) => total,
            Err(e) => {
                tracing::debug!("cluster presence unavailable ({e}); using this node's");
                if here.user {
                    c.reported_alone(ns, room, user, Reported::Joined);
                }
                here
            }
        },
    }
}

/// Records a socket leaving `room`; what changed on any node.
pub(super) async fn record_leave(
    ctx: &Ctx,
    local: &Presence,
    ns: &str,
    room: &str,
    user: &str,
    sid: &str,
) -> Change {
    let here = local.leave(ns, room, user, sid);
    match &ctx.cluster {
        None => here,
        Some(c) => match c.leave(ns, room, user).await {
            Ok(Some(total)) => total,
            // This node's share is gone: it left the cluster and the
            // others reported its users (a clean stop), so nothing is.
            Ok(None) if c.is_stopped() => Change::default(),
            // Joined while Redis was away, not counted there yet.
            Ok(None) => here,
            Err(e) => {
                tracing::debug!("cluster presence unavailable ({e}); using this node's");
                if here.user {
                    c.reported_alone(ns, room, user, Reported::Left);
                }
                here
            }
        },
    }
}

/// A room's members: across nodes when clustered (this node's view if Redis fails).
pub async fn room_members(ctx: &Ctx, ns: &str, room: &str) -> Vec<crate::presence::Member> {
    if let Some(c) = &ctx.cluster {
        match c.members(ns, room).await {
            Ok(m) => return m,
            Err(e) => tracing::debug!("cluster presence unavailable ({e}); using this node's"),
        }
    }
    ctx.presence.members(ns, room)
}

/// Which family of client documents the join came from; it decides the name
/// and shape of the event the others receive.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    /// `room:join` -> `room:user-joined { userId, username, roomId }`
    Room,
    /// `chat:join` -> `chat:userJoined { id, name, roomId }`
    Chat,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Joined<'a> {
    success: bool,
    room_id: &'a str,
    members: Vec<crate::presence::Member>,
}

/// Checks the room id and that the token allows the room.
fn permitted<A: Adapter>(
    session: &Session<A>,
    data: Option<serde_json::Value>,
) -> Result<String, Refusal> {
    let room_id = reply::room_arg(data)?;
    if !session.may_join(&room_id) {
        return Err(Refusal::new(
            Code::ForbiddenRoom,
            "your token does not allow this room",
        ));
    }
    Ok(room_id)
}

pub async fn join<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
    dialect: Dialect,
) {
    let room_id = match permitted(session, data) {
        Ok(r) => r,
        Err(r) => return reply::refuse(ack, &r),
    };
    if let Err(r) = room_capacity(session, socket, &client_room(&room_id)) {
        return reply::refuse(ack, &r);
    }
    if let Err(r) = super::hooks::join(session, socket, &room_id).await {
        return reply::refuse(ack, &r);
    }
    super::positions::joining(session, socket, &room_id).await;
    enter(session, socket, &room_id, dialect).await;
    ack_members(session, socket, &room_id, ack).await;
}

/// Puts the socket in the room and in its presence; the others hear of it
/// when the user was not there yet. A recovered socket comes back this way.
pub async fn enter<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    room_id: &str,
    dialect: Dialect,
) {
    let ctx = &session.ctx;
    let id = &session.identity;
    let room_id = room_id.to_string();
    socket.join(client_room(&room_id));
    super::admin::room_joined(ctx, socket, &client_room(&room_id));
    let sid = socket.id.to_string();
    session.joined(&room_id);
    let ns = socket.ns();
    let change = record_join(
        ctx,
        &ctx.presence,
        ns,
        &room_id,
        &id.user_id,
        &id.name,
        &sid,
    )
    .await;
    if let Some(w) = &ctx.webhooks {
        if change.room {
            let data = json!({ "namespace": ns, "roomId": room_id });
            w.emit("room.occupied", data).await;
        }
        if change.user {
            let data = json!({ "namespace": ns, "roomId": room_id, "userId": id.user_id });
            w.emit("member.joined", data).await;
        }
    }
    if change.user {
        let others = others(session, socket, &room_id);
        let (event, payload) = match dialect {
            Dialect::Room => (
                "room:user-joined",
                json!({ "userId": id.user_id, "username": id.name, "roomId": room_id }),
            ),
            Dialect::Chat => (
                "chat:userJoined",
                json!({ "id": id.user_id, "name": id.name, "roomId": room_id }),
            ),
        };
        broadcast(others, event, &payload).await;
    }
}

/// A socket may be in at most `--max-rooms-per-socket` rooms and documents
/// together (rejoining one it is in is always fine). `target` is the
/// Socket.IO room (`room:X` or `doc:X`).
pub fn room_capacity<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    target: &str,
) -> Result<(), Refusal> {
    let max = session.ctx.config.max_rooms_per_socket;
    let rooms = socket.rooms();
    let joined = rooms
        .iter()
        .filter(|r| r.starts_with("room:") || r.starts_with("doc:"))
        .count();
    if joined < max || rooms.iter().any(|r| **r == *target) {
        return Ok(());
    }
    crate::metrics::limit_hit("max_rooms_per_socket");
    Err(Refusal::new(
        Code::TooLarge,
        format!("a socket may be in at most {max} rooms and documents: leave one first"),
    ))
}

pub async fn leave<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let room_id = match reply::room_arg(data) {
        Ok(r) => r,
        Err(r) => return reply::refuse(ack, &r),
    };
    let sid = socket.id.to_string();
    let user = &session.identity.user_id;
    if !session
        .ctx
        .presence
        .contains(socket.ns(), &room_id, user, &sid)
    {
        return reply::error(ack, Code::NotInRoom, "you are not in this room");
    }
    socket.leave(client_room(&room_id));
    super::admin::room_left(&session.ctx, socket, &client_room(&room_id));
    leave_presence(session, socket, &room_id).await;
    reply::ok(ack, &json!({ "success": true, "roomId": room_id }));
}

/// Removes the socket from the room's presence; when it was the user's last
/// socket there, stops the user's typing and tells the others.
async fn leave_presence<A: Adapter>(session: &Session<A>, socket: &SocketRef<A>, room_id: &str) {
    let ctx = &session.ctx;
    let user = &session.identity.user_id;
    let sid = socket.id.to_string();
    session.left(room_id);
    super::positions::left(session, socket, room_id);
    let ns = socket.ns();
    let change = record_leave(ctx, &ctx.presence, ns, room_id, user, &sid).await;
    if !change.user {
        return;
    }
    if let Some(w) = &ctx.webhooks {
        let data = json!({ "namespace": ns, "roomId": room_id, "userId": user });
        w.emit("member.left", data).await;
        if change.room {
            let data = json!({ "namespace": ns, "roomId": room_id });
            w.emit("room.vacated", data).await;
        }
    }
    let others = others(session, socket, room_id);
    super::typing::stop_user(session, socket, room_id).await;
    let payload = json!({ "userId": user, "roomId": room_id });
    broadcast(others, "room:user-left", &payload).await;
}

pub async fn members<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let room_id = match permitted(session, data) {
        Ok(r) => r,
        Err(r) => return reply::refuse(ack, &r),
    };
    ack_members(session, socket, &room_id, ack).await;
}

/// Acks `{ success, roomId, members }` (for joins and member queries).
async fn ack_members<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    room_id: &str,
    ack: Option<Ack<A>>,
) {
    let members = room_members(&session.ctx, socket.ns(), room_id).await;
    reply::ok(
        ack,
        &Joined {
            success: true,
            room_id,
            members,
        },
    );
}

/// After `auth:refresh`: the socket leaves the rooms and documents the new
/// token's `rooms` claim no longer allows, and hears `room:left { roomId,
/// reason: "token" }` (or `doc:left { docId, reason }`) for each.
pub async fn drop_forbidden<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>) {
    for room_id in session.joined_rooms() {
        if session.may_join(&room_id) {
            continue;
        }
        socket.leave(client_room(&room_id));
        super::admin::room_left(&session.ctx, socket, &client_room(&room_id));
        leave_presence(session, socket, &room_id).await;
        let left = json!({ "roomId": room_id, "reason": "token" });
        if let Err(e) = socket.emit("room:left", &left) {
            tracing::debug!("room:left not sent: {e}");
        }
    }
    for room in socket.rooms() {
        if room.starts_with("doc:") && !session.may_join(&room) {
            socket.leave(room.clone());
            super::admin::room_left(&session.ctx, socket, &room);
            let left = json!({ "docId": &room["doc:".len()..], "reason": "token" });
            if let Err(e) = socket.emit("doc:left", &left) {
                tracing::debug!("doc:left not sent: {e}");
            }
        }
    }
}

/// The socket is gone: it leaves every room it joined, as the session
/// recorded them (`socket.rooms()` may already be empty, see
/// `Session::joined`).
pub async fn on_disconnect<A: Adapter>(session: &Arc<Session<A>>, socket: &SocketRef<A>) {
    for room_id in session.take_joined() {
        leave_presence(session, socket, &room_id).await;
    }
    // A join queued before the disconnect may have run after socketioxide
    // took the socket out of its rooms (the second `close`): out again.
    socket.leave_all();
}
