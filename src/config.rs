//! Configuration: one struct, parsed by clap from flags or `SWITCHBOARD_*`
//! environment variables, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command line of the `switchboard` binary.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "A Socket.IO realtime server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
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
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub issuer: Option<String>,
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
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:3000".into(),
            jwt_secret: None,
            jwt_public_key: None,
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
            database_url: DEFAULT_DATABASE_URL.into(),
            sse_heartbeat_secs: 30,
            redis_url: None,
            redis_prefix: "switchboard".into(),
            shutdown_timeout_secs: 10,
        }
    }
}

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
}

impl Config {
    /// Dev mode: no JWT key of any kind configured.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none() && self.jwt_public_key.is_none()
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
