//! The way in for client events: the fallback handler that reads each event
//! on the socket's read path and appends it to the socket's queue (see
//! `session`), refusing at once what must not wait (a closing socket, a
//! flood, a full queue).

use std::convert::Infallible;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::Socket;

use super::ack::Ack;
use super::session::{Incoming, Job, Session};

/// Events at least this large ask for freed memory to be returned.
const LARGE_EVENT_BYTES: usize = 256 * 1024;

/// The fallback handler, called for every event on the socket's read path:
/// queues the event (see the module doc). socketioxide would spawn a task
/// per event for a closure handler, even one that does nothing; this spawns
/// nothing.
#[derive(Clone, Copy)]
pub struct QueueEvents;

impl<A: Adapter> MessageHandler<A, QueueEvents> for QueueEvents {
    fn call(&self, s: Arc<Socket<A>>, mut v: Value, ack_id: Option<i64>) {
        let Some(session) = s.extensions.get::<Arc<Session<A>>>() else {
            tracing::debug!("event on a socket without a session");
            return;
        };
        // A large event's buffers (the text, the parsed value, socketioxide's
        // copies) are freed once it is handled; glibc keeps such memory
        // unless asked to give it back (see `edge::trim`).
        let size = match &v {
            Value::Str(text, _) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
        };
        if size >= LARGE_EVENT_BYTES {
            crate::edge::trim::soon();
        }
        // A JSON event without binary attachments is read in one pass; the
        // extractors below read the text twice and build an error on the
        // way each time (socketioxide's `FirstElement`).
        let parsed = match &v {
            Value::Str(text, None) => read_event(text),
            _ => None,
        };
        let (event, data, binary) = match parsed {
            Some((event, data)) => (event, data, false),
            None => {
                let Ok(Event(event)) = Event::from_message_parts(&s, &mut v, &ack_id) else {
                    tracing::debug!("unreadable event name");
                    return;
                };
                // Binary attachments (or msgpack `bin`) are noted, not lost.
                let Ok::<_, Infallible>(TryData(data)) =
                    TryData::<super::binary::Checked>::from_message_parts(&s, &mut v, &ack_id);
                match data {
                    Ok(c) => (event, Some(c.value), c.binary),
                    Err(_) => (event, None, false),
                }
            }
        };
        let Ok::<_, Infallible>(socket) = SocketRef::from_message_parts(&s, &mut v, &ack_id);
        let ack = match ack_id {
            Some(id) => {
                let Ok::<_, Infallible>(ack) = AckSender::from_message_parts(&s, &mut v, &ack_id);
                Some(Ack::new(ack, socket.clone(), id))
            }
            None => None,
        };
        if let Some(reason) = session.closing_reason() {
            // Answered, not queued; the close waits for these to stop.
            session.heard();
            let (code, why) = super::closing::refusal(reason);
            return super::reply::error(ack, code, &why);
        }
        if !session.limits.event() {
            crate::metrics::limit_hit("events_per_sec");
            if let Some(ack) = ack {
                super::reply::error(
                    Some(ack),
                    super::reply::Code::RateLimited,
                    "too many events: slow down",
                );
            }
            super::closing::rate_refused(&session, &socket);
            return;
        }
        let job = Job::Event(Incoming {
            event,
            data,
            binary,
            ack,
        });
        if let Err(Job::Event(refused)) = session.push(socket, job) {
            tracing::debug!(event = refused.event, "socket queue full");
            super::reply::error(
                refused.ack,
                super::reply::Code::RateLimited,
                "too many events waiting",
            );
        }
    }
}

/// `["name", first, ...rest]` -> (name, first argument); the rest is checked
/// to be JSON and skipped. `None` when the text is not such an array.
fn read_event(text: &str) -> Option<(String, Option<serde_json::Value>)> {
    use serde::de::{Deserializer as _, Error, IgnoredAny, SeqAccess, Visitor};
    struct Args;
    impl<'de> Visitor<'de> for Args {
        type Value = (String, Option<serde_json::Value>);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event array")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            let Some(name) = seq.next_element::<String>()? else {
                return Err(S::Error::custom("no event name"));
            };
            let data = seq.next_element::<serde_json::Value>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok((name, data))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let args = (&mut de).deserialize_seq(Args).ok()?;
    de.end().ok()?;
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::read_event;
    use serde_json::json;

    #[test]
    fn reads_the_name_and_the_first_argument() {
        assert_eq!(
            read_event(r#"["chat:send",{"roomId":"a"},2,[3]]"#),
            Some(("chat:send".into(), Some(json!({ "roomId": "a" }))))
        );
        assert_eq!(read_event(r#"["ping"]"#), Some(("ping".into(), None)));
        assert_eq!(
            read_event(r#"["x",null]"#),
            Some(("x".into(), Some(json!(null))))
        );
        assert_eq!(
            read_event(r#"["éé",1]"#),
            Some(("éé".into(), Some(json!(1))))
        );
        for bad in ["[]", "[1]", "{}", r#""x""#, r#"["x",1"#, r#"["x"] 1"#, ""] {
            assert_eq!(read_event(bad), None, "{bad}");
        }
    }
}
