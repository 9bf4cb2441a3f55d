//! The servers under test, each its own process pinned to CPU 0 (the
//! generator takes CPU 1; `Placement` gives a server more cores and spreads
//! generator processes over the rest): switchboard (release binary), the
//! Node.js socket.io 4.8 reference (benches/node-reference), and the
//! transport floor (this binary's `floor-server`, see floor.rs); for plain
//! WebSocket clients, switchboard again with its clients on `/ws` (`plain`)
//! and seed four's `ws` server (benches/seed-ws, `seed`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub use crate::common::{SECRET, proc_cpu_secs, which};
pub use crate::conn::Proto;
pub const API_KEY: &str = "bench-api-key-bench-api-key";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Switchboard,
    Node,
    Floor,
    /// switchboard, its clients speaking the plain JSON protocol on `/ws`.
    Plain,
    /// Seed four's toy server on the `ws` package (benches/seed-ws).
    Seed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Switchboard => "switchboard",
            Kind::Node => "node",
            Kind::Floor => "floor",
            Kind::Plain => "plain",
            Kind::Seed => "seed",
        }
    }

    /// How this kind's clients speak.
    pub fn proto(self) -> Proto {
        match self {
            Kind::Plain => Proto::Plain,
            Kind::Seed => Proto::Seed,
            _ => Proto::SocketIo,
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Switchboard,
            Kind::Node,
            Kind::Floor,
            Kind::Plain,
            Kind::Seed,
        ]
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

    /// Starts `kind` on CPU 0 with `env` set (the Node reference reads its
    /// options there).
    pub fn start_with_env(kind: Kind, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_env(kind, args, Some("0"), env)
    }

    pub fn start_on(kind: Kind, args: &[&str], cpus: Option<&str>) -> Server {
        Self::start_env(kind, args, cpus, &[])
    }

    fn start_env(kind: Kind, args: &[&str], cpus: Option<&str>, env: &[(&str, &str)]) -> Server {
        let (cmd, from_stdout) = match kind {
            Kind::Switchboard | Kind::Plain => {
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
            Kind::Seed => {
                let port = free_port();
                let mut c = pinned(cpus, "node");
                c.arg("benches/seed-ws/server.js")
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    // The seed's `ws` and `jsonwebtoken` are the reference's.
                    .env(
                        "NODE_PATH",
                        concat!(
                            env!("CARGO_MANIFEST_DIR"),
                            "/benches/node-reference/node_modules"
                        ),
                    )
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
        let mut cmd = cmd;
        cmd.envs(env.iter().copied());
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
        .args(crate::common::UNLIMITED)
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
    pin_self_to(1);
}

/// Pins this process (all its threads) to `cpu`.
pub fn pin_self_to(cpu: usize) {
    if which("taskset") {
        let _ = Command::new("taskset")
            .args(["-acp", &cpu.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

static USABLE: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// The CPUs this process may run on, as it found them the first time it
/// asked: main() asks before pinning itself to one core, after which the
/// answer would be that one core.
pub fn usable_cpus() -> &'static [usize] {
    USABLE.get_or_init(|| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, and its size is passed.
        let cpus: Vec<usize> = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect()
            } else {
                Vec::new()
            }
        };
        if cpus.is_empty() {
            let n = std::thread::available_parallelism().map_or(2, |n| n.get());
            (0..n).collect()
        } else {
            cpus
        }
    })
}

/// Where a server and its generator processes run: the server on the
/// first `server_cores` usable CPUs, the generator workers spread over the
/// rest (sharing a core when there are more workers than cores), and the
/// orchestrating process on a core no worker has when one is left.
#[derive(Clone, Debug)]
pub struct Placement {
    /// taskset list for the server, e.g. "0" or "0,1,2,3".
    pub server: String,
    /// The CPU of each generator worker process.
    pub workers: Vec<usize>,
    /// The CPU of this (the orchestrating) process.
    pub parent: usize,
}

/// Generator workers used by default at most: past this the server, not
/// the generator, is what a bigger machine is for.
pub const MAX_GENERATORS: usize = 8;

impl Placement {
    pub fn new(server_cores: usize, generators: Option<usize>) -> Placement {
        let cpus = usable_cpus();
        let s = server_cores.clamp(1, cpus.len().max(1));
        let server: Vec<usize> = cpus[..s.min(cpus.len())].to_vec();
        let mut gen_cores: Vec<usize> = cpus[s.min(cpus.len())..].to_vec();
        if gen_cores.is_empty() {
            // One CPU in all: everything shares it (the figures say so).
            gen_cores.push(*cpus.last().unwrap_or(&0));
        }
        let k = generators
            .unwrap_or(gen_cores.len().min(MAX_GENERATORS))
            .max(1);
        let workers = (0..k).map(|i| gen_cores[i % gen_cores.len()]).collect();
        let parent = gen_cores.get(k).copied().unwrap_or(gen_cores[0]);
        Placement {
            server: server
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            workers,
            parent,
        }
    }
}
