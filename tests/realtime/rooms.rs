//! Rooms and presence: joins, leaves, members, two tabs, disconnects, tenants.

use std::time::Duration;

use serde_json::json;

use crate::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn join_and_leave_tell_the_others() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.user("alice").await;
    let a = alice.ack("room:join", json!({ "roomId": "general" })).await;
    assert_eq!(a["success"], true);
    assert_eq!(a["roomId"], "general");
    let ids: Vec<_> = a["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
    assert_eq!(
        bob.recv("room:user-joined").await,
        json!({ "userId": "alice", "username": "Alice", "roomId": "general" })
    );
    alice.expect_none("room:user-joined", QUIET).await;

    let a = alice.ack("room:leave", json!("general")).await;
    assert_eq!(a, json!({ "success": true, "roomId": "general" }));
    assert_eq!(
        bob.recv("room:user-left").await,
        json!({ "userId": "alice", "roomId": "general" })
    );
    assert_refused(
        &alice.ack("room:leave", json!("general")).await,
        "not_in_room",
    );
}

#[tokio::test]
async fn chat_join_dialect() {
    let s = server().await;
    let bob = s.in_room("bob", "lobby").await;
    let mut alice = s.user("alice").await;
    let a = alice.ack("chat:join", json!("lobby")).await;
    assert_eq!(a["success"], true);
    assert_eq!(
        bob.recv("chat:userJoined").await,
        json!({ "id": "alice", "name": "Alice", "roomId": "lobby" })
    );
}

#[tokio::test]
async fn two_tabs_are_one_member() {
    let s = server().await;
    let mut bob = s.in_room("bob", "general").await;
    let tab1 = s.in_room("alice", "general").await;
    bob.recv("room:user-joined").await;
    let mut tab2 = s.in_room("alice", "general").await;
    bob.expect_none("room:user-joined", QUIET).await;

    let m = bob.ack("room:members", json!("general")).await;
    assert_eq!(
        m["members"],
        json!([
            { "userId": "alice", "username": "Alice", "connections": 2 },
            { "userId": "bob", "username": "Bob", "connections": 1 },
        ])
    );
    // The first tab closing is not the user leaving.
    tab1.close();
    bob.expect_none("room:user-left", Duration::from_millis(500))
        .await;
    let m = bob.ack("room:members", json!("general")).await;
    assert_eq!(m["members"][0]["connections"], 1);
    // The last one is.
    tab2.ack("room:leave", json!("general")).await;
    assert_eq!(bob.recv("room:user-left").await["userId"], "alice");
    let m = bob
        .ack("room:members", json!({ "roomId": "general" }))
        .await;
    assert_eq!(m["members"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn disconnect_leaves_every_room() {
    let s = server().await;
    let mut bob = s.in_room("bob", "a").await;
    bob.ack("room:join", json!("b")).await;
    let mut alice = s.in_room("alice", "a").await;
    alice.ack("room:join", json!("b")).await;
    bob.recv("room:user-joined").await;
    bob.recv("room:user-joined").await;
    alice.close();
    let mut left = vec![
        bob.recv("room:user-left").await["roomId"].clone(),
        bob.recv("room:user-left").await["roomId"].clone(),
    ];
    left.sort_by_key(|v| v.to_string());
    assert_eq!(left, [json!("a"), json!("b")]);
    for room in ["a", "b"] {
        let m = bob.ack("room:members", json!(room)).await;
        assert_eq!(m["members"].as_array().unwrap().len(), 1, "{m}");
    }
}

#[tokio::test]
async fn bad_room_ids_are_refused() {
    let s = server().await;
    let mut c = s.user("alice").await;
    let long = "x".repeat(129);
    let bad = [
        json!(""),
        json!(long),
        json!("has space"),
        json!("semi;colon"),
        json!("über"),
        json!(42),
        json!(null),
        json!(["general"]),
        json!({}),
        json!({ "roomId": 7 }),
    ];
    for event in ["room:join", "chat:join", "room:leave", "room:members"] {
        for payload in &bad {
            let a = c.ack(event, payload.clone()).await;
            assert_refused(&a, "invalid_payload");
        }
    }
    // An event with no argument at all.
    assert_refused(&c.ack_args(json!(["room:join"])).await, "invalid_payload");
    // The longest valid id works.
    let a = c.ack("room:join", json!("y".repeat(128))).await;
    assert_eq!(a["success"], true);
}

#[tokio::test]
async fn token_room_patterns_limit_joins() {
    let s = server().await;
    let t = token_with(TokenSpec {
        sub: "carol".into(),
        ttl_secs: 600,
        rooms: Some(vec!["team-*".into(), "general".into()]),
        ..TokenSpec::default()
    });
    let mut c = Client::connect(s.addr, "/", Some(json!({ "token": t })))
        .await
        .unwrap();
    assert_eq!(c.ack("room:join", json!("team-red")).await["success"], true);
    assert_eq!(c.ack("room:join", json!("general")).await["success"], true);
    assert_refused(&c.ack("room:join", json!("random")).await, "forbidden_room");
    assert_refused(
        &c.ack("room:members", json!("random")).await,
        "forbidden_room",
    );
    assert_refused(
        &c.ack("chat:history", json!({ "roomId": "random" })).await,
        "forbidden_room",
    );
}

#[tokio::test]
async fn tenants_are_isolated() {
    let s = server().await;
    let mut root_bob = s.user("bob").await;
    root_bob.ack("room:join", json!("general")).await;
    let mut acme_bob = s.user_ns("bob", "/acme").await;
    acme_bob.ack("room:join", json!("general")).await;
    let mut acme_alice = s.user_ns("alice", "/acme").await;
    acme_alice.ack("room:join", json!("general")).await;
    assert_eq!(acme_bob.recv("room:user-joined").await["userId"], "alice");
    root_bob.expect_none("room:user-joined", QUIET).await;

    let sent = acme_alice
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "acme only" }),
        )
        .await;
    assert_eq!(sent["seq"], 1);
    assert_eq!(acme_bob.recv("chat:message").await["content"], "acme only");
    root_bob.expect_none("chat:message", QUIET).await;
    let m = root_bob.ack("room:members", json!("general")).await;
    assert_eq!(m["members"].as_array().unwrap().len(), 1);
    let h = root_bob
        .ack("chat:history", json!({ "roomId": "general" }))
        .await;
    assert_eq!(h["messages"], json!([]));
}
