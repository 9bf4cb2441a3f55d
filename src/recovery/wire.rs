//! Reading and amending the few outgoing packets recovery cares about, in
//! both wire formats: the CONNECT reply (which gets the `pid` socketioxide
//! cannot add) and events that end with an offset. Pure code: bytes in,
//! verdicts out. Text packets are Engine.IO packets as written on a
//! websocket text frame or in a long-polling body (`40…`, `42…`); msgpack
//! packets are the bytes of a binary frame (or of a base64 polling packet).

use super::offset::{self, Offset};

/// What an outgoing packet is, as far as recovery is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// The Engine.IO open packet: the session's id.
    Open(String),
    /// A Socket.IO CONNECT reply in this namespace.
    Connect(&'a str),
    /// An event in this namespace whose last argument is an offset.
    Event(&'a str, Offset),
    Other,
}

/// The events that end with an offset.
pub const RECOVERABLE: [&str; 2] = ["chat:message", "private:message"];

/// How their arguments start in a text packet (checked for every frame
/// written: no allocation).
const TEXT_STARTS: [&[u8]; 2] = [b"[\"chat:message\",{", b"[\"private:message\",{"];

/// Their names as msgpack fixstr.
const MSGPACK_NAMES: [&[u8]; 2] = [b"\xacchat:message", b"\xafprivate:message"];

/// `/nsp,` after the packet type, or `/`; and where the rest starts.
fn text_nsp(p: &[u8]) -> Option<(&str, usize)> {
    if p.get(2) != Some(&b'/') {
        return Some(("/", 2));
    }
    let comma = p.iter().position(|&b| b == b',')?;
    Some((std::str::from_utf8(&p[2..comma]).ok()?, comma + 1))
}

pub fn classify_text(p: &[u8]) -> Packet<'_> {
    match p {
        [b'0', b'{', ..] => {
            #[derive(serde::Deserialize)]
            struct Open {
                sid: String,
            }
            match serde_json::from_slice::<Open>(&p[1..]) {
                Ok(o) => Packet::Open(o.sid),
                Err(_) => Packet::Other,
            }
        }
        [b'4', b'0', ..] => match text_nsp(p) {
            Some((nsp, rest)) if p[rest..].starts_with(br#"{"sid":"#) && p.ends_with(b"}") => {
                Packet::Connect(nsp)
            }
            _ => Packet::Other,
        },
        [b'4', b'2', ..] if p.ends_with(b"\"]") => {
            let Some((nsp, rest)) = text_nsp(p) else {
                return Packet::Other;
            };
            // Only the events that carry offsets, without an ack id: their
            // last argument is the offset, after the message object (a
            // string inside it cannot end the packet).
            if !TEXT_STARTS.iter().any(|e| p[rest..].starts_with(e)) {
                return Packet::Other;
            }
            // `,"<offset>"]` at the very end.
            let end = p.len() - 2;
            let from = end.saturating_sub(offset::MAX_LEN + 1);
            let Some(q) = p[from..end].iter().rposition(|&b| b == b'"') else {
                return Packet::Other;
            };
            let q = from + q;
            if q == 0 || p[q - 1] != b',' {
                return Packet::Other;
            }
            match Offset::parse(&p[q + 1..end]) {
                Some(o) => Packet::Event(nsp, o),
                None => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// The CONNECT reply with `pid` added (`40{"sid":"…","pid":"…"}`).
pub fn connect_with_pid_text(p: &[u8], pid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + pid.len() + 9);
    out.extend_from_slice(&p[..p.len() - 1]);
    out.extend_from_slice(br#","pid":""#);
    out.extend_from_slice(pid.as_bytes());
    out.extend_from_slice(br#""}"#);
    out
}

/// socketioxide's msgpack packets start `{type: n, nsp: "…"`, then `data`
/// (and `id` for acks). Returns the type, the namespace, the map's length.
fn msgpack_head(p: &[u8]) -> Option<(u8, &str, u8, usize)> {
    let len = match p.first()? {
        m @ 0x82..=0x84 => m - 0x80,
        _ => return None,
    };
    let rest = p.get(1..)?.strip_prefix(b"\xa4type")?;
    let kind = *rest.first()?;
    if kind > 6 {
        return None;
    }
    let rest = rest[1..].strip_prefix(b"\xa3nsp")?;
    let (n, rest) = match *rest.first()? {
        h @ 0xa0..=0xbf => ((h - 0xa0) as usize, &rest[1..]),
        0xd9 => (*rest.get(1)? as usize, &rest[2..]),
        _ => return None,
    };
    let nsp = std::str::from_utf8(rest.get(..n)?).ok()?;
    let end = p.len() - rest.len() + n;
    Some((kind, nsp, len, end))
}

/// Whether the msgpack `data` starting at `p[at..]` is `[<recoverable
/// event>, <map>, <str>]`: three arguments, a message object in the middle.
fn msgpack_recoverable(p: &[u8], at: usize) -> bool {
    let Some(rest) = p.get(at..).and_then(|r| r.strip_prefix(b"\xa4data\x93")) else {
        return false;
    };
    MSGPACK_NAMES.iter().any(|name| {
        rest.starts_with(name) && matches!(rest.get(name.len()), Some(0x80..=0x8f | 0xde | 0xdf))
    })
}

pub fn classify_msgpack(p: &[u8]) -> Packet<'_> {
    match msgpack_head(p) {
        Some((0, nsp, 3, _)) => Packet::Connect(nsp),
        // No ack id: `data` is last, and so is its last argument.
        Some((2, nsp, 3, at)) if msgpack_recoverable(p, at) => {
            for n in offset::MIN_LEN..=offset::MAX_LEN {
                let Some(start) = p.len().checked_sub(n) else {
                    break;
                };
                let header_ok = if n < 32 {
                    p.get(start.wrapping_sub(1)) == Some(&(0xa0 | n as u8))
                } else {
                    start >= 2 && p[start - 2] == 0xd9 && p[start - 1] == n as u8
                };
                if header_ok && let Some(o) = Offset::parse(&p[start..]) {
                    return Packet::Event(nsp, o);
                }
            }
            Packet::Other
        }
        _ => Packet::Other,
    }
}

/// The msgpack CONNECT reply with `pid` added to its data; `None` when it
/// does not read as one.
pub fn connect_with_pid_msgpack(p: &[u8], pid: &str) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = rmp_serde::from_slice(p).ok()?;
    v.get_mut("data")?
        .as_object_mut()?
        .insert("pid".into(), pid.into());
    rmp_serde::to_vec_named(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> Offset {
        Offset::new("/", "lobby", 42)
    }

    #[test]
    fn text_packets() {
        let o = off().encode();
        let ev = format!(r#"42["chat:message",{{"content":"a\"]"}},"{o}"]"#);
        assert_eq!(classify_text(ev.as_bytes()), Packet::Event("/", off()));
        let ev = format!(r#"42/t-1,["private:message",{{}},"{o}"]"#);
        assert_eq!(classify_text(ev.as_bytes()), Packet::Event("/t-1", off()));
        // Not an offset: an event whose last argument is another string,
        // an ack, a string that is the whole first argument.
        for p in [
            r#"42["x",{},"hello"]"#.to_string(),
            format!(r#"43["{o}"]"#),
            format!(r#"42["{o}"]"#),
            format!(r#"42["x","z{o}"]"#),
            // Other events never carry offsets, whatever their last string.
            format!(r#"42["typing:user",{{"username":"x"}},"{o}"]"#),
            format!(r#"42["room:user-joined","{o}"]"#),
            // An ack id before the arguments.
            format!(r#"425["chat:message",{{}},"{o}"]"#),
        ] {
            assert_eq!(classify_text(p.as_bytes()), Packet::Other, "{p}");
        }
        assert_eq!(
            classify_text(br#"0{"sid":"abc","upgrades":[],"pingInterval":25000}"#),
            Packet::Open("abc".into())
        );
        assert_eq!(classify_text(br#"40{"sid":"x"}"#), Packet::Connect("/"));
        assert_eq!(classify_text(br#"40/a,{"sid":"x"}"#), Packet::Connect("/a"));
        assert_eq!(
            classify_text(br#"44{"message":"no"}"#),
            Packet::Other,
            "connect_error"
        );
    }

    #[test]
    fn the_byte_forms_name_the_recoverable_events() {
        for (i, e) in RECOVERABLE.iter().enumerate() {
            assert_eq!(TEXT_STARTS[i], format!("[\"{e}\",{{").as_bytes());
            let mut name = vec![0xa0 | e.len() as u8];
            name.extend_from_slice(e.as_bytes());
            assert_eq!(MSGPACK_NAMES[i], &name[..]);
        }
    }

    #[test]
    fn pid_in_a_text_connect() {
        let p = connect_with_pid_text(br#"40/a,{"sid":"x"}"#, "P1");
        assert_eq!(p, br#"40/a,{"sid":"x","pid":"P1"}"#);
    }

    /// Packets as socketioxide's msgpack parser writes them.
    fn msgpack(kind: u8, nsp: &str, data: serde_json::Value, id: Option<i64>) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), kind.into());
        m.insert("nsp".into(), nsp.into());
        m.insert("data".into(), data);
        if let Some(id) = id {
            m.insert("id".into(), id.into());
        }
        // serde_json's map keeps keys sorted; socketioxide's order is type, nsp, data, id.
        let mut out = vec![0x80 | m.len() as u8];
        for k in ["type", "nsp", "data", "id"] {
            if let Some(v) = m.get(k) {
                out.extend(rmp_serde::to_vec(k).unwrap());
                out.extend(rmp_serde::to_vec(v).unwrap());
            }
        }
        out
    }

    #[test]
    fn msgpack_packets() {
        let o = off();
        let ev = msgpack(
            2,
            "/",
            serde_json::json!(["chat:message", {"a": 1}, o.encode()]),
            None,
        );
        assert_eq!(classify_msgpack(&ev), Packet::Event("/", o));
        let long = Offset {
            room: o.room,
            seq: u64::MAX,
        };
        let ns = "/a-namespace-name-longer-than-31-bytes";
        let ev = msgpack(
            2,
            ns,
            serde_json::json!(["private:message", {}, long.encode()]),
            None,
        );
        assert_eq!(classify_msgpack(&ev), Packet::Event(ns, long));
        let ack = msgpack(
            2,
            "/",
            serde_json::json!(["chat:message", {}, o.encode()]),
            Some(3),
        );
        assert_eq!(classify_msgpack(&ack), Packet::Other);
        let other = msgpack(2, "/", serde_json::json!(["chat:message", {}, "x"]), None);
        assert_eq!(classify_msgpack(&other), Packet::Other);
        // A user's name that looks like an offset, at the end of another event.
        let typing = msgpack(
            2,
            "/",
            serde_json::json!(["typing:user", {"username": o.encode()}]),
            None,
        );
        assert_eq!(classify_msgpack(&typing), Packet::Other);
        let two = msgpack(
            2,
            "/",
            serde_json::json!(["chat:message", o.encode()]),
            None,
        );
        assert_eq!(classify_msgpack(&two), Packet::Other);
        let c = msgpack(0, "/", serde_json::json!({"sid": "S"}), None);
        assert_eq!(classify_msgpack(&c), Packet::Connect("/"));
        let with = connect_with_pid_msgpack(&c, "P").unwrap();
        let v: serde_json::Value = rmp_serde::from_slice(&with).unwrap();
        assert_eq!(v["data"], serde_json::json!({"sid": "S", "pid": "P"}));
        assert_eq!(v["type"], 0);
        assert_eq!(classify_msgpack(b""), Packet::Other);
        assert_eq!(classify_msgpack(&[0x83, 0xa4]), Packet::Other);
    }
}
