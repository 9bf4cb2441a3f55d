//! Benchmark `cluster`: cross-node delivery latency. Two nodes share Redis;
//! senders on node A post `chat:send` at a fixed total rate (1k and 5k/s);
//! members on node B time each `chat:message` from the moment it was due to
//! be sent. In the same run, Redis's own PUBLISH -> subscriber latency at the
//! same rates is the floor.
//!
//! `cargo bench --bench cluster` (Redis on 127.0.0.1:6379). Prints a table and
//! writes JSON lines to benches/results/cluster.json.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, Ws, connect, new_hist, self_cpu_secs};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

const REDIS: &str = "redis://127.0.0.1:6379";
const RUN: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_millis(500);
const SENDERS: usize = 2;
const RECEIVERS: usize = 4;

/// Microseconds since `base`, the clock every message carries.
fn micros(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

/// Posts `chat:send` at `per_sec`, each message carrying its due time.
async fn sender(mut ws: Ws, per_sec: f64, base: Instant, start: Instant, end: Instant) {
    let gap = Duration::from_secs_f64(1.0 / per_sec);
    let mut due = start;
    let mut id = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if due < end => {
                id += 1;
                let at = (due - base).as_micros();
                let frame = format!("42{id}[\"chat:send\",{{\"roomId\":\"bench\",\"content\":\"t{at}\"}}]");
                if ws.send(Message::text(frame)).await.is_err() {
                    return;
                }
                due += gap;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    let _ = ws.send(Message::text("3")).await;
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = tokio::time::sleep_until((end + Duration::from_secs(1)).into()) => return,
        }
    }
}

/// Records the latency of every `chat:message` due inside the measured window.
async fn receiver(mut ws: Ws, base: Instant, from: Instant, end: Instant) -> Histogram<u64> {
    let mut h = new_hist();
    let (from_us, end_us) = (
        (from - base).as_micros() as u64,
        (end - base).as_micros() as u64,
    );
    let stop = end + Duration::from_secs(1);
    loop {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(stop.into()) => break,
        };
        let Some(Ok(Message::Text(t))) = m else { break };
        let t = t.as_str();
        if t == "2" {
            let _ = ws.send(Message::text("3")).await;
            continue;
        }
        if !t.starts_with("42[\"chat:message\"") {
            continue;
        }
        let now = micros(base);
        if let Some(due) = t
            .split("\"content\":\"t")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse::<u64>().ok())
            && due >= from_us
            && due <= end_us
        {
            h.saturating_record(now.saturating_sub(due).max(1));
        }
    }
    h
}

/// Redis alone: PUBLISH at `per_sec`, a subscriber times each message.
async fn redis_floor(per_sec: f64) -> Histogram<u64> {
    let client = redis::Client::open(REDIS).unwrap();
    let chan = format!("switchboard-bench-floor-{}", std::process::id());
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe(&chan).await.unwrap();
    let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
    let base = Instant::now();
    let start = base + Duration::from_millis(100);
    let (from, end) = (start + WARMUP, start + WARMUP + RUN);
    let gap = Duration::from_secs_f64(1.0 / per_sec);
    let pad = "x".repeat(120); // about the size of a cluster broadcast
    let publish = async move {
        let mut due = start;
        while due < end {
            tokio::time::sleep_until(due.into()).await;
            let at = (due - base).as_micros();
            let _: Result<(), _> = redis::cmd("PUBLISH")
                .arg(&chan)
                .arg(format!("{at}|{pad}"))
                .query_async(&mut publisher)
                .await;
            due += gap;
        }
    };
    let receive = async {
        let mut h = new_hist();
        let mut msgs = sub.on_message();
        let (from_us, end_us) = (
            (from - base).as_micros() as u64,
            (end - base).as_micros() as u64,
        );
        loop {
            let m = tokio::select! {
                m = msgs.next() => m,
                _ = tokio::time::sleep_until((end + Duration::from_millis(500)).into()) => break,
            };
            let Some(m) = m else { break };
            let now = micros(base);
            let Ok(p) = m.get_payload::<String>() else {
                continue;
            };
            if let Some(due) = p.split('|').next().and_then(|n| n.parse::<u64>().ok())
                && due >= from_us
                && due <= end_us
            {
                h.saturating_record(now.saturating_sub(due).max(1));
            }
        }
        h
    };
    let ((), h) = tokio::join!(publish, receive);
    h
}

struct Row {
    what: &'static str,
    rate: f64,
    hist: Histogram<u64>,
    server_cpu: f64,
    generator_cpu: f64,
}

impl Row {
    fn json(&self) -> String {
        format!(
            "{{\"scenario\":\"cluster\",\"what\":\"{}\",\"emits_per_sec\":{:.0},\"samples\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"server_cpu_share\":{:.2},\"generator_cpu_share\":{:.2}}}",
            self.what,
            self.rate,
            self.hist.len(),
            self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            self.hist.value_at_quantile(0.999) as f64 / 1000.0,
            self.server_cpu,
            self.generator_cpu,
        )
    }
}

async fn cross_node(rate: f64) -> Row {
    let prefix = format!("bench-{}-{}", std::process::id(), rate as u64);
    let args = [
        "--database-url",
        "memory",
        "--redis-url",
        REDIS,
        "--redis-prefix",
        prefix.as_str(),
    ];
    let (a, b) = (Server::start(&args), Server::start(&args));
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(connect(a.addr, 1000 + i, "bench").await);
    }
    let mut receivers = Vec::new();
    for i in 0..RECEIVERS {
        receivers.push(connect(b.addr, 2000 + i, "bench").await);
    }
    let cpu0 = a.cpu_secs() + b.cpu_secs();
    let gen0 = self_cpu_secs();
    let base = Instant::now();
    let start = base + Duration::from_millis(100);
    let (from, end) = (start + WARMUP, start + WARMUP + RUN);
    let rx: Vec<_> = receivers
        .into_iter()
        .map(|ws| tokio::spawn(receiver(ws, base, from, end)))
        .collect();
    for ws in senders {
        tokio::spawn(sender(ws, rate / SENDERS as f64, base, start, end));
    }
    let mut hist = new_hist();
    for r in rx {
        hist.add(r.await.unwrap()).unwrap();
    }
    let secs = (end - start).as_secs_f64();
    Row {
        what: "switchboard A->B",
        rate,
        hist,
        server_cpu: (a.cpu_secs() + b.cpu_secs() - cpu0) / secs,
        generator_cpu: (self_cpu_secs() - gen0) / secs,
    }
}

fn main() {
    let rt = common::generator_runtime();
    rt.block_on(async {
        let mut rows = Vec::new();
        for rate in [1000.0, 5000.0] {
            let gen0 = self_cpu_secs();
            let floor = redis_floor(rate).await;
            let secs = (RUN + WARMUP).as_secs_f64();
            rows.push(Row {
                what: "redis PUBLISH",
                rate,
                hist: floor,
                server_cpu: 0.0,
                generator_cpu: (self_cpu_secs() - gen0) / secs,
            });
            rows.push(cross_node(rate).await);
        }
        println!(
            "\n{:<18} {:>8} {:>8} {:>8} {:>8} {:>9} {:>11} {:>8}",
            "what", "emits/s", "samples", "p50 ms", "p99 ms", "p99.9 ms", "server cpu", "gen cpu"
        );
        for r in &rows {
            println!(
                "{:<18} {:>8.0} {:>8} {:>8.2} {:>8.2} {:>9.2} {:>10.0}% {:>7.0}%",
                r.what,
                r.rate,
                r.hist.len(),
                r.hist.value_at_quantile(0.5) as f64 / 1000.0,
                r.hist.value_at_quantile(0.99) as f64 / 1000.0,
                r.hist.value_at_quantile(0.999) as f64 / 1000.0,
                100.0 * r.server_cpu,
                100.0 * r.generator_cpu
            );
        }
        if rows.iter().any(|r| r.generator_cpu > 0.8) {
            println!("\nWARNING: the generator used over 80% of its core in some run.");
        }
        if cfg!(debug_assertions) {
            println!("\nDebug build: figures not written to benches/results (use cargo bench).");
            return;
        }
        let results = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results");
        std::fs::create_dir_all(results).unwrap();
        let mut f = std::fs::File::create(format!("{results}/cluster.json")).unwrap();
        for r in &rows {
            writeln!(f, "{}", r.json()).unwrap();
        }
    });
}
