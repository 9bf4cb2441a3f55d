//! `idle`: resident memory per idle, authenticated websocket connection, as
//! users pay it. Three figures per server and size, each from RSS read
//! before the ramp and again after a settle period (which spans a
//! heartbeat round):
//!
//! * **fresh**: just connected, with the generator's own bare handshake;
//! * **steady**: the same connections after each has had `STEADY_PINGS`
//!   `ping` events answered with a `pong` (packets out of the server's
//!   per-socket queue, as an active client has at once and an idle one after
//!   about 13 minutes of heartbeats), then idle again;
//! * **browser**: a fresh server, connections opened with the headers and
//!   cookie a real Chrome sends (`conn::BROWSER_HEADERS`).
//!
//! Plain and seed clients get the fresh figure only.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};
use crate::report::{Results, ratio_line, round2};
use crate::servers::{Kind, Proto, Server};

pub struct Opts {
    pub sizes: Vec<usize>,
    pub settle: Duration,
}

/// Packets each connection draws out of the server in the steady step:
/// more than the 32 slots of the first block of a tokio channel, which is
/// where engineioxide queues a socket's packets.
pub const STEADY_PINGS: usize = 40;

/// What a held connection does besides answering heartbeats: when `go`
/// changes it sends `STEADY_PINGS` pings and says on `done` once every
/// pong has come back.
pub struct Traffic {
    pub go: watch::Receiver<()>,
    pub done: mpsc::UnboundedSender<()>,
}

/// Answers pings (reading also answers websocket ping frames, the plain
/// clients' heartbeat) and does `traffic` when told, until the server goes
/// away.
pub async fn hold(mut ws: Ws, mut traffic: Traffic) {
    let mut waiting = 0usize;
    let mut armed = true;
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                let Message::Text(t) = m else { continue };
                let t = t.as_str();
                if t == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        return;
                    }
                } else if waiting > 0 && t.starts_with("42[\"pong\"") {
                    waiting -= 1;
                    if waiting == 0 {
                        let _ = traffic.done.send(());
                    }
                }
            }
            changed = traffic.go.changed(), if armed => {
                armed = false;
                if changed.is_err() {
                    continue;
                }
                for _ in 0..STEADY_PINGS {
                    if ws.feed(Message::text("42[\"ping\",{\"ts\":1}]")).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
                waiting = STEADY_PINGS;
            }
        }
    }
}

/// How the step's connections open their websocket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handshake {
    Bare,
    Browser,
}

/// Connected, held connections and the means to set their traffic going.
struct Held {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    go: watch::Sender<()>,
    done: mpsc::UnboundedReceiver<()>,
}

impl Held {
    /// Sets every connection's pings going and waits for all their pongs.
    async fn traffic(&mut self, n: usize) -> Result<Duration, String> {
        let t0 = Instant::now();
        let _ = self.go.send(());
        for i in 0..n {
            match tokio::time::timeout(Duration::from_secs(300), self.done.recv()).await {
                Ok(Some(())) => {}
                _ => return Err(format!("{i} of {n} connections had every pong")),
            }
        }
        Ok(t0.elapsed())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects `n` users and keeps each connection alive in a task of its own.
async fn hold_many(
    proto: Proto,
    addr: std::net::SocketAddr,
    n: usize,
    handshake: Handshake,
) -> Held {
    let (go, go_rx) = watch::channel(());
    let (done_tx, done) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(n);
    let token = |i| conn::token(&format!("idle{i}"));
    let mut each = |_, ws| {
        let traffic = Traffic {
            go: go_rx.clone(),
            done: done_tx.clone(),
        };
        tasks.push(tokio::task::spawn_local(hold(ws, traffic)));
    };
    match handshake {
        Handshake::Bare => conn::ramp_as(proto, addr, None, 0..n, token, |_| None, each).await,
        Handshake::Browser => {
            // Socket.IO only: 200 at a time, as `ramp` does.
            let ids: Vec<usize> = (0..n).collect();
            for batch in ids.chunks(200) {
                let conns = futures_util::future::join_all(batch.iter().map(|&i| {
                    let token = token(i);
                    async move {
                        conn::connect_with(addr, None, &token, false, &conn::BROWSER_HEADERS).await
                    }
                }))
                .await;
                for (c, &i) in conns.into_iter().zip(batch) {
                    each(i, c.unwrap_or_else(|e| panic!("connect: {e}")));
                }
            }
        }
    }
    Held { tasks, go, done }
}

/// KiB of RSS per connection above `before`.
fn per_conn(after: u64, before: u64, n: usize) -> f64 {
    after.saturating_sub(before) as f64 / n as f64
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    for &n in &opts.sizes {
        let (mut fresh, mut steady, mut browser) = (Vec::new(), Vec::new(), Vec::new());
        for &kind in kinds {
            let socketio = kind.proto() == Proto::SocketIo;
            // Fresh, then steady, on one server.
            let server = Server::start(kind, &["--database-url", "memory"]);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = server.rss_kib();
            let t0 = Instant::now();
            let mut held = hold_many(kind.proto(), server.addr, n, Handshake::Bare).await;
            let ramp_secs = t0.elapsed().as_secs_f64();
            tokio::time::sleep(opts.settle).await;
            let after = server.rss_kib();
            let kib = per_conn(after, before, n);
            fresh.push((kind, kib));
            let mut row = json!({
                "server": kind.name(), "connections": n,
                "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_connection": round2(kib), "ramp_secs": round2(ramp_secs),
                "handshakes_per_sec": (n as f64 / ramp_secs).round(),
            });
            if socketio {
                let took = held
                    .traffic(n)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
                tokio::time::sleep(opts.settle).await;
                let after = server.rss_kib();
                let kib = per_conn(after, before, n);
                steady.push((kind, kib));
                row["steady_pings"] = json!(STEADY_PINGS);
                row["steady_traffic_secs"] = json!(round2(took.as_secs_f64()));
                row["rss_steady_kib"] = json!(after);
                row["kib_per_connection_steady"] = json!(round2(kib));
            }
            drop(server);
            drop(held);
            if socketio {
                // Browser handshakes, on a fresh server.
                let server = Server::start(kind, &["--database-url", "memory"]);
                tokio::time::sleep(Duration::from_millis(500)).await;
                let before = server.rss_kib();
                let held = hold_many(kind.proto(), server.addr, n, Handshake::Browser).await;
                tokio::time::sleep(opts.settle).await;
                let after = server.rss_kib();
                let kib = per_conn(after, before, n);
                browser.push((kind, kib));
                row["rss_browser_before_kib"] = json!(before);
                row["rss_browser_after_kib"] = json!(after);
                row["kib_per_connection_browser"] = json!(round2(kib));
                drop(server);
                drop(held);
            }
            results.row(row);
        }
        for (what, figures) in [
            ("kib_per_connection", &fresh),
            ("kib_per_connection_steady", &steady),
            ("kib_per_connection_browser", &browser),
        ] {
            ratio_line(results, "connections", n as f64, what, figures);
        }
    }
}

/// `hold <addr> <n> <secs> [<proto>|browser] [steady]`: n idle connections
/// to a running server (Socket.IO, with a browser's headers if `browser`;
/// or `plain` on `/ws`, or `seed`); `steady` runs the steady step's pings
/// once all are connected.
pub fn hold_main(args: &[String]) {
    let addr = args[0].parse().expect("addr");
    let n: usize = args[1].parse().expect("n");
    let secs: u64 = args[2].parse().expect("secs");
    let (proto, handshake) = match args.get(3).map(String::as_str) {
        None | Some("steady") => (Proto::SocketIo, Handshake::Bare),
        Some("browser") => (Proto::SocketIo, Handshake::Browser),
        Some(p) => (Proto::parse(p).expect("proto"), Handshake::Bare),
    };
    let steady = args.iter().any(|a| a == "steady");
    crate::block_on_local(async move {
        let mut held = hold_many(proto, addr, n, handshake).await;
        if steady {
            let took = held.traffic(n).await.expect("steady step");
            println!("steady step done in {took:?}");
        }
        println!("holding {n} connections for {secs} s");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    });
}
