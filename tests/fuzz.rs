//! Property fuzzing of everything that reads client bytes before any
//! handler: payload checks, websocket frame headers, ack packets, event
//! names, and the JWT path. Each target runs for `FUZZ_SECS` seconds
//! (default 5; the test command sets 10), new random cases every run; a failure prints the
//! shrunk input.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use switchboard::auth::{AuthError, Verifier, find_token};
use switchboard::edge::escaped_names::{is_marked, rewrite_polling_body};
use switchboard::edge::ws_frames::{FrameTracker, Scan, ack_key};
use switchboard::names::check_event_name;
use switchboard::realtime::messages::{check_client_msg_id, check_content, check_user_id};
use switchboard::realtime::reply::{room_arg, room_id};

fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);
    Duration::from_secs(secs.min(60))
}

/// Runs `test` on cases from `strategy` until the time budget is spent.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let start = Instant::now();
    let mut cases = 0u64;
    while start.elapsed() < budget() {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        cases += 256;
    }
    println!("{name}: {cases} cases in {:?}", start.elapsed());
}

/// Any JSON value, nested a few levels, with strings of any characters.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,200}".prop_map(Value::String),
        "[A-Za-z0-9_.:@-]{0,140}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("roomId".to_string()),
                        Just("token".to_string()),
                        ".{0,10}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn valid_room(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

#[test]
fn room_arguments() {
    fuzz("room_arg", json(), |v| {
        if let Ok(id) = room_arg(Some(v.clone())) {
            prop_assert!(valid_room(&id), "accepted {id:?} from {v}");
        }
        if let Value::String(s) = &v {
            prop_assert_eq!(room_id(s).is_ok(), valid_room(s));
        }
        Ok(())
    });
}

#[test]
fn message_content_and_ids() {
    fuzz("content", (json(), 1usize..300), |(v, max)| {
        if let Ok(s) = check_content(Some(v.clone()), max) {
            prop_assert!(s.chars().count() <= max && !s.trim().is_empty(), "{v}");
        }
        if let Ok(Some(id)) = check_client_msg_id(Some(v.clone())) {
            prop_assert!(!id.is_empty() && id.chars().count() <= 128);
        }
        if let Value::String(s) = &v {
            let n = s.chars().count();
            prop_assert_eq!(check_user_id(s).is_ok(), (1..=128).contains(&n));
        }
        Ok(())
    });
}

#[test]
fn event_names() {
    fuzz("event_name", ".{0,140}", |name: String| {
        let ok = check_event_name(&name).is_ok();
        let n = name.chars().count();
        if ok {
            prop_assert!((1..=128).contains(&n));
            prop_assert!(!name.contains(['\n', '\r', '\0']));
        }
        Ok(())
    });
}

#[test]
fn websocket_frames_in_any_split() {
    let bytes = prop::collection::vec(any::<u8>(), 0..600);
    fuzz(
        "frames",
        (bytes, 1usize..64, 1u64..2000),
        |(buf, chunk, max)| {
            // Same verdict however the stream is cut into reads.
            let mut whole = FrameTracker::rewriting_names();
            let verdict = whole.scan(&buf, max);
            prop_assert!(whole.take_patches().iter().all(|(at, _)| *at < buf.len()));
            let mut parts = FrameTracker::rewriting_names();
            let mut offset = 0;
            let mut split = Scan::Fine;
            for part in buf.chunks(chunk) {
                if let Scan::TooBig { at } = parts.scan(part, max) {
                    split = Scan::TooBig { at: offset + at };
                    break;
                }
                offset += part.len();
            }
            match (verdict, split) {
                (Scan::Fine, Scan::Fine) => {}
                (Scan::TooBig { at: a }, Scan::TooBig { at: b }) => {
                    // A header split across reads is reported at the read where
                    // it completes (offset 0 of that read) or where it starts.
                    prop_assert!(b >= a.saturating_sub(14) && b <= a + 14, "{a} vs {b}");
                }
                (a, b) => prop_assert!(false, "whole {a:?}, split {b:?}"),
            }
            let _ = ack_key(&buf);
            Ok(())
        },
    );
}

#[test]
fn escaped_event_names() {
    let ns = prop::option::of("/[a-z-]{1,10}");
    let ack = prop::option::of(0u32..100_000);
    fuzz(
        "escaped_names",
        (".{0,40}", json(), ns, ack),
        |(name, data, ns, ack)| {
            let args = serde_json::to_string(&(name.as_str(), &data)).unwrap();
            let head = match &ns {
                Some(ns) => format!("42{ns},"),
                None => "42".into(),
            };
            let ack = ack.map(|a| a.to_string()).unwrap_or_default();
            let packet = format!("{head}{ack}{args}");
            let mut out = packet.clone().into_bytes();
            rewrite_polling_body(&mut out);
            prop_assert_eq!(out.len(), packet.len());
            let out = String::from_utf8(out).expect("still UTF-8");
            let out_args = &out[head.len() + ack.len()..];
            // The name now reads as a borrowed &str, as socketioxide reads it.
            let parts: Vec<&serde_json::value::RawValue> = serde_json::from_str(out_args).unwrap();
            let read: &str = serde_json::from_str(parts[0].get()).expect("borrowed name");
            let before: Vec<&serde_json::value::RawValue> = serde_json::from_str(&args).unwrap();
            prop_assert_eq!(parts[1].get(), before[1].get(), "the data is untouched");
            if args[..args.len() - parts[1].get().len()].contains('\\') {
                prop_assert!(is_marked(read), "{read:?}");
            } else {
                prop_assert_eq!(&out, &packet);
            }
            Ok(())
        },
    );
}

#[test]
fn ack_packets_round_trip() {
    let ns = prop_oneof![Just(None), "/[a-z0-9-]{1,20}".prop_map(Some)];
    fuzz(
        "ack_key",
        (ns, 0i64..i64::MAX, ".{0,30}"),
        |(ns, id, rest)| {
            let packet = match &ns {
                Some(ns) => format!("43{ns},{id}[{rest}"),
                None => format!("43{id}[{rest}"),
            };
            let key = ack_key(packet.as_bytes());
            prop_assert_eq!(key, Some((ns.map(Into::into), id)));
            Ok(())
        },
    );
}

/// An ack packet as socketioxide's msgpack parser writes it (fields in this
/// order, ints in their shortest form).
#[derive(serde::Serialize)]
struct MsgpackAck<'a> {
    r#type: u8,
    nsp: &'a str,
    data: &'a [Value],
    id: i64,
}

#[test]
fn msgpack_acks_are_found_in_written_frames() {
    let ns = prop_oneof![Just(None), "/[a-z0-9-]{1,20}".prop_map(Some)];
    let id = prop_oneof![0i64..1000, any::<i64>()];
    fuzz(
        "msgpack_ack_keys",
        (ns, id, prop::collection::vec(json(), 0..3), 1usize..64),
        |(ns, id, data, chunk)| {
            let nsp = ns.clone().unwrap_or_else(|| "/".into());
            let payload = rmp_serde::to_vec_named(&MsgpackAck {
                r#type: 3,
                nsp: &nsp,
                data: &data,
                id,
            })
            .unwrap();
            let mut frame = vec![0x82u8];
            match payload.len() {
                n if n < 126 => frame.push(n as u8),
                n if n < 65536 => {
                    frame.push(126);
                    frame.extend((n as u16).to_be_bytes());
                }
                n => {
                    frame.push(127);
                    frame.extend((n as u64).to_be_bytes());
                }
            }
            frame.extend(&payload);
            let mut t = FrameTracker::tracking_acks();
            for part in frame.chunks(chunk) {
                t.scan(part, u64::MAX);
            }
            let written = t.take_written_acks();
            prop_assert_eq!(written.len(), 1);
            let key = (ns.map(Into::into), id);
            prop_assert!(written[0].contains(&key), "{key:?} in {:?}", written[0]);
            if (0..1 << 31).contains(&id) {
                // A client's ids: the real one is the only reading, unless
                // the data's last bytes happen to read as a longer int.
                prop_assert_eq!(written[0].last(), Some(&key));
            }
            Ok(())
        },
    );
}

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";

fn valid_token() -> String {
    switchboard::mint_hs256(
        SECRET,
        &switchboard::TokenSpec {
            sub: "alice".into(),
            ttl_secs: 600,
            ..Default::default()
        },
    )
}

#[test]
fn jwt_garbage_is_refused() {
    let v = Verifier::hs256(SECRET, None, None);
    let b64 = "[A-Za-z0-9_-]{0,80}";
    let shaped = (b64, b64, b64).prop_map(|(a, b, c)| format!("{a}.{b}.{c}"));
    fuzz(
        "jwt_garbage",
        prop_oneof![".{0,300}", shaped],
        |t: String| {
            prop_assert!(v.verify(&t).is_err(), "{t:?} verified");
            Ok(())
        },
    );
}

#[test]
fn jwt_tampering_is_refused() {
    let v = Verifier::hs256(SECRET, None, None);
    let token = valid_token();
    assert!(v.verify(&token).is_ok());
    let n = token.len();
    fuzz("jwt_tamper", (0..n, any::<u8>()), |(i, b)| {
        let mut t = token.clone().into_bytes();
        if t[i] == b || !b.is_ascii_graphic() {
            return Ok(());
        }
        t[i] = b;
        let t = String::from_utf8(t).unwrap();
        // Base64url's last character may carry unused bits: a change there
        // can decode to the same bytes, and then the token is the same.
        match v.verify(&t) {
            Ok(_) => prop_assert!(i == n - 1, "tampered at {i} and verified"),
            Err(e) => prop_assert!(e != AuthError::Missing),
        }
        Ok(())
    });
}

#[test]
fn token_sources() {
    fuzz(
        "find_token",
        (".{0,100}", ".{0,100}", json()),
        |(header, query, auth)| {
            let found = find_token(Some(&auth), Some(&header), Some(&query));
            if let Some(t) = auth.get("token").and_then(Value::as_str) {
                prop_assert_eq!(found.as_deref(), Some(t));
            }
            Ok(())
        },
    );
}
