//! `idle`: resident memory per idle, authenticated websocket connection.
//! Each size gets a fresh server; RSS is read before the ramp and again after
//! the ramp plus a settle period (which spans a heartbeat round).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};
use crate::report::{Results, ratio_line, round2};
use crate::servers::{Kind, Proto, Server};

pub struct Opts {
    pub sizes: Vec<usize>,
    pub settle: Duration,
}

/// Answers pings, ignores the rest, until the server goes away (reading
/// also answers websocket ping frames, the plain clients' heartbeat).
pub async fn hold(mut ws: Ws) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.as_str() == "2"
            && ws.send(Message::text("3")).await.is_err()
        {
            return;
        }
    }
}

/// Connects `n` users and keeps each connection alive in a task of its own.
async fn hold_many(
    proto: Proto,
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(n);
    let token = |i| conn::token(&format!("idle{i}"));
    conn::ramp_as(
        proto,
        addr,
        None,
        0..n,
        token,
        |_| None,
        |_, ws| {
            tasks.push(tokio::task::spawn_local(hold(ws)));
        },
    )
    .await;
    tasks
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    for &n in &opts.sizes {
        let mut per_conn = Vec::new();
        for &kind in kinds {
            let server = Server::start(kind, &["--database-url", "memory"]);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = server.rss_kib();
            let t0 = Instant::now();
            let tasks = hold_many(kind.proto(), server.addr, n).await;
            let ramp_secs = t0.elapsed().as_secs_f64();
            tokio::time::sleep(opts.settle).await;
            let after = server.rss_kib();
            let kib = after.saturating_sub(before) as f64 / n as f64;
            per_conn.push((kind, kib));
            results.row(json!({
                "server": kind.name(), "connections": n,
                "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_connection": round2(kib), "ramp_secs": round2(ramp_secs),
                "handshakes_per_sec": (n as f64 / ramp_secs).round(),
            }));
            drop(server);
            for t in tasks {
                t.abort();
            }
        }
        ratio_line(
            results,
            "connections",
            n as f64,
            "kib_per_connection",
            &per_conn,
        );
    }
}

/// `hold <addr> <n> <secs> [<proto>]`: n idle connections to a running
/// server (Socket.IO, or `plain` on `/ws`, or `seed`).
pub fn hold_main(args: &[String]) {
    let addr = args[0].parse().expect("addr");
    let n: usize = args[1].parse().expect("n");
    let secs: u64 = args[2].parse().expect("secs");
    let proto = args
        .get(3)
        .map_or(Proto::SocketIo, |p| Proto::parse(p).expect("proto"));
    crate::block_on_local(async move {
        let tasks = hold_many(proto, addr, n).await;
        println!("holding {n} connections for {secs} s");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        for t in tasks {
            t.abort();
        }
    });
}
