//! `--jwks-url` against a real JWKS server started here: RS256, ES256 and
//! EdDSA keys picked by `kid`, a key rotation without a restart, forged
//! `kid`s that do not multiply fetches, and a provider that goes down while
//! the cached keys keep working.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Proc, metric};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A JWKS endpoint whose key set, and whether it is up, the test changes.
#[derive(Clone, Default)]
struct Idp {
    set: Arc<Mutex<Value>>,
    fetches: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Idp {
    async fn start(keys: &[(&str, &str)]) -> (Idp, SocketAddr) {
        let idp = Idp::default();
        idp.publish(keys);
        let state = idp.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let s = state.clone();
                async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    if s.down.load(Ordering::SeqCst) {
                        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new());
                    }
                    let body = s.set.lock().unwrap().to_string();
                    (axum::http::StatusCode::OK, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (idp, addr)
    }

    /// Publishes `(kid, fixture key name)` pairs.
    fn publish(&self, keys: &[(&str, &str)]) {
        let public: Value =
            serde_json::from_slice(&std::fs::read(fixture("jwks_public.json")).unwrap()).unwrap();
        let keys: Vec<Value> = keys
            .iter()
            .map(|(kid, name)| {
                let mut k = public[*name].clone();
                k["kid"] = json!(kid);
                k
            })
            .collect();
        *self.set.lock().unwrap() = json!({ "keys": keys });
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A token for `sub` signed with fixture key `name`, naming `kid`.
fn token(sub: &str, name: &str, kid: &str) -> String {
    let pem = std::fs::read(fixture(&format!("{name}_private.pem"))).unwrap();
    let (alg, key) = match name {
        "rsa" | "rsa2" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
        "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
        "ed" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
        other => panic!("no fixture key {other}"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let exp = switchboard::auth::now_secs() + 600;
    jsonwebtoken::encode(&header, &json!({ "sub": sub, "exp": exp }), &key).unwrap()
}

/// The status `GET /events` answers for `token` (200: accepted).
async fn accepted(addr: SocketAddr, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What a Socket.IO CONNECT with `token` gets over a websocket: the
/// server's `40…` or `44…` packet.
async fn socket_connect(addr: SocketAddr, token: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut connect_sent = false;
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        if t.starts_with('0') && !connect_sent {
            let auth = json!({ "token": token });
            ws.send(Message::text(format!("40{auth}"))).await.unwrap();
            connect_sent = true;
        } else if t.starts_with("40") || t.starts_with("44") {
            return t.to_string();
        }
    }
    panic!("no CONNECT answer");
}

fn server(idp: SocketAddr) -> Proc {
    let url = format!("http://{idp}/.well-known/jwks.json");
    Proc::start_dev(&[
        "--jwks-url",
        &url,
        "--jwks-refresh-secs",
        "2",
        "--jwks-min-refresh-secs",
        "1",
        "--database-url",
        "memory",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_by_kid_rotation_forged_kids_and_a_provider_down() {
    let (idp, idp_addr) = Idp::start(&[("a", "rsa"), ("e", "ec"), ("d", "ed")]).await;
    let p = server(idp_addr);
    // Each kind of key, picked by kid.
    assert_eq!(accepted(p.addr, &token("alice", "rsa", "a")).await, 200);
    assert_eq!(accepted(p.addr, &token("alice", "ec", "e")).await, 200);
    assert_eq!(accepted(p.addr, &token("alice", "ed", "d")).await, 200);
    // A right key under a wrong kid, and a signature by another key.
    assert_eq!(accepted(p.addr, &token("alice", "rsa", "e")).await, 401);
    assert_eq!(accepted(p.addr, &token("alice", "rsa2", "a")).await, 401);

    // Rotation: b added, a removed. No restart: b works at once (its kid is
    // unknown, so the set is fetched again), and a is gone with the old set.
    idp.publish(&[("b", "rsa2")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(accepted(p.addr, &token("bob", "rsa2", "b")).await, 200);
    assert_eq!(accepted(p.addr, &token("alice", "rsa", "a")).await, 401);
    // The same through a Socket.IO CONNECT.
    assert!(
        socket_connect(p.addr, &token("bob", "rsa2", "b"))
            .await
            .starts_with("40{")
    );
    let refused = socket_connect(p.addr, &token("alice", "rsa", "a")).await;
    assert!(
        refused.contains("Authentication failed: unknown signing key"),
        "{refused}"
    );

    // Forged kids: 200 tokens, fetches spaced by --jwks-min-refresh-secs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = idp.fetches();
    let start = std::time::Instant::now();
    for i in 0..200 {
        assert_eq!(
            accepted(p.addr, &token("mallory", "rsa", &format!("forged-{i}"))).await,
            401
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let fetched = idp.fetches() - before;
    // One per second at most, plus the scheduled refresh every 2 s.
    let bound = (secs / 1.0).ceil() as u64 + (secs / 2.0).ceil() as u64 + 2;
    println!("200 forged kids in {secs:.2} s: {fetched} fetches (bound {bound})");
    assert!(fetched <= bound, "{fetched} fetches in {secs:.2} s");
    assert!(
        metric(
            p.addr,
            "switchboard_jwks_refreshes_total{outcome=\"skipped\"}"
        )
        .await
            >= 150.0
    );

    // The provider goes down: the cached key keeps working, and it shows.
    idp.down.store(true, Ordering::SeqCst);
    let errors = "switchboard_jwks_refreshes_total{outcome=\"error\"}";
    for _ in 0..50 {
        if metric(p.addr, errors).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(p.addr, errors).await >= 1.0,
        "a failed refresh is counted"
    );
    assert_eq!(accepted(p.addr, &token("bob", "rsa2", "b")).await, 200);
    let ready = reqwest::get(format!("http://{}/readyz", p.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still ready: the keys are cached");
    let body: Value = ready.json().await.unwrap();
    assert!(body["jwks"].as_str().unwrap().contains("500"), "{body}");
    assert_eq!(metric(p.addr, "switchboard_jwks_keys").await, 1.0);

    // Back up: reported no more.
    idp.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body: Value = reqwest::get(format!("http://{}/readyz", p.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({ "status": "ready" }));
    assert!(!p.log().contains("panicked"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_not_ready_until_it_answers() {
    let (idp, idp_addr) = Idp::start(&[("a", "rsa")]).await;
    idp.down.store(true, Ordering::SeqCst);
    let p = server(idp_addr);
    assert_eq!(common::readyz(p.addr).await, 503);
    assert_eq!(accepted(p.addr, &token("alice", "rsa", "a")).await, 401);
    idp.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first token with an unknown kid fetches the set.
    assert_eq!(accepted(p.addr, &token("alice", "rsa", "a")).await, 200);
    assert_eq!(common::readyz(p.addr).await, 200);
    assert!(!p.log().contains("panicked"), "{}", p.log());
}
