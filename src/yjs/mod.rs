//! Yjs documents (docs/protocol.md §18): the server's copy of each document
//! in use, a yrs `Doc` with its awareness, loaded from the store on demand
//! and dropped when its last socket leaves. Every update is checked and
//! stored before it is applied and relayed, so what any client has seen
//! survives a restart; after [`COMPACT_EVERY`] stored updates the state is
//! written as one snapshot, so loading reads a snapshot and a short tail.
//!
//! The providers' wire (y-socket.io events) is in `realtime::yjs`; this
//! module knows nothing of sockets.

pub mod check;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use yrs::sync::awareness::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::documents::store::{DocKey, DocStore};
use crate::store::StoreError;

/// Stored updates between two snapshots.
pub const COMPACT_EVERY: u64 = 100;

/// Messages waiting for a document's slowest local y-websocket peer; one
/// that falls further behind is closed (it syncs again when it returns).
pub const FANOUT_QUEUE: usize = 256;

/// Awareness entries of clients that have gone (yrs keeps each one's last
/// clock) beyond which the awareness is rebuilt from the live ones.
const MAX_GONE_CLIENTS: usize = 256;

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
    doc: yrs::Doc,
    awareness: Mutex<Awareness>,
    /// Which socket brought each awareness client in (it alone removes it).
    owners: Mutex<HashMap<u64, String>>,
    /// Serialises this node's writes of the document, and holds the seq
    /// through which every stored update is applied to this copy (updates
    /// other nodes store arrive through the relay, or are read back by
    /// [`YDocs::catch_up`]).
    writing: tokio::sync::Mutex<u64>,
    /// The document's local listeners (y-websocket peers).
    fanout: tokio::sync::broadcast::Sender<Relayed>,
    /// Sockets holding it.
    users: AtomicUsize,
    /// Roughly what it takes: the snapshot and every update applied since.
    bytes: AtomicUsize,
    /// The seq of the stored snapshot.
    snapshot_seq: std::sync::atomic::AtomicU64,
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

    /// Documents loaded now.
    pub fn loaded(&self) -> usize {
        self.loaded.lock().map(|l| l.len()).unwrap_or(0)
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
            doc,
            writing: tokio::sync::Mutex::new(stored.seq),
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

    fn hold_loaded(&self, key: &DocKey) -> Option<Arc<YDoc>> {
        let map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let d = map.get(key)?.clone();
        d.users.fetch_add(1, Ordering::AcqRel);
        Some(d)
    }

    /// A socket is done with the document; the last one unloads it (the
    /// store has it).
    pub fn release(&self, doc: &Arc<YDoc>) {
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if doc.users.fetch_sub(1, Ordering::AcqRel) == 1
            && map.get(&doc.key).is_some_and(|d| Arc::ptr_eq(d, doc))
        {
            map.remove(&doc.key);
            self.held
                .fetch_sub(doc.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            crate::metrics::yjs_loaded(-1);
        }
    }

    /// Drops this node's copy from the loaded ones (its sockets keep it
    /// until they go); the next socket loads the document from the store.
    fn forget(&self, doc: &YDoc) {
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&doc.key)
            .is_some_and(|d| std::ptr::eq(Arc::as_ptr(d), doc))
        {
            map.remove(&doc.key);
            self.held
                .fetch_sub(doc.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            crate::metrics::yjs_loaded(-1);
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
        let mut seq = doc.writing.lock().await;
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
            crate::metrics::limit_hit("yjs_max_memory_bytes");
            return Err(YError::Busy);
        }
        // Applied before it is stored: an update that decodes but that Yjs
        // will not integrate (a parent it does not have) never reaches the
        // log, where it would make the document fail to load.
        // Nothing new: no insertion, no deletion, and nothing waiting for a
        // missing parent (that one is stored: it integrates later).
        let applied = {
            let mut txn = doc.doc.transact_mut();
            txn.apply_update(decoded).map(|()| {
                txn.insert_set().is_empty()
                    && txn.delete_set().is_empty()
                    && !txn.has_missing_updates()
            })
        };
        match applied {
            Err(e) => {
                self.forget(doc);
                return Err(YError::Malformed(e.to_string()));
            }
            Ok(true) => return Ok(None),
            Ok(false) => {}
        }
        let stored = match self.store.yjs_append(&doc.key, update).await {
            // Those between are other nodes': this copy gets them later.
            Ok(s) => {
                if s == *seq + 1 {
                    *seq = s;
                }
                s
            }
            Err(e) => {
                // This copy holds what the store does not: the next socket
                // loads what is stored (the sender still has the update,
                // and sends it again when it syncs).
                self.forget(doc);
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
    /// (Redis away, or a message lost). One indexed read, usually empty.
    pub async fn catch_up(&self, doc: &YDoc) -> Result<(), YError> {
        let mut seq = doc.writing.lock().await;
        self.read_tail(doc, &mut seq).await
    }

    async fn read_tail(&self, doc: &YDoc, seq: &mut u64) -> Result<(), YError> {
        let stored = self.store.yjs_load(&doc.key, *seq).await?;
        if stored.seq > *seq {
            let bytes = apply_stored(&doc.doc, &stored.snapshot, &stored.updates);
            self.count(doc, bytes);
            *seq = stored.seq;
        }
        Ok(())
    }

    /// An update another node stored as `stored` (brought by the relay):
    /// applied to this copy if it is loaded here; one that skips past a
    /// missing seq reads the store's tail instead. Returns the document if
    /// it is loaded (its local clients are to be sent the update).
    pub async fn apply_relayed(
        &self,
        key: &DocKey,
        update: &[u8],
        stored: u64,
    ) -> Option<Arc<YDoc>> {
        let doc = self.loaded.lock().ok()?.get(key).cloned()?;
        let mut seq = doc.writing.lock().await;
        if stored == *seq + 1 {
            let applied = decode_update(update).and_then(|u| {
                doc.doc
                    .transact_mut()
                    .apply_update(u)
                    .map_err(|e| YError::Malformed(e.to_string()))
            });
            match applied {
                Ok(()) => {
                    *seq = stored;
                    self.count(&doc, update.len());
                }
                Err(e) => {
                    tracing::warn!(doc = key.key(), "a relayed yjs update did not apply: {e}")
                }
            }
        } else if stored > *seq
            && let Err(e) = self.read_tail(&doc, &mut seq).await
        {
            tracing::warn!(doc = key.key(), "yjs document not caught up: {e}");
        }
        drop(seq);
        Some(doc)
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

/// yrs keeps an entry (its last clock) for every client that ever had an
/// awareness state, and for any id a removal names: past
/// [`MAX_GONE_CLIENTS`] of those, the awareness keeps only the live ones.
/// (A removal that arrives late for a forgotten client is then a no-op,
/// and a stale state it brings back expires in the clients after 30 s.)
fn prune_gone(a: &mut Awareness) {
    let gone = a.iter().filter(|(_, s)| s.data.is_none()).count();
    if gone <= MAX_GONE_CLIENTS {
        return;
    }
    let live = a.update();
    let mut fresh = Awareness::new(a.doc().clone());
    if let Ok(live) = live {
        let _ = fresh.apply_update(live);
    }
    *a = fresh;
}

/// Reads a lib0 varuint at the start of `bytes`: (value, bytes it took).
fn leading_varuint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Whether the count a message starts with could be true: each of its
/// entries takes at least `min_entry` bytes. yrs reserves room for the
/// declared count before reading the entries, so a 5-byte message could
/// otherwise make it reserve gigabytes.
fn plausible_count(bytes: &[u8], min_entry: usize) -> bool {
    match leading_varuint(bytes) {
        Some((n, used)) => n.saturating_mul(min_entry as u64) <= (bytes.len() - used) as u64,
        None => false,
    }
}

/// Decodes a Yjs update (v1) once [`check::update`] passed it.
fn decode_update(bytes: &[u8]) -> Result<Update, YError> {
    check::update(bytes).map_err(|e| YError::Malformed(e.to_string()))?;
    Update::decode_v1(bytes).map_err(|e| YError::Malformed(e.to_string()))
}

impl YDoc {
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
        self.doc.transact().state_vector().encode_v1()
    }

    /// What a peer with state vector `sv` lacks (a sync step 2).
    pub fn diff(&self, sv: &[u8]) -> Result<Vec<u8>, YError> {
        if !plausible_count(sv, 2) {
            return Err(YError::Malformed("implausible count".into()));
        }
        let sv = StateVector::decode_v1(sv).map_err(|e| YError::Malformed(e.to_string()))?;
        Ok(self.doc.transact().encode_state_as_update_v1(&sv))
    }

    /// Whether nothing was ever written to the document.
    pub fn is_empty(&self) -> bool {
        let txn = self.doc.transact();
        txn.state_vector() == StateVector::default()
    }

    /// The whole state as one update.
    pub fn state_as_update(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Applies an awareness update from socket `owner`; returns the client
    /// ids it now owns (those it brought in first). A client's provider
    /// also sends the states of others (echoes of what it received, and
    /// their removal when it disconnects): those are applied like any
    /// update (a newer clock wins) but stay their owners'. Ids nobody had
    /// count against the socket's `max_new` (the states map only grows
    /// while the document is loaded).
    pub fn awareness_apply(
        &self,
        bytes: &[u8],
        max: usize,
        owner: &str,
        max_new: usize,
    ) -> Result<Vec<u64>, YError> {
        if bytes.len() > max {
            crate::metrics::limit_hit("yjs_max_awareness_bytes");
            return Err(YError::UpdateTooLarge(max));
        }
        if !plausible_count(bytes, 3) {
            return Err(YError::Malformed("implausible count".into()));
        }
        let update =
            AwarenessUpdate::decode_v1(bytes).map_err(|e| YError::Malformed(e.to_string()))?;
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<u64> = update
            .clients
            .keys()
            .filter(|c| a.meta(**c).is_none())
            .map(|c| c.get())
            .collect();
        let owned_before = owners.values().filter(|o| o.as_str() == owner).count();
        if owned_before + new.len() > max_new {
            crate::metrics::limit_hit("yjs_awareness_clients");
            return Err(YError::Malformed(format!(
                "more than {max_new} awareness clients on one socket"
            )));
        }
        a.apply_update(update)
            .map_err(|e| YError::Malformed(e.to_string()))?;
        for c in &new {
            owners.insert(*c, owner.to_string());
        }
        crate::metrics::yjs_awareness(new.len() as i64);
        prune_gone(&mut a);
        Ok(new)
    }

    /// Applies an awareness update another node relayed (its socket owns
    /// the clients there; their removal comes the same way).
    pub fn awareness_apply_relayed(&self, bytes: &[u8]) -> Result<(), YError> {
        if !plausible_count(bytes, 3) {
            return Err(YError::Malformed("implausible count".into()));
        }
        let update =
            AwarenessUpdate::decode_v1(bytes).map_err(|e| YError::Malformed(e.to_string()))?;
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        a.apply_update(update)
            .map_err(|e| YError::Malformed(e.to_string()))?;
        prune_gone(&mut a);
        Ok(())
    }

    /// Every client's awareness state, encoded (none when nobody has one).
    pub fn awareness_all(&self) -> Option<Vec<u8>> {
        let a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let update = a.update().ok()?;
        (!update.clients.is_empty()).then(|| update.encode_v1())
    }

    /// Removes the awareness of the clients socket `owner` owns (it is
    /// gone); returns the update that tells the others, if it owned any.
    pub fn awareness_remove(&self, owner: &str) -> Option<Vec<u8>> {
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<u64> = owners
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(c, _)| *c)
            .collect();
        for c in &mine {
            owners.remove(c);
        }
        crate::metrics::yjs_awareness(-(mine.len() as i64));
        let known: Vec<yrs::block::ClientID> = mine
            .iter()
            .map(|c| yrs::block::ClientID::new(*c))
            .filter(|c| a.meta(*c).is_some())
            .collect();
        if known.is_empty() {
            return None;
        }
        for c in &known {
            a.remove_state(*c);
        }
        let removal = a.update_with_clients(known).ok().map(|u| u.encode_v1());
        prune_gone(&mut a);
        removal
    }

    /// Clients with an awareness state now.
    pub fn awareness_clients(&self) -> usize {
        let a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        a.iter().filter(|(_, s)| s.data.is_some()).count()
    }

    /// The text of the `Y.Text` named `name` (empty if there is none).
    pub fn text(&self, name: &str) -> String {
        use yrs::GetString;
        let txn = self.doc.transact();
        txn.get_text(name)
            .map(|t| t.get_string(&txn))
            .unwrap_or_default()
    }
}
