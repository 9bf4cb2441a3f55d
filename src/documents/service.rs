//! Collaborative documents: the server's half of docs/protocol.md §15.
//!
//! Every op for one document goes through that document's [`Entry`] on this
//! node, one batch at a time: the ops waiting are rebased past every op the
//! server accepted since their base version (`ot::rebase`), applied to a copy
//! of the text, given the next versions, and committed in one transaction
//! that also checks the stored version. Only after the commit are they
//! relayed (in version order) and acked, so nothing acked is lost and nothing
//! relayed is undone.
//!
//! Several nodes: each keeps its own copy of a document's text and recent
//! ops. The commit's version check fails when another node committed first;
//! the node then reads the ops it missed from the store, and rebases the
//! batch again (nothing was relayed or acked yet). Versions thus stay
//! gap-free and unique per document across nodes, with no lock held in
//! Redis.
//!
//! Memory: a document is held while it is in use, and dropped after
//! [`IDLE_EVICT`] without use (the store has it). It holds its text (at most
//! `--max-doc-bytes`) and its latest [`KEEP_OPS`] ops (at most
//! [`KEEP_OP_BYTES`] of op text). Every held document counts against
//! `--max-doc-memory-bytes`, an empty one (joined, never edited) too.
//!
//! Users: clients' joins and the documents they create are rate-limited per
//! user ([`UserLimits`]); a backend's ops are not.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

use crate::documents::ot::{self, Op};
use crate::documents::store::{Commit, CommitError, DocKey, DocStore, StoredOp};
use crate::store::StoreError;

/// Ops kept per document for clients whose base version is behind; an op
/// made on an older version is refused with `stale_version`.
pub const KEEP_OPS: u64 = 1000;
/// At most this much op text is kept in memory per document (fewer ops are
/// then kept, and older bases are `stale_version`).
pub const KEEP_OP_BYTES: usize = 8 << 20;
/// The most op text a rejoin's `ops` may carry (the ack is one packet).
pub const MAX_SINCE_BYTES: usize = 512 * 1024;
/// A snapshot of the text is stored every this many versions.
pub const SNAPSHOT_EVERY: u64 = 100;
/// How often one batch is retried after losing the version race to another
/// node (each retry first reads what the winner wrote, then waits a little
/// at random so that two busy nodes do not keep colliding).
const MAX_CONFLICTS: u32 = 32;
/// A document unused this long is dropped from memory.
pub const IDLE_EVICT: Duration = Duration::from_secs(60);

/// An op from a client or a backend: made on `base`.
#[derive(Debug, Clone)]
pub struct Edit {
    pub base: u64,
    pub op: Op,
    pub user_id: String,
    pub op_id: Option<String>,
    /// A client's op: the first op of a document counts against the user's
    /// `--doc-creations-per-min`.
    pub by_client: bool,
}

/// Why an edit or a read was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("version {base} is older than the ops kept (from {oldest}): join again")]
    Stale { base: u64, oldest: u64 },
    #[error("document store unavailable")]
    Unavailable,
    #[error(
        "this node holds as many documents as it may (--max-doc-memory-bytes): try again later"
    )]
    Full,
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for DocError {
    fn from(e: StoreError) -> Self {
        tracing::debug!("document store: {e}");
        match e {
            StoreError::Unavailable(_) => DocError::Unavailable,
            StoreError::Internal(_) => DocError::Internal,
        }
    }
}

/// An accepted op, as it is relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub op: Op,
    pub user_id: String,
    pub op_id: Option<String>,
    /// The text's length (characters) before it: checks ops based on `version - 1`.
    len_before: usize,
}

impl Applied {
    /// The bytes of text it carries (content and ids).
    fn bytes(&self) -> usize {
        let text = match &self.op {
            Op::Insert { text, .. } => text.len(),
            Op::Delete { .. } => 0,
        };
        text + self.user_id.len() + self.op_id.as_ref().map_or(0, String::len)
    }

    /// `{ docId, version, type, position, content?, length?, userId, opId? }`
    pub fn to_json(&self, doc_id: &str) -> serde_json::Value {
        let mut v = op_json(&self.op);
        v["docId"] = doc_id.into();
        v["version"] = self.version.into();
        v["userId"] = self.user_id.as_str().into();
        if let Some(id) = &self.op_id {
            v["opId"] = id.as_str().into();
        }
        v
    }
}

/// `{ type, position, content | length }`
pub fn op_json(op: &Op) -> serde_json::Value {
    match op {
        Op::Insert { pos, text } => {
            serde_json::json!({ "type": "insert", "position": pos, "content": text })
        }
        Op::Delete { pos, len } => {
            serde_json::json!({ "type": "delete", "position": pos, "length": len })
        }
    }
}

/// What became of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted at this version.
    New(Applied),
    /// A retry of an `opId` already accepted at this version.
    Duplicate(u64),
}

impl Outcome {
    pub fn version(&self) -> u64 {
        match self {
            Outcome::New(a) => a.version,
            Outcome::Duplicate(v) => *v,
        }
    }
}

/// A document as a client joins it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub content: String,
    pub version: u64,
    /// The ops after the `since` the joiner gave, when still kept.
    pub since: Option<Vec<Applied>>,
}

/// Relays an accepted op; run in version order, before the ack.
pub type Relay = Box<dyn FnOnce(Applied) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Submitted {
    edit: Edit,
    relay: Relay,
    reply: oneshot::Sender<Result<Outcome, DocError>>,
}

/// One document on this node.
struct Entry {
    /// Edits waiting for the next batch.
    waiting: Mutex<Vec<Submitted>>,
    state: tokio::sync::Mutex<State>,
    /// When it was last used, in ms since the documents were created.
    last_used: AtomicU64,
    /// What its state holds, as last counted (see [`Docs::account`]).
    bytes: AtomicUsize,
}

#[derive(Default)]
struct State {
    loaded: bool,
    text: String,
    chars: usize,
    version: u64,
    snapshot_version: u64,
    /// The latest ops, oldest first: versions `version - recent.len() + 1 ..= version`.
    recent: VecDeque<Applied>,
    recent_bytes: usize,
}

impl State {
    /// The oldest version an op may be based on.
    fn oldest_base(&self) -> u64 {
        self.version - self.recent.len() as u64
    }

    fn push_recent(&mut self, a: Applied) {
        self.recent_bytes += a.bytes();
        self.recent.push_back(a);
        while self.recent.len() as u64 > KEEP_OPS || self.recent_bytes > KEEP_OP_BYTES {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= old.bytes();
        }
    }

    /// Applies ops another node committed (or the log after a snapshot).
    fn replay(&mut self, ops: Vec<StoredOp>) -> Result<(), DocError> {
        for s in ops {
            if s.version <= self.version {
                continue;
            }
            if s.version != self.version + 1 {
                tracing::debug!(
                    version = self.version,
                    next = s.version,
                    "document op log read with a gap"
                );
                return Err(DocError::Internal);
            }
            let len_before = self.chars;
            ot::apply(&mut self.text, &s.op).map_err(|e| {
                tracing::warn!("stored document op does not apply: {e}");
                DocError::Internal
            })?;
            self.chars = (self.chars as isize + s.op.len_delta()) as usize;
            self.version = s.version;
            self.push_recent(Applied {
                version: s.version,
                op: s.op,
                user_id: s.user_id,
                op_id: s.op_id,
                len_before,
            });
        }
        Ok(())
    }
}

/// Per-user bounds on what clients make documents do, across the user's
/// sockets on this node (keyed by namespace and user, like chat messages).
pub struct UserLimits {
    joins: DefaultKeyedRateLimiter<(String, String)>,
    creations: DefaultKeyedRateLimiter<(String, String)>,
}

impl UserLimits {
    /// `joins_per_sec` with bursts of `join_burst` (`--doc-joins-per-sec`,
    /// `--doc-join-burst`), `creations_per_min` (`--doc-creations-per-min`).
    pub fn new(joins_per_sec: u32, join_burst: u32, creations_per_min: u32) -> Self {
        let nz = |n: u32| std::num::NonZeroU32::new(n.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        UserLimits {
            joins: RateLimiter::keyed(
                Quota::per_second(nz(joins_per_sec)).allow_burst(nz(join_burst.max(joins_per_sec))),
            ),
            creations: RateLimiter::keyed(Quota::per_minute(nz(creations_per_min))),
        }
    }
}

/// Every document this node holds.
pub struct Docs {
    store: Arc<dyn DocStore>,
    entries: Mutex<HashMap<DocKey, Arc<Entry>>>,
    started: std::time::Instant,
    max_doc_bytes: usize,
    /// The bytes the held documents take (text and kept ops), and the most
    /// they may take before idle ones are dropped early and edits refused.
    held_bytes: AtomicUsize,
    max_held_bytes: usize,
    /// None: no per-user bounds (unit tests, and a Docs made only for backends).
    users: Option<UserLimits>,
    /// With the `document.changed` webhook: its debounce in ms.
    report: std::sync::OnceLock<u64>,
}

/// Bytes counted per kept op besides its text.
const OP_OVERHEAD: usize = 96;
/// Bytes counted per held document besides its key, text and ops: its map
/// slot, entry, locks and state (a never-edited document costs about this:
/// 30,000 joins of new ids took ~440 B each).
const ENTRY_OVERHEAD: usize = 512;

impl Docs {
    /// Each commit from now on writes a `document.changed` webhook event
    /// with its ops, folding into the one waiting for `debounce_ms`.
    pub fn report_changes(&self, debounce_ms: u64) {
        let _ = self.report.set(debounce_ms);
    }

    pub fn new(store: Arc<dyn DocStore>, max_doc_bytes: usize, max_held_bytes: usize) -> Self {
        Docs {
            store,
            entries: Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
            max_doc_bytes,
            held_bytes: AtomicUsize::new(0),
            max_held_bytes,
            users: None,
            report: Default::default(),
        }
    }

    /// Bounds clients' joins and new documents per user.
    pub fn with_user_limits(mut self, users: UserLimits) -> Self {
        self.users = Some(users);
        self
    }

    /// Takes one `doc:join` from `user`'s bucket in `ns`.
    pub fn may_join(&self, ns: &str, user: &str) -> Result<(), DocError> {
        let Some(users) = &self.users else {
            return Ok(());
        };
        if users
            .joins
            .check_key(&(ns.to_string(), user.to_string()))
            .is_ok()
        {
            return Ok(());
        }
        crate::metrics::limit_hit("doc_joins_per_sec");
        Err(DocError::RateLimited(
            "too many doc:join: slow down (--doc-joins-per-sec)".into(),
        ))
    }

    /// Takes one new document from `user`'s bucket in `ns`.
    fn may_create(&self, ns: &str, user: &str) -> Result<(), DocError> {
        let Some(users) = &self.users else {
            return Ok(());
        };
        if users
            .creations
            .check_key(&(ns.to_string(), user.to_string()))
            .is_ok()
        {
            return Ok(());
        }
        crate::metrics::limit_hit("doc_creations_per_min");
        Err(DocError::RateLimited(
            "too many new documents: edit an existing one, or try again in a minute (--doc-creations-per-min)".into(),
        ))
    }

    /// Forgets users whose buckets are full again.
    fn forget_idle_users(&self) {
        if let Some(users) = &self.users {
            for l in [&users.joins, &users.creations] {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }

    /// The bytes held documents take now (the `switchboard_docs_held_bytes` gauge).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Counts what `entry`'s state holds now (an empty document too: it
    /// costs its key and bookkeeping).
    fn account(&self, key: &DocKey, entry: &Entry, st: &State) {
        let now = ENTRY_OVERHEAD
            + key.namespace.len()
            + key.doc_id.len()
            + st.text.len()
            + st.recent_bytes
            + st.recent.len() * OP_OVERHEAD;
        let before = entry.bytes.swap(now, Ordering::Relaxed);
        if now >= before {
            self.held_bytes.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.held_bytes.fetch_sub(before - now, Ordering::Relaxed);
        }
        crate::metrics::docs_held(self.held(), self.held_bytes());
    }

    /// Over the memory budget: drop every document not in use; still over,
    /// refuse to load or grow more.
    fn make_room(&self) -> Result<(), DocError> {
        if self.held_bytes() <= self.max_held_bytes {
            return Ok(());
        }
        self.evict_idle(Duration::ZERO);
        if self.held_bytes() <= self.max_held_bytes {
            return Ok(());
        }
        crate::metrics::limit_hit("max_doc_memory_bytes");
        Err(DocError::Full)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn entry(&self, key: &DocKey) -> Arc<Entry> {
        let now = self.now_ms();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    waiting: Mutex::new(Vec::new()),
                    state: tokio::sync::Mutex::new(State::default()),
                    last_used: AtomicU64::new(now),
                    bytes: AtomicUsize::new(0),
                })
            })
            .clone();
        e.last_used.store(now, Ordering::Relaxed);
        e
    }

    /// How many documents this node holds in memory.
    pub fn held(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Drops documents unused for `idle` that nobody is using now.
    pub fn evict_idle(&self, idle: Duration) {
        let now = self.now_ms();
        let idle = idle.as_millis() as u64;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| {
            let keep = Arc::strong_count(e) > 1
                || now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle;
            if !keep {
                self.held_bytes
                    .fetch_sub(e.bytes.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            }
            keep
        });
        let held = entries.len();
        drop(entries);
        crate::metrics::docs_held(held, self.held_bytes());
    }

    /// Loads the document if this node does not hold it yet, else reads
    /// what other nodes committed since.
    async fn refresh(&self, key: &DocKey, st: &mut State) -> Result<(), DocError> {
        if st.loaded {
            let ops = self.store.ops_since(key, st.version).await?;
            if ops.first().is_none_or(|o| o.version == st.version + 1) {
                return st.replay(ops);
            }
            // Pruned past what this node has: load it again.
            st.loaded = false;
        }
        // The row and the log are read by two statements: another node may
        // commit (or even snapshot and prune) in between. More ops than the
        // row says is fine; a gap means read again.
        let mut last = DocError::Internal;
        for _ in 0..3 {
            match self.load(key).await {
                Ok(fresh) => {
                    *st = fresh;
                    return Ok(());
                }
                Err(e @ DocError::Internal) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn load(&self, key: &DocKey) -> Result<State, DocError> {
        let load = self.store.load(key, KEEP_OPS).await?;
        let mut fresh = State {
            text: load.snapshot,
            version: load.snapshot_version,
            snapshot_version: load.snapshot_version,
            ..State::default()
        };
        fresh.chars = ot::char_len(&fresh.text);
        // Ops at or below the snapshot are only kept as history: they need
        // the text before the snapshot, so they are taken apart differently.
        match load.ops.first().map(|o| o.version) {
            Some(first) if first <= load.snapshot_version => {
                Self::rebuild_history(&mut fresh, load.ops)?
            }
            _ => fresh.replay(load.ops)?,
        }
        if fresh.version < load.version {
            tracing::debug!(
                doc = key.doc_id,
                stored = load.version,
                rebuilt = fresh.version,
                "document log read behind its row; reading again"
            );
            return Err(DocError::Internal);
        }
        fresh.loaded = true;
        Ok(fresh)
    }

    /// `st` holds the text at its snapshot; `ops` reach back before it. The
    /// text before them is not stored, so derive each op's `len_before` by
    /// walking back from the snapshot, and keep them as history.
    fn rebuild_history(st: &mut State, ops: Vec<StoredOp>) -> Result<(), DocError> {
        let (old, new): (Vec<_>, Vec<_>) = ops.into_iter().partition(|o| o.version <= st.version);
        let mut len = st.chars as isize;
        let mut history = Vec::with_capacity(old.len());
        for s in old.into_iter().rev() {
            len -= s.op.len_delta();
            if len < 0 {
                return Err(DocError::Internal);
            }
            history.push(Applied {
                version: s.version,
                op: s.op,
                user_id: s.user_id,
                op_id: s.op_id,
                len_before: len as usize,
            });
        }
        for a in history.into_iter().rev() {
            st.push_recent(a);
        }
        st.replay(new)
    }

    /// The document's text and version (and the ops after `since`, if kept).
    pub async fn read(&self, key: &DocKey, since: Option<u64>) -> Result<Snapshot, DocError> {
        self.make_room()?;
        let entry = self.entry(key);
        let mut st = entry.state.lock().await;
        let refreshed = self.refresh(key, &mut st).await;
        self.account(key, &entry, &st);
        if let Err(e) = refreshed {
            if !st.loaded {
                return Err(e);
            }
            // Serve what this node has; the next op finds out the rest.
            tracing::debug!(doc = key.doc_id, "document refresh failed: {e}");
        }
        let since = since.and_then(|s| {
            if s > st.version {
                None
            } else if s >= st.oldest_base() {
                let skip = (s - st.oldest_base()) as usize;
                let ops = st.recent.iter().skip(skip);
                // Past the cap the joiner takes the text as it is instead.
                let bytes: usize = ops.clone().map(Applied::bytes).sum();
                (bytes <= MAX_SINCE_BYTES).then(|| ops.cloned().collect())
            } else {
                None
            }
        });
        Ok(Snapshot {
            content: st.text.clone(),
            version: st.version,
            since,
        })
    }

    /// Accepts an edit: rebased, applied, committed, relayed (by `relay`), in
    /// version order with every other edit of the document.
    pub async fn submit(
        self: &Arc<Self>,
        key: &DocKey,
        edit: Edit,
        relay: Relay,
    ) -> Result<Outcome, DocError> {
        self.make_room()?;
        let entry = self.entry(key);
        let (reply, rx) = oneshot::channel();
        entry
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Submitted { edit, relay, reply });
        // Whoever holds the state takes every edit waiting: a batch per
        // commit, as many edits as arrived during the previous one. The
        // batch runs in a task of its own: it carries other people's edits,
        // so the caller going away (an HTTP client hanging up) must not
        // cancel it half way.
        let (docs, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let mut st = entry.state.lock().await;
            let batch =
                std::mem::take(&mut *entry.waiting.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                docs.run_batch(&key, &mut st, batch).await;
                docs.account(&key, &entry, &st);
            }
            entry.last_used.store(docs.now_ms(), Ordering::Relaxed);
        });
        rx.await.unwrap_or(Err(DocError::Internal))
    }

    async fn run_batch(&self, key: &DocKey, st: &mut State, batch: Vec<Submitted>) {
        let fail_all = |batch: Vec<Submitted>, e: DocError| {
            for s in batch {
                let _ = s.reply.send(Err(e.clone()));
            }
        };
        // An edit made on a version this node has not seen was made after
        // an op another node committed: read what this node missed first.
        let ahead = batch.iter().any(|s| s.edit.base > st.version);
        if (!st.loaded || ahead)
            && let Err(e) = self.refresh(key, st).await
        {
            return fail_all(batch, e);
        }
        for attempt in 0..MAX_CONFLICTS {
            let (results, text, chars, new_ops) = self.rebase_batch(key, st, &batch);
            if new_ops.is_empty() {
                for (s, r) in batch.into_iter().zip(results) {
                    let _ = s.reply.send(r);
                }
                return;
            }
            let version = st.version + new_ops.len() as u64;
            let snapshot =
                (version - st.snapshot_version >= SNAPSHOT_EVERY).then_some(text.as_str());
            let stored: Vec<StoredOp> = new_ops
                .iter()
                .map(|a| StoredOp {
                    version: a.version,
                    op: a.op.clone(),
                    user_id: a.user_id.clone(),
                    op_id: a.op_id.clone(),
                })
                .collect();
            // Keep KEEP_OPS ops, and never prune what the stored snapshot needs.
            let prune_through = snapshot
                .is_some()
                .then(|| version.saturating_sub(KEEP_OPS))
                .filter(|v| *v > 0);
            let event = self.report.get().map(|debounce| {
                crate::store::document_event(&key.namespace, &key.doc_id, version, *debounce)
            });
            let commit = Commit {
                key,
                expected: st.version,
                ops: &stored,
                snapshot,
                prune_through,
                event: event.as_ref(),
            };
            let landed = match self.store.commit(commit).await {
                Ok(()) => true,
                Err(CommitError::Conflict) => {
                    crate::metrics::doc_conflict();
                    // Back off before reading, not between the read and the
                    // next commit (that would widen the window to lose again).
                    let jitter = rand::random_range(0..=attempt.min(8) * 250);
                    tokio::time::sleep(Duration::from_micros(u64::from(jitter))).await;
                    if let Err(e) = self.refresh(key, st).await {
                        return fail_all(batch, e);
                    }
                    false
                }
                Err(CommitError::Store(e)) => {
                    // A connection lost during COMMIT leaves the outcome
                    // unknown: if the ops are in the log, the batch went in,
                    // and must be relayed and acked like any other.
                    let found = self.store.ops_since(key, st.version).await;
                    if !found.is_ok_and(|ops| same_ops(&ops, &stored)) {
                        return fail_all(batch, e.into());
                    }
                    tracing::info!(
                        doc = key.doc_id,
                        "document commit reported '{e}' but landed"
                    );
                    true
                }
            };
            if !landed {
                continue;
            }
            if snapshot.is_some() {
                st.snapshot_version = version;
            }
            st.text = text;
            st.chars = chars;
            st.version = version;
            for a in new_ops {
                st.push_recent(a);
            }
            crate::metrics::doc_ops(stored.len());
            for (s, r) in batch.into_iter().zip(results) {
                if let Ok(Outcome::New(a)) = &r {
                    (s.relay)(a.clone()).await;
                }
                let _ = s.reply.send(r);
            }
            return;
        }
        tracing::warn!(
            doc = key.doc_id,
            "document commit kept losing the version race"
        );
        fail_all(batch, DocError::Unavailable)
    }

    /// Rebases and applies the batch on a copy of the text: the outcome of
    /// each edit, the new text and length, and the ops to commit.
    fn rebase_batch(
        &self,
        key: &DocKey,
        st: &State,
        batch: &[Submitted],
    ) -> (Vec<Result<Outcome, DocError>>, String, usize, Vec<Applied>) {
        let mut text = st.text.clone();
        let mut chars = st.chars;
        let mut new_ops: Vec<Applied> = Vec::new();
        let results = batch
            .iter()
            .map(|s| self.rebase_one(key, st, &mut text, &mut chars, &mut new_ops, &s.edit))
            .collect();
        (results, text, chars, new_ops)
    }

    fn rebase_one(
        &self,
        key: &DocKey,
        st: &State,
        text: &mut String,
        chars: &mut usize,
        new_ops: &mut Vec<Applied>,
        edit: &Edit,
    ) -> Result<Outcome, DocError> {
        let history = || st.recent.iter().chain(new_ops.iter());
        if let Some(id) = &edit.op_id
            && let Some(done) =
                history().find(|a| a.op_id.as_ref() == Some(id) && a.user_id == edit.user_id)
        {
            return Ok(Outcome::Duplicate(done.version));
        }
        let head = st.version + new_ops.len() as u64;
        if edit.base > head {
            return Err(DocError::Invalid(format!(
                "version {} is newer than the document's ({head})",
                edit.base
            )));
        }
        let oldest = st.oldest_base();
        if edit.base < oldest {
            return Err(DocError::Stale {
                base: edit.base,
                oldest,
            });
        }
        // The op must fit the text it was made on.
        let len_at_base = history()
            .find(|a| a.version == edit.base + 1)
            .map(|a| a.len_before)
            .unwrap_or(*chars);
        edit.op
            .check(len_at_base)
            .map_err(|e| DocError::Invalid(e.to_string()))?;
        let mut op = edit.op.clone();
        for prior in history().filter(|a| a.version > edit.base) {
            op = ot::rebase(&op, &prior.op);
        }
        if let Op::Insert { text: t, .. } = &op
            && text.len() + t.len() > self.max_doc_bytes
        {
            crate::metrics::limit_hit("max_doc_bytes");
            return Err(DocError::TooLarge(format!(
                "the document would exceed {} bytes",
                self.max_doc_bytes
            )));
        }
        // This op creates the document (stored from its first op).
        if head == 0 && edit.by_client {
            self.may_create(&key.namespace, &edit.user_id)?;
        }
        let len_before = *chars;
        ot::apply(text, &op).map_err(|e| {
            tracing::warn!("a rebased op does not apply: {e}");
            DocError::Internal
        })?;
        *chars = (*chars as isize + op.len_delta()) as usize;
        let applied = Applied {
            version: head + 1,
            op,
            user_id: edit.user_id.clone(),
            op_id: edit.op_id.clone(),
            len_before,
        };
        new_ops.push(applied.clone());
        Ok(Outcome::New(applied))
    }
}

/// Checks a document id: the room id rules (1–128 characters from
/// `[A-Za-z0-9_.:@-]`).
pub fn check_doc_id(id: &str) -> Result<(), DocError> {
    if crate::names::valid_room_id(id) {
        Ok(())
    } else {
        Err(DocError::Invalid(
            "docId must be 1-128 characters from A-Z a-z 0-9 _ . : @ -".into(),
        ))
    }
}

/// The fields of an op as a client or a backend sends them:
/// `{ version, type, position, content?, length?, opId? }`.
pub fn parse_edit(
    v: &serde_json::Value,
    user_id: &str,
    max_op_bytes: usize,
) -> Result<Edit, DocError> {
    let invalid = |m: &str| DocError::Invalid(m.to_string());
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("expected { docId, version, type, position, ... }"))?;
    let count = |name: &str| -> Result<u64, DocError> {
        match obj.get(name) {
            Some(n) => n
                .as_u64()
                .ok_or_else(|| DocError::Invalid(format!("{name} must be a non-negative integer"))),
            None => Err(DocError::Invalid(format!("{name} is required"))),
        }
    };
    let base = count("version")?;
    let pos = usize::try_from(count("position")?).map_err(|_| invalid("position is too large"))?;
    let op = match obj.get("type").and_then(|t| t.as_str()) {
        Some("insert") => {
            let text = match obj.get("content") {
                Some(serde_json::Value::String(t)) => t,
                Some(_) => return Err(invalid("content must be a string")),
                None => return Err(invalid("an insert needs content")),
            };
            if text.is_empty() {
                return Err(invalid("content is empty"));
            }
            if text.len() > max_op_bytes {
                return Err(DocError::TooLarge(format!(
                    "an op may insert at most {max_op_bytes} bytes"
                )));
            }
            Op::Insert {
                pos,
                text: text.clone(),
            }
        }
        Some("delete") => {
            let len =
                usize::try_from(count("length")?).map_err(|_| invalid("length is too large"))?;
            if len == 0 {
                return Err(invalid("length must be at least 1"));
            }
            Op::Delete { pos, len }
        }
        _ => return Err(invalid("type must be \"insert\" or \"delete\"")),
    };
    let op_id = match obj.get("opId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.chars().count() <= 128 => {
            Some(s.clone())
        }
        Some(_) => return Err(invalid("opId must be a string of 1-128 characters")),
    };
    Ok(Edit {
        base,
        op,
        user_id: user_id.to_string(),
        op_id,
        by_client: false,
    })
}

/// Whether `found` (read from the store) begins with exactly `ours`.
fn same_ops(found: &[StoredOp], ours: &[StoredOp]) -> bool {
    found.len() >= ours.len() && found.iter().zip(ours).all(|(f, o)| f == o)
}

/// Drops idle documents every 10 s (and the buckets of idle users).
pub async fn evict_idle(docs: Arc<Docs>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        docs.evict_idle(IDLE_EVICT);
        docs.forget_idle_users();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Edit, DocError> {
        parse_edit(&v, "u", 10)
    }

    #[test]
    fn edits_are_checked() {
        let e = parse(
            json!({ "version": 3, "type": "insert", "position": 1, "content": "hi", "opId": "a" }),
        )
        .unwrap();
        assert_eq!((e.base, e.op_id.as_deref()), (3, Some("a")));
        assert_eq!(
            e.op,
            Op::Insert {
                pos: 1,
                text: "hi".into()
            }
        );
        let d =
            parse(json!({ "version": 0, "type": "delete", "position": 0, "length": 2 })).unwrap();
        assert_eq!(d.op, Op::Delete { pos: 0, len: 2 });
        for bad in [
            json!("x"),
            json!({ "version": -1, "type": "insert", "position": 0, "content": "a" }),
            json!({ "version": 1.5, "type": "insert", "position": 0, "content": "a" }),
            json!({ "version": 0, "type": "insert", "position": -2, "content": "a" }),
            json!({ "version": 0, "type": "insert", "position": 0, "content": 5 }),
            json!({ "version": 0, "type": "insert", "position": 0, "content": "" }),
            json!({ "version": 0, "type": "insert", "position": 0 }),
            json!({ "version": 0, "type": "delete", "position": 0, "length": -1 }),
            json!({ "version": 0, "type": "delete", "position": 0, "length": 0 }),
            json!({ "version": 0, "type": "replace", "position": 0, "content": "a" }),
            json!({ "type": "insert", "position": 0, "content": "a" }),
            json!({ "version": 0, "type": "insert", "position": 0, "content": "a", "opId": "" }),
        ] {
            assert!(
                matches!(parse(bad.clone()), Err(DocError::Invalid(_))),
                "{bad}"
            );
        }
        let big =
            json!({ "version": 0, "type": "insert", "position": 0, "content": "x".repeat(11) });
        assert!(matches!(parse(big), Err(DocError::TooLarge(_))));
        assert!(check_doc_id("notes-1").is_ok());
        assert!(check_doc_id("has space").is_err());
        assert!(check_doc_id("").is_err());
    }

    fn ins(pos: usize, text: &str) -> Op {
        Op::Insert {
            pos,
            text: text.into(),
        }
    }

    fn edit(base: u64, op: Op, op_id: Option<&str>) -> Edit {
        Edit {
            base,
            op,
            user_id: "u".into(),
            op_id: op_id.map(Into::into),
            by_client: false,
        }
    }

    fn no_relay() -> Relay {
        Box::new(|_| Box::pin(async {}))
    }

    #[tokio::test]
    async fn concurrent_edits_are_rebased_and_versioned() {
        let store: Arc<dyn DocStore> = Arc::new(crate::documents::store::MemoryDocs::default());
        let docs = Arc::new(Docs::new(store.clone(), 100, 1 << 30));
        let key = DocKey::new("/", "d");
        let submit = |e| docs.submit(&key, e, no_relay());
        assert_eq!(
            submit(edit(0, ins(0, "ab"), None)).await.unwrap().version(),
            1
        );
        // Two inserts made on version 1 at one position: server order.
        assert_eq!(
            submit(edit(1, ins(1, "X"), None)).await.unwrap().version(),
            2
        );
        assert_eq!(
            submit(edit(1, ins(1, "Y"), Some("y")))
                .await
                .unwrap()
                .version(),
            3
        );
        assert_eq!(docs.read(&key, None).await.unwrap().content, "aXYb");
        // A retry of an accepted opId is not applied twice.
        assert_eq!(
            submit(edit(1, ins(1, "Y"), Some("y"))).await.unwrap(),
            Outcome::Duplicate(3)
        );
        // Checked against the text of its base version (2 characters).
        assert!(matches!(
            submit(edit(1, ins(3, "z"), None)).await,
            Err(DocError::Invalid(_))
        ));
        assert!(matches!(
            submit(edit(9, ins(0, "z"), None)).await,
            Err(DocError::Invalid(_))
        ));
        assert!(matches!(
            submit(edit(3, ins(0, &"z".repeat(97)), None)).await,
            Err(DocError::TooLarge(_))
        ));
        // Another node (a fresh Docs on the same store) sees it all, and the
        // ops since version 1.
        let other = Arc::new(Docs::new(store, 100, 1 << 30));
        let snap = other.read(&key, Some(1)).await.unwrap();
        assert_eq!((snap.content.as_str(), snap.version), ("aXYb", 3));
        let since: Vec<u64> = snap.since.unwrap().iter().map(|a| a.version).collect();
        assert_eq!(since, [2, 3]);
        // It commits on version 3 while this node still holds 3: the first
        // node's next commit conflicts, catches up, and rebases.
        other
            .submit(&key, edit(3, ins(4, "!"), None), no_relay())
            .await
            .unwrap();
        assert_eq!(
            submit(edit(3, ins(0, ">"), None)).await.unwrap().version(),
            5
        );
        assert_eq!(docs.read(&key, None).await.unwrap().content, ">aXYb!");
        assert_eq!(other.read(&key, None).await.unwrap().content, ">aXYb!");
    }

    /// The batch carries other callers' edits: a caller that goes away (an
    /// HTTP client hanging up, a timeout) must not cut it off half way.
    #[tokio::test]
    async fn a_caller_going_away_does_not_cut_its_batch_off() {
        let docs = Arc::new(Docs::new(
            Arc::new(crate::documents::store::MemoryDocs::default()),
            100,
            1 << 30,
        ));
        let key = DocKey::new("/", "d");
        let relayed = Arc::new(AtomicUsize::new(0));
        let counted = relayed.clone();
        let slow: Relay = Box::new(move |_| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                counted.fetch_add(1, Ordering::SeqCst);
            })
        });
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            docs.submit(&key, edit(0, ins(0, "a"), None), slow),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "the caller went away before the relay ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(relayed.load(Ordering::SeqCst), 1, "relayed all the same");
        let snap = docs.read(&key, None).await.unwrap();
        assert_eq!((snap.content.as_str(), snap.version), ("a", 1));
    }

    #[tokio::test]
    async fn new_documents_and_joins_are_limited_per_user_for_clients_only() {
        let docs = Arc::new(
            Docs::new(
                Arc::new(crate::documents::store::MemoryDocs::default()),
                100,
                1 << 30,
            )
            .with_user_limits(UserLimits::new(1, 2, 1)),
        );
        let client = |base| Edit {
            by_client: true,
            ..edit(base, ins(0, "a"), None)
        };
        let key = |d: &str| DocKey::new("/", d);
        assert!(
            docs.submit(&key("one"), client(0), no_relay())
                .await
                .is_ok()
        );
        assert!(matches!(
            docs.submit(&key("two"), client(0), no_relay()).await,
            Err(DocError::RateLimited(_))
        ));
        // Nothing was stored for it; an existing document is still edited;
        // a backend's op creates without limit.
        assert_eq!(docs.read(&key("two"), None).await.unwrap().version, 0);
        assert!(
            docs.submit(&key("one"), client(1), no_relay())
                .await
                .is_ok()
        );
        let backend = edit(0, ins(0, "b"), None);
        assert!(
            docs.submit(&key("three"), backend, no_relay())
                .await
                .is_ok()
        );
        // Joins: the burst, then refused; per user and namespace.
        assert!(docs.may_join("/", "u").is_ok() && docs.may_join("/", "u").is_ok());
        assert!(matches!(
            docs.may_join("/", "u"),
            Err(DocError::RateLimited(_))
        ));
        assert!(docs.may_join("/", "v").is_ok());
        assert!(docs.may_join("/acme", "u").is_ok());
    }

    #[test]
    fn an_empty_document_counts_against_the_budget() {
        let docs = Docs::new(
            Arc::new(crate::documents::store::MemoryDocs::default()),
            100,
            1 << 30,
        );
        let key = DocKey::new("/", "never-edited");
        let entry = docs.entry(&key);
        docs.account(&key, &entry, &State::default());
        assert_eq!(docs.held_bytes(), ENTRY_OVERHEAD + 1 + 12);
        docs.evict_idle(Duration::ZERO);
        drop(entry);
        docs.evict_idle(Duration::ZERO);
        assert_eq!((docs.held(), docs.held_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn old_bases_are_stale_and_snapshots_bound_the_replay() {
        let store: Arc<dyn DocStore> = Arc::new(crate::documents::store::MemoryDocs::default());
        let docs = Arc::new(Docs::new(store.clone(), 1 << 20, 1 << 30));
        let key = DocKey::new("/", "d");
        let n = KEEP_OPS + 250;
        for v in 0..n {
            docs.submit(&key, edit(v, ins(0, "a"), None), no_relay())
                .await
                .unwrap();
        }
        assert!(matches!(
            docs.submit(&key, edit(100, ins(0, "a"), None), no_relay())
                .await,
            Err(DocError::Stale { .. })
        ));
        let load = store.load(&key, 0).await.unwrap();
        assert_eq!(load.snapshot_version, 1200);
        assert_eq!(load.ops.len(), 50);
        let fresh = Arc::new(Docs::new(store, 1 << 20, 1 << 30));
        let snap = fresh.read(&key, Some(n - KEEP_OPS + 10)).await.unwrap();
        assert_eq!(snap.content.len() as u64, n);
        assert_eq!(snap.since.unwrap().len(), (KEEP_OPS - 10) as usize);
    }
}
