//! Reads a Yjs update (v1) without building it, before yrs does: yrs
//! decodes nested values recursively with no depth limit (an update of
//! 20 KB nesting arrays 10,000 deep overflows a worker's stack and ends the
//! process) and reserves room for counts as declared. This walks the same
//! layout as yrs 0.28's decoder, refusing values nested deeper than
//! [`MAX_DEPTH`] and counts larger than the bytes left could hold. What it
//! accepts, yrs may still refuse; what yrs accepts, this accepts unless it
//! nests too deep. Pure.

/// The deepest nesting of arrays and maps in an update's values (editors
/// store shallow JSON-like attributes; 64 is far beyond them).
pub const MAX_DEPTH: usize = 64;

/// The largest client id: Yjs's ids are 53-bit (JavaScript's safe
/// integers); yrs masks a larger one to 53 bits (and asserts on it in debug
/// builds), and lib0 refuses to read one.
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Why an update was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooDeep,
    ClientId,
    Truncated,
    Implausible,
    Unknown(&'static str),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooDeep => write!(f, "values nested deeper than {MAX_DEPTH}"),
            Refused::ClientId => write!(f, "a client id larger than 2^53 - 1"),
            Refused::Truncated => write!(f, "truncated"),
            Refused::Implausible => write!(f, "a count larger than the bytes left"),
            Refused::Unknown(what) => write!(f, "unknown {what}"),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn u8(&mut self) -> Result<u8, Refused> {
        let b = *self.buf.get(self.at).ok_or(Refused::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), Refused> {
        if n > self.left() {
            return Err(Refused::Truncated);
        }
        self.at += n;
        Ok(())
    }

    /// A varuint or varint: bytes up to the first without the high bit.
    fn var(&mut self) -> Result<u64, Refused> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i < 9 {
                value |= u64::from(b & 0x7f) << (7 * i);
            }
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Refused::Truncated)
    }

    /// A client id.
    fn client(&mut self) -> Result<u64, Refused> {
        let id = self.var()?;
        if id > MAX_CLIENT_ID {
            return Err(Refused::ClientId);
        }
        Ok(id)
    }

    /// A count whose items take at least `min` bytes each.
    fn count(&mut self, min: usize) -> Result<u64, Refused> {
        let n = self.var()?;
        if n.saturating_mul(min as u64) > self.left() as u64 {
            return Err(Refused::Implausible);
        }
        Ok(n)
    }

    /// A string or buffer: its length, then its bytes.
    fn bytes(&mut self) -> Result<(), Refused> {
        let n = self.var()?;
        self.skip(usize::try_from(n).map_err(|_| Refused::Truncated)?)
    }

    fn any(&mut self, depth: usize) -> Result<(), Refused> {
        match self.u8()? {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.var().map(drop),
            124 => self.skip(4),
            123 | 122 => self.skip(8),
            119 | 116 => self.bytes(),
            tag @ (118 | 117) => {
                if depth >= MAX_DEPTH {
                    return Err(Refused::TooDeep);
                }
                let n = self.count(1)?;
                for _ in 0..n {
                    if tag == 118 {
                        self.bytes()?;
                    }
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            _ => Err(Refused::Unknown("value type")),
        }
    }

    fn content(&mut self, info: u8) -> Result<(), Refused> {
        match info & 0b1111 {
            1 => self.var().map(drop),
            // yrs reads one more string than the count says.
            2 => {
                let n = self.count(1)?;
                for _ in 0..=n {
                    self.bytes()?;
                }
                Ok(())
            }
            3..=5 => self.bytes(),
            6 => {
                self.bytes()?;
                self.bytes()
            }
            7 => match self.u8()? {
                3 => self.bytes(),
                0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => Ok(()),
                _ => Err(Refused::Unknown("type")),
            },
            8 => {
                let n = self.count(1)?;
                for _ in 0..n {
                    self.any(0)?;
                }
                Ok(())
            }
            9 => {
                self.bytes()?;
                self.any(0)
            }
            _ => Err(Refused::Unknown("content")),
        }
    }

    fn block(&mut self) -> Result<(), Refused> {
        let info = self.u8()?;
        match info {
            10 | 0 => self.var().map(drop),
            _ => {
                if info & 0x80 != 0 {
                    self.client()?;
                    self.var()?;
                }
                if info & 0x40 != 0 {
                    self.client()?;
                    self.var()?;
                }
                if info & 0xc0 == 0 {
                    if self.var()? == 1 {
                        self.bytes()?;
                    } else {
                        self.client()?;
                        self.var()?;
                    }
                    if info & 0x20 != 0 {
                        self.bytes()?;
                    }
                }
                self.content(info)
            }
        }
    }
}

/// Checks a Yjs update (v1) before it is decoded.
pub fn update(buf: &[u8]) -> Result<(), Refused> {
    let mut r = Reader { buf, at: 0 };
    let clients = r.count(3)?;
    for _ in 0..clients {
        let blocks = r.count(1)?;
        r.client()?;
        r.var()?; // clock
        for _ in 0..blocks {
            r.block()?;
        }
    }
    // The delete set.
    let clients = r.count(2)?;
    for _ in 0..clients {
        r.client()?;
        let ranges = r.count(2)?;
        for _ in 0..ranges {
            r.var()?;
            r.var()?;
        }
    }
    Ok(())
}

/// Checks a state vector (a sync step 1): its count and client ids.
pub fn state_vector(buf: &[u8]) -> Result<(), Refused> {
    let mut r = Reader { buf, at: 0 };
    let clients = r.count(2)?;
    for _ in 0..clients {
        r.client()?;
        r.var()?;
    }
    Ok(())
}

/// Checks an awareness update: its count and client ids (each entry a
/// client id, a clock and a JSON string).
pub fn awareness(buf: &[u8]) -> Result<(), Refused> {
    let mut r = Reader { buf, at: 0 };
    let clients = r.count(3)?;
    for _ in 0..clients {
        r.client()?;
        r.var()?;
        r.bytes()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Any, Array, Map, ReadTxn, Text, Transact};

    fn state(doc: &yrs::Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    }

    #[test]
    fn what_editors_send_passes() {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        let arr = doc.get_or_insert_array("a");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello wörld");
            text.remove_range(&mut txn, 1, 2);
            map.insert(&mut txn, "n", 1.5);
            map.insert(
                &mut txn,
                "nested",
                Any::from(vec![Any::from(vec![Any::from("x")])]),
            );
            arr.insert(&mut txn, 0, true);
            arr.insert(&mut txn, 1, Any::Null);
        }
        assert_eq!(update(&state(&doc)), Ok(()));
        let empty = yrs::Doc::new();
        assert_eq!(update(&state(&empty)), Ok(()));
        // A diff against a state vector, as sync step 2 sends it.
        let other = yrs::Doc::new();
        let sv = other.transact().state_vector();
        assert_eq!(update(&doc.transact().encode_diff_v1(&sv)), Ok(()));
    }

    #[test]
    fn deep_values_are_refused_before_yrs_recurses() {
        let mut v = Any::from("leaf");
        for _ in 0..(MAX_DEPTH + 1) {
            v = Any::from(vec![v]);
        }
        let doc = yrs::Doc::new();
        let map = doc.get_or_insert_map("m");
        map.insert(&mut doc.transact_mut(), "deep", v);
        assert_eq!(update(&state(&doc)), Err(Refused::TooDeep));
    }

    #[test]
    fn lies_and_truncations_are_refused() {
        assert_eq!(
            update(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(Refused::Implausible)
        );
        assert_eq!(update(&[]), Err(Refused::Truncated));
        let doc = yrs::Doc::new();
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, "abc");
        let full = state(&doc);
        for cut in 1..full.len() {
            assert!(update(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn client_ids_past_53_bits_are_refused() {
        let big = |n: u64| {
            let mut out = Vec::new();
            let mut n = n;
            while n >= 0x80 {
                out.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out
        };
        // A state vector: one client at clock 1.
        let sv = |id: u64| [vec![1], big(id), vec![1]].concat();
        assert_eq!(state_vector(&sv(MAX_CLIENT_ID)), Ok(()));
        assert_eq!(state_vector(&sv(MAX_CLIENT_ID + 1)), Err(Refused::ClientId));
        // An awareness entry: id, clock, "{}".
        let aw = |id: u64| [vec![1], big(id), vec![1, 2, b'{', b'}']].concat();
        assert_eq!(awareness(&aw(7)), Ok(()));
        assert_eq!(awareness(&aw(1 << 60)), Err(Refused::ClientId));
        // An update's delete set naming such a client.
        let ds = [vec![0, 1], big(1 << 54), vec![1, 0, 1]].concat();
        assert_eq!(update(&ds), Err(Refused::ClientId));
        assert_eq!(
            update(&[vec![0, 1], big(3), vec![1, 0, 1]].concat()),
            Ok(())
        );
    }
}
