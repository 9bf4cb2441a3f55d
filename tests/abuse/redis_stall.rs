//! A stalled Redis (SIGSTOP: connections stay open, nothing answers) must not
//! make a node buffer what it cannot publish: backend emits answer 503 at
//! once, the node's memory stays flat, and it recovers once Redis resumes.
//!
//! The test runs a Redis of its own on a free port (never the machine's
//! shared one): stopping that one would stall every other test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::{Proc, metric, rss_kib, user};

const KEY: &str = "abuse-test-api-key-redis";

/// A `redis-server` of this test's own; resumed and killed on drop, whatever
/// way the test ends (a panic included).
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the test starts one of its own)");
        let redis = OwnRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a plain kill(2) to the child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    fn stall(&self) {
        self.signal(libc::SIGSTOP);
    }

    fn resume(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(redis: &OwnRedis, db: &str) -> Proc {
    Proc::start(&[
        "--redis-url",
        &format!("redis://127.0.0.1:{}", redis.port),
        "--redis-prefix",
        "stall",
        "--database-url",
        db,
        "--api-key",
        KEY,
    ])
}

/// Posts `n` emits of `data` to `to` through `p`'s API, 16 at a time;
/// returns the statuses.
async fn emits(p: &Proc, to: &str, n: usize, data: &serde_json::Value) -> Vec<u16> {
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/users/{to}/emit", p.addr);
    futures_util::stream::iter(0..n)
        .map(|_| {
            let req = http
                .post(&url)
                .bearer_auth(KEY)
                .json(&json!({ "event": "invoice", "data": data }));
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Emits to alice through `p` until one answers 202 and reaches her socket
/// (on the other node), for at most 20 s.
async fn delivered(p: &Proc, alice: &crate::Client, tag: &str) {
    let start = Instant::now();
    loop {
        let s = emits(p, "alice", 1, &json!({ "pad": tag })).await;
        if s == [202]
            && let Some(got) = alice.try_recv("invoice", Duration::from_millis(300)).await
            && got["pad"] == tag
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no delivery across nodes within 20 s ({tag})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_leaves_memory_flat_and_emits_answer_503() {
    let redis = OwnRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/stall.db", dir.path().display());
    let a = node(&redis, &db);
    let b = node(&redis, &db);
    // alice and bob are on node B; the backend talks to node A.
    let alice = user(&b, "alice").await;
    let _bob = user(&b, "bob").await;
    let blob = json!({ "pad": "x".repeat(10_000) });
    // Warm the allocator up (on a loaded machine a publish may pass the
    // driver's 500 ms and answer 503: only the memory matters here).
    emits(&a, "bob", 300, &blob).await;
    delivered(&a, &alice, "warm").await;
    let before = rss_kib(a.child.id());

    redis.stall();
    let n = 2000;
    let t = Instant::now();
    let statuses = emits(&a, "bob", n, &blob).await;
    let took = t.elapsed();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    let grew_kib = rss_kib(a.child.id()).saturating_sub(before);
    let dropped = metric(
        a.addr,
        r#"switchboard_redis_dropped_total{path="feeds",reason="redis_down"}"#,
    )
    .await
        + metric(
            a.addr,
            r#"switchboard_redis_dropped_total{path="feeds",reason="queue_full"}"#,
        )
        .await;
    eprintln!(
        "{n} x 10 KB emits with Redis stalled ({took:?}): {refused} answered 503, RSS +{} MB, {dropped} feed events dropped",
        grew_kib / 1024
    );
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 202),
        "only 503 or 202: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 503 && **s != 202)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(refused >= n - 50, "{refused} of {n} answered 503");
    // Before the bound the node held every event it could not publish:
    // 2,000 x 10 KB took RSS up by about 20 MB (4,000: 38 MB).
    assert!(
        grew_kib < 8 * 1024,
        "RSS grew by {} MB with Redis stalled",
        grew_kib / 1024
    );
    assert!(dropped >= (n - 50) as f64, "drops counted: {dropped}");

    // Redis resumes: cross-node delivery comes back by itself.
    redis.resume();
    let resumed = Instant::now();
    delivered(&a, &alice, "after").await;
    eprintln!(
        "delivery across nodes resumed {:?} after SIGCONT",
        resumed.elapsed()
    );
    crate::assert_no_panic(&a);
}
