//! Yjs documents across nodes: every update a node stores and every
//! awareness change its clients send is published on one Redis channel;
//! each node applies what the others publish to its loaded copy and hands
//! it to its own clients (y-socket.io sockets and y-websocket peers alike).
//! Updates carry their seq in the store: a node that sees one skip past a
//! seq it lacks reads the store's tail instead (`YDocs::apply_relayed`).
//!
//! The channel (`<prefix>:yjs`) and its bounded way out are
//! `cluster::channel`'s: a message dropped while Redis is down or the queue
//! is full is counted (`switchboard_redis_dropped_total{path="yjs"}`).
//! Nothing stored is lost: the other nodes read it from the store.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::ReconnectingDriver;
use super::channel::{Outbox, subscribe};
use crate::yjs::{Kind, RelayEvent, YRelay, YRelayed};

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
    outbox: Outbox,
    node_id: String,
}

impl YRelay for RedisYRelay {
    /// Queues `m` for the other nodes, or drops it (counted): the store
    /// has every update, and the other nodes read what they missed.
    fn send(&self, m: YRelayed) {
        let wire = Wire {
            from: self.node_id.clone(),
            scope: m.key.namespace,
            doc: m.key.doc_id,
            kind: match m.kind {
                Kind::Update => "u".into(),
                Kind::Awareness => "a".into(),
            },
            seq: m.seq,
            data: B64.encode(&m.bytes),
        };
        if let Ok(text) = serde_json::to_string(&wire) {
            let _ = self.outbox.send(text);
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
    let (me, on_subscribed) = (node_id.clone(), deliver.clone());
    subscribe(
        client,
        channel.clone(),
        move || on_subscribed(RelayEvent::Subscribed),
        move |text| {
            if let Some(m) = parse(&text, &me) {
                deliver(RelayEvent::Message(m));
            }
        },
    );
    RedisYRelay {
        outbox: Outbox::start(driver, channel, max_bytes, "yjs"),
        node_id,
    }
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
