//! `recovery`: N clients in rooms of `per_room` drop at once (their TCP
//! connections reset, as when a network or a balancer goes), each room gets
//! K messages while they are away, and all of them reconnect at once with
//! the pid and the last offset they held, as socket.io-client does, while
//! one more message per room and second keeps flowing. Per client: the time
//! from its reconnect until it is recovered and holds every message sent
//! during the gap; over all: the time until the last is, server CPU, and
//! that each got every missed message once and in order.
//!
//! switchboard runs with its default store (SQLite in a file); Node's
//! socket.io 4.8 with `connectionStateRecovery` (in memory,
//! `skipMiddlewares: false` so that both verify the token again).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Error, Ws};
use crate::report::{Meter, Results, hist, ms, ratio_line, round2};
use crate::servers::{Kind, Server};

pub struct Opts {
    pub clients: usize,
    pub per_room: usize,
    /// K: messages each room gets while its members are away.
    pub missed: Vec<usize>,
    /// Messages per room and second while they come back.
    pub flow_per_room_sec: f64,
}

/// What one receiver holds.
#[derive(Default)]
struct Held {
    pid: RefCell<String>,
    offset: RefCell<Option<String>>,
    last_seq: Cell<u64>,
    dups: Cell<u64>,
    gaps: Cell<u64>,
}

/// Reads `seq` and the offset (the last argument, when a string) of a
/// `chat:message` frame.
fn message(t: &str) -> Option<(u64, Option<String>)> {
    if !t.starts_with("42[\"chat:message\"") {
        return None;
    }
    let at = t.find("\"seq\":")? + 6;
    let digits = &t[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    let seq = digits[..end].parse().ok()?;
    let offset = t
        .strip_suffix("\"]")
        .and_then(|s| s.rsplit_once(",\""))
        .map(|(_, o)| o.to_owned())
        .filter(|o| !o.contains('"') && !o.contains('}'));
    Some((seq, offset))
}

impl Held {
    fn note(&self, t: &str) {
        let Some((seq, offset)) = message(t) else {
            return;
        };
        let last = self.last_seq.get();
        if seq <= last {
            self.dups.set(self.dups.get() + 1);
            return;
        }
        if seq > last + 1 {
            self.gaps.set(self.gaps.get() + 1);
        }
        self.last_seq.set(seq);
        if offset.is_some() {
            *self.offset.borrow_mut() = offset;
        }
    }
}

/// CONNECT with the token, and the pid and offset when coming back; the
/// reply's pid.
async fn handshake(addr: SocketAddr, token: &str, held: &Held) -> Result<(Ws, String), Error> {
    let tcp = conn::tcp(addr, None, true).await?;
    let mut ws = conn::websocket(tcp, addr, "").await?;
    conn::expect(&mut ws, |t| t.starts_with('0')).await?;
    let pid = held.pid.borrow().clone();
    let mut auth = json!({ "token": token });
    if !pid.is_empty() {
        auth["pid"] = json!(pid);
        if let Some(o) = held.offset.borrow().as_ref() {
            auth["offset"] = json!(o);
        }
    }
    ws.send(Message::text(format!("40{auth}"))).await?;
    // Node's server sends the missed packets before its CONNECT reply
    // (socket.io-client buffers them until it is connected): note them.
    let reply = conn::expect(&mut ws, |t| {
        held.note(t);
        t.starts_with("40") || t.starts_with("44")
    })
    .await?;
    let v: serde_json::Value =
        serde_json::from_str(&reply[2..]).map_err(|e| format!("{e}: {reply}"))?;
    let got = v["pid"]
        .as_str()
        .ok_or_else(|| format!("no pid: {reply}"))?;
    Ok((ws, got.to_owned()))
}

/// Reads until the connection ends (or `stop`), noting messages.
async fn receive(mut ws: Ws, held: Rc<Held>, until: Option<(u64, Rc<Cell<Option<Instant>>>)>) {
    // Everything may have come with the handshake already.
    if let Some((want, done)) = &until
        && held.last_seq.get() >= *want
    {
        done.set(Some(Instant::now()));
    }
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            let t = t.as_str();
            if t == "2" {
                if ws.send(Message::text("3")).await.is_err() {
                    return;
                }
                continue;
            }
            held.note(t);
            if let Some((want, done)) = &until
                && done.get().is_none()
                && held.last_seq.get() >= *want
            {
                done.set(Some(Instant::now()));
            }
        }
    }
}

/// One poster per room: sends messages, counts their acks, drains its
/// socket and answers pings (a run outlasts the ping timeout).
struct Poster {
    tx: tokio::sync::mpsc::UnboundedSender<usize>,
    acked: Rc<Cell<u64>>,
    posted: Rc<Cell<u64>>,
}

impl Poster {
    async fn open(addr: SocketAddr, room: &str) -> Poster {
        let mut ws = conn::connect(addr, None, &conn::token(&format!("poster-{room}")), false)
            .await
            .expect("poster connects");
        conn::join(&mut ws, room).await.expect("poster joins");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let acked = Rc::new(Cell::new(0u64));
        let posted = Rc::new(Cell::new(0u64));
        let (a, p, room) = (acked.clone(), posted.clone(), room.to_owned());
        tokio::task::spawn_local(async move {
            let mut next_id = 1u64;
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if t.as_str() == "2" {
                                if ws.send(Message::text("3")).await.is_err() { return; }
                            } else if t.as_str().starts_with("43") {
                                a.set(a.get() + 1);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    n = rx.recv() => {
                        let Some(n) = n else { return };
                        for _ in 0..n {
                            let frame = conn::chat_send(next_id, &room, "missed while away");
                            next_id += 1;
                            if ws.send(frame).await.is_err() { return; }
                            p.set(p.get() + 1);
                        }
                    }
                }
            }
        });
        Poster { tx, acked, posted }
    }

    fn post(&self, n: usize) {
        let _ = self.tx.send(n);
    }

    /// Waits until everything asked of it so far is posted and acked.
    async fn settle(&self, asked: u64) {
        let by = Instant::now() + Duration::from_secs(60);
        while (self.posted.get() < asked || self.acked.get() < asked) && Instant::now() < by {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    for &k in &opts.missed {
        let mut figures = Vec::new();
        for &kind in kinds {
            if kind == Kind::Floor {
                continue; // the floor has no rooms, history or recovery
            }
            if let Some(row) = one(kind, opts, k).await {
                figures.push((kind, row["all_recovered_secs"].as_f64().unwrap_or(f64::NAN)));
                results.row(row);
            }
        }
        ratio_line(results, "missed", k as f64, "all_recovered_secs", &figures);
    }
}

async fn one(kind: Kind, opts: &Opts, k: usize) -> Option<serde_json::Value> {
    let dir = tempfile_dir();
    let db = format!("sqlite://{dir}/chat.db");
    let server = match kind {
        Kind::Switchboard => Server::start(kind, &["--database-url", &db]),
        _ => Server::start_with_env(kind, &[], &[("RECOVERY", "1")]),
    };
    let addr = server.addr;
    let rooms = opts.clients.div_ceil(opts.per_room);
    let room = |i: usize| format!("rec{}", i % rooms);
    let mut posters = Vec::new();
    for r in 0..rooms {
        posters.push(Poster::open(addr, &room(r)).await);
    }
    let helds: Vec<Rc<Held>> = (0..opts.clients).map(|_| Rc::default()).collect();
    let tokens: Vec<String> = (0..opts.clients)
        .map(|i| conn::token(&format!("r{i}")))
        .collect();
    // Everyone in, one message each so that all hold an offset.
    let mut readers = Vec::new();
    for batch in (0..opts.clients).collect::<Vec<_>>().chunks(200) {
        let conns = futures_util::future::join_all(batch.iter().map(|&i| {
            let (held, token, room) = (helds[i].clone(), &tokens[i], room(i));
            async move {
                let (mut ws, pid) = handshake(addr, token, &held).await?;
                *held.pid.borrow_mut() = pid;
                conn::join(&mut ws, &room).await?;
                Ok::<_, Error>((i, ws))
            }
        }))
        .await;
        for c in conns {
            let (i, ws) = c.unwrap_or_else(|e| panic!("connect: {e}"));
            readers.push(tokio::task::spawn_local(receive(
                ws,
                helds[i].clone(),
                None,
            )));
        }
    }
    for p in &posters {
        p.post(1);
    }
    let by = Instant::now() + Duration::from_secs(60);
    while helds.iter().any(|h| h.last_seq.get() < 1) && Instant::now() < by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warm = helds.iter().filter(|h| h.last_seq.get() >= 1).count();
    // The network goes: every receiver's connection is reset at once.
    for r in readers {
        r.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &posters {
        p.post(k);
    }
    for p in &posters {
        p.settle(1 + k as u64).await;
    }
    // socket.io-client waits about a second before it reconnects.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let want = 1 + k as u64;
    // Messages keep flowing while they come back.
    let flowing = Rc::new(Cell::new(true));
    let flow = {
        let flowing = flowing.clone();
        let period = Duration::from_secs_f64(1.0 / opts.flow_per_room_sec);
        tokio::task::spawn_local(async move {
            while flowing.get() {
                tokio::time::sleep(period).await;
                for p in &posters {
                    p.post(1);
                }
            }
        })
    };
    let meter = Meter::start(&server);
    let start = Instant::now();
    let recovered = Rc::new(Cell::new(0usize));
    let failed = Rc::new(Cell::new(0usize));
    let dones: Vec<Rc<Cell<Option<Instant>>>> = (0..opts.clients).map(|_| Rc::default()).collect();
    let starts: Rc<RefCell<Vec<Instant>>> = Rc::new(RefCell::new(vec![start; opts.clients]));
    let mut back = Vec::new();
    for batch in (0..opts.clients).collect::<Vec<_>>().chunks(500) {
        let conns = futures_util::future::join_all(batch.iter().map(|&i| {
            let (held, token, starts) = (helds[i].clone(), &tokens[i], starts.clone());
            async move {
                starts.borrow_mut()[i] = Instant::now();
                let (ws, pid) = handshake(addr, token, &held).await?;
                let same = pid == *held.pid.borrow();
                Ok::<_, Error>((i, ws, same))
            }
        }))
        .await;
        for c in conns {
            match c {
                Ok((i, ws, same)) => {
                    if same {
                        recovered.set(recovered.get() + 1);
                    } else {
                        failed.set(failed.get() + 1);
                    }
                    back.push(tokio::task::spawn_local(receive(
                        ws,
                        helds[i].clone(),
                        Some((want, dones[i].clone())),
                    )));
                }
                Err(e) => {
                    eprintln!("reconnect: {e}");
                    failed.set(failed.get() + 1);
                }
            }
        }
    }
    let by = Instant::now() + Duration::from_secs(120);
    while dones.iter().any(|d| d.get().is_none()) && Instant::now() < by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = meter.stop(&server);
    flowing.set(false);
    let _ = flow.await;
    let mut h = hist();
    let mut last = start;
    let mut complete = 0usize;
    for (i, d) in dones.iter().enumerate() {
        if let Some(t) = d.get() {
            complete += 1;
            last = last.max(t);
            let _ = h.record((t.duration_since(starts.borrow()[i]).as_micros() as u64).max(1));
        }
    }
    let metric = |name: &str| -> Option<f64> {
        let body = reqwest_metrics(addr)?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let replayed = (kind == Kind::Switchboard)
        .then(|| metric("switchboard_recovery_replayed_total "))
        .flatten();
    for b in back {
        b.abort();
    }
    let dups: u64 = helds.iter().map(|h| h.dups.get()).sum();
    let gaps: u64 = helds.iter().map(|h| h.gaps.get()).sum();
    let all = last.duration_since(start).as_secs_f64();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Some(json!({
        "scenario": "recovery", "server": kind.name(), "clients": opts.clients,
        "rooms": rooms, "missed_per_room": k, "warm": warm,
        "recovered": recovered.get(), "not_recovered": failed.get(),
        "caught_up": complete, "duplicates": dups, "gaps": gaps,
        "all_recovered_secs": if complete == opts.clients { round2(all) } else { f64::NAN },
        "p50_ms": round2(ms(&h, 0.5)), "p99_ms": round2(ms(&h, 0.99)),
        "server_cpu_secs": round2(m.server_cpu_secs),
        "server_cpu_ms_per_client": round2(m.server_cpu_secs * 1e3 / opts.clients as f64),
        "replayed": replayed,
        "store": if kind == Kind::Switchboard { "sqlite file" } else { "memory" },
        "generator_cpu": round2(m.generator_cpu),
    }))
}

/// A fresh directory for the run's SQLite file (removed after the run).
fn tempfile_dir() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "switchboard-recovery-bench-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// `/metrics` of the server (a blocking read on a short-lived thread).
fn reqwest_metrics(addr: SocketAddr) -> Option<String> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .join()
    .ok()
    .flatten()
}
