//! The in-memory store: for tests and throwaway runs. Loses everything on exit.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    AppendFuture, Appended, Conversation, Message, MessageStore, NewMessage, Page, StoreError,
    now_ms,
};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conversations: HashMap<Conversation, Vec<Message>>,
    /// (namespace, sender, clientMsgId) -> (conversation, index in it)
    dedup: HashMap<(String, String, String), (Conversation, usize)>,
    sessions: HashMap<String, super::SavedSession>,
    /// Webhook events by id (a ULID: their order), when webhooks are on.
    outbox: Option<std::collections::BTreeMap<String, super::OutboxEvent>>,
    /// The id of the event waiting under each key.
    outbox_keys: HashMap<String, String>,
    lease: Option<(String, u64)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Internal("poisoned lock".into()))
    }

    fn append_now(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        let mut inner = self.lock()?;
        let dedup_key = msg.client_msg_id.as_ref().map(|c| {
            (
                msg.conversation.namespace.clone(),
                msg.sender_id.clone(),
                c.clone(),
            )
        });
        if let Some(key) = &dedup_key
            && let Some((conv, idx)) = inner.dedup.get(key)
        {
            let first = inner.conversations[conv][*idx].clone();
            return Ok(Appended::Duplicate(first));
        }
        let list = inner
            .conversations
            .entry(msg.conversation.clone())
            .or_default();
        let room_id = match &msg.conversation.kind {
            super::ConversationKind::Room(r) => Some(r.clone()),
            super::ConversationKind::Direct(..) => None,
        };
        let stored = Message {
            id: ulid::Ulid::new().to_string(),
            room_id,
            to_user_id: msg.to_user_id,
            sender_id: msg.sender_id,
            sender_name: msg.sender_name,
            content: msg.content,
            kind: msg.kind,
            timestamp: now_ms(),
            seq: list.len() as u64 + 1,
        };
        list.push(stored.clone());
        let idx = list.len() - 1;
        if let Some(outbox) = &mut inner.outbox {
            let id = super::event_id();
            let e = super::message_event(id.clone(), &msg.conversation.namespace, &stored);
            outbox.insert(id, e);
        }
        if let Some(key) = dedup_key {
            inner.dedup.insert(key, (msg.conversation, idx));
        }
        Ok(Appended::New(stored))
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    fn append(&self, msg: NewMessage) -> AppendFuture {
        Box::pin(std::future::ready(self.append_now(msg)))
    }

    async fn history(
        &self,
        conversation: &Conversation,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock()?;
        let Some(list) = inner.conversations.get(conversation) else {
            return Ok(Vec::new());
        };
        // seq n sits at index n-1, so a seq is an index bound.
        let index = |seq: u64| (seq.min(usize::MAX as u64) as usize).min(list.len());
        let (start, end) = match page {
            Page::Latest => (list.len().saturating_sub(limit), list.len()),
            Page::Before(b) => {
                let end = index(b.saturating_sub(1));
                (end.saturating_sub(limit), end)
            }
            Page::After(a) => {
                let start = index(a);
                (start, start.saturating_add(limit).min(list.len()))
            }
        };
        Ok(list[start..end].to_vec())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn direct_since(
        &self,
        namespace: &str,
        user: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock()?;
        let mut out: Vec<Message> = inner
            .conversations
            .iter()
            .filter(|(c, _)| {
                c.namespace == namespace
                    && matches!(&c.kind, super::ConversationKind::Direct(a, b) if a == user || b == user)
            })
            .flat_map(|(_, list)| list.iter().filter(|m| m.timestamp >= since_ms).cloned())
            .collect();
        out.sort_by_key(|m| (m.timestamp, m.seq));
        out.truncate(limit);
        Ok(out)
    }

    fn enable_outbox(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.outbox.get_or_insert_with(Default::default);
        }
    }

    async fn outbox_push(&self, events: &[super::OutboxEvent]) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let Inner {
            outbox,
            outbox_keys,
            ..
        } = &mut *inner;
        let outbox = outbox.get_or_insert_with(Default::default);
        for e in events {
            let mut e = e.clone();
            if let Some(key) = &e.key
                && let Some(old) = outbox_keys.insert(key.clone(), e.id.clone())
                && let Some(first) = outbox.remove(&old)
                && first.due_ms > e.created_ms
            {
                e.created_ms = first.created_ms;
                e.due_ms = first.due_ms;
            }
            outbox.insert(e.id.clone(), e);
        }
        Ok(())
    }

    async fn outbox_next(
        &self,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<super::OutboxEvent>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .outbox
            .iter()
            .flat_map(|o| o.values())
            .filter(|e| e.due_ms <= now_ms)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn outbox_done(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let Inner {
            outbox,
            outbox_keys,
            ..
        } = &mut *inner;
        if let Some(o) = outbox {
            for id in ids {
                if let Some(e) = o.remove(id)
                    && let Some(key) = e.key
                {
                    outbox_keys.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn outbox_trim(&self, before_ms: u64, max_rows: u64) -> Result<(u64, u64), StoreError> {
        let mut inner = self.lock()?;
        let Inner {
            outbox,
            outbox_keys,
            ..
        } = &mut *inner;
        let Some(o) = outbox else {
            return Ok((0, 0));
        };
        let before = o.len();
        o.retain(|_, e| e.created_ms >= before_ms);
        while o.len() as u64 > max_rows {
            o.pop_first();
        }
        let left = o.len();
        let kept: std::collections::HashSet<&String> = o.keys().collect();
        outbox_keys.retain(|_, id| kept.contains(id));
        Ok(((before - left) as u64, left as u64))
    }

    async fn lease(&self, holder: &str, now_ms: u64, until_ms: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match &inner.lease {
            Some((h, until)) if h != holder && *until >= now_ms => Ok(false),
            _ => {
                inner.lease = Some((holder.to_string(), until_ms));
                Ok(true)
            }
        }
    }

    async fn save_sessions(
        &self,
        save: &[super::SavedSession],
        forget: &[String],
        per_user: usize,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        for pid in forget {
            inner.sessions.remove(pid);
        }
        for s in save {
            inner.sessions.insert(s.pid.clone(), s.clone());
            let mut mine: Vec<(u64, String)> = inner
                .sessions
                .values()
                .filter(|o| o.user_key == s.user_key)
                .map(|o| (o.expires_ms, o.pid.clone()))
                .collect();
            if mine.len() > per_user {
                mine.sort();
                for (_, pid) in &mine[..mine.len() - per_user] {
                    inner.sessions.remove(pid);
                }
            }
        }
        Ok(())
    }

    async fn load_session(
        &self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<super::SavedSession>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .sessions
            .get(pid)
            .filter(|s| s.expires_ms > now_ms)
            .cloned())
    }

    async fn sweep_sessions(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        inner.sessions.retain(|_, s| s.expires_ms > now_ms);
        Ok(inner.sessions.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(conv: &Conversation, content: &str, cid: Option<&str>) -> NewMessage {
        NewMessage {
            conversation: conv.clone(),
            sender_id: "alice".into(),
            sender_name: "Alice".into(),
            to_user_id: None,
            content: content.into(),
            kind: "text".into(),
            client_msg_id: cid.map(String::from),
        }
    }

    #[tokio::test]
    async fn seq_history_and_dedup() {
        let s = MemoryStore::new();
        let c = Conversation::room("/", "general");
        for i in 1..=10 {
            let m = s.append(new(&c, &i.to_string(), None)).await.unwrap();
            assert_eq!(m.message().seq, i);
        }
        let seqs = |h: Vec<Message>| h.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(s.history(&c, Page::Latest, 3).await.unwrap()),
            [8, 9, 10]
        );
        assert_eq!(
            seqs(s.history(&c, Page::Before(3), 5).await.unwrap()),
            [1, 2]
        );
        assert_eq!(
            seqs(s.history(&c, Page::After(3), 2).await.unwrap()),
            [4, 5]
        );
        assert_eq!(
            seqs(s.history(&c, Page::After(8), 5).await.unwrap()),
            [9, 10]
        );
        assert!(s.history(&c, Page::After(10), 5).await.unwrap().is_empty());
        assert!(
            s.history(&c, Page::After(u64::MAX), 5)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            seqs(s.history(&c, Page::After(0), 2).await.unwrap()),
            [1, 2]
        );
        let a = s.append(new(&c, "x", Some("c1"))).await.unwrap();
        let b = s.append(new(&c, "y", Some("c1"))).await.unwrap();
        assert!(matches!(a, Appended::New(_)));
        assert_eq!(b, Appended::Duplicate(a.message().clone()));
        // Another namespace is another conversation.
        let other = Conversation::room("/acme", "general");
        assert!(
            s.history(&other, Page::Latest, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
