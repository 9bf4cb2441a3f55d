//! The transport floor: a raw tokio-tungstenite server that speaks just
//! enough Engine.IO / Socket.IO for the generator (open, CONNECT, `room:join`,
//! `chat:send` acked and broadcast to the room, `ping` answered with
//! `pong`), with no JWT check, no store and no presence. What switchboard costs above this is its own work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Rooms = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Utf8Bytes>>>>>;

pub fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "floor listening on http://{}",
            listener.local_addr().unwrap()
        );
        let rooms: Rooms = Default::default();
        let seq = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(session(tcp, rooms.clone(), seq.clone()));
        }
    });
}

/// A string field of a flat JSON object, without a JSON parser.
fn field<'a>(t: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let at = t.find(&key)? + key.len();
    let end = t[at..].find('"')?;
    Some(&t[at..at + end])
}

async fn session(tcp: tokio::net::TcpStream, rooms: Rooms, seq: Arc<AtomicU64>) {
    // The same 4 KiB read buffer switchboard's engine uses (tungstenite's
    // default is 128 KiB).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let open = r#"0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
    let _ = tx.send(open.into());
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(Message::Text(m)).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(Message::Text(m)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        let Message::Text(t) = m else { continue };
        let t = t.as_str();
        if t.starts_with("40") {
            let _ = tx.send(r#"40{"sid":"floor"}"#.into());
        } else if let Some(rest) = t.strip_prefix("42") {
            let Some(open) = rest.find('[') else { continue };
            let id = &rest[..open];
            let body = &rest[open..];
            if body.starts_with("[\"room:join\"") {
                let room = body.split('"').nth(3).unwrap_or("").to_owned();
                rooms
                    .lock()
                    .unwrap()
                    .entry(room)
                    .or_default()
                    .push(tx.clone());
                let _ = tx.send(format!("43{id}[{{\"success\":true}}]").into());
            } else if body.starts_with("[\"ping\"") {
                // The `idle` scenario's steady step: a pong per ping, as
                // switchboard and the Node reference answer.
                let _ = tx.send(r#"42["pong",{"ts":null}]"#.into());
            } else if body.starts_with("[\"chat:send\"") {
                let (Some(room), Some(content)) = (field(body, "roomId"), field(body, "content"))
                else {
                    continue;
                };
                let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
                let msg: Utf8Bytes = format!(
                    "42[\"chat:message\",{{\"roomId\":\"{room}\",\"content\":\"{content}\",\"seq\":{n}}}]"
                )
                .into();
                if let Some(members) = rooms.lock().unwrap().get_mut(room) {
                    members.retain(|m| m.send(msg.clone()).is_ok());
                }
                if !id.is_empty() {
                    let _ = tx.send(format!("43{id}[{{\"success\":true,\"seq\":{n}}}]").into());
                }
            }
        }
    }
}
