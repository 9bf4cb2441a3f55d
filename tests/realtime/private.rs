//! Private messages: delivery to the recipient's sockets and the sender's
//! other sockets, history per pair, bad input.

use std::time::Duration;

use serde_json::json;

use crate::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn private_messages_reach_both_users_other_sockets() {
    let s = server().await;
    let bob1 = s.user("bob").await;
    let bob2 = s.user("bob").await;
    let mut alice = s.user("alice").await;
    let alice_tab2 = s.user("alice").await;
    let carol = s.user("carol").await;
    let a = alice
        .ack(
            "private:send",
            json!({ "toUserId": "bob", "content": "psst" }),
        )
        .await;
    assert_eq!(a["success"], true, "{a}");
    for c in [&bob1, &bob2, &alice_tab2] {
        let m = c.recv("private:message").await;
        assert_eq!(m["id"], a["messageId"]);
        assert_eq!(m["toUserId"], "bob");
        assert_eq!(m["senderId"], "alice");
        assert_eq!(m["content"], "psst");
        assert!(m.get("roomId").is_none(), "{m}");
    }
    alice.expect_none("private:message", QUIET).await;
    carol.expect_none("private:message", QUIET).await;
}

#[tokio::test]
async fn private_history_is_per_pair() {
    let s = server().await;
    let mut alice = s.user("alice").await;
    let mut bob = s.user("bob").await;
    let mut carol = s.user("carol").await;
    alice
        .ack("private:send", json!({ "toUserId": "bob", "content": "1" }))
        .await;
    bob.ack(
        "private:send",
        json!({ "toUserId": "alice", "content": "2" }),
    )
    .await;
    carol
        .ack(
            "private:send",
            json!({ "toUserId": "alice", "content": "other" }),
        )
        .await;
    let h = bob
        .ack("chat:history", json!({ "withUserId": "alice" }))
        .await;
    let contents: Vec<_> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(contents, ["1", "2"]);
    assert_eq!(h["messages"][1]["seq"], 2);
    // Carol only ever sees her own conversation with Alice.
    let h = carol
        .ack("chat:history", json!({ "withUserId": "bob" }))
        .await;
    assert_eq!(h["messages"], json!([]));
    let h = carol
        .ack("chat:history", json!({ "withUserId": "alice" }))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_private_sends_are_refused() {
    let s = server_with(|c| c.max_message_chars = 5).await;
    let mut alice = s.user("alice").await;
    for (payload, code) in [
        (json!({ "content": "x" }), "invalid_payload"),
        (json!({ "toUserId": "", "content": "x" }), "invalid_payload"),
        (
            json!({ "toUserId": "u".repeat(129), "content": "x" }),
            "invalid_payload",
        ),
        (json!({ "toUserId": 5, "content": "x" }), "invalid_payload"),
        (json!({ "toUserId": "bob" }), "invalid_payload"),
        (
            json!({ "toUserId": "bob", "content": "" }),
            "invalid_payload",
        ),
        (
            json!({ "toUserId": "bob", "content": "toolong" }),
            "too_large",
        ),
        (json!("bob"), "invalid_payload"),
    ] {
        assert_refused(&alice.ack("private:send", payload).await, code);
    }
    for bad in [
        json!({ "withUserId": "" }),
        json!({ "withUserId": "bob", "roomId": "general" }),
        json!({ "withUserId": 3 }),
    ] {
        assert_refused(&alice.ack("chat:history", bad).await, "invalid_payload");
    }
    let dup = json!({ "toUserId": "bob", "content": "hi", "clientMsgId": "p1" });
    let a = alice.ack("private:send", dup.clone()).await;
    let b = alice.ack("private:send", dup).await;
    assert_eq!(a["messageId"], b["messageId"]);
}
