//! The Socket.IO side of a plain client's bridge, as text: the packets its
//! socket receives read (Engine.IO v4, Socket.IO v5, JSON parser), the
//! packets it sends written, and each event turned into the plain message
//! of docs/protocol.md §19. Pure: text in, values out.

use serde_json::{Map, Value, json};

/// One packet the bridged socket received.
#[derive(Debug, PartialEq)]
pub enum Packet {
    /// Engine.IO open (`0{…}`).
    Open,
    /// Engine.IO ping (`2`): answer with a pong.
    Ping,
    /// Engine.IO close (`1`).
    Close,
    /// Socket.IO CONNECT answered (`40…`).
    Connected,
    /// Socket.IO CONNECT_ERROR (`44…`) with its message.
    ConnectError(String),
    /// Socket.IO DISCONNECT (`41`): the server ended the socket.
    Disconnect,
    /// An event with its arguments, and an ack id when the sender waits for one.
    Event {
        name: String,
        args: Vec<Value>,
        ack: Option<u64>,
    },
    /// The ack of one of our events.
    Ack { id: u64, args: Vec<Value> },
    /// Anything else (binary packets, noop, pong).
    Other,
}

/// Reads one text frame of the socket in namespace `ns`.
pub fn read(frame: &str, ns: &str) -> Packet {
    let mut chars = frame.char_indices();
    match chars.next().map(|(_, c)| c) {
        Some('0') => return Packet::Open,
        Some('1') => return Packet::Close,
        Some('2') => return Packet::Ping,
        Some('4') => {}
        _ => return Packet::Other,
    }
    let Some((_, kind)) = chars.next().filter(|(_, c)| c.is_ascii_digit()) else {
        return Packet::Other;
    };
    let mut rest = &frame[2..];
    if let Some(after) = rest.strip_prefix('/') {
        let end = after.find(',').unwrap_or(after.len());
        if ns != format!("/{}", &after[..end]) {
            return Packet::Other;
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse::<u64>().ok();
    let body = &rest[digits..];
    match kind {
        '0' => Packet::Connected,
        '1' => Packet::Disconnect,
        '4' => {
            let message = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "refused".into());
            Packet::ConnectError(message)
        }
        '2' | '3' => {
            let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(body) else {
                return Packet::Other;
            };
            if kind == '3' {
                return match id {
                    Some(id) => Packet::Ack { id, args },
                    None => Packet::Other,
                };
            }
            if args.is_empty() {
                return Packet::Other;
            }
            match args.remove(0) {
                Value::String(name) => Packet::Event {
                    name,
                    args,
                    ack: id,
                },
                _ => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// `ns,` before a packet's body, for a namespace other than `/`.
fn ns_prefix(ns: &str) -> String {
    if ns == "/" {
        String::new()
    } else {
        format!("{ns},")
    }
}

/// The CONNECT packet with the token as `auth`.
pub fn connect(ns: &str, token: &str) -> String {
    format!("40{}{}", ns_prefix(ns), json!({ "token": token }))
}

/// The DISCONNECT packet: the client leaves, as `socket.disconnect()` does.
pub fn disconnect(ns: &str) -> String {
    format!("41{}", ns_prefix(ns))
}

/// An event that asks for ack `id`.
pub fn event(ns: &str, id: u64, name: &str, data: &Value) -> String {
    format!("42{}{id}{}", ns_prefix(ns), json!([name, data]))
}

/// The answer to an event the server sent with ack `id`.
pub fn ack(ns: &str, id: u64, data: &Value) -> String {
    format!("43{}{id}{}", ns_prefix(ns), json!([data]))
}

fn field(m: &mut Map<String, Value>, key: &str) -> Value {
    m.remove(key).unwrap_or(Value::Null)
}

/// A stored message in the plain shape: `{ roomId | to, id, seq, from,
/// fromName, content, time }`.
pub fn history_message(msg: Value) -> Value {
    let Value::Object(mut m) = msg else {
        return msg;
    };
    let mut out = Map::new();
    match m.remove("roomId") {
        Some(room) if !room.is_null() => {
            out.insert("roomId".into(), room);
        }
        _ => {
            out.insert("to".into(), field(&mut m, "toUserId"));
        }
    }
    out.insert("id".into(), field(&mut m, "id"));
    out.insert("seq".into(), field(&mut m, "seq"));
    out.insert("from".into(), field(&mut m, "senderId"));
    out.insert("fromName".into(), field(&mut m, "senderName"));
    out.insert("content".into(), field(&mut m, "content"));
    out.insert("time".into(), field(&mut m, "timestamp"));
    Value::Object(out)
}

fn typed(kind: &str, mut m: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    out.append(&mut m);
    Value::Object(out)
}

/// `{ type: "presence", event, roomId, userId, username? }` from a presence
/// event that names the user `id_key` (and `name_key`).
fn presence(event: &str, mut m: Map<String, Value>, id_key: &str, name_key: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("event".into(), json!(event));
    out.insert("roomId".into(), field(&mut m, "roomId"));
    out.insert("userId".into(), field(&mut m, id_key));
    if let Some(key) = name_key {
        out.insert("username".into(), field(&mut m, key));
    }
    typed("presence", out)
}

/// `{ type: "system", event, … }`.
fn system(event: &str, mut m: Map<String, Value>) -> Value {
    m.insert("event".into(), json!(event));
    typed("system", m)
}

/// The plain message for event `name` of the bridged socket. `style` says
/// how a room's messages are shaped for this client.
pub fn to_plain(name: &str, mut args: Vec<Value>, style: impl Fn(&str) -> bool) -> Value {
    let first = if args.is_empty() {
        Value::Null
    } else {
        args.swap_remove(0)
    };
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    match name {
        "chat:message" => {
            let Value::Object(m) = history_message(first) else {
                return json!({ "type": "room_msg" });
            };
            let room = m.get("roomId").and_then(Value::as_str).unwrap_or("");
            if style(room) {
                let mut m = m;
                let mut out = Map::new();
                out.insert("type".into(), json!("message"));
                out.insert("room".into(), field(&mut m, "roomId"));
                out.insert("payload".into(), field(&mut m, "content"));
                out.append(&mut m);
                Value::Object(out)
            } else {
                typed("room_msg", m)
            }
        }
        "private:message" => match history_message(first) {
            Value::Object(m) => typed("private_msg", m),
            _ => json!({ "type": "private_msg" }),
        },
        "room:user-joined" => presence("join", obj(first), "userId", Some("username")),
        "chat:userJoined" => presence("join", obj(first), "id", Some("name")),
        "room:user-left" => presence("leave", obj(first), "userId", None),
        "typing:user" | "typing:stopped" => {
            let mut m = obj(first);
            m.insert("typing".into(), json!(name == "typing:user"));
            typed("typing", m)
        }
        "pong" => typed("pong", obj(first)),
        "auth:expiring" => typed("token_expiring", obj(first)),
        "server:closing" => system("closing", obj(first)),
        "room:left" => system("room_left", obj(first)),
        _ => {
            let mut out = Map::new();
            out.insert("event".into(), json!(name));
            out.insert("data".into(), first);
            if !args.is_empty() {
                out.insert("more".into(), Value::Array(args));
            }
            typed("event", out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_packets() {
        assert_eq!(read(r#"0{"sid":"x"}"#, "/"), Packet::Open);
        assert_eq!(read("2", "/"), Packet::Ping);
        assert_eq!(read(r#"40{"sid":"a"}"#, "/"), Packet::Connected);
        assert_eq!(read(r#"40/acme,{"sid":"a"}"#, "/acme"), Packet::Connected);
        assert_eq!(read(r#"40/other,{"sid":"a"}"#, "/acme"), Packet::Other);
        assert_eq!(
            read(
                r#"44{"message":"Authentication failed: token expired"}"#,
                "/"
            ),
            Packet::ConnectError("Authentication failed: token expired".into())
        );
        assert_eq!(read("41", "/"), Packet::Disconnect);
        assert_eq!(
            read(r#"42["chat:message",{"a":1},"off"]"#, "/"),
            Packet::Event {
                name: "chat:message".into(),
                args: vec![json!({"a":1}), json!("off")],
                ack: None
            }
        );
        assert_eq!(
            read(r#"42/acme,7["ask",1]"#, "/acme"),
            Packet::Event {
                name: "ask".into(),
                args: vec![json!(1)],
                ack: Some(7)
            }
        );
        assert_eq!(
            read(r#"4312[{"success":true}]"#, "/"),
            Packet::Ack {
                id: 12,
                args: vec![json!({"success": true})]
            }
        );
        assert_eq!(read("42[", "/"), Packet::Other);
        assert_eq!(read("4é[]", "/"), Packet::Other);
    }

    #[test]
    fn writes_packets() {
        assert_eq!(connect("/", "t"), r#"40{"token":"t"}"#);
        assert_eq!(connect("/acme", "t"), r#"40/acme,{"token":"t"}"#);
        assert_eq!(
            event("/", 3, "room:join", &json!("g")),
            r#"423["room:join","g"]"#
        );
        assert_eq!(ack("/a", 9, &json!(1)), r#"43/a,9[1]"#);
        assert_eq!(disconnect("/"), "41");
    }

    #[test]
    fn events_become_plain_messages() {
        let msg = json!({"id":"m","roomId":"g","senderId":"alice","senderName":"Alice",
            "content":"hi","type":"text","timestamp":5,"seq":2});
        assert_eq!(
            to_plain("chat:message", vec![msg.clone(), json!("off")], |_| false),
            json!({"type":"room_msg","roomId":"g","id":"m","seq":2,"from":"alice",
                "fromName":"Alice","content":"hi","time":5})
        );
        assert_eq!(
            to_plain("chat:message", vec![msg], |r| r == "g"),
            json!({"type":"message","room":"g","payload":"hi","id":"m","seq":2,
                "from":"alice","fromName":"Alice","time":5})
        );
        assert_eq!(
            to_plain(
                "room:user-left",
                vec![json!({"userId":"u","roomId":"g"})],
                |_| false
            ),
            json!({"type":"presence","event":"leave","roomId":"g","userId":"u"})
        );
        assert_eq!(
            to_plain(
                "typing:stopped",
                vec![json!({"userId":"u","roomId":"g"})],
                |_| false
            ),
            json!({"type":"typing","userId":"u","roomId":"g","typing":false})
        );
        assert_eq!(
            to_plain("order:shipped", vec![json!({"n":1})], |_| false),
            json!({"type":"event","event":"order:shipped","data":{"n":1}})
        );
    }
}
