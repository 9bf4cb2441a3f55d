//! `GET /events`: Server-Sent Events for one user.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::api::{Api, api_server};
use crate::*;

/// Reads SSE frames until one named `event` arrives.
async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    event: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let name = frame.lines().find_map(|l| l.strip_prefix("event: "));
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if name == Some(event) {
                return serde_json::from_str(data.unwrap_or("null")).unwrap();
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {event} event"))
            .expect("stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn sse_gets_backend_emits_and_private_messages() {
    let s = api_server().await;
    let api = Api::new(&s);
    let res = reqwest::get(format!("http://{}/events?token={}", s.addr, token("alice")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    assert_eq!(
        next_event(&mut stream, &mut buf, "connected").await,
        json!({ "userId": "alice" })
    );
    let (st, _) = api
        .post(
            "/api/users/alice/emit",
            json!({ "event": "invoice", "data": { "id": 9 } }),
        )
        .await;
    assert_eq!(st, 202);
    assert_eq!(next_event(&mut stream, &mut buf, "invoice").await["id"], 9);
    let mut bob = s.user("bob").await;
    bob.ack(
        "private:send",
        json!({ "toUserId": "alice", "content": "psst" }),
    )
    .await;
    let m = next_event(&mut stream, &mut buf, "private:message").await;
    assert_eq!(
        (m["senderId"].clone(), m["content"].clone()),
        (json!("bob"), json!("psst"))
    );
    assert_eq!(s.hub.ctx().feeds.open(), 1);
    drop(stream);
    // The feed goes away with the client.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.hub.ctx().feeds.open() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "feed not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sse_with_header_and_heartbeat() {
    let s = server_with(|c| c.sse_heartbeat_secs = 1).await;
    let res = reqwest::Client::new()
        .get(format!("http://{}/events", s.addr))
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    // A comment line (it starts with ':').
    while !seen
        .lines()
        .any(|l| l.starts_with(':') && l.contains("heartbeat"))
    {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("heartbeat within 3 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn sse_refuses_bad_tokens() {
    let s = server().await;
    for (query, reason) in [
        (String::new(), "Authentication failed: missing token"),
        (
            "?token=garbage".to_string(),
            "Authentication failed: malformed token",
        ),
        (
            format!("?token={}&namespace=/nowhere", token("a")),
            "Invalid namespace",
        ),
    ] {
        let res = reqwest::get(format!("http://{}/events{query}", s.addr))
            .await
            .unwrap();
        assert!(
            res.status() == 401 || res.status() == 404,
            "{}",
            res.status()
        );
        assert_eq!(res.json::<Value>().await.unwrap()["error"], reason);
    }
}
