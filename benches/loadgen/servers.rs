//! The servers under test, each its own process pinned to CPU 0 (the
//! generator takes CPU 1): switchboard (release binary), the Node.js
//! socket.io 4.8 reference (benches/node-reference), and the transport floor
//! (this binary's `floor-server`, see floor.rs).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub use crate::common::{SECRET, proc_cpu_secs, which};
pub const API_KEY: &str = "bench-api-key-bench-api-key";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Switchboard,
    Node,
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Switchboard => "switchboard",
            Kind::Node => "node",
            Kind::Floor => "floor",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Switchboard, Kind::Node, Kind::Floor]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub kind: Kind,
}

/// `taskset -c <cpus> program` when taskset exists, else the program alone.
pub fn pinned(cpus: Option<&str>, program: &str) -> Command {
    match cpus {
        Some(c) if which("taskset") => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c, program]);
            cmd
        }
        _ => Command::new(program),
    }
}

impl Server {
    /// Starts `kind` on CPU 0. `args` go to switchboard only (a store, Redis).
    pub fn start(kind: Kind, args: &[&str]) -> Server {
        Self::start_on(kind, args, Some("0"))
    }

    pub fn start_on(kind: Kind, args: &[&str], cpus: Option<&str>) -> Server {
        let (cmd, from_stdout) = match kind {
            Kind::Switchboard => {
                let mut c = pinned(cpus, env!("CARGO_BIN_EXE_switchboard"));
                switchboard_args(&mut c, args);
                (c, false)
            }
            Kind::Node => {
                let port = free_port();
                let mut c = pinned(cpus, "node");
                c.arg("server.js")
                    .current_dir(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/benches/node-reference"
                    ))
                    .env("PORT", port.to_string())
                    .env("JWT_SECRET", SECRET);
                (c, true)
            }
            Kind::Floor => {
                let exe = std::env::current_exe().expect("own path");
                let mut c = pinned(cpus, exe.to_str().unwrap());
                c.arg("floor-server");
                (c, true)
            }
        };
        Self::spawn(kind, cmd, from_stdout)
    }

    /// Starts `cmd` (a server of `kind`, perhaps under a wrapper such as
    /// valgrind) and waits for its "listening on" line.
    pub fn spawn(kind: Kind, mut cmd: Command, from_stdout: bool) -> Server {
        let mut child = if from_stdout {
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit())
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::piped())
        }
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {} ({e}); for node run `npm ci` in benches/node-reference",
                kind.name()
            )
        });
        let out: Box<dyn std::io::Read + Send> = if from_stdout {
            Box::new(child.stdout.take().unwrap())
        } else {
            Box::new(child.stderr.take().unwrap())
        };
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => panic!("{} exited before listening", kind.name()),
            };
            if let Some(a) = line.split("listening on http://").nth(1) {
                break a.trim().parse().expect("listen address");
            }
        };
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, kind }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The arguments every switchboard under test gets, then `args`.
pub fn switchboard_args(c: &mut Command, args: &[&str]) {
    c.args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--api-key", API_KEY])
        .args(UNLIMITED)
        .args(args)
        .env("RUST_LOG", "warn,switchboard=info");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn self_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id())
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Pins this process to CPU 1, the core the servers do not use.
pub fn pin_self() {
    if which("taskset") {
        let _ = Command::new("taskset")
            .args(["-acp", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// The per-address and per-user abuse limits lifted: one generator on one
/// address plays thousands of users at rates no single person sends (Node's
/// server has no such limits either). The limits have their own tests.
pub const UNLIMITED: [&str; 10] = [
    "--max-connections-per-ip",
    "0",
    "--messages-per-sec",
    "1000000",
    "--message-burst",
    "1000000",
    "--events-per-sec",
    "1000000",
    "--event-burst",
    "1000000",
];
