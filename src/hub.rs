//! The Hub: the one backend-facing handle. Emit to rooms, users or everyone
//! (with exceptions), emit to a user and wait for acks, ask who is in a room
//! or online, disconnect a user, post a chat message. The HTTP API, SSE and
//! embedding applications all go through it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;

use crate::cluster::IoHandle;
use crate::names::{client_room, user_room};
use crate::on_io;
use crate::presence::Member;
use crate::realtime::Ctx;
use crate::realtime::messages::{check_content, check_user_id};
use crate::realtime::patterns::pattern_matches;
use crate::realtime::reply;
use crate::store::{Conversation, Message, NewMessage, Page, StoreError};

/// Who receives a backend emit. No rooms and no users means everyone in the
/// namespace.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    /// Rooms whose members are left out.
    #[serde(default)]
    pub except: Vec<String>,
}

impl Audience {
    pub fn rooms<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Self {
        Audience {
            rooms: rooms.into_iter().map(Into::into).collect(),
            ..Audience::default()
        }
    }

    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(users: I) -> Self {
        Audience {
            users: users.into_iter().map(Into::into).collect(),
            ..Audience::default()
        }
    }

    pub fn everyone() -> Self {
        Audience::default()
    }

    pub fn except<I: IntoIterator<Item = S>, S: Into<String>>(mut self, rooms: I) -> Self {
        self.except.extend(rooms.into_iter().map(Into::into));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("unknown namespace '{0}'")]
    UnknownNamespace(String),
    #[error("{0}")]
    Invalid(String),
    #[error("user is not connected")]
    NotConnected,
    #[error("no acknowledgement within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("delivery failed: {0}")]
    Delivery(String),
    #[error("other nodes unreachable ({0}); delivered on this node only")]
    ClusterUnavailable(String),
    #[error(transparent)]
    Doc(#[from] crate::documents::DocError),
    #[error("no document '{0}' (it is stored from its first op)")]
    NoDocument(String),
}

/// The backend-facing handle. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    io: IoHandle,
    ctx: Arc<Ctx>,
}

/// A user's presence in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserPresence {
    /// Whether the user has at least one socket (on any node).
    pub online: bool,
    /// How many sockets.
    pub connections: usize,
}

impl Hub {
    pub fn new(io: IoHandle, ctx: Arc<Ctx>) -> Self {
        Hub { io, ctx }
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    pub fn io(&self) -> &IoHandle {
        &self.io
    }

    /// Whether `ns` is `/` or a configured namespace (or matches a pattern).
    fn check_namespace(&self, ns: &str) -> Result<(), HubError> {
        let config = &self.ctx.config;
        if ns == "/" || config.namespaces.iter().any(|p| pattern_matches(p, ns)) {
            Ok(())
        } else {
            Err(HubError::UnknownNamespace(ns.to_string()))
        }
    }

    fn check_event(event: &str) -> Result<(), HubError> {
        crate::names::check_event_name(event).map_err(HubError::Invalid)
    }

    fn check_room(id: &str) -> Result<(), HubError> {
        reply::room_id(id)
            .map(|_| ())
            .map_err(|r| HubError::Invalid(format!("room '{id}': {}", r.error)))
    }

    fn check_user(id: &str) -> Result<(), HubError> {
        check_user_id(id).map_err(|r| HubError::Invalid(r.error))
    }

    /// Emits `event` with `data` to `audience` in namespace `ns`.
    pub async fn emit(
        &self,
        ns: &str,
        audience: &Audience,
        event: &str,
        data: &Value,
    ) -> Result<(), HubError> {
        Self::check_event(event)?;
        audience
            .rooms
            .iter()
            .try_for_each(|r| Self::check_room(r))?;
        audience
            .except
            .iter()
            .try_for_each(|r| Self::check_room(r))?;
        audience
            .users
            .iter()
            .try_for_each(|u| Self::check_user(u))?;
        self.check_namespace(ns)?;
        crate::metrics::event_out(event);
        let mut relayed = Ok(());
        for user in &audience.users {
            if let Err(e) = self.ctx.feeds.publish(ns, user, event, data) {
                relayed = Err(HubError::ClusterUnavailable(e.to_string()));
            }
        }
        on_io!(&self.io, io => emit_in(io, ns, audience, event, data).await)?;
        relayed
    }

    /// Emits to every socket of `user` (on every node) and waits up to
    /// `timeout` for their acks. `NotConnected` when the user has no socket,
    /// `TimedOut` when none answered.
    pub async fn emit_to_user_with_ack(
        &self,
        ns: &str,
        user: &str,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<Vec<Value>, HubError> {
        Self::check_event(event)?;
        Self::check_user(user)?;
        self.check_namespace(ns)?;
        crate::metrics::event_out(event);
        on_io!(&self.io, io => emit_with_ack_in(io, ns, user, event, data, timeout).await)
    }

    /// The members of a room, per user.
    pub async fn room_members(&self, ns: &str, room: &str) -> Result<Vec<Member>, HubError> {
        Self::check_room(room)?;
        self.check_namespace(ns)?;
        Ok(crate::realtime::rooms::room_members(&self.ctx, ns, room).await)
    }

    /// Whether `user` has sockets in `ns` (on any node), and how many.
    pub async fn user_presence(&self, ns: &str, user: &str) -> Result<UserPresence, HubError> {
        Self::check_user(user)?;
        self.check_namespace(ns)?;
        let connections = on_io!(&self.io, io => match io.of(ns) {
            Some(op) => user_sockets(op, user).await?,
            None => 0,
        });
        Ok(UserPresence {
            online: connections > 0,
            connections,
        })
    }

    /// Disconnects every socket of `user` in `ns`, on every node (the clients
    /// are told; they do not reconnect by themselves), and ends the user's SSE
    /// streams there. Returns how many sockets, and how many streams on this
    /// node.
    pub async fn disconnect_user(&self, ns: &str, user: &str) -> Result<(usize, usize), HubError> {
        Self::check_user(user)?;
        self.check_namespace(ns)?;
        let streams = self.ctx.feeds.close_user(ns, user);
        let sockets: usize = on_io!(&self.io, io => match io.of(ns) {
            Some(op) => {
                let n = user_sockets(op.clone(), user).await?;
                op.within(user_room(user))
                    .disconnect()
                    .await
                    .map_err(|e| HubError::Delivery(e.to_string()))?;
                Ok::<_, HubError>(n)
            }
            None => Ok(0),
        })?;
        Ok((sockets, streams))
    }

    /// Stores a chat message in `room` (as `sender`, or the system) and
    /// broadcasts it as `chat:message`.
    /// Runs in a task of its own: an HTTP client that hangs up cannot leave
    /// a stored message undelivered (or its room's later messages waiting).
    pub async fn post_message(
        &self,
        ns: &str,
        room: &str,
        content: Value,
        sender: Option<(String, Option<String>)>,
    ) -> Result<Message, HubError> {
        let hub = self.clone();
        let (ns, room) = (ns.to_string(), room.to_string());
        tokio::spawn(async move { hub.post_message_now(&ns, &room, content, sender).await })
            .await
            .map_err(|e| HubError::Delivery(e.to_string()))?
    }

    async fn post_message_now(
        &self,
        ns: &str,
        room: &str,
        content: Value,
        sender: Option<(String, Option<String>)>,
    ) -> Result<Message, HubError> {
        Self::check_room(room)?;
        self.check_namespace(ns)?;
        let content = check_content(Some(content), self.ctx.config.max_message_chars)
            .map_err(|r| HubError::Invalid(r.error))?;
        let (sender_id, sender_name) = match sender {
            Some((id, name)) => {
                Self::check_user(&id)?;
                let name = name.unwrap_or_else(|| id.clone());
                (id, name)
            }
            None => ("system".to_string(), "System".to_string()),
        };
        let conversation = Conversation::room(ns, room);
        let order = &self.ctx.delivery_order;
        let key = order.key(&conversation);
        let msg = NewMessage {
            conversation,
            sender_id,
            sender_name,
            to_user_id: None,
            content,
            kind: "text".into(),
            client_msg_id: None,
        };
        let store = &self.ctx.store;
        let (pending, mut turn) = order.append(key, || store.append(msg));
        let stored = pending.await?;
        let m = stored.message().clone();
        // After the messages appended before it in the room (realtime::order).
        turn.wait().await;
        crate::metrics::event_out("chat:message");
        let audience = Audience::rooms([room]);
        match crate::realtime::positions::offset_of(&self.ctx, ns, &m) {
            Some(offset) => {
                on_io!(&self.io, io => emit_in(io, ns, &audience, "chat:message", &(&m, offset)).await)?
            }
            None => on_io!(&self.io, io => emit_in(io, ns, &audience, "chat:message", &m).await)?,
        }
        Ok(m)
    }

    /// A page of a room's history, oldest first.
    pub async fn history(
        &self,
        ns: &str,
        room: &str,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, HubError> {
        Self::check_room(room)?;
        self.check_namespace(ns)?;
        Ok(self
            .ctx
            .store
            .history(&Conversation::room(ns, room), page, limit)
            .await?)
    }
}

impl Hub {
    /// A document's text and version; `NoDocument` for one never edited.
    pub async fn read_doc(&self, ns: &str, doc_id: &str) -> Result<(String, u64), HubError> {
        crate::documents::check_doc_id(doc_id)?;
        self.check_namespace(ns)?;
        let key = crate::documents::store::DocKey::new(ns, doc_id);
        let snap = self.ctx.docs.read(&key, None).await?;
        if snap.version == 0 {
            return Err(HubError::NoDocument(doc_id.to_string()));
        }
        Ok((snap.content, snap.version))
    }

    /// Applies a backend's op (`{ version, type, position, content?,
    /// length?, opId? }`) to a document, as `user_id`, transformed like a
    /// client's and relayed to the document's sockets. Returns its version.
    pub async fn apply_doc_op(
        &self,
        ns: &str,
        doc_id: &str,
        op: &Value,
        user_id: &str,
    ) -> Result<u64, HubError> {
        crate::documents::check_doc_id(doc_id)?;
        Self::check_user(user_id)?;
        self.check_namespace(ns)?;
        let edit = crate::documents::parse_edit(op, user_id, self.ctx.config.max_doc_op_bytes)?;
        let key = crate::documents::store::DocKey::new(ns, doc_id);
        let (io, ns_owned, id) = (self.io.clone(), ns.to_string(), doc_id.to_string());
        let relay: crate::documents::Relay = Box::new(move |applied| {
            Box::pin(async move {
                let payload = applied.to_json(&id);
                let room = crate::realtime::docs::doc_room(&id);
                on_io!(&io, io => {
                    if let Some(op) = io.of(ns_owned.as_str()) {
                        crate::realtime::broadcast::broadcast(op.to(room), "doc:operation", &payload)
                            .await;
                    }
                })
            })
        });
        Ok(self.ctx.docs.submit(&key, edit, relay).await?.version())
    }
}

/// Emits to `audience` in `ns`; there is nobody to reach when the namespace
/// has no sockets yet.
async fn emit_in<A: Adapter, T: serde::Serialize + ?Sized>(
    io: &SocketIo<A>,
    ns: &str,
    audience: &Audience,
    event: &str,
    data: &T,
) -> Result<(), HubError> {
    let Some(mut op) = io.of(ns) else {
        return Ok(());
    };
    let targets: Vec<String> = audience
        .rooms
        .iter()
        .map(|r| client_room(r))
        .chain(audience.users.iter().map(|u| user_room(u)))
        .collect();
    if !targets.is_empty() {
        op = op.to(targets);
    }
    if !audience.except.is_empty() {
        let except: Vec<String> = audience.except.iter().map(|r| client_room(r)).collect();
        op = op.except(except);
    }
    match op.clone().emit(event, data).await {
        Ok(()) => Ok(()),
        // The other nodes are out of reach: this node's sockets still get it,
        // and the caller learns that the others did not.
        Err(socketioxide::BroadcastError::Adapter(e)) => {
            let _ = op.local().emit(event, data).await;
            Err(HubError::ClusterUnavailable(e.to_string()))
        }
        // One member's full queue is that member's problem (it is closed as
        // a slow consumer), never the backend's: the others got it.
        Err(socketioxide::BroadcastError::Socket(errs)) => {
            crate::realtime::broadcast::socket_failures(event, &errs);
            Ok(())
        }
        Err(e) => Err(HubError::Delivery(e.to_string())),
    }
}

/// How many sockets `user` has in the namespace, on every node.
async fn user_sockets<A: Adapter>(
    op: BroadcastOperators<A>,
    user: &str,
) -> Result<usize, HubError> {
    op.within(user_room(user))
        .fetch_sockets()
        .await
        .map(|s| s.len())
        .map_err(|e| HubError::Delivery(e.to_string()))
}

async fn emit_with_ack_in<A: Adapter>(
    io: &SocketIo<A>,
    ns: &str,
    user: &str,
    event: &str,
    data: &Value,
    timeout: Duration,
) -> Result<Vec<Value>, HubError> {
    let Some(op) = io.of(ns) else {
        return Err(HubError::NotConnected);
    };
    if user_sockets(op.clone(), user).await? == 0 {
        return Err(HubError::NotConnected);
    }
    let stream = op
        .within(user_room(user))
        .timeout(timeout)
        .emit_with_ack::<_, Value>(event, data)
        .await
        .map_err(|e| HubError::Delivery(e.to_string()))?;
    let mut stream = std::pin::pin!(stream);
    let mut acks = Vec::new();
    while let Some((_sid, res)) = stream.next().await {
        if let Ok(v) = res {
            acks.push(v);
        }
    }
    if acks.is_empty() {
        return Err(HubError::TimedOut(timeout));
    }
    Ok(acks)
}
