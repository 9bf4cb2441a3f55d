//! The `switchboard` binary: parse configuration, serve, shut down gracefully.

use std::process::ExitCode;
use std::time::Duration;

use rand::Rng;
use switchboard::config::file as config_file;
use switchboard::config::{Cli, Command, LogFormat, TokenArgs};
use switchboard::{BuildOptions, Switchboard, TokenSpec, mint_hs256};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    if let Err(e) = load_config_file() {
        eprintln!("switchboard: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse_args();
    if let Some(Command::Token(args)) = cli.command {
        return token(args);
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init(),
        // One object a line; at debug level a socket's lines carry its
        // span's fields (namespace, user id, socket id).
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(cli.config))
}

/// Turns `--config FILE` into environment variables before clap reads them
/// (see `switchboard::config::file`).
fn load_config_file() -> Result<(), String> {
    let args: Vec<_> = std::env::args_os().collect();
    let Some(path) = config_file::path_from_args(&args) else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let command = Cli::command_line();
    let flags: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|a| {
            Some((
                a.get_long()?.to_string(),
                a.get_env()?.to_str()?.to_string(),
            ))
        })
        .collect();
    let pairs = config_file::env_pairs(&text, &flags)
        .map_err(|e| format!("--config {}: {e}", path.display()))?;
    for (name, value) in pairs {
        if std::env::var_os(&name).is_none() {
            // SAFETY: still single-threaded; nothing else reads the environment yet.
            unsafe { std::env::set_var(name, value) };
        }
    }
    Ok(())
}

fn token(args: TokenArgs) -> ExitCode {
    if args.jwt_secret.len() < 32 {
        eprintln!("switchboard: --jwt-secret must be at least 32 bytes");
        return ExitCode::from(2);
    }
    let spec = TokenSpec {
        sub: args.sub,
        name: args.name,
        ttl_secs: args.ttl_secs,
        rooms: (!args.rooms.is_empty()).then_some(args.rooms),
        tenant: args.tenant,
        issuer: args.issuer,
        audience: args.audience,
    };
    println!("{}", mint_hs256(args.jwt_secret.as_bytes(), &spec));
    ExitCode::SUCCESS
}

async fn serve(config: switchboard::Config) -> ExitCode {
    if let Err(e) = config.validate() {
        eprintln!("switchboard: {e}");
        return ExitCode::from(2);
    }
    let dev_secret = config.dev_mode().then(random_hex);
    let dev_api_key = (config.dev_mode() && config.api_key.is_none()).then(random_hex);
    let addr = match config.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = BuildOptions {
        store: None,
        docs: None,
        dev_secret: dev_secret.clone(),
        dev_api_key: dev_api_key.clone(),
        hooks: None,
    };
    let sb = match Switchboard::build(config.clone(), opts).await {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchboard: cannot listen on {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    if let Some(secret) = &dev_secret {
        let token = mint_hs256(
            secret.as_bytes(),
            &TokenSpec {
                sub: "demo".into(),
                name: Some("Demo User".into()),
                ttl_secs: 24 * 3600,
                ..TokenSpec::default()
            },
        );
        tracing::warn!(
            "DEV MODE: no --jwt-secret or --jwt-public-key configured. A random secret was generated; \
             tokens die with this process. NOT FOR PRODUCTION."
        );
        println!("dev mode token for user 'demo' (valid 24 h):\n{token}");
        println!("try: io('http://{local}', {{ auth: {{ token: '<token above>' }} }})");
    }
    if let Some(key) = &dev_api_key {
        println!("dev mode HTTP API key: {key}");
    }
    let limits = switchboard::edge::serve::ServeLimits::from_config(&config);
    tracing::info!(
        "configuration: {} (max_connections in effect: {})",
        switchboard::config::summary::summary(&config),
        limits.max_connections
    );
    for warning in switchboard::config::summary::warnings(&config) {
        tracing::warn!("{warning}");
    }
    tracing::info!("switchboard listening on http://{local}");
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(switchboard::edge::serve::serve(
        listener,
        sb.router,
        limits,
        sb.connections.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::select! {
        _ = shutdown_signal() => {}
        res = &mut server => {
            eprintln!("switchboard: server stopped: {res:?}");
            return ExitCode::FAILURE;
        }
    }
    // Stop accepting, close every transport (clients see the connection drop
    // and reconnect, to another node when there is one), let the store finish
    // the writes it has, all within the configured bound.
    let bound = Duration::from_secs(config.shutdown_timeout_secs);
    tracing::info!("shutting down (at most {bound:?})");
    let graceful = async {
        let _ = stop_accepting.send(());
        // Sockets are kept for recovery as they stand, before the
        // transports close (whose clean-up may not finish in time).
        switchboard::keep_sessions_for_recovery(&sb.io);
        sb.io.close().await;
        // The other nodes learn at their next heartbeat that this one is
        // gone, rather than when its heartbeat lapses.
        if let Some(cluster) = &sb.ctx.cluster {
            match cluster.deregister().await {
                Ok(()) => tracing::info!("left the cluster"),
                Err(e) => tracing::warn!(
                    "could not leave the cluster cleanly ({e}); its heartbeat will lapse"
                ),
            }
        }
        if let Some(recovery) = &sb.ctx.recovery {
            recovery.flush().await;
        }
        sb.ctx.store.flush().await;
        let _ = server.await;
    };
    if tokio::time::timeout(bound, graceful).await.is_err() {
        tracing::warn!("graceful shutdown took longer than {bound:?}; exiting anyway");
    } else {
        tracing::info!("shut down cleanly");
    }
    ExitCode::SUCCESS
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
