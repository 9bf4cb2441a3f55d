//! Operational transformation for plain text: the rules that make concurrent
//! edits of one document converge. Pure functions, no sockets.
//!
//! A document is a string; positions and lengths count Unicode scalar values
//! (Rust `char`s; a JavaScript client must not count UTF-16 units). An edit is
//! one [`Op`]: insert a string at a position, or delete a run of characters.
//!
//! The server orders every accepted op (version 1, 2, 3, ...). An op a client
//! based on version `b` is **rebased** past each op accepted since `b`, in
//! order ([`rebase`]), then applied. A client does the mirror image with the
//! ops it receives while its own are pending ([`transform_pair`]). Both sides
//! use the same function, so they agree; every pair satisfies
//! `apply(apply(s, a), transform(b, a)) == apply(apply(s, b), transform(a, b))`
//! (the property tests check it), which is all a one-op-in-flight client and
//! a central server need to converge.
//!
//! The rules, where two edits meet:
//! * Two inserts at one position: the op the server accepted **first** stays
//!   on the left ("server order"); the later one lands after it.
//! * An insert at either edge of a deleted run survives, next to the gap.
//! * An insert strictly **inside** a run another op deleted concurrently goes
//!   with that run ("delete wins"): the insert becomes a no-op and the delete
//!   grows to cover the inserted text. (Keeping it would need the delete to
//!   split in two, which one op cannot say.)
//! * Overlapping deletes delete the union once.

use std::fmt;

/// One edit of a text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Insert `text` before the character at `pos` (`pos` == length appends).
    Insert { pos: usize, text: String },
    /// Delete `len` characters starting at `pos`.
    Delete { pos: usize, len: usize },
}

/// Which of two concurrent inserts at one position goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// The op being transformed goes after the other one (the other was
    /// accepted first).
    After,
    /// The op being transformed goes before the other one.
    Before,
}

/// An op that does not fit the text it is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange {
    pub op: Op,
    pub doc_len: usize,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Insert { pos, .. } => write!(
                f,
                "position {pos} is beyond the end of the text ({} characters)",
                self.doc_len
            ),
            Op::Delete { pos, len } => write!(
                f,
                "delete of {len} at {pos} runs beyond the end of the text ({} characters)",
                self.doc_len
            ),
        }
    }
}

impl std::error::Error for OutOfRange {}

/// The number of Unicode scalar values in `s`.
pub fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The byte offset of character `pos` in `s` (`s.len()` at the end).
fn byte_at(s: &str, pos: usize) -> Option<usize> {
    if s.is_ascii() {
        return (pos <= s.len()).then_some(pos);
    }
    if pos == 0 {
        return Some(0);
    }
    let mut chars = 0;
    for (i, _) in s.char_indices() {
        if chars == pos {
            return Some(i);
        }
        chars += 1;
    }
    (chars == pos).then_some(s.len())
}

impl Op {
    /// Whether applying it changes nothing.
    pub fn is_noop(&self) -> bool {
        match self {
            Op::Insert { text, .. } => text.is_empty(),
            Op::Delete { len, .. } => *len == 0,
        }
    }

    /// How much it changes the length of the text (in characters).
    pub fn len_delta(&self) -> isize {
        match self {
            Op::Insert { text, .. } => char_len(text) as isize,
            Op::Delete { len, .. } => -(*len as isize),
        }
    }

    /// Whether it fits a text of `doc_len` characters.
    pub fn check(&self, doc_len: usize) -> Result<(), OutOfRange> {
        let fits = match self {
            Op::Insert { pos, .. } => *pos <= doc_len,
            Op::Delete { pos, len } => pos.checked_add(*len).is_some_and(|end| end <= doc_len),
        };
        if fits {
            Ok(())
        } else {
            Err(OutOfRange {
                op: self.clone(),
                doc_len,
            })
        }
    }
}

/// Applies `op` to `doc` in place.
pub fn apply(doc: &mut String, op: &Op) -> Result<(), OutOfRange> {
    let out = |doc: &String| OutOfRange {
        op: op.clone(),
        doc_len: char_len(doc),
    };
    match op {
        Op::Insert { pos, text } => {
            let at = byte_at(doc, *pos).ok_or_else(|| out(doc))?;
            doc.insert_str(at, text);
        }
        Op::Delete { pos, len } => {
            let from = byte_at(doc, *pos).ok_or_else(|| out(doc))?;
            let to = match pos.checked_add(*len) {
                Some(end) => byte_at(&doc[..], end).ok_or_else(|| out(doc))?,
                None => return Err(out(doc)),
            };
            doc.replace_range(from..to, "");
        }
    }
    Ok(())
}

/// `op` as it must be applied after `other`, when both were made on the same
/// text. `tie` says which of two inserts at one position goes first.
pub fn transform(op: &Op, other: &Op, tie: Tie) -> Op {
    match (op, other) {
        (Op::Insert { pos: p, text }, Op::Insert { pos: q, text: t }) => {
            let shift = *q < *p || (*q == *p && tie == Tie::After);
            Op::Insert {
                pos: if shift { p + char_len(t) } else { *p },
                text: text.clone(),
            }
        }
        (Op::Insert { pos: p, text }, Op::Delete { pos: q, len: l }) => {
            if *p <= *q {
                op.clone()
            } else if *p >= q + l {
                Op::Insert {
                    pos: p - l,
                    text: text.clone(),
                }
            } else {
                // Strictly inside the deleted run: it goes with the run.
                Op::Insert {
                    pos: *q,
                    text: String::new(),
                }
            }
        }
        (Op::Delete { pos: p, len: l }, Op::Insert { pos: q, text: t }) => {
            let n = char_len(t);
            if *q <= *p {
                Op::Delete {
                    pos: p + n,
                    len: *l,
                }
            } else if *q >= p + l {
                op.clone()
            } else {
                // The insert is strictly inside this run: delete it too.
                Op::Delete {
                    pos: *p,
                    len: l + n,
                }
            }
        }
        (Op::Delete { pos: p, len: l }, Op::Delete { pos: q, len: m }) => {
            let overlap = (p + l).min(q + m).saturating_sub((*p).max(*q));
            let pos = if q < p { p - (*m).min(p - q) } else { *p };
            Op::Delete {
                pos,
                len: l - overlap,
            }
        }
    }
}

/// `op`, made on version `b`, rebased past `prior` (accepted by the server
/// after `b`): the server's step, once per op accepted since `b`.
pub fn rebase(op: &Op, prior: &Op) -> Op {
    transform(op, prior, Tie::After)
}

/// A client's step when an op from the server (`incoming`) meets one of its
/// own not yet accepted (`local`, made on the same text): returns `local`
/// rebased past `incoming`, and `incoming` as the client must apply it on
/// top of `local`. The server accepted `incoming` first, so it wins ties.
pub fn transform_pair(local: &Op, incoming: &Op) -> (Op, Op) {
    (
        transform(local, incoming, Tie::After),
        transform(incoming, local, Tie::Before),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ins(pos: usize, text: &str) -> Op {
        Op::Insert {
            pos,
            text: text.into(),
        }
    }
    fn del(pos: usize, len: usize) -> Op {
        Op::Delete { pos, len }
    }
    fn applied(s: &str, op: &Op) -> String {
        let mut s = s.to_string();
        apply(&mut s, op).unwrap();
        s
    }

    #[test]
    fn len_delta_is_the_change_in_characters() {
        assert_eq!(ins(0, "héllo 😀").len_delta(), 7);
        assert_eq!(del(2, 3).len_delta(), -3, "a delete shortens the text");
        for (doc, op) in [("abcdef", del(1, 4)), ("ab", ins(1, "xyz€"))] {
            let after = applied(doc, &op);
            assert_eq!(
                char_len(&after) as isize,
                char_len(doc) as isize + op.len_delta()
            );
        }
    }

    #[test]
    fn out_of_range_says_where_and_how_long_the_text_is() {
        let e = ins(7, "x").check(5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "position 7 is beyond the end of the text (5 characters)"
        );
        let e = del(3, 4).check(5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "delete of 4 at 3 runs beyond the end of the text (5 characters)"
        );
        assert!(ins(5, "x").check(5).is_ok(), "appending fits");
        assert!(del(1, 4).check(5).is_ok(), "deleting to the end fits");
        let mut doc = "héllo".to_string();
        let e = apply(&mut doc, &del(4, 2)).unwrap_err();
        assert_eq!(e.doc_len, 5, "counted in characters, not bytes");
        assert_eq!(doc, "héllo", "nothing applied");
    }

    #[test]
    fn apply_counts_scalar_values() {
        assert_eq!(applied("", &ins(0, "abc")), "abc");
        assert_eq!(applied("abc", &ins(3, "d")), "abcd");
        assert_eq!(applied("a😀c", &ins(2, "b")), "a😀bc");
        assert_eq!(applied("a😀c", &del(1, 1)), "ac");
        // e + combining acute: two scalar values, deletable one at a time.
        assert_eq!(applied("e\u{301}x", &del(1, 1)), "ex");
        assert_eq!(applied("abc", &del(0, 3)), "");
        let mut s = "ab".to_string();
        assert!(apply(&mut s, &ins(3, "x")).is_err());
        assert!(apply(&mut s, &del(1, 2)).is_err());
        assert!(apply(&mut s, &del(usize::MAX, 2)).is_err());
        assert_eq!(s, "ab");
        assert!(del(1, usize::MAX).check(5).is_err());
        assert!(ins(2, "x").check(2).is_ok());
    }

    #[test]
    fn only_empty_ops_are_noops() {
        assert!(ins(3, "").is_noop());
        assert!(del(3, 0).is_noop());
        assert!(!ins(0, "x").is_noop());
        assert!(!del(0, 1).is_noop());
    }

    #[test]
    fn inserts_at_one_position_keep_server_order() {
        // "x" was accepted first, so it stays on the left of "y".
        let (x, y) = (ins(1, "x"), ins(1, "y"));
        assert_eq!(applied(&applied("ab", &x), &rebase(&y, &x)), "axyb");
        let (_, x_on_y) = transform_pair(&y, &x);
        assert_eq!(applied(&applied("ab", &y), &x_on_y), "axyb");
    }

    #[test]
    fn insert_inside_a_concurrent_delete_goes_with_it() {
        let (d, i) = (del(1, 3), ins(2, "XY"));
        assert_eq!(rebase(&i, &d), ins(1, ""));
        assert_eq!(rebase(&d, &i), del(1, 5));
        assert_eq!(applied(&applied("abcde", &d), &rebase(&i, &d)), "ae");
        assert_eq!(applied(&applied("abcde", &i), &rebase(&d, &i)), "ae");
        // At either edge it survives.
        assert_eq!(
            applied(&applied("abcde", &d), &rebase(&ins(1, "X"), &d)),
            "aXe"
        );
        assert_eq!(
            applied(&applied("abcde", &d), &rebase(&ins(4, "X"), &d)),
            "aXe"
        );
    }

    #[test]
    fn overlapping_deletes_delete_the_union() {
        let (a, b) = (del(1, 3), del(2, 3));
        assert_eq!(rebase(&a, &b), del(1, 1));
        assert_eq!(rebase(&b, &a), del(1, 1));
        assert_eq!(applied(&applied("abcdefg", &a), &rebase(&b, &a)), "afg");
        assert_eq!(rebase(&del(2, 1), &del(0, 5)), del(0, 0));
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('é'), Just('\u{301}'), Just('😀')],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    /// A text and two ops that both fit it.
    fn case() -> impl Strategy<Value = (String, Op, Op)> {
        text().prop_flat_map(|s| {
            let n = char_len(&s);
            let op = move || {
                prop_oneof![
                    (0..=n, text()).prop_map(|(pos, text)| Op::Insert { pos, text }),
                    (0..=n)
                        .prop_flat_map(move |pos| (Just(pos), 0..=n - pos))
                        .prop_map(|(pos, len)| Op::Delete { pos, len }),
                ]
            };
            (Just(s), op(), op())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// TP1: both orders give one text, for either tie-break.
        #[test]
        fn concurrent_pairs_converge((s, a, b) in case()) {
            let left = applied(&applied(&s, &a), &rebase(&b, &a));
            let (_, a_on_b) = transform_pair(&b, &a);
            let right = applied(&applied(&s, &b), &a_on_b);
            prop_assert_eq!(left, right);
        }
    }
}
