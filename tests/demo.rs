//! What the demo page (examples/web) stands on, on the real binary:
//! `POST /dev/token` exists in dev mode only, and `--static-dir` serves files
//! beside the server's routes without shadowing any of them.

#[path = "realtime/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::net::SocketAddr;

use client::Client;
use common::{Proc, token};
use serde_json::{Value, json};

async fn post_token(addr: SocketAddr, body: Value, origin: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/dev/token"))
        .json(&body);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_mints_tokens_that_connect() {
    let p = Proc::start_dev(&["--database-url", "memory"]);
    let (status, body) = post_token(p.addr, json!({ "sub": "alice", "name": "Alice" }), None).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("a token").to_string();

    let mut c = Client::connect(p.addr, "/", Some(json!({ "token": token })))
        .await
        .unwrap_or_else(|e| panic!("connect with a dev token: {e:?}"));
    let joined = c.ack("room:join", json!("general")).await;
    assert_eq!(joined["success"], true, "{joined}");
    assert_eq!(
        joined["members"],
        json!([{ "userId": "alice", "username": "Alice", "connections": 1 }])
    );

    // The same limits as for any token, answered like the rest of the API.
    let long = "x".repeat(129);
    let (s, b) = post_token(p.addr, json!({ "sub": long }), None).await;
    assert_error(s, &b, 400, "invalid_payload");
    let (s, b) = post_token(p.addr, json!({ "sub": "" }), None).await;
    assert_error(s, &b, 400, "invalid_payload");
    let (s, b) = post_token(p.addr, json!({ "sub": "a", "name": long }), None).await;
    assert_error(s, &b, 400, "invalid_payload");
    let (s, b) = post_token(p.addr, json!({ "sub": "a", "admin": true }), None).await;
    assert_error(s, &b, 400, "invalid_payload");
    // 128 characters is still fine, for both.
    let max = "é".repeat(128);
    let (s, b) = post_token(p.addr, json!({ "sub": max, "name": max }), None).await;
    assert_eq!(s, 200, "{b}");

    // A page on another site must not mint tokens for the developer's server
    // (dev mode allows any origin for everything else); loopback pages may.
    let evil = Some("https://evil.example");
    let (s, b) = post_token(p.addr, json!({ "sub": "a" }), evil).await;
    assert_error(s, &b, 403, "forbidden_origin");
    let (s, b) = post_token(p.addr, json!({ "sub": "a" }), Some("http://localhost:5173")).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_route_outside_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "page").unwrap();
    let files = dir.path().to_str().unwrap();
    // With and without static files: the path is the server's either way.
    for extra in [&[][..], &["--static-dir", files][..]] {
        let mut args = vec!["--database-url", "memory"];
        args.extend_from_slice(extra);
        let p = Proc::start(&args);
        let (status, body) = post_token(p.addr, json!({ "sub": "mallory" }), None).await;
        assert_eq!(status, 404, "{extra:?}: {body}");
        assert!(body.get("token").is_none(), "{body}");
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let res = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_dir_serves_files_beside_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(d.join("app.js"), "console.log(1)").unwrap();
    // Files named like the server's routes must not win over them.
    for name in ["healthz", "metrics", "events"] {
        std::fs::write(d.join(name), "shadow").unwrap();
    }
    std::fs::create_dir_all(d.join("api")).unwrap();
    std::fs::write(d.join("api/emit"), "shadow").unwrap();
    std::fs::create_dir_all(d.join("socket.io")).unwrap();
    std::fs::write(d.join("socket.io/index.html"), "shadow").unwrap();

    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--api-key",
        "static-test-key-1234",
        "--static-dir",
        d.to_str().unwrap(),
    ]);
    let addr = p.addr;

    let (s, kind, body) = get(addr, "/").await;
    assert_eq!((s, body.as_str()), (200, "<h1>demo</h1>"));
    assert!(kind.starts_with("text/html"), "{kind}");
    let (s, kind, body) = get(addr, "/app.js").await;
    assert_eq!((s, body.as_str()), (200, "console.log(1)"));
    assert!(kind.contains("javascript"), "{kind}");
    assert_eq!(get(addr, "/missing.css").await.0, 404);

    // The server's own routes answer as they do without the flag.
    let (s, _, body) = get(addr, "/healthz").await;
    assert_eq!(s, 200);
    assert_ne!(body, "shadow");
    let (s, _, body) = get(addr, "/metrics").await;
    assert_eq!(s, 200);
    assert!(body.contains("switchboard_"), "{body}");
    let (s, _, body) = get(addr, "/events").await;
    assert_eq!(s, 401, "{body}");
    // A file named api/emit does not answer for the route (which takes POST only).
    let (s, _, body) = get(addr, "/api/emit").await;
    assert_eq!(s, 405, "{body}");
    assert!(body.contains("method_not_allowed"), "{body}");
    let (s, _, body) = get(addr, "/api/rooms/r1/members").await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");

    // Long-polling: every request of one session must reach the same
    // engine.io instance (a router fallback once broke exactly that).
    let (s, _, open) = get(addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(s, 200, "{open}");
    let handshake: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let sid = handshake["sid"].as_str().unwrap();
    let url = format!("http://{addr}/socket.io/?EIO=4&transport=polling&sid={sid}");
    let connect = format!("40{}", json!({ "token": token("alice") }));
    let res = reqwest::Client::new()
        .post(&url)
        .body(connect)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // Packets are separated by 0x1e; the CONNECT answer comes in one of
    // the next polls (a ping can be answered before it is ready).
    let mut polled = String::new();
    for _ in 0..3 {
        // One poll's packets, kept apart from the previous poll's.
        polled.push('\u{1e}');
        polled.push_str(&reqwest::get(&url).await.unwrap().text().await.unwrap());
        if polled.split('\u{1e}').any(|p| p.starts_with("40{\"sid\"")) {
            break;
        }
    }
    assert!(
        polled.split('\u{1e}').any(|p| p.starts_with("40{\"sid\"")),
        "{polled:?}"
    );

    // And websockets.
    let mut c = Client::connect(addr, "/", Some(json!({ "token": token("bob") })))
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}"));
    let joined = c.ack("room:join", json!("general")).await;
    assert_eq!(joined["success"], true, "{joined}");
}

#[test]
fn a_static_dir_that_is_not_there_stops_the_start() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--database-url",
            "memory",
            "--static-dir",
            "/nonexistent/dist",
        ])
        .env_remove("SWITCHBOARD_STATIC_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Had the flag been accepted, the server would serve forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running: the missing directory was accepted");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--static-dir /nonexistent/dist"),
        "{stderr}"
    );
}
