//! The `switchboard` binary: parse configuration, serve, shut down gracefully.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rand::Rng;
use switchboard::config::{Cli, Command, TokenArgs};
use switchboard::{BuildOptions, Switchboard, TokenSpec, mint_hs256};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = cli.command {
        return token(args);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(cli.config))
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
    let dev_secret = config.dev_mode().then(|| {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    });
    let addr = match config.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = BuildOptions {
        store: None,
        dev_secret: dev_secret.clone(),
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
    tracing::info!("switchboard listening on http://{local}");
    let io = sb.io.clone();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        // Close sockets so clients see a disconnect and reconnect elsewhere.
        let _ = tokio::time::timeout(Duration::from_secs(10), io.close()).await;
    };
    // Small frames (acks, typing) must not wait for Nagle + delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    if let Err(e) = axum::serve(listener, sb.router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("switchboard: server error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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
