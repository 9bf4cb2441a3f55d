//! SQLite and PostgreSQL behind one codepath (sqlx's `Any` driver; the SQL
//! is written to run on both).
//!
//! Writes go through one writer task per process that does **group commit**:
//! it takes every append waiting (up to [`MAX_BATCH`]) into one transaction,
//! commits, and only then resolves their futures. While a commit runs, new
//! appends queue up and form the next batch, so the batching window is the
//! length of the previous commit: no added delay when idle, large batches
//! under load.
//!
//! `seq` comes from a per-conversation counter row, bumped inside the same
//! transaction as the inserts, so it is gap-free: a rolled-back batch rolls
//! its numbers back too. On PostgreSQL the counter row lock orders writers of
//! one conversation across nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendFuture, Appended, Conversation, ConversationKind, Message, MessageStore, NewMessage,
    Page, StoreError, now_ms,
};

/// Most messages in one transaction.
pub const MAX_BATCH: usize = 512;
/// Appends that may wait for the writer before new ones are refused.
pub const WRITE_QUEUE: usize = 65_536;
/// Rows per multi-row INSERT (12 parameters each).
const ROWS_PER_INSERT: usize = 128;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

// Flush is rare; boxing Append instead would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
enum WriteReq {
    Append {
        msg: NewMessage,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Which database is behind the `Any` pool: it decides the placeholder style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The `n`th (1-based) bind placeholder. SQLite gets anonymous `?`:
    /// numbered ones make it look each name up in a list, which is quadratic
    /// in a many-row INSERT (it was a third of the server's CPU).
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Backend::Sqlite => "?".into(),
            Backend::Postgres => format!("${n}"),
        }
    }
}

/// A SQL-backed message store.
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    writes: mpsc::Sender<WriteReq>,
    health: Arc<Health>,
    /// Held by every SQLite write transaction (messages and documents): a
    /// SQLite transaction that reads before it writes fails outright (not
    /// after a wait) when another connection committed in between, so this
    /// process never lets two of them overlap. PostgreSQL does not need it.
    pub(crate) sqlite_writes: Arc<tokio::sync::Mutex<()>>,
    /// Webhooks are on: the writer adds each message's event to the outbox.
    outbox: Arc<AtomicBool>,
}

/// Logs a failure once per episode, and the recovery.
#[derive(Default)]
struct Health {
    down: AtomicBool,
}

impl Health {
    fn failed(&self, e: &StoreError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "message store failing, chat acks say 'unavailable' until it recovers: {e}"
            );
        }
    }
    fn ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("message store recovered");
        }
    }
}

/// Whether an error means the database is out of reach or out of space (the
/// client may retry later) rather than a bug.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    use sqlx::Error::*;
    let unavailable = match &e {
        Io(_) | Tls(_) | Protocol(_) | PoolTimedOut | PoolClosed | WorkerCrashed => true,
        Database(d) => {
            let code = d.code().unwrap_or_default();
            if code.len() == 5 && !code.chars().all(|c| c.is_ascii_digit()) {
                // PostgreSQL SQLSTATE: connection, resources, shutdown, missing database
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "3D000"
                    || code == "25006"
            } else {
                // SQLite: primary result code in the low byte of the extended code
                let primary = code.parse::<i32>().unwrap_or(0) & 0xff;
                // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
                matches!(primary, 5 | 6 | 8 | 10 | 13 | 14)
            }
        }
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.to_string())
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl SqlStore {
    /// Opens a SQLite file (created if missing) in WAL mode with full fsync on commit.
    pub async fn open_sqlite(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::Internal(
                "give SQLite a file path (use --database-url memory for no file)".into(),
            ));
        }
        if let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(StoreError::Unavailable(format!(
                "directory {} does not exist",
                dir.display()
            )));
        }
        let url = format!("sqlite://{path}?mode=rwc");
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            // A broken connection shows on use; pinging on every acquire costs
            // a round trip per batch.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL makes a
                    // commit durable (fsync) before we ack.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    // Commits no longer checkpoint (that made some take tens
                    // of ms); `checkpointer` does it beside them. The large
                    // limit is only a safety net.
                    conn.execute("PRAGMA wal_autocheckpoint = 20000").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open SQLite {path}: {e}")))?;
        tokio::spawn(checkpointer(pool.clone()));
        Self::start(pool, Backend::Sqlite).await
    }

    /// Connects to PostgreSQL.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        Self::start(pool, Backend::Postgres).await
    }

    async fn start(pool: AnyPool, backend: Backend) -> Result<Self, StoreError> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migrations failed: {e}")))?;
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let health = Arc::new(Health::default());
        let sqlite_writes = Arc::new(tokio::sync::Mutex::new(()));
        let outbox = Arc::new(AtomicBool::new(false));
        tokio::spawn(writer(
            pool.clone(),
            backend,
            rx,
            health.clone(),
            sqlite_writes.clone(),
            outbox.clone(),
        ));
        Ok(SqlStore {
            pool,
            backend,
            writes,
            health,
            sqlite_writes,
            outbox,
        })
    }
}

impl SqlStore {
    /// Held by a write transaction on SQLite (see `sqlite_writes`).
    pub(crate) async fn serial(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.sqlite_writes.lock().await),
            Backend::Postgres => None,
        }
    }
}

/// Copies the SQLite WAL back into the database file in the background
/// (PASSIVE: never blocks the writer), so the WAL stays small.
async fn checkpointer(pool: AnyPool) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!("checkpoint failed: {e}");
        }
    }
}

/// The group-commit loop (see the module doc).
async fn writer(
    pool: AnyPool,
    backend: Backend,
    mut rx: mpsc::Receiver<WriteReq>,
    health: Arc<Health>,
    sqlite_writes: Arc<tokio::sync::Mutex<()>>,
    outbox: Arc<AtomicBool>,
) {
    let mut queue: Vec<WriteReq> = Vec::with_capacity(MAX_BATCH);
    let mut ids = ulid::Generator::new();
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(queue.len());
        let mut flushes = Vec::new();
        for req in queue.drain(..) {
            match req {
                WriteReq::Append { msg, reply } => batch.push((msg, reply)),
                WriteReq::Flush(done) => flushes.push(done),
            }
        }
        if batch.is_empty() {
            for done in flushes {
                let _ = done.send(());
            }
            continue;
        }
        let msgs: Vec<&NewMessage> = batch.iter().map(|(m, _)| m).collect();
        let started = std::time::Instant::now();
        let serial = match backend {
            Backend::Sqlite => Some(sqlite_writes.lock().await),
            Backend::Postgres => None,
        };
        let with_events = outbox.load(Ordering::Relaxed);
        let mut result = commit(&pool, backend, &msgs, &mut ids, with_events).await;
        // A unique violation here is a same-user retry racing on another node:
        // run the batch again and the lookup finds the winner.
        for _ in 0..3 {
            match &result {
                Err(e) if is_unique_violation(e) => {
                    result = commit(&pool, backend, &msgs, &mut ids, with_events).await;
                }
                _ => break,
            }
        }
        drop(serial);
        crate::metrics::store_write(started.elapsed(), msgs.len(), result.is_ok());
        match result {
            Ok(outcomes) => {
                health.ok();
                for ((_, reply), out) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) => {
                let e = classify(e);
                health.failed(&e);
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Adds each conversation's new-message count to its counter, in one
/// statement, and returns the new `last_seq` of each.
async fn bump_counters(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    keys: &[String],
    per_conv: &HashMap<String, Vec<usize>>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in statement_chunks(keys) {
        let mut sql = String::from("INSERT INTO conversations (key, last_seq) VALUES ");
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push(',');
            }
            let (a, b) = (
                backend.placeholder(2 * r + 1),
                backend.placeholder(2 * r + 2),
            );
            sql.push_str(&format!("({a},{b})"));
        }
        sql.push_str(
            " ON CONFLICT (key) DO UPDATE SET last_seq = conversations.last_seq + excluded.last_seq \
             RETURNING key, last_seq",
        );
        let mut q = sqlx::query(&sql);
        for key in chunk {
            q = q.bind(key.as_str()).bind(per_conv[key].len() as i64);
        }
        for row in q.fetch_all(&mut **tx).await? {
            out.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
    }
    Ok(out)
}

const COLUMNS: &str = "conversation, seq, id, namespace, room_id, to_user_id, sender_id, \
                       sender_name, content, kind, ts_ms, client_msg_id";

fn row_to_message(r: &AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        seq: r.try_get::<i64, _>("seq")? as u64,
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        to_user_id: r.try_get("to_user_id")?,
        sender_id: r.try_get("sender_id")?,
        sender_name: r.try_get("sender_name")?,
        content: r.try_get("content")?,
        kind: r.try_get("kind")?,
        timestamp: r.try_get::<i64, _>("ts_ms")? as u64,
    })
}

/// Splits rows into multi-row statements of `ROWS_PER_INSERT`, then the rest
/// in powers of two. A statement's text depends on its row count and sqlx
/// keeps prepared statements by text (100 per connection): any count at all
/// had most batches prepare fresh statements of up to 1,536 placeholders,
/// while powers of two leave 8 shapes per table, prepared once.
fn statement_chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let size = if rest.len() >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// One transaction for the whole batch; outcomes in batch order.
async fn commit(
    pool: &AnyPool,
    backend: Backend,
    msgs: &[&NewMessage],
    ids: &mut ulid::Generator,
    with_events: bool,
) -> Result<Vec<Appended>, sqlx::Error> {
    /// What became of each message of the batch.
    #[derive(Clone)]
    enum Slot {
        New(Message),
        /// A retry of a message stored earlier.
        Earlier(Message),
        /// A retry of batch entry j.
        SameAs(usize),
        Pending,
    }
    let mut tx = pool.begin().await?;
    let mut slots: Vec<Slot> = vec![Slot::Pending; msgs.len()];

    // 1. Retries: an earlier message with the same (namespace, sender, clientMsgId),
    //    stored before or earlier in this batch.
    let mut first_in_batch: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut fresh: Vec<usize> = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let Some(cid) = m.client_msg_id.as_deref() else {
            fresh.push(i);
            continue;
        };
        let key = (m.conversation.namespace.as_str(), m.sender_id.as_str(), cid);
        if let Some(&j) = first_in_batch.get(&key) {
            slots[i] = Slot::SameAs(j);
            continue;
        }
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE namespace = $1 AND sender_id = $2 AND client_msg_id = $3"
        ))
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .fetch_optional(&mut *tx)
        .await?;
        match found {
            Some(row) => slots[i] = Slot::Earlier(row_to_message(&row)?),
            None => {
                first_in_batch.insert(key, i);
                fresh.push(i);
            }
        }
    }

    // 2. Number the new messages: one counter bump per conversation.
    let mut per_conv: HashMap<String, Vec<usize>> = HashMap::new();
    let mut conv_order: Vec<String> = Vec::new();
    for &i in &fresh {
        let key = msgs[i].conversation.key();
        per_conv
            .entry(key.clone())
            .or_insert_with(|| {
                conv_order.push(key);
                Vec::new()
            })
            .push(i);
    }
    let now = now_ms();
    let mut stored: Vec<(usize, Message)> = Vec::with_capacity(fresh.len());
    let last_seqs = bump_counters(&mut tx, backend, &conv_order, &per_conv).await?;
    for key in &conv_order {
        let members = &per_conv[key];
        let n = members.len() as i64;
        let last = *last_seqs
            .get(key.as_str())
            .ok_or_else(|| sqlx::Error::Protocol(format!("no counter returned for {key}")))?;
        for (k, &i) in members.iter().enumerate() {
            let m = msgs[i];
            let room_id = match &m.conversation.kind {
                ConversationKind::Room(r) => Some(r.clone()),
                ConversationKind::Direct(..) => None,
            };
            let id = ids
                .generate()
                .unwrap_or_else(|_| ulid::Ulid::new())
                .to_string();
            stored.push((
                i,
                Message {
                    id,
                    room_id,
                    to_user_id: m.to_user_id.clone(),
                    sender_id: m.sender_id.clone(),
                    sender_name: m.sender_name.clone(),
                    content: m.content.clone(),
                    kind: m.kind.clone(),
                    timestamp: now,
                    seq: (last - n + 1 + k as i64) as u64,
                },
            ));
        }
    }

    // 3. Insert them, many rows per statement.
    for chunk in statement_chunks(&stored) {
        let mut sql = format!("INSERT INTO messages ({COLUMNS}) VALUES ");
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..12 {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&backend.placeholder(r * 12 + c + 1));
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for (i, m) in chunk {
            let src = msgs[*i];
            q = q
                .bind(src.conversation.key())
                .bind(m.seq as i64)
                .bind(m.id.clone())
                .bind(src.conversation.namespace.clone())
                .bind(m.room_id.clone())
                .bind(m.to_user_id.clone())
                .bind(m.sender_id.clone())
                .bind(m.sender_name.clone())
                .bind(m.content.clone())
                .bind(m.kind.clone())
                .bind(m.timestamp as i64)
                .bind(src.client_msg_id.clone());
        }
        q.execute(&mut *tx).await?;
    }
    // 4. Their webhook events, in the same transaction: a message is never
    //    stored without its event, nor the reverse.
    if with_events {
        let events: Vec<super::OutboxEvent> = stored
            .iter()
            .map(|(i, m)| {
                super::message_event(super::event_id(), &msgs[*i].conversation.namespace, m)
            })
            .collect();
        insert_events(&mut tx, backend, &events).await?;
    }
    tx.commit().await?;

    for (i, m) in stored {
        slots[i] = Slot::New(m);
    }
    let resolve = |slot: &Slot| match slot {
        Slot::New(m) => Some(m.clone()),
        _ => None,
    };
    slots
        .iter()
        .map(|slot| match slot {
            Slot::New(m) => Ok(Appended::New(m.clone())),
            Slot::Earlier(m) => Ok(Appended::Duplicate(m.clone())),
            Slot::SameAs(j) => resolve(&slots[*j])
                .map(Appended::Duplicate)
                .ok_or_else(|| sqlx::Error::Protocol("retry of an unstored message".into())),
            Slot::Pending => Err(sqlx::Error::Protocol("message left without outcome".into())),
        })
        .collect()
}

/// Inserts webhook events, many rows per statement; a keyed event replaces
/// the one waiting with its key (see `MessageStore::outbox_push`). The
/// SET expressions read the row as it was.
pub(crate) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    events: &[super::OutboxEvent],
) -> Result<(), sqlx::Error> {
    let p = |n| backend.placeholder(n);
    let (keyed, plain): (Vec<_>, Vec<_>) = events.iter().partition(|e| e.key.is_some());
    for chunk in statement_chunks(&plain) {
        let mut sql = String::from(
            "INSERT INTO webhook_outbox (event_id, body, created_ms, attempts, due_ms) VALUES ",
        );
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push(',');
            }
            let n = r * 4;
            sql.push_str(&format!(
                "({},{},{},0,{})",
                p(n + 1),
                p(n + 2),
                p(n + 3),
                p(n + 4)
            ));
        }
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(e.id.clone())
                .bind(e.body.clone())
                .bind(e.created_ms.min(i64::MAX as u64) as i64)
                .bind(e.due_ms.min(i64::MAX as u64) as i64);
        }
        q.execute(&mut **tx).await?;
    }
    for e in keyed {
        sqlx::query(&format!(
            "INSERT INTO webhook_outbox (event_id, body, created_ms, attempts, coalesce_key, due_ms) \
             VALUES ({},{},{},0,{},{}) \
             ON CONFLICT (coalesce_key) DO UPDATE SET event_id = excluded.event_id, body = excluded.body, \
               created_ms = CASE WHEN webhook_outbox.due_ms <= excluded.created_ms \
                 THEN excluded.created_ms ELSE webhook_outbox.created_ms END, \
               due_ms = CASE WHEN webhook_outbox.due_ms <= excluded.created_ms \
                 THEN excluded.due_ms ELSE webhook_outbox.due_ms END",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5)
        ))
        .bind(e.id.clone())
        .bind(e.body.clone())
        .bind(e.created_ms.min(i64::MAX as u64) as i64)
        .bind(e.key.clone())
        .bind(e.due_ms.min(i64::MAX as u64) as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl MessageStore for SqlStore {
    fn append(&self, msg: NewMessage) -> AppendFuture {
        let (reply, rx) = oneshot::channel();
        let queued = self.writes.try_send(WriteReq::Append { msg, reply });
        Box::pin(async move {
            match queued {
                Ok(()) => rx
                    .await
                    .unwrap_or_else(|_| Err(StoreError::Internal("writer stopped".into()))),
                Err(mpsc::error::TrySendError::Full(_)) => Err(StoreError::Unavailable(
                    "too many messages waiting for the store".into(),
                )),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    Err(StoreError::Internal("writer stopped".into()))
                }
            }
        })
    }

    async fn history(
        &self,
        conversation: &Conversation,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let clamp = |seq: u64| seq.min(i64::MAX as u64) as i64;
        // Back from a bound (newest first, then turned round) or forward
        // from one (oldest first).
        let (condition, bound, order) = match page {
            Page::Latest => ("seq < $2", i64::MAX, "DESC"),
            Page::Before(b) => ("seq < $2", clamp(b), "DESC"),
            Page::After(a) => ("seq > $2", clamp(a), "ASC"),
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation = $1 AND {condition} \
             ORDER BY seq {order} LIMIT $3"
        ))
        .bind(conversation.key())
        .bind(bound)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| {
            let e = classify(e);
            self.health.failed(&e);
            e
        })?;
        let mut out = rows
            .iter()
            .map(row_to_message)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        if order == "DESC" {
            out.reverse();
        }
        Ok(out)
    }

    async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.writes.send(WriteReq::Flush(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn direct_since(
        &self,
        namespace: &str,
        user: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let p = |n| self.backend.placeholder(n);
        let since = since_ms.min(i64::MAX as u64) as i64;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE to_user_id IS NOT NULL AND namespace = {} \
             AND (to_user_id = {} OR sender_id = {}) AND ts_ms >= {} \
             ORDER BY ts_ms, conversation, seq LIMIT {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5)
        ))
        .bind(namespace)
        .bind(user)
        .bind(user)
        .bind(since)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(row_to_message)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    fn enable_outbox(&self) {
        self.outbox.store(true, Ordering::Relaxed);
    }

    async fn outbox_push(&self, events: &[super::OutboxEvent]) -> Result<(), StoreError> {
        let _serial = self.serial().await;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        insert_events(&mut tx, self.backend, events)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn outbox_next(
        &self,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<super::OutboxEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT event_id, body, created_ms, coalesce_key, due_ms FROM webhook_outbox \
             WHERE due_ms <= {} ORDER BY event_id LIMIT {}",
            self.backend.placeholder(1),
            self.backend.placeholder(2)
        ))
        .bind(now_ms.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(super::OutboxEvent {
                    id: r.try_get("event_id")?,
                    body: r.try_get("body")?,
                    created_ms: r.try_get::<i64, _>("created_ms")?.max(0) as u64,
                    key: r.try_get("coalesce_key")?,
                    due_ms: r.try_get::<i64, _>("due_ms")?.max(0) as u64,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn outbox_done(&self, ids: &[String]) -> Result<(), StoreError> {
        let _serial = self.serial().await;
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let marks: Vec<String> = (1..=chunk.len())
                .map(|n| self.backend.placeholder(n))
                .collect();
            let sql = format!(
                "DELETE FROM webhook_outbox WHERE event_id IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            q.execute(&self.pool).await.map_err(classify)?;
        }
        Ok(())
    }

    async fn outbox_trim(&self, before_ms: u64, max_rows: u64) -> Result<(u64, u64), StoreError> {
        let _serial = self.serial().await;
        let p = |n| self.backend.placeholder(n);
        let old = sqlx::query(&format!(
            "DELETE FROM webhook_outbox WHERE created_ms < {}",
            p(1)
        ))
        .bind(before_ms.min(i64::MAX as u64) as i64)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        let left = left.max(0) as u64;
        let excess = left.saturating_sub(max_rows);
        if excess == 0 {
            return Ok((old, left));
        }
        let over = sqlx::query(&format!(
            "DELETE FROM webhook_outbox WHERE event_id IN \
             (SELECT event_id FROM webhook_outbox ORDER BY event_id LIMIT {})",
            p(1)
        ))
        .bind(excess as i64)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok((old + over, left - over))
    }

    async fn lease(&self, holder: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError> {
        let _serial = self.serial().await;
        let p = |n| self.backend.placeholder(n);
        let (now, until) = (now_ms as i64, until_ms as i64);
        let taken = sqlx::query(&format!(
            "UPDATE webhook_lease SET holder = {}, until_ms = {} \
             WHERE name = 'deliver' AND (holder = {} OR until_ms < {})",
            p(1),
            p(2),
            p(3),
            p(4)
        ))
        .bind(holder)
        .bind(until)
        .bind(holder)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        if taken == 1 {
            return Ok(true);
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO webhook_lease (name, holder, until_ms) VALUES ('deliver', {}, {}) \
             ON CONFLICT (name) DO NOTHING",
            p(1),
            p(2)
        ))
        .bind(holder)
        .bind(until)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn save_sessions(
        &self,
        save: &[super::SavedSession],
        forget: &[String],
        per_user: usize,
    ) -> Result<(), StoreError> {
        let _serial = self.serial().await;
        let p = |n| self.backend.placeholder(n);
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for pid in forget {
            sqlx::query(&format!(
                "DELETE FROM recovery_sessions WHERE pid = {}",
                p(1)
            ))
            .bind(pid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for s in save {
            // A pid is saved again by the socket that recovered it.
            sqlx::query(&format!(
                "DELETE FROM recovery_sessions WHERE pid = {}",
                p(1)
            ))
            .bind(s.pid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            sqlx::query(&format!(
                "INSERT INTO recovery_sessions (pid, user_key, expires_ms, body) \
                 VALUES ({}, {}, {}, {})",
                p(1),
                p(2),
                p(3),
                p(4)
            ))
            .bind(s.pid.as_str())
            .bind(s.user_key.as_str())
            .bind(s.expires_ms.min(i64::MAX as u64) as i64)
            .bind(s.body.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            // The user's oldest beyond the bound.
            sqlx::query(&format!(
                "DELETE FROM recovery_sessions WHERE user_key = {} AND pid NOT IN \
                 (SELECT pid FROM recovery_sessions WHERE user_key = {} \
                  ORDER BY expires_ms DESC LIMIT {})",
                p(1),
                p(2),
                p(3)
            ))
            .bind(s.user_key.as_str())
            .bind(s.user_key.as_str())
            .bind(per_user as i64)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn load_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<super::SavedSession>, StoreError> {
        let p = |n| self.backend.placeholder(n);
        let row = sqlx::query(&format!(
            "SELECT pid, user_key, expires_ms, body FROM recovery_sessions \
             WHERE pid = {} AND expires_ms > {}",
            p(1),
            p(2)
        ))
        .bind(pid)
        .bind(now_ms.min(i64::MAX as u64) as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.map(|r| {
            Ok(super::SavedSession {
                pid: r.try_get("pid")?,
                user_key: r.try_get("user_key")?,
                expires_ms: r.try_get::<i64, _>("expires_ms")?.max(0) as u64,
                body: r.try_get("body")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| StoreError::Internal(e.to_string()))
    }

    async fn sweep_sessions(&self, now_ms: u64) -> Result<u64, StoreError> {
        {
            let _serial = self.serial().await;
            sqlx::query(&format!(
                "DELETE FROM recovery_sessions WHERE expires_ms <= {}",
                self.backend.placeholder(1)
            ))
            .bind(now_ms.min(i64::MAX as u64) as i64)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        }
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recovery_sessions")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(left.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_few_shapes() {
        let rows: Vec<usize> = (0..1000).collect();
        let sizes: Vec<usize> = statement_chunks(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [128, 128, 128, 128, 128, 128, 128, 64, 32, 8]);
        for n in 0..300 {
            let rows: Vec<usize> = (0..n).collect();
            let chunks = statement_chunks(&rows);
            assert_eq!(chunks.concat(), rows, "every row once, in order");
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= ROWS_PER_INSERT)
            );
        }
    }
}
