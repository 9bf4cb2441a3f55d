//! Where Yjs documents live (see `crate::yjs`), by their `DocKey::key()`:
//! per document, a snapshot
//! (one Yjs update holding the whole state at some seq) and the updates
//! stored after it, each with the next seq. Loading reads the snapshot and
//! that tail; compaction folds the tail into a new snapshot.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sqlx::Row;

use crate::store::sql::{SqlStore, classify};
use crate::store::{StoreError, now_ms};

/// What loading a Yjs document finds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct YjsLoad {
    /// The state at `snapshot_seq` (empty: none yet, or the reader has
    /// everything it holds).
    pub snapshot: Vec<u8>,
    pub snapshot_seq: u64,
    /// The updates after it (and after what was asked), in order.
    pub updates: Vec<Vec<u8>>,
    /// The seq the snapshot and updates bring a reader to.
    pub seq: u64,
}

fn decode(text: &str) -> Result<Vec<u8>, StoreError> {
    B64.decode(text)
        .map_err(|e| StoreError::Internal(format!("a stored Yjs update is not base64: {e}")))
}

impl SqlStore {
    /// What the store has after seq `after` (0: everything). The updates
    /// are read before the snapshot: a compaction between the two reads
    /// moves the snapshot past the updates it deleted, so nothing falls in
    /// between (a snapshot only grows, and its updates are deleted in the
    /// transaction that writes it).
    pub(crate) async fn yjs_load_sql(&self, key: &str, after: u64) -> Result<YjsLoad, StoreError> {
        let get = |e: sqlx::Error| StoreError::Internal(e.to_string());
        let rows = sqlx::query(
            "SELECT seq, data FROM yjs_updates WHERE key = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(key)
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        // The snapshot's text only when it holds more than `after`.
        let row = sqlx::query(
            "SELECT CASE WHEN snapshot_seq > $2 THEN snapshot ELSE '' END, snapshot_seq \
             FROM yjs_docs WHERE key = $1",
        )
        .bind(key)
        .bind(after as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some(row) = row else {
            return Ok(YjsLoad::default());
        };
        let snapshot_seq = row.try_get::<i64, _>(1).map_err(get)?.max(0) as u64;
        let snapshot = if snapshot_seq > after {
            decode(&row.try_get::<String, _>(0).map_err(get)?)?
        } else {
            Vec::new()
        };
        let mut load = YjsLoad {
            snapshot,
            snapshot_seq,
            updates: Vec::with_capacity(rows.len()),
            seq: snapshot_seq.max(after),
        };
        for r in &rows {
            let seq = r.try_get::<i64, _>(0).map_err(get)?.max(0) as u64;
            // Those the snapshot holds already are left out.
            if seq > load.seq {
                load.updates
                    .push(decode(&r.try_get::<String, _>(1).map_err(get)?)?);
                load.seq = seq;
            }
        }
        Ok(load)
    }

    pub(crate) async fn yjs_append_sql(&self, key: &str, update: &[u8]) -> Result<u64, StoreError> {
        let _serial = self.serial().await;
        let k = key;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // The document's row hands out the seq (and, on PostgreSQL, its row
        // lock orders two nodes appending at once).
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO yjs_docs (key, snapshot, snapshot_seq, seq, updated_ms) VALUES ($1, '', 0, 1, $2) \
             ON CONFLICT (key) DO UPDATE SET seq = yjs_docs.seq + 1, updated_ms = $2 RETURNING seq",
        )
        .bind(k)
        .bind(now_ms() as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query("INSERT INTO yjs_updates (key, seq, data) VALUES ($1, $2, $3)")
            .bind(k)
            .bind(seq)
            .bind(B64.encode(update))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(seq.max(0) as u64)
    }

    pub(crate) async fn yjs_compact_sql(
        &self,
        key: &str,
        state: &[u8],
        through: u64,
    ) -> Result<(), StoreError> {
        let _serial = self.serial().await;
        let k = key;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let moved = sqlx::query(
            "UPDATE yjs_docs SET snapshot = $1, snapshot_seq = $2 WHERE key = $3 AND snapshot_seq < $2",
        )
        .bind(B64.encode(state))
        .bind(through as i64)
        .bind(k)
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        if moved == 1 {
            sqlx::query("DELETE FROM yjs_updates WHERE key = $1 AND seq <= $2")
                .bind(k)
                .bind(through as i64)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }
}

/// Yjs documents in memory (with `--database-url memory`).
#[derive(Default)]
pub(crate) struct MemoryYjs {
    docs: std::sync::Mutex<std::collections::HashMap<String, MemYDoc>>,
}

#[derive(Default)]
struct MemYDoc {
    snapshot: Vec<u8>,
    snapshot_seq: u64,
    seq: u64,
    updates: BTreeMap<u64, Vec<u8>>,
}

impl MemoryYjs {
    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<String, MemYDoc>>, StoreError>
    {
        self.docs
            .lock()
            .map_err(|_| StoreError::Internal("poisoned lock".into()))
    }

    pub(crate) fn load(&self, key: &str, after: u64) -> Result<YjsLoad, StoreError> {
        let docs = self.lock()?;
        Ok(docs
            .get(key)
            .map(|d| {
                let from = d.snapshot_seq.max(after);
                YjsLoad {
                    snapshot: if d.snapshot_seq > after {
                        d.snapshot.clone()
                    } else {
                        Vec::new()
                    },
                    snapshot_seq: d.snapshot_seq,
                    updates: d
                        .updates
                        .range(from + 1..)
                        .map(|(_, u)| u.clone())
                        .collect(),
                    seq: d.seq.max(from),
                }
            })
            .unwrap_or_default())
    }

    pub(crate) fn append(&self, key: &str, update: &[u8]) -> Result<u64, StoreError> {
        let mut docs = self.lock()?;
        let d = docs.entry(key.to_string()).or_default();
        d.seq += 1;
        d.updates.insert(d.seq, update.to_vec());
        Ok(d.seq)
    }

    pub(crate) fn compact(&self, key: &str, state: &[u8], through: u64) -> Result<(), StoreError> {
        let mut docs = self.lock()?;
        if let Some(d) = docs.get_mut(key)
            && d.snapshot_seq < through
        {
            d.snapshot = state.to_vec();
            d.snapshot_seq = through;
            d.updates = d.updates.split_off(&(through + 1));
        }
        Ok(())
    }
}
