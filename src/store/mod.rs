//! Message history behind one trait, so the chat code does not care where
//! messages live. Each conversation (a room, later a private pair) has its own
//! gap-free `seq`.

mod memory;
pub(crate) mod sql;

pub use memory::MemoryStore;
pub use sql::SqlStore;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

/// A stored chat message, as clients receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// A ULID, unique across conversations.
    pub id: String,
    /// The room, for a room message.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub room_id: Option<String>,
    /// The recipient, for a private message.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub to_user_id: Option<String>,
    /// The sender's user id, or `system`.
    pub sender_id: String,
    pub sender_name: String,
    pub content: String,
    /// `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Its place in the conversation: 1, 2, 3, ... without gaps.
    pub seq: u64,
}

/// Which conversation a message belongs to. Namespaces keep tenants apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conversation {
    pub namespace: String,
    pub kind: ConversationKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    Room(String),
    /// A private conversation between two users, stored with the ids sorted.
    Direct(String, String),
}

impl Conversation {
    pub fn room(namespace: &str, room_id: &str) -> Self {
        Conversation {
            namespace: namespace.to_string(),
            kind: ConversationKind::Room(room_id.to_string()),
        }
    }

    pub fn direct(namespace: &str, a: &str, b: &str) -> Self {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        Conversation {
            namespace: namespace.to_string(),
            kind: ConversationKind::Direct(x.to_string(), y.to_string()),
        }
    }

    /// One string key, for stores that index by text.
    pub fn key(&self) -> String {
        match &self.kind {
            ConversationKind::Room(r) => format!("{}|room|{}", self.namespace, r),
            ConversationKind::Direct(a, b) => format!("{}|dm|{}|{}", self.namespace, a, b),
        }
    }
}

/// A message to store; the store gives it its id, seq and timestamp.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation: Conversation,
    pub sender_id: String,
    pub sender_name: String,
    /// The recipient of a private message.
    pub to_user_id: Option<String>,
    pub content: String,
    pub kind: String,
    /// Retries with the same id from the same user return the first message.
    pub client_msg_id: Option<String>,
}

/// The outcome of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Newly stored.
    New(Message),
    /// A retry of an earlier `clientMsgId`; nothing new was stored.
    Duplicate(Message),
}

impl Appended {
    pub fn message(&self) -> &Message {
        match self {
            Appended::New(m) | Appended::Duplicate(m) => m,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refuses writes.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

/// Resolves when an appended message is durable (or refused).
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send>>;

/// Where messages live.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Queues a message and returns a future that resolves once it is durable
    /// (or with the earlier message of the same `client_msg_id` and sender).
    ///
    /// The message takes its place in line **before this returns**: messages
    /// appended one after another get increasing `seq` in that order, even if
    /// their futures are awaited later. That lets a socket pipeline its sends.
    fn append(&self, msg: NewMessage) -> AppendFuture;

    /// Up to `limit` messages of the page, oldest first.
    async fn history(
        &self,
        conversation: &Conversation,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Resolves once every message appended so far has been written (or
    /// refused): graceful shutdown waits for it.
    async fn flush(&self) {}

    /// Up to `limit` private messages to or from `user` in `namespace`
    /// stored at `since_ms` or later, each conversation's in seq order
    /// (connection state recovery replays them).
    async fn direct_since(
        &self,
        namespace: &str,
        user: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Turns on the webhook outbox: from now on each new message's
    /// `message.created` event is written with it, in its transaction.
    fn enable_outbox(&self) {}

    /// Adds events to the webhook outbox (those not written with a message
    /// or a document's ops). An event with a `key` replaces the one waiting
    /// with that key, if any: the id and body are the new event's; the
    /// creation and due times stay the first's while it is not due yet (one
    /// already due may be on its way: the new one waits its own time).
    async fn outbox_push(&self, _events: &[OutboxEvent]) -> Result<(), StoreError> {
        Ok(())
    }

    /// The oldest `limit` events waiting and due at `now_ms`, in order.
    async fn outbox_next(
        &self,
        _limit: usize,
        _now_ms: u64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(Vec::new())
    }

    /// The backend took these events: forget them.
    async fn outbox_done(&self, _ids: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Drops events older than `before_ms`, then the oldest beyond
    /// `max_rows`; returns how many were dropped and how many are left.
    async fn outbox_trim(&self, _before_ms: u64, _max_rows: u64) -> Result<(u64, u64), StoreError> {
        Ok((0, 0))
    }

    /// Takes or keeps the delivery lease for `holder` until `until_ms`;
    /// true when `holder` has it.
    async fn lease(&self, _holder: &str, _now_ms: u64, _until_ms: u64) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Keeps recoverable sessions (see `recovery`), dropping the oldest of
    /// a user beyond `per_user`, and removes those in `forget` (used).
    async fn save_sessions(
        &self,
        save: &[SavedSession],
        forget: &[String],
        per_user: usize,
    ) -> Result<(), StoreError>;

    /// A session by its pid, if it has not expired.
    async fn load_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<SavedSession>, StoreError>;

    /// Removes expired sessions; returns how many sessions are left.
    async fn sweep_sessions(&self, now_ms: u64) -> Result<u64, StoreError>;
}

/// A webhook event in the outbox: its id (a ULID, the delivery order) and
/// its JSON as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub body: String,
    pub created_ms: u64,
    /// Events with one key fold into one while waiting (see `outbox_push`).
    pub key: Option<String>,
    /// Not sent before this time.
    pub due_ms: u64,
}

impl OutboxEvent {
    /// An event of `ty` about `data`, due now, with a fresh id.
    pub fn new(ty: &str, data: serde_json::Value) -> OutboxEvent {
        let id = event_id();
        let now = now_ms();
        let body = serde_json::json!({ "id": id, "type": ty, "time": now, "data": data });
        OutboxEvent {
            id,
            body: body.to_string(),
            created_ms: now,
            key: None,
            due_ms: now,
        }
    }
}

/// A new webhook event id: a ULID, monotonic within this process whatever
/// writes the event (the store's writer or the webhooks), so that events
/// go out in the order they happened here.
pub fn event_id() -> String {
    static IDS: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut ids = IDS.lock().unwrap_or_else(|p| p.into_inner());
    match ids.get_or_insert_with(ulid::Generator::new).generate() {
        Ok(id) => id,
        // The millisecond's random part ran out: a fresh one.
        Err(_) => ulid::Ulid::new(),
    }
    .to_string()
}

/// The `message.created` event of a stored message.
pub fn message_event(id: String, namespace: &str, m: &Message) -> OutboxEvent {
    let mut data = serde_json::to_value(m).unwrap_or_default();
    data["namespace"] = serde_json::Value::from(namespace);
    let now = now_ms();
    let body =
        serde_json::json!({ "id": id, "type": "message.created", "time": now, "data": data });
    OutboxEvent {
        id,
        body: body.to_string(),
        created_ms: now,
        key: None,
        due_ms: now,
    }
}

/// The `document.changed` event of a document now at `version`: keyed by
/// the document, so the edits of the next `debounce_ms` fold into it.
pub fn document_event(
    namespace: &str,
    doc_id: &str,
    version: u64,
    debounce_ms: u64,
) -> OutboxEvent {
    let data = serde_json::json!({ "namespace": namespace, "docId": doc_id, "version": version });
    let mut e = OutboxEvent::new("document.changed", data);
    e.key = Some(format!("document.changed|{namespace}|{doc_id}"));
    e.due_ms = e.created_ms.saturating_add(debounce_ms);
    e
}

/// A recoverable session as stored: the recovery module reads `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    pub pid: String,
    /// Namespace and user id (`{ns}|{user}`): the unit of the per-user bound.
    pub user_key: String,
    pub expires_ms: u64,
    pub body: String,
}

/// How to reach the store, from `--database-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    Sqlite(String),
    Postgres(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            Ok(StoreUrl::Memory)
        } else if s.starts_with("sqlite:") {
            Ok(StoreUrl::Sqlite(s.to_string()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(s.to_string()))
        } else {
            Err(format!(
                "'{s}' is not memory, sqlite://PATH or postgres://..."
            ))
        }
    }
}

/// Opens (and migrates) the store `url` names (`documents::open_both`
/// opens the document store beside it).
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn MessageStore>, StoreError> {
    Ok(match url {
        StoreUrl::Memory => Arc::new(MemoryStore::new()),
        StoreUrl::Sqlite(u) => Arc::new(SqlStore::open_sqlite(u).await?),
        StoreUrl::Postgres(u) => Arc::new(SqlStore::open_postgres(u).await?),
    })
}

/// Which page of a conversation's history: by `seq`, which has no gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The latest messages.
    Latest,
    /// The messages just before this `seq` (paging back).
    Before(u64),
    /// The messages just after this `seq` (catching up, oldest first).
    After(u64),
}

impl Page {
    /// `before` or `after`, at most one of them; `Latest` with neither.
    pub fn from_bounds(before: Option<u64>, after: Option<u64>) -> Result<Page, &'static str> {
        match (before, after) {
            (None, None) => Ok(Page::Latest),
            (Some(b), None) => Ok(Page::Before(b)),
            (None, Some(a)) => Ok(Page::After(a)),
            (Some(_), Some(_)) => Err("give before or after, not both"),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
