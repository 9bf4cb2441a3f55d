//! Chat messages: sending (two dialects), history, and the application ping.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::broadcast::broadcast;
use super::messages::{
    check_client_msg_id, check_content, check_message_rate, check_user_id, refuse, store_refusal,
    store_then,
};
use super::reply::{self, Ack, Code, Refusal};
use super::session::Session;
use crate::names::client_room;
use crate::store::{Conversation, NewMessage, Page};

/// `chat:send { roomId, content }` or `chat:message { roomId, text }`.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    Send,
    Message,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendPayload {
    room_id: String,
    #[serde(default)]
    content: Option<serde_json::Value>,
    #[serde(default)]
    text: Option<serde_json::Value>,
    #[serde(default)]
    client_msg_id: Option<serde_json::Value>,
}

pub async fn send<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
    dialect: Dialect,
) {
    let (room_id, mut msg) = match prepare(session, socket, data, dialect) {
        Ok(v) => v,
        Err(r) => return refuse(session, socket, ack, &r),
    };
    if let Err(r) = super::hooks::publish(session, socket, &mut msg).await {
        return reply::refuse(ack, &r);
    }
    store_then(
        session,
        socket,
        msg,
        ack,
        move |session, socket, m| async move {
            super::typing::stop_user(&session, &socket, &room_id).await;
            let room = socket.within(client_room(&room_id));
            match super::positions::offset_of(&session.ctx, socket.ns(), &m) {
                Some(offset) => broadcast(room, "chat:message", &(&m, offset)).await,
                None => broadcast(room, "chat:message", &m).await,
            }
        },
    );
}

fn prepare<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    dialect: Dialect,
) -> Result<(String, NewMessage), Refusal> {
    let p: SendPayload = reply::parse(data)?;
    reply::room_id(&p.room_id)?;
    let body = match dialect {
        Dialect::Send => p.content,
        Dialect::Message => p.text.or(p.content),
    };
    let content = check_content(body, session.ctx.config.max_message_chars)?;
    let client_msg_id = check_client_msg_id(p.client_msg_id)?;
    let id = &session.identity;
    if !session
        .ctx
        .presence
        .contains(socket.ns(), &p.room_id, &id.user_id, socket.id.as_str())
    {
        return Err(Refusal::new(
            Code::NotInRoom,
            "join the room before posting",
        ));
    }
    check_message_rate(session, socket.ns())?;
    let msg = NewMessage {
        conversation: Conversation::room(socket.ns(), &p.room_id),
        sender_id: id.user_id.clone(),
        sender_name: id.name.clone(),
        to_user_id: None,
        content,
        kind: "text".into(),
        client_msg_id,
    };
    Ok((p.room_id, msg))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryPayload {
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    with_user_id: Option<String>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

pub const DEFAULT_HISTORY_LIMIT: u64 = 50;
pub const MAX_HISTORY_LIMIT: u64 = 100;

/// `chat:history { roomId | withUserId, before? | after?, limit? }`:
/// `before` pages back, `after` catches up (the messages after the last
/// `seq` the client holds, oldest first).
pub async fn history<A: Adapter>(
    session: &Arc<Session<A>>,
    ns: &str,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let (conv, page, limit) = match history_query(session, ns, data) {
        Ok(q) => q,
        Err(r) => return reply::refuse(ack, &r),
    };
    // The socket's own sends are in history before it reads.
    session.settle().await;
    match session.ctx.store.history(&conv, page, limit).await {
        Ok(messages) => reply::ok(ack, &json!({ "success": true, "messages": messages })),
        Err(e) => {
            tracing::debug!("store history failed: {e}");
            reply::refuse(ack, &store_refusal(&e));
        }
    }
}

fn history_query<A: Adapter>(
    session: &Session<A>,
    ns: &str,
    data: Option<serde_json::Value>,
) -> Result<(Conversation, Page, usize), Refusal> {
    let p: HistoryPayload = reply::parse(data)?;
    let page = Page::from_bounds(p.before, p.after).map_err(Refusal::invalid)?;
    let limit = p.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(Refusal::invalid("limit must be 1-100"));
    }
    let conv = match (p.room_id, p.with_user_id) {
        (Some(room_id), None) => {
            reply::room_id(&room_id)?;
            if !session.may_join(&room_id) {
                return Err(Refusal::new(
                    Code::ForbiddenRoom,
                    "your token does not allow this room",
                ));
            }
            Conversation::room(ns, &room_id)
        }
        // A private conversation: the reader is always one of its two members.
        (None, Some(other)) => {
            check_user_id(&other)?;
            Conversation::direct(ns, &session.identity.user_id, &other)
        }
        _ => {
            return Err(Refusal::invalid(
                "give exactly one of roomId and withUserId",
            ));
        }
    };
    Ok((conv, page, limit as usize))
}

/// `ping { ts }` -> `pong { ts, serverTs }` to this socket.
pub async fn ping<A: Adapter>(
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let ts = data
        .as_ref()
        .and_then(|d| d.get("ts"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    // Echoing anything would let a client make the server write (and its
    // websocket keep a buffer of) a frame as large as the one it sent.
    if !echoable(&ts) {
        return reply::error(
            ack,
            Code::InvalidPayload,
            "ts must be a number, or a string of at most 64 characters",
        );
    }
    let pong = json!({ "ts": ts, "serverTs": crate::store::now_ms() });
    crate::metrics::event_out("pong");
    if let Err(e) = reply::emit_to_self(socket, "pong", &pong).await {
        tracing::debug!("pong not sent: {e}");
    }
    reply::ok(ack, &pong);
}

/// A `ping`'s `ts` the server echoes: a number, a short string, or nothing.
fn echoable(ts: &serde_json::Value) -> bool {
    match ts {
        serde_json::Value::Null | serde_json::Value::Number(_) => true,
        serde_json::Value::String(s) => s.chars().count() <= 64,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ping_echoes_only_small_stamps() {
        assert!(echoable(&json!(1733380000000u64)));
        assert!(echoable(&json!("2026-12-05T07:00:00Z")));
        assert!(echoable(&serde_json::Value::Null));
        assert!(!echoable(&json!("x".repeat(65))));
        assert!(!echoable(&json!({ "big": "object" })));
    }
}
