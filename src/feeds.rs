//! Per-user feeds for Server-Sent Events: everything addressed to a user's
//! private room (backend emits to the user, private messages) is also handed
//! to that user's open `/events` streams.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;

/// One event for a feed: its name and its data already as JSON text.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub event: Arc<str>,
    pub data: Arc<str>,
}

/// Events one slow SSE client may have waiting before it misses some.
pub const FEED_BUFFER: usize = 256;

/// A feed event on its way to the other nodes.
#[derive(Debug, Clone)]
pub struct RemoteFeed {
    pub ns: String,
    pub user: String,
    pub event: Arc<str>,
    pub data: Arc<str>,
}

#[derive(Debug, Default)]
pub struct Feeds {
    subscribers: DashMap<(String, String), Vec<mpsc::Sender<FeedEvent>>>,
    /// Set when clustered: feed events also go to the other nodes.
    remote: std::sync::OnceLock<mpsc::UnboundedSender<RemoteFeed>>,
}

impl Feeds {
    /// Opens a feed for `user` in namespace `ns`; it closes when the receiver is dropped.
    pub fn subscribe(&self, ns: &str, user: &str) -> mpsc::Receiver<FeedEvent> {
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        self.subscribers
            .entry((ns.to_string(), user.to_string()))
            .or_default()
            .push(tx);
        rx
    }

    /// Sends feed events to the other nodes too (see `cluster::feeds`).
    pub fn relay_to(&self, remote: mpsc::UnboundedSender<RemoteFeed>) {
        let _ = self.remote.set(remote);
    }

    /// Hands `event` to the user's open feeds, here and on the other nodes.
    pub fn publish<T: serde::Serialize + ?Sized>(
        &self,
        ns: &str,
        user: &str,
        event: &str,
        data: &T,
    ) {
        let Ok(data) = serde_json::to_string(data) else {
            return;
        };
        let data: Arc<str> = data.into();
        if let Some(remote) = self.remote.get() {
            let _ = remote.send(RemoteFeed {
                ns: ns.to_string(),
                user: user.to_string(),
                event: event.into(),
                data: data.clone(),
            });
        }
        self.deliver_local(ns, user, event, data);
    }

    /// Hands an event (data already JSON) to this node's open feeds of the
    /// user, dropping the closed ones.
    pub fn deliver_local(&self, ns: &str, user: &str, event: &str, data: Arc<str>) {
        let key = (ns.to_string(), user.to_string());
        let Some(mut subs) = self.subscribers.get_mut(&key) else {
            return;
        };
        let ev = FeedEvent {
            event: event.into(),
            data,
        };
        subs.retain(|tx| match tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!("SSE client too slow; event dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        let empty = subs.is_empty();
        drop(subs);
        if empty {
            self.subscribers.remove_if(&key, |_, s| s.is_empty());
        }
    }

    /// Drops the closed feeds of a user (when a stream ends).
    pub fn prune(&self, ns: &str, user: &str) {
        let key = (ns.to_string(), user.to_string());
        if let Some(mut subs) = self.subscribers.get_mut(&key) {
            subs.retain(|tx| !tx.is_closed());
        }
        self.subscribers.remove_if(&key, |_, s| s.is_empty());
    }

    /// Whether `user` has an open feed in `ns` on this node.
    pub fn has_feed(&self, ns: &str, user: &str) -> bool {
        self.subscribers
            .contains_key(&(ns.to_string(), user.to_string()))
    }

    /// Open feeds, all users (for tests and metrics).
    pub fn open(&self) -> usize {
        self.subscribers.iter().map(|e| e.value().len()).sum()
    }
}
