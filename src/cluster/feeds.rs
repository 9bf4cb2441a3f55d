//! SSE across nodes: a user's `/events` stream may be on another node than
//! the socket or API call that addresses them. Every feed event is also
//! published on one Redis channel; every node hands what the others publish
//! to its own local streams.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::feeds::{Feeds, RemoteFeed};

#[derive(Serialize, Deserialize)]
struct Wire {
    from: String,
    ns: String,
    user: String,
    event: String,
    data: String,
}

/// Starts the publisher and the subscriber; returns the sender `Feeds` uses.
pub fn start(
    feeds: Arc<Feeds>,
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    prefix: &str,
    node_id: String,
) -> mpsc::UnboundedSender<RemoteFeed> {
    let channel = format!("{prefix}:feeds");
    let (tx, mut rx) = mpsc::unbounded_channel::<RemoteFeed>();
    let (pub_channel, from) = (channel.clone(), node_id.clone());
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            let wire = Wire {
                from: from.clone(),
                ns: f.ns,
                user: f.user,
                event: f.event.to_string(),
                data: f.data.to_string(),
            };
            let Ok(text) = serde_json::to_string(&wire) else {
                continue;
            };
            let mut c = conn.clone();
            // While Redis is away, remote SSE clients miss these (as sockets on
            // other nodes do); local ones already have them.
            let publish = c.publish::<_, _, ()>(&pub_channel, text);
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(500), publish).await {
                tracing::debug!("feed relay publish failed: {e}");
            }
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
    tx
}
