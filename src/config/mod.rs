//! Configuration: one struct, parsed by clap from flags or `SWITCHBOARD_*`
//! environment variables, validated once at start.

pub mod file;
pub mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// The command line of the `switchboard` binary.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "A Socket.IO realtime server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
    /// A TOML file with the same keys as the flags (`max-payload-bytes = 2000000`);
    /// environment variables and flags override it.
    #[arg(long = "config", env = "SWITCHBOARD_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Log lines as human-readable text or as JSON objects (for log collectors).
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an HS256 JWT that the server accepts (for development and scripts).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The shared HS256 secret (at least 32 bytes).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// The display name (`name` claim); defaults to `sub`.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime of the token in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// Room patterns the user may join (`*` suffix wildcard); repeatable.
    #[arg(long = "room")]
    pub rooms: Vec<String>,
    /// The tenant (namespace without its slash) the token is limited to.
    #[arg(long)]
    pub tenant: Option<String>,
    /// The `iss` claim to put in the token (what the server's
    /// `--jwt-issuer` requires, if set).
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// The `aud` claim to put in the token (what the server's
    /// `--jwt-audience` requires, if set).
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublicKeyAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

/// Server configuration. Every flag is also an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// HS256 shared secret (at least 32 bytes). Without any JWT key the server runs in dev mode.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256 / ES256 / EdDSA tokens.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_PUBLIC_KEY",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS URL of an identity provider (Auth0, Keycloak, Cognito, ...):
    /// tokens are checked with its keys, picked by `kid` (RS*, PS*, ES256,
    /// ES384, EdDSA).
    #[arg(
        long,
        env = "SWITCHBOARD_JWKS_URL",
        conflicts_with_all = ["jwt_secret", "jwt_public_key"]
    )]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again, in seconds.
    #[arg(long, env = "SWITCHBOARD_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches caused by tokens with a `kid` the
    /// cache does not know, in seconds.
    #[arg(long, env = "SWITCHBOARD_JWKS_MIN_REFRESH_SECS", default_value_t = 10)]
    pub jwks_min_refresh_secs: u64,
    /// Asked before each `room:join`: `POST { namespace, userId, roomId }`
    /// answers `{ allow, code?, message? }` (docs/http-api.md, "Hooks").
    #[arg(long, env = "SWITCHBOARD_JOIN_HOOK_URL")]
    pub join_hook_url: Option<String>,
    /// Asked before a `chat:send` or `private:send` is stored: `{ allow }`,
    /// `{ allow: true, content }` (replaced) or a refusal with a code.
    #[arg(long, env = "SWITCHBOARD_PUBLISH_HOOK_URL")]
    pub publish_hook_url: Option<String>,
    /// Answers client events named `--rpc-prefix…`: `{ result }` or `{ error }`.
    #[arg(long, env = "SWITCHBOARD_RPC_HOOK_URL")]
    pub rpc_hook_url: Option<String>,
    /// Client events with this prefix go to --rpc-hook-url.
    #[arg(long, env = "SWITCHBOARD_RPC_PREFIX", default_value = "rpc:")]
    pub rpc_prefix: String,
    /// How long a hook may take to answer, in milliseconds.
    #[arg(long, env = "SWITCHBOARD_HOOK_TIMEOUT_MS", default_value_t = 2000)]
    pub hook_timeout_ms: u64,
    /// How long a join hook's answer is reused for that user and room, in
    /// seconds (0: asked every time).
    #[arg(long, env = "SWITCHBOARD_JOIN_HOOK_CACHE_SECS", default_value_t = 30)]
    pub join_hook_cache_secs: u64,
    /// Allow joins when the join hook gives no answer (default: refuse).
    #[arg(long, env = "SWITCHBOARD_JOIN_HOOK_FAIL_OPEN")]
    pub join_hook_fail_open: bool,
    /// Store messages as they are when the publish hook gives no answer
    /// (default: refuse).
    #[arg(long, env = "SWITCHBOARD_PUBLISH_HOOK_FAIL_OPEN")]
    pub publish_hook_fail_open: bool,
    /// Where webhook events go: signed POSTs of `{ events: [...] }` from a
    /// durable outbox (docs/http-api.md, "Webhooks").
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Which event types to send, comma-separated (default: all).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_EVENTS")]
    pub webhook_events: Option<String>,
    /// How long the backend may take to answer a webhook POST, in ms.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_TIMEOUT_MS", default_value_t = 5000)]
    pub webhook_timeout_ms: u64,
    /// Most events in one webhook POST.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_BATCH", default_value_t = 100)]
    pub webhook_batch: usize,
    /// Most events kept waiting; beyond it the oldest are dropped (counted).
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_MAX_OUTBOX",
        default_value_t = 100_000
    )]
    pub webhook_max_outbox: u64,
    /// Events older than this (seconds) are dropped (counted).
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_MAX_AGE_SECS",
        default_value_t = 86_400
    )]
    pub webhook_max_age_secs: u64,
    /// Do not serve Yjs documents to the y-socket.io provider (namespaces
    /// `/yjs|<doc>`; docs/protocol.md §18).
    #[arg(long, env = "SWITCHBOARD_NO_YJS_SOCKETIO")]
    pub no_yjs_socketio: bool,
    /// Do not serve Yjs documents to the y-websocket provider (websockets
    /// at `/yjs/<doc>`; docs/protocol.md §18).
    #[arg(long, env = "SWITCHBOARD_NO_YJS_WEBSOCKET")]
    pub no_yjs_websocket: bool,
    /// Do not serve plain WebSocket clients (the JSON protocol at `/ws`;
    /// docs/protocol.md §19). With `--parser msgpack` it is off.
    #[arg(long, env = "SWITCHBOARD_NO_PLAIN_WEBSOCKET")]
    pub no_plain_websocket: bool,
    /// Largest Yjs update a client may send, in bytes.
    #[arg(
        long,
        env = "SWITCHBOARD_YJS_MAX_UPDATE_BYTES",
        default_value_t = 1_048_576
    )]
    pub yjs_max_update_bytes: usize,
    /// Largest Yjs awareness update a client may send, in bytes.
    #[arg(
        long,
        env = "SWITCHBOARD_YJS_MAX_AWARENESS_BYTES",
        default_value_t = 65_536
    )]
    pub yjs_max_awareness_bytes: usize,
    /// Largest Yjs document (its snapshot and updates since), in bytes.
    #[arg(
        long,
        env = "SWITCHBOARD_YJS_MAX_DOC_BYTES",
        default_value_t = 16_777_216
    )]
    pub yjs_max_doc_bytes: usize,
    /// Most bytes the loaded Yjs documents of a node may take together.
    #[arg(
        long,
        env = "SWITCHBOARD_YJS_MAX_MEMORY_BYTES",
        default_value_t = 268_435_456
    )]
    pub yjs_max_memory_bytes: usize,
    /// How long (ms) a Yjs document stays loaded after its last client
    /// left, unless memory is needed (0: unloaded at once).
    #[arg(
        long,
        env = "SWITCHBOARD_YJS_UNLOAD_GRACE_MS",
        default_value_t = 30_000
    )]
    pub yjs_unload_grace_ms: u64,
    /// A document's `document.changed` is sent this long (ms) after the
    /// first edit it reports; edits meanwhile fold into it (latest version).
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_DOC_DEBOUNCE_MS",
        default_value_t = 2000
    )]
    pub webhook_doc_debounce_ms: u64,
    /// Signs hook calls (and webhooks): `X-Switchboard-Signature:
    /// t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Algorithm of --jwt-public-key.
    #[arg(long, env = "SWITCHBOARD_JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<PublicKeyAlgorithm>,
    /// Required `iss` claim.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Key for the backend HTTP API (`Authorization: Bearer <key>`).
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allowed CORS origin; repeatable. Dev mode allows any origin.
    #[arg(
        long = "cors-origin",
        env = "SWITCHBOARD_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Engine.IO heartbeat: how often the server pings each connection.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// Engine.IO heartbeat: how long a connection may take to answer a ping
    /// before it is closed.
    #[arg(long, env = "SWITCHBOARD_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Largest Engine.IO packet accepted, in bytes (Node's maxHttpBufferSize).
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_PAYLOAD_BYTES",
        default_value_t = 1_000_000
    )]
    pub max_payload_bytes: u64,
    /// Longest chat message content, in characters.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_CHARS", default_value_t = 4000)]
    pub max_message_chars: usize,
    /// Message store: `sqlite://PATH` (default `sqlite://./switchboard.db`), `postgres://...`, or `memory`.
    #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Redis URL (e.g. `redis://127.0.0.1:6379`): run as one of several nodes
    /// sharing rooms, broadcasts, acks and presence. Without it: a single node.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "switchboard")]
    pub redis_prefix: String,
    /// The `key` of `@socket.io/redis-emitter` publishers whose emits, joins,
    /// leaves and disconnects every node applies to its own sockets (only
    /// with `--redis-url`).
    #[arg(long, env = "SWITCHBOARD_EMITTER_KEY", default_value = "socket.io")]
    pub emitter_key: String,
    /// Most bytes of events one node holds waiting to be published to Redis
    /// (SSE feed events for other nodes); past it, and while Redis is
    /// unreachable, they are dropped and counted, and the backend emit that
    /// made them answers 503 `cluster_unavailable`.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_REDIS_QUEUE_BYTES",
        default_value_t = 8_388_608
    )]
    pub max_redis_queue_bytes: usize,
    /// Seconds between SSE heartbeat comments on `/events`.
    #[arg(long, env = "SWITCHBOARD_SSE_HEARTBEAT_SECS", default_value_t = 30)]
    pub sse_heartbeat_secs: u64,
    /// Longest a graceful shutdown (SIGTERM/SIGINT) may take, in seconds.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Tenant namespace such as `/acme`; repeatable. `{name}` segments make a pattern (`/t-{tenant}`).
    #[arg(
        long = "namespace",
        env = "SWITCHBOARD_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// A directory of files (such as the demo page in examples/web) served at
    /// `/`, beside the server's own routes, which no file can shadow.
    #[arg(long, env = "SWITCHBOARD_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    // --- Limits (docs/configuration.md, "Limits and abuse"). 0 means "no limit" where noted. ---
    /// Longest time a client may take to send a request's headers, and most
    /// time an idle keep-alive connection is kept, in milliseconds.
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Longest time a request body may take to arrive, from the end of its
    /// headers, in milliseconds; past it: 408 and the connection is closed.
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Slowest average pace of a request body once it has taken 5 s, in
    /// bytes per second (0: no minimum); slower: 408 and the connection is
    /// closed.
    #[arg(
        long,
        env = "SWITCHBOARD_MIN_BODY_BYTES_PER_SEC",
        default_value_t = 1000
    )]
    pub min_body_bytes_per_sec: u64,
    /// Longest time from the Engine.IO handshake to a successful Socket.IO
    /// CONNECT; a session without one is closed, in milliseconds.
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Most open TCP connections; 0: the open-file limit less 64.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Most open TCP connections from one address (0: no limit).
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1000
    )]
    pub max_connections_per_ip: usize,
    /// Most Socket.IO connections (one per namespace) one user may hold on
    /// this node at once (0: no limit); past it: `connect_error`.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_USER",
        default_value_t = 100
    )]
    pub max_connections_per_user: usize,
    /// A proxy whose `X-Forwarded-For` is believed (exact address); repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "SWITCHBOARD_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Packets that may wait for one socket's transport; past it the socket
    /// is disconnected as a slow consumer.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_PACKETS", default_value_t = 8192)]
    pub max_queued_packets: usize,
    /// A websocket that cannot write (its client stopped reading) for this
    /// long is disconnected as a slow consumer, in milliseconds.
    #[arg(
        long,
        env = "SWITCHBOARD_WRITE_STALL_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub write_stall_timeout_ms: u64,
    /// Chat and private messages per second per user (on this node), sustained.
    #[arg(long, env = "SWITCHBOARD_MESSAGES_PER_SEC", default_value_t = 20)]
    pub messages_per_sec: u32,
    /// Messages a user may send at once above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_MESSAGE_BURST", default_value_t = 60)]
    pub message_burst: u32,
    /// Chat and private messages per second from one client address (all
    /// its users and sockets on this node), sustained; 0: no such limit.
    /// Behind `--trusted-proxy` the forwarded address counts.
    #[arg(
        long,
        env = "SWITCHBOARD_ADDRESS_MESSAGES_PER_SEC",
        default_value_t = 200
    )]
    pub address_messages_per_sec: u32,
    /// Messages one address may send at once above its sustained rate.
    #[arg(
        long,
        env = "SWITCHBOARD_ADDRESS_MESSAGE_BURST",
        default_value_t = 1000
    )]
    pub address_message_burst: u32,
    /// Events of any kind per second per socket, sustained.
    #[arg(long, env = "SWITCHBOARD_EVENTS_PER_SEC", default_value_t = 100)]
    pub events_per_sec: u32,
    /// Events a socket may send at once above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_EVENT_BURST", default_value_t = 300)]
    pub event_burst: u32,
    /// Refusals for rate (rate_limited) within 10 s after which the socket is
    /// disconnected.
    #[arg(long, env = "SWITCHBOARD_MAX_RATE_REFUSALS", default_value_t = 100)]
    pub max_rate_refusals: u32,
    /// Rooms one socket may be in at once.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_SOCKET", default_value_t = 128)]
    pub max_rooms_per_socket: usize,
    /// Who `private:send` may write to: `any` (limited like every message)
    /// or `known` (online now, or an existing conversation with the sender).
    #[arg(
        long,
        env = "SWITCHBOARD_PRIVATE_RECIPIENTS",
        value_enum,
        default_value_t = PrivateRecipients::Any
    )]
    pub private_recipients: PrivateRecipients,
    /// Seconds before a token's `exp` at which the socket gets `auth:expiring`.
    #[arg(
        long,
        env = "SWITCHBOARD_AUTH_EXPIRY_WARNING_SECS",
        default_value_t = 30
    )]
    pub auth_expiry_warning_secs: u64,
    /// Largest collaborative document, in bytes of UTF-8 text; an op that
    /// would make it larger is refused with `too_large`.
    #[arg(long, env = "SWITCHBOARD_MAX_DOC_BYTES", default_value_t = 1_048_576)]
    pub max_doc_bytes: usize,
    /// Largest insert one document op may carry, in bytes of UTF-8.
    #[arg(long, env = "SWITCHBOARD_MAX_DOC_OP_BYTES", default_value_t = 65_536)]
    pub max_doc_op_bytes: usize,
    /// Memory the documents held on this node may take (text and kept ops);
    /// beyond it idle ones are dropped early, then edits and joins get
    /// `unavailable`.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_DOC_MEMORY_BYTES",
        default_value_t = 1_073_741_824
    )]
    pub max_doc_memory_bytes: usize,
    /// `doc:join`s per user (all of its sockets on a node), sustained; each
    /// join sends the document's text.
    #[arg(long, env = "SWITCHBOARD_DOC_JOINS_PER_SEC", default_value_t = 2)]
    pub doc_joins_per_sec: u32,
    /// `doc:join`s per user in a burst.
    #[arg(long, env = "SWITCHBOARD_DOC_JOIN_BURST", default_value_t = 20)]
    pub doc_join_burst: u32,
    /// New documents (a first op on a document never edited) per user per
    /// minute, from clients; each new document keeps up to 1,000 ops.
    #[arg(long, env = "SWITCHBOARD_DOC_CREATIONS_PER_MIN", default_value_t = 30)]
    pub doc_creations_per_min: u32,
    /// How long a socket that lost its transport can be recovered, in
    /// seconds (socket.io-client's `socket.recovered`); 0 turns recovery
    /// off. See docs/protocol.md, "Reconnecting".
    #[arg(long, env = "SWITCHBOARD_RECOVERY_WINDOW", default_value_t = 120)]
    pub recovery_window: u64,
    /// Recoverable sessions kept per user (per namespace); beyond it the
    /// oldest goes.
    #[arg(
        long,
        env = "SWITCHBOARD_RECOVERY_SESSIONS_PER_USER",
        default_value_t = 8
    )]
    pub recovery_sessions_per_user: usize,
    /// Recoverable sessions kept in all; past it a dropping socket is not
    /// kept (counted).
    #[arg(
        long,
        env = "SWITCHBOARD_RECOVERY_MAX_SESSIONS",
        default_value_t = 100_000
    )]
    pub recovery_max_sessions: u64,
    /// Most messages replayed per room; a client that missed more is not
    /// recovered (it pages `chat:history { after }`).
    #[arg(long, env = "SWITCHBOARD_RECOVERY_MAX_REPLAY", default_value_t = 1000)]
    pub recovery_max_replay: usize,
    /// The Socket.IO packet encoding: `json` (the default parser) or
    /// `msgpack` (clients with `socket.io-msgpack-parser`). One server
    /// speaks one parser.
    #[arg(
        long,
        env = "SWITCHBOARD_PARSER",
        value_enum,
        default_value_t = WireParser::Json
    )]
    pub parser: WireParser,
    /// Serve the `@socket.io/admin-ui` 0.5 protocol on the `/admin` namespace
    /// (off by default). Outside dev mode it needs --admin-username and
    /// --admin-password-hash.
    #[arg(long, env = "SWITCHBOARD_ADMIN_UI")]
    pub admin_ui: bool,
    /// The Admin UI login name.
    #[arg(long, env = "SWITCHBOARD_ADMIN_USERNAME")]
    pub admin_username: Option<String>,
    /// bcrypt hash of the Admin UI password (`$2a$`/`$2b$`/`$2y$`, as the
    /// Node `instrument()` takes it).
    #[arg(long, env = "SWITCHBOARD_ADMIN_PASSWORD_HASH", hide_env_values = true)]
    pub admin_password_hash: Option<String>,
    /// `development` (the default, as in Node) lists every socket and sends
    /// their lifecycle events to the UI; `production` sends server stats only.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_UI_MODE",
        value_enum,
        default_value_t = AdminUiMode::Development
    )]
    pub admin_ui_mode: AdminUiMode,
    /// The UI bundle (`node_modules/@socket.io/admin-ui/ui/dist`), served at
    /// `/admin-ui/` when --admin-ui is on.
    #[arg(long, env = "SWITCHBOARD_ADMIN_UI_DIR")]
    pub admin_ui_dir: Option<PathBuf>,
    /// Failed Admin UI logins from one address (IPv6: its /64) after which
    /// it must wait before the next try (0: no backoff).
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_LOGIN_MAX_FAILURES",
        default_value_t = 5
    )]
    pub admin_login_max_failures: u32,
    /// The first such wait, in milliseconds; it doubles with every further
    /// failure.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_LOGIN_BACKOFF_MS",
        default_value_t = 1000
    )]
    pub admin_login_backoff_ms: u64,
    /// The longest such wait, in milliseconds; an address without a failure
    /// for twice this long starts afresh.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_LOGIN_BACKOFF_MAX_MS",
        default_value_t = 300_000
    )]
    pub admin_login_backoff_max_ms: u64,
    /// Admin UI password checks that may wait for one of the two that run at
    /// once; more logins are refused at once rather than queued.
    #[arg(long, env = "SWITCHBOARD_ADMIN_LOGIN_WAITING", default_value_t = 8)]
    pub admin_login_waiting: usize,
    /// Largest first argument of a client event shown to the Admin UI
    /// (`event_received`), in bytes of JSON; a larger one is replaced by a
    /// placeholder with its size.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_UI_MAX_EVENT_BYTES",
        default_value_t = 16_384
    )]
    pub admin_ui_max_event_bytes: usize,
    /// Bytes of lifecycle events that may wait for the Admin UI's namespace;
    /// more are dropped.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_UI_QUEUE_BYTES",
        default_value_t = 8_388_608
    )]
    pub admin_ui_queue_bytes: usize,
}

/// What the Admin UI is sent (see `--admin-ui-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdminUiMode {
    Development,
    Production,
}

/// The Socket.IO parser the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireParser {
    /// Socket.IO's default parser: JSON text packets.
    Json,
    /// MessagePack packets, as `socket.io-msgpack-parser` sends them.
    Msgpack,
}

/// Who `private:send` may write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrivateRecipients {
    /// Users online now, or with whom the sender already has a conversation.
    Known,
    /// Anyone (still limited like every message).
    Any,
}

/// Longest display name (`name` claim), in characters.
pub const MAX_NAME_CHARS: usize = 128;

impl Cli {
    /// The command line as `--help` shows it: each flag's environment
    /// variable by name only. clap would print its value (`[env:
    /// SWITCHBOARD_LISTEN=]` when unset, and a secret such as
    /// `SWITCHBOARD_JWT_SECRET` when set).
    pub fn command_line() -> clap::Command {
        fn hide_values(cmd: clap::Command) -> clap::Command {
            cmd.mut_args(|a| a.hide_env_values(true))
                .mut_subcommands(hide_values)
        }
        hide_values(Cli::command())
    }

    /// Parses the process's arguments (and environment), exiting with
    /// clap's message on an error or for `--help`.
    pub fn parse_args() -> Cli {
        let matches = Cli::command_line().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:3000".into(),
            jwt_secret: None,
            jwt_public_key: None,
            jwks_url: None,
            join_hook_url: None,
            publish_hook_url: None,
            rpc_hook_url: None,
            rpc_prefix: "rpc:".into(),
            hook_timeout_ms: 2000,
            join_hook_cache_secs: 30,
            join_hook_fail_open: false,
            publish_hook_fail_open: false,
            webhook_secret: None,
            webhook_url: None,
            webhook_events: None,
            webhook_timeout_ms: 5000,
            webhook_batch: 100,
            webhook_max_outbox: 100_000,
            webhook_max_age_secs: 86_400,
            webhook_doc_debounce_ms: 2000,
            no_yjs_socketio: false,
            no_yjs_websocket: false,
            no_plain_websocket: false,
            yjs_max_update_bytes: 1_048_576,
            yjs_max_awareness_bytes: 65_536,
            yjs_max_doc_bytes: 16_777_216,
            yjs_max_memory_bytes: 268_435_456,
            yjs_unload_grace_ms: 30_000,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            jwt_algorithm: None,
            jwt_issuer: None,
            jwt_audience: None,
            api_key: None,
            cors_origins: Vec::new(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload_bytes: 1_000_000,
            max_message_chars: 4000,
            namespaces: Vec::new(),
            static_dir: None,
            database_url: DEFAULT_DATABASE_URL.into(),
            sse_heartbeat_secs: 30,
            redis_url: None,
            redis_prefix: "switchboard".into(),
            emitter_key: "socket.io".into(),
            max_redis_queue_bytes: 8_388_608,
            shutdown_timeout_secs: 10,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            min_body_bytes_per_sec: 1000,
            connect_timeout_ms: 10_000,
            max_connections: 0,
            max_connections_per_ip: 1000,
            max_connections_per_user: 100,
            trusted_proxies: Vec::new(),
            max_queued_packets: 8192,
            write_stall_timeout_ms: 10_000,
            messages_per_sec: 20,
            address_messages_per_sec: 200,
            address_message_burst: 1000,
            message_burst: 60,
            events_per_sec: 100,
            event_burst: 300,
            max_rate_refusals: 100,
            max_rooms_per_socket: 128,
            private_recipients: PrivateRecipients::Any,
            auth_expiry_warning_secs: 30,
            max_doc_bytes: 1_048_576,
            max_doc_op_bytes: 65_536,
            max_doc_memory_bytes: 1_073_741_824,
            doc_joins_per_sec: 2,
            doc_join_burst: 20,
            doc_creations_per_min: 30,
            recovery_window: 120,
            recovery_sessions_per_user: 8,
            recovery_max_sessions: 100_000,
            recovery_max_replay: 1000,
            parser: WireParser::Json,
            admin_ui: false,
            admin_username: None,
            admin_password_hash: None,
            admin_ui_mode: AdminUiMode::Development,
            admin_ui_dir: None,
            admin_login_max_failures: 5,
            admin_login_backoff_ms: 1000,
            admin_login_backoff_max_ms: 300_000,
            admin_login_waiting: 8,
            admin_ui_max_event_bytes: 16_384,
            admin_ui_queue_bytes: 8_388_608,
        }
    }
}

/// The webhook event types (`--webhook-events`; see `webhooks`).
pub const WEBHOOK_TYPES: &[&str] = &[
    "message.created",
    "member.joined",
    "member.left",
    "user.online",
    "user.offline",
    "room.occupied",
    "room.vacated",
    "document.changed",
];

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./switchboard.db";

/// A configuration problem; the binary prints it on one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--listen: '{0}' is not a socket address such as 127.0.0.1:3000")]
    Listen(String),
    #[error("--jwt-secret must be at least 32 bytes (got {0})")]
    ShortSecret(usize),
    #[error("--jwt-public-key {path}: {reason}")]
    PublicKey { path: String, reason: String },
    #[error("--jwt-public-key needs --jwt-algorithm RS256|ES256|EdDSA")]
    MissingAlgorithm,
    #[error("--jwt-algorithm is only used with --jwt-public-key")]
    AlgorithmWithoutKey,
    #[error(
        "dev mode (no JWT key configured) only listens on a loopback address, not {0}; configure --jwt-secret or --jwt-public-key"
    )]
    DevModeNotLoopback(SocketAddr),
    #[error("--namespace '{0}' must start with '/' and not be '/'")]
    Namespace(String),
    #[error("--{0} '{1}' is not an http:// or https:// URL")]
    NotAUrl(&'static str, String),
    #[error(
        "--webhook-events: '{0}' is not an event type (message.created, member.joined, member.left)"
    )]
    WebhookEvent(String),
    #[error("--rpc-prefix must be 1-64 characters")]
    RpcPrefix,
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--cors-origin '{0}' is not an origin such as https://app.example.com")]
    CorsOrigin(String),
    #[error("--api-key must be at least 16 characters")]
    ShortApiKey,
    #[error("--database-url {0}")]
    DatabaseUrl(String),
    #[error("--database-url: {0}")]
    Store(String),
    #[error("--redis-url: {0}")]
    Redis(String),
    #[error("--static-dir {0}: not a directory this process can read")]
    StaticDir(String),
    #[error("--admin-ui needs --admin-username and --admin-password-hash outside dev mode")]
    AdminCredentials,
    #[error("--admin-password-hash is not a bcrypt hash ($2b$10$...)")]
    AdminHash,
    #[error("--namespace /admin is the Admin UI's namespace with --admin-ui")]
    AdminNamespace,
    #[error("--admin-ui-dir {0}: not a directory with an index.html")]
    AdminUiDir(String),
}

impl Config {
    /// Whether the y-socket.io provider is served (`--no-yjs-socketio`).
    pub fn yjs_socketio(&self) -> bool {
        !self.no_yjs_socketio
    }

    /// Whether the y-websocket provider is served (`--no-yjs-websocket`).
    pub fn yjs_websocket(&self) -> bool {
        !self.no_yjs_websocket
    }
    /// Whether plain WebSocket clients are served at `/ws`
    /// (`--no-plain-websocket`; the bridge speaks the JSON parser).
    pub fn plain_websocket(&self) -> bool {
        !self.no_plain_websocket && self.parser == WireParser::Json
    }

    /// Dev mode: no JWT key of any kind configured.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none() && self.jwt_public_key.is_none() && self.jwks_url.is_none()
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::Listen(self.listen.clone()))
    }

    pub fn store_url(&self) -> Result<crate::store::StoreUrl, ConfigError> {
        self.database_url.parse().map_err(ConfigError::DatabaseUrl)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    /// `--max-connections`, with 0 read as the open-file limit less 64 (the
    /// store, Redis and the logs need some files too).
    pub fn effective_max_connections(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
            return 0;
        }
        (lim.rlim_cur as usize).saturating_sub(64).max(1)
    }

    /// Checks everything that does not need I/O beyond reading the key file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if self.dev_mode() && !addr.ip().is_loopback() {
            return Err(ConfigError::DevModeNotLoopback(addr));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            return Err(ConfigError::ShortSecret(secret.len()));
        }
        for (url, flag) in [
            (&self.jwks_url, "jwks-url"),
            (&self.join_hook_url, "join-hook-url"),
            (&self.publish_hook_url, "publish-hook-url"),
            (&self.rpc_hook_url, "rpc-hook-url"),
            (&self.webhook_url, "webhook-url"),
        ] {
            if let Some(u) = url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(ConfigError::NotAUrl(flag, u.clone()));
            }
        }
        if let Some(list) = &self.webhook_events {
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !WEBHOOK_TYPES.contains(&t) {
                    return Err(ConfigError::WebhookEvent(t.to_string()));
                }
            }
        }
        if self.rpc_prefix.is_empty() || self.rpc_prefix.chars().count() > 64 {
            return Err(ConfigError::RpcPrefix);
        }
        match (&self.jwt_public_key, self.jwt_algorithm) {
            (Some(_), None) => return Err(ConfigError::MissingAlgorithm),
            (None, Some(_)) => return Err(ConfigError::AlgorithmWithoutKey),
            _ => {}
        }
        if let Some(key) = &self.api_key
            && key.len() < 16
        {
            return Err(ConfigError::ShortApiKey);
        }
        for origin in &self.cors_origins {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && origin.parse::<axum::http::HeaderValue>().is_ok()
                && !origin
                    .trim_end_matches('/')
                    .contains(|c: char| c.is_whitespace());
            if !valid {
                return Err(ConfigError::CorsOrigin(origin.clone()));
            }
        }
        for ns in &self.namespaces {
            if !ns.starts_with('/') || ns == "/" {
                return Err(ConfigError::Namespace(ns.clone()));
            }
        }
        self.store_url()?;
        // Checked here so that a typo stops the start instead of serving 404s.
        if let Some(dir) = &self.static_dir
            && std::fs::read_dir(dir).is_err()
        {
            return Err(ConfigError::StaticDir(dir.display().to_string()));
        }
        if self.admin_ui {
            match (&self.admin_username, &self.admin_password_hash) {
                (Some(_), Some(hash)) => {
                    if hash.parse::<bcrypt::HashParts>().is_err() {
                        return Err(ConfigError::AdminHash);
                    }
                }
                (None, None) if self.dev_mode() => {}
                _ => return Err(ConfigError::AdminCredentials),
            }
            if self.namespaces.iter().any(|ns| ns == "/admin") {
                return Err(ConfigError::AdminNamespace);
            }
            if let Some(dir) = &self.admin_ui_dir
                && !dir.join("index.html").is_file()
            {
                return Err(ConfigError::AdminUiDir(dir.display().to_string()));
            }
        }
        if self.ping_interval_ms == 0 {
            return Err(ConfigError::Zero("ping-interval-ms"));
        }
        if self.ping_timeout_ms == 0 {
            return Err(ConfigError::Zero("ping-timeout-ms"));
        }
        if self.max_payload_bytes == 0 {
            return Err(ConfigError::Zero("max-payload-bytes"));
        }
        if self.sse_heartbeat_secs == 0 {
            return Err(ConfigError::Zero("sse-heartbeat-secs"));
        }
        if self.max_message_chars == 0 {
            return Err(ConfigError::Zero("max-message-chars"));
        }
        for (value, name) in [
            (self.header_timeout_ms, "header-timeout-ms"),
            (self.body_timeout_ms, "body-timeout-ms"),
            (self.connect_timeout_ms, "connect-timeout-ms"),
            (self.write_stall_timeout_ms, "write-stall-timeout-ms"),
            (self.max_queued_packets as u64, "max-queued-packets"),
            (u64::from(self.messages_per_sec), "messages-per-sec"),
            (u64::from(self.message_burst), "message-burst"),
            (u64::from(self.events_per_sec), "events-per-sec"),
            (u64::from(self.event_burst), "event-burst"),
            (u64::from(self.max_rate_refusals), "max-rate-refusals"),
            (self.max_rooms_per_socket as u64, "max-rooms-per-socket"),
            (self.max_doc_bytes as u64, "max-doc-bytes"),
            (self.max_doc_op_bytes as u64, "max-doc-op-bytes"),
            (self.max_doc_memory_bytes as u64, "max-doc-memory-bytes"),
            (u64::from(self.doc_joins_per_sec), "doc-joins-per-sec"),
            (u64::from(self.doc_join_burst), "doc-join-burst"),
            (
                u64::from(self.doc_creations_per_min),
                "doc-creations-per-min",
            ),
            (self.max_redis_queue_bytes as u64, "max-redis-queue-bytes"),
            (self.jwks_refresh_secs, "jwks-refresh-secs"),
            (self.hook_timeout_ms, "hook-timeout-ms"),
            (self.webhook_timeout_ms, "webhook-timeout-ms"),
            (self.webhook_batch as u64, "webhook-batch"),
            (self.webhook_max_outbox, "webhook-max-outbox"),
            (self.webhook_max_age_secs, "webhook-max-age-secs"),
            (
                self.recovery_sessions_per_user as u64,
                "recovery-sessions-per-user",
            ),
            (self.recovery_max_sessions, "recovery-max-sessions"),
            (self.recovery_max_replay as u64, "recovery-max-replay"),
            (self.yjs_max_update_bytes as u64, "yjs-max-update-bytes"),
            (
                self.yjs_max_awareness_bytes as u64,
                "yjs-max-awareness-bytes",
            ),
            (self.yjs_max_doc_bytes as u64, "yjs-max-doc-bytes"),
            (self.yjs_max_memory_bytes as u64, "yjs-max-memory-bytes"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_dev_mode() {
        let c = Config::default();
        assert!(c.dev_mode());
        c.validate().unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let c = Config {
            listen: "nope".into(),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Listen(_))));
        let c = Config {
            jwt_secret: Some("short".into()),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::ShortSecret(5))));
        let c = Config {
            listen: "0.0.0.0:3000".into(),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DevModeNotLoopback(_))
        ));
        let c = Config {
            namespaces: vec!["acme".into()],
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Namespace(_))));
    }
}
