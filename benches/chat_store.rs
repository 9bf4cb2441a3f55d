//! Benchmark: acked, persisted chat messages per second and ack latency, for
//! SQLite and PostgreSQL, with 1, 10 and 100 concurrent senders; then a fixed
//! rate of 5,000 messages/s to read p99 ack latency without saturation.
//!
//! `cargo bench --bench chat_store` (PostgreSQL at SWITCHBOARD_TEST_POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/test). Prints a table and writes
//! JSON lines to benches/results/chat_store.json.
//!
//! The server is the release binary in its own process (pinned to CPU 0 when
//! `taskset` exists); this generator runs on one thread (pinned to CPU 1).
//! Each sender is one websocket in a room of its own, so every message costs
//! one store write and one delivery. Latency is from the moment a message was
//! due to be sent (fixed-rate runs) or was sent (throughput runs) to its ack.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, Ws, connect, new_hist, self_cpu_secs};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use sqlx::Connection;
use tokio_tungstenite::tungstenite::Message;

const RUN: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_millis(500);
/// Messages one throughput sender keeps in flight.
const WINDOW: usize = 32;

/// `43<id>[...]` -> (id, success)
fn parse_ack(t: &str) -> Option<(u64, bool)> {
    let rest = t.strip_prefix("43")?;
    let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    let id = rest[..digits].parse().ok()?;
    Some((id, rest.contains("\"success\":true")))
}

fn send_frame(i: usize, id: u64) -> Message {
    Message::text(format!(
        "42{id}[\"chat:send\",{{\"roomId\":\"r{i}\",\"content\":\"message {id} from sender {i}\"}}]"
    ))
}

#[derive(Default)]
struct Tally {
    acked: u64,
    failed: u64,
    hist: Option<Histogram<u64>>,
}

/// One sender keeping `WINDOW` messages in flight until `end`.
async fn saturate(mut ws: Ws, i: usize, measure_from: Instant, end: Instant) -> Tally {
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 1u64;
    let mut t = Tally {
        hist: Some(new_hist()),
        ..Tally::default()
    };
    loop {
        let now = Instant::now();
        if now < end {
            while sent.len() < WINDOW {
                ws.feed(send_frame(i, next_id)).await.unwrap();
                sent.insert(next_id, Instant::now());
                next_id += 1;
            }
            ws.flush().await.unwrap();
        } else if sent.is_empty() {
            break;
        }
        let Some(Ok(Message::Text(m))) = ws.next().await else {
            break;
        };
        if m.as_str() == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        if let Some((id, ok)) = parse_ack(m.as_str())
            && let Some(at) = sent.remove(&id)
        {
            let done = Instant::now();
            if at >= measure_from && done <= end {
                if ok {
                    t.acked += 1;
                    let us = (done - at).as_micros() as u64;
                    t.hist.as_mut().unwrap().saturating_record(us.max(1));
                } else {
                    t.failed += 1;
                }
            }
        }
    }
    t
}

/// One sender at a fixed rate; latency from each message's due time.
async fn fixed_rate(mut ws: Ws, i: usize, per_sec: f64, start: Instant, end: Instant) -> Tally {
    let gap = Duration::from_secs_f64(1.0 / per_sec);
    // Spread the senders' first sends over one gap.
    let mut due = start + gap.mul_f64((i % 97) as f64 / 97.0);
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 1u64;
    let mut t = Tally {
        hist: Some(new_hist()),
        ..Tally::default()
    };
    let measure_from = start + WARMUP;
    loop {
        if due >= end && sent.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if due < end => {
                ws.send(send_frame(i, next_id)).await.unwrap();
                sent.insert(next_id, due);
                next_id += 1;
                due += gap;
            }
            m = ws.next() => {
                let Some(Ok(Message::Text(m))) = m else { break };
                if m.as_str() == "2" {
                    ws.send(Message::text("3")).await.unwrap();
                    continue;
                }
                if let Some((id, ok)) = parse_ack(m.as_str())
                    && let Some(at) = sent.remove(&id)
                    && at >= measure_from
                {
                    if ok {
                        t.acked += 1;
                        let us = (Instant::now() - at).as_micros() as u64;
                        t.hist.as_mut().unwrap().saturating_record(us.max(1));
                    } else {
                        t.failed += 1;
                    }
                }
            }
        }
    }
    t
}

struct Outcome {
    store: &'static str,
    mode: String,
    senders: usize,
    acked: u64,
    failed: u64,
    secs: f64,
    hist: Histogram<u64>,
    server_cpu: f64,
    generator_cpu: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.secs
    }
    fn json(&self) -> String {
        format!(
            "{{\"scenario\":\"chat_store\",\"store\":\"{}\",\"mode\":\"{}\",\"senders\":{},\"acked_per_sec\":{:.0},\"failed\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"server_cpu_us_per_msg\":{:.1},\"generator_cpu_share\":{:.2}}}",
            self.store,
            self.mode,
            self.senders,
            self.rate(),
            self.failed,
            self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            self.hist.value_at_quantile(0.999) as f64 / 1000.0,
            self.server_cpu * 1e6 / self.acked.max(1) as f64,
            self.generator_cpu / self.secs,
        )
    }
}

async fn run(store: &'static str, db: &str, senders: usize, rate: Option<f64>) -> Outcome {
    let server = Server::start(&["--database-url", db]);
    let mut conns = Vec::new();
    for i in 0..senders {
        conns.push(connect(server.addr, i, &format!("r{i}")).await);
    }
    let cpu0 = server.cpu_secs();
    let gen0 = self_cpu_secs();
    let start = Instant::now();
    let end = start + WARMUP + RUN;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| match rate {
            None => tokio::spawn(saturate(ws, i, start + WARMUP, end)),
            Some(r) => tokio::spawn(fixed_rate(ws, i, r / senders as f64, start, end)),
        })
        .collect();
    let mut hist = new_hist();
    let (mut acked, mut failed) = (0, 0);
    for t in tasks {
        let t = t.await.unwrap();
        acked += t.acked;
        failed += t.failed;
        hist.add(t.hist.unwrap()).unwrap();
    }
    let secs = RUN.as_secs_f64();
    Outcome {
        store,
        mode: match rate {
            None => format!("saturate(window {WINDOW})"),
            Some(r) => format!("fixed {r:.0}/s"),
        },
        senders,
        acked,
        failed,
        secs,
        hist,
        server_cpu: server.cpu_secs() - cpu0,
        generator_cpu: self_cpu_secs() - gen0,
    }
}

fn main() {
    let rt = common::generator_runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let admin = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut admin_conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL is required for this benchmark");
        let base = admin.rsplit_once('/').unwrap().0.to_string();

        // The disk's own fsync latency, measured in the same run: the floor
        // under every durable ack.
        let probe = common::fsync_probe(dir.path(), Duration::from_secs(2));
        println!("{probe}");

        let mut outcomes = Vec::new();
        let mut n = 0;
        for (store, senders, rate) in [
            ("sqlite", 1, None),
            ("sqlite", 10, None),
            ("sqlite", 100, None),
            ("sqlite", 100, Some(5000.0)),
            ("postgres", 1, None),
            ("postgres", 10, None),
            ("postgres", 100, None),
            ("postgres", 100, Some(5000.0)),
        ] {
            n += 1;
            // CHAT_BENCH_ONLY=sqlite/100 runs only the runs whose label contains it.
            let label = format!("{store}/{senders}/{}", rate.map_or("saturate".into(), |r: f64| format!("{r}")));
            if let Ok(only) = std::env::var("CHAT_BENCH_ONLY")
                && !label.contains(&only)
            {
                continue;
            }
            let (db, pg_name) = if store == "sqlite" {
                (format!("sqlite://{}/bench{n}.db", dir.path().display()), None)
            } else {
                let name = format!("sbbench_{}_{n}", std::process::id());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin_conn)
                    .await
                    .unwrap();
                (format!("{base}/{name}"), Some(name))
            };
            let o = run(store, &db, senders, rate).await;
            eprintln!("{}", o.json());
            outcomes.push(o);
            if let Some(name) = pg_name {
                let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .execute(&mut admin_conn)
                    .await;
            }
        }

        println!(
            "\n{:<9} {:<20} {:>7} {:>12} {:>9} {:>9} {:>9} {:>14} {:>8}",
            "store", "mode", "senders", "acked msg/s", "p50 ms", "p99 ms", "p99.9 ms", "server µs/msg", "gen cpu"
        );
        for o in &outcomes {
            println!(
                "{:<9} {:<20} {:>7} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>14.1} {:>7.0}%{}",
                o.store,
                o.mode,
                o.senders,
                o.rate(),
                o.hist.value_at_quantile(0.5) as f64 / 1000.0,
                o.hist.value_at_quantile(0.99) as f64 / 1000.0,
                o.hist.value_at_quantile(0.999) as f64 / 1000.0,
                o.server_cpu * 1e6 / o.acked.max(1) as f64,
                100.0 * o.generator_cpu / o.secs,
                if o.failed > 0 { format!("  ({} failed)", o.failed) } else { String::new() },
            );
        }
        if cfg!(debug_assertions) {
            println!("\nDebug build: figures not written to benches/results (use cargo bench).");
            return;
        }
        if std::env::var("CHAT_BENCH_ONLY").is_ok() {
            println!("\nPartial run (CHAT_BENCH_ONLY): figures not written to benches/results.");
            return;
        }
        let results = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results");
        std::fs::create_dir_all(results).unwrap();
        let mut f = std::fs::File::create(format!("{results}/chat_store.json")).unwrap();
        writeln!(f, "{probe}").unwrap();
        for o in &outcomes {
            writeln!(f, "{}", o.json()).unwrap();
        }
        let invalid = outcomes.iter().any(|o| o.generator_cpu / o.secs > 0.8);
        if invalid {
            println!("\nWARNING: the generator used over 80% of its core in some run: those figures understate the server.");
        }
    });
}
