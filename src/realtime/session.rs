//! Per-socket state and the serial queue that keeps one socket's events in
//! the order it sent them.
//!
//! socketioxide runs closure handlers in a task per incoming event, so two
//! events from one socket could run out of order. `incoming::QueueEvents` is instead
//! called synchronously on the socket's read path: it appends the event to
//! the socket's queue right there, and one worker (started on demand, gone
//! when the queue is empty) handles the queue in order. The worker runs in
//! place while its events need no waiting and becomes a task only when one
//! does (`tasks::run_or_spawn`). An idle socket therefore costs no task.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
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
    /// The socket is gone: clean up, then signal. True when it can be
    /// recovered (its transport died; see `recover`).
    Disconnect(oneshot::Sender<()>, bool),
    /// Restore a recovered socket's rooms and replay what it missed, before
    /// any event of its own (see `recover`).
    Recover(Box<crate::recovery::Restored>),
    /// Signals once every job queued before it has been handled.
    Barrier(oneshot::Sender<()>),
    /// Count the socket as online (see `online`), before any event of its own.
    Online,
}

/// An event as the client sent it.
pub struct Incoming<A: Adapter> {
    pub event: String,
    /// The first argument, or `None` when there was none or it was not JSON.
    pub data: Option<serde_json::Value>,
    /// The first argument held binary data (refused: see `realtime::binary`).
    pub binary: bool,
    /// Present when the client passed a callback.
    pub ack: Option<super::ack::Ack<A>>,
}

struct QueueState<A: Adapter> {
    running: bool,
    /// Jobs wait until the socket is connected (a recovery runs first).
    held: bool,
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
    /// The socket's span: at debug level, every line logged while handling
    /// its events carries its namespace, user id and socket id. At the
    /// default level it is disabled, so that it costs nothing: a live span
    /// took 0.4 KiB per socket and ~950 instructions per event (entered and
    /// left around each drain); the info and warn lines about a socket name
    /// its namespace and id themselves.
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
    /// The private id socket.io-client presents to recover this socket's
    /// session (see `recover`), when recovery is on.
    pub pid: std::sync::OnceLock<String>,
    /// When the session (the first socket with this pid) began.
    pub recovery_since: std::sync::OnceLock<u64>,
    /// Rooms of a recovered session not entered yet (see `recover`): kept
    /// with the session if the socket drops again before they are.
    restoring: Mutex<BTreeSet<String>>,
    /// Why the server is ending this socket, once it is (see `closing`).
    closing: std::sync::OnceLock<&'static str>,
    /// When the closing socket last sent an event.
    last_event: Mutex<Option<Instant>>,
    /// Counted as online (see `online`) and not yet uncounted.
    pub online: std::sync::atomic::AtomicBool,
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
            span: tracing::debug_span!("socket", ns, user = identity.user_id, sid),
            queue: Mutex::new(QueueState {
                running: false,
                held: false,
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
            restoring: Default::default(),
            pid: Default::default(),
            recovery_since: Default::default(),
            last_event: Default::default(),
            online: Default::default(),
            identity,
            ctx,
        }
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
    pub fn heard(&self) {
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

    /// Notes a recovered room as still to enter (`true`) or done with.
    pub fn restoring(&self, room_id: &str, pending: bool) {
        if let Ok(mut rooms) = self.restoring.lock() {
            if pending {
                rooms.insert(room_id.to_string());
            } else {
                rooms.remove(room_id);
            }
        }
    }

    /// The rooms a kept session holds: those joined and those of a
    /// recovery not entered yet.
    pub fn rooms_to_keep(&self) -> Vec<String> {
        let mut rooms: BTreeSet<String> = self.joined.lock().map(|r| r.clone()).unwrap_or_default();
        if let Ok(pending) = self.restoring.lock() {
            rooms.extend(pending.iter().cloned());
        }
        rooms.into_iter().collect()
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
        crate::names::user_room(&self.identity.user_id)
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
            let disconnect = matches!(job, Job::Disconnect(..));
            q.jobs.push_back(job);
            if q.held && !disconnect {
                return Ok(());
            }
            q.held = false;
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            self.start(socket);
        }
        Ok(())
    }

    /// Holds the queue: jobs pushed from now on wait for [`Session::release`].
    pub fn hold(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.held = true;
        }
    }

    /// Ends a hold, starting the worker for what waited.
    pub fn release(self: &Arc<Self>, socket: SocketRef<A>) {
        let start = {
            let Ok(mut q) = self.queue.lock() else { return };
            let was = std::mem::replace(&mut q.held, false);
            was && !q.jobs.is_empty() && !std::mem::replace(&mut q.running, true)
        };
        if start {
            self.start(socket);
        }
    }

    fn start(self: &Arc<Self>, socket: SocketRef<A>) {
        {
            let session = self.clone();
            let span = self.span.clone();
            super::tasks::run_or_spawn(tracing::Instrument::instrument(
                async move { session.drain(socket).await },
                span,
            ));
        }
    }

    async fn drain(self: Arc<Self>, socket: SocketRef<A>) {
        loop {
            let job = {
                let Ok(mut q) = self.queue.lock() else { return };
                match q.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        q.running = false;
                        // An idle socket keeps no queue: a kept one (four
                        // jobs at least, ~0.4 KiB) would stay for its life.
                        q.jobs = VecDeque::new();
                        return;
                    }
                }
            };
            super::run(&self, &socket, job).await;
        }
    }
}
