//! Helpers shared by the test binaries that need real databases and processes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The PostgreSQL the tests may create databases in (trust auth on 127.0.0.1).
pub fn postgres_admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of its own for one test, dropped by [`PgDb::drop_db`].
pub struct PgDb {
    pub name: String,
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgDb {
    /// Creates a fresh database. A missing PostgreSQL fails the test (it is
    /// a required service, not an optional one).
    pub async fn create() -> PgDb {
        let admin = postgres_admin_url();
        let name = format!(
            "sbtest_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000
        );
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap().to_string();
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn drop_db(self) {
        let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
            .await
            .unwrap();
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await;
    }
}

/// A switchboard process started from the built binary.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// Everything the process wrote to stderr so far (filled by a thread).
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Flags that lift the per-user and per-socket rate limits, for tests whose
/// subject is something else (a burst of pipelined sends).
pub const NO_RATE_LIMITS: [&str; 16] = [
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

pub const SECRET: &str = "durability-secret-durability-secret!!";

/// `--some-flag value` pairs as `SWITCHBOARD_SOME_FLAG=value` (every flag
/// is also an environment variable); a flag without a value is `true`.
fn flags_as_env(args: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].trim_start_matches("--");
        let name = format!("SWITCHBOARD_{}", flag.to_uppercase().replace('-', "_"));
        match args.get(i + 1) {
            Some(v) if !v.starts_with("--") => {
                out.push((name, v.to_string()));
                i += 2;
            }
            _ => {
                out.push((name, "true".into()));
                i += 1;
            }
        }
    }
    out
}

impl Proc {
    /// Starts the server on a free port with `SECRET` and extra `args`, and
    /// waits until it listens.
    pub fn start(args: &[&str]) -> Proc {
        Self::start_env(args, &[])
    }

    /// Like [`Proc::start`], with extra environment variables (`RUST_LOG` too).
    pub fn start_env(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        Self::spawn(
            &["--listen", "127.0.0.1:0", "--jwt-secret", SECRET],
            args,
            envs,
        )
    }

    /// Starts the server in dev mode (no JWT key: it makes up its own
    /// secret) on a free loopback port, and waits until it listens.
    pub fn start_dev(args: &[&str]) -> Proc {
        Self::spawn(&["--listen", "127.0.0.1:0"], args, &[])
    }

    fn spawn(base: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Proc {
        use std::io::{BufRead, BufReader};
        // SWITCHBOARD_TEST_BIN runs the same test against another build (to
        // check that a test fails on an older one).
        let bin = std::env::var("SWITCHBOARD_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").to_string());
        let mut cmd = std::process::Command::new(&bin);
        // A key from the environment would turn dev mode off.
        cmd.env_remove("SWITCHBOARD_JWT_SECRET")
            .env_remove("SWITCHBOARD_JWT_PUBLIC_KEY");
        cmd.args(base);
        if std::env::var_os("SWITCHBOARD_TEST_BIN").is_some() {
            // An older build refuses flags it does not know but ignores
            // unknown environment variables, so the test still runs on it.
            cmd.envs(flags_as_env(args));
        } else {
            cmd.args(args);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(url) = line.split("listening on http://").nth(1) {
                    // The address ends the text line, or the JSON string.
                    let url = url.split('"').next().unwrap_or(url);
                    let _ = tx.send(url.trim().to_string());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {}", stderr.lock().unwrap());
            }
        };
        Proc {
            child,
            addr,
            stderr,
        }
    }

    /// SIGKILL: no clean-up, no flush.
    /// Sends SIGTERM (a clean stop: what systemd and `docker stop` send).
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn token(sub: &str) -> String {
    switchboard::mint_hs256(
        SECRET.as_bytes(),
        &switchboard::TokenSpec {
            sub: sub.into(),
            ttl_secs: 600,
            ..Default::default()
        },
    )
}

/// A TCP proxy the test can cut (closing every link, refusing new ones) and
/// restore: an outage of the service behind it, on demand.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, cut, links }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The status `/readyz` answers.
pub async fn readyz(addr: std::net::SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The value of one Prometheus sample (`name{labels}`, exactly as printed), 0 when absent.
pub async fn metric(addr: std::net::SocketAddr, sample: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
