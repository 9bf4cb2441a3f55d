//! The offset that ends every recoverable event (`chat:message`): it names
//! one message by its room and its `seq`, so that a client coming back says
//! exactly which message it saw last.
//!
//! Format: `{seq:x}.{room:016x}`, e.g. `1f.9c0e4b1d2a3f5e60`, where `room`
//! is a 64-bit FNV-1a hash of the namespace and the room id. The hash keeps
//! offsets short and of one shape whatever the room's name; two rooms of one
//! socket sharing a hash would need 2^32 rooms to be likely, and a collision
//! can only make a recovery fail (the offset is then unknown), never deliver
//! another room's messages (replay reads the rooms of the session).
//! Offsets are not secret: a forged one is refused unless it is one the
//! session itself was sent.

/// One message: its room (as a hash) and its place in the room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Offset {
    pub room: u64,
    pub seq: u64,
}

/// The longest offset: 16 hex digits of seq, a dot, 16 of room.
pub const MAX_LEN: usize = 33;
/// The shortest: one digit of seq.
pub const MIN_LEN: usize = 18;

/// The hash that names a room in offsets (stable across nodes and restarts).
pub fn room_tag(namespace: &str, room_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0u8]).chain(room_id.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Offset {
    pub fn new(namespace: &str, room_id: &str, seq: u64) -> Self {
        Offset {
            room: room_tag(namespace, room_id),
            seq,
        }
    }

    pub fn encode(&self) -> String {
        format!("{:x}.{:016x}", self.seq, self.room)
    }

    /// Reads an offset back; anything else (other lengths, upper case,
    /// leading zeros in seq, other characters) is `None`.
    pub fn parse(s: &[u8]) -> Option<Offset> {
        if s.len() < MIN_LEN || s.len() > MAX_LEN {
            return None;
        }
        let dot = s.len() - 17;
        if s[dot] != b'.' || (s[0] == b'0' && dot > 1) {
            return None;
        }
        let seq = hex(&s[..dot])?;
        let room = hex(&s[dot + 1..])?;
        Some(Offset { room, seq })
    }
}

fn hex(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for seq in [0, 1, 15, 16, 0xdead_beef, u64::MAX] {
            let o = Offset::new("/", "lobby", seq);
            let s = o.encode();
            assert!(s.len() >= MIN_LEN && s.len() <= MAX_LEN, "{s}");
            assert_eq!(Offset::parse(s.as_bytes()), Some(o), "{s}");
        }
    }

    #[test]
    fn rooms_and_namespaces_differ() {
        assert_ne!(room_tag("/", "a"), room_tag("/", "b"));
        assert_ne!(room_tag("/", "a"), room_tag("/t", "a"));
        // The separator keeps "/a"+"b" apart from "/"+"ab".
        assert_ne!(room_tag("/a", "b"), room_tag("/", "ab"));
        assert_eq!(room_tag("/", "a"), room_tag("/", "a"));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "1",
            "1.",
            "1.123",
            "1.0123456789abcdeF",
            "01.0123456789abcdef",
            "x.0123456789abcdef",
            "1-0123456789abcdef",
            "1.0123456789abcdef0",
            "10000000000000000.0123456789abcdef",
            "1.0123456789abcde\u{e9}",
        ] {
            assert_eq!(Offset::parse(bad.as_bytes()), None, "{bad}");
        }
        assert!(Offset::parse(b"0.0123456789abcdef").is_some());
    }
}
