//! Typing indicators: broadcast once, expire by themselves, stop on send,
//! leave and disconnect.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn start_refresh_and_stop() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;
    alice.emit("typing:start", json!("general"));
    assert_eq!(
        bob.recv("typing:user").await,
        json!({ "userId": "alice", "username": "Alice", "roomId": "general" })
    );
    alice.expect_none("typing:user", QUIET).await;
    // A refresh inside the window is not re-broadcast.
    alice
        .ack("typing:start", json!({ "roomId": "general" }))
        .await;
    bob.expect_none("typing:user", QUIET).await;
    alice.emit("typing:stop", json!("general"));
    assert_eq!(
        bob.recv("typing:stopped").await,
        json!({ "userId": "alice", "roomId": "general" })
    );
    // Stopping again says nothing.
    alice.ack("typing:stop", json!("general")).await;
    bob.expect_none("typing:stopped", QUIET).await;
}

#[tokio::test]
async fn typing_stops_by_itself_after_six_seconds() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;
    let started = Instant::now();
    alice.ack("typing:start", json!("general")).await;
    bob.recv("typing:user").await;
    let stopped = bob
        .try_recv("typing:stopped", Duration::from_secs(9))
        .await
        .expect("typing:stopped after the window");
    let after = started.elapsed();
    assert_eq!(stopped["userId"], "alice");
    assert!(
        after >= Duration::from_millis(5_500) && after <= Duration::from_millis(7_500),
        "stopped after {after:?}"
    );
}

#[tokio::test]
async fn refresh_extends_the_window() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;
    let started = Instant::now();
    alice.ack("typing:start", json!("general")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    alice.ack("typing:start", json!("general")).await;
    let stopped = bob
        .try_recv("typing:stopped", Duration::from_secs(10))
        .await;
    assert!(stopped.is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(9_500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn send_leave_and_disconnect_stop_typing() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.in_room("alice", "general").await;

    alice.ack("typing:start", json!("general")).await;
    bob.recv("typing:user").await;
    alice
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "done" }),
        )
        .await;
    bob.recv("typing:stopped").await;

    alice.ack("typing:start", json!("general")).await;
    bob.recv("typing:user").await;
    alice.ack("room:leave", json!("general")).await;
    bob.recv("typing:stopped").await;

    alice.ack("room:join", json!("general")).await;
    alice.ack("typing:start", json!("general")).await;
    bob.recv("typing:user").await;
    alice.close();
    bob.recv("typing:stopped").await;
}

#[tokio::test]
async fn typing_outside_the_room_is_refused() {
    let s = server().await;
    let bob = s.in_room("bob", "general").await;
    let mut alice = s.user("alice").await;
    assert_refused(
        &alice.ack("typing:start", json!("general")).await,
        "not_in_room",
    );
    assert_refused(
        &alice.ack("typing:start", json!(5)).await,
        "invalid_payload",
    );
    bob.expect_none("typing:user", QUIET).await;
}
