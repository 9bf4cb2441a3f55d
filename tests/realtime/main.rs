//! Integration tests: the real server on port 0, spoken to as clients do.

mod api;
mod auth;
mod chat;
mod client;
mod hub;
mod private;
mod rooms;
mod sse;
mod transport;
mod typing;

use std::net::SocketAddr;

use serde_json::{Value, json};
use switchboard::{BuildOptions, Config, Switchboard, TokenSpec, mint_hs256};

pub use client::{Client, WAIT};

pub const SECRET: &str = "test-secret-test-secret-test-secret!";

pub struct Server {
    pub addr: SocketAddr,
    pub io: switchboard::IoHandle,
    pub hub: switchboard::Hub,
}

/// Starts a server with `SECRET`, tenants `/acme` and `/globex`, and the
/// changes `tweak` makes to the configuration.
pub async fn server_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        jwt_secret: Some(SECRET.into()),
        namespaces: vec!["/acme".into(), "/globex".into()],
        database_url: "memory".into(),
        ..Config::default()
    };
    tweak(&mut config);
    let sb = Switchboard::build(config, BuildOptions::default())
        .await
        .expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let io = sb.io.clone();
    let hub = sb.hub.clone();
    tokio::spawn(async move { axum::serve(listener, sb.router).await });
    Server { addr, io, hub }
}

pub async fn server() -> Server {
    server_with(|_| {}).await
}

pub fn token(sub: &str) -> String {
    token_with(TokenSpec {
        sub: sub.into(),
        name: Some(capitalize(sub)),
        ttl_secs: 600,
        ..TokenSpec::default()
    })
}

pub fn token_with(spec: TokenSpec) -> String {
    mint_hs256(SECRET.as_bytes(), &spec)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

impl Server {
    /// Connects user `sub` (display name capitalized) to `/`.
    pub async fn user(&self, sub: &str) -> Client {
        self.user_ns(sub, "/").await
    }

    pub async fn user_ns(&self, sub: &str, ns: &str) -> Client {
        Client::connect(self.addr, ns, Some(json!({ "token": token(sub) })))
            .await
            .unwrap_or_else(|e| panic!("connect {sub}: {e:?}"))
    }

    /// Connects `sub` and joins `room`.
    pub async fn in_room(&self, sub: &str, room: &str) -> Client {
        let mut c = self.user(sub).await;
        let a = c.ack("room:join", json!(room)).await;
        assert_eq!(a["success"], true, "{a}");
        c
    }
}

/// Asserts an error ack with `code`.
pub fn assert_refused(ack: &Value, code: &str) {
    assert_eq!(ack["success"], false, "expected refusal, got {ack}");
    assert_eq!(ack["code"], code, "{ack}");
    assert!(
        ack["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error text missing: {ack}"
    );
}
