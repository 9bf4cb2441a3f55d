//! A minimal Engine.IO v4 / Socket.IO v5 client over tokio-tungstenite:
//! only what the scenarios need, written out so that its own cost is small
//! and known.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

pub type Error = Box<dyn std::error::Error>;

/// A TCP connection to `addr` from source address `src` (127.0.0.x): each
/// source address has its own ~28k ephemeral ports. `IP_BIND_ADDRESS_NO_PORT`
/// lets the kernel pick the port at connect time, per destination.
/// `linger0` closes with a reset instead of leaving the port in TIME_WAIT,
/// which a connect-rate run would otherwise exhaust in seconds.
pub async fn tcp(addr: SocketAddr, src: Option<Ipv4Addr>, linger0: bool) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        let one: libc::c_int = 1;
        // SAFETY: a valid fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        sock.bind(SocketAddr::new(ip.into(), 0))?;
    }
    if linger0 {
        // Deprecated because a non-zero linger blocks on drop; zero resets at once.
        #[allow(deprecated)]
        sock.set_linger(Some(std::time::Duration::ZERO))?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The generator's own buffers stay small: it holds up to 19k of these.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Opens a websocket to `/socket.io/` with `query` added, over `stream`.
pub async fn websocket(stream: TcpStream, addr: SocketAddr, query: &str) -> Result<Ws, Error> {
    websocket_with(stream, addr, query, &[]).await
}

/// What Chrome 131 sends with a websocket upgrade from a page of another
/// origin, besides what tungstenite writes itself (Host, Connection,
/// Upgrade, Sec-WebSocket-Key and -Version), with the kind of cookie a site
/// with a login and analytics has: the `idle` scenario's browser handshake.
/// Servers that keep the request for the session keep these too.
pub const BROWSER_HEADERS: [(&str, &str); 8] = [
    ("pragma", "no-cache"),
    ("cache-control", "no-cache"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("origin", "https://app.example.com"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
    (
        "cookie",
        "_ga=GA1.1.1873526190.1733380112; _ga_7XK2P4QZ9M=GS1.1.1733380112.3.1.1733381920.0.0.0; \
         session=eyJ1c2VyIjoiNDIiLCJleHAiOjE3MzMzOTk5OTksIm5vbmNlIjoiN2Y0YzJhOWU1YjFkIn0.Yk3v9Qm2xT8rLp0sWc4nHf6uJd1aZe7bRq5tGy2iKo0; \
         theme=dark; locale=en-US; consent=analytics%3Dtrue%26ads%3Dfalse",
    ),
    (
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits",
    ),
];

/// `websocket` with `headers` added to the upgrade request.
pub async fn websocket_with(
    stream: TcpStream,
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{query}");
    let mut req = url.into_client_request()?;
    for (name, value) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config())).await?;
    Ok(ws)
}

/// Websocket-only handshake: open packet, then CONNECT with the JWT, until
/// the server's CONNECT reply. Returns the connected socket.
pub async fn connect(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    token: &str,
    linger0: bool,
) -> Result<Ws, Error> {
    connect_with(addr, src, token, linger0, &[]).await
}

/// `connect` with `headers` added to the websocket upgrade.
pub async fn connect_with(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    token: &str,
    linger0: bool,
    headers: &[(&str, &str)],
) -> Result<Ws, Error> {
    let stream = tcp(addr, src, linger0).await?;
    let mut ws = websocket_with(stream, addr, "", headers).await?;
    expect(&mut ws, |t| t.starts_with('0')).await?;
    ws.send(Message::text(format!("40{{\"token\":\"{token}\"}}")))
        .await?;
    let reply = expect(&mut ws, |t| t.starts_with("40") || t.starts_with("44")).await?;
    if reply.starts_with("44") {
        return Err(format!("connect refused: {reply}").into());
    }
    Ok(ws)
}

/// Connects users `ids`, 200 handshakes at a time: `token(i)` is the JWT of
/// connection i, `room(i)` the room it joins (if any); `each(i, ws)` gets
/// every connection as soon as its batch is done, so that it can start
/// answering pings before a long ramp outlasts the server's ping timeout.
pub async fn ramp(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    ids: std::ops::Range<usize>,
    token: impl Fn(usize) -> String,
    room: impl Fn(usize) -> Option<String>,
    each: impl FnMut(usize, Ws),
) {
    ramp_as(Proto::SocketIo, addr, src, ids, token, room, each).await;
}

/// `ramp` for clients speaking `proto`.
pub async fn ramp_as(
    proto: Proto,
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    ids: std::ops::Range<usize>,
    token: impl Fn(usize) -> String,
    room: impl Fn(usize) -> Option<String>,
    mut each: impl FnMut(usize, Ws),
) {
    let ids: Vec<usize> = ids.collect();
    for batch in ids.chunks(200) {
        let conns = futures_util::future::join_all(batch.iter().map(|&i| {
            let (token, room) = (token(i), room(i));
            async move {
                let mut ws = proto.connect(addr, src, &token).await?;
                if let Some(room) = room {
                    proto.join(&mut ws, &room).await?;
                }
                Ok::<_, Error>((i, ws))
            }
        }))
        .await;
        for c in conns {
            let (i, ws) = c.unwrap_or_else(|e| panic!("connect: {e}"));
            each(i, ws);
        }
    }
}

/// Reads until a text frame matches `pred`, answering pings on the way.
pub async fn expect(ws: &mut Ws, pred: impl Fn(&str) -> bool) -> Result<String, Error> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.as_str() == "2" {
                ws.send(Message::text("3")).await?;
            } else if pred(t.as_str()) {
                return Ok(t.as_str().to_owned());
            }
        }
    }
    Err("connection closed".into())
}

/// Joins `room` and waits for the join's ack.
pub async fn join(ws: &mut Ws, room: &str) -> Result<(), Error> {
    ws.send(Message::text(format!("420[\"room:join\",\"{room}\"]")))
        .await?;
    let ack = expect(ws, |t| t.starts_with("430")).await?;
    if !ack.contains("\"success\":true") {
        return Err(format!("join refused: {ack}").into());
    }
    Ok(())
}

/// tokio's timer fires on whole milliseconds, so a send scheduled for
/// `intended` leaves up to ~1 ms late even when nothing is wrong. Latency is
/// measured from the intended time, but lateness within that resolution is
/// the generator's own and is forgiven; any lateness beyond it (a send that
/// waited on a slow server) still counts.
pub fn latency_origin(intended: std::time::Instant) -> std::time::Instant {
    std::time::Instant::now().min(intended + TIMER_RESOLUTION)
}

pub const TIMER_RESOLUTION: std::time::Duration = std::time::Duration::from_millis(1);

/// A `chat:send` with ack id `id`.
pub fn chat_send(id: u64, room: &str, content: &str) -> Message {
    Message::text(format!(
        "42{id}[\"chat:send\",{{\"roomId\":\"{room}\",\"content\":\"{content}\"}}]"
    ))
}

/// The ack id of an ack packet (`43<id>[...]`).
pub fn ack_id(t: &str) -> Option<u64> {
    let rest = t.strip_prefix("43")?;
    let end = rest.find('[')?;
    rest[..end].parse().ok()
}

/// How a server's clients speak: Socket.IO (switchboard, the Node
/// reference, the floor); switchboard's plain JSON protocol on `/ws`
/// (docs/protocol.md §19); or seed four's JSON on `ws://host/?token=`
/// (benches/seed-ws/server.js).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    SocketIo,
    Plain,
    Seed,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::SocketIo => "socketio",
            Proto::Plain => "plain",
            Proto::Seed => "seed",
        }
    }

    pub fn parse(s: &str) -> Option<Proto> {
        [Proto::SocketIo, Proto::Plain, Proto::Seed]
            .into_iter()
            .find(|p| p.name() == s)
    }

    /// A connected (for Socket.IO and plain: accepted) client with `token`.
    /// The seed says nothing on connecting; a bad token would close it.
    pub async fn connect(
        self,
        addr: SocketAddr,
        src: Option<Ipv4Addr>,
        token: &str,
    ) -> Result<Ws, Error> {
        let path = match self {
            Proto::SocketIo => return connect(addr, src, token, false).await,
            Proto::Plain => "/ws",
            Proto::Seed => "/",
        };
        let stream = tcp(addr, src, false).await?;
        let url = format!("ws://{addr}{path}?token={token}");
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        if self == Proto::Plain {
            expect(&mut ws, |t| t.contains("\"type\":\"connected\"")).await?;
        }
        Ok(ws)
    }

    /// Joins `room`: Socket.IO and plain wait for the join's ack; the seed
    /// answers nothing (its joins are in order with the client's later
    /// messages; the fanout's quiet wait and delivery count cover others').
    pub async fn join(self, ws: &mut Ws, room: &str) -> Result<(), Error> {
        match self {
            Proto::SocketIo => join(ws, room).await,
            Proto::Plain => {
                ws.send(Message::text(format!(
                    "{{\"id\":0,\"type\":\"join_room\",\"roomId\":\"{room}\"}}"
                )))
                .await?;
                let reply = expect(ws, |t| {
                    t.contains("\"type\":\"ack\"") || t.contains("\"type\":\"error\"")
                })
                .await?;
                if !reply.contains("\"success\":true") {
                    return Err(format!("join refused: {reply}").into());
                }
                Ok(())
            }
            Proto::Seed => Ok(ws
                .send(Message::text(format!(
                    "{{\"type\":\"join\",\"room\":\"{room}\"}}"
                )))
                .await?),
        }
    }

    /// A chat message to `room` with request id `id`: `chat:send`, a plain
    /// `room_msg` with `id`, or the seed's `broadcast` (no id: the ack
    /// scenario puts the id in the payload, see `ack`).
    pub fn send(self, id: u64, room: &str, content: &str) -> Message {
        match self {
            Proto::SocketIo => chat_send(id, room, content),
            Proto::Plain => Message::text(format!(
                "{{\"id\":{id},\"type\":\"room_msg\",\"roomId\":\"{room}\",\"content\":\"{content}\"}}"
            )),
            Proto::Seed => Message::text(format!(
                "{{\"type\":\"broadcast\",\"room\":\"{room}\",\"payload\":\"{content}\"}}"
            )),
        }
    }

    /// The request id `t` answers, and whether it succeeded: a Socket.IO
    /// ack, a plain `ack` or `error`, or (the seed) the sender's own copy of
    /// its `broadcast`, whose payload is the id.
    pub fn ack(self, t: &str) -> Option<(u64, bool)> {
        match self {
            Proto::SocketIo => ack_id(t).map(|id| (id, t.contains("\"success\":true"))),
            Proto::Plain => {
                let ok = if t.contains("\"type\":\"ack\"") {
                    true
                } else if t.contains("\"type\":\"error\"") {
                    false
                } else {
                    return None;
                };
                number_after(t, "\"id\":").map(|id| (id, ok))
            }
            Proto::Seed => {
                if !t.starts_with("{\"type\":\"message\"") {
                    return None;
                }
                number_after(t, "\"payload\":\"").map(|id| (id, true))
            }
        }
    }

    /// Whether `t` is a message posted to a room (a delivery).
    pub fn is_delivery(self, t: &str) -> bool {
        match self {
            Proto::SocketIo => t.starts_with("42[\"chat:message\""),
            Proto::Plain => {
                t.contains("\"type\":\"room_msg\"") || t.contains("\"type\":\"message\"")
            }
            Proto::Seed => t.starts_with("{\"type\":\"message\""),
        }
    }
}

/// The digits right after `key` in `t`, as a number.
fn number_after(t: &str, key: &str) -> Option<u64> {
    let rest = &t[t.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub use crate::common::token;

/// One HTTP/1.1 request on a kept-alive connection; returns status and body.
/// Enough for Engine.IO long-polling and the backend API (Content-Length or
/// chunked bodies).
pub async fn http(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Result<(u16, String), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("connection closed mid-response".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let mut body = buf.split_off(head_end);
    if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            if stream.read_buf(&mut body).await? == 0 {
                return Err("connection closed mid-body".into());
            }
        }
        body.truncate(len);
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") {
            if stream.read_buf(&mut body).await? == 0 {
                return Err("connection closed mid-body".into());
            }
        }
        body = dechunk(&body);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..p]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = p + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}
