//! Outgoing websocket frames, one decision each, for connection state
//! recovery (see [`crate::recovery::frames`]): a CONNECT reply is replaced
//! by one that carries the pid, a message the socket already has is not
//! written, and the offsets of the others are noted.
//!
//! The writer (tungstenite) hands over whole frames and, after a partial
//! write, the same bytes again; so frames are decided once, at a frame
//! boundary, and the bytes already decided (`ahead`) are not looked at
//! again. Pure code over byte slices; [`crate::edge::guarded_io`] applies
//! the plan.

use std::sync::Arc;

use crate::edge::ws_frames::{header_size, payload_len};
use crate::recovery::frames::{Action, Encoding, Frames};

/// What to do with the start of the buffer the writer offers.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Write at most this many bytes as they are.
    Write(usize),
    /// Say these bytes were written without writing them.
    Skip(usize),
    /// Say `consumed` bytes were written, and write `frame` instead.
    Replace { consumed: usize, frame: Vec<u8> },
}

/// One connection's state.
pub struct Outgoing {
    frames: Arc<Frames>,
    /// The Engine.IO session (from the open packet, or the upgrade).
    sid: Option<String>,
    /// Bytes at the start of the next buffer already decided to be written.
    ahead: usize,
    /// A decision for the frame right after `ahead` (length, plan).
    stashed: Option<Plan>,
}

/// The frame header complete at the start of `buf`: (header length,
/// payload length, opcode, masked).
fn header(buf: &[u8]) -> Option<(usize, usize, u8, bool)> {
    let b1 = *buf.get(1)?;
    let h = buf.get(..header_size(b1))?;
    let plen = usize::try_from(payload_len(h)).ok()?;
    Some((h.len(), plen, h[0] & 0x0f, b1 & 0x80 != 0))
}

/// A complete unmasked frame at the start of `buf`: (header length,
/// payload length, opcode).
pub fn complete_frame(buf: &[u8]) -> Option<(usize, usize, u8)> {
    let (hlen, plen, opcode, masked) = header(buf)?;
    if masked {
        return None;
    }
    buf.get(hlen..hlen.checked_add(plen)?)?;
    Some((hlen, plen, opcode))
}

/// Any frame's total length, when its header is complete in `buf`.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let (hlen, plen, _, _) = header(buf)?;
    hlen.checked_add(plen)
}

/// A final unmasked frame carrying `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

impl Outgoing {
    pub fn new(frames: Arc<Frames>) -> Self {
        Outgoing {
            frames,
            sid: None,
            ahead: 0,
            stashed: None,
        }
    }

    /// The writer offers `buf`; `at_boundary` says whether it starts a
    /// frame (else the rest of a frame partly written comes first, of which
    /// `to_boundary` bytes are left, when known). `upgraded` is the session
    /// id of a connection upgraded from long-polling.
    pub fn plan(
        &mut self,
        buf: &[u8],
        at_boundary: bool,
        to_boundary: Option<u64>,
        upgraded: Option<&str>,
    ) -> Plan {
        if self.ahead > 0 {
            return Plan::Write(self.ahead.min(buf.len()));
        }
        if let Some(plan) = self.stashed.take() {
            let consumed = match &plan {
                Plan::Skip(n) | Plan::Replace { consumed: n, .. } => *n,
                Plan::Write(n) => *n,
            };
            // The writer offers the same bytes again (tungstenite does); if
            // it ever offered fewer, the decision is dropped, not misapplied.
            if at_boundary && consumed <= buf.len() {
                return plan;
            }
        }
        if !at_boundary {
            // Finish the frame in flight; the next one is decided then.
            let left = to_boundary.map(|n| n as usize).unwrap_or(1).max(1);
            return Plan::Write(left.min(buf.len()));
        }
        if self.sid.is_none()
            && let Some(sid) = upgraded
        {
            self.sid = Some(sid.to_string());
        }
        let mut pass = 0;
        while let Some((hlen, plen, opcode)) = complete_frame(&buf[pass..]) {
            let whole = hlen + plen;
            let payload = &buf[pass + hlen..pass + whole];
            let action = self.decide(opcode, payload);
            let plan = match action {
                Action::Pass => {
                    pass += whole;
                    continue;
                }
                Action::Drop => Plan::Skip(whole),
                Action::Replace(p) => Plan::Replace {
                    consumed: whole,
                    frame: frame(opcode, &p),
                },
            };
            if pass == 0 {
                return plan;
            }
            self.stashed = Some(plan);
            break;
        }
        if pass == 0 {
            // Not a whole data frame (a control frame, or one cut short):
            // it goes as it is.
            return Plan::Write(frame_len(buf).unwrap_or(buf.len()).min(buf.len()));
        }
        self.ahead = pass;
        Plan::Write(pass)
    }

    /// `n` bytes of a `Plan::Write` went out.
    pub fn wrote(&mut self, n: usize) {
        self.ahead = self.ahead.saturating_sub(n);
    }

    fn decide(&mut self, opcode: u8, payload: &[u8]) -> Action {
        let encoding = match opcode {
            1 => Encoding::Text,
            2 => Encoding::Msgpack,
            _ => return Action::Pass,
        };
        let Some(sid) = &self.sid else {
            if encoding == Encoding::Text {
                self.sid = Frames::open_sid(payload);
            }
            return Action::Pass;
        };
        self.frames.outgoing(sid, encoding, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::offset::Offset;
    use crate::recovery::written::Written;

    fn text(s: &str) -> Vec<u8> {
        frame(1, s.as_bytes())
    }

    #[test]
    fn frames_are_decided_once_and_in_order() {
        let frames = Arc::new(Frames::default());
        frames.register("S", "/", "P".into(), Written::default());
        let mut out = Outgoing::new(frames.clone());
        let open = text(r#"0{"sid":"S","upgrades":[]}"#);
        assert_eq!(out.plan(&open, true, None, None), Plan::Write(open.len()));
        out.wrote(open.len());

        let o = Offset::new("/", "r", 1).encode();
        let ev = text(&format!(r#"42["chat:message",{{}},"{o}"]"#));
        let connect = text(r#"40{"sid":"S"}"#);
        let mut buf = ev.clone();
        buf.extend(&connect);
        buf.extend(&ev);
        // The event passes (and is noted); the CONNECT after it waits.
        assert_eq!(out.plan(&buf, true, None, None), Plan::Write(ev.len()));
        // A partial write: the same bytes come again, undecided twice.
        out.wrote(3);
        assert_eq!(
            out.plan(&buf[3..], false, Some(1), None),
            Plan::Write(ev.len() - 3)
        );
        out.wrote(ev.len() - 3);
        let rest = &buf[ev.len()..];
        assert_eq!(
            out.plan(rest, true, None, None),
            Plan::Replace {
                consumed: connect.len(),
                frame: text(r#"40{"sid":"S","pid":"P"}"#)
            }
        );
        // The same event again: the socket has it.
        assert_eq!(
            out.plan(&rest[connect.len()..], true, None, None),
            Plan::Skip(ev.len())
        );
    }

    #[test]
    fn other_frames_pass_whole() {
        let frames = Arc::new(Frames::default());
        let mut out = Outgoing::new(frames);
        let ping = vec![0x89, 0x00];
        assert_eq!(out.plan(&ping, true, None, None), Plan::Write(2));
        out.wrote(2);
        let big = frame(2, &vec![7u8; 70_000]);
        assert_eq!(out.plan(&big[..100], true, None, None), Plan::Write(100));
        assert_eq!(complete_frame(&big), Some((10, 70_000, 2)));
    }
}
