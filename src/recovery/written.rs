//! What one socket was sent, in the order it was written, so that the last
//! offset a client reports tells exactly what it holds in every room.
//!
//! A client reports one offset: that of the last recoverable event it saw.
//! Everything written before that event reached it; anything after may have
//! died with the transport. So each socket keeps the offsets written to it
//! (the `tail`, at most [`MAX_TAIL`]) on top of the positions it held before
//! them (`base`): the client's offset, found in the tail, gives its position
//! in every room at once. Pure code: offsets in, positions out.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::offset::Offset;

/// Runs of offsets kept after the base (a run is consecutive messages of
/// one room, so a busy room's backlog is one entry): a client further
/// behind than this when its transport dies is not recovered (it catches
/// up through history).
pub const MAX_TAIL: usize = 128;
/// Messages held out of order in one room (several nodes can deliver a
/// room's messages out of `seq` order) before positions give up.
pub const MAX_ABOVE: usize = 32;

/// What a client holds of one room: every seq up to `upto`, and those in
/// `above` (arrived ahead of a gap).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub upto: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub above: Vec<u64>,
}

impl Held {
    pub fn at(upto: u64) -> Self {
        Held {
            upto,
            above: Vec::new(),
        }
    }

    pub fn has(&self, seq: u64) -> bool {
        seq <= self.upto || self.above.contains(&seq)
    }

    /// Adds seqs `first..=last`; false when too many are held past a gap.
    fn add(&mut self, first: u64, last: u64) -> bool {
        if first <= self.upto.saturating_add(1) {
            self.upto = self.upto.max(last);
        } else {
            // A run far past the gap cannot be held seq by seq.
            if last - first > MAX_ABOVE as u64 {
                return false;
            }
            for seq in first..=last {
                if self.above.len() > MAX_ABOVE {
                    return false;
                }
                if !self.above.contains(&seq) {
                    self.above.push(seq);
                }
            }
        }
        self.above.retain(|&s| s > self.upto);
        while let Some(i) = self
            .above
            .iter()
            .position(|&s| Some(s) == self.upto.checked_add(1))
        {
            self.upto += 1;
            self.above.swap_remove(i);
        }
        self.above.len() <= MAX_ABOVE
    }
}

/// Consecutive messages of one room, written one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub room: u64,
    pub first: u64,
    pub last: u64,
}

impl Run {
    fn contains(&self, o: &Offset) -> bool {
        self.room == o.room && (self.first..=self.last).contains(&o.seq)
    }
}

/// Positions by room tag (see `offset::room_tag`).
pub type Positions = BTreeMap<u64, Held>;

/// The offsets written to one socket, on top of what it held before them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// What the client holds when its last offset is `base_offset`.
    pub base: Positions,
    pub base_offset: Option<Offset>,
    /// Offsets written after the base, oldest first.
    pub tail: VecDeque<Run>,
    /// Positions can no longer be exact: the socket is not recoverable.
    pub broken: bool,
}

impl Written {
    /// A recovered socket: it holds `positions`, and said so with `offset`.
    pub fn resumed(positions: Positions, offset: Option<Offset>) -> Self {
        Written {
            base: positions,
            base_offset: offset,
            ..Written::default()
        }
    }

    /// The socket joined a room whose latest seq was `upto`: it holds that
    /// much (history is the app's to fetch). A room it is in keeps its place.
    pub fn joined(&mut self, room: u64, upto: u64) {
        self.base.entry(room).or_insert_with(|| Held::at(upto));
    }

    /// Whether the client has (or was sent) this message already.
    pub fn seen(&self, o: &Offset) -> bool {
        self.base.get(&o.room).is_some_and(|h| h.has(o.seq))
            || self.tail.iter().any(|r| r.contains(o))
    }

    /// An offset was written to the socket.
    pub fn record(&mut self, o: Offset) {
        if let Some(run) = self.tail.back_mut()
            && run.room == o.room
            && run.last.checked_add(1) == Some(o.seq)
        {
            run.last = o.seq;
            return;
        }
        if self.tail.len() == MAX_TAIL
            && let Some(first) = self.tail.pop_front()
        {
            self.fold(first);
            self.base_offset = Some(Offset {
                room: first.room,
                seq: first.last,
            });
        }
        self.tail.push_back(Run {
            room: o.room,
            first: o.seq,
            last: o.seq,
        });
    }

    fn fold(&mut self, r: Run) {
        // A conversation first met here (a private one): what came before
        // its first message was not this socket's to receive.
        let h = self
            .base
            .entry(r.room)
            .or_insert_with(|| Held::at(r.first.saturating_sub(1)));
        if !h.add(r.first, r.last) {
            self.broken = true;
        }
    }

    /// What the client holds if `last` is the last offset it saw; `None`
    /// when `last` is not one this socket was sent (forged, too old, or
    /// from another session).
    pub fn holds(&self, last: Option<Offset>) -> Option<Positions> {
        if self.broken {
            return None;
        }
        if last == self.base_offset {
            return Some(self.base.clone());
        }
        let last = last?;
        let i = self.tail.iter().rposition(|r| r.contains(&last))?;
        let mut upto = self.clone();
        for r in self.tail.iter().take(i) {
            upto.fold(*r);
        }
        upto.fold(Run {
            last: last.seq,
            ..self.tail[i]
        });
        (!upto.broken).then_some(upto.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(room: u64, seq: u64) -> Offset {
        Offset { room, seq }
    }

    fn socket() -> Written {
        let mut w = Written::default();
        w.joined(1, 10);
        w.joined(2, 100);
        w
    }

    #[test]
    fn the_last_offset_gives_every_room() {
        let mut w = socket();
        for x in [o(1, 11), o(2, 101), o(1, 12), o(2, 102), o(2, 103)] {
            w.record(x);
        }
        // Saw up to (1,12): room 2's 102 and 103 died with the transport.
        let h = w.holds(Some(o(1, 12))).unwrap();
        assert_eq!(h[&1], Held::at(12));
        assert_eq!(h[&2], Held::at(101));
        // Saw nothing of the tail.
        let h = w.holds(None).unwrap();
        assert_eq!((h[&1].upto, h[&2].upto), (10, 100));
        let h = w.holds(Some(o(2, 103))).unwrap();
        assert_eq!((h[&1].upto, h[&2].upto), (12, 103));
    }

    #[test]
    fn offsets_never_sent_are_refused() {
        let mut w = socket();
        w.record(o(1, 11));
        assert_eq!(w.holds(Some(o(1, 12))), None);
        assert_eq!(w.holds(Some(o(3, 11))), None);
        let mut r = Written::resumed(w.holds(Some(o(1, 11))).unwrap(), Some(o(1, 11)));
        // A recovered socket that got nothing new reports its old offset.
        assert_eq!(r.holds(Some(o(1, 11))).unwrap()[&1].upto, 11);
        // ... and not none: it did see (1,11).
        assert_eq!(r.holds(None), None);
        r.record(o(2, 101));
        assert_eq!(r.holds(Some(o(2, 101))).unwrap()[&2].upto, 101);
    }

    #[test]
    fn out_of_order_messages_are_held_past_the_gap() {
        let mut w = socket();
        w.record(o(1, 12));
        w.record(o(1, 11));
        w.record(o(1, 14));
        let h = w.holds(Some(o(1, 14))).unwrap();
        assert_eq!(
            h[&1],
            Held {
                upto: 12,
                above: vec![14]
            }
        );
        assert!(h[&1].has(14) && !h[&1].has(13));
        // The first one alone: 11 is still missing.
        let h = w.holds(Some(o(1, 12))).unwrap();
        assert_eq!(
            h[&1],
            Held {
                upto: 10,
                above: vec![12]
            }
        );
    }

    #[test]
    fn a_long_tail_folds_into_the_base_and_old_offsets_are_refused() {
        let mut w = socket();
        // Alternating rooms: one run per message.
        for s in 0..(MAX_TAIL as u64 / 2 + 3) {
            w.record(o(1, 11 + s));
            w.record(o(2, 101 + s));
        }
        assert_eq!(w.tail.len(), MAX_TAIL);
        assert_eq!((w.base[&1].upto, w.base[&2].upto), (13, 103));
        assert_eq!(w.base_offset, Some(o(2, 103)));
        assert_eq!(w.holds(Some(o(1, 13))), None, "older than the tail");
        assert_eq!(w.holds(Some(o(2, 103))).unwrap()[&1].upto, 13);
        let last = 11 + MAX_TAIL as u64 / 2 + 2;
        assert_eq!(w.holds(Some(o(1, last))).unwrap()[&1].upto, last);
    }

    #[test]
    fn a_busy_room_is_one_run() {
        let mut w = socket();
        for s in 11..=100_000 {
            w.record(o(1, s));
        }
        w.record(o(2, 101));
        assert_eq!(w.tail.len(), 2);
        let h = w.holds(Some(o(1, 5000))).unwrap();
        assert_eq!((h[&1].upto, h[&2].upto), (5000, 100));
        assert!(w.seen(&o(1, 99_999)) && !w.seen(&o(1, 100_001)));
    }

    #[test]
    fn seen_covers_base_and_tail() {
        let mut w = socket();
        w.record(o(1, 13));
        assert!(w.seen(&o(1, 10)) && w.seen(&o(1, 13)));
        assert!(!w.seen(&o(1, 11)) && !w.seen(&o(2, 101)) && !w.seen(&o(9, 1)));
    }

    #[test]
    fn forged_huge_seqs_do_not_overflow() {
        let mut w = socket();
        w.record(o(1, u64::MAX - 1));
        w.record(o(1, u64::MAX));
        w.record(o(2, 101));
        // Held past a gap, or refused: never a panic, never "everything held".
        if let Some(h) = w.holds(Some(o(2, 101))) {
            assert!(!h[&1].has(11));
        }
        let mut r = Written::resumed(Positions::new(), None);
        r.base.insert(1, Held::at(u64::MAX));
        r.record(o(1, u64::MAX));
        assert_eq!(r.holds(Some(o(1, u64::MAX))).unwrap()[&1].upto, u64::MAX);
    }

    #[test]
    fn too_many_past_a_gap_breaks_recovery() {
        let mut w = socket();
        for s in 0..(MAX_ABOVE as u64 + 1) {
            w.record(o(1, 20 + s));
        }
        let last = o(1, 20 + MAX_ABOVE as u64);
        assert_eq!(w.holds(Some(last)), None);
        assert!(w.holds(Some(o(1, 20))).is_some());
    }
}
