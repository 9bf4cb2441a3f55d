//! Typing indicators: ephemeral, per user and room. A `typing:start` holds for
//! [`TYPING_TTL`]; refreshes inside that window are not re-broadcast, and the
//! server sends `typing:stopped` itself when the window lapses, the user
//! leaves, disconnects or posts to the room.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio::time::Instant;

use super::broadcast::broadcast;
use super::broadcast::others;
use super::reply::{self, Ack, Code};
use super::session::Session;
use crate::presence::keys::Triple;

pub const TYPING_TTL: Duration = Duration::from_secs(6);

/// (namespace, room, user)
type Key = (String, String, String);

/// Who is typing where, with the time their indicator lapses.
#[derive(Debug, Default)]
pub struct Typing {
    deadlines: DashMap<Key, Instant>,
}

impl Typing {
    /// Starts or refreshes; true when the user was not typing (broadcast it).
    fn start(&self, key: Key) -> bool {
        let deadline = Instant::now() + TYPING_TTL;
        self.deadlines.insert(key, deadline).is_none()
    }

    /// True when the user was typing (broadcast the stop).
    fn stop(&self, key: &(&str, &str, &str)) -> bool {
        self.deadlines.remove(key as &dyn Triple).is_some()
    }
}

fn key<A: Adapter>(session: &Session<A>, socket: &SocketRef<A>, room_id: &str) -> Key {
    (
        socket.ns().to_string(),
        room_id.to_string(),
        session.identity.user_id.clone(),
    )
}

/// Room id of a typing event, if the socket is in that room.
fn typing_room<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
) -> Result<String, reply::Refusal> {
    let room_id = reply::room_arg(data)?;
    let sid = socket.id.to_string();
    let in_room =
        session
            .ctx
            .presence
            .contains(socket.ns(), &room_id, &session.identity.user_id, &sid);
    if !in_room {
        return Err(reply::Refusal::new(
            Code::NotInRoom,
            "you are not in this room",
        ));
    }
    Ok(room_id)
}

pub async fn start<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let room_id = match typing_room(session, socket, data) {
        Ok(r) => r,
        Err(r) => return reply::refuse(ack, &r),
    };
    let k = key(session, socket, &room_id);
    if session.ctx.typing.start(k.clone()) {
        let id = &session.identity;
        let others = others(session, socket, &room_id);
        let payload = json!({ "userId": id.user_id, "username": id.name, "roomId": room_id });
        broadcast(others.clone().volatile(), "typing:user", &payload).await;
        tokio::spawn(expire(session.clone(), others, k));
    }
    reply::ok(ack, &json!({ "success": true }));
}

/// Watches one indicator and sends `typing:stopped` when it lapses.
async fn expire<A: Adapter>(
    session: Arc<Session<A>>,
    others: socketioxide::operators::BroadcastOperators<A>,
    k: Key,
) {
    let typing = &session.ctx.typing;
    loop {
        let Some(deadline) = typing.deadlines.get(&k).map(|d| *d) else {
            return; // stopped by other means, which sent the stop
        };
        if deadline > Instant::now() {
            tokio::time::sleep_until(deadline).await;
            continue;
        }
        if typing
            .deadlines
            .remove_if(&k, |_, d| *d <= Instant::now())
            .is_some()
        {
            let payload = json!({ "userId": k.2, "roomId": k.1 });
            broadcast(others.volatile(), "typing:stopped", &payload).await;
        }
        return;
    }
}

pub async fn stop<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let room_id = match typing_room(session, socket, data) {
        Ok(r) => r,
        Err(r) => return reply::refuse(ack, &r),
    };
    stop_user(session, socket, &room_id).await;
    reply::ok(ack, &json!({ "success": true }));
}

/// Ends the user's indicator in the room, telling the others if it was on.
pub async fn stop_user<A: Adapter>(session: &Session<A>, socket: &SocketRef<A>, room_id: &str) {
    let key = (socket.ns(), room_id, session.identity.user_id.as_str());
    if session.ctx.typing.stop(&key) {
        let payload = json!({ "userId": session.identity.user_id, "roomId": room_id });
        let others = others(session, socket, room_id);
        broadcast(others.volatile(), "typing:stopped", &payload).await;
    }
}
