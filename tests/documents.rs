//! Collaborative documents (docs/protocol.md §15) against the real binary:
//! hostile and malformed ops get the error acks the contract names, limits
//! hold, acked ops survive SIGKILL (SQLite on disk), two nodes sharing
//! PostgreSQL never give out one version twice, and the HTTP routes.
//! Convergence of concurrent editors is in tests/ot_convergence.rs (model)
//! and client-compat/test/docs.test.mjs (socket.io-client).

#[path = "realtime/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use std::time::Duration;

use client::Client;
use common::{NO_RATE_LIMITS, PgDb, Proc, SECRET, token};
use serde_json::{Value, json};

const KEY: &str = "documents-test-api-key";

async fn user(p: &Proc, sub: &str) -> Client {
    Client::connect(p.addr, "/", Some(json!({ "token": token(sub) })))
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}"))
}

async fn joined(p: &Proc, sub: &str, doc: &str) -> Client {
    let mut c = user(p, sub).await;
    let a = c.ack("doc:join", json!(doc)).await;
    assert_eq!(a["success"], true, "{a}");
    c
}

fn code(a: &Value) -> &str {
    assert_eq!(a["success"], false, "expected a refusal: {a}");
    a["code"].as_str().unwrap_or("")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_doc(p: &Proc, doc: &str) -> (u16, Value) {
    let r = http()
        .get(format!("http://{}/api/docs/{doc}", p.addr))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post_op(p: &Proc, doc: &str, op: Value) -> (u16, Value) {
    let r = http()
        .post(format!("http://{}/api/docs/{doc}/operations", p.addr))
        .bearer_auth(KEY)
        .json(&op)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn insert(doc: &str, version: u64, position: u64, content: &str) -> Value {
    json!({ "docId": doc, "version": version, "type": "insert", "position": position, "content": content })
}

#[tokio::test]
async fn malformed_and_hostile_ops_get_error_acks() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--api-key",
        KEY,
        "--max-doc-bytes",
        "64",
        "--max-doc-op-bytes",
        "16",
        "--max-rooms-per-socket",
        "3",
    ]);
    let mut c = joined(&p, "alice", "d").await;
    let a = c.ack("doc:operation", insert("d", 0, 0, "héllo 😀")).await;
    assert_eq!(
        (a["success"].clone(), a["version"].clone()),
        (json!(true), json!(1))
    );
    // The text at version 1 has 7 scalar values ("héllo 😀").
    let cases = [
        (insert("d", 1, 8, "x"), "invalid_payload"),
        (insert("d", 0, 1, "x"), "invalid_payload"), // beyond the empty text at 0
        (insert("d", 2, 0, "x"), "invalid_payload"), // a future version
        (
            json!({ "docId": "d", "version": 1, "type": "delete", "position": 0, "length": -1 }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "delete", "position": 0, "length": 0 }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "delete", "position": 5, "length": 3 }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "insert", "position": 0, "content": 5 }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "insert", "position": 0, "content": ["a"] }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "insert", "position": 0, "content": "" }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "upsert", "position": 0, "content": "a" }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": "1", "type": "insert", "position": 0, "content": "a" }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "insert", "position": 1.5, "content": "a" }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1e30, "type": "insert", "position": 0, "content": "a" }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "d", "version": 1, "type": "insert", "position": 0, "content": "a", "opId": 7 }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "not a room", "version": 1, "type": "insert", "position": 0, "content": "a" }),
            "invalid_payload",
        ),
        (
            json!({ "docId": "x".repeat(129), "version": 0, "type": "insert", "position": 0, "content": "a" }),
            "invalid_payload",
        ),
        (json!(["d"]), "invalid_payload"),
        (json!(null), "invalid_payload"),
        (insert("d", 1, 0, &"x".repeat(17)), "too_large"),
        (insert("other", 0, 0, "x"), "not_in_room"),
    ];
    for (op, want) in cases {
        let a = c.ack("doc:operation", op.clone()).await;
        assert_eq!(code(&a), want, "{op} -> {a}");
    }
    // The document may not grow beyond --max-doc-bytes (64): 11 bytes now.
    for i in 0..3 {
        let a = c
            .ack("doc:operation", insert("d", 1 + i, 0, "0123456789abcdef"))
            .await;
        assert_eq!(a["success"], true, "{a}");
    }
    let a = c
        .ack("doc:operation", insert("d", 4, 0, "0123456789abcdef"))
        .await;
    assert_eq!(code(&a), "too_large", "{a}");
    // Still there, unchanged by the refusals.
    let (status, doc) = get_doc(&p, "d").await;
    assert_eq!(status, 200);
    assert_eq!(doc["version"], 4);
    assert_eq!(doc["content"].as_str().unwrap().len(), 11 + 48);
    // Joins: bad ids, bad `since`, and the room cap (documents count as rooms).
    for bad in [
        json!(""),
        json!("a b"),
        json!(5),
        json!({ "docId": 5 }),
        json!({ "docId": "d", "since": -1 }),
    ] {
        let a = c.ack("doc:join", bad.clone()).await;
        assert_eq!(code(&a), "invalid_payload", "{bad} -> {a}");
    }
    assert_eq!(c.ack("room:join", json!("lobby")).await["success"], true);
    assert_eq!(c.ack("doc:join", json!("e")).await["success"], true);
    assert_eq!(code(&c.ack("doc:join", json!("f")).await), "too_large");
    assert_eq!(
        c.ack("doc:join", json!("d")).await["success"],
        true,
        "rejoining is fine"
    );
    // Cursors and leaves check the room too.
    assert_eq!(
        code(
            &c.ack("doc:cursor", json!({ "docId": "f", "position": 1 }))
                .await
        ),
        "not_in_room"
    );
    assert_eq!(
        code(
            &c.ack("doc:cursor", json!({ "docId": "d", "position": -1 }))
                .await
        ),
        "invalid_payload"
    );
    assert_eq!(code(&c.ack("doc:leave", json!("f")).await), "not_in_room");
    assert_eq!(c.ack("doc:leave", json!("e")).await["success"], true);
    assert!(p.log().find("panicked").is_none(), "{}", p.log());
}

#[tokio::test]
async fn tokens_rooms_claim_covers_documents() {
    let p = Proc::start(&["--database-url", "memory"]);
    let t = switchboard::mint_hs256(
        SECRET.as_bytes(),
        &switchboard::TokenSpec {
            sub: "carol".into(),
            ttl_secs: 600,
            rooms: Some(vec!["doc:team-*".into(), "general".into()]),
            ..Default::default()
        },
    );
    let mut c = Client::connect(p.addr, "/", Some(json!({ "token": t })))
        .await
        .unwrap();
    assert_eq!(c.ack("doc:join", json!("team-plan")).await["success"], true);
    assert_eq!(
        code(&c.ack("doc:join", json!("secret")).await),
        "forbidden_room"
    );
    assert_eq!(
        code(&c.ack("doc:join", json!("general")).await),
        "forbidden_room"
    );
}

#[tokio::test]
async fn ops_are_relayed_to_the_others_with_versions_and_cursors() {
    let p = Proc::start(&[&["--database-url", "memory"][..], &NO_RATE_LIMITS].concat());
    let mut a = joined(&p, "alice", "notes").await;
    let b = joined(&p, "bob", "notes").await;
    let a2 = joined(&p, "alice", "notes").await; // alice's second tab
    let ack = a.ack("doc:operation", insert("notes", 0, 0, "hi")).await;
    assert_eq!(ack["version"], 1);
    for other in [&b, &a2] {
        let op = other.recv("doc:operation").await;
        assert_eq!(
            op,
            json!({ "docId": "notes", "version": 1, "type": "insert", "position": 0, "content": "hi", "userId": "alice" })
        );
    }
    a.expect_none("doc:operation", Duration::from_millis(300))
        .await;
    // Cursors are volatile (a socket not ready for one misses it): send a
    // few until one arrives.
    let mut cur = None;
    for _ in 0..20 {
        a.emit("doc:cursor", json!({ "docId": "notes", "position": 2 }));
        cur = b.try_recv("doc:cursor", Duration::from_millis(250)).await;
        if cur.is_some() {
            break;
        }
    }
    assert_eq!(
        cur,
        Some(json!({ "docId": "notes", "userId": "alice", "position": 2 }))
    );
    // Two ops made on version 1 at one position: the first accepted stays left.
    let mut b = b;
    let x = b.ack("doc:operation", insert("notes", 1, 2, "X")).await;
    let y = a.ack("doc:operation", insert("notes", 1, 2, "Y")).await;
    assert_eq!(
        (x["version"].clone(), y["version"].clone()),
        (json!(2), json!(3))
    );
    let relayed = b.recv("doc:operation").await;
    assert_eq!(relayed["position"], 3, "rebased past X: {relayed}");
    // A retry with the same opId is acked with the first version, applied once.
    let op = json!({ "docId": "notes", "version": 3, "type": "delete", "position": 0, "length": 1, "opId": "o1" });
    assert_eq!(a.ack("doc:operation", op.clone()).await["version"], 4);
    assert_eq!(a.ack("doc:operation", op).await["version"], 4);
    let mut c = user(&p, "carol").await;
    let j = c
        .ack("doc:join", json!({ "docId": "notes", "since": 2 }))
        .await;
    assert_eq!(j["content"], "iXY");
    assert_eq!(j["version"], 4);
    let versions: Vec<&Value> = j["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["version"])
        .collect();
    assert_eq!(versions, [&json!(3), &json!(4)]);
    assert_eq!(j["ops"][1]["opId"], "o1");
    // The text went out once, in the ack; a join without a callback gets
    // it as doc:sync instead.
    c.expect_none("doc:sync", Duration::from_millis(300)).await;
    c.emit("doc:join", json!("notes"));
    let sync = c.recv("doc:sync").await;
    assert_eq!(
        sync,
        json!({ "docId": "notes", "content": "iXY", "version": 4 })
    );
}

#[tokio::test]
async fn old_versions_are_stale() {
    let p = Proc::start(
        &[
            &["--database-url", "memory", "--api-key", KEY][..],
            &NO_RATE_LIMITS,
        ]
        .concat(),
    );
    for v in 0..1005u64 {
        let (s, b) = post_op(
            &p,
            "long",
            json!({ "version": v, "type": "insert", "position": 0, "content": "a" }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let mut c = joined(&p, "alice", "long").await;
    let a = c.ack("doc:operation", insert("long", 2, 0, "z")).await;
    assert_eq!(code(&a), "stale_version", "{a}");
    let (s, b) = post_op(
        &p,
        "long",
        json!({ "version": 3, "type": "insert", "position": 0, "content": "a" }),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("stale_version")));
    // Within the kept ops it is rebased.
    let a = c.ack("doc:operation", insert("long", 5, 0, "z")).await;
    assert_eq!(a["version"], 1006, "{a}");
    // Ops from a backend reach the sockets, as `system` by default.
    let (s, b) = post_op(
        &p,
        "long",
        json!({ "version": 1006, "type": "delete", "position": 0, "length": 1 }),
    )
    .await;
    assert_eq!((s, b["version"].as_u64()), (200, Some(1007)));
    let relayed = c.recv("doc:operation").await;
    assert_eq!(relayed["userId"], "system");
    // HTTP refusals are JSON with the contract's codes.
    let (s, b) = get_doc(&p, "never-edited").await;
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")));
    let (s, b) = get_doc(&p, "bad%20id").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_payload")));
    let (s, b) = post_op(
        &p,
        "long",
        json!({ "version": 1, "type": "insert", "position": 0 }),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_payload")));
    let (s, b) = post_op(
        &p,
        "long",
        json!({ "version": 9999, "type": "insert", "position": 0, "content": "a" }),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_payload")));
}

/// Every acked op is in the document after SIGKILL, with the snapshot and
/// the replayed log agreeing (more than one snapshot's worth of ops).
#[tokio::test]
async fn acked_ops_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/docs.db", dir.path().display());
    let args = [
        &["--database-url", db.as_str(), "--api-key", KEY][..],
        &NO_RATE_LIMITS,
    ]
    .concat();
    let p = Proc::start(&args);
    let mut a = joined(&p, "alice", "durable").await;
    let mut expected = String::new();
    for v in 0..250u64 {
        let piece = format!("{v},");
        let ack = a
            .ack(
                "doc:operation",
                insert("durable", v, expected.chars().count() as u64, &piece),
            )
            .await;
        assert_eq!(ack["version"], v + 1, "{ack}");
        expected.push_str(&piece);
    }
    p.kill();
    let p = Proc::start(&args);
    let (s, doc) = get_doc(&p, "durable").await;
    assert_eq!(s, 200);
    assert_eq!(doc["version"], 250);
    assert_eq!(doc["content"], expected.as_str());
    // And it carries on from there, rebasing an op made before the restart.
    let mut b = joined(&p, "bob", "durable").await;
    let ack = b.ack("doc:operation", insert("durable", 249, 0, ">")).await;
    assert_eq!(ack["version"], 251, "{ack}");
}

/// Two nodes on one PostgreSQL database, ops posted to both at once, all
/// made on stale versions: every op is accepted once, versions 1..=N with
/// no gap or repeat, and both nodes read the same text.
#[tokio::test]
async fn two_nodes_never_share_a_version() {
    let pg = PgDb::create().await;
    let args = [
        &["--database-url", pg.url.as_str(), "--api-key", KEY][..],
        &NO_RATE_LIMITS,
    ]
    .concat();
    let (n1, n2) = (Proc::start(&args), Proc::start(&args));
    let per_task = 40;
    let mut tasks = Vec::new();
    for (t, node) in [&n1, &n2, &n1, &n2].into_iter().enumerate() {
        let addr = node.addr;
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..per_task {
                let r = http()
                    .post(format!("http://{addr}/api/docs/shared/operations"))
                    .bearer_auth(KEY)
                    .json(&json!({ "version": 0, "type": "insert", "position": 0, "content": format!("<{t}.{i}>") }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let b: Value = r.json().await.unwrap();
                match b["version"].as_u64() {
                    Some(v) if status == 200 => versions.push(Ok(v)),
                    _ => versions.push(Err(format!("{status} {b}"))),
                }
            }
            versions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        for r in t.await.unwrap() {
            match r {
                Ok(v) => all.push(v),
                Err(e) => panic!("op refused: {e}\n{}\n{}", n1.log(), n2.log()),
            }
        }
    }
    all.sort_unstable();
    let n = (4 * per_task) as u64;
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "gap-free, unique versions"
    );
    let (_, d1) = get_doc(&n1, "shared").await;
    let (_, d2) = get_doc(&n2, "shared").await;
    assert_eq!(d1, d2);
    assert_eq!(d1["version"], n);
    let text = d1["content"].as_str().unwrap();
    for t in 0..4 {
        for i in 0..per_task {
            assert_eq!(text.matches(&format!("<{t}.{i}>")).count(), 1, "{text}");
        }
    }
    // An op made on a version the other node committed a moment ago: that
    // node has not seen it yet, and must read it rather than call it "newer".
    let op = |v: u64| json!({ "version": v, "type": "delete", "position": 0, "length": 1 });
    for v in n..n + 5 {
        let node = if v % 2 == 0 { &n1 } else { &n2 };
        let (s, b) = post_op(node, "shared", op(v)).await;
        assert_eq!((s, b["version"].as_u64()), (200, Some(v + 1)), "{b}");
    }
    for n in [&n1, &n2] {
        assert!(!n.log().contains("panicked"), "{}", n.log());
    }
    drop((n1, n2));
    pg.drop_db().await;
}

/// Documents held in memory stay within --max-doc-memory-bytes: one user
/// filling document after document does not grow the node's memory past
/// the budget (idle documents are dropped early), and nothing is lost: the
/// store still has each of them.
#[tokio::test]
async fn held_documents_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/docs.db", dir.path().display());
    let args = [
        &[
            "--database-url",
            db.as_str(),
            "--api-key",
            KEY,
            "--max-doc-memory-bytes",
            "20000",
        ][..],
        &NO_RATE_LIMITS,
    ]
    .concat();
    let p = Proc::start(&args);
    let mut c = user(&p, "mallory").await;
    let piece = "x".repeat(3000);
    let mut most = 0.0f64;
    for d in 0..30 {
        let doc = format!("fill-{d}");
        assert_eq!(c.ack("doc:join", json!(doc)).await["success"], true);
        let a = c.ack("doc:operation", insert(&doc, 0, 0, &piece)).await;
        assert_eq!(a["success"], true, "{a}");
        assert_eq!(c.ack("doc:leave", json!(doc)).await["success"], true);
        most = most.max(metric(&p, "switchboard_docs_held_bytes").await);
    }
    // At most the budget plus the one document an op is working on.
    // (text 3,000 bytes + its op 3,000 + 96 + 512 of bookkeeping + its key).
    assert!(
        most <= (20000 + 6096 + 512 + 16) as f64,
        "held {most} bytes"
    );
    assert!(most >= 15000.0, "the budget was reached: {most}");
    for d in [0, 14, 29] {
        let (s, doc) = get_doc(&p, &format!("fill-{d}")).await;
        assert_eq!(
            (s, doc["content"].as_str().map(str::len)),
            (200, Some(3000))
        );
    }
}

async fn metric(p: &Proc, sample: &str) -> f64 {
    common::metric(p.addr, sample).await
}

#[tokio::test]
async fn joins_and_new_documents_are_bounded_per_user() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--api-key",
        KEY,
        "--doc-joins-per-sec",
        "1",
        "--doc-join-burst",
        "5",
        "--doc-creations-per-min",
        "3",
    ]);
    // Joins: a burst of 5, then rate_limited (for every socket of the user).
    let mut a = user(&p, "mallory").await;
    let mut a2 = user(&p, "mallory").await;
    for i in 0..5 {
        let j = a.ack("doc:join", json!(format!("j-{i}"))).await;
        assert_eq!(j["success"], true, "{j}");
    }
    let refused = a2.ack("doc:join", json!("j-5")).await;
    assert_eq!(code(&refused), "rate_limited", "{refused}");
    assert!(
        metric(
            &p,
            r#"switchboard_limit_hits_total{limit="doc_joins_per_sec"}"#
        )
        .await
            >= 1.0
    );
    // Another user has a bucket of their own.
    let mut b = user(&p, "bob").await;
    assert_eq!(b.ack("doc:join", json!("j-0")).await["success"], true);

    // New documents: 3 a minute per user; edits of existing ones go on.
    for i in 0..3 {
        let doc = format!("j-{i}");
        let op = a.ack("doc:operation", insert(&doc, 0, 0, "x")).await;
        assert_eq!(op["success"], true, "{op}");
    }
    let fourth = a.ack("doc:operation", insert("j-3", 0, 0, "x")).await;
    assert_eq!(code(&fourth), "rate_limited", "{fourth}");
    assert!(
        fourth["error"].as_str().unwrap().contains("new documents"),
        "{fourth}"
    );
    assert_eq!(
        a.ack("doc:operation", insert("j-0", 1, 1, "y")).await["version"],
        2,
        "an existing document is still edited"
    );
    // Bob edits the document mallory created, and creates one of his own.
    assert_eq!(
        b.ack("doc:operation", insert("j-0", 2, 0, "b")).await["success"],
        true
    );
    assert_eq!(b.ack("doc:join", json!("bob-new")).await["success"], true);
    assert_eq!(
        b.ack("doc:operation", insert("bob-new", 0, 0, "b")).await["success"],
        true
    );
    assert!(
        metric(
            &p,
            r#"switchboard_limit_hits_total{limit="doc_creations_per_min"}"#
        )
        .await
            >= 1.0
    );
    // The refused document was not stored.
    assert_eq!(get_doc_in(&p, "j-3").await, 404);
}

async fn get_doc_in(p: &Proc, doc: &str) -> u16 {
    http()
        .get(format!("http://{}/api/docs/{doc}", p.addr))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn never_edited_documents_count_against_the_memory_budget() {
    let args = [
        &[
            "--database-url",
            "memory",
            "--max-doc-memory-bytes",
            "20000",
        ][..],
        &NO_RATE_LIMITS,
    ]
    .concat();
    let p = Proc::start(&args);
    let mut c = user(&p, "mallory").await;
    let (mut most_held, mut most_bytes) = (0.0f64, 0.0f64);
    for d in 0..300 {
        let doc = format!("empty-{d}");
        assert_eq!(c.ack("doc:join", json!(doc)).await["success"], true);
        assert_eq!(c.ack("doc:leave", json!(doc)).await["success"], true);
        if d % 10 == 9 {
            most_held = most_held.max(metric(&p, "switchboard_docs_held").await);
            most_bytes = most_bytes.max(metric(&p, "switchboard_docs_held_bytes").await);
        }
    }
    eprintln!("300 joins of never-edited documents: at most {most_held} held, {most_bytes} bytes");
    // Before, every one was held and counted as 0 bytes: 300 held, 0 bytes.
    // Each now counts ~530 bytes: the budget holds about 38.
    assert!(most_held <= 45.0, "{most_held} empty documents held");
    assert!(most_bytes > 10_000.0, "counted: {most_bytes} bytes");
    assert!(most_bytes <= 20_000.0 + 1_000.0, "{most_bytes} bytes");
}

#[tokio::test]
async fn a_join_sends_the_text_once() {
    let args = [
        &["--database-url", "memory", "--api-key", KEY][..],
        &NO_RATE_LIMITS,
    ]
    .concat();
    let p = Proc::start(&args);
    // A 256 KiB document, written by a backend.
    let piece = "x".repeat(65_536);
    for v in 0..4u64 {
        let (s, b) = post_op(
            &p,
            "big",
            json!({ "version": v, "type": "insert", "position": 0, "content": piece }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let mut c = user(&p, "reader").await;
    for _ in 0..20 {
        let j = c.ack("doc:join", json!("big")).await;
        assert_eq!(j["content"].as_str().map(str::len), Some(4 * 65_536));
        assert_eq!(c.ack("doc:leave", json!("big")).await["success"], true);
    }
    // Before, each join also sent doc:sync with the same 256 KiB: twice the text.
    let mut syncs = 0;
    while c
        .try_recv("doc:sync", Duration::from_millis(300))
        .await
        .is_some()
    {
        syncs += 1;
    }
    assert_eq!(syncs, 0, "20 joins with an ack also sent {syncs} doc:sync");
}
