//! `doc:join`, `doc:operation`, `doc:cursor`, `doc:leave` (docs/protocol.md
//! §15): the socket side of collaborative documents. The rules are in
//! `crate::documents` (ordering, storage) and `crate::documents::ot` (transforms); this file
//! checks the payload, the token and the room, and translates the outcome.
//!
//! A document `X` is the Socket.IO room `doc:X`, which clients cannot name
//! through `room:join` (those are `room:…`).

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::broadcast::broadcast;
use super::messages::{check_message_rate, refuse};
use super::reply::{self, Ack, Code, Refusal};
use super::session::Session;
use crate::documents::store::DocKey;
use crate::documents::{DocError, Outcome, Relay, check_doc_id, parse_edit};

pub fn doc_room(doc_id: &str) -> String {
    format!("doc:{doc_id}")
}

/// The refusal a client sees for a document error.
pub fn refusal(e: &DocError) -> Refusal {
    let code = match e {
        DocError::Invalid(_) => Code::InvalidPayload,
        DocError::TooLarge(_) => Code::TooLarge,
        DocError::RateLimited(_) => Code::RateLimited,
        DocError::Stale { .. } => Code::StaleVersion,
        DocError::Unavailable | DocError::Full => Code::Unavailable,
        DocError::Internal => Code::Internal,
    };
    Refusal::new(code, e.to_string())
}

/// `docId`, or `{ docId, ... }`: the id and the object (if any).
fn doc_arg(
    data: Option<Value>,
) -> Result<(String, Option<serde_json::Map<String, Value>>), Refusal> {
    let (id, obj) = match data {
        Some(Value::String(s)) => (s, None),
        Some(Value::Object(mut o)) => match o.remove("docId") {
            Some(Value::String(s)) => (s, Some(o)),
            _ => return Err(Refusal::invalid("docId must be a string")),
        },
        _ => return Err(Refusal::invalid("expected a docId string or { docId }")),
    };
    check_doc_id(&id).map_err(|e| refusal(&e))?;
    Ok((id, obj))
}

/// The socket must have joined the document.
fn joined<A: Adapter>(socket: &SocketRef<A>, doc_id: &str) -> Result<(), Refusal> {
    let room = doc_room(doc_id);
    if socket.rooms().iter().any(|r| **r == *room) {
        Ok(())
    } else {
        Err(Refusal::new(
            Code::NotInRoom,
            "join the document first (doc:join)",
        ))
    }
}

pub async fn join<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<Value>,
    ack: Option<Ack<A>>,
) {
    let (doc_id, obj) = match doc_arg(data) {
        Ok(v) => v,
        Err(r) => return reply::refuse(ack, &r),
    };
    let since = match obj.as_ref().and_then(|o| o.get("since")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                return reply::error(
                    ack,
                    Code::InvalidPayload,
                    "since must be a non-negative integer",
                );
            }
        },
    };
    let room = doc_room(&doc_id);
    if !session.may_join(&room) {
        return reply::error(
            ack,
            Code::ForbiddenRoom,
            "your token does not allow this document",
        );
    }
    if let Err(r) = super::rooms::room_capacity(session, socket, &room) {
        return reply::refuse(ack, &r);
    }
    // Each join sends the whole text: bounded per user, like messages.
    if let Err(e) = session
        .ctx
        .docs
        .may_join(socket.ns(), &session.identity.user_id)
    {
        return refuse(session, socket, ack, &refusal(&e));
    }
    let was_in = socket.rooms().iter().any(|r| **r == *room);
    // Join before reading: every op committed after the read is relayed to
    // this socket, and the client ignores those the read already holds.
    socket.join(room.clone());
    let key = DocKey::new(socket.ns(), &doc_id);
    let snap = match session.ctx.docs.read(&key, since).await {
        Ok(s) => s,
        Err(e) => {
            if !was_in {
                socket.leave(room);
            }
            return reply::refuse(ack, &refusal(&e));
        }
    };
    let sync = json!({ "docId": doc_id, "content": snap.content, "version": snap.version });
    // The text goes out once: in the ack when the client asked for one,
    // else as `doc:sync` (a 1 MB document joined 200 times was 400 MB).
    let Some(ack) = ack else {
        crate::metrics::event_out("doc:sync");
        if let Err(e) = reply::emit_to_self(socket, "doc:sync", &sync).await {
            tracing::debug!("doc:sync not sent: {e}");
        }
        return;
    };
    let mut body = sync;
    body["success"] = true.into();
    if let Some(ops) = snap.since {
        body["ops"] = ops.iter().map(|a| a.to_json(&doc_id)).collect();
    }
    reply::ok(Some(ack), &body);
}

pub async fn operation<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<Value>,
    ack: Option<Ack<A>>,
) {
    let (doc_id, obj) = match doc_arg(data) {
        Ok(v) => v,
        Err(r) => return reply::refuse(ack, &r),
    };
    let fields = Value::Object(obj.unwrap_or_default());
    let mut edit = match parse_edit(
        &fields,
        &session.identity.user_id,
        session.ctx.config.max_doc_op_bytes,
    ) {
        Ok(e) => e,
        Err(e) => return reply::refuse(ack, &refusal(&e)),
    };
    edit.by_client = true;
    if let Err(r) = joined(socket, &doc_id) {
        return reply::refuse(ack, &r);
    }
    if let Err(r) = check_message_rate(session, socket.ns()) {
        return refuse(session, socket, ack, &r);
    }
    let others = socket.to(doc_room(&doc_id));
    let relay_id = doc_id.clone();
    let relay: Relay = Box::new(move |applied| {
        Box::pin(async move {
            broadcast(others, "doc:operation", &applied.to_json(&relay_id)).await;
        })
    });
    let key = DocKey::new(socket.ns(), &doc_id);
    match session.ctx.docs.submit(&key, edit, relay).await {
        Ok(outcome) => {
            if let Outcome::Duplicate(v) = outcome {
                tracing::debug!(
                    doc = doc_id,
                    version = v,
                    "op retried; acked with its version"
                );
            }
            reply::ok(
                ack,
                &json!({ "success": true, "version": outcome.version() }),
            );
        }
        Err(e) => refuse(session, socket, ack, &refusal(&e)),
    }
}

/// Relays a cursor to the document's other sockets (volatile: not stored,
/// and dropped rather than queued for a socket that is not ready).
pub async fn cursor<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<Value>,
    ack: Option<Ack<A>>,
) {
    let (doc_id, obj) = match doc_arg(data) {
        Ok(v) => v,
        Err(r) => return reply::refuse(ack, &r),
    };
    let Some(position) = obj
        .as_ref()
        .and_then(|o| o.get("position"))
        .and_then(Value::as_u64)
    else {
        return reply::error(
            ack,
            Code::InvalidPayload,
            "position must be a non-negative integer",
        );
    };
    if let Err(r) = joined(socket, &doc_id) {
        return reply::refuse(ack, &r);
    }
    let payload =
        json!({ "docId": doc_id, "userId": session.identity.user_id, "position": position });
    broadcast(
        socket.to(doc_room(&doc_id)).volatile(),
        "doc:cursor",
        &payload,
    )
    .await;
    reply::ok(ack, &json!({ "success": true }));
}

pub fn leave<A: Adapter>(
    _session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<Value>,
    ack: Option<Ack<A>>,
) {
    let (doc_id, _) = match doc_arg(data) {
        Ok(v) => v,
        Err(r) => return reply::refuse(ack, &r),
    };
    if let Err(r) = joined(socket, &doc_id) {
        return reply::refuse(ack, &r);
    }
    socket.leave(doc_room(&doc_id));
    reply::ok(ack, &json!({ "success": true, "docId": doc_id }));
}
