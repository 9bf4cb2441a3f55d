//! Cutting large client frames into pieces before the websocket parser
//! sees them, so that one large message cannot pin its size for the life of
//! the connection.
//!
//! tungstenite reads a frame into one buffer that it first grows to the
//! frame's length; the payload is split off that same allocation, and the
//! buffer keeps the allocation for the next frames: a client that sent one
//! 900 KB message kept ~920 KB for as long as it stayed connected (200 idle
//! clients: 16 → 200 MB). Cut into frames of at most [`PIECE`] bytes (a
//! fragmented message, RFC 6455 §5.4), the same message passes through a
//! buffer of about that size; tungstenite joins the pieces in a separate
//! buffer that is freed with the message.
//!
//! Each piece keeps the frame's masking key: pieces are a multiple of 4
//! bytes long, so every payload byte keeps its place in the key's cycle and
//! passes unchanged. Control frames and frames up to [`PIECE`] pass as they
//! are. Pure code: bytes in, bytes out.
//!
//! Only the client-to-server direction can be helped here: tungstenite's
//! write buffer also keeps the size of the largest frame the server wrote to
//! the connection, and that frame is whole before any of it reaches this
//! layer.

/// Largest frame payload handed to the websocket parser.
pub const PIECE: u64 = 4 * 1024;

const _: () = assert!(PIECE.is_multiple_of(4) && PIECE <= u16::MAX as u64);

/// The state of the client-to-server direction of one websocket.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    /// The header being read; its bytes are held until it is whole.
    header: [u8; 14],
    header_len: usize,
    state: State,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Header,
    /// Payload bytes of a frame that passes as it is.
    Pass(u64),
    /// A frame being cut into pieces.
    Cut(Cut),
}

#[derive(Debug, Clone, Copy)]
struct Cut {
    /// FIN, RSV and opcode of the original frame.
    b0: u8,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the original frame still to come.
    left: u64,
    /// Payload bytes of the current piece still to come.
    piece_left: u64,
    /// No piece has been started yet.
    first: bool,
}

/// The output of one buffer: unchanged until something must change, then
/// a copy.
struct Out<'a> {
    input: &'a [u8],
    copy: Option<Vec<u8>>,
    /// Input before this offset has been accounted for.
    mark: usize,
}

impl Out<'_> {
    /// `input[mark..to]` passes unchanged.
    fn pass_to(&mut self, to: usize) {
        if let Some(copy) = &mut self.copy {
            copy.extend_from_slice(&self.input[self.mark..to]);
        }
        self.mark = to;
    }

    /// `input[mark..to]` is replaced by `bytes`.
    fn replace(&mut self, to: usize, bytes: &[u8]) {
        let (input, mark) = (self.input, self.mark);
        let copy = self.copy.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(input.len() + 16);
            v.extend_from_slice(&input[..mark]);
            v
        });
        copy.extend_from_slice(bytes);
        self.mark = to;
    }
}

impl FrameSplitter {
    /// The bytes to hand to the parser for `input`, the next bytes read
    /// from the client: `None` when they are `input` itself (no frame cut,
    /// no header held back), which is the case for frames up to [`PIECE`]
    /// whose header arrived whole. The output may be empty (a header held
    /// until its end arrives).
    pub fn feed(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Out {
            input,
            copy: None,
            mark: 0,
        };
        let mut i = 0;
        loop {
            match self.state {
                State::Header => {
                    if i == input.len() {
                        break;
                    }
                    let held_before = self.header_len;
                    loop {
                        let need = if self.header_len < 2 {
                            2
                        } else {
                            crate::edge::ws_frames::header_size(self.header[1])
                        };
                        if self.header_len == need {
                            break;
                        }
                        if i == input.len() {
                            // Held until its end arrives.
                            out.replace(i, &[]);
                            return out.copy;
                        }
                        let take = (need - self.header_len).min(input.len() - i);
                        self.header[self.header_len..self.header_len + take]
                            .copy_from_slice(&input[i..i + take]);
                        self.header_len += take;
                        i += take;
                    }
                    let header = &self.header[..self.header_len];
                    let (b0, b1) = (header[0], header[1]);
                    let ext = crate::edge::ws_frames::header_size(b1)
                        - 2
                        - if b1 & 0x80 != 0 { 4 } else { 0 };
                    let len = match ext {
                        2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
                        8 => u64::from_be_bytes(header[2..10].try_into().unwrap_or([0; 8])),
                        _ => u64::from(b1 & 0x7f),
                    };
                    let mask = (b1 & 0x80 != 0).then(|| {
                        let at = 2 + ext;
                        [header[at], header[at + 1], header[at + 2], header[at + 3]]
                    });
                    let control = b0 & 0x08 != 0;
                    if control || len <= PIECE {
                        if held_before == 0 {
                            out.pass_to(i);
                        } else {
                            out.replace(i, &self.header[..self.header_len]);
                        }
                        self.state = State::Pass(len);
                    } else {
                        // The original header goes; each piece gets its own.
                        out.replace(i, &[]);
                        self.state = State::Cut(Cut {
                            b0,
                            mask,
                            left: len,
                            piece_left: 0,
                            first: true,
                        });
                    }
                    self.header_len = 0;
                }
                State::Pass(n) => {
                    let k = n.min((input.len() - i) as u64);
                    i += k as usize;
                    out.pass_to(i);
                    self.state = if k == n {
                        State::Header
                    } else {
                        State::Pass(n - k)
                    };
                    if k < n {
                        break;
                    }
                }
                State::Cut(mut cut) => {
                    if i == input.len() {
                        break;
                    }
                    if cut.piece_left == 0 {
                        let piece = cut.left.min(PIECE);
                        out.replace(i, &piece_header(&cut, piece));
                        cut.piece_left = piece;
                        cut.first = false;
                    }
                    let k = cut.piece_left.min((input.len() - i) as u64);
                    i += k as usize;
                    out.pass_to(i);
                    cut.piece_left -= k;
                    cut.left -= k;
                    self.state = if cut.left == 0 {
                        State::Header
                    } else {
                        State::Cut(cut)
                    };
                }
            }
        }
        out.copy
    }
}

/// The header of the next piece of `cut`, `len` bytes long.
fn piece_header(cut: &Cut, len: u64) -> Vec<u8> {
    let last = len == cut.left;
    let mut b0 = 0;
    if cut.first {
        // RSV bits and opcode on the first piece only; the rest continue it.
        b0 |= cut.b0 & 0x7f;
    }
    if last {
        b0 |= cut.b0 & 0x80;
    }
    let mask_bit = if cut.mask.is_some() { 0x80 } else { 0 };
    let mut h = Vec::with_capacity(8);
    h.push(b0);
    if len <= 125 {
        h.push(mask_bit | len as u8);
    } else {
        h.push(mask_bit | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    }
    if let Some(key) = cut.mask {
        h.extend_from_slice(&key);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN, `opcode`, masked with `key`.
    fn frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len <= 125 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Parses client frames: (fin, opcode, unmasked payload) each.
    fn parse(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let (b0, b1) = (bytes[0], bytes[1]);
            let (len, mut at) = match b1 & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let key: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
            at += 4;
            let payload = bytes[at..at + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            frames.push((b0 & 0x80 != 0, b0 & 0x0f, payload));
            bytes = &bytes[at + len..];
        }
        frames
    }

    /// Feeds `input` in chunks of `chunk` bytes; returns the whole output.
    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = FrameSplitter::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            match s.feed(c) {
                Some(o) => out.extend_from_slice(&o),
                None => out.extend_from_slice(c),
            }
        }
        out
    }

    #[test]
    fn small_frames_pass_untouched_and_without_a_copy() {
        let mut input = frame(true, 1, b"42[\"ping\"]", [1, 2, 3, 4]);
        input.extend(frame(true, 9, b"", [5, 6, 7, 8]));
        input.extend(frame(true, 2, &vec![7u8; PIECE as usize], [9, 9, 9, 9]));
        let mut s = FrameSplitter::default();
        assert!(s.feed(&input).is_none());
    }

    #[test]
    fn a_large_message_becomes_pieces_with_the_same_payload() {
        let payload: Vec<u8> = (0..900_001u32).map(|i| (i % 251) as u8).collect();
        let mut input = frame(true, 1, b"40", [1, 2, 3, 4]);
        input.extend(frame(true, 1, &payload, [0xde, 0xad, 0xbe, 0xef]));
        input.extend(frame(true, 10, b"pong", [0, 1, 0, 1]));
        for chunk in [1, 3, 13, 1024, 70_000, input.len()] {
            let frames = parse(&run(&input, chunk));
            assert_eq!(frames[0], (true, 1, b"40".to_vec()));
            let pieces = &frames[1..frames.len() - 1];
            assert_eq!(pieces.len(), 900_001usize.div_ceil(PIECE as usize));
            assert!(pieces.iter().all(|p| p.2.len() as u64 <= PIECE));
            assert_eq!(pieces[0].1, 1, "the first piece keeps the opcode");
            assert!(pieces[1..].iter().all(|p| p.1 == 0), "then continuations");
            assert!(pieces[..pieces.len() - 1].iter().all(|p| !p.0));
            assert!(pieces[pieces.len() - 1].0, "FIN on the last piece");
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.2.clone()).collect();
            assert_eq!(joined, payload, "chunk {chunk}");
            assert_eq!(frames[frames.len() - 1], (true, 10, b"pong".to_vec()));
        }
    }

    #[test]
    fn a_fragmented_message_stays_one_message() {
        let a = vec![1u8; 40_000];
        let b = vec![2u8; 20_000];
        let mut input = frame(false, 2, &a, [3, 1, 4, 1]);
        input.extend(frame(true, 9, b"p", [0, 0, 0, 1]));
        input.extend(frame(true, 0, &b, [5, 9, 2, 6]));
        let frames = parse(&run(&input, 777));
        // a's pieces (binary, then continuations), the ping between, b's.
        let (na, nb) = (
            a.len().div_ceil(PIECE as usize),
            b.len().div_ceil(PIECE as usize),
        );
        let mut want_ops = vec![2u8];
        want_ops.extend(std::iter::repeat_n(0, na - 1));
        want_ops.push(9);
        want_ops.extend(std::iter::repeat_n(0, nb));
        let opcodes: Vec<u8> = frames.iter().map(|f| f.1).collect();
        assert_eq!(opcodes, want_ops);
        let mut want_fins = vec![false; na];
        want_fins.push(true);
        want_fins.extend(std::iter::repeat_n(false, nb - 1));
        want_fins.push(true);
        let fins: Vec<bool> = frames.iter().map(|f| f.0).collect();
        assert_eq!(fins, want_fins);
        let data: Vec<u8> = frames
            .iter()
            .filter(|f| f.1 != 9)
            .flat_map(|f| f.2.clone())
            .collect();
        assert_eq!(data, [a, b].concat());
    }
}
