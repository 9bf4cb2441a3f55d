//! Benchmark `idle`: RSS per idle, authenticated websocket connection, for
//! switchboard and the Node.js socket.io 4.8 reference (benches/node-reference,
//! `npm install` there first), measured alternately in one run. Each size gets
//! a fresh server: RSS is read before the ramp and 30 s after it.
//!
//! `cargo bench --bench idle` (IDLE_SIZES=1000,10000 by default; at most about
//! 19,000 per generator process here). Writes benches/results/idle.json.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, connect_auth_only, which};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const SETTLE: Duration = Duration::from_secs(30);

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The Node reference, pinned to CPU 0 like switchboard.
struct NodeRef {
    child: Child,
    addr: SocketAddr,
}

impl NodeRef {
    fn start() -> NodeRef {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/node-reference");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = if which("taskset") {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", "node", "server.js"]);
            c
        } else {
            let mut c = Command::new("node");
            c.arg("server.js");
            c
        };
        let mut child = cmd
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("JWT_SECRET", common::SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (run npm install in benches/node-reference)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("node reference exited").unwrap();
            if let Some(a) = line.split("listening on http://").nth(1) {
                break a.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        NodeRef { child, addr }
    }
}

impl Drop for NodeRef {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps a connection alive: answers pings, ignores the rest.
async fn idle(mut ws: common::Ws) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.as_str() == "2"
            && ws.send(Message::text("3")).await.is_err()
        {
            return;
        }
    }
}

/// Ramps `n` connections, waits, and returns (RSS before, RSS after) in KiB.
async fn measure(pid: u32, addr: SocketAddr, n: usize) -> (u64, u64, Duration) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(200) {
        let conns =
            futures_util::future::join_all(batch.iter().map(|&i| connect_auth_only(addr, i))).await;
        for ws in conns {
            handles.push(tokio::spawn(idle(ws)));
        }
    }
    let ramp = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(pid);
    for h in handles {
        h.abort();
    }
    (before, after, ramp)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("IDLE_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = common::generator_runtime();
    rt.block_on(async {
        let mut lines = Vec::new();
        println!(
            "\n{:<12} {:>7} {:>11} {:>11} {:>12} {:>9}",
            "server", "conns", "RSS before", "RSS after", "KiB / conn", "ramp s"
        );
        for &n in &sizes {
            let mut per = Vec::new();
            for which in ["switchboard", "node"] {
                let (before, after, ramp) = if which == "switchboard" {
                    let s = Server::start(&["--database-url", "memory"]);
                    measure(s.child.id(), s.addr, n).await
                } else {
                    let s = NodeRef::start();
                    measure(s.child.id(), s.addr, n).await
                };
                let kib = (after.saturating_sub(before)) as f64 / n as f64;
                per.push(kib);
                println!(
                    "{:<12} {:>7} {:>8} KiB {:>8} KiB {:>12.2} {:>9.1}",
                    which,
                    n,
                    before,
                    after,
                    kib,
                    ramp.as_secs_f64()
                );
                lines.push(format!(
                    "{{\"scenario\":\"idle\",\"server\":\"{which}\",\"connections\":{n},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_connection\":{kib:.2}}}"
                ));
            }
            println!(
                "{:<12} {:>7} switchboard / node = {:.2}",
                "ratio",
                n,
                per[0] / per[1]
            );
        }
        if cfg!(debug_assertions) {
            println!("\nDebug build: figures not written to benches/results (use cargo bench).");
            return;
        }
        if std::env::var("IDLE_SIZES").is_ok() {
            println!("\nCustom sizes (IDLE_SIZES): figures not written to benches/results.");
            return;
        }
        let results = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results");
        std::fs::create_dir_all(results).unwrap();
        let mut f = std::fs::File::create(format!("{results}/idle.json")).unwrap();
        for l in &lines {
            writeln!(f, "{l}").unwrap();
        }
    });
}
