//! `scale`: many connections over several switchboard nodes sharing Redis,
//! on this one machine. Each node gets its own generator process (the
//! per-process file cap is ~19,990) on its own source address (127.0.0.k,
//! ~28k ports each). A backend then broadcasts to everyone through one node's
//! HTTP API, and every receiver counts; a sample reads the send time.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};
use crate::report::{Results, hist, ms, round2};
use crate::servers::{API_KEY, Kind, Server};

pub struct Opts {
    pub nodes: usize,
    pub connections: usize,
    pub broadcasts: usize,
    pub sampled_per_node: usize,
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

pub async fn run(opts: &Opts, results: &mut Results) {
    let prefix = format!("bench-scale-{}", std::process::id());
    let nodes: Vec<Server> = (0..opts.nodes)
        .map(|_| {
            Server::start_on(
                Kind::Switchboard,
                &[
                    "--database-url",
                    "memory",
                    "--redis-url",
                    "redis://127.0.0.1:6379",
                    "--redis-prefix",
                    &prefix,
                ],
                None,
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0: Vec<u64> = nodes.iter().map(Server::rss_kib).collect();
    let per = opts.connections / opts.nodes;
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut workers = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "scale-worker",
                &node.addr.to_string(),
                &format!("127.0.0.{}", k + 2),
            ])
            .args([
                (k * per).to_string(),
                per.to_string(),
                opts.sampled_per_node.to_string(),
                opts.broadcasts.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("scale worker");
        let out = child.stdout.take().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((k, line));
            }
        });
        workers.push(child);
    }
    let mut ready = 0;
    while ready < opts.nodes {
        let (k, line) = recv(&rx, Duration::from_secs(300)).expect("workers ramp in time");
        if line == "ready" {
            ready += 1;
        } else {
            panic!("worker {k}: {line}");
        }
    }
    let ramp = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss: Vec<u64> = nodes.iter().map(Server::rss_kib).collect();
    let grown: u64 = rss
        .iter()
        .zip(&rss0)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    // Broadcast through each node's API in turn: Redis carries it to the rest.
    for b in 0..opts.broadcasts {
        let node = &nodes[b % nodes.len()];
        let mut s = conn::tcp(node.addr, None, false).await.expect("api");
        let body = format!(
            "{{\"event\":\"bench:all\",\"data\":{{\"t\":{}}}}}",
            epoch_us()
        );
        let headers =
            format!("Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n");
        let (st, reply) = conn::http(&mut s, "POST", "/api/emit", &headers, &body)
            .await
            .expect("emit");
        assert_eq!(st, 202, "emit: {reply}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for w in &mut workers {
        drop(w.stdin.take()); // tells the worker the broadcasts are over
    }
    let mut h = hist();
    let (mut received, mut expected, mut closed) = (0u64, 0u64, 0u64);
    for _ in 0..opts.nodes {
        let (k, line) = recv(&rx, Duration::from_secs(60)).expect("worker report");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("worker {k}: {line}"));
        received += v["received"].as_u64().unwrap();
        closed += v["closed"].as_u64().unwrap();
        eprintln!(
            "worker {k}: received {} of {}, {} closed",
            v["received"], v["expected"], v["closed"]
        );
        expected += v["expected"].as_u64().unwrap();
        for us in v["lat_us"].as_array().unwrap() {
            let _ = h.record(us.as_u64().unwrap().max(1));
        }
    }
    for mut w in workers {
        let _ = w.wait();
    }
    results.row(json!({
        "scenario": "scale", "server": "switchboard", "nodes": opts.nodes,
        "connections": per * opts.nodes, "ramp_secs": round2(ramp),
        "rss_kib_per_node": rss, "kib_per_connection": round2(grown as f64 / (per * opts.nodes) as f64),
        "broadcasts": opts.broadcasts, "deliveries": received, "expected": expected,
        "all_delivered": received == expected, "closed_by_server": closed,
        "sampled": h.len(), "p50_ms": round2(ms(&h, 0.5)), "p99_ms": round2(ms(&h, 0.99)), "max_ms": round2(ms(&h, 1.0)),
    }));
}

fn recv(rx: &mpsc::Receiver<(usize, String)>, wait: Duration) -> Option<(usize, String)> {
    rx.recv_timeout(wait).ok()
}

/// `scale-worker <addr> <source ip> <first user> <count> <sampled> <broadcasts>`:
/// connects, says `ready`, counts broadcasts until stdin closes (plus a
/// grace period for stragglers), then prints its report as one JSON line.
pub fn worker(args: &[String]) {
    let addr: SocketAddr = args[0].parse().unwrap();
    let src: Ipv4Addr = args[1].parse().unwrap();
    let [first, count, sampled, broadcasts] =
        [2, 3, 4, 5].map(|i| args[i].parse::<usize>().unwrap());
    crate::block_on_local(async move {
        let received = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let lat = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        // Each batch starts answering pings at once: a ramp this long outlasts
        // the server's ping interval plus timeout.
        let mut tasks = Vec::with_capacity(count);
        let token = |i| conn::token(&format!("idle{i}"));
        conn::ramp(
            addr,
            Some(src),
            first..first + count,
            token,
            |_| None,
            |_, ws| {
                let sample = tasks.len() < sampled;
                let (received, lat) = (received.clone(), lat.clone());
                tasks.push(tokio::task::spawn_local(receive(ws, sample, received, lat)));
            },
        )
        .await;
        println!("ready");
        std::io::stdout().flush().unwrap();
        // stdin closes when the orchestrator has sent every broadcast.
        tokio::task::spawn_blocking(|| for _ in std::io::stdin().lines() {})
            .await
            .unwrap();
        let expected = (count * broadcasts) as u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        while received.get() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{}",
            json!({
                "received": received.get(), "expected": expected,
                // connections the server closed before the end
                "closed": tasks.iter().filter(|t| t.is_finished()).count(),
                "lat_us": *lat.borrow(),
            })
        );
        for t in tasks {
            t.abort();
        }
    });
}

async fn receive(
    mut ws: Ws,
    sampled: bool,
    received: std::rc::Rc<std::cell::Cell<u64>>,
    lat: std::rc::Rc<std::cell::RefCell<Vec<u64>>>,
) {
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        let t = t.as_str();
        if t == "2" {
            if ws.send(Message::text("3")).await.is_err() {
                return;
            }
        } else if t.starts_with("42[\"bench:all\"") {
            received.set(received.get() + 1);
            if sampled
                && let Some(at) = t.find("\"t\":")
                && let Some(sent) = t[at + 4..].trim_end_matches(['}', ']']).parse::<u64>().ok()
            {
                lat.borrow_mut().push(epoch_us().saturating_sub(sent));
            }
        }
    }
}
