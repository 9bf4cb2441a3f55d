//! Chat messages: acks, broadcasts, order, de-duplication, history, bad input.

use std::time::Duration;

use serde_json::{Value, json};

use crate::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn send_is_acked_and_reaches_the_room() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let outsider = s.in_room("carol", "random").await;
    let mut alice = s.in_room("alice", "general").await;
    let a = alice
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "<b>hi</b> & bye" }),
        )
        .await;
    assert_eq!(a["success"], true);
    assert_eq!(a["seq"], 1);
    let id = a["messageId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    for c in [&bob, &alice] {
        let m = c.recv("chat:message").await;
        assert_eq!(m["id"], id.as_str());
        assert_eq!(m["roomId"], "general");
        assert_eq!(m["senderId"], "alice");
        assert_eq!(m["senderName"], "Alice");
        assert_eq!(m["content"], "<b>hi</b> & bye", "stored verbatim");
        assert_eq!(m["type"], "text");
        assert_eq!(m["seq"], 1);
        assert!(m["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
    outsider.expect_none("chat:message", QUIET).await;
}

#[tokio::test]
async fn chat_message_dialect() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;
    let a = alice
        .ack(
            "chat:message",
            json!({ "roomId": "general", "text": "hello" }),
        )
        .await;
    assert_eq!(a["success"], true);
    assert_eq!(bob.recv("chat:message").await["content"], "hello");
    // Without a callback it is still delivered.
    alice.emit(
        "chat:message",
        json!({ "roomId": "general", "text": "again" }),
    );
    assert_eq!(bob.recv("chat:message").await["seq"], 2);
}

#[tokio::test]
async fn only_members_post() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.user("alice").await;
    assert_refused(
        &alice
            .ack("chat:send", json!({ "roomId": "general", "content": "x" }))
            .await,
        "not_in_room",
    );
    bob.expect_none("chat:message", QUIET).await;
}

#[tokio::test]
async fn malformed_sends_get_error_acks() {
    let s = server_with(|c| c.max_message_chars = 10).await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!(null), "invalid_payload"),
        (json!("general"), "invalid_payload"),
        (json!(17), "invalid_payload"),
        (json!({ "content": "x" }), "invalid_payload"),
        (json!({ "roomId": 5, "content": "x" }), "invalid_payload"),
        (
            json!({ "roomId": "bad room", "content": "x" }),
            "invalid_payload",
        ),
        (json!({ "roomId": "general" }), "invalid_payload"),
        (
            json!({ "roomId": "general", "content": "" }),
            "invalid_payload",
        ),
        (
            json!({ "roomId": "general", "content": "   " }),
            "invalid_payload",
        ),
        (
            json!({ "roomId": "general", "content": 12 }),
            "invalid_payload",
        ),
        (
            json!({ "roomId": "general", "content": ["x"] }),
            "invalid_payload",
        ),
        (
            json!({ "roomId": "general", "content": "01234567890" }),
            "too_large",
        ),
        (
            json!({ "roomId": "general", "content": "x", "clientMsgId": 3 }),
            "invalid_payload",
        ),
        (
            json!({ "roomId": "general", "content": "x", "clientMsgId": "" }),
            "invalid_payload",
        ),
        (
            json!({ "roomId": "general", "content": "x", "clientMsgId": "c".repeat(129) }),
            "invalid_payload",
        ),
    ];
    for (payload, code) in cases {
        let a = alice.ack("chat:send", payload.clone()).await;
        assert_refused(&a, code);
    }
    // Ten characters (not bytes) is the limit: accented letters count once.
    let a = alice
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "éééééééééé" }),
        )
        .await;
    assert_eq!(a["success"], true, "{a}");
    assert_eq!(a["seq"], 1, "no refused message took a seq");
    // Malformed events without a callback are dropped without harm.
    alice.emit("chat:send", json!({ "roomId": 1 }));
    let a = alice
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "still here" }),
        )
        .await;
    assert_eq!(a["seq"], 2);
    assert_eq!(bob.recv("chat:message").await["seq"], 1);
    assert_eq!(bob.recv("chat:message").await["seq"], 2);
}

#[tokio::test]
async fn broken_packets_close_only_that_connection() {
    let s = server().await;
    let mut bob = s.in_room("bob", "general").await;
    let alice = s.in_room("alice", "general").await;
    // Not JSON at all: the packet cannot be parsed, so (as with Node's
    // server) that connection is closed; nobody else notices.
    alice.send_raw("42[\"chat:send\", {\"roomId\": ".into());
    assert!(
        alice.closed(WAIT).await,
        "broken packet should close the socket"
    );
    assert_eq!(bob.recv("room:user-left").await["userId"], "alice");
    let a = bob
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "fine" }),
        )
        .await;
    assert_eq!(a["success"], true);
}

#[tokio::test]
async fn client_msg_id_retries_store_once() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;
    let payload = json!({ "roomId": "general", "content": "once", "clientMsgId": "m-1" });
    let first = alice.ack("chat:send", payload.clone()).await;
    let retry = alice.ack("chat:send", payload.clone()).await;
    assert_eq!(first["messageId"], retry["messageId"]);
    assert_eq!(first["seq"], retry["seq"]);
    assert_eq!(retry["success"], true);
    bob.recv("chat:message").await;
    bob.expect_none("chat:message", QUIET).await;
    // The same clientMsgId from another user is another message.
    let mut bob = bob;
    let other = bob.ack("chat:send", payload).await;
    assert_ne!(other["messageId"], first["messageId"]);
    assert_eq!(other["seq"], 2);
    let h = bob
        .ack("chat:history", json!({ "roomId": "general" }))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
}

// Multi-threaded, as in production: a single-threaded runtime runs spawned
// handlers in order and would hide reordering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_back_to_back_sends_stay_in_order() {
    // The subject is ordering, not the rate limits (tests/abuse has those).
    let s = crate::server_with(|c| {
        c.message_burst = 1000;
        c.event_burst = 1000;
    })
    .await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.user("alice").await;
    // Not awaiting the join: events from one socket are handled in order.
    alice.emit("room:join", json!("general"));
    let acks: Vec<_> = (1..=300)
        .map(|i| {
            alice.emit_ack(
                "chat:send",
                json!({ "roomId": "general", "content": format!("m{i}") }),
            )
        })
        .collect();
    for (i, rx) in acks.into_iter().enumerate() {
        let a = tokio::time::timeout(WAIT, rx).await.unwrap().unwrap();
        assert_eq!(a["success"], true, "{a}");
        assert_eq!(a["seq"], i as u64 + 1);
    }
    for i in 1..=300u64 {
        let m = bob.recv("chat:message").await;
        assert_eq!(m["seq"], i);
        assert_eq!(m["content"], format!("m{i}"));
    }
}

#[tokio::test]
async fn history_pages_oldest_first() {
    let s = server().await;
    let mut alice = s.in_room("alice", "general").await;
    for i in 1..=25 {
        alice
            .ack(
                "chat:send",
                json!({ "roomId": "general", "content": format!("m{i}") }),
            )
            .await;
    }
    let seqs = |v: &Value| -> Vec<u64> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let h = alice
        .ack("chat:history", json!({ "roomId": "general" }))
        .await;
    assert_eq!(h["success"], true);
    assert_eq!(seqs(&h), (1..=25).collect::<Vec<_>>());
    let h = alice
        .ack("chat:history", json!({ "roomId": "general", "limit": 5 }))
        .await;
    assert_eq!(seqs(&h), [21, 22, 23, 24, 25]);
    let h = alice
        .ack(
            "chat:history",
            json!({ "roomId": "general", "before": 21, "limit": 5 }),
        )
        .await;
    assert_eq!(seqs(&h), [16, 17, 18, 19, 20]);
    let h = alice
        .ack(
            "chat:history",
            json!({ "roomId": "general", "before": 3, "limit": 100 }),
        )
        .await;
    assert_eq!(seqs(&h), [1, 2]);
    // Catching up: after the last seq the client holds, oldest first.
    let h = alice
        .ack(
            "chat:history",
            json!({ "roomId": "general", "after": 3, "limit": 4 }),
        )
        .await;
    assert_eq!(seqs(&h), [4, 5, 6, 7]);
    let h = alice
        .ack("chat:history", json!({ "roomId": "general", "after": 22 }))
        .await;
    assert_eq!(seqs(&h), [23, 24, 25]);
    let h = alice
        .ack("chat:history", json!({ "roomId": "general", "after": 25 }))
        .await;
    assert_eq!(seqs(&h), Vec::<u64>::new());
    let h = alice
        .ack("chat:history", json!({ "roomId": "empty-room" }))
        .await;
    assert_eq!(seqs(&h), Vec::<u64>::new());
    for bad in [
        json!({ "roomId": "general", "limit": 0 }),
        json!({ "roomId": "general", "limit": 101 }),
        json!({ "roomId": "general", "limit": -1 }),
        json!({ "roomId": "general", "limit": "5" }),
        json!({ "roomId": "general", "before": "x" }),
        json!({ "roomId": "general", "after": -1 }),
        json!({ "roomId": "general", "before": 9, "after": 3 }),
        json!({ "roomId": "no space" }),
        json!({}),
        json!("general"),
    ] {
        assert_refused(&alice.ack("chat:history", bad).await, "invalid_payload");
    }
}

#[tokio::test]
async fn ping_pong_and_unknown_events() {
    let s = server().await;
    let mut alice = s.user("alice").await;
    alice.emit("ping", json!({ "ts": 1234 }));
    let pong = alice.recv("pong").await;
    assert_eq!(pong["ts"], 1234);
    assert!(pong["serverTs"].as_u64().unwrap() > 1_700_000_000_000);
    // A large stamp is not echoed (the server would write, and keep a
    // buffer of, a frame as large as the client's).
    let big = json!({ "ts": "x".repeat(400_000) });
    assert_refused(&alice.ack("ping", big).await, "invalid_payload");
    alice
        .expect_none("pong", std::time::Duration::from_millis(200))
        .await;
    assert_refused(&alice.ack("no:such-event", json!({})).await, "not_found");
}
