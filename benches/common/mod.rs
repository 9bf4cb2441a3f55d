//! Helpers shared by the benchmark programs: the server process, a raw
//! Socket.IO websocket connection, CPU accounting, histograms.
#![allow(dead_code)]

use std::io::BufRead;
use std::io::BufReader;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

pub const SECRET: &str = "bench-secret-bench-secret-bench-secret";

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the release binary pinned to CPU 0 with `args` after the defaults.
    pub fn start(args: &[&str]) -> Server {
        let bin = env!("CARGO_BIN_EXE_switchboard");
        let mut cmd = if which("taskset") {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", bin]);
            c
        } else {
            Command::new(bin)
        };
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(UNLIMITED)
            .args(args)
            .env("RUST_LOG", "warn,switchboard=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("server exited").unwrap();
            if let Some(a) = line.split("listening on http://").nth(1) {
                break a.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// User + system CPU seconds the server has used.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

pub fn self_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id())
}

pub fn token(sub: &str) -> String {
    switchboard::mint_hs256(
        SECRET.as_bytes(),
        &switchboard::TokenSpec {
            sub: sub.into(),
            ttl_secs: 3600,
            ..Default::default()
        },
    )
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects user `sender{i}`, authenticates and joins `room`.
pub async fn connect(addr: SocketAddr, i: usize, room: &str) -> Ws {
    let mut ws = connect_auth_only(addr, i).await;
    ws.send(Message::text(format!("420[\"room:join\",\"{room}\"]")))
        .await
        .unwrap();
    wait_for(&mut ws, |t| t.starts_with("430")).await;
    ws
}

pub async fn wait_for(ws: &mut Ws, pred: impl Fn(&str) -> bool) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.as_str() == "2" {
                ws.send(Message::text("3")).await.unwrap();
            } else if pred(t.as_str()) {
                return;
            }
        }
    }
    panic!("connection closed");
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// The load generator's runtime: one thread, pinned to CPU 1 (the server gets CPU 0).
pub fn generator_runtime() -> tokio::runtime::Runtime {
    if which("taskset") {
        let _ = Command::new("taskset")
            .args(["-cp", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Connects user `sender{i}` to `/` and authenticates; joins nothing.
pub async fn connect_auth_only(addr: SocketAddr, i: usize) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("ws");
    let auth = format!("40{{\"token\":\"{}\"}}", token(&format!("sender{i}")));
    ws.send(Message::text(auth)).await.unwrap();
    wait_for(&mut ws, |t| t.starts_with("40")).await;
    ws
}

/// The per-address and per-user abuse limits lifted: one generator on one
/// address plays thousands of users at rates no single person sends (Node's
/// server has no such limits either). The limits have their own tests.
pub const UNLIMITED: [&str; 20] = [
    "--max-connections-per-ip",
    "0",
    "--max-connections-per-user",
    "0",
    "--address-messages-per-sec",
    "0",
    "--messages-per-sec",
    "1000000",
    "--message-burst",
    "1000000",
    "--events-per-sec",
    "1000000",
    "--event-burst",
    "1000000",
    "--doc-joins-per-sec",
    "1000000",
    "--doc-join-burst",
    "1000000",
    "--doc-creations-per-min",
    "1000000",
];

/// Appends 4 KiB and fsyncs, repeatedly: the disk's floor under every
/// durable ack, as a `fsync_floor` JSON line.
pub fn fsync_probe(dir: &std::path::Path, run: std::time::Duration) -> String {
    use std::io::Write;
    use std::time::Instant;
    let path = dir.join("fsync-probe.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut h = new_hist();
    let end = Instant::now() + run;
    while Instant::now() < end {
        f.write_all(&[0u8; 4096]).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    let _ = std::fs::remove_file(path);
    format!(
        "{{\"scenario\":\"fsync_floor\",\"fsyncs\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

/// The trimmed output of a shell command (empty if it fails).
pub fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
