//! Several real switchboard processes sharing Redis (a key prefix per test)
//! and one PostgreSQL: clients on different nodes see each other.

#[path = "realtime/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::time::{Duration, Instant};

use client::Client;
use common::{PgDb, Proc, Proxy, readyz, token};
use serde_json::json;

/// The Redis the test command started (`host:port`), else the usual one.
fn redis() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
}
const KEY: &str = "cluster-test-api-key";

/// A Redis key prefix of this test's own.
fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sbtest-{}-{nanos}", std::process::id())
}

fn node(redis: &str, prefix: &str, db: &str) -> Proc {
    Proc::start(&[
        "--redis-url",
        &format!("redis://{redis}"),
        "--redis-prefix",
        prefix,
        "--database-url",
        db,
        "--api-key",
        KEY,
    ])
}

async fn join(p: &Proc, sub: &str, room: &str) -> Client {
    let mut c = Client::connect(p.addr, "/", Some(json!({ "token": token(sub) })))
        .await
        .unwrap_or_else(|e| panic!("connect {sub}: {e:?}"));
    assert_eq!(c.ack("room:join", json!(room)).await["success"], true);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_rooms_messages_typing_and_acks() {
    let db = PgDb::create().await;
    let pre = prefix();
    let nodes: Vec<Proc> = (0..3).map(|_| node(&redis(), &pre, &db.url)).collect();
    let mut a = join(&nodes[0], "alice", "general").await;
    let b = join(&nodes[1], "bob", "general").await;
    let c = join(&nodes[2], "carol", "general").await;

    // A message from node A reaches B and C.
    let sent = a
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "hello cluster" }),
        )
        .await;
    assert_eq!(sent["success"], true);
    for x in [&b, &c] {
        assert_eq!(x.recv("chat:message").await["content"], "hello cluster");
    }
    // Typing crosses nodes too.
    b.emit("typing:start", json!("general"));
    assert_eq!(a.recv("typing:user").await["userId"], "bob");

    // Writers on every node: seq stays gap-free (one PostgreSQL).
    let mut writers = Vec::new();
    for (i, p) in nodes.iter().enumerate() {
        let mut w = join(p, &format!("w{i}"), "busy").await;
        writers.push(tokio::spawn(async move {
            let rxs: Vec<_> = (0..40)
                .map(|k| {
                    w.emit_ack(
                        "chat:send",
                        json!({ "roomId": "busy", "content": format!("{k}") }),
                    )
                })
                .collect();
            let mut seqs = Vec::new();
            for rx in rxs {
                let a = tokio::time::timeout(Duration::from_secs(20), rx)
                    .await
                    .unwrap()
                    .unwrap();
                seqs.push(a["seq"].as_u64().unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=120).collect::<Vec<_>>());

    // The HTTP API on node A reaches a socket on node C, with its ack.
    c.auto_ack("confirm", json!({ "from": "carol" }));
    let res = reqwest::Client::new()
        .post(format!("http://{}/api/users/carol/emit", nodes[0].addr))
        .bearer_auth(KEY)
        .json(&json!({ "event": "confirm", "data": {}, "ackTimeoutMs": 3000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["acks"], json!([{ "from": "carol" }]));
    // Presence of a user connected elsewhere, and disconnecting them from here.
    let res = reqwest::Client::new()
        .get(format!("http://{}/api/users/carol/presence", nodes[1].addr))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({ "online": true, "connections": 1 })
    );
    let res = reqwest::Client::new()
        .post(format!(
            "http://{}/api/users/carol/disconnect",
            nodes[0].addr
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["disconnected"],
        1
    );
    assert!(c.closed(Duration::from_secs(5)).await);
    drop(nodes);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_then_delivery_resumes_without_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/c.db", dir.path().display());
    let proxy = Proxy::start(redis().parse().unwrap()).await;
    let pre = prefix();
    let a_node = node(&proxy.addr.to_string(), &pre, &db);
    let b_node = node(&proxy.addr.to_string(), &pre, &db);
    let mut a = join(&a_node, "alice", "general").await;
    let b = join(&b_node, "bob", "general").await;
    a.ack(
        "chat:send",
        json!({ "roomId": "general", "content": "before" }),
    )
    .await;
    assert_eq!(b.recv("chat:message").await["content"], "before");

    proxy.cut();
    // Each node keeps serving its own clients.
    let local = a
        .ack(
            "chat:send",
            json!({ "roomId": "general", "content": "during" }),
        )
        .await;
    assert_eq!(local["success"], true, "{local}");
    assert_eq!(a.recv("chat:message").await["content"], "before");
    assert_eq!(a.recv("chat:message").await["content"], "during");
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(a_node.addr).await != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 with Redis gone"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Joining still answers at once (this node's view of presence).
    let t = Instant::now();
    let j = a.ack("room:join", json!("other")).await;
    assert_eq!(j["success"], true);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "join waited on Redis: {:?}",
        t.elapsed()
    );

    proxy.restore();
    // Delivery across nodes resumes by itself; measure how long it takes.
    let restored = Instant::now();
    let mut n = 0;
    let gap = loop {
        n += 1;
        a.emit(
            "chat:send",
            json!({ "roomId": "general", "content": format!("after-{n}") }),
        );
        if let Some(m) = b.try_recv("chat:message", Duration::from_millis(250)).await
            && m["content"].as_str().unwrap_or("").starts_with("after-")
        {
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(20),
            "no delivery 20 s after Redis came back"
        );
    };
    eprintln!("cross-node delivery resumed {gap:?} after Redis came back");
    for n in [&a_node, &b_node] {
        let log = n.log();
        assert!(
            log.matches("redis unreachable").count() <= 1,
            "an outage is logged once:\n{log}"
        );
    }
    assert_eq!(a_node.log().matches("redis unreachable").count(), 1);
    assert!(a_node.log().contains("redis is back"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(a_node.addr).await != 200 {
        assert!(Instant::now() < deadline, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn members(p: &Proc, room: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{}/api/rooms/{room}/members", p.addr))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["members"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_per_user_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/p.db", dir.path().display());
    let pre = prefix();
    let (n1, n2) = (node(&redis(), &pre, &db), node(&redis(), &pre, &db));
    let mut watcher = join(&n1, "watcher", "lobby").await;
    let tab_a = join(&n1, "alice", "lobby").await;
    assert_eq!(watcher.recv("room:user-joined").await["userId"], "alice");
    let mut tab_b = join(&n2, "alice", "lobby").await;
    // A second tab on another node is not a new member.
    watcher
        .expect_none("room:user-joined", Duration::from_millis(400))
        .await;
    let m = watcher.ack("room:members", json!("lobby")).await;
    assert_eq!(
        m["members"],
        json!([
            { "userId": "alice", "username": "alice", "connections": 2 },
            { "userId": "watcher", "username": "watcher", "connections": 1 },
        ])
    );
    assert_eq!(members(&n2, "lobby").await, m["members"]);
    // The tab on node 1 goes: alice is still there (node 2).
    tab_a.close();
    watcher
        .expect_none("room:user-left", Duration::from_millis(500))
        .await;
    // The last one goes: now she left, and everyone hears it once.
    tab_b.ack("room:leave", json!("lobby")).await;
    assert_eq!(watcher.recv("room:user-left").await["userId"], "alice");
    let m = members(&n2, "lobby").await;
    assert_eq!(m.as_array().unwrap().len(), 1, "{m}");
}

/// The node ids in the prefix's node set.
async fn nodes_in_redis(redis: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(format!("redis://{redis}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:nodes"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_node_leaves_redis_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/s.db", dir.path().display());
    let pre = prefix();
    let stays = node(&redis(), &pre, &db);
    let leaves = node(&redis(), &pre, &db);
    let mut watcher = join(&stays, "watcher", "lobby").await;
    let _bob = join(&leaves, "bob", "lobby").await;
    assert_eq!(watcher.recv("room:user-joined").await["userId"], "bob");
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes_in_redis(&redis(), &pre).await.len() < 2 {
        assert!(Instant::now() < deadline, "both nodes in {pre}:nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut leaves = leaves;
    let stopped = Instant::now();
    leaves.terminate();
    assert!(
        leaves.child.wait().unwrap().success(),
        "clean exit on SIGTERM"
    );
    // Its heartbeat key is gone when the process is: before, it stayed for
    // NODE_TTL (10 s) and a survivor's next heartbeat, and so did the
    // node's users in the rooms.
    let client = redis::Client::open(format!("redis://{}", redis())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{pre}:node:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "heartbeat keys after a clean stop: {keys:?}");
    // The survivor takes the share back at its next heartbeat (3 s) and
    // tells the room.
    let gone = watcher
        .try_recv("room:user-left", Duration::from_secs(10))
        .await
        .expect("room:user-left for the stopped node's user");
    let took = stopped.elapsed();
    eprintln!("stopped node's user left after {took:?}");
    assert_eq!(gone, json!({ "userId": "bob", "roomId": "lobby" }));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let left = nodes_in_redis(&redis(), &pre).await;
    assert_eq!(left.len(), 1, "nodes after a clean stop: {left:?}");
    let m = watcher.ack("room:members", json!("lobby")).await;
    assert_eq!(m["members"].as_array().unwrap().len(), 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let pre = prefix();
    let survivor = node(&redis(), &pre, &db);
    let doomed = node(&redis(), &pre, &db);
    let mut watcher = join(&survivor, "watcher", "lobby").await;
    let _bob = join(&doomed, "bob", "lobby").await;
    assert_eq!(watcher.recv("room:user-joined").await["userId"], "bob");
    assert_eq!(
        members(&survivor, "lobby").await.as_array().unwrap().len(),
        2
    );
    let killed = Instant::now();
    doomed.kill();
    let left = watcher
        .try_recv("room:user-left", Duration::from_secs(20))
        .await
        .expect("room:user-left for the dead node's user");
    let took = killed.elapsed();
    eprintln!("dead node's user left after {took:?}");
    assert_eq!(left, json!({ "userId": "bob", "roomId": "lobby" }));
    assert!(took <= Duration::from_secs(15), "took {took:?}");
    let m = watcher.ack("room:members", json!("lobby")).await;
    assert_eq!(m["members"].as_array().unwrap().len(), 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_on_one_node_gets_events_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/e.db", dir.path().display());
    let pre = prefix();
    let (n1, n2) = (node(&redis(), &pre, &db), node(&redis(), &pre, &db));
    let res = reqwest::get(format!(
        "http://{}/events?token={}",
        n1.addr,
        token("alice")
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    wait_for(&mut stream, &mut seen, "event: connected").await;
    // A private message sent by a socket on node 2.
    let mut bob = Client::connect(n2.addr, "/", Some(json!({ "token": token("bob") })))
        .await
        .unwrap();
    let a = bob
        .ack(
            "private:send",
            json!({ "toUserId": "alice", "content": "across" }),
        )
        .await;
    assert_eq!(a["success"], true);
    wait_for(&mut stream, &mut seen, "event: private:message").await;
    assert!(seen.contains("across"));
    // A backend emit through node 2's API.
    let res = reqwest::Client::new()
        .post(format!("http://{}/api/users/alice/emit", n2.addr))
        .bearer_auth(KEY)
        .json(&json!({ "event": "invoice", "data": { "id": 42 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    wait_for(&mut stream, &mut seen, "event: invoice").await;
    // Delivered once, not once per node.
    assert_eq!(seen.matches("event: private:message").count(), 1);
}

/// Reads the SSE stream into `seen` until it contains `needle`.
async fn wait_for(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    seen: &mut String,
    needle: &str,
) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle} on the SSE stream: {seen}"))
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}
