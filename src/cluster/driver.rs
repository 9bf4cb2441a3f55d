//! The Redis pub/sub driver for socketioxide-redis, on a reconnecting
//! connection.
//!
//! socketioxide-redis's own driver holds one multiplexed connection: when
//! Redis restarts, that connection and its subscriptions are gone for good and
//! cross-node delivery stops until the node restarts. This driver uses
//! redis-rs's `ConnectionManager`, which reconnects by itself and
//! re-subscribes every channel, so delivery resumes on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

/// Where each subscribed channel's messages go.
type Routes = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

#[derive(Clone)]
pub struct ReconnectingDriver {
    conn: ConnectionManager,
    routes: Routes,
    /// False from the first failed publish until a PING answers again. While
    /// down, publishes fail at once, so a node serves its own clients
    /// without waiting on Redis.
    up: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis is unreachable")]
    Down,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Longest a publish may wait before Redis counts as down.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a down Redis is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Hands a pushed pub/sub message to the stream of its channel.
fn route(msg: PushInfo, routes: &Routes) {
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return;
    }
    let mut data = msg.data.into_iter();
    let (Some(chan), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(chan), Ok(payload)) = (
        String::from_redis_value(chan),
        Vec::<u8>::from_redis_value(payload),
    ) else {
        return;
    };
    let Ok(routes) = routes.read() else { return };
    if let Some(tx) = routes.get(&chan)
        && tx.try_send((chan, payload)).is_err()
    {
        super::dropped("adapter", "consumer_behind");
        tracing::warn!("redis pub/sub consumer is behind; a cluster message was dropped");
    }
}

impl ReconnectingDriver {
    pub async fn connect(client: redis::Client) -> Result<Self, redis::RedisError> {
        let routes: Routes = Arc::default();
        let push_routes = routes.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |msg: PushInfo| {
                route(msg, &push_routes);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            // Keep trying (capped back-off) rather than giving up after a few tries.
            .set_number_of_retries(usize::MAX)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(ReconnectingDriver {
            conn,
            routes,
            up: Arc::new(AtomicBool::new(true)),
        })
    }

    /// The flag behind [`Self::is_up`], for others that should not wait on a
    /// Redis known to be down.
    pub fn up_flag(&self) -> Arc<AtomicBool> {
        self.up.clone()
    }

    /// Whether Redis answered the last publish or probe.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Marks Redis down (logging once per episode) and probes it until it
    /// answers again.
    fn went_down(&self, why: &dyn std::fmt::Display) {
        if !self.up.swap(false, Ordering::SeqCst) {
            return; // already down: a probe is running
        }
        tracing::error!("redis unreachable ({why}); serving local clients only until it is back");
        let (conn, up) = (self.conn.clone(), self.up.clone());
        let down_since = tokio::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let mut c = conn.clone();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut c);
                if let Ok(Ok(_)) = tokio::time::timeout(PUBLISH_TIMEOUT, ping).await {
                    up.store(true, Ordering::SeqCst);
                    tracing::info!("redis is back after {:?}", down_since.elapsed());
                    return;
                }
            }
        });
    }

    /// Runs a Redis call unless Redis is down, bounded by [`PUBLISH_TIMEOUT`].
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DriverError> {
        if !self.is_up() {
            return Err(DriverError::Down);
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.went_down(&e);
                Err(e.into())
            }
            Err(_) => {
                self.went_down(&"timeout");
                Err(DriverError::Timeout(PUBLISH_TIMEOUT))
            }
        }
    }

    /// A clone of the connection, for the presence registry and health checks.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

impl Driver for ReconnectingDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), DriverError> {
        let mut conn = self.conn.clone();
        self.guarded(conn.publish::<_, _, redis::Value>(chan, val))
            .await
            .map(|_| ())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, DriverError> {
        let (tx, rx) = mpsc::channel(size);
        if let Ok(mut routes) = self.routes.write() {
            routes.insert(chan.clone(), tx);
        }
        self.conn.clone().subscribe(chan.as_str()).await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), DriverError> {
        if let Ok(mut routes) = self.routes.write() {
            routes.remove(&chan);
        }
        self.conn.clone().unsubscribe(chan.as_str()).await?;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, DriverError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(chan);
        let (_, count): (String, u16) = self.guarded(cmd.query_async(&mut conn)).await?;
        Ok(count)
    }
}
