//! SSE across nodes: a user's `/events` stream may be on another node than
//! the socket or API call that addresses them. Every feed event is also
//! published on one Redis channel (`<prefix>:feeds`, see `cluster::channel`);
//! every node hands what the others publish to its own local streams.
//!
//! While Redis is known to be down, or the queue to it is full, an event is
//! dropped at once and counted (`switchboard_redis_dropped_total{path="feeds"}`),
//! and the caller learns it ([`RelayError`](crate::feeds::RelayError)): a
//! backend emit answers 503.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ReconnectingDriver;
use super::channel::{Outbox, subscribe};
use crate::feeds::{Feeds, Relay, RelayError, RemoteFeed};

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
    outbox: Outbox,
    node_id: String,
}

impl Relay for RedisRelay {
    /// Queues `f` for the other nodes, or drops it (counted) when Redis is
    /// down or the queue is full.
    fn send(&self, f: RemoteFeed) -> Result<(), RelayError> {
        let wire = Wire {
            from: self.node_id.clone(),
            ns: f.ns,
            user: f.user,
            event: f.event.to_string(),
            data: f.data.to_string(),
        };
        let text = serde_json::to_string(&wire).map_err(|_| RelayError::Down)?;
        self.outbox.send(text)
    }
}

/// Starts the publisher and the subscriber; returns the sender `Feeds` uses.
pub fn start(
    feeds: Arc<Feeds>,
    client: redis::Client,
    driver: ReconnectingDriver,
    prefix: &str,
    node_id: String,
    max_bytes: usize,
) -> RedisRelay {
    let channel = format!("{prefix}:feeds");
    let me = node_id.clone();
    subscribe(
        client,
        channel.clone(),
        || {},
        move |text| {
            if let Ok(w) = serde_json::from_str::<Wire>(&text)
                && w.from != me
            {
                feeds.deliver_local(&w.ns, &w.user, &w.event, w.data.into());
            }
        },
    );
    RedisRelay {
        outbox: Outbox::start(driver, channel, max_bytes, "feeds"),
        node_id,
    }
}
