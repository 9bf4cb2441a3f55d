//! Yjs documents across nodes: every update a node stores and every
//! awareness change its clients send is published on one Redis channel;
//! each node applies what the others publish to its loaded copy and hands
//! it to its own clients (y-socket.io sockets and y-websocket peers alike).
//! Updates carry their seq in the store: a node that sees one skip past a
//! seq it lacks reads the store's tail instead (`YDocs::apply_relayed`).
//!
//! The way out is bounded like the SSE relay's (`cluster::feeds`): a queue
//! of at most `--max-redis-queue-bytes`; while Redis is down or the queue is
//! full a message is dropped and counted
//! (`switchboard_redis_dropped_total{path="yjs"}`). Nothing stored is lost:
//! the other nodes read it from the store when their clients next sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use socketioxide_redis::drivers::Driver;
use tokio::sync::mpsc;

use super::{ReconnectingDriver, dropped};
use crate::yjs::{Kind, RelayEvent, YRelay, YRelayed};

/// Most messages waiting to be published, whatever their size.
pub const QUEUE_MESSAGES: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Wire {
    from: String,
    scope: String,
    doc: String,
    /// "u": an update (with its seq), "a": awareness.
    kind: String,
    seq: u64,
    data: String,
}

/// The sending half, held by `YDocs`.
pub struct RedisYRelay {
    tx: mpsc::Sender<YRelayed>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    up: Arc<AtomicBool>,
}

fn size(m: &YRelayed) -> usize {
    m.key.namespace.len() + m.key.doc_id.len() + m.bytes.len() * 4 / 3 + 128
}

impl YRelay for RedisYRelay {
    fn send(&self, m: YRelayed) {
        if !self.up.load(Ordering::Relaxed) {
            return dropped("yjs", "redis_down");
        }
        let n = size(&m);
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        // One message always goes, however large (at most an update's
        // limit), so a small bound cannot stop the relay.
        if before > 0 && before + n > self.max_bytes {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            crate::metrics::limit_hit("max_redis_queue_bytes");
            return dropped("yjs", "queue_full");
        }
        if self.tx.try_send(m).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            dropped("yjs", "queue_full");
        }
    }
}

/// Starts the publisher and the subscriber; `deliver` gets what the other
/// nodes publish, and each (re)subscription.
pub fn start(
    client: redis::Client,
    driver: ReconnectingDriver,
    prefix: &str,
    node_id: String,
    max_bytes: usize,
    deliver: Arc<dyn Fn(RelayEvent) + Send + Sync>,
) -> RedisYRelay {
    let channel = format!("{prefix}:yjs");
    let (tx, mut rx) = mpsc::channel::<YRelayed>(QUEUE_MESSAGES);
    let relay = RedisYRelay {
        tx,
        queued: Arc::default(),
        max_bytes,
        up: driver.up_flag(),
    };
    let queued = relay.queued.clone();
    let (pub_channel, from) = (channel.clone(), node_id.clone());
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let n = size(&m);
            let wire = Wire {
                from: from.clone(),
                scope: m.key.namespace,
                doc: m.key.doc_id,
                kind: match m.kind {
                    Kind::Update => "u".into(),
                    Kind::Awareness => "a".into(),
                },
                seq: m.seq,
                data: B64.encode(&m.bytes),
            };
            if let Ok(text) = serde_json::to_string(&wire)
                && let Err(e) = driver.publish(pub_channel.clone(), text.into_bytes()).await
            {
                dropped("yjs", "publish_failed");
                tracing::debug!("yjs relay publish failed: {e}");
            }
            queued.fetch_sub(n, Ordering::Relaxed);
        }
    });
    tokio::spawn(async move {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        deliver(RelayEvent::Subscribed);
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            if let Some(m) =
                                parse(&msg.get_payload::<String>().unwrap_or_default(), &node_id)
                            {
                                deliver(RelayEvent::Message(m));
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("yjs relay cannot subscribe: {e}"),
            }
            // Connection lost: subscribe again once Redis answers.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    relay
}

/// A message of another node's, or None (this node's own, or not one).
fn parse(text: &str, node_id: &str) -> Option<YRelayed> {
    let w = serde_json::from_str::<Wire>(text).ok()?;
    if w.from == node_id {
        return None;
    }
    Some(YRelayed {
        key: crate::documents::store::DocKey::new(&w.scope, &w.doc),
        kind: match w.kind.as_str() {
            "u" => Kind::Update,
            "a" => Kind::Awareness,
            _ => return None,
        },
        seq: w.seq,
        bytes: B64.decode(w.data).ok()?.into(),
    })
}
