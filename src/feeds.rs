//! Per-user feeds for Server-Sent Events: everything addressed to a user's
//! private room (backend emits to the user, private messages) is also handed
//! to that user's open `/events` streams.
//!
//! A feed is never thinned out silently: one whose buffer is full is ended
//! (`slow_consumer`), as is every feed of a user the backend disconnects
//! (`disconnected`); the stream says why in a last `server:closing` event.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::sync::mpsc;

/// One event for a feed: its name and its data already as JSON text.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub event: Arc<str>,
    pub data: Arc<str>,
}

/// Events one SSE client may have waiting; a feed that overflows is ended.
pub const FEED_BUFFER: usize = 256;

/// The feed event that ends a user's feeds on every node (no user event can
/// have this name: control characters are refused, see `event_names`).
pub const CLOSE_FEEDS: &str = "\u{0}close";

/// Why a feed was ended by the server, shared with its stream.
pub type EndReason = Arc<OnceLock<&'static str>>;

#[derive(Debug)]
struct Feed {
    tx: mpsc::Sender<FeedEvent>,
    end: EndReason,
}

impl Feed {
    /// Ends the feed: its stream delivers what it holds, then says `reason`.
    fn end(self, reason: &'static str) {
        let _ = self.end.set(reason);
    }
}

/// Why a feed event did not go to the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("redis is unreachable")]
    Down,
    #[error("the queue to redis is full (--max-redis-queue-bytes)")]
    Full,
}

/// The way to the other nodes' feeds (`cluster::feeds` over Redis).
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// Hands `f` over for the other nodes, or says why it could not.
    fn send(&self, f: RemoteFeed) -> Result<(), RelayError>;
}

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
    subscribers: DashMap<(String, String), Vec<Feed>>,
    /// Set when clustered: feed events also go to the other nodes.
    remote: std::sync::OnceLock<Box<dyn Relay>>,
}

impl Feeds {
    /// Opens a feed for `user` in namespace `ns`; it closes when the receiver
    /// is dropped. The receiver ends (returns `None`) when the server ends
    /// the feed, and the reason is then set.
    pub fn subscribe(&self, ns: &str, user: &str) -> (mpsc::Receiver<FeedEvent>, EndReason) {
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        let end = EndReason::default();
        self.subscribers
            .entry((ns.to_string(), user.to_string()))
            .or_default()
            .push(Feed {
                tx,
                end: end.clone(),
            });
        (rx, end)
    }

    /// Ends every feed of `user` in `ns`, on every node. Returns how many
    /// were open on this node.
    pub fn close_user(&self, ns: &str, user: &str) -> usize {
        if let Some(remote) = self.remote.get() {
            // Dropped only while Redis is away or swamped; the caller's
            // disconnect across nodes then fails too and says so.
            let _ = remote.send(RemoteFeed {
                ns: ns.to_string(),
                user: user.to_string(),
                event: CLOSE_FEEDS.into(),
                data: "null".into(),
            });
        }
        self.close_local(ns, user)
    }

    fn close_local(&self, ns: &str, user: &str) -> usize {
        let Some((_, feeds)) = self.subscribers.remove(&(ns.to_string(), user.to_string())) else {
            return 0;
        };
        let n = feeds.iter().filter(|f| !f.tx.is_closed()).count();
        for f in feeds {
            f.end("disconnected");
        }
        n
    }

    /// Sends feed events to the other nodes too (see `cluster::feeds`).
    pub fn relay_to(&self, remote: Box<dyn Relay>) {
        let _ = self.remote.set(remote);
    }

    /// Hands `event` to the user's open feeds, here and on the other nodes.
    /// An error says the other nodes' feeds miss it (this node's have it).
    pub fn publish<T: serde::Serialize + ?Sized>(
        &self,
        ns: &str,
        user: &str,
        event: &str,
        data: &T,
    ) -> Result<(), RelayError> {
        let Ok(data) = serde_json::to_string(data) else {
            return Ok(());
        };
        let data: Arc<str> = data.into();
        let relayed = match self.remote.get() {
            Some(remote) => remote.send(RemoteFeed {
                ns: ns.to_string(),
                user: user.to_string(),
                event: event.into(),
                data: data.clone(),
            }),
            None => Ok(()),
        };
        self.deliver_local(ns, user, event, data);
        relayed
    }

    /// Hands an event (data already JSON) to this node's open feeds of the
    /// user, dropping the closed ones.
    pub fn deliver_local(&self, ns: &str, user: &str, event: &str, data: Arc<str>) {
        if event == CLOSE_FEEDS {
            self.close_local(ns, user);
            return;
        }
        let key = (ns.to_string(), user.to_string());
        let Some(mut subs) = self.subscribers.get_mut(&key) else {
            return;
        };
        let ev = FeedEvent {
            event: event.into(),
            data,
        };
        let mut slow = Vec::new();
        let mut i = 0;
        while i < subs.len() {
            match subs[i].tx.try_send(ev.clone()) {
                Ok(()) => i += 1,
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(subs.swap_remove(i)),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    subs.swap_remove(i);
                }
            }
        }
        let empty = subs.is_empty();
        drop(subs);
        if empty {
            self.subscribers.remove_if(&key, |_, s| s.is_empty());
        }
        for feed in slow {
            tracing::info!(ns, user, "slow consumer: SSE stream buffer full; ending it");
            crate::metrics::slow_consumer_disconnect();
            feed.end("slow_consumer");
        }
    }

    /// Drops the closed feeds of a user (when a stream ends).
    pub fn prune(&self, ns: &str, user: &str) {
        let key = (ns.to_string(), user.to_string());
        if let Some(mut subs) = self.subscribers.get_mut(&key) {
            subs.retain(|f| !f.tx.is_closed());
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
