//! What every chat and private message goes through, whoever sends it: the
//! content and id checks, the sender's message rate, and storing before
//! delivering (the ack carries the stored id and `seq`). `chat` and
//! `private` are the two ways in; the HTTP API and the emitter use the checks.

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::reply::{self, Ack, Code, Refusal};
use super::session::Session;
use crate::store::{Appended, Message, NewMessage, StoreError};

/// A user id as it appears in `sub`: 1–128 characters.
pub fn check_user_id(id: &str) -> Result<(), Refusal> {
    let n = id.chars().count();
    if n == 0 || n > 128 {
        return Err(Refusal::invalid("user ids are 1-128 characters"));
    }
    Ok(())
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
        super::closing::rate_refused(session, socket);
    }
}

pub fn store_refusal(e: &StoreError) -> Refusal {
    match e {
        StoreError::Unavailable(_) => Refusal::new(Code::Unavailable, "message store unavailable"),
        StoreError::Internal(_) => Refusal::new(Code::Internal, "internal error"),
    }
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
    let store = &session.ctx.store;
    let order = &session.ctx.delivery_order;
    let key = order.key(&msg.conversation);
    let (pending, mut turn) = order.append(key, || store.append(msg));
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
                    turn.wait().await;
                    deliver(session, socket, m).await;
                }
                drop(turn);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
