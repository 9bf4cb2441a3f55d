//! `@socket.io/redis-emitter` (5.x) from any backend: each node listens on
//! the emitter's Redis channels and applies what it reads to its **own**
//! sockets only (`.local()`), so every node delivers each packet once and
//! nothing is re-published.
//!
//! Wire format (the emitter's `dist/index.js`, 5.1.0), `{key}` being the
//! emitter's `key` option (`--emitter-key`, default `socket.io`):
//!
//! * broadcasts: PUBLISH `{key}#{nsp}#` (or `{key}#{nsp}#{room}#` when exactly
//!   one room is targeted) with msgpack
//!   `["emitter", {type: 2, data: [ev, ...args], nsp}, {rooms, except, flags}]`;
//! * `socketsJoin` / `socketsLeave` / `disconnectSockets` / `serverSideEmit`:
//!   PUBLISH `{key}-request#{nsp}#` with JSON `{type: 2|3, opts: {rooms,
//!   except}, rooms}`, `{type: 4, opts, close}`, `{uid, type: 6, data}`.
//!
//! Room names: `user:{id}` addresses user `{id}` (Socket.IO room `user:{id}`);
//! any other name is a room id and addresses Socket.IO room `room:{name}`, as
//! everywhere else in switchboard. A name that is a socket id (16 characters
//! of `A-Z a-z 0-9 _ -`, what `socket.id` is) also addresses that socket: in
//! Socket.IO every socket is in a room named by its id, and Node backends
//! target sockets that way (`to(socketId)`, `except(socketId)`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde::ser::{Serialize, SerializeTuple, Serializer};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;

use crate::cluster::IoHandle;
use crate::names::{client_room, user_room};

/// What one emitter message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `emit(ev, ...args)` to the sockets in `rooms` (all when empty) but
    /// not in `except`.
    Broadcast {
        nsp: String,
        event: String,
        args: Vec<Value>,
        target: Target,
        volatile: bool,
    },
    /// `socketsJoin(rooms)`.
    Join {
        nsp: String,
        target: Target,
        rooms: Vec<String>,
    },
    /// `socketsLeave(rooms)`.
    Leave {
        nsp: String,
        target: Target,
        rooms: Vec<String>,
    },
    /// `disconnectSockets(close)`.
    Disconnect { nsp: String, target: Target },
    /// `serverSideEmit(...)`: switchboard has no server-side listeners.
    ServerSideEmit { nsp: String },
}

/// Which sockets, as Socket.IO room names (already mapped) and socket ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    /// Sockets named by id in `rooms` (each is also in `rooms`, as a room).
    pub sockets: Vec<Sid>,
    /// Sockets named by id in `except`.
    pub except_sockets: Vec<Sid>,
}

impl Target {
    fn new(rooms: &[String], except: &[String]) -> Result<Target, (Drop, String)> {
        Ok(Target {
            rooms: map_rooms(rooms)?,
            except: map_rooms(except)?,
            sockets: rooms.iter().filter_map(|n| socket_id(n)).collect(),
            except_sockets: except.iter().filter_map(|n| socket_id(n)).collect(),
        })
    }

    fn names_sockets(&self) -> bool {
        !self.sockets.is_empty() || !self.except_sockets.is_empty()
    }
}

/// The socket a name designates when it has the shape of a socket id.
fn socket_id(name: &str) -> Option<Sid> {
    name.parse().ok()
}

/// Why a message was dropped; each kind is logged once at `warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not the emitter's msgpack or JSON shape (or binary data).
    Malformed,
    /// A request type the emitter does not send (or that needs an answer).
    UnsupportedType,
    /// A room name that is neither `user:{id}` nor a valid room id.
    InvalidRoom,
    /// A reserved or invalid event name.
    InvalidEvent,
    /// A namespace this server does not serve.
    UnknownNamespace,
}

impl Drop {
    const ALL: [Drop; 5] = [
        Drop::Malformed,
        Drop::UnsupportedType,
        Drop::InvalidRoom,
        Drop::InvalidEvent,
        Drop::UnknownNamespace,
    ];
    fn label(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::UnsupportedType => "unsupported_type",
            Drop::InvalidRoom => "invalid_room",
            Drop::InvalidEvent => "invalid_event",
            Drop::UnknownNamespace => "unknown_namespace",
        }
    }
}

static LOGGED: [AtomicBool; 5] = [const { AtomicBool::new(false) }; 5];

/// Logs a dropped message: the first of each kind at `warn`, the rest at `debug`.
fn log_drop(kind: Drop, channel: &str, why: &str) {
    let i = Drop::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    crate::metrics::emitter_dropped(kind.label());
    if !LOGGED[i].swap(true, Ordering::Relaxed) {
        tracing::warn!(
            channel,
            "redis emitter message dropped ({}): {why} (further ones of this kind are logged at debug)",
            kind.label()
        );
    } else {
        tracing::debug!(
            channel,
            "redis emitter message dropped ({}): {why}",
            kind.label()
        );
    }
}

/// Maps one emitter room name: `user:{id}` to the user's room, anything else
/// to the client room `room:{name}`.
pub fn map_room(name: &str) -> Result<String, String> {
    if let Some(user) = name.strip_prefix("user:") {
        crate::realtime::messages::check_user_id(user)
            .map_err(|r| format!("'{name}': {}", r.error))?;
        Ok(user_room(user))
    } else {
        crate::realtime::reply::room_id(name).map_err(|r| format!("'{name}': {}", r.error))?;
        Ok(client_room(name))
    }
}

fn map_rooms(names: &[String]) -> Result<Vec<String>, (Drop, String)> {
    names
        .iter()
        .map(|n| map_room(n).map_err(|e| (Drop::InvalidRoom, e)))
        .collect()
}

#[derive(Deserialize)]
struct Packet {
    #[serde(rename = "type")]
    kind: u8,
    data: Vec<Value>,
    nsp: String,
}

#[derive(Deserialize, Default)]
struct Flags {
    #[serde(default)]
    volatile: Option<bool>,
}

#[derive(Deserialize)]
struct BroadcastOpts {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    flags: Flags,
}

#[derive(Deserialize, Default)]
struct RequestOpts {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

#[derive(Deserialize)]
struct JsonRequest {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    opts: RequestOpts,
    #[serde(default)]
    rooms: Vec<String>,
}

/// The namespace in `rest` (the channel after `{key}#` or `{key}-request#`):
/// everything up to the next `#`.
fn channel_nsp(rest: &str) -> Option<&str> {
    let (nsp, _) = rest.split_once('#')?;
    nsp.starts_with('/').then_some(nsp)
}

/// Decodes one message published on `channel` by the emitter whose key is
/// `key`. Pure: no I/O, no logging.
pub fn decode(key: &str, channel: &str, payload: &[u8]) -> Result<Request, (Drop, String)> {
    let malformed = |why: String| (Drop::Malformed, why);
    if let Some(rest) = channel.strip_prefix(&format!("{key}-request#")) {
        let nsp = channel_nsp(rest)
            .ok_or_else(|| malformed("no namespace in the channel".into()))?
            .to_string();
        let req: JsonRequest = serde_json::from_slice(payload)
            .map_err(|e| malformed(format!("request is not the emitter's JSON: {e}")))?;
        let target = || Target::new(&req.opts.rooms, &req.opts.except);
        return match req.kind {
            2 => Ok(Request::Join {
                target: target()?,
                rooms: map_rooms(&req.rooms)?,
                nsp,
            }),
            3 => Ok(Request::Leave {
                target: target()?,
                rooms: map_rooms(&req.rooms)?,
                nsp,
            }),
            4 => Ok(Request::Disconnect {
                target: target()?,
                nsp,
            }),
            6 => Ok(Request::ServerSideEmit { nsp }),
            t => Err((Drop::UnsupportedType, format!("request type {t}"))),
        };
    }
    if let Some(rest) = channel.strip_prefix(&format!("{key}#")) {
        channel_nsp(rest).ok_or_else(|| malformed("no namespace in the channel".into()))?;
        let (_uid, packet, opts): (String, Packet, BroadcastOpts) = rmp_serde::from_slice(payload)
            .map_err(|e| malformed(format!("broadcast is not the emitter's msgpack: {e}")))?;
        if packet.kind != 2 {
            return Err((
                Drop::UnsupportedType,
                format!("packet type {}", packet.kind),
            ));
        }
        if !packet.nsp.starts_with('/') {
            return Err(malformed(format!("namespace '{}'", packet.nsp)));
        }
        let mut data = packet.data.into_iter();
        let event = match data.next() {
            Some(Value::String(ev)) => ev,
            _ => return Err(malformed("the event name is not a string".into())),
        };
        crate::names::check_event_name(&event).map_err(|e| (Drop::InvalidEvent, e))?;
        return Ok(Request::Broadcast {
            nsp: packet.nsp,
            event,
            args: data.collect(),
            target: Target::new(&opts.rooms, &opts.except)?,
            volatile: opts.flags.volatile.unwrap_or(false),
        });
    }
    Err(malformed("not an emitter channel".into()))
}

/// The emitter's arguments, sent as that many Socket.IO arguments (a tuple
/// to socketioxide's serializer, whatever their number).
struct Args<'a>(&'a [Value]);

impl Serialize for Args<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// `pattern` with Redis glob characters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Listens for the emitter on its own pub/sub connection (re-subscribing
/// after Redis comes back) and applies each message to this node's sockets.
pub fn start(io: IoHandle, client: redis::Client, key: String, namespaces: Vec<String>) {
    let patterns = [
        format!("{}#*", glob_escape(&key)),
        format!("{}-request#*", glob_escape(&key)),
    ];
    tokio::spawn(async move {
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.psubscribe(&patterns).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let channel = msg.get_channel_name().to_string();
                            match decode(&key, &channel, msg.get_payload_bytes()) {
                                Ok(req) => apply(&io, &namespaces, &channel, req).await,
                                Err((kind, why)) => log_drop(kind, &channel, &why),
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("redis emitter relay cannot subscribe: {e}"),
            }
            // Connection lost: subscribe again once Redis answers.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

fn nsp_of(req: &Request) -> &str {
    match req {
        Request::Broadcast { nsp, .. }
        | Request::Join { nsp, .. }
        | Request::Leave { nsp, .. }
        | Request::Disconnect { nsp, .. }
        | Request::ServerSideEmit { nsp } => nsp,
    }
}

async fn apply(io: &IoHandle, namespaces: &[String], channel: &str, req: Request) {
    let nsp = nsp_of(&req);
    if nsp != "/"
        && !namespaces
            .iter()
            .any(|p| crate::realtime::patterns::pattern_matches(p, nsp))
    {
        log_drop(
            Drop::UnknownNamespace,
            channel,
            &format!("namespace '{nsp}'"),
        );
        return;
    }
    if let Request::ServerSideEmit { .. } = req {
        tracing::debug!(
            channel,
            "redis emitter serverSideEmit ignored: no server-side listeners"
        );
        return;
    }
    crate::on_io!(io, io => apply_in(io, req).await)
}

async fn apply_in<A: Adapter>(io: &SocketIo<A>, req: Request) {
    // A namespace that matches a pattern but has no socket yet: nobody to reach.
    let Some(op) = io.of(nsp_of(&req)) else {
        return;
    };
    let target = match &req {
        Request::Broadcast { target, .. }
        | Request::Join { target, .. }
        | Request::Leave { target, .. }
        | Request::Disconnect { target, .. } => target,
        Request::ServerSideEmit { .. } => return,
    };
    if target.names_sockets() {
        return apply_to_sockets(&op, target, &req);
    }
    let select = |t: &Target| {
        let mut op = op.clone().local();
        if !t.rooms.is_empty() {
            op = op.to(t.rooms.clone());
        }
        if !t.except.is_empty() {
            op = op.except(t.except.clone());
        }
        op
    };
    let result = match &req {
        Request::Broadcast {
            event,
            args,
            target,
            volatile,
            ..
        } => {
            crate::metrics::event_out(event);
            let op = select(target);
            let op = if *volatile { op.volatile() } else { op };
            op.emit(event.as_str(), &Args(args))
                .await
                .map_err(|e| e.to_string())
        }
        Request::Join { target, rooms, .. } => select(target)
            .join(rooms.clone())
            .await
            .map_err(|e| e.to_string()),
        Request::Leave { target, rooms, .. } => select(target)
            .leave(rooms.clone())
            .await
            .map_err(|e| e.to_string()),
        Request::Disconnect { target, .. } => {
            select(target).disconnect().await.map_err(|e| e.to_string())
        }
        Request::ServerSideEmit { .. } => Ok(()),
    };
    if let Err(e) = result {
        tracing::debug!("redis emitter request not fully applied: {e}");
    }
}

/// This node's sockets that `t` designates when it names sockets by id:
/// those in its rooms (all, without rooms) or named, less those in its
/// except rooms or named there.
fn chosen<A: Adapter>(op: &BroadcastOperators<A>, t: &Target) -> Vec<SocketRef<A>> {
    let local = op.clone().local();
    let mut out: std::collections::HashMap<Sid, SocketRef<A>> = if t.rooms.is_empty() {
        local.clone().sockets()
    } else {
        local.clone().to(t.rooms.clone()).sockets()
    }
    .into_iter()
    .map(|s| (s.id, s))
    .collect();
    for sid in &t.sockets {
        if let Some(s) = local.get_socket(*sid) {
            out.insert(*sid, s);
        }
    }
    if !t.except.is_empty() {
        for s in local.clone().to(t.except.clone()).sockets() {
            out.remove(&s.id);
        }
    }
    for sid in &t.except_sockets {
        out.remove(sid);
    }
    out.into_values().collect()
}

/// Applies `req` socket by socket (socketioxide keeps no room per socket id).
fn apply_to_sockets<A: Adapter>(op: &BroadcastOperators<A>, target: &Target, req: &Request) {
    let sockets = chosen(op, target);
    match req {
        Request::Broadcast {
            event,
            args,
            volatile,
            ..
        } => {
            crate::metrics::event_out(event);
            for s in sockets {
                let sent = if *volatile {
                    s.volatile().emit(event.as_str(), &Args(args))
                } else {
                    s.emit(event.as_str(), &Args(args))
                };
                if let Err(e) = sent {
                    tracing::debug!("redis emitter emit to {} not sent: {e}", s.id);
                }
            }
        }
        Request::Join { rooms, .. } => {
            for s in sockets {
                s.join(rooms.clone());
            }
        }
        Request::Leave { rooms, .. } => {
            for s in sockets {
                s.leave(rooms.clone());
            }
        }
        Request::Disconnect { .. } => {
            for s in sockets {
                let _ = s.disconnect();
            }
        }
        Request::ServerSideEmit { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Captured from @socket.io/redis-emitter 5.1.0 with a stub client.
    const TO_GENERAL: &str = "93a7656d697474657283a47479706502a46461746192a46e65777381a16e01a36e7370a12f83a5726f6f6d7391a767656e6572616ca5666c61677380a665786365707490";
    const TO_AB_EXCEPT_C: &str = "93a7656d697474657283a47479706502a46461746193a56d756c746901a374776fa36e7370a12f83a5726f6f6d7392a161a162a5666c61677380a665786365707491a163";
    const ACME_VOLATILE: &str = "93a7656d697474657283a47479706502a46461746191a176a36e7370a52f61636d6583a5726f6f6d7390a5666c61677381a8766f6c6174696c65c3a665786365707490";

    #[test]
    fn broadcasts() {
        // emitter.to("general").emit("news", { n: 1 })
        assert_eq!(
            decode("socket.io", "socket.io#/#general#", &hex(TO_GENERAL)).unwrap(),
            Request::Broadcast {
                nsp: "/".into(),
                event: "news".into(),
                args: vec![json!({"n": 1})],
                target: Target {
                    rooms: vec!["room:general".into()],
                    ..Target::default()
                },
                volatile: false,
            }
        );
        // emitter.to(["a", "b"]).except("c").emit("multi", 1, "two")
        assert_eq!(
            decode("socket.io", "socket.io#/#", &hex(TO_AB_EXCEPT_C)).unwrap(),
            Request::Broadcast {
                nsp: "/".into(),
                event: "multi".into(),
                args: vec![json!(1), json!("two")],
                target: Target {
                    rooms: vec!["room:a".into(), "room:b".into()],
                    except: vec!["room:c".into()],
                    ..Target::default()
                },
                volatile: false,
            }
        );
        // emitter.of("/acme").volatile.emit("v")
        assert_eq!(
            decode("socket.io", "socket.io#/acme#", &hex(ACME_VOLATILE)).unwrap(),
            Request::Broadcast {
                nsp: "/acme".into(),
                event: "v".into(),
                args: vec![],
                target: Target::default(),
                volatile: true,
            }
        );
    }

    #[test]
    fn requests() {
        let d = |p: &str| decode("socket.io", "socket.io-request#/#", p.as_bytes());
        assert_eq!(
            d(r#"{"type":2,"opts":{"rooms":[],"except":[]},"rooms":["general"]}"#).unwrap(),
            Request::Join {
                nsp: "/".into(),
                target: Target::default(),
                rooms: vec!["room:general".into()]
            }
        );
        assert_eq!(
            d(r#"{"type":3,"opts":{"rooms":["user:bob"],"except":[]},"rooms":["x"]}"#).unwrap(),
            Request::Leave {
                nsp: "/".into(),
                target: Target {
                    rooms: vec!["user:bob".into()],
                    ..Target::default()
                },
                rooms: vec!["room:x".into()]
            }
        );
        assert_eq!(
            d(r#"{"type":4,"opts":{"rooms":[],"except":[]},"close":true}"#).unwrap(),
            Request::Disconnect {
                nsp: "/".into(),
                target: Target::default()
            }
        );
        assert_eq!(
            d(r#"{"uid":"emitter","type":6,"data":["hi",1]}"#).unwrap(),
            Request::ServerSideEmit { nsp: "/".into() }
        );
        assert_eq!(d(r#"{"type":5}"#).unwrap_err().0, Drop::UnsupportedType);
        assert_eq!(d("not json").unwrap_err().0, Drop::Malformed);
    }

    #[test]
    fn rejects() {
        let bad = |ch: &str, p: &[u8]| decode("k", ch, p).unwrap_err().0;
        assert_eq!(bad("k#/#", b"\xc1garbage"), Drop::Malformed);
        assert_eq!(bad("k#/#", b""), Drop::Malformed);
        assert_eq!(bad("k#nons", &hex(TO_GENERAL)), Drop::Malformed);
        assert_eq!(bad("other#/#", &hex(TO_GENERAL)), Drop::Malformed);
        // A key prefix of another: "k" does not take "kk#/#".
        assert_eq!(bad("kk#/#", &hex(TO_GENERAL)), Drop::Malformed);
        let emit = |ev: &str, rooms: &[&str]| {
            rmp_serde::to_vec_named(&(
                "emitter",
                json!({"type": 2, "data": [ev, 1], "nsp": "/"}),
                json!({"rooms": rooms, "except": [], "flags": {}}),
            ))
            .unwrap()
        };
        assert_eq!(bad("k#/#", &emit("disconnect", &[])), Drop::InvalidEvent);
        assert_eq!(bad("k#/#", &emit("", &[])), Drop::InvalidEvent);
        assert_eq!(bad("k#/#", &emit("ok", &["bad room"])), Drop::InvalidRoom);
        assert_eq!(bad("k#/#", &emit("ok", &["user:"])), Drop::InvalidRoom);
        assert!(decode("k", "k#/#", &emit("ok", &["user:alice", "r"])).is_ok());
    }

    #[test]
    fn socket_ids_address_their_socket_and_the_room_of_that_name() {
        let d = |p: &str| decode("socket.io", "socket.io-request#/#", p.as_bytes());
        let sid: Sid = "AbCdEfGh_-123456".parse().unwrap();
        assert_eq!(
            d(r#"{"type":4,"opts":{"rooms":["AbCdEfGh_-123456"],"except":["general"]}}"#).unwrap(),
            Request::Disconnect {
                nsp: "/".into(),
                target: Target {
                    rooms: vec!["room:AbCdEfGh_-123456".into()],
                    except: vec!["room:general".into()],
                    sockets: vec![sid],
                    except_sockets: vec![],
                }
            }
        );
        // Rooms to join are rooms, whatever their shape.
        let Request::Join { target, rooms, .. } =
            d(r#"{"type":2,"opts":{"rooms":[],"except":["AbCdEfGh_-123456"]},"rooms":["AbCdEfGh_-123456"]}"#)
                .unwrap()
        else {
            panic!("a join");
        };
        assert_eq!(rooms, ["room:AbCdEfGh_-123456"]);
        assert_eq!(target.except_sockets, [sid]);
        assert!(target.sockets.is_empty());
        // Not socket ids: other lengths, other characters, user rooms.
        for name in [
            "general",
            "AbCdEfGh_-12345",
            "AbCdEfGh.-123456",
            "user:abcdefghijk",
        ] {
            assert!(socket_id(name).is_none(), "{name}");
        }
    }

    #[test]
    fn room_names() {
        assert_eq!(map_room("general").unwrap(), "room:general");
        assert_eq!(map_room("user:alice").unwrap(), "user:alice");
        assert_eq!(map_room("room:general").unwrap(), "room:room:general");
        assert!(map_room("a b").is_err());
    }

    #[test]
    fn glob() {
        assert_eq!(glob_escape("socket.io"), "socket.io");
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}
