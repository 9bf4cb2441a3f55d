//! The edge's side of recovery: for each Engine.IO session, the sockets
//! that can be recovered, the `pid` their CONNECT reply must carry, and
//! the offsets written to them. The accept loop (websocket frames) and the
//! long-polling answers ask [`Frames::outgoing`] about every packet they
//! send; it adds the pid, notes offsets, and drops a message the socket
//! was already sent (a replayed one that also came live, or the reverse).

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::wire::{self, Packet};
use super::written::Written;

/// One recoverable socket, as the edge sees it.
#[derive(Debug, Default)]
pub struct SocketFrames {
    /// Goes into the CONNECT reply, once.
    pid: Option<String>,
    pub written: Written,
}

type Sockets = Arc<Mutex<ByNamespace>>;

/// A session's recoverable sockets, one per namespace, usually one in all:
/// a list sized to fit rather than a hash map, whose least allocation (four
/// buckets) cost ~0.4 KiB more per connection.
#[derive(Debug, Default)]
struct ByNamespace(Vec<(Box<str>, SocketFrames)>);

impl ByNamespace {
    fn insert(&mut self, nsp: &str, socket: SocketFrames) {
        match self.get_mut(nsp) {
            Some(s) => *s = socket,
            None => {
                self.0.reserve_exact(1);
                self.0.push((nsp.into(), socket));
            }
        }
    }

    fn get_mut(&mut self, nsp: &str) -> Option<&mut SocketFrames> {
        self.0.iter_mut().find(|(n, _)| &**n == nsp).map(|(_, s)| s)
    }

    fn remove(&mut self, nsp: &str) -> Option<SocketFrames> {
        let at = self.0.iter().position(|(n, _)| &**n == nsp)?;
        let (_, socket) = self.0.swap_remove(at);
        self.0.shrink_to_fit();
        Some(socket)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What to do with one outgoing packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    /// Not sent: the socket has it already.
    Drop,
    /// Sent as these bytes instead.
    Replace(Vec<u8>),
}

/// How a packet is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// An Engine.IO text packet (`4…` for Socket.IO).
    Text,
    /// A msgpack Socket.IO packet.
    Msgpack,
}

/// Every recoverable socket, by Engine.IO session id and namespace.
#[derive(Debug, Default)]
pub struct Frames {
    by_sid: DashMap<String, Sockets>,
}

impl Frames {
    /// A socket is about to be connected: its CONNECT reply gets `pid`, and
    /// it starts from `written`.
    pub fn register(&self, sid: &str, nsp: &str, pid: String, written: Written) {
        // Inserted while the entry is held: a `take` of another namespace
        // of this session cannot remove the map in between.
        let entry = self.by_sid.entry(sid.to_string()).or_default();
        let mut sockets = entry.lock().unwrap_or_else(|p| p.into_inner());
        sockets.insert(
            nsp,
            SocketFrames {
                pid: Some(pid),
                written,
            },
        );
    }

    /// Changes what is kept of a socket (joins, leaves).
    pub fn update<R>(&self, sid: &str, nsp: &str, f: impl FnOnce(&mut Written) -> R) -> Option<R> {
        let sockets = self.by_sid.get(sid)?.clone();
        let mut sockets = sockets.lock().unwrap_or_else(|p| p.into_inner());
        sockets.get_mut(nsp).map(|s| f(&mut s.written))
    }

    /// The socket is gone: what it was sent.
    pub fn take(&self, sid: &str, nsp: &str) -> Option<Written> {
        let sockets = self.by_sid.get(sid)?.clone();
        let mut guard = sockets.lock().unwrap_or_else(|p| p.into_inner());
        let taken = guard.remove(nsp).map(|s| s.written);
        if guard.is_empty() {
            drop(guard);
            self.by_sid
                .remove_if(sid, |_, s| s.lock().map(|s| s.is_empty()).unwrap_or(true));
        }
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.by_sid.is_empty()
    }

    /// Decides about one packet written to session `sid`.
    pub fn outgoing(&self, sid: &str, encoding: Encoding, p: &[u8]) -> Action {
        let packet = match encoding {
            Encoding::Text => wire::classify_text(p),
            Encoding::Msgpack => wire::classify_msgpack(p),
        };
        let nsp = match &packet {
            Packet::Connect(nsp) | Packet::Event(nsp, _) => *nsp,
            _ => return Action::Pass,
        };
        let Some(sockets) = self.by_sid.get(sid).map(|s| s.clone()) else {
            return Action::Pass;
        };
        let mut sockets = sockets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(socket) = sockets.get_mut(nsp) else {
            return Action::Pass;
        };
        match packet {
            Packet::Connect(_) => {
                let Some(pid) = socket.pid.take() else {
                    return Action::Pass;
                };
                match encoding {
                    Encoding::Text => Action::Replace(wire::connect_with_pid_text(p, &pid)),
                    Encoding::Msgpack => wire::connect_with_pid_msgpack(p, &pid)
                        .map(Action::Replace)
                        .unwrap_or(Action::Pass),
                }
            }
            Packet::Event(_, o) if socket.written.seen(&o) => {
                crate::metrics::recovery_duplicate_dropped();
                Action::Drop
            }
            Packet::Event(_, o) => {
                socket.written.record(o);
                Action::Pass
            }
            _ => Action::Pass,
        }
    }

    /// The Engine.IO session id an open packet announces (websocket
    /// connections that did not start as long-polling learn it so).
    pub fn open_sid(p: &[u8]) -> Option<String> {
        match wire::classify_text(p) {
            Packet::Open(sid) => Some(sid),
            _ => None,
        }
    }
}

/// Applies [`Frames::outgoing`] to each packet of a long-polling answer
/// (packets separated by 0x1e; `b…` is a base64 binary packet). `None`
/// when nothing changes.
pub fn polling_body(frames: &Frames, sid: &str, body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut changed = false;
    let mut out: Vec<Vec<u8>> = Vec::new();
    for packet in body.split(|&b| b == 0x1e) {
        let action = match packet.strip_prefix(b"b") {
            Some(enc) => match b64.decode(enc) {
                Ok(bin) => match frames.outgoing(sid, Encoding::Msgpack, &bin) {
                    Action::Replace(new) => {
                        let mut p = b"b".to_vec();
                        p.extend(b64.encode(new).into_bytes());
                        Action::Replace(p)
                    }
                    other => other,
                },
                Err(_) => Action::Pass,
            },
            None => frames.outgoing(sid, Encoding::Text, packet),
        };
        match action {
            Action::Pass => out.push(packet.to_vec()),
            Action::Drop => changed = true,
            Action::Replace(p) => {
                changed = true;
                out.push(p);
            }
        }
    }
    if !changed {
        return None;
    }
    if out.is_empty() {
        // A polling answer cannot be empty: an Engine.IO noop.
        return Some(b"6".to_vec());
    }
    Some(out.join(&0x1e))
}

#[cfg(test)]
mod tests {
    use super::super::offset::Offset;
    use super::*;

    #[test]
    fn pid_once_offsets_noted_duplicates_dropped() {
        let f = Frames::default();
        let o = Offset::new("/", "r", 5);
        let ev = format!(r#"42["chat:message",{{}},"{}"]"#, o.encode());
        assert_eq!(f.outgoing("S", Encoding::Text, ev.as_bytes()), Action::Pass);
        f.register("S", "/", "P".into(), Written::default());
        assert_eq!(
            f.outgoing("S", Encoding::Text, br#"40{"sid":"S"}"#),
            Action::Replace(br#"40{"sid":"S","pid":"P"}"#.to_vec())
        );
        assert_eq!(
            f.outgoing("S", Encoding::Text, br#"40{"sid":"S"}"#),
            Action::Pass
        );
        // Another namespace of the session is not recoverable here.
        assert_eq!(
            f.outgoing("S", Encoding::Text, br#"40/x,{"sid":"S"}"#),
            Action::Pass
        );
        assert_eq!(f.outgoing("S", Encoding::Text, ev.as_bytes()), Action::Pass);
        assert_eq!(f.outgoing("S", Encoding::Text, ev.as_bytes()), Action::Drop);
        let w = f.take("S", "/").unwrap();
        assert_eq!(w.tail.len(), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn namespaces_of_one_session_are_kept_apart() {
        let f = Frames::default();
        f.register("S", "/", "P1".into(), Written::default());
        f.register("S", "/t-a", "P2".into(), Written::default());
        assert_eq!(
            f.outgoing("S", Encoding::Text, br#"40/t-a,{"sid":"S2"}"#),
            Action::Replace(br#"40/t-a,{"sid":"S2","pid":"P2"}"#.to_vec())
        );
        // Registering a namespace again replaces its entry.
        f.register("S", "/", "P3".into(), Written::default());
        assert_eq!(
            f.outgoing("S", Encoding::Text, br#"40{"sid":"S1"}"#),
            Action::Replace(br#"40{"sid":"S1","pid":"P3"}"#.to_vec())
        );
        assert!(f.take("S", "/").is_some());
        assert!(f.take("S", "/").is_none());
        assert!(!f.is_empty(), "the other namespace went too");
        assert!(f.take("S", "/t-a").is_some());
        assert!(f.is_empty());
    }

    #[test]
    fn polling_bodies() {
        let f = Frames::default();
        f.register("S", "/", "P".into(), Written::default());
        let o = Offset::new("/", "r", 5).encode();
        let body = format!("40{{\"sid\":\"S\"}}\x1e42[\"chat:message\",{{}},\"{o}\"]\x1e2");
        let out = polling_body(&f, "S", body.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("40{{\"sid\":\"S\",\"pid\":\"P\"}}\x1e42[\"chat:message\",{{}},\"{o}\"]\x1e2")
        );
        let only = format!("42[\"chat:message\",{{}},\"{o}\"]");
        assert_eq!(polling_body(&f, "S", only.as_bytes()).unwrap(), b"6");
        assert_eq!(polling_body(&f, "S", b"2"), None);
    }
}
