//! `ack` (and `chat`): connections each in a room of their own send
//! `chat:send` with an ack at a fixed total rate, spread evenly over the
//! connections; latency runs from each send's intended time to its ack.
//! The rate climbs a ladder until p99 reaches the limit or the server falls
//! behind. `chat` is the same ladder on switchboard with the default SQLite
//! store against the in-memory store (the bare-ack rate).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};
use crate::report::{GENERATOR_CPU_LIMIT, Meter, Results, hist, ms, ratio_line, round2};
use crate::servers::{Kind, Proto, Server};

#[derive(Clone, Copy)]
pub struct Step {
    pub rate: f64,
    pub start: Instant,
    pub end: Instant,
}

pub struct Shared {
    pub hist: RefCell<Histogram<u64>>,
    pub sent: Cell<u64>,
    pub acked: Cell<u64>,
    pub failed: Cell<u64>,
}

/// A step whose p99 exceeds this ends the ladder: the server is saturated.
const SATURATED_MS: f64 = 200.0;

pub struct Opts {
    pub connections: usize,
    pub rates: Vec<f64>,
    pub step: Duration,
    pub p99_limit_ms: f64,
}

/// One connection: sends on its share of the schedule, matches acks.
async fn sender(
    proto: Proto,
    ws: Ws,
    i: usize,
    n: usize,
    room: String,
    mut steps: watch::Receiver<Option<Step>>,
    sh: Rc<Shared>,
) {
    let (mut tx, mut rx) = ws.split();
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_id = 1u64;
    // (next intended send, period, step end)
    let mut sched: Option<(Instant, Duration, Instant)> = None;
    loop {
        let wake = sched.map(|s| s.0);
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str() == "2" {
                        if tx.send(Message::text("3")).await.is_err() { return; }
                    } else if let Some((id, ok)) = proto.ack(t.as_str()) {
                        while let Some(&(pid, intended)) = pending.front() {
                            if pid > id { break; }
                            pending.pop_front();
                            if pid == id {
                                let us = intended.elapsed().as_micros() as u64;
                                let _ = sh.hist.borrow_mut().record(us.max(1));
                                sh.acked.set(sh.acked.get() + 1);
                                if !ok {
                                    sh.failed.set(sh.failed.get() + 1);
                                }
                            }
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            r = steps.changed() => {
                if r.is_err() { return; }
                if let Some(st) = *steps.borrow() {
                    let first = st.start + Duration::from_secs_f64(i as f64 / st.rate);
                    let period = Duration::from_secs_f64(n as f64 / st.rate);
                    sched = (first < st.end).then_some((first, period, st.end));
                }
            }
            () = sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {
                let (t, period, end) = sched.unwrap();
                let from = conn::latency_origin(t);
                // The seed's only answer is the sender's own copy: its
                // payload carries the id.
                let msg = if proto == Proto::Seed {
                    proto.send(next_id, &room, &next_id.to_string())
                } else {
                    proto.send(next_id, &room, "x")
                };
                if tx.send(msg).await.is_err() { return; }
                pending.push_back((next_id, from));
                next_id += 1;
                sh.sent.set(sh.sent.get() + 1);
                let nt = t + period;
                sched = (nt < end).then_some((nt, period, end));
            }
        }
    }
}

/// Runs the ladder against one server; returns the highest rate whose p99
/// stayed under the limit with every ack back.
pub async fn ladder(
    server: &Server,
    label: &str,
    opts: &Opts,
    results: &mut Results,
    scenario: &str,
) -> f64 {
    let n = opts.connections;
    let addr = server.addr;
    let mut conns = Vec::with_capacity(n);
    let token = |i| conn::token(&format!("acker{i}"));
    let proto = server.kind.proto();
    conn::ramp_as(
        proto,
        addr,
        None,
        0..n,
        token,
        |i| Some(format!("a{i}")),
        |_, ws| conns.push(ws),
    )
    .await;
    let sh = Rc::new(Shared {
        hist: RefCell::new(hist()),
        sent: Cell::new(0),
        acked: Cell::new(0),
        failed: Cell::new(0),
    });
    let (step_tx, step_rx) = watch::channel(None);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            tokio::task::spawn_local(sender(
                proto,
                ws,
                i,
                n,
                format!("a{i}"),
                step_rx.clone(),
                sh.clone(),
            ))
        })
        .collect();
    let mut best = 0.0;
    for &rate in &opts.rates {
        sh.hist.borrow_mut().reset();
        let (sent0, acked0, failed0) = (sh.sent.get(), sh.acked.get(), sh.failed.get());
        let start = Instant::now() + Duration::from_millis(200);
        let meter = Meter::start(server);
        step_tx.send_replace(Some(Step {
            rate,
            start,
            end: start + opts.step,
        }));
        tokio::time::sleep_until((start + opts.step).into()).await;
        let drain_by = Instant::now() + Duration::from_secs(5);
        while sh.acked.get() < sh.sent.get() && Instant::now() < drain_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = meter.stop(server);
        let sent = sh.sent.get() - sent0;
        let acked = sh.acked.get() - acked0;
        let failed = sh.failed.get() - failed0;
        let h = sh.hist.borrow();
        let (p50, p99, p999) = (ms(&h, 0.5), ms(&h, 0.99), ms(&h, 0.999));
        let drained = acked == sent && sent > 0;
        let valid = m.generator_cpu <= GENERATOR_CPU_LIMIT;
        results.row(json!({
            "scenario": scenario, "server": label, "connections": n, "rate": rate,
            "sent": sent, "acked": acked, "failed": failed, "all_acked": drained,
            "acks_per_sec": round2(acked as f64 / opts.step.as_secs_f64()),
            "p50_ms": round2(p50), "p99_ms": round2(p99), "p999_ms": round2(p999),
            "server_cpu_us_per_ack": round2(m.server_cpu_secs * 1e6 / acked.max(1) as f64),
            "generator_cpu": round2(m.generator_cpu), "valid": valid,
        }));
        drop(h);
        // Past saturation the backlog would spill into the next step.
        if !drained || failed > 0 || p99 >= SATURATED_MS {
            break;
        }
        if valid && p99 < opts.p99_limit_ms {
            best = rate;
        }
    }
    drop(step_tx);
    for t in tasks {
        t.abort();
    }
    best
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    let mut best = Vec::new();
    for &kind in kinds {
        let server = Server::start(kind, &["--database-url", "memory"]);
        let b = ladder(&server, kind.name(), opts, results, "ack").await;
        best.push((kind, b));
    }
    ratio_line(
        results,
        "p99_limit_ms",
        opts.p99_limit_ms,
        "highest_ack_rate",
        &best,
    );
}

/// `chat`: the same ladder on switchboard with the default SQLite store
/// (a fresh file) against the in-memory store.
pub async fn run_chat(opts: &Opts, results: &mut Results) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/chat.db", dir.path().display());
    let mut best = Vec::new();
    for (label, store) in [
        ("switchboard-memory", "memory"),
        ("switchboard-sqlite", url.as_str()),
    ] {
        let server = Server::start(Kind::Switchboard, &["--database-url", store]);
        best.push((label, ladder(&server, label, opts, results, "chat").await));
    }
    let (mem, sql) = (best[0].1, best[1].1);
    results.summary(json!({
        "figure": "highest_ack_rate", "p99_limit_ms": opts.p99_limit_ms,
        "switchboard-memory": mem, "switchboard-sqlite": sql,
        "ratio": round2(sql / mem), "ratio_of": "sqlite / memory",
        "target": "sqlite within 2x of memory (ratio >= 0.5)",
    }));
}

/// `hooks`: the same ladder on switchboard (memory store) without hooks and
/// with `--publish-hook-url` pointing at a local receiver (a Node.js HTTP
/// server that allows every message, pinned beside the generator), so the
/// difference is what asking the backend costs per message.
pub async fn run_hooks(opts: &Opts, results: &mut Results) {
    let port = crate::servers::free_port();
    let script = format!(
        "require('http').createServer((q,s)=>{{q.resume();q.on('end',()=>{{\
         s.setHeader('content-type','application/json');s.end('{{\"allow\":true}}')}})}})\
         .listen({port},'127.0.0.1',()=>console.log('receiver listening'))"
    );
    let mut receiver = crate::servers::pinned(Some("1"), "node")
        .args(["-e", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node for the hook receiver");
    {
        use std::io::BufRead;
        let out = receiver.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let _ = lines.next();
    }
    let hook = format!("http://127.0.0.1:{port}/publish");
    let mut best = Vec::new();
    for (label, args) in [
        ("switchboard", vec!["--database-url", "memory"]),
        (
            "switchboard-publish-hook",
            vec![
                "--database-url",
                "memory",
                "--publish-hook-url",
                hook.as_str(),
            ],
        ),
    ] {
        let server = Server::start(Kind::Switchboard, &args);
        best.push((label, ladder(&server, label, opts, results, "hooks").await));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    let (off, on) = (best[0].1, best[1].1);
    results.summary(json!({
        "figure": "highest_ack_rate", "p99_limit_ms": opts.p99_limit_ms,
        "switchboard": off, "switchboard-publish-hook": on,
        "ratio": round2(on / off), "ratio_of": "with the publish hook / without",
    }));
}

/// `webhooks`: the ack ladder (1k connections) on SQLite (and PostgreSQL
/// when `SWITCHBOARD_TEST_POSTGRES_URL` is set) without webhooks and with
/// `--webhook-url` at a local receiver (a Node.js server answering 204,
/// pinned beside the generator): each message then also writes its event
/// to the outbox in its transaction, and the outbox is drained meanwhile.
pub async fn run_webhooks(opts: &Opts, results: &mut Results) {
    let port = crate::servers::free_port();
    let script = format!(
        "require('http').createServer((q,s)=>{{q.resume();q.on('end',()=>{{s.writeHead(204);s.end()}})}})\
         .listen({port},'127.0.0.1',()=>console.log('receiver listening'))"
    );
    let mut receiver = crate::servers::pinned(Some("1"), "node")
        .args(["-e", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node for the webhook receiver");
    {
        use std::io::BufRead;
        let out = receiver.stdout.take().unwrap();
        let _ = std::io::BufReader::new(out).lines().next();
    }
    let url = format!("http://127.0.0.1:{port}/events");
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![(
        "sqlite",
        format!("sqlite://{}/chat.db", dir.path().display()),
    )];
    if let Ok(pg) = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
        stores.push(("postgres", pg));
    }
    for (store, db) in &stores {
        let mut best = Vec::new();
        for on in [false, true] {
            let label = format!("switchboard-{store}{}", if on { "-webhooks" } else { "" });
            let mut args = vec!["--database-url", db.as_str()];
            if on {
                args.extend(["--webhook-url", url.as_str()]);
            }
            let server = Server::start(Kind::Switchboard, &args);
            best.push(ladder(&server, &label, opts, results, "webhooks").await);
        }
        results.summary(json!({
            "figure": "highest_ack_rate", "store": store, "p99_limit_ms": opts.p99_limit_ms,
            "without": best[0], "with_webhooks": best[1],
            "ratio": round2(best[1] / best[0]), "ratio_of": "with webhooks / without",
        }));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
}
