//! Transport-level attacks: oversize websocket frames, slow or silent
//! connections, too many connections, HTTP/2 prior knowledge.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{Proc, metric, raw, rss_kib};

/// Reads until the peer closes (or `within` passes); returns what was read
/// and how long it took.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(start.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, None),
        }
    }
}

async fn connect_from(src: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{src}:0").parse().unwrap())?;
    sock.connect(addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_websocket_frames_are_refused_from_their_header() {
    let p = Proc::start(&["--database-url", "memory"]);
    let before = rss_kib(p.child.id());
    // 50 connections without a token, each announcing a 15.9 MB binary frame
    // and then pushing up to 2 MB of it.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = raw::upgrade(addr).await;
            let _ = s.write_all(&raw::header(2, 15_900_000)).await;
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..32 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            raw::read_until_close(&mut s, Duration::from_secs(10))
                .await
                .0
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let grown = rss_kib(p.child.id()).saturating_sub(before);
    println!("oversize frames: RSS grew {grown} KiB over 50 connections");
    for c in &codes {
        let (code, reason) = c.clone().expect("a close frame");
        assert_eq!(code, 1009, "{reason}");
        assert!(reason.contains("1000000"), "{reason}");
    }
    assert!(grown < 30 * 1024, "RSS grew {grown} KiB under the attack");
    // The server still serves.
    assert_eq!(common_healthz(p.addr).await, 200);
    crate::assert_no_panic(&p);
}

async fn common_healthz(addr: SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_by_the_header_timeout() {
    let p = Proc::start(&["--database-url", "memory", "--header-timeout-ms", "1000"]);
    let bound = Duration::from_secs(3);
    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    // Slowloris: one header byte every 200 ms, never the end of the headers.
    let addr = p.addr;
    let slowloris = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in req.iter().cycle().take(100) {
            if s.write_all(&[*b]).await.is_err() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut probe = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                _ => {}
            }
        }
        None
    });
    // Idle keep-alive: one request, then nothing.
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (silent_read, silent_closed) = read_to_close(&mut silent, bound).await;
    let (idle_read, idle_closed) = read_to_close(&mut idle, bound).await;
    let slow_closed = slowloris.await.unwrap();
    println!(
        "silent closed after {silent_closed:?}, idle keep-alive after {idle_closed:?}, slowloris after {slow_closed:?}"
    );
    assert!(silent_closed.is_some(), "a silent connection is still open");
    assert!(silent_read.is_empty());
    assert!(String::from_utf8_lossy(&idle_read).starts_with("HTTP/1.1 200"));
    assert!(
        idle_closed.is_some(),
        "an idle keep-alive connection is still open"
    );
    assert!(
        slow_closed.is_some_and(|d| d < Duration::from_secs(4)),
        "slowloris still open: {slow_closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_connects_a_namespace_is_closed() {
    let p = Proc::start(&["--database-url", "memory", "--connect-timeout-ms", "1000"]);
    // Engine.IO open, then silence.
    let mut quiet = raw::upgrade(p.addr).await;
    // Engine.IO open, one refused CONNECT, then silence.
    let mut refused = raw::upgrade(p.addr).await;
    refused
        .write_all(&raw::text(r#"40{"token":"not-a-jwt"}"#))
        .await
        .unwrap();
    let start = Instant::now();
    let (_, texts) = raw::read_until_close(&mut quiet, Duration::from_secs(4)).await;
    let quiet_after = start.elapsed();
    let (_, refused_texts) = raw::read_until_close(&mut refused, Duration::from_secs(4)).await;
    let refused_after = start.elapsed();
    println!("no CONNECT: closed after {quiet_after:?}; refused CONNECT: after {refused_after:?}");
    assert!(texts[0].starts_with('0'), "Engine.IO open first: {texts:?}");
    assert!(quiet_after < Duration::from_secs(3), "{quiet_after:?}");
    assert!(refused_after < Duration::from_secs(3), "{refused_after:?}");
    assert!(
        refused_texts
            .iter()
            .any(|t| t.contains("Authentication failed")),
        "{refused_texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_and_in_all_are_capped() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--max-connections-per-ip",
        "20",
        "--header-timeout-ms",
        "30000",
    ]);
    // 50 silent connections from 127.0.0.1: 20 are held, 30 refused at once.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let (bytes, closed) = read_to_close(&mut s, Duration::from_millis(300)).await;
        if closed.is_some() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert!(text.starts_with("HTTP/1.1 429"), "{text}");
            let body: serde_json::Value =
                serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body["code"], "max_connections_per_ip", "{body}");
            refused += 1;
        } else {
            held.push(s);
        }
    }
    assert_eq!((held.len(), refused), (20, 30));
    // Everyone else is still served.
    let mut other = connect_from("127.0.0.2", p.addr).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut other, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(
            p.addr,
            "switchboard_connections_refused_total{reason=\"max_connections_per_ip\"}"
        )
        .await,
        30.0
    );

    // The total: 10 in all.
    let q = Proc::start(&["--database-url", "memory", "--max-connections", "10"]);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(q.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(q.addr).await.unwrap();
    let (bytes, closed) = read_to_close(&mut over, Duration::from_secs(2)).await;
    assert!(closed.is_some());
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 503"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(
            q.addr,
            "switchboard_connections_refused_total{reason=\"max_connections\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_refused() {
    let p = Proc::start(&["--database-url", "memory"]);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    // The preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "connection left open");
    // An HTTP/2 server would answer with its own SETTINGS frame (type 4).
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "answered as HTTP/2: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_polling_body_gets_413_with_the_json_error() {
    let p = Proc::start(&["--database-url", "memory"]);
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", p.addr);
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap();
    let r = http
        .post(format!("{base}&sid={sid}"))
        .body(format!("4{}", "x".repeat(1_100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "too_large", "{body}");
}
