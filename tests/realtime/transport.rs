//! Engine.IO handshake values, CORS, tenant namespace patterns.

use serde_json::{Value, json};

use crate::*;

/// Opens a polling session and returns the Engine.IO open packet.
async fn open_packet(s: &Server, origin: Option<&str>) -> (Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(format!(
        "http://{}/socket.io/?EIO=4&transport=polling",
        s.addr
    ));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let res = req.send().await.unwrap();
    assert!(res.status().is_success());
    let headers = res.headers().clone();
    let body = res.text().await.unwrap();
    let json = body.strip_prefix('0').expect("open packet");
    (serde_json::from_str(json).unwrap(), headers)
}

#[tokio::test]
async fn handshake_defaults_match_node() {
    let s = server().await;
    let (open, _) = open_packet(&s, None).await;
    assert_eq!(open["pingInterval"], 25_000);
    assert_eq!(open["pingTimeout"], 20_000);
    assert_eq!(open["maxPayload"], 1_000_000);
    assert_eq!(open["upgrades"], json!(["websocket"]));

    let s = server_with(|c| {
        c.ping_interval_ms = 1_000;
        c.ping_timeout_ms = 500;
        c.max_payload_bytes = 4096;
    })
    .await;
    let (open, _) = open_packet(&s, None).await;
    assert_eq!(open["pingInterval"], 1_000);
    assert_eq!(open["pingTimeout"], 500);
    assert_eq!(open["maxPayload"], 4096);
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let s = server_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let (_, h) = open_packet(&s, Some("https://app.example")).await;
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let (_, h) = open_packet(&s, Some("https://evil.example")).await;
    assert!(h.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn tenant_namespace_patterns() {
    let s = server_with(|c| c.namespaces = vec!["/tenant-{name}".into()]).await;
    let tok = token_with(TokenSpec {
        sub: "alice".into(),
        ttl_secs: 600,
        tenant: Some("tenant-red".into()),
        ..TokenSpec::default()
    });
    let mut red = Client::connect(s.addr, "/tenant-red", Some(json!({ "token": tok })))
        .await
        .expect("pattern namespace");
    assert_eq!(
        red.ack("room:join", json!("general")).await["success"],
        true
    );
    let blue = Client::connect(s.addr, "/tenant-blue", Some(json!({ "token": tok }))).await;
    assert_eq!(
        blue.err().unwrap().message(),
        "Authentication failed: wrong tenant"
    );
    // Another tenant of the same pattern is isolated.
    let mut other = s.user_ns("bob", "/tenant-blue").await;
    let m = other.ack("room:members", json!("general")).await;
    assert_eq!(m["members"], json!([]));
}

/// The whole long-polling flow, as socket.io-client does it before upgrading.
#[tokio::test]
async fn long_polling_session() {
    let s = server().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", s.addr);
    let (open, _) = open_packet(&s, None).await;
    let sid = open["sid"].as_str().unwrap();
    let url = format!("{base}&sid={sid}");
    let post = |body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let res = http.post(&url).body(body).send().await.unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        }
    };
    post(format!("40{}", json!({ "token": token("alice") }))).await;
    // One GET may carry several packets, separated by \x1e.
    let got = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        got.split('\x1e').any(|p| p.starts_with("40{\"sid\"")),
        "{got}"
    );
    post("421[\"room:join\",\"general\"]".into()).await;
    let got = http.get(&url).send().await.unwrap().text().await.unwrap();
    let ack = got
        .split('\x1e')
        .find(|p| p.starts_with("431["))
        .unwrap_or_else(|| panic!("{got}"));
    assert!(ack.contains("\"success\":true"), "{got}");
}
