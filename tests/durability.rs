//! Durability with real processes: an acked message survives SIGKILL, seq
//! stays gap-free across processes, retries are recognised after a restart,
//! and a database outage gives `unavailable` acks and heals by itself.

#[path = "realtime/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::time::Duration;

use client::Client;
use common::{NO_RATE_LIMITS, PgDb, Proc, Proxy, readyz, token};
use serde_json::{Value, json};

async fn user(p: &Proc, sub: &str, room: &str) -> Client {
    let mut c = Client::connect(p.addr, "/", Some(json!({ "token": token(sub) })))
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}"));
    let a = c.ack("room:join", json!(room)).await;
    assert_eq!(a["success"], true, "{a}");
    c
}

/// Sends `n` messages back to back (pipelined) and checks every ack.
async fn send_many(c: &mut Client, room: &str, n: usize, tag: &str) -> Vec<Value> {
    let rxs: Vec<_> = (0..n)
        .map(|i| {
            c.emit_ack(
                "chat:send",
                json!({ "roomId": room, "content": format!("{tag}-{i}") }),
            )
        })
        .collect();
    let mut acks = Vec::new();
    for rx in rxs {
        let a = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("ack in time")
            .unwrap();
        assert_eq!(a["success"], true, "{a}");
        acks.push(a);
    }
    acks
}

/// The whole history of a room, paging backwards 100 at a time.
async fn full_history(c: &mut Client, room: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut q = json!({ "roomId": room, "limit": 100 });
        if let Some(b) = before {
            q["before"] = json!(b);
        }
        let h = c.ack("chat:history", q).await;
        assert_eq!(h["success"], true, "{h}");
        let page = h["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        before = page[0]["seq"].as_u64();
        let mut page = page;
        page.extend(all);
        all = page;
    }
    all
}

async fn crash_keeps_acked_messages(db: &str) {
    let p = Proc::start(&[&["--database-url", db][..], &NO_RATE_LIMITS].concat());
    let watcher = user(&p, "watcher", "durable").await;
    let mut c = user(&p, "alice", "durable").await;
    let acks = send_many(&mut c, "durable", 500, "m").await;
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a["seq"], i as u64 + 1, "pipelined acks keep their order");
    }
    for i in 0..500u64 {
        let m = watcher.recv("chat:message").await;
        assert_eq!(m["seq"], i + 1, "broadcasts keep their order");
    }
    p.kill();
    let p = Proc::start(&["--database-url", db]);
    let mut c = user(&p, "bob", "durable").await;
    let h = full_history(&mut c, "durable").await;
    assert_eq!(h.len(), 500);
    for (i, m) in h.iter().enumerate() {
        assert_eq!(m["seq"], i as u64 + 1, "contiguous seq");
        assert_eq!(m["content"], format!("m-{i}"));
        assert_eq!(m["id"], acks[i]["messageId"]);
    }
    // Numbering carries on after the restart.
    let more = send_many(&mut c, "durable", 1, "after").await;
    assert_eq!(more[0]["seq"], 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_keeps_acked_messages(&format!("sqlite://{}/chat.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_postgres() {
    let db = PgDb::create().await;
    crash_keeps_acked_messages(&db.url).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_one_postgres_keep_seq_gap_free() {
    let db = PgDb::create().await;
    let a = Proc::start(&["--database-url", &db.url]);
    let b = Proc::start(&["--database-url", &db.url]);
    let mut senders = Vec::new();
    for i in 0..8 {
        let p = if i % 2 == 0 { &a } else { &b };
        let mut c = user(p, &format!("u{i}"), "shared").await;
        senders.push(tokio::spawn(async move {
            let acks = send_many(&mut c, "shared", 60, &format!("u{i}")).await;
            acks.iter()
                .map(|a| a["seq"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for s in senders {
        let seqs = s.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    all.sort();
    assert_eq!(all, (1..=480).collect::<Vec<_>>(), "no gaps, no duplicates");
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_msg_id_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/chat.db", dir.path().display());
    let p = Proc::start(&["--database-url", &db]);
    let mut c = user(&p, "alice", "general").await;
    let payload = json!({ "roomId": "general", "content": "once", "clientMsgId": "retry-1" });
    let first = c.ack("chat:send", payload.clone()).await;
    assert_eq!(first["success"], true);
    p.kill();
    let p = Proc::start(&["--database-url", &db]);
    let mut c = user(&p, "alice", "general").await;
    let retry = c.ack("chat:send", payload).await;
    assert_eq!(retry["success"], true);
    assert_eq!(retry["messageId"], first["messageId"]);
    assert_eq!(full_history(&mut c, "general").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_unavailable_then_heals() {
    let db = PgDb::create().await;
    // The server's address in the URL (postgres://user@host:port/db).
    let host_port = db.url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let proxy = Proxy::start(host_port.parse().unwrap()).await;
    let url = db.url.replace(host_port, &proxy.addr.to_string());
    assert_ne!(url, db.url, "the store must go through the proxy");
    let p = Proc::start(&["--database-url", &url]);
    let mut c = user(&p, "alice", "general").await;
    let bob = user(&p, "bob", "general").await;
    assert_eq!(send_many(&mut c, "general", 3, "before").await.len(), 3);
    assert_eq!(readyz(p.addr).await, 200);

    proxy.cut();
    for i in 0..5 {
        let a = c
            .ack(
                "chat:send",
                json!({ "roomId": "general", "content": format!("lost-{i}") }),
            )
            .await;
        assert_eq!(a["success"], false, "{a}");
        assert_eq!(a["code"], "unavailable", "{a}");
    }
    assert_eq!(readyz(p.addr).await, 503);
    // Everything that does not need the store still works.
    let m = c.ack("room:members", json!("general")).await;
    assert_eq!(m["members"].as_array().unwrap().len(), 2);
    c.emit("typing:start", json!("general"));
    assert_eq!(bob.recv("typing:user").await["userId"], "alice");

    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let healed = loop {
        let a = c
            .ack(
                "chat:send",
                json!({ "roomId": "general", "content": "back" }),
            )
            .await;
        if a["success"] == true {
            break a;
        }
        assert_eq!(a["code"], "unavailable", "{a}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(healed["seq"], 4, "refused messages took no seq");
    assert_eq!(readyz(p.addr).await, 200);
    let log = p.log();
    assert_eq!(
        log.matches("message store failing").count(),
        1,
        "logged once per episode:\n{log}"
    );
    assert!(log.contains("message store recovered"), "{log}");
    drop(p);
    db.drop_db().await;
}
