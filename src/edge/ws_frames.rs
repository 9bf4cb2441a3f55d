//! Following the frames of one direction of a websocket byte stream, without
//! buffering them: only each frame's header is read (RFC 6455 §5.2), the
//! payload is counted and skipped.
//!
//! The accept loop ([`crate::edge::serve`]) uses one tracker per direction. On the
//! read side it refuses a message as soon as a frame header announces more
//! than the limit, before any of the payload is buffered; on the write side
//! it tells where one frame ends, so a close frame can be put in between two
//! frames. Pure code: bytes in, verdicts out.

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Every byte belongs to frames within the limit.
    Fine,
    /// The frame whose header starts at this offset of the scanned buffer
    /// (0 when the header began in an earlier buffer) makes its message
    /// larger than the limit.
    TooBig { at: usize },
    /// A text Socket.IO packet (an Engine.IO `4` message) on a server that
    /// speaks msgpack (see [`crate::edge::parser_mismatch`]); its frame's
    /// header starts at this offset (0 when it began in an earlier buffer).
    TextPacket { at: usize },
}

/// The state of one direction of a websocket stream.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    header: [u8; 14],
    header_len: usize,
    /// Where the header being read started in the current buffer.
    header_start: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Payload bytes of the current (possibly fragmented) data message.
    message_len: u64,
    /// Write side: note the acks that go out (see [`FrameTracker::take_written_acks`]).
    track_acks: bool,
    /// The start of the current text or binary frame's payload, while
    /// tracking acks.
    prefix: Vec<u8>,
    /// The last bytes of the current binary frame: a msgpack ack ends with its id.
    tail: Vec<u8>,
    sniffing: bool,
    /// The current frame is a binary one (msgpack parser).
    sniffing_binary: bool,
    /// The current frame's payload length.
    frame_len: u64,
    written_acks: Vec<Vec<AckKey>>,
    /// Read side: rewrite escaped event names (see [`crate::edge::escaped_names`]).
    rewrite_names: bool,
    /// The current frame's mask key and how much of its payload has passed.
    mask: [u8; 4],
    payload_pos: u64,
    /// The name scanner of the current text message, while it has work left.
    names: Option<NameScanner>,
    /// The current frame belongs to a text message.
    names_frame: bool,
    /// Bytes of the last scanned buffer to replace: (offset, new byte).
    patches: Vec<(usize, u8)>,
    /// Read side with the msgpack parser: refuse text Socket.IO packets.
    refuse_text_packets: bool,
    /// The current frame is a text frame whose first byte is still to check,
    /// and where its header started.
    text_to_check: Option<usize>,
}

use crate::edge::escaped_names::NameScanner;

/// An ack packet's namespace (`None` for `/`) and id.
pub type AckKey = (Option<Box<str>>, i64);

/// How much of a frame's payload is enough to read an ack's namespace and id.
const ACK_PREFIX: usize = 160;

/// The last bytes of a msgpack ack kept: `"id"` (3 bytes) and an int (9 at most).
const ACK_TAIL: usize = 12;

/// How socketioxide's msgpack parser starts an ack packet: a map of 4
/// (`type`, `nsp`, `data`, `id`, in that order), `"type"` (its value follows).
const MSGPACK_ACK_HEAD: &[u8] = b"\x84\xa4type";

/// The namespace and id of a Socket.IO ack packet, `43[/namespace,]<id>[...`.
pub fn ack_key(payload: &[u8]) -> Option<AckKey> {
    let mut rest = payload.strip_prefix(b"43")?;
    let mut ns = None;
    if rest.first() == Some(&b'/') {
        let comma = rest.iter().position(|&b| b == b',')?;
        ns = Some(std::str::from_utf8(&rest[..comma]).ok()?.into());
        rest = &rest[comma + 1..];
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'[') {
        return None;
    }
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((ns, id))
}

/// The length of a frame header once its first two bytes are known.
pub(crate) fn header_size(b1: u8) -> usize {
    let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + masked
}

/// The payload length a complete frame header announces.
pub(crate) fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    }
}

/// The possible keys of a msgpack ack packet (`socket.io-msgpack-parser`'s
/// encoding, as socketioxide writes it: `{type: 3, nsp, data, id}`), from
/// the first bytes of the payload (`prefix`), its last bytes (`tail`, up to
/// [`ACK_TAIL`]) and its length. The id comes last, after the data, so it
/// is read backwards. Its encoding could in principle also be read with a
/// shorter int (inside a large id's bytes) or a longer one (starting in the
/// data), so every reading is given, the longest first; the caller removes
/// the first one it expects. That is the real one unless a client picks two
/// ids in flight that overlap like this (ids of 2^31 and more, or data
/// bytes that end like an id): then one entry stays until the connection
/// closes, and the frame still counts once.
pub fn msgpack_ack_keys(prefix: &[u8], tail: &[u8], len: u64) -> Vec<AckKey> {
    let mut keys = Vec::new();
    let Some(rest) = prefix.strip_prefix(MSGPACK_ACK_HEAD) else {
        return keys;
    };
    // An ack (3) or a binary ack (6).
    let Some(rest) = rest
        .strip_prefix(b"\x03")
        .or_else(|| rest.strip_prefix(b"\x06"))
        .and_then(|r| r.strip_prefix(b"\xa3nsp"))
    else {
        return keys;
    };
    let (ns_len, rest) = match rest {
        [b @ 0xa0..=0xbf, r @ ..] => (usize::from(b & 0x1f), r),
        [0xd9, n, r @ ..] => (usize::from(*n), r),
        _ => return keys,
    };
    let Some(ns) = rest.get(..ns_len).and_then(|n| std::str::from_utf8(n).ok()) else {
        return keys;
    };
    let rest = &rest[ns_len..];
    if !rest.starts_with(b"\xa4data") {
        return keys;
    }
    // Bytes before the data, which takes one at least.
    let head = (prefix.len() - rest.len() + 5) as u64 + 1;
    let ns: Option<Box<str>> = (ns != "/").then(|| ns.into());
    for int_len in [9usize, 5, 3, 2, 1] {
        if len < head + 3 + int_len as u64 || tail.len() < 3 + int_len {
            continue;
        }
        let end = &tail[tail.len() - 3 - int_len..];
        if &end[..3] != b"\xa2id" {
            continue;
        }
        if let Some(id) = msgpack_int(&end[3..]) {
            keys.push((ns.clone(), id));
        }
    }
    keys
}

/// A msgpack integer that takes exactly `b.len()` bytes.
fn msgpack_int(b: &[u8]) -> Option<i64> {
    let be = |n: usize| {
        b[1..]
            .iter()
            .take(n)
            .fold(0u64, |a, &x| a << 8 | u64::from(x))
    };
    Some(match (b.len(), b[0]) {
        (1, x @ 0x00..=0x7f) => i64::from(x),
        (1, x @ 0xe0..=0xff) => i64::from(x as i8),
        (2, 0xcc) => be(1) as i64,
        (2, 0xd0) => i64::from(b[1] as i8),
        (3, 0xcd) => be(2) as i64,
        (3, 0xd1) => i64::from(be(2) as u16 as i16),
        (5, 0xce) => be(4) as i64,
        (5, 0xd2) => i64::from(be(4) as u32 as i32),
        (9, 0xcf) => i64::try_from(be(8)).ok()?,
        (9, 0xd3) => be(8) as i64,
        _ => return None,
    })
}

/// Whether a payload starting with `prefix` may still be an ack packet.
fn could_be_ack(prefix: &[u8], binary: bool) -> bool {
    if binary {
        let n = prefix.len().min(MSGPACK_ACK_HEAD.len());
        MSGPACK_ACK_HEAD.starts_with(&prefix[..n]) && matches!(prefix.get(n), None | Some(3 | 6))
    } else {
        b"43".starts_with(&prefix[..prefix.len().min(2)])
    }
}

impl FrameTracker {
    /// A tracker for the server's own frames that notes the acks written
    /// (see [`FrameTracker::take_written_acks`]).
    pub fn tracking_acks() -> Self {
        FrameTracker {
            track_acks: true,
            ..Default::default()
        }
    }

    /// A tracker for the client's frames that rewrites escaped event names
    /// (see [`FrameTracker::take_patches`]).
    pub fn rewriting_names() -> Self {
        FrameTracker {
            rewrite_names: true,
            ..Default::default()
        }
    }

    /// The same, for a server that speaks msgpack: text Socket.IO packets
    /// are refused ([`Scan::TextPacket`]).
    pub fn rewriting_names_refusing_text() -> Self {
        FrameTracker {
            refuse_text_packets: true,
            ..Self::rewriting_names()
        }
    }

    /// The bytes of the buffer last scanned that must be replaced before it
    /// is passed on: (offset, new byte), already masked.
    pub fn take_patches(&mut self) -> Vec<(usize, u8)> {
        std::mem::take(&mut self.patches)
    }

    /// Acks whose frame was written completely since the last call: for each
    /// frame, its possible keys (one for a JSON ack; see [`msgpack_ack_keys`]).
    pub fn take_written_acks(&mut self) -> Vec<Vec<AckKey>> {
        std::mem::take(&mut self.written_acks)
    }

    /// True between two frames: the next byte is the start of a header.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }

    /// Bytes left in the current frame, when its header is complete (`None`
    /// in the middle of a header).
    pub fn bytes_to_boundary(&self) -> Option<u64> {
        (self.header_len == 0).then_some(self.remaining)
    }

    /// Follows `buf`, checking that no data message exceeds `max` bytes
    /// (control frames are capped at 125 bytes by the protocol itself).
    pub fn scan(&mut self, buf: &[u8], max: u64) -> Scan {
        let mut i = 0;
        if self.header_len > 0 {
            self.header_start = 0;
        }
        if self.text_to_check.is_some() {
            self.text_to_check = Some(0);
        }
        while i < buf.len() {
            if self.remaining > 0 {
                if let Some(at) = self.text_to_check.take()
                    && buf[i] ^ self.mask[0] == b'4'
                {
                    return Scan::TextPacket { at };
                }
                let skip = self.remaining.min((buf.len() - i) as u64);
                if self.names_frame
                    && let Some(names) = self.names.take()
                {
                    self.patch_names(names, &buf[i..i + skip as usize], i);
                }
                if self.sniffing && self.prefix.len() < ACK_PREFIX {
                    let take = (skip as usize).min(ACK_PREFIX - self.prefix.len());
                    self.prefix.extend_from_slice(&buf[i..i + take]);
                    // Broadcasts (`42…`) stop here: only acks are looked into.
                    if !could_be_ack(&self.prefix, self.sniffing_binary) {
                        self.sniffing = false;
                    }
                }
                if self.sniffing && self.sniffing_binary {
                    let chunk = &buf[i..i + skip as usize];
                    self.tail
                        .extend_from_slice(&chunk[chunk.len().saturating_sub(ACK_TAIL)..]);
                    let excess = self.tail.len().saturating_sub(ACK_TAIL);
                    self.tail.drain(..excess);
                }
                self.remaining -= skip;
                self.payload_pos += skip;
                i += skip as usize;
                if self.remaining == 0 && self.sniffing {
                    self.sniffing = false;
                    let keys = if self.sniffing_binary {
                        msgpack_ack_keys(&self.prefix, &self.tail, self.frame_len)
                    } else {
                        ack_key(&self.prefix).into_iter().collect()
                    };
                    if !keys.is_empty() {
                        self.written_acks.push(keys);
                    }
                }
                continue;
            }
            if self.header_len == 0 {
                self.header_start = i;
            }
            self.header[self.header_len] = buf[i];
            self.header_len += 1;
            i += 1;
            if self.header_len < 2 || self.header_len < header_size(self.header[1]) {
                continue;
            }
            let (opcode, len) = self.take_header();
            let data = opcode <= 2; // continuation, text, binary
            if data {
                self.message_len = if opcode == 0 {
                    self.message_len.saturating_add(len)
                } else {
                    len
                };
            }
            if (data && self.message_len > max) || (!data && len > 125) {
                return Scan::TooBig {
                    at: self.header_start,
                };
            }
            self.remaining = len;
            self.payload_pos = 0;
            self.text_to_check =
                (self.refuse_text_packets && opcode == 1 && len > 0).then_some(self.header_start);
            self.names_frame = self.rewrite_names && (opcode == 0 || opcode == 1);
            if (self.rewrite_names || self.refuse_text_packets) && data {
                self.mask = [0; 4];
                if self.header[1] & 0x80 != 0 {
                    let at = header_size(self.header[1]) - 4;
                    self.mask.copy_from_slice(&self.header[at..at + 4]);
                }
                match opcode {
                    1 => self.names = Some(NameScanner::default()),
                    2 => self.names = None,
                    _ => {} // a continuation goes on with its message's scanner
                }
            }
            // A whole text (JSON parser) or binary (msgpack parser) message
            // in one frame, as socketioxide writes them.
            self.sniffing = self.track_acks
                && (opcode == 1 || opcode == 2)
                && self.header[0] & 0x80 != 0
                && len > 0;
            self.sniffing_binary = opcode == 2;
            self.frame_len = len;
            self.prefix.clear();
            self.tail.clear();
        }
        Scan::Fine
    }

    /// Feeds the name scanner with `payload` (masked bytes of the current
    /// frame, at `offset` in the scanned buffer) and notes the bytes it changes.
    fn patch_names(&mut self, mut names: NameScanner, payload: &[u8], offset: usize) {
        for (k, &b) in payload.iter().enumerate() {
            if names.is_done() {
                self.names = None;
                return;
            }
            let mask = self.mask[((self.payload_pos + k as u64) % 4) as usize];
            let plain = b ^ mask;
            let out = names.feed(plain);
            if out != plain {
                self.patches.push((offset + k, out ^ mask));
            }
        }
        self.names = (!names.is_done()).then_some(names);
    }

    /// Decodes the completed header, resetting it; returns (opcode, payload length).
    fn take_header(&mut self) -> (u8, u64) {
        let h = &self.header;
        let opcode = h[0] & 0x0f;
        let len = payload_len(h);
        self.header_len = 0;
        (opcode, len)
    }
}

/// A close frame as the server sends it (unmasked): `code` and a short reason.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    // Control frames carry at most 125 bytes: 2 for the code, 123 of reason.
    let mut reason = &reason.as_bytes()[..reason.len().min(123)];
    while std::str::from_utf8(reason).is_err() {
        reason = &reason[..reason.len() - 1];
    }
    let mut out = Vec::with_capacity(4 + reason.len());
    out.push(0x88);
    out.push((2 + reason.len()) as u8);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// The close code for a message over the size limit (RFC 6455 §7.4.1).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The close code for a connection ended by the server's policy (slow
/// consumer, and the like); the reason says which.
pub const CLOSE_POLICY: u16 = 1008;

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame (masked) header for `len` bytes of `opcode`.
    fn client_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u16::MAX as u64 {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = client_header(fin, opcode, len as u64);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn small_frames_pass_in_any_split() {
        let mut stream = frame(true, 1, 10);
        stream.extend(frame(true, 2, 300));
        stream.extend(frame(true, 9, 4)); // ping
        stream.extend(frame(true, 1, 70_000));
        for chunk in [1, 3, 7, 64, 1000, stream.len()] {
            let mut t = FrameTracker::default();
            for part in stream.chunks(chunk) {
                assert_eq!(t.scan(part, 100_000), Scan::Fine, "chunk {chunk}");
            }
            assert!(t.at_boundary());
        }
    }

    #[test]
    fn refuses_from_the_header_alone() {
        let mut t = FrameTracker::default();
        let mut buf = frame(true, 1, 5);
        let at = buf.len();
        buf.extend(client_header(true, 2, 16 << 20)); // no payload follows
        assert_eq!(t.scan(&buf, 1_000_000), Scan::TooBig { at });
        // A 64-bit length that would overflow anything.
        let mut t = FrameTracker::default();
        assert_eq!(
            t.scan(&client_header(true, 2, u64::MAX), 1_000_000),
            Scan::TooBig { at: 0 }
        );
    }

    #[test]
    fn header_split_across_reads_is_refused_at_its_start() {
        let h = client_header(true, 1, 2_000_000);
        let mut t = FrameTracker::default();
        assert_eq!(t.scan(&h[..1], 1_000_000), Scan::Fine);
        assert_eq!(t.scan(&h[1..], 1_000_000), Scan::TooBig { at: 0 });
    }

    #[test]
    fn long_header_split_after_a_frame_is_refused_at_the_next_read_start() {
        // The header starts 16 bytes into the first read and ends in the
        // second, inside its 64-bit length: the offset must be the second
        // read's, not the 16 left over from the first.
        let big = client_header(true, 2, 5_000_000);
        assert_eq!(big.len(), 14);
        let mut first = frame(true, 1, 10);
        first.extend(&big[..5]);
        let mut t = FrameTracker::default();
        assert_eq!(t.scan(&first, 1_000_000), Scan::Fine);
        assert_eq!(t.bytes_to_boundary(), None, "in the middle of a header");
        assert_eq!(t.scan(&big[5..], 1_000_000), Scan::TooBig { at: 0 });
        // Within the limit, the length read across the split is the whole one.
        let fits = client_header(true, 2, 70_000);
        let mut first = frame(true, 1, 10);
        first.extend(&fits[..5]);
        let mut second = fits[5..].to_vec();
        second.extend(std::iter::repeat_n(b'x', 1000));
        let mut t = FrameTracker::default();
        assert_eq!(t.scan(&first, 1_000_000), Scan::Fine);
        assert_eq!(t.scan(&second, 1_000_000), Scan::Fine);
        assert_eq!(t.bytes_to_boundary(), Some(69_000));
    }

    #[test]
    fn fragments_add_up() {
        let mut t = FrameTracker::default();
        let mut buf = frame(false, 1, 600);
        buf.extend(frame(true, 9, 0)); // a ping between fragments does not count
        let at = buf.len();
        buf.extend(frame(true, 0, 600));
        assert_eq!(t.scan(&buf, 1000), Scan::TooBig { at });
        // A new message starts the count again.
        let mut t = FrameTracker::default();
        let mut buf = frame(true, 1, 600);
        buf.extend(frame(true, 1, 600));
        assert_eq!(t.scan(&buf, 1000), Scan::Fine);
    }

    #[test]
    fn oversized_control_frames_are_refused() {
        let mut t = FrameTracker::default();
        assert_eq!(
            t.scan(&client_header(true, 9, 200), 1_000_000),
            Scan::TooBig { at: 0 }
        );
    }

    #[test]
    fn boundaries_on_the_write_side() {
        // Server frames are not masked.
        let mut t = FrameTracker::default();
        let f = [0x81u8, 3, b'a', b'b', b'c'];
        assert!(t.at_boundary());
        t.scan(&f[..2], u64::MAX);
        assert!(!t.at_boundary());
        t.scan(&f[2..], u64::MAX);
        assert!(t.at_boundary());
    }

    #[test]
    fn acks_are_noted_once_written() {
        let frame = |payload: &[u8]| {
            let mut f = vec![0x81u8, payload.len() as u8];
            f.extend_from_slice(payload);
            f
        };
        let mut stream = frame(br#"4312[{"seq":1,"success":true}]"#);
        stream.extend(frame(br#"43/acme,7[{"success":true}]"#));
        stream.extend(frame(br#"42["chat:message",{"success":true}]"#));
        let last = frame(br#"439[{"success":true}]"#);
        stream.extend(&last[..last.len() - 1]);
        for chunk in [1, 2, 5, stream.len()] {
            let mut t = FrameTracker::tracking_acks();
            for part in stream.chunks(chunk) {
                t.scan(part, u64::MAX);
            }
            assert_eq!(
                t.take_written_acks(),
                vec![vec![(None, 12)], vec![(Some("/acme".into()), 7)]],
                "chunk {chunk}: the last is not whole"
            );
            t.scan(&last[last.len() - 1..], u64::MAX);
            assert_eq!(t.take_written_acks(), vec![vec![(None, 9)]]);
        }
        assert_eq!(ack_key(br#"43[{"success":true}]"#), None, "no ack id");
        assert_eq!(ack_key(br#"431x"#), None);
    }

    #[test]
    fn fragmented_acks_are_not_noted() {
        // Only a message whole in one frame is looked into (socketioxide
        // writes them so): a first fragment that reads like an ack must not
        // count as an ack written before the rest of it is.
        let first = br#"4312[{"success""#;
        let mut stream = vec![0x01, first.len() as u8]; // text, not final
        stream.extend(first);
        stream.extend([0x80, 7]); // the final continuation
        stream.extend(br#":true}]"#);
        let mut t = FrameTracker::tracking_acks();
        assert_eq!(t.scan(&stream, u64::MAX), Scan::Fine);
        assert!(t.at_boundary());
        assert_eq!(t.take_written_acks(), Vec::<Vec<AckKey>>::new());
    }

    /// An ack as socketioxide's msgpack parser writes it: `{type, nsp, data, id}`
    /// with `data` = `[{success: true}]` padded with `pad` bytes of text.
    fn msgpack_ack(ty: u8, ns: &str, id_bytes: &[u8], pad: usize) -> Vec<u8> {
        let mut p = vec![0x84, 0xa4];
        p.extend(b"type");
        p.push(ty);
        p.push(0xa3);
        p.extend(b"nsp");
        if ns.len() < 32 {
            p.push(0xa0 | ns.len() as u8); // fixstr
        } else {
            p.extend([0xd9, ns.len() as u8]); // str8
        }
        p.extend(ns.as_bytes());
        p.push(0xa4);
        p.extend(b"data");
        p.extend([0x91, 0x82, 0xa7]);
        p.extend(b"success");
        p.push(0xc3);
        p.extend([0xa1, b't', 0xda]);
        p.extend((pad as u16).to_be_bytes());
        p.extend(std::iter::repeat_n(b'x', pad));
        p.extend([0xa2, b'i', b'd']);
        p.extend(id_bytes);
        p
    }

    fn binary_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x82u8];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else {
            f.push(126);
            f.extend((payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn msgpack_acks_are_noted_once_written() {
        let mut stream = binary_frame(&msgpack_ack(3, "/", &[0], 0));
        stream.extend(binary_frame(&msgpack_ack(3, "/acme", &[0xcc, 200], 3)));
        stream.extend(binary_frame(&msgpack_ack(
            3,
            "/",
            &[0xce, 0, 1, 0x11, 0x70],
            400,
        )));
        // An event (type 2) with the same shape is not an ack.
        stream.extend(binary_frame(&msgpack_ack(2, "/", &[5], 0)));
        // A JSON text ack still is.
        stream.extend([0x81, 7]);
        stream.extend(b"433[{}]");
        let last = binary_frame(&msgpack_ack(6, "/", &[0x7f], 1));
        stream.extend(&last[..last.len() - 1]);
        for chunk in [1, 2, 5, 13, stream.len()] {
            let mut t = FrameTracker::tracking_acks();
            for part in stream.chunks(chunk) {
                t.scan(part, u64::MAX);
            }
            assert_eq!(
                t.take_written_acks(),
                vec![
                    vec![(None, 0)],
                    vec![(Some("/acme".into()), 200)],
                    vec![(None, 70_000)],
                    vec![(None, 3)],
                ],
                "chunk {chunk}: the last is not whole"
            );
            t.scan(&last[last.len() - 1..], u64::MAX);
            assert_eq!(t.take_written_acks(), vec![vec![(None, 127)]]);
        }
    }

    #[test]
    fn msgpack_acks_in_namespaces_of_32_bytes_and_more() {
        // From 32 bytes on, msgpack writes a string as str8 (0xd9, length),
        // not as a fixstr. Encoded as socketioxide does, with rmp-serde.
        #[derive(serde::Serialize)]
        struct Ack<'a> {
            r#type: u8,
            nsp: &'a str,
            data: [bool; 1],
            id: i64,
        }
        for ns in [
            format!("/{}", "n".repeat(31)),
            format!("/{}", "n".repeat(99)),
        ] {
            let p = rmp_serde::to_vec_named(&Ack {
                r#type: 3,
                nsp: &ns,
                data: [true],
                id: 200,
            })
            .unwrap();
            assert_eq!(p[11], 0xd9, "str8");
            let mut t = FrameTracker::tracking_acks();
            t.scan(&binary_frame(&p), u64::MAX);
            let key = (Some(ns.as_str().into()), 200);
            assert_eq!(t.take_written_acks(), vec![vec![key.clone()]]);
            // The test's own encoder agrees, up to the data.
            let padded = msgpack_ack(3, &ns, &[0xcc, 200], 40);
            let head = 11 + 2 + ns.len() + 5;
            assert_eq!(padded[..head], p[..head]);
            assert_eq!(
                msgpack_ack_keys(
                    &padded,
                    &padded[padded.len() - ACK_TAIL..],
                    padded.len() as u64
                ),
                vec![key]
            );
        }
    }

    #[test]
    fn msgpack_ack_ids_read_backwards() {
        let keys = |id: &[u8]| {
            let p = msgpack_ack(3, "/", id, 0);
            msgpack_ack_keys(&p, &p[p.len().saturating_sub(ACK_TAIL)..], p.len() as u64)
        };
        assert_eq!(keys(&[0xff]), vec![(None, -1)]);
        assert_eq!(keys(&[0xd0, 0x80]), vec![(None, -128)]);
        assert_eq!(keys(&[0xcd, 1, 0]), vec![(None, 256)]);
        assert_eq!(keys(&[0xd1, 0xff, 0]), vec![(None, -256)]);
        assert_eq!(keys(&[0xd2, 0xff, 0xff, 0xff, 0]), vec![(None, -256)]);
        assert_eq!(keys(&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]), vec![(None, 1 << 32)]);
        assert_eq!(
            keys(&[0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0]),
            vec![],
            "above i64"
        );
        assert_eq!(keys(&[0xc0]), vec![], "nil is no id");
        // An id whose bytes end like a shorter id: both readings, longest first.
        assert_eq!(
            keys(&[0xce, 0xa2, b'i', b'd', 5]),
            vec![(None, 0xa269_6405), (None, 5)]
        );
        // Not an ack, or cut short.
        let p = msgpack_ack(3, "/", &[1], 0);
        assert_eq!(
            msgpack_ack_keys(&p[..10], &p[p.len() - 4..], p.len() as u64),
            vec![]
        );
        assert_eq!(msgpack_ack_keys(b"43[1]", b"", 5), vec![]);
    }

    /// A masked client text frame carrying `payload`.
    fn masked_text(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = client_header(fin, opcode, payload.len() as u64);
        let mask = [1u8, 2, 3, 4];
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn unmask_payload(frame: &[u8], len: usize) -> Vec<u8> {
        let payload = &frame[frame.len() - len..];
        let mask = [1u8, 2, 3, 4];
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect()
    }

    #[test]
    fn escaped_names_are_rewritten_in_masked_frames_in_any_split() {
        let escaped = br#"42/n,3["a\"b",{"t":"\""}]"#;
        let plain = br#"42["ok\u00e9"]"#; // an escape in the name again
        let mut stream = masked_text(true, 1, escaped);
        stream.extend(client_header(true, 9, 0)); // a ping in between
        stream.extend(masked_text(true, 2, plain)); // binary: left alone
        stream.extend(masked_text(false, 1, &plain[..6]));
        stream.extend(masked_text(true, 0, &plain[6..]));
        for chunk in [1, 2, 5, 9, stream.len()] {
            let mut t = FrameTracker::rewriting_names();
            let mut out = Vec::new();
            for part in stream.chunks(chunk) {
                let mut part = part.to_vec();
                assert_eq!(t.scan(&part, 1000), Scan::Fine);
                for (at, b) in t.take_patches() {
                    part[at] = b;
                }
                out.extend(part);
            }
            assert_eq!(out.len(), stream.len());
            let first = unmask_payload(&out[..2 + 4 + escaped.len()], escaped.len());
            assert_eq!(
                &first, b"42/n,3[\"a\x7f\x7f\x7f\",{\"t\":\"\\\"\"}]",
                "chunk {chunk}"
            );
            let binary_at = 2 + 4 + escaped.len() + 6;
            let binary = &out[binary_at..binary_at + 6 + plain.len()];
            assert_eq!(unmask_payload(binary, plain.len()), plain);
            // The fragmented message: its second fragment is rewritten.
            let frag2 = &out[out.len() - (6 + plain.len() - 6)..];
            let tail = unmask_payload(frag2, plain.len() - 6);
            assert_eq!(&tail, b"\x7f\x7f\x7f\x7f\x7f\x7f\"]");
        }
    }

    /// A client frame with a zero mask key: its payload bytes read as they are.
    fn zero_masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = client_header(true, opcode, payload.len() as u64);
        let n = f.len();
        f[n - 4..].fill(0);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_read_side_notes_no_acks() {
        // Only the write side's list is ever emptied (guarded_io takes the
        // written acks after each write): client acks noted on the read side
        // would pile up for the life of the connection.
        let mut stream = zero_masked(1, br#"4312[{"success":true}]"#);
        stream.extend(zero_masked(2, &msgpack_ack(3, "/", &[5], 0)));
        stream.extend(zero_masked(1, br#"43/acme,7[{"success":true}]"#));
        for mut t in [FrameTracker::rewriting_names(), FrameTracker::default()] {
            assert_eq!(t.scan(&stream, u64::MAX), Scan::Fine);
            assert!(t.at_boundary());
            assert_eq!(t.take_written_acks(), Vec::<Vec<AckKey>>::new());
        }
        // The same frames do count on the write side.
        let mut t = FrameTracker::tracking_acks();
        t.scan(&stream, u64::MAX);
        assert_eq!(t.take_written_acks().len(), 3);
    }

    #[test]
    fn unmasked_client_frames_are_read_as_plain_by_the_rewriter() {
        // RFC 6455 wants every client frame masked, and the websocket layer
        // behind refuses one that is not; until it does, the rewriter reads
        // the payload as it is (no mask key to take from the header) and
        // must not panic on the shorter header.
        let mut long = br#"42["a\"b",""#.to_vec();
        long.extend(std::iter::repeat_n(b'x', 200));
        long.extend(br#""]"#);
        for payload in [&br#"42["a\"b"]"#[..], &long] {
            let rewritten = |frame: Vec<u8>, header: usize| {
                let mut t = FrameTracker::rewriting_names();
                let mut frame = frame;
                assert_eq!(t.scan(&frame, 1000), Scan::Fine);
                assert!(t.at_boundary());
                for (at, b) in t.take_patches() {
                    frame[at] = b;
                }
                frame.split_off(header)
            };
            let mut unmasked = vec![0x81];
            if payload.len() < 126 {
                unmasked.push(payload.len() as u8);
            } else {
                unmasked.push(126);
                unmasked.extend((payload.len() as u16).to_be_bytes());
            }
            let header = unmasked.len();
            unmasked.extend_from_slice(payload);
            let plain = rewritten(unmasked, header);
            assert_ne!(plain, payload, "rewritten");
            // Just as the same message in a masked frame.
            let masked = masked_text(true, 1, payload);
            let header = masked.len() - payload.len();
            let masked = rewritten(masked, header);
            let mask = [1u8, 2, 3, 4];
            let unmasked: Vec<u8> = masked
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(plain, unmasked);
        }
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            close_frame(1009, "big"),
            vec![0x88, 5, 0x03, 0xf1, b'b', b'i', b'g']
        );
        let long = "é".repeat(100);
        let f = close_frame(1008, &long);
        assert!(f.len() <= 127);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn text_packets_are_refused_with_msgpack_in_any_split() {
        // A JSON client's CONNECT after an Engine.IO ping: the ping passes,
        // the `40` is refused at its frame's header.
        let ping = masked_text(true, 1, b"2");
        let connect = masked_text(true, 1, b"40{\"token\":\"x\"}");
        let stream = [ping.clone(), connect].concat();
        for cut in 0..stream.len() {
            let mut t = FrameTracker::rewriting_names_refusing_text();
            let (a, b) = stream.split_at(cut);
            match t.scan(a, 1_000_000) {
                Scan::TextPacket { at } => assert_eq!(at, ping.len(), "cut {cut}"),
                Scan::Fine => {
                    // Refused in the second buffer: at the frame's header, or
                    // at its start when the header began in the first one.
                    let at = ping.len().saturating_sub(cut);
                    assert_eq!(t.scan(b, 1_000_000), Scan::TextPacket { at }, "cut {cut}");
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // Binary packets (the msgpack parser's), pings and a JSON server's
        // own tracker pass.
        let binary = masked_text(true, 2, b"\x84\xa4type");
        let mut t = FrameTracker::rewriting_names_refusing_text();
        assert_eq!(
            t.scan(&[ping.clone(), binary].concat(), 1_000_000),
            Scan::Fine
        );
        let mut json = FrameTracker::rewriting_names();
        assert_eq!(
            json.scan(&masked_text(true, 1, b"40"), 1_000_000),
            Scan::Fine
        );
    }

    /// A msgpack ack whose `data` is the empty array: as short as one can be.
    fn minimal_msgpack_ack(ns: &str, id_bytes: &[u8]) -> Vec<u8> {
        let mut p = vec![0x84, 0xa4];
        p.extend(b"type");
        p.push(3);
        p.push(0xa3);
        p.extend(b"nsp");
        p.push(0xa0 | ns.len() as u8);
        p.extend(ns.as_bytes());
        p.push(0xa4);
        p.extend(b"data");
        p.push(0x90);
        p.extend([0xa2, b'i', b'd']);
        p.extend(id_bytes);
        p
    }

    #[test]
    fn the_shortest_msgpack_ack_is_read_and_one_byte_less_is_not() {
        // The length check keeps ids from being read out of the data of a
        // frame too short to hold both; it is exact at the shortest ack.
        for (ns, id_bytes, id) in [
            ("/", vec![5u8], 5i64),
            ("/chat", vec![0xcd, 0x01, 0x00], 256),
            (
                "/",
                vec![0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
                -2,
            ),
        ] {
            let f = minimal_msgpack_ack(ns, &id_bytes);
            let prefix = &f[..f.len().min(ACK_PREFIX)];
            let tail = &f[f.len().saturating_sub(ACK_TAIL)..];
            let key = ((ns != "/").then(|| ns.into()), id);
            assert_eq!(
                msgpack_ack_keys(prefix, tail, f.len() as u64),
                vec![key],
                "{ns} {id_bytes:?}"
            );
            assert_eq!(
                msgpack_ack_keys(prefix, tail, f.len() as u64 - 1),
                vec![],
                "one byte short: {ns} {id_bytes:?}"
            );
        }
    }

    #[test]
    fn msgpack_ints_of_every_width() {
        assert_eq!(msgpack_int(&[0x7f]), Some(127));
        assert_eq!(msgpack_int(&[0xff]), Some(-1));
        assert_eq!(msgpack_int(&[0xcc, 0xff]), Some(255));
        assert_eq!(msgpack_int(&[0xd0, 0xff]), Some(-1));
        assert_eq!(msgpack_int(&[0xcd, 0x01, 0x02]), Some(258));
        assert_eq!(msgpack_int(&[0xd1, 0xff, 0xfe]), Some(-2));
        assert_eq!(msgpack_int(&[0xce, 0, 1, 0, 0]), Some(65536));
        assert_eq!(msgpack_int(&[0xd2, 0xff, 0xff, 0xff, 0xfd]), Some(-3));
        assert_eq!(msgpack_int(&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]), Some(1 << 32));
        assert_eq!(msgpack_int(&[0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            msgpack_int(&[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc]),
            Some(-4)
        );
        assert_eq!(msgpack_int(&[0xc0]), None);
    }

    #[test]
    fn only_ack_packets_are_looked_into() {
        assert!(could_be_ack(b"", true));
        assert!(could_be_ack(b"\x84\xa4ty", true));
        assert!(could_be_ack(b"\x84\xa4type\x03", true));
        assert!(could_be_ack(b"\x84\xa4type\x06", true));
        assert!(!could_be_ack(b"\x84\xa4type\x02", true), "an event");
        assert!(!could_be_ack(b"\x83\xa4type", true));
        assert!(could_be_ack(b"43", false));
        assert!(!could_be_ack(b"42", false));
    }
}
