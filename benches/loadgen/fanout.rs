//! `fanout`: one room of M members; one member posts `chat:send` at a fixed
//! rate and every member receives each `chat:message` (M deliveries per
//! post). A sample of receivers reads the post's intended send time from its
//! content; all receivers count deliveries. The post rate climbs a ladder.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use crate::ack::Step;
use crate::conn::{self, Ws};
use crate::report::{GENERATOR_CPU_LIMIT, Meter, Results, hist, ms, ratio_line, round2};
use crate::servers::{Kind, Server};

pub struct Opts {
    pub rooms: Vec<usize>,
    /// Deliveries per second to try, per room size (post rate = this / M).
    pub deliveries: Vec<f64>,
    pub step: Duration,
    pub sampled: usize,
    /// p99 under which a step counts, per room size (same order as `rooms`):
    /// one broadcast to 10k sockets alone takes the floor ~140 ms here.
    pub p99_limit_ms: Vec<f64>,
}

struct Shared {
    epoch: Instant,
    hist: RefCell<Histogram<u64>>,
    delivered: Cell<u64>,
    last: Cell<Instant>,
    /// Last frame of any kind, to see the set-up traffic die down.
    last_any: Cell<Instant>,
    sent: Cell<u64>,
}

const ROOM: &str = "fan";

/// A step whose p99 exceeds this ends the ladder: the server is saturated.
const SATURATED_MS: f64 = 1000.0;

/// Microseconds of the post's intended time, from `"content":"f<µs>"`.
fn intended_us(t: &str) -> Option<u64> {
    let at = t.find("\"content\":\"f")? + 12;
    let digits = &t[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

async fn member(
    ws: Ws,
    sampled: bool,
    mut steps: Option<watch::Receiver<Option<Step>>>,
    sh: Rc<Shared>,
) {
    let (mut tx, mut rx) = ws.split();
    let mut sched: Option<(Instant, Duration, Instant)> = None;
    let mut next_id = 1u64;
    loop {
        let wake = sched.map(|s| s.0);
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    sh.last_any.set(Instant::now());
                    if t == "2" {
                        if tx.send(Message::text("3")).await.is_err() { return; }
                    } else if t.starts_with("42[\"chat:message\"") {
                        sh.delivered.set(sh.delivered.get() + 1);
                        let now = Instant::now();
                        sh.last.set(now);
                        if sampled && let Some(us) = intended_us(t) {
                            let lat = (now - sh.epoch).as_micros() as u64 - us.min((now - sh.epoch).as_micros() as u64);
                            let _ = sh.hist.borrow_mut().record(lat.max(1));
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            r = async { steps.as_mut().unwrap().changed().await }, if steps.is_some() => {
                if r.is_err() { return; }
                if let Some(st) = *steps.as_ref().unwrap().borrow() {
                    let period = Duration::from_secs_f64(1.0 / st.rate);
                    sched = Some((st.start, period, st.end));
                }
            }
            () = sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {
                let (t, period, end) = sched.unwrap();
                let content = format!("f{}", (conn::latency_origin(t) - sh.epoch).as_micros());
                if tx.send(conn::chat_send(next_id, ROOM, &content)).await.is_err() { return; }
                next_id += 1;
                sh.sent.set(sh.sent.get() + 1);
                let nt = t + period;
                sched = (nt < end).then_some((nt, period, end));
            }
        }
    }
}

async fn ladder(
    server: &Server,
    m: usize,
    limit_ms: f64,
    opts: &Opts,
    results: &mut Results,
) -> (f64, Option<f64>) {
    let addr = server.addr;
    let mut conns = Vec::with_capacity(m);
    // One user with many tabs: presence announces only the user's first
    // join, where M users would cost M²/2 announcements to set up.
    let token = conn::token("fan");
    let room = |_| Some(ROOM.to_owned());
    conn::ramp(
        addr,
        None,
        0..m,
        |_| token.clone(),
        room,
        |_, ws| conns.push(ws),
    )
    .await;
    let sh = Rc::new(Shared {
        epoch: Instant::now(),
        hist: RefCell::new(hist()),
        delivered: Cell::new(0),
        last: Cell::new(Instant::now()),
        last_any: Cell::new(Instant::now()),
        sent: Cell::new(0),
    });
    let (step_tx, step_rx) = watch::channel(None);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let steps = (i == 0).then(|| step_rx.clone());
            // Every k-th member, spread over join order: servers that deliver
            // in join order would otherwise look faster than those that do not.
            let sampled = i % m.div_ceil(opts.sampled) == 0;
            tokio::task::spawn_local(member(ws, sampled, steps, sh.clone()))
        })
        .collect();
    // Let anything the joins set off die down before measuring.
    let quiet_by = Instant::now() + Duration::from_secs(180);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if sh.last_any.get().elapsed() > Duration::from_secs(2) || Instant::now() > quiet_by {
            break;
        }
    }
    let mut best = 0.0;
    let mut p99_at_100k = None;
    for &target in &opts.deliveries {
        let rate = target / m as f64;
        sh.hist.borrow_mut().reset();
        let (sent0, del0) = (sh.sent.get(), sh.delivered.get());
        let start = Instant::now() + Duration::from_millis(200);
        let meter = Meter::start(server);
        step_tx.send_replace(Some(Step {
            rate,
            start,
            end: start + opts.step,
        }));
        tokio::time::sleep_until((start + opts.step).into()).await;
        let drain_by = Instant::now() + Duration::from_secs(10);
        let expected = |sh: &Shared| (sh.sent.get() - sent0) * m as u64;
        while sh.delivered.get() - del0 < expected(&sh) && Instant::now() < drain_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let met = meter.stop(server);
        let delivered = sh.delivered.get() - del0;
        let posts = sh.sent.get() - sent0;
        let span = (sh.last.get() - start)
            .as_secs_f64()
            .max(opts.step.as_secs_f64());
        let h = sh.hist.borrow();
        let (p50, p99) = (ms(&h, 0.5), ms(&h, 0.99));
        let all = delivered == posts * m as u64 && posts > 0;
        let valid = met.generator_cpu <= GENERATOR_CPU_LIMIT;
        let achieved = delivered as f64 / span;
        results.row(json!({
            "scenario": "fanout", "server": server.kind.name(), "members": m,
            "posts_per_sec": round2(rate), "target_deliveries_per_sec": target,
            "deliveries": delivered, "expected": posts * m as u64, "all_delivered": all,
            "deliveries_per_sec": achieved.round(),
            "p50_ms": round2(p50), "p99_ms": round2(p99),
            "server_cpu_us_per_delivery": round2(met.server_cpu_secs * 1e6 / delivered.max(1) as f64),
            "generator_cpu": round2(met.generator_cpu), "valid": valid,
        }));
        drop(h);
        if (target - 100_000.0).abs() < 1.0 && all {
            p99_at_100k = Some(p99);
        }
        // Past saturation the backlog would spill into the next step.
        if !all || p99 >= SATURATED_MS {
            break;
        }
        if valid && p99 < limit_ms {
            best = achieved;
        }
    }
    drop(step_tx);
    for t in tasks {
        t.abort();
    }
    (best, p99_at_100k)
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    for (&m, &limit_ms) in opts.rooms.iter().zip(&opts.p99_limit_ms) {
        let mut best = Vec::new();
        for &kind in kinds {
            let server = Server::start(kind, &["--database-url", "memory"]);
            let (b, p99) = ladder(&server, m, limit_ms, opts, results).await;
            if let Some(p) = p99 {
                results.summary(json!({
                    "members": m, "server": kind.name(), "figure": "p99_ms_at_100k_deliveries_per_sec", "value": p,
                }));
            }
            best.push((kind, b));
        }
        ratio_line(
            results,
            "members",
            m as f64,
            &format!("highest_deliveries_per_sec_p99_under_{limit_ms}ms"),
            &best,
        );
    }
}
