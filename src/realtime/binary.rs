//! Binary data in a client event's first argument.
//!
//! Socket.IO carries binary anywhere in an event (a `Buffer`, `ArrayBuffer`
//! or `Blob` inside the payload travels as an attachment, or as msgpack
//! `bin`), but every switchboard event reads JSON fields (strings, numbers):
//! none has a place for bytes. Reading such a payload as `serde_json::Value`
//! fails, which used to look like no payload at all ("missing payload").
//! [`Checked`] reads the first argument as JSON and notes whether it held
//! binary data, so the event is refused with a message that says so
//! ([`REFUSED`], `invalid_payload`, in the event's turn) rather than dropped
//! as missing or half read.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The error ack for an event whose first argument holds binary data.
pub const REFUSED: &str = "binary data (Buffer, ArrayBuffer, Blob) is not accepted in switchboard's events: send JSON (text, e.g. base64)";

/// A first argument read as JSON; binary parts are `null` in `value` and
/// set `binary`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub value: Value,
    pub binary: bool,
}

impl Checked {
    fn json(value: Value) -> Self {
        Checked {
            value,
            binary: false,
        }
    }
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        Ok(Checked::json(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        Ok(Checked::json(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        Ok(Checked::json(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        Ok(Checked::json(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        Ok(Checked::json(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        Ok(Checked::json(Value::String(v)))
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<Checked, E> {
        Ok(Checked {
            value: Value::Null,
            binary: true,
        })
    }

    fn visit_byte_buf<E>(self, _: Vec<u8>) -> Result<Checked, E> {
        Ok(Checked {
            value: Value::Null,
            binary: true,
        })
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked::json(Value::Null))
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked::json(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        Checked::deserialize(d)
    }

    /// msgpack `ext` (notepack.io's `Uint8Array`, for one) arrives as a
    /// newtype around `(type, bytes)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        Checked::deserialize(d)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Checked, S::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        let mut binary = false;
        while let Some(item) = seq.next_element::<Checked>()? {
            binary |= item.binary;
            items.push(item.value);
        }
        Ok(Checked {
            value: Value::Array(items),
            binary,
        })
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Checked, M::Error> {
        let mut fields = Map::new();
        let mut binary = false;
        while let Some((key, item)) = map.next_entry::<String, Checked>()? {
            binary |= item.binary;
            fields.insert(key, item.value);
        }
        Ok(Checked {
            value: Value::Object(fields),
            binary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_reads_as_serde_json_does() {
        for v in [
            json!({ "roomId": "a", "content": "hi", "n": [1, -2, 2.5, null, true] }),
            json!("general"),
            json!(null),
            json!(u64::MAX),
        ] {
            let c: Checked = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(c, Checked::json(v));
        }
    }

    #[test]
    fn bytes_anywhere_are_noted() {
        // msgpack `bin` inside a map inside an array.
        let packed = rmp_serde::to_vec_named(&json!({ "a": [1, { "file": null }] })).unwrap();
        let mut raw = packed.clone();
        // Replace the nil (0xc0) with bin8 of two bytes.
        let at = raw.iter().rposition(|b| *b == 0xc0).unwrap();
        raw.splice(at..=at, [0xc4, 2, 0xde, 0xad]);
        let c: Checked = rmp_serde::from_slice(&raw).unwrap();
        assert!(c.binary);
        assert_eq!(c.value, json!({ "a": [1, { "file": null }] }));
        let plain: Checked = rmp_serde::from_slice(&packed).unwrap();
        assert!(!plain.binary);
        // msgpack ext 0 of two bytes (fixext 2), in an array.
        let c: Checked = rmp_serde::from_slice(&[0x92, 0x01, 0xd5, 0x00, 0xbe, 0xef]).unwrap();
        assert!(c.binary);
    }
}
