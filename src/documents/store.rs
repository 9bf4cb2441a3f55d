//! Where collaborative documents live: a row per document (its version and a
//! snapshot of its text) and the op log. The rules (transform, limits) are in
//! `crate::documents`; this only stores, and refuses a commit made on an outdated
//! version, which is what orders writers on several nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::documents::ot::Op;
use crate::documents::yjs_store::{MemoryYjs, YjsLoad};
use crate::store::{MessageStore, OutboxEvent, StoreError};

/// A document: its namespace (tenant) and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub namespace: String,
    pub doc_id: String,
}

impl DocKey {
    pub fn new(namespace: &str, doc_id: &str) -> Self {
        DocKey {
            namespace: namespace.to_string(),
            doc_id: doc_id.to_string(),
        }
    }

    /// One string key, for stores that index by text.
    pub fn key(&self) -> String {
        format!("{}|{}", self.namespace, self.doc_id)
    }
}

/// An op as applied at its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOp {
    pub version: u64,
    pub op: Op,
    pub user_id: String,
    pub op_id: Option<String>,
}

/// What a load finds: the latest snapshot and the ops after `first - 1`
/// (`first` ≤ `snapshot_version + 1`, so they rebuild the text, and reach
/// back as far as asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocLoad {
    pub version: u64,
    pub snapshot: String,
    pub snapshot_version: u64,
    pub ops: Vec<StoredOp>,
}

/// Why a commit did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The document is no longer at the expected version: another writer
    /// (another node) got there first.
    #[error("the document moved on")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One commit: new ops, and optionally a snapshot and a prune.
pub struct Commit<'a> {
    pub key: &'a DocKey,
    /// The version the ops were made on; the commit fails with
    /// [`CommitError::Conflict`] unless the stored document is at it.
    pub expected: u64,
    /// Versions `expected + 1 ..`, in order.
    pub ops: &'a [StoredOp],
    /// The text after the last op, to store as the snapshot.
    pub snapshot: Option<&'a str>,
    /// Ops at or below this version may be deleted.
    pub prune_through: Option<u64>,
    /// A webhook event to write with the ops (`document.changed`).
    pub event: Option<&'a OutboxEvent>,
}

#[async_trait]
pub trait DocStore: Send + Sync + 'static {
    /// The document's snapshot and its ops after
    /// `min(snapshot_version, version - keep)` (an empty document at 0 if it
    /// was never edited).
    async fn load(&self, key: &DocKey, keep: u64) -> Result<DocLoad, StoreError>;

    /// The ops after `version`, in order (those still kept).
    async fn ops_since(&self, key: &DocKey, version: u64) -> Result<Vec<StoredOp>, StoreError>;

    /// Stores the ops atomically, if the document is still at `expected`.
    async fn commit(&self, commit: Commit<'_>) -> Result<(), CommitError>;

    /// What is stored of a Yjs document after seq `after` (see
    /// `crate::yjs`): the updates after it, and the latest snapshot too
    /// when it holds more than `after` (0 reads the whole document).
    async fn yjs_load(&self, _key: &DocKey, _after: u64) -> Result<YjsLoad, StoreError> {
        Err(no_yjs())
    }

    /// Stores one Yjs update (durably, before it is relayed); returns its seq.
    async fn yjs_append(&self, _key: &DocKey, _update: &[u8]) -> Result<u64, StoreError> {
        Err(no_yjs())
    }

    /// Makes `state` (the document with every update up to `through`) the
    /// snapshot and forgets those updates.
    async fn yjs_compact(
        &self,
        _key: &DocKey,
        _state: &[u8],
        _through: u64,
    ) -> Result<(), StoreError> {
        Err(no_yjs())
    }
}

fn no_yjs() -> StoreError {
    StoreError::Internal("this document store keeps no Yjs documents".into())
}

/// Documents in memory (with `--database-url memory`, and for tests).
#[derive(Default)]
pub struct MemoryDocs {
    docs: Mutex<HashMap<DocKey, MemDoc>>,
    /// Where a commit's webhook event goes (the message store's outbox).
    outbox: Option<Arc<dyn MessageStore>>,
    yjs: MemoryYjs,
}

impl MemoryDocs {
    /// Documents whose commits' webhook events go to `store`'s outbox.
    pub fn with_outbox(store: Arc<dyn MessageStore>) -> Self {
        MemoryDocs {
            docs: Default::default(),
            outbox: Some(store),
            yjs: Default::default(),
        }
    }
}

#[derive(Default)]
struct MemDoc {
    version: u64,
    snapshot: String,
    snapshot_version: u64,
    ops: BTreeMap<u64, StoredOp>,
}

fn poisoned() -> StoreError {
    StoreError::Internal("poisoned lock".into())
}

#[async_trait]
impl DocStore for MemoryDocs {
    async fn load(&self, key: &DocKey, keep: u64) -> Result<DocLoad, StoreError> {
        let docs = self.docs.lock().map_err(|_| poisoned())?;
        let Some(d) = docs.get(key) else {
            return Ok(DocLoad::default());
        };
        let from = d.snapshot_version.min(d.version.saturating_sub(keep));
        Ok(DocLoad {
            version: d.version,
            snapshot: d.snapshot.clone(),
            snapshot_version: d.snapshot_version,
            ops: d.ops.range(from + 1..).map(|(_, o)| o.clone()).collect(),
        })
    }

    async fn ops_since(&self, key: &DocKey, version: u64) -> Result<Vec<StoredOp>, StoreError> {
        let docs = self.docs.lock().map_err(|_| poisoned())?;
        Ok(docs
            .get(key)
            .map(|d| {
                d.ops
                    .range(version.saturating_add(1)..)
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn commit(&self, c: Commit<'_>) -> Result<(), CommitError> {
        self.commit_now(&c)?;
        // In memory nothing survives a restart: written just after.
        if let (Some(outbox), Some(e)) = (&self.outbox, c.event) {
            outbox.outbox_push(std::slice::from_ref(e)).await?;
        }
        Ok(())
    }

    async fn yjs_load(&self, key: &DocKey, after: u64) -> Result<YjsLoad, StoreError> {
        self.yjs.load(&key.key(), after)
    }

    async fn yjs_append(&self, key: &DocKey, update: &[u8]) -> Result<u64, StoreError> {
        self.yjs.append(&key.key(), update)
    }

    async fn yjs_compact(
        &self,
        key: &DocKey,
        state: &[u8],
        through: u64,
    ) -> Result<(), StoreError> {
        self.yjs.compact(&key.key(), state, through)
    }
}

impl MemoryDocs {
    fn commit_now(&self, c: &Commit<'_>) -> Result<(), CommitError> {
        let mut docs = self.docs.lock().map_err(|_| poisoned())?;
        let d = docs.entry(c.key.clone()).or_default();
        if d.version != c.expected {
            return Err(CommitError::Conflict);
        }
        for op in c.ops {
            d.ops.insert(op.version, op.clone());
        }
        d.version = c.expected + c.ops.len() as u64;
        if let Some(text) = c.snapshot {
            d.snapshot = text.to_string();
            d.snapshot_version = d.version;
        }
        if let Some(through) = c.prune_through {
            d.ops = d.ops.split_off(&(through + 1));
        }
        Ok(())
    }
}

/// The op's columns: (kind, position, content, length).
pub fn op_columns(op: &Op) -> (&'static str, i64, Option<&str>, Option<i64>) {
    match op {
        Op::Insert { pos, text } => ("insert", *pos as i64, Some(text), None),
        Op::Delete { pos, len } => ("delete", *pos as i64, None, Some(*len as i64)),
    }
}

/// The op from its columns.
pub fn op_from_columns(
    kind: &str,
    position: i64,
    content: Option<String>,
    length: Option<i64>,
) -> Result<Op, StoreError> {
    let pos = usize::try_from(position)
        .map_err(|_| StoreError::Internal(format!("stored op position {position}")))?;
    match (kind, content, length) {
        ("insert", Some(text), _) => Ok(Op::Insert { pos, text }),
        ("delete", _, Some(len)) => Ok(Op::Delete {
            pos,
            len: usize::try_from(len)
                .map_err(|_| StoreError::Internal(format!("stored op length {len}")))?,
        }),
        (kind, ..) => Err(StoreError::Internal(format!("stored op of kind {kind}"))),
    }
}
