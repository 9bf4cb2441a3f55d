//! The backend's hooks where a socket meets them (see `crate::hooks`): a
//! `room:join` the join hook refuses, a message the publish hook refuses or
//! rewrites, and client events under the RPC prefix, answered by the rpc
//! hook. A hook that gives no answer refuses (`unavailable`) unless it is
//! configured to fail open.

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::ack::{Ack, Code, Refusal};
use super::messages::check_content;
use super::reply;
use super::session::Session;
use crate::hooks::{RpcAnswer, Target, Verdict};
use crate::store::NewMessage;

/// Asks the join hook, if any, whether the user may join `room_id`.
pub async fn join<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    room_id: &str,
) -> Result<(), Refusal> {
    let Some(hooks) = &session.ctx.hooks else {
        return Ok(());
    };
    match hooks
        .join(socket.ns(), &session.identity.user_id, room_id)
        .await
    {
        Ok(Verdict::Refuse { code, message }) => Err(Refusal::by_hook(code, message)),
        Ok(_) => Ok(()),
        Err(_) if hooks.join_fails_open() => Ok(()),
        Err(e) => Err(Refusal::new(Code::Unavailable, e.to_string())),
    }
}

/// Asks the publish hook, if any, about `msg`: it goes as it is, with the
/// content the backend gave (checked as a client's), or not at all.
pub async fn publish<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    msg: &mut NewMessage,
) -> Result<(), Refusal> {
    let Some(hooks) = &session.ctx.hooks else {
        return Ok(());
    };
    let target = match (&msg.to_user_id, &msg.conversation.kind) {
        (Some(to), _) => Target::User(to),
        (None, crate::store::ConversationKind::Room(r)) => Target::Room(r),
        (None, _) => return Ok(()),
    };
    let verdict = hooks
        .publish(socket.ns(), &session.identity.user_id, target, &msg.content)
        .await;
    match verdict {
        Ok(Verdict::Allow) => Ok(()),
        Ok(Verdict::Replace(content)) => {
            msg.content = check_content(
                Some(Value::String(content)),
                session.ctx.config.max_message_chars,
            )
            .map_err(|r| Refusal::new(Code::Unavailable, format!("publish hook: {}", r.error)))?;
            Ok(())
        }
        Ok(Verdict::Refuse { code, message }) => Err(Refusal::by_hook(code, message)),
        Err(_) if hooks.publish_fails_open() => Ok(()),
        Err(e) => Err(Refusal::new(Code::Unavailable, e.to_string())),
    }
}

/// Whether `event` goes to the rpc hook.
pub fn is_rpc<A: Adapter>(session: &Session<A>, event: &str) -> bool {
    session
        .ctx
        .hooks
        .as_ref()
        .and_then(|h| h.rpc_prefix())
        .is_some_and(|p| event.starts_with(p))
}

/// Forwards an RPC event with the user's identity; the backend's answer is
/// the ack: `{ success: true, result }` or `{ success: false, code, error }`.
pub async fn rpc<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    event: &str,
    data: Option<Value>,
    ack: Option<Ack<A>>,
) {
    let Some(hooks) = &session.ctx.hooks else {
        return reply::error(ack, Code::NotFound, "unknown event");
    };
    let data = data.unwrap_or(Value::Null);
    match hooks
        .rpc(socket.ns(), &session.identity.user_id, event, &data)
        .await
    {
        Ok(RpcAnswer::Result(result)) => {
            reply::ok(ack, &json!({ "success": true, "result": result }))
        }
        Ok(RpcAnswer::Error { code, message }) => {
            reply::refuse(ack, &Refusal::by_hook(code, message))
        }
        Err(e) => reply::error(ack, Code::Unavailable, &e.to_string()),
    }
}
