//! switchboard: a Socket.IO realtime server (chat rooms, acks, presence,
//! history) built on socketioxide inside axum.
//!
//! [`Switchboard::build`] gives an axum [`Router`] to serve or to merge into
//! an application of your own.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod documents;
pub mod edge;
pub mod feeds;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod names;
pub mod plain;
pub mod presence;
pub mod realtime;
pub mod recovery;
pub mod store;
pub mod webhooks;
pub mod yjs;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use socketioxide::SocketIo;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use auth::{Identity, TokenSpec, Verifier, mint_hs256};
pub use cluster::IoHandle;
pub use config::{Config, ConfigError};
pub use hub::{Audience, Hub, HubError};
use realtime::Ctx;
pub use store::{MemoryStore, MessageStore, SqlStore};

/// Websocket read buffer per connection, in bytes: kept for the life of an
/// idle connection, and the most one read takes from the socket. Chat frames
/// fit; a larger frame grows the buffer and takes one read per 256 bytes.
/// 1 KiB cost 0.6 KiB more per idle connection (docs/performance.md).
pub const WS_READ_BUFFER: usize = 256;

/// A built server: the router to serve (or merge into your own), the Hub for
/// backend code, and the Socket.IO handle.
pub struct Switchboard {
    pub router: Router,
    pub hub: Hub,
    pub io: IoHandle,
    pub ctx: Arc<Ctx>,
    /// Every connection accepted by [`edge::serve::serve`]; pass it there.
    pub connections: Arc<edge::guarded_io::Connections>,
}

/// Choices made at start that are not plain configuration.
#[derive(Default)]
pub struct BuildOptions {
    /// A message store to use instead of the one `--database-url` names.
    pub store: Option<Arc<dyn MessageStore>>,
    /// A document store to go with it (in memory when `store` is given
    /// without one).
    pub docs: Option<Arc<dyn documents::store::DocStore>>,
    /// The HS256 secret to use in dev mode (no JWT key configured).
    pub dev_secret: Option<String>,
    /// The API key to use when none is configured (dev mode prints one).
    pub dev_api_key: Option<String>,
    /// Hooks implemented in Rust, instead of the `--*-hook-url` ones.
    pub hooks: Option<Arc<dyn hooks::Hooks>>,
}

impl Switchboard {
    /// Validates `config`, opens (and migrates) the store, and assembles the server.
    pub async fn build(config: Config, opts: BuildOptions) -> Result<Switchboard, ConfigError> {
        config.validate()?;
        let verifier = Verifier::from_config(&config, opts.dev_secret.as_deref())?;
        if let Some(jwks) = verifier.jwks_source() {
            // A provider that is down at start is retried on the schedule
            // and on the first token; until then connections are refused.
            match jwks.refresh().await {
                Ok(n) => tracing::info!("JWKS: {n} keys"),
                Err(e) => tracing::warn!("JWKS not fetched yet: {e}"),
            }
            tokio::spawn(jwks.clone().run());
        }
        let (store, doc_store) = match opts.store {
            Some(s) => (
                s.clone(),
                opts.docs
                    .unwrap_or_else(|| Arc::new(documents::store::MemoryDocs::with_outbox(s))),
            ),
            None => documents::open_both(&config.store_url()?)
                .await
                .map_err(|e| ConfigError::Store(e.to_string()))?,
        };
        let ydocs = Arc::new(yjs::YDocs::new(
            doc_store.clone(),
            yjs::YLimits {
                max_update_bytes: config.yjs_max_update_bytes,
                max_awareness_bytes: config.yjs_max_awareness_bytes,
                max_doc_bytes: config.yjs_max_doc_bytes,
                max_memory_bytes: config.yjs_max_memory_bytes,
                unload_grace: std::time::Duration::from_millis(config.yjs_unload_grace_ms),
            },
        ));
        let docs = Arc::new(
            documents::Docs::new(doc_store, config.max_doc_bytes, config.max_doc_memory_bytes)
                .with_user_limits(documents::UserLimits::new(
                    config.doc_joins_per_sec,
                    config.doc_join_burst,
                    config.doc_creations_per_min,
                )),
        );
        // With a Redis URL, connect first: a node that cannot reach Redis at
        // start says so rather than running alone by mistake.
        let redis = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(cluster::resp3_url(url))
                    .map_err(|e| ConfigError::Redis(e.to_string()))?;
                let driver = cluster::ReconnectingDriver::connect(client.clone())
                    .await
                    .map_err(|e| ConfigError::Redis(e.to_string()))?;
                Some((client, driver))
            }
            None => None,
        };
        let driver = redis.as_ref().map(|(_, d)| d.clone());
        let frames = Arc::new(recovery::frames::Frames::default());
        let recovery = recovery::Recovery::start(&config, store.clone(), frames.clone());
        let connections: Arc<edge::guarded_io::Connections> = Default::default();
        if recovery.is_some() {
            let _ = connections.frames.set(frames.clone());
        }
        let webhooks = webhooks::Webhooks::start(&config, store.clone());
        if webhooks
            .as_ref()
            .is_some_and(|w| w.wants("document.changed"))
        {
            docs.report_changes(config.webhook_doc_debounce_ms);
        }
        let ctx = Arc::new(Ctx {
            verifier,
            store,
            docs: docs.clone(),
            ydocs,
            presence: presence::Presence::new(),
            online: presence::Presence::new(),
            typing: Default::default(),
            feeds: Default::default(),
            redis: driver.as_ref().map(|d| d.connection()),
            cluster: driver.as_ref().map(|d| {
                presence::cluster::ClusterPresence::new(
                    d.connection(),
                    d.up_flag(),
                    &config.redis_prefix,
                )
            }),
            connections,
            recovery: recovery.clone(),
            webhooks,
            hooks: opts.hooks.clone().or_else(|| {
                hooks::http::HttpHooks::new(hooks::http::HttpHooksConfig {
                    join_url: config.join_hook_url.clone(),
                    publish_url: config.publish_hook_url.clone(),
                    rpc_url: config.rpc_hook_url.clone(),
                    rpc_prefix: config.rpc_prefix.clone(),
                    timeout: std::time::Duration::from_millis(config.hook_timeout_ms),
                    join_cache: std::time::Duration::from_secs(config.join_hook_cache_secs),
                    join_fail_open: config.join_hook_fail_open,
                    publish_fail_open: config.publish_hook_fail_open,
                    secret: config.webhook_secret.clone(),
                })
                .map(|h| Arc::new(h) as Arc<dyn hooks::Hooks>)
            }),
            namespaces: realtime::namespaces::DynNamespaces::new(&namespace_patterns(&config)),
            limits: realtime::limits::Limits::new(&config),
            expiries: realtime::expiry::Expiries::new(config.auth_expiry_warning_secs),
            delivery_order: Default::default(),
            admin: realtime::admin::Admin::new(&config),
            user_conns: realtime::user_conns::UserConns::new(config.max_connections_per_user),
            config: config.clone(),
        });
        let builder = SocketIo::builder()
            .ping_interval(config.ping_interval())
            .ping_timeout(config.ping_timeout())
            .max_payload(config.max_payload_bytes)
            // One limit for both transports: engineioxide's websocket defaults
            // (64 MiB messages, 16 MiB frames) would buffer that much per
            // connection before anyone logs in. The accept loop refuses such
            // frames from their header already; this is the second line.
            .ws_max_message_size(config.max_payload_bytes as usize)
            .ws_max_frame_size(config.max_payload_bytes as usize)
            // A session that has not joined a namespace in time is closed.
            .connect_timeout(std::time::Duration::from_millis(config.connect_timeout_ms))
            // socketioxide drops packets (acks included) once a socket has
            // this many waiting; the socket is then disconnected as a slow
            // consumer (realtime::slow). tokio's channel allocates its first
            // block of 32 slots up front whatever the bound and further
            // blocks as it fills: a large bound is free.
            .max_buffer_size(config.max_queued_packets)
            // engineioxide reserves this much per websocket up front (4 KiB by
            // default); see WS_READ_BUFFER.
            .ws_read_buffer_size(WS_READ_BUFFER)
            .with_state(ctx.clone());
        // One server speaks one parser, as in Node: a client must use the
        // same one (`socket.io-msgpack-parser` for msgpack).
        let builder = match config.parser {
            config::WireParser::Json => builder.with_parser(socketioxide::ParserConfig::common()),
            config::WireParser::Msgpack => {
                builder.with_parser(socketioxide::ParserConfig::msgpack())
            }
        };
        // The adapter is chosen once, here; everything after is generic.
        let (io, socketio_layer, open_plain): (
            IoHandle,
            Box<dyn FnOnce(Router) -> Router>,
            plain::bridge::Open,
        ) = match driver {
            None => {
                let (layer, io) = builder.build_layer();
                let open_plain = open_plain(&layer);
                realtime::register(&io, &config)
                    .map_err(|e| ConfigError::Namespace(e.to_string()))?;
                if let Some(admin) = &ctx.admin {
                    realtime::admin::start(&io, admin, &ctx);
                }
                (
                    IoHandle::Local(io),
                    Box::new(move |r: Router| r.layer(layer)),
                    open_plain,
                )
            }
            Some(driver) => {
                let adapter_config = socketioxide_redis::RedisAdapterConfig::new()
                    .with_prefix(format!("{}:sio", config.redis_prefix));
                let ctr =
                    socketioxide_redis::RedisAdapterCtr::new_with_driver(driver, adapter_config);
                let (layer, io) = builder
                    .with_adapter::<cluster::ClusterAdapter>(ctr)
                    .build_layer();
                let open_plain = open_plain(&layer);
                cluster::register(&io, &config)
                    .await
                    .map_err(ConfigError::Redis)?;
                if let Some(admin) = &ctx.admin {
                    realtime::admin::start(&io, admin, &ctx);
                }
                (
                    IoHandle::Cluster(io),
                    Box::new(move |r: Router| r.layer(layer)),
                    open_plain,
                )
            }
        };
        if let (Some((client, driver)), Some(cluster)) = (&redis, &ctx.cluster) {
            tokio::spawn(cluster::heartbeat::run(ctx.clone(), io.clone()));
            let relay = cluster::feeds::start(
                ctx.feeds.clone(),
                client.clone(),
                driver.clone(),
                &config.redis_prefix,
                cluster.node_id.clone(),
                config.max_redis_queue_bytes,
            );
            ctx.feeds.relay_to(Box::new(relay));
            if config.yjs_socketio() || config.yjs_websocket() {
                let relay = cluster::yjs_relay::start(
                    client.clone(),
                    driver.clone(),
                    &config.redis_prefix,
                    cluster.node_id.clone(),
                    config.max_redis_queue_bytes,
                    on_io!(&io, io => realtime::yjs::from_other_nodes(
                        io.clone(),
                        ctx.clone(),
                        config.max_redis_queue_bytes,
                    )),
                );
                ctx.ydocs.relay_to(Box::new(relay));
                on_io!(&io, io => {
                    tokio::spawn(realtime::yjs::expire_remote_awareness(io.clone(), ctx.clone()));
                });
            }
            cluster::emitter::start(
                io.clone(),
                client.clone(),
                config.emitter_key.clone(),
                config.namespaces.clone(),
            );
        }
        let hub = Hub::new(io.clone(), ctx.clone());
        let key = match config.api_key.clone().or(opts.dev_api_key) {
            Some(k) => http::ApiKey::Key(k),
            None => http::ApiKey::Disabled,
        };
        // Only for a server that is in dev mode and listens on loopback: the
        // route gives a token to anyone who can reach it.
        let loopback = config.listen_addr().is_ok_and(|a| a.ip().is_loopback());
        let dev_token_secret = opts.dev_secret.filter(|_| config.dev_mode() && loopback);
        let plain = config.plain_websocket().then(|| http::plain_ws::Plain {
            open: open_plain,
            settings: plain::bridge::Settings {
                ping_interval: Duration::from_millis(config.ping_interval_ms),
                ping_timeout: Duration::from_millis(config.ping_timeout_ms),
                connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                events_per_sec: config.events_per_sec,
                event_burst: config.event_burst,
                max_rate_refusals: config.max_rate_refusals,
                read_buffer: WS_READ_BUFFER,
                translations: Default::default(),
            },
            max_message: config.max_payload_bytes as usize,
        });
        // The Admin UI shows each socket's handshake headers; nothing else
        // reads more than the token and the client's address.
        let keep_request = if ctx.admin.is_some() {
            edge::detach::Keep::All
        } else {
            edge::detach::Keep::Used
        };
        let router = socketio_layer(http::routes(hub.clone(), key, dev_token_secret, plain))
            .layer(axum::middleware::map_response(http::json_payload_too_large))
            .layer(axum::middleware::from_fn_with_state(
                http::PollingRules {
                    max: config.max_payload_bytes as usize,
                    msgpack: config.parser == config::WireParser::Msgpack,
                },
                http::rewrite_polling_names,
            ))
            .layer(tower::util::MapRequestLayer::new(move |req| {
                edge::detach::detach_request(req, keep_request)
            }))
            .layer(cors(&config));
        let router = match &recovery {
            Some(_) => router.layer(axum::middleware::from_fn_with_state(
                frames.clone(),
                http::recovery_polling,
            )),
            None => router,
        };
        let router = match &config.static_dir {
            Some(dir) => http::static_files::serve_beside(router, dir),
            None => router,
        };
        let router = match (&config.admin_ui_dir, config.admin_ui) {
            (Some(dir), true) => http::static_files::serve_admin_ui(router, dir),
            _ => router,
        };
        tokio::spawn(realtime::slow::watch_stalls(ctx.clone()));
        tokio::spawn(realtime::limits::forget_idle_users(ctx.clone()));
        tokio::spawn(documents::evict_idle(docs));
        Ok(Switchboard {
            router,
            hub,
            io,
            connections: ctx.connections.clone(),
            ctx,
        })
    }
}

/// The configured namespaces, and the Yjs one when it is served: the
/// patterns among them have children removed when empty.
/// How a plain client's bridge opens its socket: a second Engine.IO
/// service over the same Socket.IO server (rooms, namespaces, adapter),
/// handed one end of an in-memory stream as an upgraded websocket.
fn open_plain<A: socketioxide::adapter::Adapter>(
    layer: &socketioxide::layer::SocketIoLayer<A>,
) -> plain::bridge::Open {
    use tower::Layer;
    let svc = layer.layer(());
    Arc::new(move |stream, req| {
        hyper::service::Service::call(&svc, (stream, req))
            .into_inner()
            .is_ok()
    })
}

fn namespace_patterns(config: &Config) -> Vec<String> {
    let mut all = config.namespaces.clone();
    if config.yjs_socketio() {
        all.push(realtime::yjs::NAMESPACE.to_string());
    }
    all
}

/// Keeps every socket for connection state recovery as it stands (a
/// graceful shutdown calls this before closing the transports).
pub fn keep_sessions_for_recovery(io: &IoHandle) {
    on_io!(io, io => {
        for ns in io.nsps() {
            for s in ns.sockets() {
                realtime::recover::keep_now(&s);
            }
        }
    })
}

/// Configured origins with credentials; any origin in dev mode; otherwise none.
fn cors(config: &Config) -> CorsLayer {
    let methods = [axum::http::Method::GET, axum::http::Method::POST];
    if config.dev_mode() && config.cors_origins.is_empty() {
        return CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_credentials(true)
            .allow_methods(methods)
            .allow_headers(AllowHeaders::mirror_request());
    }
    let origins: Vec<_> = config
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods(methods)
        .allow_headers(AllowHeaders::mirror_request())
}
