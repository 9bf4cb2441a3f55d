//! Message history behind one trait, so the chat code does not care where
//! messages live. Each conversation (a room, later a private pair) has its own
//! gap-free `seq`.

mod memory;

pub use memory::MemoryStore;

use async_trait::async_trait;
use serde::Serialize;

/// A stored chat message, as clients receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_user_id: Option<String>,
    pub sender_id: String,
    pub sender_name: String,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: u64,
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

/// Where messages live.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a message once it is durable (or finds the earlier one with the
    /// same `client_msg_id` from the same sender).
    async fn append(&self, msg: NewMessage) -> Result<Appended, StoreError>;

    /// Up to `limit` messages with `seq < before` (or the latest), oldest first.
    async fn history(
        &self,
        conversation: &Conversation,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
