//! The Rust Hub, as an embedding backend uses it: every BroadcastService
//! operation (to user, room, room except, all, several rooms, user with ack).

use std::time::Duration;

use serde_json::json;
use switchboard::{Audience, HubError};

use crate::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn every_broadcast_operation() {
    let s = server().await;
    let hub = &s.hub;
    let mut a = s.in_room("alice", "red").await;
    a.ack("room:join", json!("vip")).await;
    let b = s.in_room("bob", "blue").await;
    let c = s.in_room("carol", "red").await;

    hub.emit("/", &Audience::users(["bob"]), "e", &json!(1))
        .await
        .unwrap();
    assert_eq!(b.recv("e").await, 1);
    hub.emit("/", &Audience::rooms(["red"]), "e", &json!(2))
        .await
        .unwrap();
    assert_eq!(a.recv("e").await, 2);
    assert_eq!(c.recv("e").await, 2);
    hub.emit(
        "/",
        &Audience::rooms(["red"]).except(["vip"]),
        "e",
        &json!(3),
    )
    .await
    .unwrap();
    assert_eq!(c.recv("e").await, 3);
    a.expect_none("e", QUIET).await;
    hub.emit("/", &Audience::everyone(), "e", &json!(4))
        .await
        .unwrap();
    for x in [&a, &b, &c] {
        assert_eq!(x.recv("e").await, 4);
    }
    hub.emit("/", &Audience::rooms(["red", "blue"]), "e", &json!(5))
        .await
        .unwrap();
    for x in [&a, &b, &c] {
        assert_eq!(x.recv("e").await, 5);
    }

    b.auto_ack("ask", json!("yes"));
    let acks = hub
        .emit_to_user_with_ack("/", "bob", "ask", &json!({}), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(acks, [json!("yes")]);
    assert!(matches!(
        hub.emit_to_user_with_ack("/", "carol", "ask", &json!({}), Duration::from_millis(200))
            .await,
        Err(HubError::TimedOut(_))
    ));
    assert!(matches!(
        hub.emit_to_user_with_ack("/", "nobody", "ask", &json!({}), Duration::from_millis(200))
            .await,
        Err(HubError::NotConnected)
    ));
    assert!(matches!(
        hub.emit("/nope", &Audience::everyone(), "e", &json!(0))
            .await,
        Err(HubError::UnknownNamespace(_))
    ));
    let m = hub
        .post_message("/", "red", json!("from the backend"), None)
        .await
        .unwrap();
    assert_eq!(a.recv("chat:message").await["id"], m.id.as_str());
}
