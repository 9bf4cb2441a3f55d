//! Running several nodes: the Redis adapter and its driver.

pub mod channel;
pub mod driver;
pub mod emitter;
pub mod feeds;
pub mod heartbeat;
pub mod yjs_relay;

pub use driver::ReconnectingDriver;

/// Something on its way to or from Redis was dropped rather than queued
/// without bound: `path` is where (`feeds`: SSE events for other nodes,
/// `adapter`: Socket.IO messages from other nodes), `reason` why
/// (`redis_down`, `queue_full`, `publish_failed`, `consumer_behind`).
pub fn dropped(path: &'static str, reason: &'static str) {
    metrics::counter!("switchboard_redis_dropped_total", "path" => path, "reason" => reason)
        .increment(1);
}

/// `url` with `protocol=resp3` added unless a protocol is given: pub/sub
/// messages arrive as RESP3 pushes on the shared connection.
pub fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// The Socket.IO adapter used with `--redis-url`.
pub type ClusterAdapter =
    socketioxide_redis::CustomRedisAdapter<socketioxide::adapter::Emitter, ReconnectingDriver>;

use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;

use crate::config::Config;
use crate::realtime;
use socketioxide::adapter::LocalAdapter;

/// The Socket.IO server, with the adapter chosen at start: in-memory for one
/// node, Redis for several. Code that emits is generic over the adapter and
/// is reached through [`on_io!`](crate::on_io).
#[derive(Clone)]
pub enum IoHandle {
    Local(SocketIo<LocalAdapter>),
    Cluster(SocketIo<ClusterAdapter>),
}

/// Runs `$body` with `$io` bound to the `SocketIo` of whichever adapter is in use.
#[macro_export]
macro_rules! on_io {
    ($handle:expr, $io:ident => $body:expr) => {
        match $handle {
            $crate::cluster::IoHandle::Local($io) => $body,
            $crate::cluster::IoHandle::Cluster($io) => $body,
        }
    };
}

impl IoHandle {
    /// Closes every transport (clients reconnect by themselves).
    pub async fn close(&self) {
        crate::on_io!(self, io => io.close().await)
    }
}

/// `realtime::register` with the Redis adapter, whose namespaces subscribe
/// to Redis as they are created.
pub async fn register(io: &SocketIo<ClusterAdapter>, config: &Config) -> Result<(), String> {
    let handler =
        || realtime::connected::<ClusterAdapter>.with(realtime::authenticate::<ClusterAdapter>);
    io.ns("/", handler()).await.map_err(|e| e.to_string())?;
    for ns in &config.namespaces {
        if ns.contains('{') {
            io.dyn_ns(ns.clone(), handler())
                .map_err(|e| e.to_string())?;
        } else {
            io.ns(ns.clone(), handler())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    if config.admin_ui {
        io.ns(
            realtime::admin::NAMESPACE,
            realtime::admin::connected::<ClusterAdapter>
                .with(realtime::admin::authenticate::<ClusterAdapter>),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    if config.yjs_socketio() {
        io.dyn_ns(
            realtime::yjs::NAMESPACE,
            realtime::yjs::connected::<ClusterAdapter>
                .with(realtime::yjs::authenticate::<ClusterAdapter>),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
