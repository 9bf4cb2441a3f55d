//! `idle`: resident memory per idle, authenticated websocket connection.
//! Each size gets a fresh server; RSS is read before the ramp and again after
//! the ramp plus a settle period (which spans a heartbeat round).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};
use crate::report::Results;
use crate::servers::{Kind, Server};

pub struct Opts {
    pub sizes: Vec<usize>,
    pub settle: Duration,
}

/// Answers pings, ignores the rest, until the server goes away.
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

/// Connects `n` users (`idle{first+i}`) to `addr`, 200 handshakes at a time.
pub async fn ramp(
    addr: std::net::SocketAddr,
    src: Option<std::net::Ipv4Addr>,
    first: usize,
    n: usize,
) -> Vec<Ws> {
    let mut all = Vec::with_capacity(n);
    let ids: Vec<usize> = (first..first + n).collect();
    for batch in ids.chunks(200) {
        let conns = futures_util::future::join_all(batch.iter().map(|i| async move {
            conn::connect(addr, src, &conn::token(&format!("idle{i}")), false).await
        }))
        .await;
        for c in conns {
            all.push(c.unwrap_or_else(|e| panic!("connect: {e}")));
        }
    }
    all
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    for &n in &opts.sizes {
        let mut per_conn = Vec::new();
        for &kind in kinds {
            let server = Server::start(kind, &["--database-url", "memory"]);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = server.rss_kib();
            let t0 = Instant::now();
            let conns = ramp(server.addr, None, 0, n).await;
            let ramp_secs = t0.elapsed().as_secs_f64();
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|c| tokio::task::spawn_local(hold(c)))
                .collect();
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

/// Prints and records each server's figure over switchboard's.
pub fn ratio_line(results: &mut Results, key: &str, at: f64, what: &str, figures: &[(Kind, f64)]) {
    let Some(&(_, sb)) = figures.iter().find(|(k, _)| *k == Kind::Switchboard) else {
        return;
    };
    for &(k, v) in figures {
        if k != Kind::Switchboard && v.is_finite() && sb.is_finite() && sb != 0.0 {
            results.summary(json!({
                key: at, "figure": what, "switchboard": round2(sb), k.name(): round2(v),
                "ratio": round2(sb / v),
                "ratio_of": format!("switchboard / {}", k.name()),
            }));
        }
    }
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `hold <addr> <n> <secs>`: n idle connections to a running server.
pub fn hold_main(args: &[String]) {
    let addr = args[0].parse().expect("addr");
    let n: usize = args[1].parse().expect("n");
    let secs: u64 = args[2].parse().expect("secs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let conns = ramp(addr, None, 0, n).await;
        println!("holding {n} connections for {secs} s");
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| tokio::task::spawn_local(hold(c)))
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        for t in tasks {
            t.abort();
        }
    });
}
