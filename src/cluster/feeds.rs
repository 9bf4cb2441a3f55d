//! SSE across nodes: a user's `/events` stream may be on another node than
//! the socket or API call that addresses them. Every feed event is also
//! published on one Redis channel; every node hands what the others publish
//! to its own local streams.
//!
//! The way out is bounded: events wait in a queue of at most
//! `--max-redis-queue-bytes` (and [`QUEUE_EVENTS`] events) for the one
//! publisher. While Redis is known to be down, or the queue is full, an event
//! is dropped at once and counted (`switchboard_redis_dropped_total{path="feeds"}`),
//! and the caller learns it ([`RelayError`](crate::feeds::RelayError)): a backend emit answers 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use socketioxide_redis::drivers::Driver;
use tokio::sync::mpsc;

use super::{ReconnectingDriver, dropped};
use crate::feeds::{Feeds, Relay, RelayError, RemoteFeed};

/// Most feed events waiting to be published, whatever their size.
pub const QUEUE_EVENTS: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Wire {
    from: String,
    ns: String,
    user: String,
    event: String,
    data: String,
}

/// The sending half of the relay over Redis, held by [`Feeds`].
#[derive(Debug)]
pub struct RedisRelay {
    tx: mpsc::Sender<RemoteFeed>,
    /// Bytes of the events queued or being published.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    /// The driver's view of Redis.
    up: Arc<AtomicBool>,
}

/// What an event holds while it waits (its strings and some bookkeeping).
fn size(f: &RemoteFeed) -> usize {
    f.ns.len() + f.user.len() + f.event.len() + f.data.len() + 128
}

impl Relay for RedisRelay {
    /// Queues `f` for the other nodes, or drops it (counted) when Redis is
    /// down or the queue is full.
    fn send(&self, f: RemoteFeed) -> Result<(), RelayError> {
        if !self.up.load(Ordering::Relaxed) {
            dropped("feeds", "redis_down");
            return Err(RelayError::Down);
        }
        let n = size(&f);
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        // One event is always let through, however large (it is at most
        // --max-payload-bytes), so a small bound cannot stop the relay.
        let full = before > 0 && before + n > self.max_bytes;
        let sent = if full {
            Err(RelayError::Full)
        } else {
            self.tx.try_send(f).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RelayError::Full,
                mpsc::error::TrySendError::Closed(_) => RelayError::Down,
            })
        };
        if let Err(e) = sent {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            if e == RelayError::Full {
                dropped("feeds", "queue_full");
                crate::metrics::limit_hit("max_redis_queue_bytes");
            } else {
                dropped("feeds", "redis_down");
            }
        }
        sent
    }
}

/// Starts the publisher and the subscriber; returns the sender `Feeds` uses.
/// The publisher goes through the cluster driver: while Redis is down a
/// publish fails at once, and one that hangs is cut at the driver's timeout.
pub fn start(
    feeds: Arc<Feeds>,
    client: redis::Client,
    driver: ReconnectingDriver,
    prefix: &str,
    node_id: String,
    max_bytes: usize,
) -> RedisRelay {
    let channel = format!("{prefix}:feeds");
    let (tx, mut rx) = mpsc::channel::<RemoteFeed>(QUEUE_EVENTS);
    let relay = RedisRelay {
        tx,
        queued: Arc::default(),
        max_bytes,
        up: driver.up_flag(),
    };
    let queued = relay.queued.clone();
    let (pub_channel, from) = (channel.clone(), node_id.clone());
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            let n = size(&f);
            let wire = Wire {
                from: from.clone(),
                ns: f.ns,
                user: f.user,
                event: f.event.to_string(),
                data: f.data.to_string(),
            };
            if let Ok(text) = serde_json::to_string(&wire) {
                // While Redis is away, remote SSE clients miss these (as
                // sockets on other nodes do); local ones already have them.
                if let Err(e) = driver.publish(pub_channel.clone(), text.into_bytes()).await {
                    dropped("feeds", "publish_failed");
                    tracing::debug!("feed relay publish failed: {e}");
                }
            }
            queued.fetch_sub(n, Ordering::Relaxed);
        }
    });
    tokio::spawn(async move {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let Ok(text) = msg.get_payload::<String>() else {
                                continue;
                            };
                            let Ok(w) = serde_json::from_str::<Wire>(&text) else {
                                continue;
                            };
                            if w.from != node_id {
                                feeds.deliver_local(&w.ns, &w.user, &w.event, w.data.into());
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("feed relay cannot subscribe: {e}"),
            }
            // Connection lost: subscribe again once Redis answers.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    relay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(bytes: usize) -> RemoteFeed {
        RemoteFeed {
            ns: "/".into(),
            user: "u".into(),
            event: "e".into(),
            data: "x".repeat(bytes).into(),
        }
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_refuses_while_redis_is_down() {
        let (tx, mut rx) = mpsc::channel(QUEUE_EVENTS);
        let up = Arc::new(AtomicBool::new(true));
        let relay = RedisRelay {
            tx,
            queued: Arc::default(),
            max_bytes: 10_000,
            up: up.clone(),
        };
        // Nothing publishes: the queue fills up to its bytes.
        let sent = (0..10).filter(|_| relay.send(feed(3000)).is_ok()).count();
        assert_eq!(sent, 3);
        assert_eq!(relay.send(feed(10)), Ok(()), "small ones still fit");
        assert_eq!(relay.send(feed(3000)), Err(RelayError::Full));
        // One event is always let through, however large.
        let (tx, _rx2) = mpsc::channel(QUEUE_EVENTS);
        let lone = RedisRelay {
            tx,
            queued: Arc::default(),
            max_bytes: 100,
            up: up.clone(),
        };
        assert_eq!(lone.send(feed(5000)), Ok(()));
        assert_eq!(lone.send(feed(1)), Err(RelayError::Full));
        // Redis known down: refused at once, nothing queued.
        up.store(false, Ordering::Relaxed);
        assert_eq!(relay.send(feed(1)), Err(RelayError::Down));
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 4);
    }
}
