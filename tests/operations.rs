//! Operating the binary: metrics that move, readiness, and a graceful
//! shutdown on SIGTERM with clients connected.

#[path = "realtime/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::time::{Duration, Instant};

use client::Client;
use common::{Proc, token};
use serde_json::json;

async fn metrics(p: &Proc) -> String {
    reqwest::get(format!("http://{}/metrics", p.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_events_happen() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/m.db", dir.path().display());
    let p = Proc::start(&["--database-url", &db, "--api-key", "metrics-test-key-123"]);
    let before = metrics(&p).await;
    let mut c = Client::connect(p.addr, "/", Some(json!({ "token": token("alice") })))
        .await
        .unwrap();
    c.ack("room:join", json!("general")).await;
    for i in 0..3 {
        c.ack(
            "chat:send",
            json!({ "roomId": "general", "content": format!("{i}") }),
        )
        .await;
    }
    c.ack("chat:send", json!({ "roomId": "general", "content": "" }))
        .await;
    let status = reqwest::Client::new()
        .get(format!("http://{}/api/users/alice/presence", p.addr))
        .bearer_auth("metrics-test-key-123")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // An error ack is counted just after it is handed to the socket, so
    // the client can have it a moment before the count moves.
    let mut after = metrics(&p).await;
    for _ in 0..50 {
        let acks = |m: &str| sample(m, "switchboard_acks_total{outcome=\"invalid_payload\"}");
        if acks(&after) > acks(&before) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = metrics(&p).await;
    }
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        sample(&after, "switchboard_connections{namespace=\"/\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("switchboard_events_in_total{event=\"chat:send\"}"),
        4.0,
        "{after}"
    );
    assert_eq!(
        delta("switchboard_events_in_total{event=\"room:join\"}"),
        1.0
    );
    assert_eq!(
        delta("switchboard_events_out_total{event=\"chat:message\"}"),
        3.0
    );
    assert_eq!(delta("switchboard_acks_total{outcome=\"success\"}"), 4.0);
    assert_eq!(
        delta("switchboard_acks_total{outcome=\"invalid_payload\"}"),
        1.0
    );
    assert!(
        delta("switchboard_store_write_seconds_count") >= 1.0,
        "{after}"
    );
    assert_eq!(
        delta("switchboard_store_messages_total{outcome=\"ok\"}"),
        3.0
    );
    assert_eq!(
        delta(
            "switchboard_http_requests_total{route=\"/api/users/{userId}/presence\",status=\"200\"}"
        ),
        1.0,
        "{after}"
    );
    c.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(
        &metrics(&p).await,
        "switchboard_connections{namespace=\"/\"}",
    ) != 0.0
    {
        assert!(Instant::now() < deadline, "connection gauge did not drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/s.db", dir.path().display());
    let mut p = Proc::start(&["--database-url", &db, "--shutdown-timeout-secs", "5"]);
    let ready = reqwest::get(format!("http://{}/readyz", p.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let mut clients = Vec::new();
    let mut acked = Vec::new();
    let mut in_flight = Vec::new();
    for i in 0..5 {
        let mut c = Client::connect(
            p.addr,
            "/",
            Some(json!({ "token": token(&format!("u{i}")) })),
        )
        .await
        .unwrap();
        c.ack("room:join", json!("general")).await;
        for k in 0..10 {
            let a = c
                .ack(
                    "chat:send",
                    json!({ "roomId": "general", "content": format!("{i}-{k}") }),
                )
                .await;
            acked.push(a["messageId"].as_str().unwrap().to_string());
        }
        // And some still in flight when the signal comes.
        for k in 10..20 {
            in_flight.push(c.emit_ack(
                "chat:send",
                json!({ "roomId": "general", "content": format!("{i}-{k}") }),
            ));
        }
        clients.push(c);
    }
    let started = Instant::now();
    p.terminate();
    for c in &clients {
        assert!(
            c.closed(Duration::from_secs(5)).await,
            "client saw its connection close"
        );
    }
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "did not exit in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}: {}", p.log());
    assert!(p.log().contains("shut down cleanly"), "{}", p.log());

    // Everything acked or queued before the signal is there after a restart.
    let p2 = Proc::start(&["--database-url", &db]);
    let mut c = Client::connect(p2.addr, "/", Some(json!({ "token": token("reader") })))
        .await
        .unwrap();
    let h = c
        .ack("chat:history", json!({ "roomId": "general", "limit": 100 }))
        .await;
    let stored: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in &acked {
        assert!(stored.contains(&id.as_str()), "acked message {id} lost");
    }
    assert!(
        stored.len() >= 50 && stored.len() <= 100,
        "{}",
        stored.len()
    );
    // Gap-free whatever was accepted.
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_sockets_namespace_and_user() {
    let p = Proc::start_env(
        &["--database-url", "memory", "--log-format", "json"],
        &[("RUST_LOG", "info,switchboard=debug")],
    );
    let mut c = Client::connect(p.addr, "/", Some(json!({ "token": token("alice") })))
        .await
        .unwrap();
    // An unknown event is refused, and logged (at debug) inside the socket's span.
    let a = c.ack("no:such-event", json!({})).await;
    assert_eq!(a["code"], "not_found");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = p.log();
        let line = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|o| o["span"]["user"] == "alice");
        if let Some(o) = line {
            assert_eq!(o["span"]["ns"], "/", "{o}");
            assert!(
                o["span"]["sid"].as_str().is_some_and(|s| !s.is_empty()),
                "{o}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no line with the socket's span: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        p.log()
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}
