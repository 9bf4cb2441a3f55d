//! Per-socket state and the serial queue that keeps one socket's events in
//! the order it sent them.
//!
//! socketioxide runs closure handlers in a task per incoming event, so two
//! events from one socket could run out of order. [`QueueEvents`] is instead
//! called synchronously on the socket's read path: it appends the event to
//! the socket's queue right there, and one worker (started on demand, gone
//! when the queue is empty) handles the queue in order. The worker runs in
//! place while its events need no waiting and becomes a task only when one
//! does (`tasks::run_or_spawn`). An idle socket therefore costs no task.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::Socket;
use tokio::sync::oneshot;

use super::Ctx;
use crate::auth::Identity;

/// Most events one socket may have waiting (socket.io-client flushes its whole
/// offline buffer on reconnect, so bursts are normal); beyond it events are refused with
/// `rate_limited` rather than buffered without bound.
pub const MAX_QUEUED: usize = 1024;

/// One unit of work for a socket's worker.
pub enum Job<A: Adapter> {
    Event(Incoming<A>),
    /// The socket is gone: clean up, then signal.
    Disconnect(oneshot::Sender<()>),
    /// Signals once every job queued before it has been handled.
    Barrier(oneshot::Sender<()>),
}

/// An event as the client sent it.
pub struct Incoming<A: Adapter> {
    pub event: String,
    /// The first argument, or `None` when there was none or it was not JSON.
    pub data: Option<serde_json::Value>,
    /// The first argument held binary data (refused: see `realtime::binary`).
    pub binary: bool,
    /// Present when the client passed a callback.
    pub ack: Option<super::reply::Ack<A>>,
}

struct QueueState<A: Adapter> {
    running: bool,
    jobs: VecDeque<Job<A>>,
}

/// What switchboard keeps per socket, in the socket's extensions.
pub struct Session<A: Adapter> {
    pub identity: Identity,
    /// The client's address (`--trusted-proxy` applied), for per-address
    /// limits; none when embedded in another server.
    pub address: Option<std::net::IpAddr>,
    pub ctx: Arc<Ctx>,
    queue: Mutex<QueueState<A>>,
    /// Completion of the socket's latest pipelined store write (see [`Session::chain`]).
    last_write: Mutex<Option<oneshot::Receiver<()>>>,
    /// Set once the socket is being disconnected as a slow consumer.
    pub slow: std::sync::atomic::AtomicBool,
    /// The socket's event bucket and refusal count.
    pub limits: super::limits::SocketLimits,
    /// The socket's key in the token-expiry schedule.
    pub expiry: std::sync::OnceLock<u64>,
    /// The guarded websocket carrying the socket, once it is on one (see
    /// `reply`, which counts success acks as they are written).
    pub websocket: std::sync::OnceLock<crate::edge::guarded_io::ConnHandle>,
    /// The socket's span: every line logged while handling its events
    /// carries its namespace, user id and socket id (`--log-format json`).
    pub span: tracing::Span,
    /// The client rooms this socket is recorded in presence for. The
    /// disconnect clean-up walks this, not `socket.rooms()`: socketioxide can
    /// run `close` twice (the client's `41`, then the transport close), and
    /// the second run takes the socket out of its rooms before our clean-up
    /// reads them, which left presence ghosts behind.
    joined: Mutex<BTreeSet<String>>,
    /// The `rooms` claim in force: the connect token's, then that of the
    /// latest `auth:refresh` (which may narrow or widen it).
    rooms_claim: std::sync::RwLock<Option<Vec<String>>>,
    /// Why the server is ending this socket, once it is (see `closing`).
    closing: std::sync::OnceLock<&'static str>,
    /// When the closing socket last sent an event.
    last_event: Mutex<Option<Instant>>,
}

impl<A: Adapter> Session<A> {
    pub fn new(
        identity: Identity,
        ctx: Arc<Ctx>,
        ns: &str,
        sid: &str,
        address: Option<std::net::IpAddr>,
    ) -> Self {
        Session {
            address,
            span: tracing::info_span!("socket", ns, user = identity.user_id, sid),
            queue: Mutex::new(QueueState {
                running: false,
                jobs: VecDeque::new(),
            }),
            last_write: Mutex::new(None),
            slow: Default::default(),
            limits: ctx.limits.socket(),
            expiry: Default::default(),
            websocket: Default::default(),
            joined: Default::default(),
            rooms_claim: std::sync::RwLock::new(identity.rooms.clone()),
            closing: Default::default(),
            last_event: Default::default(),
            identity,
            ctx,
        }
    }

    /// Counts a `rate_limited` refusal; a socket that keeps flooding after
    /// refusals is told why and disconnected.
    pub fn rate_refused(&self, socket: &SocketRef<A>) {
        if !self.limits.refused() || self.closing_reason().is_some() {
            return;
        }
        tracing::info!(
            ns = socket.ns(),
            sid = %socket.id,
            user = self.identity.user_id,
            "socket keeps flooding after rate_limited refusals; disconnecting"
        );
        crate::metrics::server_disconnect("rate_limited");
        super::closing(socket, "rate_limited");
    }

    /// Links a new store write into the socket's chain: the returned receiver
    /// resolves when the previous write has finished its acks and broadcasts,
    /// and the sender must be fired when this one has. Writes are thus
    /// pipelined (the worker moves on without waiting for the commit) while
    /// their effects stay in the order the client sent them.
    pub fn chain(&self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        let prev = self
            .last_write
            .lock()
            .map(|mut last| last.replace(next))
            .unwrap_or(None);
        (prev, done)
    }

    /// Waits until every write the socket made so far is done (read-your-writes).
    pub async fn settle(&self) {
        let prev = self.last_write.lock().map(|mut l| l.take()).unwrap_or(None);
        if let Some(prev) = prev {
            let _ = prev.await;
        }
    }

    /// Whether the `rooms` claim in force allows `room_id`.
    pub fn may_join(&self, room_id: &str) -> bool {
        self.rooms_claim
            .read()
            .map(|rooms| crate::auth::rooms_allow(rooms.as_deref(), room_id))
            .unwrap_or(false)
    }

    /// Puts a refreshed token's `rooms` claim in force.
    pub fn set_rooms_claim(&self, rooms: Option<Vec<String>>) {
        if let Ok(mut claim) = self.rooms_claim.write() {
            *claim = rooms;
        }
    }

    /// The client rooms the socket is recorded in.
    pub fn joined_rooms(&self) -> Vec<String> {
        self.joined
            .lock()
            .map(|rooms| rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks the socket as closing; false when it already was.
    pub fn start_closing(&self, reason: &'static str) -> bool {
        self.closing.set(reason).is_ok()
    }

    /// Why the socket is closing, once it is.
    pub fn closing_reason(&self) -> Option<&'static str> {
        self.closing.get().copied()
    }

    /// Notes an event from the closing socket.
    fn heard(&self) {
        if let Ok(mut last) = self.last_event.lock() {
            *last = Some(Instant::now());
        }
    }

    /// None when the socket has sent nothing for `quiet`; else how much
    /// longer to wait for that.
    pub fn quiet_in(&self, quiet: Duration) -> Option<Duration> {
        let last = (*self.last_event.lock().ok()?)?;
        quiet.checked_sub(last.elapsed()).filter(|d| !d.is_zero())
    }

    /// Records that the socket is in client room `room_id` (presence).
    pub fn joined(&self, room_id: &str) {
        if let Ok(mut rooms) = self.joined.lock() {
            rooms.insert(room_id.to_string());
        }
    }

    /// Forgets client room `room_id`; true when the socket was recorded there.
    pub fn left(&self, room_id: &str) -> bool {
        self.joined
            .lock()
            .map(|mut rooms| rooms.remove(room_id))
            .unwrap_or(false)
    }

    /// Forgets every client room, returning them (the socket is gone).
    pub fn take_joined(&self) -> BTreeSet<String> {
        self.joined
            .lock()
            .map(|mut rooms| std::mem::take(&mut *rooms))
            .unwrap_or_default()
    }

    /// The private room of this session's user.
    pub fn user_room(&self) -> String {
        crate::realtime::rooms::user_room(&self.identity.user_id)
    }

    /// Appends a job; starts the worker if none runs. Returns the job back
    /// when the queue is full (disconnects are always accepted).
    pub fn push(self: &Arc<Self>, socket: SocketRef<A>, job: Job<A>) -> Result<(), Job<A>> {
        let start = {
            let Ok(mut q) = self.queue.lock() else {
                return Err(job);
            };
            if q.jobs.len() >= MAX_QUEUED && matches!(job, Job::Event(_)) {
                return Err(job);
            }
            q.jobs.push_back(job);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let session = self.clone();
            let span = self.span.clone();
            super::tasks::run_or_spawn(tracing::Instrument::instrument(
                async move { session.drain(socket).await },
                span,
            ));
        }
        Ok(())
    }

    async fn drain(self: Arc<Self>, socket: SocketRef<A>) {
        loop {
            let job = {
                let Ok(mut q) = self.queue.lock() else { return };
                match q.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        q.running = false;
                        return;
                    }
                }
            };
            match job {
                Job::Event(incoming) => super::dispatch(&self, &socket, incoming).await,
                Job::Disconnect(done) => {
                    super::rooms::on_disconnect(&self, &socket).await;
                    let _ = done.send(());
                }
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// The fallback handler, called for every event on the socket's read path:
/// queues the event (see the module doc). socketioxide would spawn a task
/// per event for a closure handler, even one that does nothing; this spawns
/// nothing.
#[derive(Clone, Copy)]
pub struct QueueEvents;

impl<A: Adapter> MessageHandler<A, QueueEvents> for QueueEvents {
    fn call(&self, s: Arc<Socket<A>>, mut v: Value, ack_id: Option<i64>) {
        let Some(session) = s.extensions.get::<Arc<Session<A>>>() else {
            tracing::debug!("event on a socket without a session");
            return;
        };
        // A JSON event without binary attachments is read in one pass; the
        // extractors below read the text twice and build an error on the
        // way each time (socketioxide's `FirstElement`).
        let parsed = match &v {
            Value::Str(text, None) => read_event(text),
            _ => None,
        };
        let (event, data, binary) = match parsed {
            Some((event, data)) => (event, data, false),
            None => {
                let Ok(Event(event)) = Event::from_message_parts(&s, &mut v, &ack_id) else {
                    tracing::debug!("unreadable event name");
                    return;
                };
                // Binary attachments (or msgpack `bin`) are noted, not lost.
                let Ok::<_, Infallible>(TryData(data)) =
                    TryData::<super::binary::Checked>::from_message_parts(&s, &mut v, &ack_id);
                match data {
                    Ok(c) => (event, Some(c.value), c.binary),
                    Err(_) => (event, None, false),
                }
            }
        };
        let Ok::<_, Infallible>(socket) = SocketRef::from_message_parts(&s, &mut v, &ack_id);
        let ack = match ack_id {
            Some(id) => {
                let Ok::<_, Infallible>(ack) = AckSender::from_message_parts(&s, &mut v, &ack_id);
                Some(super::reply::Ack::new(ack, socket.clone(), id))
            }
            None => None,
        };
        if let Some(reason) = session.closing_reason() {
            // Answered, not queued; the close waits for these to stop.
            session.heard();
            let (code, why) = super::closing::refusal(reason);
            return super::reply::error(ack, code, &why);
        }
        if !session.limits.event() {
            crate::metrics::limit_hit("events_per_sec");
            if let Some(ack) = ack {
                super::reply::error(
                    Some(ack),
                    super::reply::Code::RateLimited,
                    "too many events: slow down",
                );
            }
            session.rate_refused(&socket);
            return;
        }
        let job = Job::Event(Incoming {
            event,
            data,
            binary,
            ack,
        });
        if let Err(Job::Event(refused)) = session.push(socket, job) {
            tracing::debug!(event = refused.event, "socket queue full");
            super::reply::error(
                refused.ack,
                super::reply::Code::RateLimited,
                "too many events waiting",
            );
        }
    }
}

/// `["name", first, ...rest]` -> (name, first argument); the rest is checked
/// to be JSON and skipped. `None` when the text is not such an array.
fn read_event(text: &str) -> Option<(String, Option<serde_json::Value>)> {
    use serde::de::{Deserializer as _, Error, IgnoredAny, SeqAccess, Visitor};
    struct Args;
    impl<'de> Visitor<'de> for Args {
        type Value = (String, Option<serde_json::Value>);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event array")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            let Some(name) = seq.next_element::<String>()? else {
                return Err(S::Error::custom("no event name"));
            };
            let data = seq.next_element::<serde_json::Value>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok((name, data))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let args = (&mut de).deserialize_seq(Args).ok()?;
    de.end().ok()?;
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::read_event;
    use serde_json::json;

    #[test]
    fn reads_the_name_and_the_first_argument() {
        assert_eq!(
            read_event(r#"["chat:send",{"roomId":"a"},2,[3]]"#),
            Some(("chat:send".into(), Some(json!({ "roomId": "a" }))))
        );
        assert_eq!(read_event(r#"["ping"]"#), Some(("ping".into(), None)));
        assert_eq!(
            read_event(r#"["x",null]"#),
            Some(("x".into(), Some(json!(null))))
        );
        assert_eq!(
            read_event(r#"["éé",1]"#),
            Some(("éé".into(), Some(json!(1))))
        );
        for bad in ["[]", "[1]", "{}", r#""x""#, r#"["x",1"#, r#"["x"] 1"#, ""] {
            assert_eq!(read_event(bad), None, "{bad}");
        }
    }
}
