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

/// Starts the binary with `args` and `envs`, reads its stderr until it
/// listens, and stops it: the stderr lines up to then.
fn start_lines(args: &[&str], envs: &[(&str, &str)]) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .env_remove("SWITCHBOARD_API_KEY")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("listening on")),
        "did not start: {lines:?}"
    );
    lines
}

#[test]
fn a_config_file_under_env_under_flags_and_json_logs_that_say_what_is_on() {
    let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(
        &file,
        format!(
            r#"
listen = "127.0.0.1:0"
jwt-secret = "{SECRET}"
database-url = "memory"
api-key = "file-api-key-0123456789"
cors-origin = ["https://a.example", "https://b.example"]
max-payload-bytes = 12345
max-connections-per-ip = 3
messages-per-sec = 7
log-format = "json"
"#
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let lines = start_lines(
        &["--config", path, "--max-connections-per-ip", "9"],
        &[("SWITCHBOARD_MAX_PAYLOAD_BYTES", "23456")],
    );
    // JSON lines, one object each.
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let summary = objects
        .iter()
        .filter_map(|o| o["fields"]["message"].as_str())
        .find(|m| m.starts_with("configuration:"))
        .unwrap_or_else(|| panic!("no configuration line: {lines:?}"));
    for expected in [
        "max_payload_bytes=23456",  // env over file
        "max_connections_per_ip=9", // flag over file
        "messages_per_sec=7/",      // file over default
        "api=on",
        "cors=https://a.example,https://b.example",
        "store=memory",
        "auth=HS256",
    ] {
        assert!(summary.contains(expected), "{expected} in {summary}");
    }
    let all = lines.join("\n");
    assert!(
        !all.contains("file-api-key") && !all.contains(SECRET),
        "a secret in the log: {all}"
    );
    assert!(
        !all.contains("HTTP API is off") && !all.contains("no --cors-origin"),
        "{all}"
    );

    // Production mode without a key or origins says so at start.
    let lines = start_lines(
        &["--listen", "127.0.0.1:0", "--database-url", "memory"],
        &[("SWITCHBOARD_JWT_SECRET", SECRET)],
    );
    let all = lines.join("\n");
    assert!(
        all.contains("HTTP API is off") && all.contains("no --cors-origin"),
        "{all}"
    );
    assert!(
        all.contains("api=off") && all.contains("cors=none"),
        "{all}"
    );

    std::fs::write(&file, "max-payload = 1\n").unwrap();
    fails_with(&["--config", path], &[], "unknown key 'max-payload'");
    fails_with(
        &["--config", "/nonexistent/switchboard.toml"],
        &[],
        "--config",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_config_file_and_systemd_unit_are_valid() {
    // The example config starts a server (env overrides its address and store).
    let lines = start_lines(
        &["--config", "deploy/config/switchboard.toml"],
        &[
            ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
            ("SWITCHBOARD_DATABASE_URL", "memory"),
            ("SWITCHBOARD_JWT_SECRET", SECRET),
        ],
    );
    assert!(
        lines.join("\n").contains("cors=https://chat.example.com"),
        "{lines:?}"
    );
    // The unit, checked by systemd itself where it is installed.
    let Ok(status) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    assert!(status.status.success());
    let unit = std::fs::read_to_string("deploy/systemd/switchboard.service").unwrap();
    let dir = std::env::temp_dir().join(format!("sb-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchboard.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/switchboard", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
