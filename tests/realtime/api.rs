//! The backend HTTP API over real HTTP, with real socket clients receiving
//! what it sends.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::*;

pub const KEY: &str = "test-api-key-0123456789";
const QUIET: Duration = Duration::from_millis(300);

pub async fn api_server() -> Server {
    server_with(|c| {
        c.api_key = Some(KEY.into());
        c.max_payload_bytes = 4096;
    })
    .await
}

pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(s: &Server) -> Api {
        Api {
            base: format!("http://{}", s.addr),
            http: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn raw(&self, path: &str, body: &str, content_type: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn assert_error(got: (StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        got.1
    );
}

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let s = api_server().await;
    let url = format!("http://{}/api/users/alice/presence", s.addr);
    let http = reqwest::Client::new();
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "unauthorized");
    let res = http
        .get(&url)
        .bearer_auth("wrong-key-wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // Without --api-key (and not in dev mode) the API is off.
    let off = server().await;
    let res = http
        .get(format!("http://{}/api/users/alice/presence", off.addr))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "api_disabled");
}

#[tokio::test]
async fn emit_to_rooms_users_everyone_and_except() {
    let s = api_server().await;
    let api = Api::new(&s);
    let mut a = s.in_room("alice", "red").await;
    a.ack("room:join", json!("vip")).await;
    let b = s.in_room("bob", "blue").await;
    let c = s.in_room("carol", "red").await;
    let event = |n: &str| json!({ "event": "order:update", "data": { "n": n } });

    // One room.
    let mut body = event("1");
    body["rooms"] = json!(["red"]);
    let (st, v) = api.post("/api/emit", body).await;
    assert_eq!((st.as_u16(), v), (202, json!({ "accepted": true })));
    assert_eq!(a.recv("order:update").await["n"], "1");
    assert_eq!(c.recv("order:update").await["n"], "1");
    b.expect_none("order:update", QUIET).await;

    // Several rooms, except a room.
    let mut body = event("2");
    body["rooms"] = json!(["red", "blue"]);
    body["except"] = json!(["vip"]);
    assert_eq!(api.post("/api/emit", body).await.0, 202);
    assert_eq!(b.recv("order:update").await["n"], "2");
    assert_eq!(c.recv("order:update").await["n"], "2");
    a.expect_none("order:update", QUIET).await;

    // Users.
    let mut body = event("3");
    body["users"] = json!(["bob"]);
    assert_eq!(api.post("/api/emit", body).await.0, 202);
    assert_eq!(b.recv("order:update").await["n"], "3");
    c.expect_none("order:update", QUIET).await;

    // Everyone.
    assert_eq!(api.post("/api/emit", event("4")).await.0, 202);
    for client in [&a, &b, &c] {
        assert_eq!(client.recv("order:update").await["n"], "4");
    }

    // Another namespace only.
    let acme = s.user_ns("dave", "/acme").await;
    let mut body = event("5");
    body["namespace"] = json!("/acme");
    assert_eq!(api.post("/api/emit", body).await.0, 202);
    assert_eq!(acme.recv("order:update").await["n"], "5");
    a.expect_none("order:update", QUIET).await;
}

#[tokio::test]
async fn emit_to_user_with_ack() {
    let s = api_server().await;
    let api = Api::new(&s);
    let tab1 = s.user("alice").await;
    let tab2 = s.user("alice").await;
    tab1.auto_ack("confirm", json!({ "ok": 1 }));
    tab2.auto_ack("confirm", json!({ "ok": 2 }));
    let (st, v) = api
        .post(
            "/api/users/alice/emit",
            json!({ "event": "confirm", "data": { "order": 7 }, "ackTimeoutMs": 2000 }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut oks: Vec<_> = v["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ok"].clone())
        .collect();
    oks.sort_by_key(|v| v.as_i64());
    assert_eq!(oks, [json!(1), json!(2)]);
    assert_eq!(tab1.recv("confirm").await["order"], 7);

    // Without ackTimeoutMs: fire and forget.
    let (st, _) = api
        .post(
            "/api/users/alice/emit",
            json!({ "event": "note", "data": "hi" }),
        )
        .await;
    assert_eq!(st, 202);
    assert_eq!(tab2.recv("note").await, "hi");

    assert_error(
        api.post(
            "/api/users/nobody/emit",
            json!({ "event": "confirm", "ackTimeoutMs": 500 }),
        )
        .await,
        404,
        "not_connected",
    );
    // Connected but never acks.
    let _silent = s.user("bob").await;
    let started = std::time::Instant::now();
    assert_error(
        api.post(
            "/api/users/bob/emit",
            json!({ "event": "confirm", "ackTimeoutMs": 300 }),
        )
        .await,
        504,
        "ack_timeout",
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));
    for bad in [json!(0), json!(60_001), json!("5"), json!(-1)] {
        let (st, v) = api
            .post(
                "/api/users/alice/emit",
                json!({ "event": "x", "ackTimeoutMs": bad }),
            )
            .await;
        assert_eq!(st, 400, "{v}");
    }
}

#[tokio::test]
async fn post_and_read_room_messages() {
    let s = api_server().await;
    let api = Api::new(&s);
    let bob = s.in_room("bob", "general").await;
    let (st, m) = api
        .post(
            "/api/rooms/general/messages",
            json!({ "content": "Deploy at 5" }),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    assert_eq!(m["senderId"], "system");
    assert_eq!(m["seq"], 1);
    assert_eq!(bob.recv("chat:message").await["id"], m["id"]);
    let (st, m2) = api
        .post(
            "/api/rooms/general/messages",
            json!({ "content": "hi", "senderId": "ops-bot", "senderName": "Ops" }),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(
        (m2["senderName"].clone(), m2["seq"].clone()),
        (json!("Ops"), json!(2))
    );
    let (st, h) = api.get("/api/rooms/general/messages?limit=1").await;
    assert_eq!(st, 200);
    assert_eq!(h["messages"][0]["seq"], 2);
    let (_, h) = api.get("/api/rooms/general/messages?before=2").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    // Catching up from the last seq held: what came after it, oldest first.
    let (st, h) = api.get("/api/rooms/general/messages?after=1").await;
    assert_eq!(st, 200);
    assert_eq!(h["messages"][0]["seq"], 2);
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    let (_, h) = api.get("/api/rooms/general/messages?after=2").await;
    assert_eq!(h["messages"], json!([]));
    assert_error(
        api.get("/api/rooms/general/messages?after=1&before=2")
            .await,
        400,
        "invalid_payload",
    );

    assert_error(
        api.post("/api/rooms/general/messages", json!({ "content": "" }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/rooms/general/messages", json!({ "content": 5 }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/rooms/bad%20room/messages", json!({ "content": "x" }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.get("/api/rooms/general/messages?limit=0").await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.get("/api/rooms/general/messages?limit=abc").await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.get("/api/rooms/general/messages?limit=101").await,
        400,
        "invalid_payload",
    );
}

#[tokio::test]
async fn members_presence_and_disconnect() {
    let s = api_server().await;
    let api = Api::new(&s);
    let t1 = s.in_room("alice", "general").await;
    let t2 = s.in_room("alice", "general").await;
    let (st, m) = api.get("/api/rooms/general/members").await;
    assert_eq!(st, 200);
    assert_eq!(
        m["members"],
        json!([{ "userId": "alice", "username": "Alice", "connections": 2 }])
    );
    let (_, p) = api.get("/api/users/alice/presence").await;
    assert_eq!(p, json!({ "online": true, "connections": 2 }));
    let (_, p) = api.get("/api/users/zed/presence").await;
    assert_eq!(p, json!({ "online": false, "connections": 0 }));
    let (st, d) = api.post("/api/users/alice/disconnect", json!({})).await;
    assert_eq!(
        (st.as_u16(), d),
        (200, json!({ "disconnected": 2, "streams": 0 }))
    );
    assert!(t1.closed(WAIT).await && t2.closed(WAIT).await);
    let (_, p) = api.get("/api/users/alice/presence").await;
    assert_eq!(p["online"], false);
    let (_, m) = api.get("/api/rooms/general/members").await;
    assert_eq!(m["members"], json!([]));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let s = api_server().await;
    let api = Api::new(&s);
    assert_error(
        api.raw("/api/emit", "{not json", Some("application/json"))
            .await,
        400,
        "invalid_json",
    );
    assert_error(
        api.raw("/api/emit", "{\"event\":\"x\"}", None).await,
        400,
        "invalid_json",
    );
    assert_error(
        api.post("/api/emit", json!({ "event": 5 })).await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/emit", json!({ "data": 1 })).await,
        400,
        "invalid_payload",
    );
    // A typo must not turn a room emit into an emit to everyone.
    assert_error(
        api.post("/api/emit", json!({ "event": "x", "room": ["general"] }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/emit", json!({ "event": "x", "rooms": "general" }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/emit", json!({ "event": "x", "rooms": ["no space"] }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/emit", json!({ "event": "disconnect" }))
            .await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post("/api/emit", json!({ "event": "" })).await,
        400,
        "invalid_payload",
    );
    assert_error(
        api.post(
            "/api/emit",
            json!({ "event": "x", "namespace": "/nowhere" }),
        )
        .await,
        404,
        "unknown_namespace",
    );
    let big = json!({ "event": "x", "data": "y".repeat(10_000) });
    assert_error(api.post("/api/emit", big).await, 413, "too_large");
    assert_error(api.get("/api/nothing-here").await, 404, "not_found");
    assert_error(api.get("/api/emit").await, 405, "method_not_allowed");
    assert_error(
        api.get(&format!("/api/users/{}/presence", "u".repeat(129)))
            .await,
        400,
        "invalid_payload",
    );
}
