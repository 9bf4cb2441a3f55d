//! `instructions`: what one acked `chat:send` costs the server, counted in
//! CPU instructions by callgrind rather than timed, so that the figure is the
//! same from run to run whatever else the machine is doing (timings on a
//! shared 2-core VM vary ±20%; instruction counts do not).
//!
//! The server (switchboard's `profiling` build, or the floor) runs under
//! `valgrind --tool=callgrind` pinned to CPU 0, so with one tokio worker as
//! in the other scenarios. `connections` clients, each alone in its room,
//! send `chat:send` with an ack in a closed loop (the next once the last is
//! acked). After a warm-up the counters are zeroed (`callgrind_control -z`),
//! `acks` sends are made, and the counters dumped (`-d`): that dump holds only
//! the measured sends, and `callgrind_annotate` on it shows where they went.
//! User-space instructions only: the kernel's share (loopback TCP, epoll) is
//! not in it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;

use crate::conn::{self, Ws};
use crate::report::{Results, round2};
use crate::servers::{Kind, Server, pinned, switchboard_args, which};

pub struct Opts {
    pub connections: usize,
    pub warmup: usize,
    pub acks: usize,
}

/// switchboard's `profiling` build (release code with symbols), beside the
/// release binary this bench was built with; `SWITCHBOARD_PROFILING_BIN`
/// names another.
fn profiling_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SWITCHBOARD_PROFILING_BIN") {
        return p.into();
    }
    let release = Path::new(env!("CARGO_BIN_EXE_switchboard"));
    release
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("profiling/switchboard")
}

fn callgrind(out_dir: &Path, program: &Path) -> Command {
    let mut c = pinned(Some("0"), "valgrind");
    c.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}/cg.out", out_dir.display()))
        .arg(format!("--log-file={}/valgrind.log", out_dir.display()))
        // Each dump names its files and functions in full, so that the
        // measured dump reads on its own.
        .args(["--compress-strings=no", "--compress-pos=no"])
        .arg(program);
    c
}

/// Closed loop: each connection sends, waits for its ack, sends again.
async fn sends(conns: &mut [Ws], total: usize, next_id: &mut u64) {
    let per = total.div_ceil(conns.len());
    let base = *next_id;
    futures_util::future::join_all(conns.iter_mut().enumerate().map(|(i, ws)| async move {
        let room = format!("i{i}");
        for k in 0..per as u64 {
            let id = base + k;
            ws.send(conn::chat_send(id, &room, "x"))
                .await
                .expect("send");
            let ack = conn::expect(ws, |t| conn::ack_id(t) == Some(id))
                .await
                .expect("ack");
            assert!(ack.contains("\"success\":true"), "refused: {ack}");
        }
    }))
    .await;
    *next_id += per as u64;
}

fn control(flag: &str, pid: u32) {
    let ok = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "callgrind_control {flag} {pid} failed");
}

/// The instruction total of the newest callgrind dump in `dir`.
fn dumped_instructions(dir: &Path, before: &[PathBuf]) -> (u64, PathBuf) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("cg.out"))
                    && !before.contains(p)
            })
            .collect();
        files.sort();
        if let Some(f) = files.last() {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let total = text
                .lines()
                .find_map(|l| l.strip_prefix("totals:").or(l.strip_prefix("summary:")))
                .and_then(|v| v.split_whitespace().next()?.parse().ok());
            if let Some(t) = total {
                return (t, f.clone());
            }
        }
        assert!(Instant::now() < deadline, "no callgrind dump in {dir:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect()
}

async fn measure(kind: Kind, opts: &Opts, results: &mut Results) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let (cmd, from_stdout) = match kind {
        Kind::Switchboard => {
            let bin = profiling_binary();
            if !bin.exists() {
                eprintln!(
                    "{} is missing: run `cargo build --profile profiling` first",
                    bin.display()
                );
                std::process::exit(2);
            }
            let mut c = callgrind(dir.path(), &bin);
            switchboard_args(&mut c, &["--database-url", "memory"]);
            (c, false)
        }
        Kind::Floor => {
            let mut c = callgrind(dir.path(), &std::env::current_exe().unwrap());
            c.arg("floor-server");
            (c, true)
        }
        Kind::Node => return None, // V8's JIT under valgrind measures valgrind
        Kind::Plain | Kind::Seed => return None, // Socket.IO clients only
    };
    let server = Server::spawn(kind, cmd, from_stdout);
    let mut conns = Vec::with_capacity(opts.connections);
    conn::ramp(
        server.addr,
        None,
        0..opts.connections,
        |i| conn::token(&format!("counted{i}")),
        |i| Some(format!("i{i}")),
        |_, ws| conns.push(ws),
    )
    .await;
    let mut next_id = 1;
    sends(&mut conns, opts.warmup, &mut next_id).await;
    control("-z", server.pid());
    let before = listing(dir.path());
    let t0 = Instant::now();
    sends(&mut conns, opts.acks, &mut next_id).await;
    let secs = t0.elapsed().as_secs_f64();
    control("-d", server.pid());
    let (total, file) = dumped_instructions(dir.path(), &before);
    let acks = opts.acks.div_ceil(opts.connections) * opts.connections;
    let per = total as f64 / acks as f64;
    if let Ok(keep) = std::env::var("CALLGRIND_KEEP") {
        let to = format!("{keep}/callgrind.{}.out", kind.name());
        std::fs::copy(&file, &to).unwrap();
        println!("kept {to} (callgrind_annotate {to})");
    }
    results.row(json!({
        "scenario": "instructions", "server": kind.name(),
        "connections": opts.connections, "acks": acks,
        "instructions": total, "instructions_per_ack": per.round(),
        "secs_under_callgrind": round2(secs),
    }));
    Some(per)
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    if !which("valgrind") || !which("callgrind_control") {
        eprintln!("valgrind is needed (Debian: apt-get install valgrind)");
        std::process::exit(2);
    }
    let mut figures = Vec::new();
    for &kind in kinds {
        if let Some(per) = measure(kind, opts, results).await {
            figures.push((kind, per));
        }
    }
    let sb = figures.iter().find(|(k, _)| *k == Kind::Switchboard);
    let floor = figures.iter().find(|(k, _)| *k == Kind::Floor);
    if let (Some((_, sb)), Some((_, fl))) = (sb, floor) {
        results.summary(json!({
            "figure": "instructions_per_ack", "switchboard": sb.round(), "floor": fl.round(),
            "ratio": round2(sb / fl), "ratio_of": "switchboard / floor",
        }));
    }
}
