//! `fanout`: one room of M members; one member posts `chat:send` at a fixed
//! rate and every member receives each `chat:message` (M deliveries per
//! post). A sample of receivers reads the post's intended send time from its
//! content; all receivers count deliveries. The post rate climbs a ladder.
//!
//! The receivers live in K generator processes (`loadgen fanout-worker`),
//! each a current-thread runtime pinned to a core of its own where the
//! machine has them (see `Placement`); the poster, member 0, stays in this
//! process. Each worker reports per step its deliveries, its latency
//! histogram (hdrhistogram V2, base64) and its CPU; p99 is over all sampled
//! receivers, and a step is invalid when any generator core went above
//! `GENERATOR_CPU_LIMIT`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use crate::ack::Step;
use crate::conn::{self, Ws};
use crate::report::{GENERATOR_CPU_LIMIT, Meter, Results, hist, ms, ratio_line, round2};
use crate::servers::{
    Kind, Placement, Proto, Server, pin_self, pin_self_to, pinned, self_cpu_secs,
};

pub struct Opts {
    pub rooms: Vec<usize>,
    /// Deliveries per second to try, per room size (post rate = this / M).
    pub deliveries: Vec<f64>,
    pub step: Duration,
    pub sampled: usize,
    /// p99 under which a step counts, per room size (same order as `rooms`):
    /// one broadcast to 10k sockets alone takes the floor ~140 ms here.
    pub p99_limit_ms: Vec<f64>,
    /// Generator worker processes; `None`: one per free core, at most
    /// `MAX_GENERATORS`.
    pub generators: Option<usize>,
}

/// One process's receivers. Times are µs since the Unix epoch, which every
/// generator process on this machine reads alike.
struct Shared {
    hist: RefCell<Histogram<u64>>,
    delivered: Cell<u64>,
    last_us: Cell<u64>,
    /// Last frame of any kind, to see the set-up traffic die down.
    last_any_us: Cell<u64>,
    sent: Cell<u64>,
}

impl Shared {
    fn new() -> Rc<Shared> {
        Rc::new(Shared {
            hist: RefCell::new(hist()),
            delivered: Cell::new(0),
            last_us: Cell::new(epoch_us()),
            last_any_us: Cell::new(epoch_us()),
            sent: Cell::new(0),
        })
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_micros(epoch_us().saturating_sub(self.last_any_us.get()))
    }
}

const ROOM: &str = "fan";

/// A step whose p99 exceeds this ends the ladder: the server is saturated.
const SATURATED_MS: f64 = 1000.0;

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `t` (not after now) in µs since the Unix epoch.
fn unix_us(t: Instant) -> u64 {
    epoch_us().saturating_sub(t.elapsed().as_micros() as u64)
}

/// Microseconds of the post's intended time, from `"content":"f<µs>"`
/// (`"payload":"f<µs>"` for plain `message`s and the seed).
fn intended_us(t: &str) -> Option<u64> {
    let at = match t.find("\"content\":\"f") {
        Some(i) => i + 12,
        None => t.find("\"payload\":\"f")? + 12,
    };
    let digits = &t[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

/// Member `i` is sampled: every k-th, spread over join order, since servers
/// that deliver in join order would otherwise look faster than the rest.
fn sampled(i: usize, stride: usize) -> bool {
    i.is_multiple_of(stride.max(1))
}

async fn member(
    proto: Proto,
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
                    let now = epoch_us();
                    sh.last_any_us.set(now);
                    if t == "2" {
                        if tx.send(Message::text("3")).await.is_err() { return; }
                    } else if proto.is_delivery(t) {
                        sh.delivered.set(sh.delivered.get() + 1);
                        sh.last_us.set(now);
                        if sampled && let Some(us) = intended_us(t) {
                            let _ = sh.hist.borrow_mut().record(now.saturating_sub(us).max(1));
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
                let content = format!("f{}", unix_us(conn::latency_origin(t)));
                if tx.send(proto.send(next_id, ROOM, &content)).await.is_err() { return; }
                next_id += 1;
                sh.sent.set(sh.sent.get() + 1);
                let nt = t + period;
                sched = (nt < end).then_some((nt, period, end));
            }
        }
    }
}

/// Waits until no frame has come for 2 s (the joins' traffic is over), or
/// `cap` has passed.
async fn quiet(sh: &Shared, cap: Duration) {
    let by = Instant::now() + cap;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if sh.quiet_for() > Duration::from_secs(2) || Instant::now() > by {
            return;
        }
    }
}

/// Waits until `sh` has `want` deliveries since `from`, or until `by`.
async fn drain(sh: &Shared, from: u64, want: u64, by: Instant) {
    while sh.delivered.get() - from < want && Instant::now() < by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const QUIET_CAP: Duration = Duration::from_secs(180);
const DRAIN: Duration = Duration::from_secs(10);

/// A generator worker process, seen from the orchestrator.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    cpu: usize,
}

impl Worker {
    fn spawn(
        proto: Proto,
        addr: SocketAddr,
        cpu: usize,
        first: usize,
        count: usize,
        stride: usize,
    ) -> Worker {
        let exe = std::env::current_exe().expect("own path");
        let mut cmd = pinned(Some(&cpu.to_string()), exe.to_str().unwrap());
        cmd.args(["fanout-worker", &addr.to_string()])
            .args([first, count, stride].map(|n| n.to_string()))
            .arg(proto.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .expect("fanout worker");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Worker {
            child,
            stdin,
            lines,
            cpu,
        }
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("fanout worker gone");
        stdin.flush().await.unwrap();
    }

    async fn hear(&mut self, wait: Duration) -> String {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(_) => panic!("fanout worker on cpu {} exited", self.cpu),
            Err(_) => panic!("fanout worker on cpu {} silent for {wait:?}", self.cpu),
        }
    }

    async fn expect(&mut self, want: &str, wait: Duration) {
        let got = self.hear(wait).await;
        assert_eq!(got, want, "fanout worker on cpu {}", self.cpu);
    }

    async fn close(mut self) {
        drop(self.stdin.take()); // the worker exits at the end of its stdin
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// What one worker reports at the end of a step.
struct Report {
    delivered: u64,
    last_us: u64,
    cpu: f64,
    hist: Histogram<u64>,
}

fn parse_report(line: &str) -> Report {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("worker: {line}"));
    let bytes = B64
        .decode(v["hist"].as_str().expect("hist"))
        .expect("hist base64");
    let hist: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("hist V2");
    let secs = v["secs"].as_f64().unwrap().max(1e-3);
    Report {
        delivered: v["delivered"].as_u64().unwrap(),
        last_us: v["last_us"].as_u64().unwrap(),
        cpu: v["cpu_secs"].as_f64().unwrap() / secs,
        hist,
    }
}

/// Runs the post-rate ladder for a room of `m` against `server`, with the
/// receivers in generator workers placed by `place`. Returns the highest
/// deliveries/s that passed and the p99 at 100k deliveries/s.
pub async fn ladder(
    server: &Server,
    m: usize,
    limit_ms: f64,
    opts: &Opts,
    place: &Placement,
    scenario: &str,
    results: &mut Results,
) -> (f64, Option<f64>) {
    let addr = server.addr;
    let proto = server.kind.proto();
    pin_self_to(place.parent);
    let stride = m.div_ceil(opts.sampled);
    // Members 1..m over the workers; member 0, the poster, is here.
    let k = place.workers.len().min(m.saturating_sub(1)).max(1);
    let bound = |i: usize| 1 + (m - 1) * i / k;
    let mut workers: Vec<Worker> = (0..k)
        .map(|i| {
            let (a, b) = (bound(i), bound(i + 1));
            Worker::spawn(proto, addr, place.workers[i], a, b - a, stride)
        })
        .collect();
    // One user with many tabs: presence announces only the user's first
    // join, where M users would cost M²/2 announcements to set up.
    let token = conn::token("fan");
    let mut poster = None;
    conn::ramp_as(
        proto,
        addr,
        None,
        0..1,
        |_| token.clone(),
        |_| Some(ROOM.to_owned()),
        |_, ws| poster = Some(ws),
    )
    .await;
    for w in &mut workers {
        w.expect("ready", Duration::from_secs(300)).await;
    }
    let sh = Shared::new();
    let (step_tx, step_rx) = watch::channel(None);
    let task = tokio::task::spawn_local(member(
        proto,
        poster.unwrap(),
        sampled(0, stride),
        Some(step_rx),
        sh.clone(),
    ));
    // Let anything the joins set off die down before measuring.
    for w in &mut workers {
        w.say("quiet").await;
    }
    quiet(&sh, QUIET_CAP).await;
    for w in &mut workers {
        w.expect("quiet", QUIET_CAP + Duration::from_secs(10)).await;
    }
    let mut best = 0.0;
    let mut p99_at_100k = None;
    for &target in &opts.deliveries {
        let rate = target / m as f64;
        sh.hist.borrow_mut().reset();
        for w in &mut workers {
            w.say("begin").await;
        }
        for w in &mut workers {
            w.expect("begun", Duration::from_secs(10)).await;
        }
        let (sent0, del0) = (sh.sent.get(), sh.delivered.get());
        let start = Instant::now() + Duration::from_millis(200);
        let start_us = epoch_us() + 200_000;
        let meter = Meter::start(server);
        step_tx.send_replace(Some(Step {
            rate,
            start,
            end: start + opts.step,
        }));
        tokio::time::sleep_until((start + opts.step).into()).await;
        // The step's last post is due at its end at the latest.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let posts = sh.sent.get() - sent0;
        for w in &mut workers {
            w.say(&format!("end {posts}")).await;
        }
        drain(&sh, del0, posts, Instant::now() + DRAIN).await;
        let mut reports = Vec::with_capacity(k);
        for w in &mut workers {
            reports.push(parse_report(&w.hear(DRAIN + Duration::from_secs(10)).await));
        }
        let met = meter.stop(server);
        // CPU per generator core: processes sharing a core add up.
        let mut per_core: BTreeMap<usize, f64> = BTreeMap::new();
        *per_core.entry(place.parent).or_default() += met.generator_cpu;
        for (w, r) in workers.iter().zip(&reports) {
            *per_core.entry(w.cpu).or_default() += r.cpu;
        }
        let generator_cpu = per_core.values().copied().fold(0.0, f64::max);
        let mut h = sh.hist.borrow().clone();
        let mut delivered = sh.delivered.get() - del0;
        let mut last_us = sh.last_us.get();
        for r in &reports {
            h.add(&r.hist).expect("merge histograms");
            delivered += r.delivered;
            last_us = last_us.max(r.last_us);
        }
        let span = (last_us.saturating_sub(start_us) as f64 / 1e6).max(opts.step.as_secs_f64());
        let (p50, p99) = (ms(&h, 0.5), ms(&h, 0.99));
        let expected = posts * m as u64;
        let all = delivered == expected && posts > 0;
        let valid = generator_cpu <= GENERATOR_CPU_LIMIT;
        let achieved = delivered as f64 / span;
        results.row(json!({
            "scenario": scenario, "server": server.kind.name(), "members": m,
            "posts_per_sec": round2(rate), "target_deliveries_per_sec": target,
            "deliveries": delivered, "expected": expected, "all_delivered": all,
            "deliveries_per_sec": achieved.round(),
            "p50_ms": round2(p50), "p99_ms": round2(p99), "sampled": h.len(),
            "server_cpu_us_per_delivery": round2(met.server_cpu_secs * 1e6 / delivered.max(1) as f64),
            "generator_cpu": round2(generator_cpu), "valid": valid,
            "generators": k,
            "generator_cpu_per_core": per_core.iter().map(|(c, v)| json!({"cpu": c, "used": round2(*v)})).collect::<Vec<_>>(),
        }));
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
    task.abort();
    for w in workers {
        w.close().await;
    }
    pin_self();
    (best, p99_at_100k)
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    let place = Placement::new(1, opts.generators);
    eprintln!(
        "fanout: server on cpu {}, {} generator workers on cpus {:?}, orchestrator on cpu {}",
        place.server,
        place.workers.len(),
        place.workers,
        place.parent
    );
    for (&m, &limit_ms) in opts.rooms.iter().zip(&opts.p99_limit_ms) {
        let mut best = Vec::new();
        for &kind in kinds {
            let server = Server::start_on(kind, &["--database-url", "memory"], Some(&place.server));
            let (b, p99) = ladder(&server, m, limit_ms, opts, &place, "fanout", results).await;
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

/// `fanout-worker <addr> <first member> <count> <sample stride> [<proto>]`
/// (`socketio`, `plain` or `seed`; Socket.IO by default): joins its
/// members to the room, says `ready`, then answers the orchestrator's lines
/// on stdin: `quiet` (once the joins' traffic is over: `quiet`), `begin`
/// (counters reset: `begun`), `end <posts>` (once every member has the
/// step's posts, or after 10 s: one JSON line with `delivered`, `last_us`,
/// `cpu_secs`, `secs` and `hist`, a base64 hdrhistogram V2). Exits at the
/// end of stdin.
pub fn worker(args: &[String]) {
    let addr: SocketAddr = args[0].parse().expect("addr");
    let [first, count, stride] = [1, 2, 3].map(|i| args[i].parse::<usize>().expect("n"));
    let proto = args
        .get(4)
        .map_or(Proto::SocketIo, |p| Proto::parse(p).expect("proto"));
    crate::block_on_local(async move {
        let sh = Shared::new();
        let token = conn::token("fan");
        let mut tasks = Vec::with_capacity(count);
        conn::ramp_as(
            proto,
            addr,
            None,
            first..first + count,
            |_| token.clone(),
            |_| Some(ROOM.to_owned()),
            |i, ws| {
                tasks.push(tokio::task::spawn_local(member(
                    proto,
                    ws,
                    sampled(i, stride),
                    None,
                    sh.clone(),
                )))
            },
        )
        .await;
        let say = |s: &str| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
            let _ = out.flush();
        };
        say("ready");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let (mut del0, mut cpu0, mut t0) = (0, 0.0, Instant::now());
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("quiet") => {
                    quiet(&sh, QUIET_CAP).await;
                    say("quiet");
                }
                Some("begin") => {
                    sh.hist.borrow_mut().reset();
                    (del0, cpu0, t0) = (sh.delivered.get(), self_cpu_secs(), Instant::now());
                    say("begun");
                }
                Some("end") => {
                    let posts: u64 = words.next().and_then(|p| p.parse().ok()).expect("posts");
                    drain(&sh, del0, posts * count as u64, Instant::now() + DRAIN).await;
                    let mut bytes = Vec::new();
                    V2Serializer::new()
                        .serialize(&*sh.hist.borrow(), &mut bytes)
                        .expect("serialize histogram");
                    say(&json!({
                        "delivered": sh.delivered.get() - del0,
                        "last_us": sh.last_us.get(),
                        "cpu_secs": self_cpu_secs() - cpu0,
                        "secs": t0.elapsed().as_secs_f64(),
                        "hist": B64.encode(&bytes),
                    })
                    .to_string());
                }
                _ => panic!("fanout worker: unknown command {line}"),
            }
        }
        for t in tasks {
            t.abort();
        }
    });
}
