//! The binary: bad configuration stops the start with one clear line and exit
//! code 2; dev mode prints a working token; `token` mints one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const SECRET: &str = "cli-test-secret-cli-test-secret-cli-test";

fn fails_with(args: &[&str], envs: &[(&str, &str)], expect: &str) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A configuration that wrongly passes would serve forever: bound the wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} {envs:?}: still running; the configuration was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expect), "{args:?}: {stderr}");
}

#[test]
fn bad_configuration_exits_2_with_one_line() {
    fails_with(&["--listen", "nowhere:port"], &[], "--listen");
    fails_with(&["--jwt-secret", "short"], &[], "at least 32 bytes");
    fails_with(
        &[],
        &[("SWITCHBOARD_JWT_SECRET", "short")],
        "at least 32 bytes",
    );
    fails_with(
        &[
            "--jwt-public-key",
            "/nonexistent/key.pem",
            "--jwt-algorithm",
            "RS256",
        ],
        &[],
        "/nonexistent/key.pem",
    );
    let not_a_key = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    fails_with(
        &["--jwt-public-key", &not_a_key, "--jwt-algorithm", "ES256"],
        &[],
        "PEM",
    );
    fails_with(&["--jwt-public-key", &not_a_key], &[], "--jwt-algorithm");
    fails_with(&["--listen", "0.0.0.0:0"], &[], "dev mode");
    fails_with(
        &["--database-url", "sqlite:///nonexistent-dir/sub/chat.db"],
        &[],
        "directory /nonexistent-dir/sub does not exist",
    );
    // /proc refuses new files even to root.
    fails_with(
        &["--database-url", "sqlite:///proc/switchboard-test.db"],
        &[],
        "cannot open SQLite /proc/switchboard-test.db",
    );
    fails_with(&["--database-url", "mysql://x"], &[], "--database-url");
    fails_with(&["--cors-origin", "app.example.com"], &[], "--cors-origin");
    fails_with(
        &["--database-url", "postgres://postgres@127.0.0.1:1/none"],
        &[],
        "cannot connect to PostgreSQL",
    );
    fails_with(
        &["--jwt-secret", SECRET, "--namespace", "acme"],
        &[],
        "--namespace",
    );
}

#[test]
fn token_subcommand_mints_a_verifiable_token() {
    let out = Command::new(BIN)
        .args([
            "token",
            "--jwt-secret",
            SECRET,
            "--sub",
            "alice",
            "--name",
            "Alice",
        ])
        .args(["--ttl-secs", "60", "--room", "team-*"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let v = switchboard::Verifier::hs256(SECRET.as_bytes(), None, None);
    let id = v.verify(token.trim()).unwrap();
    assert_eq!(id.user_id, "alice");
    assert_eq!(id.name, "Alice");
    assert_eq!(id.rooms, Some(vec!["team-*".to_string()]));
    let short = Command::new(BIN)
        .args(["token", "--jwt-secret", "x", "--sub", "a"])
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2));
}

#[test]
fn dev_mode_prints_a_token_and_serves() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut token = None;
    let mut url = None;
    while Instant::now() < deadline && (token.is_none() || url.is_none()) {
        let Some(Ok(line)) = lines.next() else { break };
        if line.matches('.').count() == 2 && !line.contains(' ') {
            token = Some(line.clone());
        }
        if let Some(rest) = line.split("io('").nth(1) {
            url = rest.split('\'').next().map(String::from);
        }
    }
    let _ = child.kill();
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut s);
        s
    };
    let _ = child.wait();
    assert!(token.is_some(), "dev mode printed no token");
    assert!(url.is_some_and(|u| u.starts_with("http://127.0.0.1:")));
    assert!(
        stderr.contains("NOT FOR PRODUCTION"),
        "loud warning: {stderr}"
    );
}
