//! Chat messages: sending (two dialects), history, and the application ping.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::broadcast::broadcast;
use super::reply::{self, Ack, Code, Refusal};
use super::rooms::client_room;
use super::session::Session;
use crate::store::{Appended, Conversation, Message, NewMessage, StoreError};

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

pub const MAX_CLIENT_MSG_ID_CHARS: usize = 128;

/// Checks message content: a non-empty string within the configured length.
pub fn check_content(
    content: Option<serde_json::Value>,
    max_chars: usize,
) -> Result<String, Refusal> {
    let content = match content {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(Refusal::invalid("content must be a string")),
        None => return Err(Refusal::invalid("content is required")),
    };
    if content.trim().is_empty() {
        return Err(Refusal::invalid("content is empty"));
    }
    if content.chars().count() > max_chars {
        return Err(Refusal::new(
            Code::TooLarge,
            format!("content is longer than {max_chars} characters"),
        ));
    }
    Ok(content)
}

/// Checks an optional `clientMsgId`: a string of 1–128 characters.
pub fn check_client_msg_id(id: Option<serde_json::Value>) -> Result<Option<String>, Refusal> {
    match id {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s))
            if !s.is_empty() && s.chars().count() <= MAX_CLIENT_MSG_ID_CHARS =>
        {
            Ok(Some(s))
        }
        Some(_) => Err(Refusal::invalid(
            "clientMsgId must be a string of 1-128 characters",
        )),
    }
}

/// Takes one message from the client address's bucket
/// (`--address-messages-per-sec`) and the user's (`--messages-per-sec`).
pub fn check_message_rate<A: Adapter>(session: &Session<A>, ns: &str) -> Result<(), Refusal> {
    // The user's bucket first: a message refused there takes nothing from
    // the address's, so one flooder does not silence its neighbours.
    if session.ctx.limits.message(ns, &session.identity.user_id) {
        if session.ctx.limits.address_message(session.address) {
            return Ok(());
        }
        crate::metrics::limit_hit("address_messages_per_sec");
        return Err(Refusal::new(
            Code::RateLimited,
            "too many messages from your address: slow down",
        ));
    }
    crate::metrics::limit_hit("messages_per_sec");
    Err(Refusal::new(
        Code::RateLimited,
        "too many messages: slow down",
    ))
}

/// Refuses an event; `rate_limited` refusals count towards a disconnect.
pub fn refuse<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    ack: Option<Ack<A>>,
    r: &Refusal,
) {
    reply::refuse(ack, r);
    if r.code == Code::RateLimited {
        session.rate_refused(socket);
    }
}

pub fn store_refusal(e: &StoreError) -> Refusal {
    match e {
        StoreError::Unavailable(_) => Refusal::new(Code::Unavailable, "message store unavailable"),
        StoreError::Internal(_) => Refusal::new(Code::Internal, "internal error"),
    }
}

pub async fn send<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
    dialect: Dialect,
) {
    let (room_id, msg) = match prepare(session, socket, data, dialect) {
        Ok(v) => v,
        Err(r) => return refuse(session, socket, ack, &r),
    };
    store_then(
        session,
        socket,
        msg,
        ack,
        move |session, socket, m| async move {
            super::typing::stop_user(&session, &socket, &room_id).await;
            broadcast(socket.within(client_room(&room_id)), "chat:message", &m).await;
        },
    );
}

/// The ack of a stored message: `{ success, messageId, seq }`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SendAck {
    success: bool,
    message_id: String,
    seq: u64,
}

/// Appends `msg` to the store now (fixing its place in the conversation),
/// then, in a task, once it is durable and every earlier write of this socket
/// is done: runs `deliver` for a new message and acks `{ success, messageId, seq }`.
pub fn store_then<A, F, Fut>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    msg: NewMessage,
    ack: Option<Ack<A>>,
    deliver: F,
) where
    A: Adapter,
    F: FnOnce(Arc<Session<A>>, SocketRef<A>, Message) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let pending = session.ctx.store.append(msg);
    let (prev, done) = session.chain();
    let session = session.clone();
    let socket = socket.clone();
    super::tasks::run_or_spawn(async move {
        let stored = pending.await;
        if let Some(prev) = prev {
            let _ = prev.await;
        }
        match stored {
            Ok(stored) => {
                let m = stored.message();
                let ack_body = SendAck {
                    success: true,
                    message_id: m.id.clone(),
                    seq: m.seq,
                };
                if let Appended::New(m) = stored {
                    deliver(session, socket, m).await;
                }
                reply::ok(ack, &ack_body);
            }
            Err(e) => {
                tracing::debug!("store append failed: {e}");
                reply::refuse(ack, &store_refusal(&e));
            }
        }
        let _ = done.send(());
    });
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
    limit: Option<u64>,
}

pub const DEFAULT_HISTORY_LIMIT: u64 = 50;
pub const MAX_HISTORY_LIMIT: u64 = 100;

/// `chat:history { roomId | withUserId, before?, limit? }`.
pub async fn history<A: Adapter>(
    session: &Arc<Session<A>>,
    ns: &str,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    let (conv, before, limit) = match history_query(session, ns, data) {
        Ok(q) => q,
        Err(r) => return reply::refuse(ack, &r),
    };
    // The socket's own sends are in history before it reads.
    session.settle().await;
    match session.ctx.store.history(&conv, before, limit).await {
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
) -> Result<(Conversation, Option<u64>, usize), Refusal> {
    let p: HistoryPayload = reply::parse(data)?;
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
            super::private::check_user_id(&other)?;
            Conversation::direct(ns, &session.identity.user_id, &other)
        }
        _ => {
            return Err(Refusal::invalid(
                "give exactly one of roomId and withUserId",
            ));
        }
    };
    Ok((conv, p.before, limit as usize))
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

    #[test]
    fn content_rules() {
        assert_eq!(check_content(Some(json!("hi")), 10).unwrap(), "hi");
        assert_eq!(
            check_content(Some(json!("")), 10).unwrap_err().code,
            Code::InvalidPayload
        );
        assert_eq!(
            check_content(Some(json!("  ")), 10).unwrap_err().code,
            Code::InvalidPayload
        );
        assert_eq!(
            check_content(Some(json!(3)), 10).unwrap_err().code,
            Code::InvalidPayload
        );
        assert_eq!(
            check_content(Some(json!("ééééééééééé")), 10)
                .unwrap_err()
                .code,
            Code::TooLarge
        );
        assert!(check_content(Some(json!("éééééééééé")), 10).is_ok());
        assert!(check_client_msg_id(Some(json!(""))).is_err());
        assert!(check_client_msg_id(Some(json!(7))).is_err());
        assert_eq!(check_client_msg_id(None).unwrap(), None);
    }
}
