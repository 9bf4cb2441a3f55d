//! Event names that carry JSON escapes (`"a\"b"`, `"\u00e9"`, `"a\\b"`).
//!
//! socketioxide reads an event's name as a borrowed `&str`, which cannot
//! hold an unescaped copy, so such a packet fails to parse and socketioxide
//! closes the whole connection. Node's server accepts these names. Here the
//! packet is rewritten on its way in, byte for byte and in place: from the
//! first backslash of the name to its closing quote, every byte becomes DEL
//! (0x7f). The name then parses, matches no handler, and the client gets an
//! `invalid_payload` error ack (see [`is_marked`]) instead of losing its
//! connection. Names without escapes (raw UTF-8 such as `"é"`, which is what
//! socket.io-client sends) pass untouched.
//!
//! The rewrite keeps the length, so it works on a websocket stream as the
//! bytes pass (no buffering, O(1) state) and on long-polling bodies alike.
//! Pure code: bytes in, bytes out.
//!
//! With `--parser msgpack` nothing here applies and nothing is changed:
//! names are not escaped, websocket binary frames are never scanned, and a
//! polling packet in base64 (`b…`) ends the scan at its first byte.

/// What an escaped part of a name is replaced with.
pub const MARK: u8 = 0x7f;

/// True for a name that was rewritten because it had escapes.
pub fn is_marked(name: &str) -> bool {
    name.as_bytes().contains(&MARK)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Engine.IO packet type: `4` (message).
    EngineType,
    /// Socket.IO packet type: `2` (event) or `5` (binary event).
    SocketType,
    /// A binary event's attachment count, up to `-`.
    Attachments,
    /// A namespace (`/…,`), an ack id, or the array.
    AfterType,
    Namespace,
    AckId,
    /// Inside the array, before the name's opening quote.
    BeforeName,
    /// Inside the name; `escaped` once a backslash was seen, `pending` right
    /// after a backslash (the next byte is escaped, even a quote).
    Name {
        escaped: bool,
        pending: bool,
    },
    /// Not an event, or past its name: nothing more to do.
    Done,
}

/// Follows one Engine.IO text packet from its first byte.
#[derive(Debug, Clone)]
pub struct NameScanner {
    state: State,
}

impl Default for NameScanner {
    fn default() -> Self {
        NameScanner {
            state: State::EngineType,
        }
    }
}

impl NameScanner {
    /// True once the rest of the packet needs no looking at.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the packet's next byte; gives the byte to pass on in its place.
    pub fn feed(&mut self, b: u8) -> u8 {
        use State::*;
        self.state = match (self.state, b) {
            (EngineType, b'4') => SocketType,
            (SocketType, b'2') => AfterType,
            (SocketType, b'5') => Attachments,
            (Attachments, b'0'..=b'9') => Attachments,
            (Attachments, b'-') => AfterType,
            (AfterType, b'/') => Namespace,
            (AfterType | AckId, b'0'..=b'9') => AckId,
            (AfterType | AckId, b'[') => BeforeName,
            (Namespace, b',') => AfterType,
            (Namespace, _) => Namespace,
            (BeforeName, b' ' | b'\t' | b'\n' | b'\r') => BeforeName,
            (BeforeName, b'"') => Name {
                escaped: false,
                pending: false,
            },
            (Name { pending: true, .. }, _) => {
                self.state = Name {
                    escaped: true,
                    pending: false,
                };
                return MARK;
            }
            (Name { .. }, b'\\') => {
                self.state = Name {
                    escaped: true,
                    pending: true,
                };
                return MARK;
            }
            (Name { .. }, b'"') => Done,
            (Name { escaped: true, .. }, _) => return MARK,
            (Name { .. }, _) => self.state,
            _ => Done,
        };
        b
    }
}

/// Rewrites every packet of a long-polling body (packets are separated by
/// the record separator 0x1e) in place.
pub fn rewrite_polling_body(body: &mut [u8]) {
    if !body.contains(&b'\\') {
        return;
    }
    let mut scanner = NameScanner::default();
    for b in body.iter_mut() {
        if *b == 0x1e {
            scanner = NameScanner::default();
        } else if !scanner.is_done() {
            *b = scanner.feed(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(packet: &str) -> String {
        let mut bytes = packet.as_bytes().to_vec();
        rewrite_polling_body(&mut bytes);
        String::from_utf8(bytes).expect("still UTF-8")
    }

    /// The name socketioxide's parser would read.
    fn name_of(packet: &str) -> Option<String> {
        let start = packet.find('[')?;
        let v: serde_json::Value = serde_json::from_str(&packet[start..]).ok()?;
        // A borrowed read, as socketioxide does it.
        let first = v.get(0)?.to_string();
        let s: &str = serde_json::from_str(&first).ok()?;
        Some(s.to_string())
    }

    #[test]
    fn plain_names_pass_untouched() {
        for p in [
            r#"42["chat:send",{"text":"a\"b"}]"#,
            r#"42/acme,17["é ünï",{}]"#,
            r#"451-["up",{"_placeholder":true,"num":0}]"#,
            r#"43["x\"y"]"#, // an ack has no name
            r#"40{"token":"a\\b"}"#,
            "3",
        ] {
            assert_eq!(rewrite(p), p);
        }
    }

    #[test]
    fn escaped_names_become_marked_names_of_the_same_length() {
        for (p, prefix) in [
            (r#"42["a\"b",{"x":1}]"#, "a"),
            (r#"42["\u00e9"]"#, ""),
            (r#"4212["ab\\",1]"#, "ab"),
            (r#"42/t-1,3[ "x\n\"y\\"]"#, "x"),
            (
                r#"452-/n,9["\ud83d\ude00",{"_placeholder":true,"num":0}]"#,
                "",
            ),
        ] {
            let out = rewrite(p);
            assert_eq!(out.len(), p.len());
            let name = name_of(&out).unwrap_or_else(|| panic!("{out} parses"));
            assert!(
                name.starts_with(prefix) && is_marked(&name),
                "{p} -> {name:?}"
            );
            assert!(name[prefix.len()..].bytes().all(|b| b == MARK));
            // The rest of the packet is as it was.
            assert_eq!(args_of(&out), args_of(p));
        }
    }

    /// The event's arguments after its name.
    fn args_of(p: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&p[p.find('[').unwrap()..]).unwrap();
        v.as_array().unwrap()[1..].to_vec()
    }

    #[test]
    fn every_packet_of_a_polling_body() {
        let body = "42[\"a\\\"b\"]\u{1e}42[\"ok\"]\u{1e}42[\"\\u00e9\"]";
        let out = rewrite(body);
        let names: Vec<_> = out.split('\u{1e}').map(|p| name_of(p).unwrap()).collect();
        assert_eq!(names[1], "ok");
        assert!(is_marked(&names[0]) && is_marked(&names[2]));
    }

    #[test]
    fn msgpack_packets_pass_untouched() {
        // With `--parser msgpack` a polling body carries base64 packets
        // (`b…`); websocket binary frames are never scanned (`ws_frames`).
        let body = "bhKR0eXBlAqNuc3ChLw==\u{1e}42[\"a\\\"b\"]\u{1e}bg6R0eXBlAg==";
        let out = rewrite(body);
        let packets: Vec<_> = out.split('\u{1e}').collect();
        assert_eq!(packets[0], "bhKR0eXBlAqNuc3ChLw==");
        assert_eq!(packets[2], "bg6R0eXBlAg==");
        assert!(is_marked(&name_of(packets[1]).unwrap()));
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let p = r#"42/n,5["q\"\\\u00e9z",{"t":"\""}]"#;
        let mut s = NameScanner::default();
        let streamed: Vec<u8> = p
            .bytes()
            .map(|b| if s.is_done() { b } else { s.feed(b) })
            .collect();
        assert_eq!(String::from_utf8(streamed).unwrap(), rewrite(p));
    }

    #[test]
    fn marks_are_seen_and_scanning_stops_after_the_name() {
        assert!(is_marked("a\u{7f}b"));
        assert!(!is_marked("chat:send"));
        let scan = |packet: &[u8]| {
            let mut s = NameScanner::default();
            for &b in packet {
                s.feed(b);
            }
            s.is_done()
        };
        // The payload after the name is never looked at.
        assert!(scan(br#"42["chat:send","#));
        assert!(!scan(br#"42["chat"#));
    }
}
