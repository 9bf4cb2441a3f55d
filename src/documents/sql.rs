//! Documents in SQLite or PostgreSQL (the `DocStore` of `SqlStore`).
//!
//! A commit is one transaction that starts with the version check: an
//! UPDATE of the document row that only matches while the row is still at
//! the expected version (or, for a new document, an INSERT that the primary
//! key refuses to a second writer). It is a write from its first statement
//! (SQLite takes its lock there); on PostgreSQL it waits on the row lock of a
//! concurrent writer and then sees its new version. No row changed means
//! another writer won: [`CommitError::Conflict`], and nothing is written.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::store::{
    Commit, CommitError, DocKey, DocLoad, DocStore, StoredOp, op_columns, op_from_columns,
};
use crate::documents::yjs_store::YjsLoad;
use crate::store::sql::{SqlStore, classify, is_unique_violation};
use crate::store::{StoreError, now_ms};

/// Rows per multi-row INSERT of ops (9 parameters each).
const OPS_PER_INSERT: usize = 64;

fn row_to_op(r: &AnyRow) -> Result<StoredOp, StoreError> {
    let get = |e: sqlx::Error| StoreError::Internal(e.to_string());
    let kind: String = r.try_get("kind").map_err(get)?;
    Ok(StoredOp {
        version: r.try_get::<i64, _>("version").map_err(get)? as u64,
        op: op_from_columns(
            &kind,
            r.try_get("position").map_err(get)?,
            r.try_get("content").map_err(get)?,
            r.try_get("length").map_err(get)?,
        )?,
        user_id: r.try_get("user_id").map_err(get)?,
        op_id: r.try_get("op_id").map_err(get)?,
    })
}

const OP_COLUMNS: &str = "version, kind, position, content, length, user_id, op_id";

impl SqlStore {
    async fn ops_after(&self, key: &str, after: u64) -> Result<Vec<StoredOp>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OP_COLUMNS} FROM doc_ops WHERE doc = $1 AND version > $2 ORDER BY version"
        ))
        .bind(key)
        .bind(after.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter().map(row_to_op).collect()
    }

    async fn try_commit(&self, c: &Commit<'_>) -> Result<bool, sqlx::Error> {
        let p = |n| self.backend.placeholder(n);
        let key = c.key.key();
        let version = c.expected + c.ops.len() as u64;
        let now = now_ms() as i64;
        let mut tx = self.pool.begin().await?;
        // The version check. A new row holds the snapshot, or the empty text
        // at version 0; an update rewrites the snapshot only with a new one.
        let (snap_text, snap_version, has_snapshot) = match c.snapshot {
            Some(t) => (t, version as i64, 1i64),
            None => ("", 0, 0),
        };
        // A new document is an INSERT (a second writer hits the primary key:
        // a conflict); an existing one an UPDATE that only matches the
        // expected version (a row gone missing is a conflict too, never a
        // new row at a version without its log).
        let changed = if c.expected == 0 {
            sqlx::query(&format!(
                "INSERT INTO documents (key, namespace, doc_id, version, snapshot, snapshot_version, updated_ms) \
                 VALUES ({}, {}, {}, {}, {}, {}, {})",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7)
            ))
            .bind(key.as_str())
            .bind(c.key.namespace.as_str())
            .bind(c.key.doc_id.as_str())
            .bind(version as i64)
            .bind(snap_text)
            .bind(snap_version)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query(&format!(
                "UPDATE documents SET version = {}, \
                   snapshot = CASE WHEN {} = 1 THEN {} ELSE snapshot END, \
                   snapshot_version = CASE WHEN {} = 1 THEN {} ELSE snapshot_version END, \
                   updated_ms = {} \
                 WHERE key = {} AND version = {}",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7),
                p(8)
            ))
            .bind(version as i64)
            .bind(has_snapshot)
            .bind(snap_text)
            .bind(has_snapshot)
            .bind(snap_version)
            .bind(now)
            .bind(key.as_str())
            .bind(c.expected as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        if changed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for chunk in c.ops.chunks(OPS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO doc_ops (doc, version, kind, position, content, length, user_id, op_id, ts_ms) VALUES ",
            );
            for r in 0..chunk.len() {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for col in 0..9 {
                    if col > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&p(r * 9 + col + 1));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for op in chunk {
                let (kind, position, content, length) = op_columns(&op.op);
                q = q
                    .bind(key.as_str())
                    .bind(op.version as i64)
                    .bind(kind)
                    .bind(position)
                    .bind(content.map(str::to_string))
                    .bind(length)
                    .bind(op.user_id.as_str())
                    .bind(op.op_id.clone())
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(through) = c.prune_through {
            sqlx::query(&format!(
                "DELETE FROM doc_ops WHERE doc = {} AND version <= {}",
                p(1),
                p(2)
            ))
            .bind(key.as_str())
            .bind(through as i64)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(e) = c.event {
            crate::store::sql::insert_events(&mut tx, self.backend, std::slice::from_ref(e))
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl DocStore for SqlStore {
    async fn load(&self, key: &DocKey, keep: u64) -> Result<DocLoad, StoreError> {
        let k = key.key();
        let row =
            sqlx::query("SELECT version, snapshot, snapshot_version FROM documents WHERE key = $1")
                .bind(k.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        let Some(row) = row else {
            return Ok(DocLoad::default());
        };
        let get = |e: sqlx::Error| StoreError::Internal(e.to_string());
        let version = row.try_get::<i64, _>(0).map_err(get)? as u64;
        let snapshot: String = row.try_get(1).map_err(get)?;
        let snapshot_version = row.try_get::<i64, _>(2).map_err(get)?.max(0) as u64;
        let from = snapshot_version.min(version.saturating_sub(keep));
        let ops = self.ops_after(&k, from).await?;
        Ok(DocLoad {
            version,
            snapshot,
            snapshot_version,
            ops,
        })
    }

    async fn ops_since(&self, key: &DocKey, version: u64) -> Result<Vec<StoredOp>, StoreError> {
        self.ops_after(&key.key(), version).await
    }

    async fn commit(&self, c: Commit<'_>) -> Result<(), CommitError> {
        let serial = self.serial().await;
        let result = self.try_commit(&c).await;
        drop(serial);
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(CommitError::Conflict),
            // Two nodes inserting a new document (or one version) at once.
            Err(e) if is_unique_violation(&e) => Err(CommitError::Conflict),
            Err(e) => Err(CommitError::Store(classify(e))),
        }
    }

    async fn yjs_load(&self, key: &DocKey, after: u64) -> Result<YjsLoad, StoreError> {
        self.yjs_load_sql(&key.key(), after).await
    }

    async fn yjs_append(&self, key: &DocKey, update: &[u8]) -> Result<u64, StoreError> {
        self.yjs_append_sql(&key.key(), update).await
    }

    async fn yjs_compact(
        &self,
        key: &DocKey,
        state: &[u8],
        through: u64,
    ) -> Result<(), StoreError> {
        self.yjs_compact_sql(&key.key(), state, through).await
    }
}
