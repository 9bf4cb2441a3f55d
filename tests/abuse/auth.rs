//! Tokens do not outlive their `exp`; claims and per-user quotas are bounded.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{NO_RATE_LIMITS, SECRET};
use crate::{Client, Proc, in_room, metric, user};

fn token_for(sub: &str, ttl_secs: u64, name: Option<String>) -> String {
    switchboard::mint_hs256(
        SECRET.as_bytes(),
        &switchboard::TokenSpec {
            sub: sub.into(),
            name,
            ttl_secs,
            ..Default::default()
        },
    )
}

async fn connect(p: &Proc, token: &str) -> Result<Client, crate::client::ConnectError> {
    Client::connect(p.addr, "/", Some(json!({ "token": token }))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_the_socket_and_a_refresh_carries_on() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--auth-expiry-warning-secs",
        "2",
    ]);
    let short = connect(&p, &token_for("short", 4, None)).await.unwrap();
    let mut kept = connect(&p, &token_for("kept", 4, None)).await.unwrap();

    let warned = kept.recv("auth:expiring").await;
    let exp_ms = warned["expiresAt"].as_u64().expect("expiresAt");
    // Another user's token does not extend this socket.
    let other = kept
        .ack(
            "auth:refresh",
            json!({ "token": token_for("mallory", 600, None) }),
        )
        .await;
    assert_eq!(other["success"], false, "{other}");
    let bad = kept
        .ack("auth:refresh", json!({ "token": "not-a-jwt" }))
        .await;
    assert_eq!(bad["code"], "invalid_payload", "{bad}");
    let refreshed = kept
        .ack(
            "auth:refresh",
            json!({ "token": token_for("kept", 600, None) }),
        )
        .await;
    assert_eq!(refreshed["success"], true, "{refreshed}");
    assert!(refreshed["expiresAt"].as_u64().unwrap() > exp_ms + 500_000);

    // The one that did not refresh is warned, told why, and disconnected.
    assert!(short.recv("auth:expiring").await["expiresAt"].is_u64());
    let closing = short
        .try_recv("server:closing", Duration::from_secs(8))
        .await;
    assert_eq!(closing.expect("server:closing")["reason"], "token_expired");
    assert!(
        short.closed(Duration::from_secs(3)).await,
        "still connected"
    );
    // The refreshed one is still there after its first token's exp.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = kept.ack("room:join", json!("r")).await;
    assert_eq!(a["success"], true, "{a}");
    assert!(!kept.closed(Duration::from_millis(10)).await);
    assert_eq!(
        metric(
            p.addr,
            "switchboard_server_disconnects_total{reason=\"token_expired\"}"
        )
        .await,
        1.0
    );
}

/// Reads an SSE response until `event` comes or the stream ends; returns the
/// events seen, as (name, data).
async fn sse_events(
    resp: &mut reqwest::Response,
    until: &str,
    within: Duration,
) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data.push_str(d);
                }
            }
            if data.is_empty() {
                continue;
            }
            let done = name == until;
            out.push((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
            if done {
                return out;
            }
        }
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(_) => return out,
            Err(_) => panic!("no {until} within {within:?}; saw {out:?}"),
        }
    }
}

async fn open_sse(p: &Proc, token: &str) -> reqwest::Response {
    let resp = reqwest::get(format!("http://{}/events?token={token}", p.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_end_at_expiry_and_on_disconnect() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--auth-expiry-warning-secs",
        "1",
        "--api-key",
        "abuse-test-api-key-1",
    ]);
    let mut short = open_sse(&p, &token_for("short", 3, None)).await;
    let mut long = open_sse(&p, &token_for("long", 600, None)).await;
    let seen = sse_events(&mut short, "server:closing", Duration::from_secs(8)).await;
    let names: Vec<_> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["connected", "auth:expiring", "server:closing"],
        "{seen:?}"
    );
    assert_eq!(seen[2].1["reason"], "token_expired");
    assert!(short.chunk().await.unwrap().is_none(), "the stream ended");

    let r: Value = reqwest::Client::new()
        .post(format!("http://{}/api/users/long/disconnect", p.addr))
        .bearer_auth("abuse-test-api-key-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["streams"], 1, "{r}");
    let seen = sse_events(&mut long, "server:closing", Duration::from_secs(5)).await;
    assert_eq!(seen.last().unwrap().1["reason"], "disconnected", "{seen:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), long.chunk()).await;
    assert!(matches!(end, Ok(Ok(None))), "the stream ended: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_rooms_and_recipients_are_bounded() {
    let mut args = vec!["--database-url", "memory", "--private-recipients", "known"];
    args.extend(NO_RATE_LIMITS);
    let p = Proc::start(&args);
    // A 500 KB name is refused at the handshake; 128 characters are fine.
    let huge = connect(&p, &token_for("big", 600, Some("n".repeat(500_000)))).await;
    let err = huge.err().expect("refused").message().to_string();
    assert_eq!(err, "Authentication failed: claim name too large");
    connect(&p, &token_for("ok", 600, Some("é".repeat(128))))
        .await
        .unwrap();

    // The 129th room is refused.
    let mut c = user(&p, "roomy").await;
    for i in 0..128 {
        let a = c.ack("room:join", json!(format!("r{i}"))).await;
        assert_eq!(a["success"], true, "{i}: {a}");
    }
    let a = c.ack("room:join", json!("r128")).await;
    assert_eq!(a["code"], "too_large", "{a}");

    // Private messages only to users who exist: online or already talked to.
    let mut alice = in_room(&p, "alice", "x").await;
    let _bob = user(&p, "bob").await;
    let a = alice
        .ack(
            "private:send",
            json!({ "toUserId": "bob", "content": "hi" }),
        )
        .await;
    assert_eq!(a["success"], true, "{a}");
    for i in 0..50 {
        let a = alice
            .ack(
                "private:send",
                json!({ "toUserId": format!("ghost{i}"), "content": "hi" }),
            )
            .await;
        assert_eq!(a["code"], "not_found", "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_to_anyone_are_rate_limited_like_messages() {
    // Default policy (`any`): limited by the per-user message rate.
    let p = Proc::start(&["--database-url", "memory"]);
    let mut alice = user(&p, "alice").await;
    let (mut ok, mut limited) = (0, 0);
    // 150 sends: the refusals stay under the 100 that would disconnect.
    for i in 0..150 {
        let a = alice
            .ack(
                "private:send",
                json!({ "toUserId": format!("ghost{i}"), "content": "hi" }),
            )
            .await;
        match a["success"].as_bool() {
            Some(true) => ok += 1,
            _ if a["code"] == "rate_limited" => limited += 1,
            _ => panic!("{a}"),
        }
    }
    println!("private:send to 150 unknown users: {ok} stored, {limited} rate_limited");
    assert!(ok <= 60 + 20, "{ok} stored: more than the burst allows");
    assert!(limited > 0);
}

/// A refreshed token that narrows `rooms` narrows the socket: it leaves the
/// rooms no longer allowed (the others see it leave), hears `room:left`, and
/// cannot join them again; a room still allowed is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_narrows_rooms_leaves_the_rooms_it_no_longer_allows() {
    let p = Proc::start(&["--database-url", "memory"]);
    let wide = |sub: &str, rooms: &[&str]| {
        switchboard::mint_hs256(
            crate::common::SECRET.as_bytes(),
            &switchboard::TokenSpec {
                sub: sub.into(),
                ttl_secs: 600,
                rooms: Some(rooms.iter().map(|r| r.to_string()).collect()),
                ..Default::default()
            },
        )
    };
    let mut alice = connect(&p, &wide("alice", &["team-*", "general", "doc:notes"]))
        .await
        .unwrap();
    for room in ["team-red", "general"] {
        let a = alice.ack("room:join", json!(room)).await;
        assert_eq!(a["success"], true, "{a}");
    }
    let doc = alice.ack("doc:join", json!({ "docId": "notes" })).await;
    assert_eq!(doc["success"], true, "{doc}");
    let bob = crate::in_room(&p, "bob", "team-red").await;
    let refreshed = alice
        .ack(
            "auth:refresh",
            json!({ "token": wide("alice", &["general"]) }),
        )
        .await;
    assert_eq!(refreshed["success"], true, "{refreshed}");
    let left = alice
        .try_recv("room:left", Duration::from_secs(2))
        .await
        .expect("room:left");
    assert_eq!(left, json!({ "roomId": "team-red", "reason": "token" }));
    let doc_left = alice
        .try_recv("doc:left", Duration::from_secs(2))
        .await
        .expect("doc:left");
    assert_eq!(doc_left, json!({ "docId": "notes", "reason": "token" }));
    let op = alice
        .ack(
            "doc:operation",
            json!({ "docId": "notes", "version": 0, "type": "insert", "position": 0, "content": "x" }),
        )
        .await;
    assert_eq!(op["code"], "not_in_room", "no longer in the document: {op}");
    assert_eq!(bob.recv("room:user-left").await["userId"], "alice");
    let members = alice.ack("room:members", json!("general")).await;
    assert_eq!(
        members["success"], true,
        "general is still allowed: {members}"
    );
    let again = alice.ack("room:join", json!("team-red")).await;
    assert_eq!(again["code"], "forbidden_room", "{again}");
    let send = alice
        .ack(
            "chat:send",
            json!({ "roomId": "team-red", "content": "still here?" }),
        )
        .await;
    assert_eq!(send["success"], false, "{send}");
    crate::assert_no_panic(&p);
}
