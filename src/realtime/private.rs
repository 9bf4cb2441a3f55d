//! Private messages between two users, stored per pair.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::messages::{
    check_client_msg_id, check_content, check_message_rate, check_user_id, refuse, store_refusal,
    store_then,
};
use super::reply::{self, Ack, Code, Refusal};
use super::session::Session;
use crate::config::PrivateRecipients;
use crate::names::user_room;
use crate::store::{Conversation, NewMessage, Page};

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
    ack: Option<Ack<A>>,
) {
    let mut msg = match prepare(session, socket, data) {
        Ok(m) => m,
        Err(r) => return refuse(session, socket, ack, &r),
    };
    if let Err(r) = recipient_known(session, socket, &msg).await {
        return reply::refuse(ack, &r);
    }
    if let Err(r) = super::hooks::publish(session, socket, &mut msg).await {
        return reply::refuse(ack, &r);
    }
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
            // The message is stored: with Redis away or swamped, streams on
            // other nodes miss it (as sockets there do) and catch up from
            // history; the drop is counted.
            let _ = feeds.publish(ns, to_user, "private:message", &m);
            if to_user != m.sender_id {
                let _ = feeds.publish(ns, &m.sender_id, "private:message", &m);
            }
            // `to` leaves out the sending socket itself.
            let rooms = socket.to([to, session.user_room()]);
            match super::positions::offset_of(&session.ctx, ns, &m) {
                Some(offset) => {
                    super::broadcast::broadcast(rooms, "private:message", &(&m, offset)).await
                }
                None => super::broadcast::broadcast(rooms, "private:message", &m).await,
            }
        },
    );
}

/// With `--private-recipients known`, a private message goes only to a user
/// who is online now (a socket on any node, or an SSE stream on this one) or
/// who already shares a conversation with the sender: made-up user ids cannot
/// fill the store. With `any` (the default) every message counts against the
/// sender's `--messages-per-sec` like a room message, which bounds the same.
async fn recipient_known<A: Adapter>(
    session: &Session<A>,
    socket: &SocketRef<A>,
    msg: &NewMessage,
) -> Result<(), Refusal> {
    if session.ctx.config.private_recipients == PrivateRecipients::Any {
        return Ok(());
    }
    let to = msg.to_user_id.as_deref().unwrap_or_default();
    let room = user_room(to);
    let online_here = !socket.within(room.clone()).local().sockets().is_empty();
    let feed_here = session.ctx.feeds.has_feed(socket.ns(), to);
    if online_here || feed_here || to == session.identity.user_id {
        return Ok(());
    }
    match session
        .ctx
        .store
        .history(&msg.conversation, Page::Latest, 1)
        .await
    {
        Ok(h) if !h.is_empty() => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(store_refusal(&e)),
    }
    if session.ctx.cluster.is_some()
        && matches!(socket.within(room).fetch_sockets().await, Ok(s) if !s.is_empty())
    {
        return Ok(());
    }
    Err(Refusal::new(
        Code::NotFound,
        "no such user online, and no conversation with them yet",
    ))
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
    check_message_rate(session, socket.ns())?;
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
