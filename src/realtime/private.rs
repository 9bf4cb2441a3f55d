//! Private messages between two users, stored per pair.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};

use super::chat::{check_client_msg_id, check_content, store_then};
use super::reply::{self, Refusal};
use super::rooms::user_room;
use super::session::Session;
use crate::store::{Conversation, NewMessage};

/// A user id as it appears in `sub`: 1–128 characters.
pub fn check_user_id(id: &str) -> Result<(), Refusal> {
    let n = id.chars().count();
    if n == 0 || n > 128 {
        return Err(Refusal::invalid("user ids are 1-128 characters"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrivatePayload {
    to_user_id: String,
    #[serde(default)]
    content: Option<serde_json::Value>,
    #[serde(default)]
    client_msg_id: Option<serde_json::Value>,
}

/// `private:send { toUserId, content, clientMsgId? }`: stored in the pair's
/// conversation, then `private:message` to every socket of the recipient and
/// to the sender's other sockets.
pub async fn send<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<AckSender<A>>,
) {
    let msg = match prepare(session, socket, data) {
        Ok(m) => m,
        Err(r) => return reply::refuse(ack, &r),
    };
    let to = user_room(msg.to_user_id.as_deref().unwrap_or_default());
    store_then(
        session,
        socket,
        msg,
        ack,
        move |session, socket, m| async move {
            let ns = socket.ns();
            let feeds = &session.ctx.feeds;
            let to_user = m.to_user_id.as_deref().unwrap_or_default();
            feeds.publish(ns, to_user, "private:message", &m);
            if to_user != m.sender_id {
                feeds.publish(ns, &m.sender_id, "private:message", &m);
            }
            // `to` leaves out the sending socket itself.
            let rooms = [to, session.user_room()];
            super::broadcast::broadcast(socket.to(rooms), "private:message", &m).await;
        },
    );
}

fn prepare<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
) -> Result<NewMessage, Refusal> {
    let p: PrivatePayload = reply::parse(data)?;
    check_user_id(&p.to_user_id)?;
    let content = check_content(p.content, session.ctx.config.max_message_chars)?;
    let client_msg_id = check_client_msg_id(p.client_msg_id)?;
    let me = &session.identity;
    Ok(NewMessage {
        conversation: Conversation::direct(socket.ns(), &me.user_id, &p.to_user_id),
        sender_id: me.user_id.clone(),
        sender_name: me.name.clone(),
        to_user_id: Some(p.to_user_id),
        content,
        kind: "text".into(),
        client_msg_id,
    })
}
