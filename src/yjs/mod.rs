//! Yjs documents (docs/protocol.md §18): the server's copy of each document
//! in use, a yrs `Doc` with its awareness, loaded from the store on demand
//! and dropped when its last socket leaves. Every update is checked and
//! stored before it is applied and relayed, so what any client has seen
//! survives a restart; after [`COMPACT_EVERY`] stored updates the state is
//! written as one snapshot, so loading reads a snapshot and a short tail.
//!
//! The providers' wire (y-socket.io events) is in `realtime::yjs`; this
//! module knows nothing of sockets.

pub mod awareness;
pub mod check;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use yrs::sync::awareness::Awareness;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::documents::store::{DocKey, DocStore};
use crate::store::StoreError;

/// Stored updates between two snapshots.
pub const COMPACT_EVERY: u64 = 100;

/// Reads of the store's tail a sync step may cause, at most one per this
/// many ms per document (the relay brings the rest).
pub const CATCH_UP_EVERY_MS: u64 = 250;

/// Messages waiting for a document's slowest local y-websocket peer; one
/// that falls further behind is closed (it syncs again when it returns).
pub const FANOUT_QUEUE: usize = 64;

/// What a document's local listeners (y-websocket peers) are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Update,
    Awareness,
}

/// One update or awareness change for the local listeners of a document.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub kind: Kind,
    pub bytes: bytes::Bytes,
    /// The local peer it came from (it is not sent back), 0 if none.
    pub from: u64,
}

/// The bounds on what clients may make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct YLimits {
    /// Largest update, in bytes.
    pub max_update_bytes: usize,
    /// Largest awareness update, in bytes.
    pub max_awareness_bytes: usize,
    /// Largest document (its encoded state, roughly), in bytes.
    pub max_doc_bytes: usize,
    /// Most bytes all loaded documents may take together.
    pub max_memory_bytes: usize,
    /// How long a document stays loaded after its last client left (a
    /// reload, or a client that comes straight back, reads nothing).
    pub unload_grace: std::time::Duration,
}

/// Why an update or a document was refused; the text is what the client
/// is told.
#[derive(Debug, thiserror::Error)]
pub enum YError {
    #[error("the update is not a Yjs update ({0})")]
    Malformed(String),
    #[error("the update is larger than {0} bytes")]
    UpdateTooLarge(usize),
    #[error("the document would be larger than {0} bytes")]
    DocTooLarge(usize),
    #[error("too many documents are open on this server; try again later")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An update (with its seq in the store) or awareness change for the
/// other nodes, or from one (see `cluster::yjs_relay`).
#[derive(Debug, Clone)]
pub struct YRelayed {
    pub key: DocKey,
    pub kind: Kind,
    pub seq: u64,
    pub bytes: bytes::Bytes,
}

/// What the relay hands this node.
#[derive(Debug)]
pub enum RelayEvent {
    Message(YRelayed),
    /// Subscribed (again): messages may have been missed meanwhile.
    Subscribed,
}

/// The way to the other nodes.
pub trait YRelay: Send + Sync {
    fn send(&self, m: YRelayed);
}

/// Every loaded document of this node.
pub struct YDocs {
    store: Arc<dyn DocStore>,
    limits: YLimits,
    loaded: Mutex<HashMap<DocKey, Arc<YDoc>>>,
    /// Bytes the loaded documents take (see [`YDoc::bytes`]).
    held: AtomicUsize,
    /// With several nodes, the way to the others.
    relay: std::sync::OnceLock<Box<dyn YRelay>>,
}

/// One loaded document.
pub struct YDoc {
    pub key: DocKey,
    /// This node's copy (replaced by a fresh load from the store when an
    /// update fails half way, see [`YDocs::reload`]).
    doc: std::sync::RwLock<yrs::Doc>,
    awareness: Mutex<Awareness>,
    /// Which socket brought each awareness client in (it alone removes it).
    owners: Mutex<HashMap<u64, String>>,
    /// Serialises this node's writes of the document, and holds the seq
    /// through which every stored update is applied to this copy (updates
    /// other nodes store arrive through the relay, or are read back by
    /// [`YDocs::catch_up`]).
    writing: tokio::sync::Mutex<Applied>,
    /// The document's local listeners (y-websocket peers).
    fanout: tokio::sync::broadcast::Sender<Relayed>,
    /// Sockets holding it.
    users: AtomicUsize,
    /// Roughly what it takes: the snapshot and every update applied since.
    bytes: AtomicUsize,
    /// The seq of the stored snapshot.
    snapshot_seq: std::sync::atomic::AtomicU64,
    /// When the store's tail was last read (ms since the epoch).
    caught_up_ms: std::sync::atomic::AtomicU64,
}

/// What this node's copy holds of the stored updates.
#[derive(Debug, Default)]
struct Applied {
    /// Every stored update through this seq is applied.
    seq: u64,
    /// Seqs above it this node stored itself (applied already): the
    /// relay's updates fill the gaps between.
    own: std::collections::BTreeSet<u64>,
}

impl Applied {
    /// Most own seqs remembered past a gap (beyond, the tail is read).
    const MAX_OWN: usize = 4096;

    /// `stored` is applied: moves `seq` past it and the own seqs after.
    fn mark(&mut self, stored: u64) {
        if stored == self.seq + 1 {
            self.seq = stored;
            while self.own.remove(&(self.seq + 1)) {
                self.seq += 1;
            }
        } else if stored > self.seq && self.own.len() < Self::MAX_OWN {
            self.own.insert(stored);
        }
    }

    /// Everything through `seq` is applied (a tail read).
    fn through(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
        self.own.retain(|s| *s > seq);
        while self.own.remove(&(self.seq + 1)) {
            self.seq += 1;
        }
    }
}

/// A document held open (released when dropped, however the holder ends).
pub struct Held {
    docs: Arc<YDocs>,
    pub doc: Arc<YDoc>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.docs.release(&self.doc);
    }
}

fn now_ms() -> u64 {
    crate::store::now_ms()
}

impl YDocs {
    pub fn new(store: Arc<dyn DocStore>, limits: YLimits) -> Self {
        YDocs {
            store,
            limits,
            loaded: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            relay: std::sync::OnceLock::new(),
        }
    }

    /// Sends what this node's clients send to the other nodes too.
    pub fn relay_to(&self, relay: Box<dyn YRelay>) {
        let _ = self.relay.set(relay);
    }

    /// Hands an update (with its seq) or awareness change to the other
    /// nodes, if there are any.
    pub fn relay(&self, key: &DocKey, kind: Kind, seq: u64, bytes: bytes::Bytes) {
        if let Some(r) = self.relay.get() {
            r.send(YRelayed {
                key: key.clone(),
                kind,
                seq,
                bytes,
            });
        }
    }

    pub fn limits(&self) -> YLimits {
        self.limits
    }

    /// Bytes the loaded documents take.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The document, loaded if need be, held for one more socket (give it
    /// back with [`YDocs::release`]).
    pub async fn open(&self, key: &DocKey) -> Result<Arc<YDoc>, YError> {
        if let Some(d) = self.hold_loaded(key) {
            return Ok(d);
        }
        if self.held_bytes() >= self.limits.max_memory_bytes {
            self.unload_idle();
        }
        if self.held_bytes() >= self.limits.max_memory_bytes {
            crate::metrics::limit_hit("yjs_max_memory_bytes");
            return Err(YError::Busy);
        }
        let stored = self.store.yjs_load(key, 0).await?;
        let doc = yrs::Doc::new();
        let bytes = apply_stored(&doc, &stored.snapshot, &stored.updates);
        let loaded = Arc::new(YDoc {
            key: key.clone(),
            awareness: Mutex::new(Awareness::new(doc.clone())),
            owners: Mutex::new(HashMap::new()),
            doc: std::sync::RwLock::new(doc),
            writing: tokio::sync::Mutex::new(Applied {
                seq: stored.seq,
                own: Default::default(),
            }),
            caught_up_ms: std::sync::atomic::AtomicU64::new(now_ms()),
            fanout: tokio::sync::broadcast::channel(FANOUT_QUEUE).0,
            users: AtomicUsize::new(0),
            bytes: AtomicUsize::new(bytes),
            snapshot_seq: std::sync::atomic::AtomicU64::new(stored.snapshot_seq),
        });
        // Another socket may have loaded it meanwhile: theirs wins.
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let d = map
            .entry(key.clone())
            .or_insert_with(|| {
                self.held.fetch_add(bytes, Ordering::Relaxed);
                crate::metrics::yjs_loaded(1);
                loaded
            })
            .clone();
        d.users.fetch_add(1, Ordering::AcqRel);
        Ok(d)
    }

    /// [`YDocs::open`], released when the holder drops it.
    pub async fn open_held(self: &Arc<Self>, key: &DocKey) -> Result<Held, YError> {
        let doc = self.open(key).await?;
        Ok(Held {
            docs: self.clone(),
            doc,
        })
    }

    /// Every document loaded now (to catch up after the relay was away).
    pub fn all_loaded(&self) -> Vec<Arc<YDoc>> {
        let map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    fn hold_loaded(&self, key: &DocKey) -> Option<Arc<YDoc>> {
        let map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let d = map.get(key)?.clone();
        d.users.fetch_add(1, Ordering::AcqRel);
        Some(d)
    }

    /// A client is done with the document; after the last one, it is
    /// unloaded once [`YLimits::unload_grace`] has passed with nobody
    /// opening it again (the store has it), or sooner when memory is needed.
    pub fn release(self: &Arc<Self>, doc: &Arc<YDoc>) {
        if doc.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let grace = self.limits.unload_grace;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !grace.is_zero() => {
                let (docs, doc) = (self.clone(), doc.clone());
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    docs.unload_if_idle(&doc);
                });
            }
            _ => self.unload_if_idle(doc),
        }
    }

    /// Unloads `doc` if nobody holds it (checked under the map's lock,
    /// which opening takes too).
    fn unload_if_idle(&self, doc: &Arc<YDoc>) {
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if doc.users.load(Ordering::Acquire) == 0
            && map.get(&doc.key).is_some_and(|d| Arc::ptr_eq(d, doc))
        {
            map.remove(&doc.key);
            self.held
                .fetch_sub(doc.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            crate::metrics::yjs_loaded(-1);
        }
    }

    /// Unloads every document nobody holds (memory is needed).
    fn unload_idle(&self) {
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0;
        map.retain(|_, d| {
            let idle = d.users.load(Ordering::Acquire) == 0;
            if idle {
                freed += d.bytes.load(Ordering::Relaxed);
                crate::metrics::yjs_loaded(-1);
            }
            !idle
        });
        self.held.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Replaces this node's copy with what the store holds (an update
    /// that yrs refused half way may have left part of itself behind). The
    /// clients keep what they have; the next sync evens it out.
    async fn reload(&self, doc: &YDoc, applied: &mut Applied) {
        match self.store.yjs_load(&doc.key, 0).await {
            Ok(stored) => {
                let fresh = yrs::Doc::new();
                let bytes = apply_stored(&fresh, &stored.snapshot, &stored.updates);
                *doc.doc.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                *applied = Applied {
                    seq: stored.seq,
                    own: Default::default(),
                };
                let before = doc.bytes.swap(bytes, Ordering::Relaxed);
                self.held.fetch_add(bytes, Ordering::Relaxed);
                self.held.fetch_sub(before, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(doc = doc.key.key(), "yjs document not reloaded: {e}"),
        }
    }

    /// Checks `update`, applies it, then stores it; returns its seq in the
    /// store (a malformed or too large one is refused before), or None when
    /// it brought nothing new (what a provider that is up to date answers
    /// to a sync step 1: nothing to store or relay).
    pub async fn apply(&self, doc: &YDoc, update: &[u8]) -> Result<Option<u64>, YError> {
        if update.len() > self.limits.max_update_bytes {
            crate::metrics::limit_hit("yjs_max_update_bytes");
            return Err(YError::UpdateTooLarge(self.limits.max_update_bytes));
        }
        let decoded = decode_update(update)?;
        let mut applied = doc.writing.lock().await;
        // Counted bytes include what later updates deleted or replaced: a
        // snapshot measures the document as it is before refusing.
        if doc.bytes.load(Ordering::Relaxed) + update.len() > self.limits.max_doc_bytes {
            self.compact(doc).await;
        }
        let size = doc.bytes.load(Ordering::Relaxed) + update.len();
        if size > self.limits.max_doc_bytes {
            crate::metrics::limit_hit("yjs_max_doc_bytes");
            return Err(YError::DocTooLarge(self.limits.max_doc_bytes));
        }
        if self.held_bytes() + update.len() > self.limits.max_memory_bytes {
            self.unload_idle();
        }
        if self.held_bytes() + update.len() > self.limits.max_memory_bytes {
            crate::metrics::limit_hit("yjs_max_memory_bytes");
            return Err(YError::Busy);
        }
        // Applied before it is stored: an update that decodes but that Yjs
        // will not integrate (a parent it does not have) never reaches the
        // log, where it would make the document fail to load.
        // Nothing new: no insertion, no deletion, and nothing waiting for
        // a missing parent. (Updates of one socket may be applied out of
        // order: one whose parent has not come yet waits with the others
        // that wait, and may not change what is seen waiting. So while
        // anything waits, every update is stored.)
        let outcome = {
            let ydoc = doc.ydoc();
            let mut txn = ydoc.transact_mut();
            txn.apply_update(decoded).map(|()| {
                txn.insert_set().is_empty()
                    && txn.delete_set().is_empty()
                    && !txn.has_missing_updates()
            })
        };
        match outcome {
            Err(e) => {
                self.reload(doc, &mut applied).await;
                return Err(YError::Malformed(e.to_string()));
            }
            Ok(true) => return Ok(None),
            Ok(false) => {}
        }
        let stored = match self.store.yjs_append(&doc.key, update).await {
            // Those between are other nodes': this copy gets them later.
            Ok(s) => {
                applied.mark(s);
                s
            }
            Err(e) => {
                // This copy holds what the store does not (nor is it sent
                // on): the sender still has it, and every client sends it
                // again when it next syncs, once the store is back.
                return Err(e.into());
            }
        };
        self.count(doc, update.len());
        crate::metrics::yjs_update(update.len());
        if stored >= doc.snapshot_seq.load(Ordering::Relaxed) + COMPACT_EVERY {
            self.compact(doc).await;
        }
        Ok(Some(stored))
    }

    fn count(&self, doc: &YDoc, bytes: usize) {
        doc.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Applies what the store has of the document after what this copy
    /// holds: updates other nodes stored that their relay did not bring
    /// (Redis away, or a message lost). One indexed read, usually empty;
    /// reads within [`CATCH_UP_EVERY_MS`] of the last one are skipped
    /// unless `now`. Returns what it brought, for this node's clients.
    pub async fn catch_up(&self, doc: &YDoc, now: bool) -> Result<Option<bytes::Bytes>, YError> {
        let last = doc.caught_up_ms.load(Ordering::Relaxed);
        if !now && now_ms().saturating_sub(last) < CATCH_UP_EVERY_MS {
            return Ok(None);
        }
        let mut applied = doc.writing.lock().await;
        self.read_tail(doc, &mut applied).await
    }

    async fn read_tail(
        &self,
        doc: &YDoc,
        applied: &mut Applied,
    ) -> Result<Option<bytes::Bytes>, YError> {
        doc.caught_up_ms.store(now_ms(), Ordering::Relaxed);
        let stored = self.store.yjs_load(&doc.key, applied.seq).await?;
        if stored.seq <= applied.seq {
            return Ok(None);
        }
        let ydoc = doc.ydoc();
        let before = ydoc.transact().state_vector();
        apply_stored(&ydoc, &stored.snapshot, &stored.updates);
        // A snapshot read here holds mostly what this copy has: only the
        // updates count.
        self.count(doc, stored.updates.iter().map(Vec::len).sum());
        applied.through(stored.seq);
        let txn = ydoc.transact();
        let brought = txn.encode_state_as_update_v1(&before);
        Ok(Some(brought.into()))
    }

    /// An update another node stored as `stored` (brought by the relay):
    /// applied to this copy if it is loaded here; one that skips past a
    /// missing seq reads the store's tail instead. Returns the document and
    /// what its clients here are to be sent: the update, the tail that was
    /// missing, or nothing when this copy had it already.
    pub async fn apply_relayed(
        &self,
        key: &DocKey,
        update: bytes::Bytes,
        stored: u64,
    ) -> Option<(Arc<YDoc>, bytes::Bytes)> {
        let doc = self.get_loaded(key)?;
        let mut applied = doc.writing.lock().await;
        if stored <= applied.seq || applied.own.contains(&stored) {
            return None;
        }
        let send = if stored == applied.seq + 1 {
            let result = decode_update(&update).and_then(|u| {
                doc.ydoc()
                    .transact_mut()
                    .apply_update(u)
                    .map_err(|e| YError::Malformed(e.to_string()))
            });
            match result {
                Ok(()) => {
                    applied.mark(stored);
                    self.count(&doc, update.len());
                    Some(update)
                }
                Err(e) => {
                    tracing::warn!(doc = key.key(), "a relayed yjs update did not apply: {e}");
                    self.reload(&doc, &mut applied).await;
                    None
                }
            }
        } else {
            self.read_tail(&doc, &mut applied)
                .await
                .inspect_err(|e| tracing::warn!(doc = key.key(), "yjs document not caught up: {e}"))
                .ok()
                .flatten()
        };
        drop(applied);
        send.map(|s| (doc, s))
    }

    /// The loaded copy of `key`, if any (not held: for a relayed message).
    pub fn get_loaded(&self, key: &DocKey) -> Option<Arc<YDoc>> {
        self.loaded.lock().ok()?.get(key).cloned()
    }

    /// Folds what the store has (its snapshot and every update after it,
    /// whichever node wrote them) into a new snapshot.
    async fn compact(&self, doc: &YDoc) {
        let result = async {
            let stored = self.store.yjs_load(&doc.key, 0).await?;
            let state = merged(&stored.snapshot, &stored.updates)?;
            let through = stored.seq;
            self.store.yjs_compact(&doc.key, &state, through).await?;
            Ok::<_, YError>((state.len(), through))
        }
        .await;
        match result {
            Ok((len, through)) => {
                doc.snapshot_seq.store(through, Ordering::Relaxed);
                let before = doc.bytes.swap(len, Ordering::Relaxed);
                if before > len {
                    self.held.fetch_sub(before - len, Ordering::Relaxed);
                } else {
                    self.held.fetch_add(len - before, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(doc = doc.key.key(), "yjs snapshot not written: {e}"),
        }
    }
}

/// One update holding a snapshot and the updates after it.
fn merged(snapshot: &[u8], updates: &[Vec<u8>]) -> Result<Vec<u8>, YError> {
    let doc = yrs::Doc::new();
    apply_stored(&doc, snapshot, updates);
    let txn = doc.transact();
    Ok(txn.encode_state_as_update_v1(&StateVector::default()))
}

/// Applies a stored snapshot and updates to `doc`; returns their bytes. One
/// that does not apply (stored by an older build) is skipped and logged
/// rather than making the whole document unreadable.
fn apply_stored(doc: &yrs::Doc, snapshot: &[u8], updates: &[Vec<u8>]) -> usize {
    let mut bytes = 0;
    let mut txn = doc.transact_mut();
    for u in std::iter::once(snapshot)
        .filter(|s| !s.is_empty())
        .chain(updates.iter().map(Vec::as_slice))
    {
        bytes += u.len();
        let applied = decode_update(u).and_then(|update| {
            txn.apply_update(update)
                .map_err(|e| YError::Malformed(e.to_string()))
        });
        if let Err(e) = applied {
            tracing::warn!("a stored yjs update was skipped: {e}");
        }
    }
    bytes
}

/// Decodes a Yjs update (v1) once [`check::update`] passed it.
fn decode_update(bytes: &[u8]) -> Result<Update, YError> {
    check::update(bytes).map_err(|e| YError::Malformed(e.to_string()))?;
    Update::decode_v1(bytes).map_err(|e| YError::Malformed(e.to_string()))
}

impl YDoc {
    /// This node's copy (a handle: cloning it is cheap).
    fn ydoc(&self) -> yrs::Doc {
        self.doc.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Listens to what the document's other clients send (see [`Relayed`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Relayed> {
        self.fanout.subscribe()
    }

    /// Hands an update or awareness change to the local listeners.
    pub fn publish(&self, kind: Kind, bytes: bytes::Bytes, from: u64) {
        let _ = self.fanout.send(Relayed { kind, bytes, from });
    }

    /// The state vector (a sync step 1).
    pub fn state_vector(&self) -> Vec<u8> {
        self.ydoc().transact().state_vector().encode_v1()
    }

    /// What a peer with state vector `sv` lacks (a sync step 2).
    pub fn diff(&self, sv: &[u8]) -> Result<Vec<u8>, YError> {
        check::state_vector(sv).map_err(|e| YError::Malformed(e.to_string()))?;
        let sv = StateVector::decode_v1(sv).map_err(|e| YError::Malformed(e.to_string()))?;
        Ok(self.ydoc().transact().encode_state_as_update_v1(&sv))
    }

    /// Whether nothing was ever written to the document.
    pub fn is_empty(&self) -> bool {
        let ydoc = self.ydoc();
        let txn = ydoc.transact();
        txn.state_vector() == StateVector::default()
    }

    /// The whole state as one update.
    pub fn state_as_update(&self) -> Vec<u8> {
        self.ydoc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// The text of the `Y.Text` named `name` (empty if there is none).
    pub fn text(&self, name: &str) -> String {
        use yrs::GetString;
        let ydoc = self.ydoc();
        let txn = ydoc.transact();
        txn.get_text(name)
            .map(|t| t.get_string(&txn))
            .unwrap_or_default()
    }
}
