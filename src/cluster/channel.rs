//! One Redis pub/sub channel between the nodes, for what socketioxide's
//! adapter does not carry (SSE feed events, Yjs updates): a bounded way
//! out through one publisher, and a subscriber that subscribes again
//! whenever its connection is lost.
//!
//! The way out is bounded: messages wait in a queue of at most `max_bytes`
//! (`--max-redis-queue-bytes`) and [`QUEUE_MESSAGES`] messages. While Redis
//! is known to be down, or the queue is full, a message is dropped at once
//! and counted (`switchboard_redis_dropped_total{path}`), and the caller
//! learns it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use socketioxide_redis::drivers::Driver;
use tokio::sync::mpsc;

use super::{ReconnectingDriver, dropped};
use crate::feeds::RelayError;

/// Most messages waiting to be published, whatever their size.
pub const QUEUE_MESSAGES: usize = 4096;

/// What a waiting message is counted as besides its text (bookkeeping).
const OVERHEAD: usize = 128;

/// The way out: a queue for the one publisher.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<String>,
    /// Bytes of the messages queued or being published.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    /// The driver's view of Redis.
    up: Arc<AtomicBool>,
    /// `path` in the dropped counter.
    path: &'static str,
}

impl Outbox {
    /// Starts the publisher of `channel`.
    pub fn start(
        driver: ReconnectingDriver,
        channel: String,
        max_bytes: usize,
        path: &'static str,
    ) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE_MESSAGES);
        let outbox = Outbox {
            tx,
            queued: Arc::default(),
            max_bytes,
            up: driver.up_flag(),
            path,
        };
        let queued = outbox.queued.clone();
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                let n = text.len() + OVERHEAD;
                // The driver fails at once while Redis is down and cuts a
                // publish that hangs at its timeout; what it drops, the
                // other nodes miss (local clients already have it).
                if let Err(e) = driver.publish(channel.clone(), text.into_bytes()).await {
                    dropped(path, "publish_failed");
                    tracing::debug!("{path} relay publish failed: {e}");
                }
                queued.fetch_sub(n, Ordering::Relaxed);
            }
        });
        outbox
    }

    /// Queues `text` for the other nodes, or drops it (counted) when Redis
    /// is down or the queue is full.
    pub fn send(&self, text: String) -> Result<(), RelayError> {
        if !self.up.load(Ordering::Relaxed) {
            dropped(self.path, "redis_down");
            return Err(RelayError::Down);
        }
        let n = text.len() + OVERHEAD;
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        // One message is always let through, however large (it is at most
        // a payload's or an update's limit), so a small bound cannot stop
        // the relay.
        let full = before > 0 && before + n > self.max_bytes;
        let sent = if full {
            Err(RelayError::Full)
        } else {
            self.tx.try_send(text).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RelayError::Full,
                mpsc::error::TrySendError::Closed(_) => RelayError::Down,
            })
        };
        if let Err(e) = sent {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            if e == RelayError::Full {
                dropped(self.path, "queue_full");
                crate::metrics::limit_hit("max_redis_queue_bytes");
            } else {
                dropped(self.path, "redis_down");
            }
        }
        sent
    }
}

/// Subscribes to `channel` for good: `subscribed` runs on each
/// (re)subscription (messages may have been missed before it), `message`
/// on each message's text.
pub fn subscribe(
    client: redis::Client,
    channel: String,
    subscribed: impl Fn() + Send + 'static,
    message: impl Fn(String) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        subscribed();
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            if let Ok(text) = msg.get_payload::<String>() {
                                message(text);
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("cannot subscribe to {channel}: {e}"),
            }
            // Connection lost: subscribe again once Redis answers.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_bytes: usize, up: Arc<AtomicBool>) -> (Outbox, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let outbox = Outbox {
            tx,
            queued: Arc::default(),
            max_bytes,
            up,
            path: "test",
        };
        (outbox, rx)
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_refuses_while_redis_is_down() {
        let up = Arc::new(AtomicBool::new(true));
        let (relay, mut rx) = outbox(10_000, up.clone());
        // Nothing publishes: the queue fills up to its bytes.
        let text = |n: usize| "x".repeat(n);
        let sent = (0..10).filter(|_| relay.send(text(3000)).is_ok()).count();
        assert_eq!(sent, 3);
        assert_eq!(relay.send(text(10)), Ok(()), "small ones still fit");
        assert_eq!(relay.send(text(3000)), Err(RelayError::Full));
        // One message is always let through, however large.
        let (lone, _rx2) = outbox(100, up.clone());
        assert_eq!(lone.send(text(5000)), Ok(()));
        assert_eq!(lone.send(text(1)), Err(RelayError::Full));
        // Redis known down: refused at once, nothing queued.
        up.store(false, Ordering::Relaxed);
        assert_eq!(relay.send(text(1)), Err(RelayError::Down));
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 4);
    }
}
