//! Benchmark: collaborative documents (docs/protocol.md, section 15) with the
//! SQLite store. N editors (2, 10, 50) on one document: accepted ops/s,
//! op-ack latency (p50, p99, max), server CPU µs per accepted op, and the
//! `doc:operation` relays the editors receive per second.
//!
//! `cargo bench --bench docs` prints a table and writes JSON lines to
//! benches/results/docs.json; `cargo bench --bench docs -- --quick` is a short
//! smoke run (1 s per run) that writes nothing. `DOCS_BENCH_ONLY=50/` runs
//! only the runs whose label (`<editors>/<mode>`) contains it (nothing written).
//!
//! The server is the release binary in its own process (pinned to CPU 0 when
//! `taskset` exists), with SQLite in a temporary directory and the per-user
//! message budget lifted (`common::UNLIMITED`); this generator runs on one
//! thread (pinned to CPU 1). Each editor is one websocket of its own user
//! (`sender<i>`) that joins the same document and follows the protocol's
//! client discipline: at most one op in flight, each op made on the last
//! version it applied. It keeps the document's text (ops it receives are
//! applied in version order; its own op, once acked, is rebased past the ops
//! the server accepted before it with `switchboard::documents::ot::rebase`, the server's
//! own step), picks a random position in it, and inserts or deletes 1-4
//! characters (inserts dominate below 1,000 characters, deletes above, so the
//! document stays near that length).
//!
//! Two modes per N:
//! * fixed rate: R ops/s in all (2 editors: 200/s, 10: 500/s, 50: 500/s,
//!   chosen so that neither the server's core nor the generator's is
//!   saturated: at 50 editors each op is relayed 49 times); each editor's ops
//!   are due every N/R s. An op due while one is in flight is sent when that
//!   one is acked; latency is measured from when it was due (coordinated
//!   omission counted, as in chat_store's fixed-rate runs).
//! * saturate: each editor sends its next op as soon as the previous one is
//!   acked; latency from the send.
//!
//! A run is valid when no op was refused, no connection closed, every due op
//! was sent, the versions have no gaps (final version = ops acked), and every
//! editor's text equals the server's (a fresh `doc:join` after the run).
//! Each row also records the CPU the generator used (over 80% of its core:
//! the run is not valid, the generator was the limit) and what the rest of
//! the machine used meanwhile (`others_cpu_share`: a shared machine's noise).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, Ws, connect_auth_only, new_hist, self_cpu_secs};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use switchboard::documents::ot::{self, Op};
use tokio_tungstenite::tungstenite::Message;

const DOC: &str = "bench-doc";
/// The length the document hovers around.
const TARGET_LEN: usize = 1000;
/// How long a run may go on past its end to send the ops due before it.
const OVERRUN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Mode {
    /// Ops per second, all editors together.
    Fixed(f64),
    Saturate,
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Fixed(r) => format!("fixed {r:.0}/s"),
            Mode::Saturate => "saturate".into(),
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.end
    }
}

/// The editor's op not yet applied locally.
struct InFlight {
    /// Its Socket.IO ack id.
    id: u64,
    /// The op as sent, rebased past each received op with a lower version.
    op: Op,
    /// When it was due (fixed rate) or sent (saturate).
    due: Instant,
    /// Its version, once acked.
    acked: Option<u64>,
}

struct Editor {
    i: usize,
    ws: Ws,
    rng: StdRng,
    /// The document at version `applied`.
    text: String,
    applied: u64,
    /// Received ops above `applied + 1`, by version.
    pending: BTreeMap<u64, Op>,
    inflight: Option<InFlight>,
    next_id: u64,
    // Figures.
    hist: Histogram<u64>,
    /// Acked ops due inside the measured window.
    accepted: u64,
    /// Acked ops of the whole run, warm-up included.
    acked_all: u64,
    /// Refused ops by error code (and the generator's own anomalies).
    failed: HashMap<String, u64>,
    /// `doc:operation` relays received inside the measured window.
    deliveries: u64,
    /// Ops due before the end and never sent (the run overran by `OVERRUN`).
    unsent: u64,
    closed: bool,
}

/// `{type, position, content?, length?}` -> the op.
fn op_of(v: &Value) -> Option<Op> {
    let pos = v.get("position")?.as_u64()? as usize;
    match v.get("type")?.as_str()? {
        "insert" => Some(Op::Insert {
            pos,
            text: v.get("content")?.as_str()?.to_string(),
        }),
        "delete" => Some(Op::Delete {
            pos,
            len: v.get("length")?.as_u64()? as usize,
        }),
        _ => None,
    }
}

fn op_frame(id: u64, version: u64, i: usize, op: &Op) -> Message {
    let body = match op {
        Op::Insert { pos, text } => {
            format!("\"type\":\"insert\",\"position\":{pos},\"content\":\"{text}\"")
        }
        Op::Delete { pos, len } => {
            format!("\"type\":\"delete\",\"position\":{pos},\"length\":{len}")
        }
    };
    Message::text(format!(
        "42{id}[\"doc:operation\",{{\"docId\":\"{DOC}\",\"version\":{version},{body},\"opId\":\"e{i}-{id}\"}}]"
    ))
}

/// `43<id>[payload]` -> (id, payload)
fn parse_ack(t: &str) -> Option<(u64, Value)> {
    let rest = t.strip_prefix("43")?;
    let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    let id = rest[..digits].parse().ok()?;
    let mut args: Value = serde_json::from_str(&rest[digits..]).ok()?;
    Some((id, args.get_mut(0)?.take()))
}

impl Editor {
    /// Connects user `sender<i>` and joins the document.
    async fn join(addr: std::net::SocketAddr, i: usize) -> Editor {
        let mut ws = connect_auth_only(addr, i).await;
        let (text, version) = join_doc(&mut ws).await;
        Editor {
            i,
            ws,
            rng: StdRng::seed_from_u64(0x5eed_0000 + i as u64),
            text,
            applied: version,
            pending: BTreeMap::new(),
            inflight: None,
            next_id: 1,
            hist: new_hist(),
            accepted: 0,
            acked_all: 0,
            failed: HashMap::new(),
            deliveries: 0,
            unsent: 0,
            closed: false,
        }
    }

    fn fail(&mut self, code: &str) {
        *self.failed.entry(code.to_string()).or_default() += 1;
    }

    fn apply(&mut self, op: &Op) {
        if ot::apply(&mut self.text, op).is_err() {
            self.fail("generator:op_out_of_range");
        }
    }

    /// Applies what can be applied in version order: received ops and the
    /// editor's own acked op.
    fn drain(&mut self) {
        loop {
            let next = self.applied + 1;
            if self
                .inflight
                .as_ref()
                .is_some_and(|f| f.acked == Some(next))
            {
                let f = self.inflight.take().unwrap();
                self.apply(&f.op);
                self.applied = next;
                continue;
            }
            let Some(op) = self.pending.remove(&next) else {
                break;
            };
            // Accepted before the editor's own op (a relay never carries
            // the editor's own): the server rebased that one past it.
            if let Some(f) = &mut self.inflight {
                f.op = ot::rebase(&f.op, &op);
            }
            self.apply(&op);
            self.applied = next;
        }
    }

    /// A random insert or delete that fits the text at `applied`.
    fn next_op(&mut self) -> Op {
        let len = ot::char_len(&self.text);
        let p_insert = (1.0 - len as f64 / (2 * TARGET_LEN) as f64).clamp(0.1, 0.9);
        if len < 4 || self.rng.random_bool(p_insert) {
            let n = self.rng.random_range(1..=4);
            let text = (0..n)
                .map(|_| self.rng.random_range(b'a'..=b'z') as char)
                .collect();
            Op::Insert {
                pos: self.rng.random_range(0..=len),
                text,
            }
        } else {
            let n = self.rng.random_range(1..=4);
            Op::Delete {
                pos: self.rng.random_range(0..=len - n),
                len: n,
            }
        }
    }

    async fn send(&mut self, due: Instant) {
        let op = self.next_op();
        let id = self.next_id;
        self.next_id += 1;
        if self
            .ws
            .send(op_frame(id, self.applied, self.i, &op))
            .await
            .is_err()
        {
            self.closed = true;
            return;
        }
        self.inflight = Some(InFlight {
            id,
            op,
            due,
            acked: None,
        });
    }

    async fn on_text(&mut self, t: &str, w: &Window) {
        if t == "2" {
            if self.ws.send(Message::text("3")).await.is_err() {
                self.closed = true;
            }
            return;
        }
        if t.starts_with("43") {
            let Some((id, ack)) = parse_ack(t) else {
                self.fail("generator:unparsed_ack");
                return;
            };
            let Some(f) = self
                .inflight
                .as_mut()
                .filter(|f| f.id == id && f.acked.is_none())
            else {
                self.fail("generator:unexpected_ack");
                return;
            };
            let due = f.due;
            let version = ack.get("version").and_then(Value::as_u64);
            match (ack.get("success").and_then(Value::as_bool), version) {
                (Some(true), Some(v)) if v > self.applied && !self.pending.contains_key(&v) => {
                    f.acked = Some(v);
                    self.acked_all += 1;
                    if w.contains(due) {
                        self.accepted += 1;
                        let us = due.elapsed().as_micros() as u64;
                        self.hist.saturating_record(us.max(1));
                    }
                    self.drain();
                }
                (Some(true), _) => {
                    self.inflight = None;
                    self.fail("generator:ack_version_taken_or_missing");
                }
                _ => {
                    self.inflight = None;
                    let code = ack.get("code").and_then(Value::as_str).unwrap_or("no_code");
                    self.fail(code);
                }
            }
            return;
        }
        if let Some(rest) = t.strip_prefix("42[\"doc:operation\",") {
            if w.contains(Instant::now()) {
                self.deliveries += 1;
            }
            let Ok(v) = serde_json::from_str::<Value>(rest.strip_suffix(']').unwrap_or(rest))
            else {
                self.fail("generator:unparsed_relay");
                return;
            };
            let (Some(version), Some(op)) = (v.get("version").and_then(Value::as_u64), op_of(&v))
            else {
                self.fail("generator:unparsed_relay");
                return;
            };
            let mine = format!("e{}-", self.i);
            if v.get("opId")
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with(&mine))
            {
                self.fail("generator:own_op_relayed_back");
                return;
            }
            if version <= self.applied || self.pending.contains_key(&version) {
                self.fail("generator:duplicate_relay");
                return;
            }
            self.pending.insert(version, op);
            self.drain();
        }
    }

    /// Sends ops per `mode` until the window ends, then lets the last one be acked.
    async fn drive(mut self, mode: Mode, n: usize, w: Window) -> Editor {
        let gap = match mode {
            Mode::Fixed(r) => Duration::from_secs_f64(n as f64 / r),
            Mode::Saturate => Duration::ZERO,
        };
        // Spread the editors' first ops over one gap.
        let mut due = w.start + gap.mul_f64(self.i as f64 / n as f64);
        let hard_stop = w.end + OVERRUN;
        loop {
            let now = Instant::now();
            if self.closed || now >= hard_stop {
                break;
            }
            if self.inflight.is_none() {
                if let Mode::Saturate = mode {
                    due = now;
                }
                if due >= w.end {
                    break;
                }
                if due <= now {
                    self.send(due).await;
                    due += gap;
                    continue;
                }
            }
            let wake = if self.inflight.is_none() {
                due
            } else {
                hard_stop
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                m = self.ws.next() => match m {
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str(), &w).await,
                    Some(Ok(_)) => {}
                    _ => self.closed = true,
                },
            }
        }
        if self.inflight.take().is_some() {
            self.fail("generator:no_ack_before_overrun");
        }
        if let Mode::Fixed(_) = mode
            && due < w.end
        {
            self.unsent += ((w.end - due).as_secs_f64() / gap.as_secs_f64()).ceil() as u64;
        }
        self
    }

    /// Reads relays until the text is at `version` (or `deadline`).
    async fn catch_up(&mut self, version: u64, deadline: Instant, w: &Window) {
        while self.applied < version && !self.closed {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => break,
                m = self.ws.next() => match m {
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str(), w).await,
                    Some(Ok(_)) => {}
                    _ => self.closed = true,
                },
            }
        }
    }
}

/// Joins `DOC`; returns the ack's content and version.
async fn join_doc(ws: &mut Ws) -> (String, u64) {
    ws.send(Message::text(format!("420[\"doc:join\",\"{DOC}\"]")))
        .await
        .unwrap();
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        if t.as_str() == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        if let Some((0, ack)) = parse_ack(t.as_str()) {
            assert_eq!(ack["success"], true, "doc:join refused: {ack}");
            let content = ack["content"]
                .as_str()
                .expect("join ack content")
                .to_string();
            let version = ack["version"].as_u64().expect("join ack version");
            return (content, version);
        }
    }
    panic!("connection closed during doc:join");
}

struct Outcome {
    editors: usize,
    mode: Mode,
    accepted: u64,
    secs: f64,
    hist: Histogram<u64>,
    server_cpu: f64,
    generator_cpu: f64,
    /// CPU seconds the rest of the machine used (other processes, steal).
    others_cpu: f64,
    deliveries: u64,
    failed: BTreeMap<String, u64>,
    unsent: u64,
    closed: usize,
    acked_all: u64,
    final_version: u64,
    doc_chars: usize,
    converged: usize,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.secs
    }
    fn errors(&self) -> u64 {
        self.failed.values().sum()
    }
    fn others_share(&self) -> f64 {
        self.others_cpu / self.secs
    }
    fn generator_share(&self) -> f64 {
        self.generator_cpu / self.secs
    }
    fn valid(&self) -> bool {
        self.errors() == 0
            && self.unsent == 0
            && self.closed == 0
            && self.final_version == self.acked_all
            && self.converged == self.editors
            && self.generator_share() < 0.8
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    fn json(&self) -> Value {
        let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({
            "scenario": "docs",
            "store": "sqlite",
            "mode": self.mode.label(),
            "editors": self.editors,
            "target_ops_per_sec": match self.mode { Mode::Fixed(r) => Some(r), Mode::Saturate => None },
            "accepted_ops_per_sec": self.rate().round(),
            "errors": self.errors(),
            "error_codes": self.failed,
            "p50_ms": r3(self.ms(0.5)),
            "p99_ms": r3(self.ms(0.99)),
            "max_ms": r3(self.hist.max() as f64 / 1000.0),
            "server_cpu_us_per_op": (self.server_cpu * 1e6 / self.accepted.max(1) as f64).round(),
            "deliveries_per_sec": (self.deliveries as f64 / self.secs).round(),
            "generator_cpu_share": (self.generator_share() * 100.0).round() / 100.0,
            "others_cpu_share": (self.others_share() * 100.0).round() / 100.0,
            "unsent": self.unsent,
            "closed": self.closed,
            "final_version": self.final_version,
            "acked_ops": self.acked_all,
            "doc_chars": self.doc_chars,
            "converged_editors": self.converged,
            "valid": self.valid(),
        })
    }
}

async fn run(
    dir: &std::path::Path,
    tag: usize,
    n: usize,
    mode: Mode,
    warmup: Duration,
    secs: Duration,
) -> Outcome {
    let db = format!("sqlite://{}/docs{tag}.db", dir.display());
    let server = Server::start(&["--database-url", &db]);
    let mut editors = Vec::new();
    for i in 0..n {
        editors.push(Editor::join(server.addr, i).await);
    }
    let start = Instant::now();
    let w = Window {
        start,
        measure_from: start + warmup,
        end: start + warmup + secs,
    };
    let tasks: Vec<_> = editors
        .into_iter()
        .map(|e| tokio::spawn(e.drive(mode, n, w)))
        .collect();
    tokio::time::sleep_until(w.measure_from.into()).await;
    let (cpu0, gen0, busy0) = (server.cpu_secs(), self_cpu_secs(), machine_cpu_secs());
    tokio::time::sleep_until(w.end.into()).await;
    let (cpu1, gen1, busy1) = (server.cpu_secs(), self_cpu_secs(), machine_cpu_secs());
    let mut editors = Vec::new();
    for t in tasks {
        editors.push(t.await.unwrap());
    }

    // The server's document, read by a socket of its own, against each editor's.
    let mut probe = connect_auth_only(server.addr, 1_000_000).await;
    let (content, final_version) = join_doc(&mut probe).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut converged = 0;
    for e in &mut editors {
        e.catch_up(final_version, deadline, &w).await;
        if e.applied == final_version && e.text == content {
            converged += 1;
        }
    }

    let mut hist = new_hist();
    let mut failed = BTreeMap::new();
    let (mut accepted, mut acked_all, mut deliveries, mut unsent, mut closed) = (0, 0, 0, 0, 0);
    for e in editors {
        hist.add(&e.hist).unwrap();
        accepted += e.accepted;
        acked_all += e.acked_all;
        deliveries += e.deliveries;
        unsent += e.unsent;
        closed += usize::from(e.closed);
        for (code, k) in e.failed {
            *failed.entry(code).or_default() += k;
        }
    }
    Outcome {
        editors: n,
        mode,
        accepted,
        secs: secs.as_secs_f64(),
        hist,
        server_cpu: cpu1 - cpu0,
        generator_cpu: gen1 - gen0,
        others_cpu: ((busy1 - busy0) - (cpu1 - cpu0) - (gen1 - gen0)).max(0.0),
        deliveries,
        failed,
        unsent,
        closed,
        acked_all,
        final_version,
        doc_chars: ot::char_len(&content),
        converged,
    }
}

/// CPU seconds the whole machine has been busy in processes (user, nice,
/// system) or stolen by the host, all cores: what is left after the server's
/// and the generator's is other load. Interrupt time is left out: the
/// loopback traffic of the run itself is counted there.
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 7].iter().filter_map(|&k| ticks.get(k)).sum();
    busy / 100.0
}

/// Where the figures were taken, as the other results record it.
fn machine() -> Value {
    json!({
        "scenario": "machine",
        "date": common::sh("date -u +%Y-%m-%d"),
        "cpu": common::sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "cores": common::sh("nproc --all"),
        "memory": common::sh("grep MemTotal /proc/meminfo | awk '{print $2\" kB\"}'"),
        "kernel": common::sh("uname -r"),
        "rustc": common::sh("rustc --version"),
        "switchboard": env!("CARGO_PKG_VERSION"),
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let only = std::env::var("DOCS_BENCH_ONLY").ok();
    let (warmup, secs) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let rt = common::generator_runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let machine = machine();
        let probe: Value = serde_json::from_str(&common::fsync_probe(
            dir.path(),
            if quick { Duration::from_millis(300) } else { Duration::from_secs(1) },
        ))
        .expect("fsync probe JSON");
        println!("{machine}\n{probe}");

        let mut outcomes = Vec::new();
        for (tag, (n, mode)) in [
            (2, Mode::Fixed(200.0)),
            (2, Mode::Saturate),
            (10, Mode::Fixed(500.0)),
            (10, Mode::Saturate),
            (50, Mode::Fixed(500.0)),
            (50, Mode::Saturate),
        ]
        .into_iter()
        .enumerate()
        {
            let label = format!("{n}/{}", mode.label());
            if only.as_ref().is_some_and(|o| !label.contains(o.as_str())) {
                continue;
            }
            let o = run(dir.path(), tag, n, mode, warmup, secs).await;
            eprintln!("{}", o.json());
            outcomes.push(o);
        }

        println!(
            "\n{:<8} {:<14} {:>11} {:>8} {:>8} {:>8} {:>13} {:>13} {:>8} {:>7} {:>6}",
            "editors", "mode", "acked op/s", "p50 ms", "p99 ms", "max ms", "server µs/op", "relays recv/s", "gen cpu", "others", "valid"
        );
        for o in &outcomes {
            println!(
                "{:<8} {:<14} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>13.0} {:>13.0} {:>7.0}% {:>6.0}% {:>6}{}",
                o.editors,
                o.mode.label(),
                o.rate(),
                o.ms(0.5),
                o.ms(0.99),
                o.hist.max() as f64 / 1000.0,
                o.server_cpu * 1e6 / o.accepted.max(1) as f64,
                o.deliveries as f64 / o.secs,
                100.0 * o.generator_share(),
                100.0 * o.others_share(),
                if o.valid() { "yes" } else { "NO" },
                if o.errors() > 0 { format!("  errors {:?}", o.failed) } else { String::new() },
            );
            if !o.valid() {
                println!(
                    "         unsent {}, closed {}, final version {} vs {} acked, {}/{} editors converged",
                    o.unsent, o.closed, o.final_version, o.acked_all, o.converged, o.editors
                );
            }
        }
        if outcomes.iter().any(|o| o.generator_share() > 0.8) {
            println!("\nWARNING: the generator used over 80% of its core in some run: those figures understate the server.");
        }
        if outcomes.iter().any(|o| o.others_share() > 0.1) {
            println!("\nNOTE: other processes used over 10% of a core in some run (\"others\"): the machine was not quiet.");
        }
        if cfg!(debug_assertions) || quick || only.is_some() {
            println!("\nDebug, quick or partial run: figures not written to benches/results.");
            return;
        }
        let results = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results");
        std::fs::create_dir_all(results).unwrap();
        let mut f = std::fs::File::create(format!("{results}/docs.json")).unwrap();
        writeln!(f, "{machine}").unwrap();
        writeln!(f, "{probe}").unwrap();
        for o in &outcomes {
            writeln!(f, "{}", o.json()).unwrap();
        }
        println!("\nwrote {results}/docs.json");
    });
}
