//! The backend API cannot be made to break a stream or answer in plain text.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Proc, assert_no_panic, token};

const KEY: &str = "abuse-test-api-key-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_names_that_sse_cannot_carry_are_refused_and_nothing_panics() {
    let p = Proc::start(&["--database-url", "memory", "--api-key", KEY]);
    let mut sse = reqwest::get(format!("http://{}/events?token={}", p.addr, token("ann")))
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("http://{}{path}", p.addr))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };
    for bad in ["a\nb", "a\rb", "x\u{0}", "", &"e".repeat(129), "disconnect"] {
        for (path, body) in [
            (
                "/api/emit",
                json!({ "event": bad, "users": ["ann"], "data": 1 }),
            ),
            ("/api/users/ann/emit", json!({ "event": bad, "data": 1 })),
        ] {
            let r = post(path, body).await.unwrap();
            assert_eq!(r.status(), 400, "{path} {bad:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "invalid_payload", "{body}");
        }
    }
    // The stream still works.
    let r = post(
        "/api/users/ann/emit",
        json!({ "event": "é \"ok\"", "data": 2 }),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let mut text = String::new();
    while !text.contains("é \"ok\"") {
        let c = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
            .await
            .expect("the event")
            .unwrap()
            .expect("the stream is open");
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert_no_panic(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_utf8_path_gets_the_json_error() {
    let p = Proc::start(&["--database-url", "memory", "--api-key", KEY]);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "GET /api/users/%FF%FE/presence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{out}"
    );
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(body["code"], "invalid_payload", "{body}");
}
