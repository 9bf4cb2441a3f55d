//! A websocket spoken by hand over TCP, for what a well-behaved client
//! library will not do: oversize frame headers, never reading.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a websocket to `/socket.io/?EIO=4&transport=websocket` and reads the 101.
pub async fn upgrade(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
          Upgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame header announcing `len` payload bytes.
pub fn header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as it is
    h
}

/// A masked client text frame.
pub fn text(payload: &str) -> Vec<u8> {
    let mut f = header(1, payload.len() as u64);
    f.extend_from_slice(payload.as_bytes());
    f
}

/// Reads server frames until a close frame or the end; returns the close
/// code and reason, and every text frame seen before it.
pub async fn read_until_close(
    s: &mut TcpStream,
    within: Duration,
) -> (Option<(u16, String)>, Vec<String>) {
    let mut buf = Vec::new();
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Parse what is buffered.
        while let Some((opcode, payload, used)) = parse(&buf) {
            buf.drain(..used);
            match opcode {
                1 => texts.push(String::from_utf8_lossy(&payload).into_owned()),
                8 => {
                    let code = payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .unwrap_or(1005);
                    let reason =
                        String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                    return (Some((code, reason)), texts);
                }
                _ => {}
            }
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (None, texts),
            Err(_) => panic!("the connection is still open after {within:?}"),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One unmasked server frame from the front of `buf`: (opcode, payload, bytes used).
fn parse(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((buf[0] & 0x0f, payload, at + len))
}

/// Reads server text frames until `until` has matched `n` of them (or
/// `within` passes, or the connection ends); returns the matching ones.
pub async fn read_texts(
    s: &mut TcpStream,
    n: usize,
    until: impl Fn(&str) -> bool,
    within: Duration,
) -> Vec<String> {
    let mut buf = Vec::new();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while found.len() < n {
        while let Some((opcode, payload, used)) = parse(&buf) {
            buf.drain(..used);
            if opcode == 1 {
                let t = String::from_utf8_lossy(&payload).into_owned();
                if until(&t) {
                    found.push(t);
                }
            }
        }
        if found.len() >= n {
            break;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    found
}

/// A websocket with a connected Socket.IO session on `/` for `token`.
pub async fn socket(addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = upgrade(addr).await;
    let open = read_texts(&mut s, 1, |t| t.starts_with('0'), Duration::from_secs(5)).await;
    assert_eq!(open.len(), 1, "no Engine.IO open");
    s.write_all(&text(&format!(r#"40{{"token":"{token}"}}"#)))
        .await
        .unwrap();
    let ok = read_texts(&mut s, 1, |t| t.starts_with("40"), Duration::from_secs(5)).await;
    assert_eq!(ok.len(), 1, "no CONNECT answer");
    s
}
