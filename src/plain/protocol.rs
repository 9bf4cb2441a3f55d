//! What a plain client sends (docs/protocol.md §19), read into the Socket.IO
//! event it stands for, and the answer it gets once that event is acked.
//! Pure: text in, values out.

use serde_json::{Map, Value, json};

/// The longest request `id` a client may give (a string's characters).
pub const MAX_ID_CHARS: usize = 128;

/// How the messages of a room reach this client: the `room_msg` shape, or
/// the `{ type: "message", room, payload }` one of clients that joined with
/// `join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    RoomMsg,
    Message,
}

/// What a client's message asks for.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// `{ type: "auth", token }`.
    Auth(String),
    /// `{ type: "event_ack", ackId, data }`: the answer to an event a
    /// backend sent with an ack request.
    AnswerServer(u64, Value),
    /// A Socket.IO event for the client's socket, and how to answer its ack.
    Emit {
        event: &'static str,
        data: Value,
        answer: Answer,
    },
}

/// How an ack becomes the answer of a request without an `id` (with one,
/// every answer is `ack` or `error`).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Nothing: what the request does shows by itself (a message comes back
    /// as `room_msg`, a ping as `pong`).
    Silent,
    Joined(String, Style),
    Left(String),
    /// `history`, with what it was asked for (`roomId` or `withUserId`).
    History(Map<String, Value>),
    Members,
    Refreshed,
}

/// A refusal made before anything reaches the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    fn invalid(message: impl Into<String>) -> Self {
        Refused {
            code: "invalid_payload",
            message: message.into(),
        }
    }
}

/// One message read: its `id` and `type` (echoed in the answer) and what it asks.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub id: Option<Value>,
    pub kind: Option<String>,
    pub request: Result<Request, Refused>,
}

/// Reads one text message.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed {
        id: None,
        kind: None,
        request: Err(Refused::invalid("not JSON")),
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return parsed;
    };
    let Value::Object(mut msg) = value else {
        parsed.request = Err(Refused::invalid("a message is a JSON object with a type"));
        return parsed;
    };
    match msg.remove("id") {
        None | Some(Value::Null) => {}
        Some(id @ Value::Number(_)) => parsed.id = Some(id),
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => {
            parsed.id = Some(Value::String(s))
        }
        Some(_) => {
            parsed.request = Err(Refused::invalid(format!(
                "id must be a number or a string of at most {MAX_ID_CHARS} characters"
            )));
            return parsed;
        }
    }
    let kind = match msg.get("type") {
        Some(Value::String(t)) if t.len() <= 64 => t.clone(),
        _ => {
            parsed.request = Err(Refused::invalid("type must be a string"));
            return parsed;
        }
    };
    parsed.request = request(&kind, msg);
    parsed.kind = Some(kind);
    parsed
}

fn request(kind: &str, mut msg: Map<String, Value>) -> Result<Request, Refused> {
    let emit = |event, data, answer| {
        Ok(Request::Emit {
            event,
            data,
            answer,
        })
    };
    match kind {
        "auth" => match msg.remove("token") {
            Some(Value::String(t)) => Ok(Request::Auth(t)),
            _ => Err(Refused::invalid("auth needs a token string")),
        },
        "event_ack" => match msg.get("ackId").and_then(Value::as_u64) {
            Some(ack) => Ok(Request::AnswerServer(
                ack,
                msg.remove("data").unwrap_or(Value::Null),
            )),
            None => Err(Refused::invalid("event_ack needs the ackId of the event")),
        },
        "join_room" | "join" | "subscribe" => {
            let room = room_of(&mut msg)?;
            let style = if kind == "join" {
                Style::Message
            } else {
                Style::RoomMsg
            };
            emit(
                "room:join",
                room.clone(),
                Answer::Joined(text(&room), style),
            )
        }
        "leave_room" | "leave" | "unsubscribe" => {
            let room = room_of(&mut msg)?;
            emit("room:leave", room.clone(), Answer::Left(text(&room)))
        }
        "room_msg" | "message" | "chat" | "broadcast" => {
            let content = content_of(&mut msg)?;
            let client_msg_id = msg.remove("clientMsgId");
            let to = ["toUserId", "receiver"]
                .iter()
                .find_map(|k| msg.remove(*k).filter(|v| !v.is_null()));
            let room = room_of(&mut msg);
            let mut data = Map::new();
            let event = match (room, to) {
                (Ok(room), _) => {
                    data.insert("roomId".into(), room);
                    "chat:send"
                }
                (Err(_), Some(to)) if kind == "message" => {
                    data.insert("toUserId".into(), to);
                    "private:send"
                }
                (Err(_), _) => {
                    return Err(Refused {
                        code: "forbidden_room",
                        message: "a message needs a room: there is no broadcast to everyone".into(),
                    });
                }
            };
            data.insert("content".into(), content);
            if let Some(id) = client_msg_id {
                data.insert("clientMsgId".into(), id);
            }
            emit(event, Value::Object(data), Answer::Silent)
        }
        "private_msg" => {
            let content = content_of(&mut msg)?;
            let to = ["toUserId", "toUser", "to"]
                .iter()
                .find_map(|k| msg.remove(*k).filter(|v| !v.is_null()))
                .ok_or_else(|| Refused::invalid("private_msg needs toUserId"))?;
            let mut data = Map::new();
            data.insert("toUserId".into(), to);
            data.insert("content".into(), content);
            if let Some(id) = msg.remove("clientMsgId") {
                data.insert("clientMsgId".into(), id);
            }
            emit("private:send", Value::Object(data), Answer::Silent)
        }
        "history" => {
            let mut data = Map::new();
            if let Ok(room) = room_of(&mut msg) {
                data.insert("roomId".into(), room);
            }
            for key in ["withUserId", "before", "after", "limit"] {
                if let Some(v) = msg.remove(key) {
                    data.insert(key.into(), v);
                }
            }
            let asked = ["roomId", "withUserId"]
                .iter()
                .filter_map(|k| data.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            emit("chat:history", Value::Object(data), Answer::History(asked))
        }
        "members" => {
            let room = room_of(&mut msg)?;
            emit("room:members", room, Answer::Members)
        }
        "typing" => {
            let room = room_of(&mut msg)?;
            let event = match msg.get("typing") {
                None | Some(Value::Bool(true)) => "typing:start",
                Some(Value::Bool(false)) => "typing:stop",
                Some(_) => return Err(Refused::invalid("typing must be true or false")),
            };
            emit(event, room, Answer::Silent)
        }
        "ping" | "heartbeat" => {
            let ts = msg.remove("ts").unwrap_or(Value::Null);
            emit("ping", json!({ "ts": ts }), Answer::Silent)
        }
        _ => Err(Refused {
            code: "not_found",
            message: format!("unknown type {}", json!(kind)),
        }),
    }
}

/// The room a request names: `roomId`, `room` or `channel` (checked by the
/// socket's handler, as for a Socket.IO client).
fn room_of(msg: &mut Map<String, Value>) -> Result<Value, Refused> {
    ["roomId", "room", "channel"]
        .iter()
        .find_map(|k| msg.remove(*k).filter(|v| !v.is_null()))
        .ok_or_else(|| Refused::invalid("missing roomId"))
}

/// A message's content: `content`, `payload`, `message` or `text`; a value
/// that is not a string is its JSON text.
fn content_of(msg: &mut Map<String, Value>) -> Result<Value, Refused> {
    let content = ["content", "payload", "message", "text"]
        .iter()
        .find_map(|k| msg.remove(*k).filter(|v| !v.is_null()))
        .ok_or_else(|| Refused::invalid("missing content"))?;
    Ok(match content {
        Value::String(_) => content,
        other => Value::String(other.to_string()),
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The answer to a request whose Socket.IO ack is `ack`: with an `id`,
/// `ack` or `error`; without, `error` or what `answer` says (or nothing).
pub fn answer(id: Option<&Value>, kind: &str, answer: &Answer, ack: Value) -> Option<Value> {
    let mut ack = match ack {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    if ack.get("success") == Some(&Value::Bool(false)) {
        let code = ack.remove("code").unwrap_or_else(|| json!("internal"));
        let message = ack.remove("error").unwrap_or_else(|| json!(""));
        return Some(error_value(id, Some(kind), code, message));
    }
    for key in ["messages"] {
        if let Some(Value::Array(list)) = ack.get_mut(key) {
            for m in list.iter_mut() {
                *m = crate::plain::events::history_message(std::mem::take(m));
            }
        }
    }
    if let Some(id) = id {
        let mut out = Map::new();
        out.insert("type".into(), json!("ack"));
        out.insert("id".into(), id.clone());
        out.insert("success".into(), json!(true));
        ack.remove("success");
        out.extend(ack);
        return Some(Value::Object(out));
    }
    ack.remove("success");
    let (kind, mut out) = match answer {
        Answer::Silent => return None,
        Answer::Joined(..) => ("joined", ack),
        Answer::Left(..) => ("left", ack),
        Answer::History(asked) => {
            let mut ack = ack;
            ack.extend(asked.clone());
            ("history", ack)
        }
        Answer::Members => ("members", ack),
        Answer::Refreshed => ("token_refreshed", ack),
    };
    out.insert("type".into(), json!(kind));
    Some(Value::Object(out))
}

/// `{ type: "error", id?, code, message, request? }`.
pub fn error_value(id: Option<&Value>, kind: Option<&str>, code: Value, message: Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!("error"));
    if let Some(id) = id {
        out.insert("id".into(), id.clone());
    }
    out.insert("code".into(), code);
    out.insert("message".into(), message);
    if let Some(kind) = kind {
        out.insert("request".into(), json!(kind));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(text: &str) -> (&'static str, Value, Answer) {
        match parse(text).request {
            Ok(Request::Emit {
                event,
                data,
                answer,
            }) => (event, data, answer),
            other => panic!("{text}: {other:?}"),
        }
    }

    fn refused(text: &str) -> Refused {
        parse(text).request.expect_err(text)
    }

    #[test]
    fn seed_types_become_socketio_events() {
        assert_eq!(
            emit(r#"{"type":"join_room","roomId":"general"}"#),
            (
                "room:join",
                json!("general"),
                Answer::Joined("general".into(), Style::RoomMsg)
            )
        );
        assert_eq!(
            emit(r#"{"type":"join","room":"r"}"#).2,
            Answer::Joined("r".into(), Style::Message)
        );
        assert_eq!(emit(r#"{"type":"subscribe","channel":"c"}"#).0, "room:join");
        assert_eq!(
            emit(r#"{"type":"room_msg","roomId":"g","content":"hi"}"#),
            (
                "chat:send",
                json!({"roomId":"g","content":"hi"}),
                Answer::Silent
            )
        );
        assert_eq!(
            emit(r#"{"type":"broadcast","room":"g","payload":{"x":1}}"#).1,
            json!({"roomId":"g","content":"{\"x\":1}"})
        );
        assert_eq!(
            emit(r#"{"type":"message","receiver":"bob","content":"psst"}"#).0,
            "private:send"
        );
        assert_eq!(
            emit(r#"{"type":"private_msg","toUser":"bob","content":"psst","clientMsgId":"c1"}"#),
            (
                "private:send",
                json!({"toUserId":"bob","content":"psst","clientMsgId":"c1"}),
                Answer::Silent
            )
        );
        assert_eq!(
            emit(r#"{"type":"typing","roomId":"g","typing":false}"#).0,
            "typing:stop"
        );
        assert_eq!(emit(r#"{"type":"heartbeat"}"#).1, json!({"ts": null}));
        assert_eq!(
            emit(r#"{"type":"history","roomId":"g","after":3,"limit":10}"#).1,
            json!({"roomId":"g","after":3,"limit":10})
        );
    }

    #[test]
    fn refusals_name_their_code() {
        assert_eq!(refused("{").code, "invalid_payload");
        assert_eq!(refused("[1]").code, "invalid_payload");
        assert_eq!(refused(r#"{"type":"nope"}"#).code, "not_found");
        assert_eq!(
            refused(r#"{"type":"broadcast","payload":"all"}"#).code,
            "forbidden_room"
        );
        assert_eq!(refused(r#"{"type":"join_room"}"#).code, "invalid_payload");
        let long = "x".repeat(MAX_ID_CHARS + 1);
        assert_eq!(
            refused(&format!(r#"{{"type":"ping","id":"{long}"}}"#)).code,
            "invalid_payload"
        );
        assert_eq!(parse(r#"{"type":"ping","id":7}"#).id, Some(json!(7)));
    }

    #[test]
    fn history_answers_say_what_was_asked() {
        let (_, _, asked) = emit(r#"{"type":"history","withUserId":"bob"}"#);
        assert_eq!(
            answer(
                None,
                "history",
                &asked,
                json!({"success": true, "messages": []})
            ),
            Some(json!({"type":"history","withUserId":"bob","messages":[]}))
        );
    }

    #[test]
    fn acks_become_answers() {
        let ok = json!({"success": true, "messageId": "m1", "seq": 4});
        assert_eq!(
            answer(Some(&json!(1)), "room_msg", &Answer::Silent, ok.clone()),
            Some(json!({"type":"ack","id":1,"success":true,"messageId":"m1","seq":4}))
        );
        assert_eq!(answer(None, "room_msg", &Answer::Silent, ok), None);
        let no = json!({"success": false, "error": "slow down", "code": "rate_limited"});
        assert_eq!(
            answer(None, "room_msg", &Answer::Silent, no),
            Some(
                json!({"type":"error","code":"rate_limited","message":"slow down","request":"room_msg"})
            )
        );
        let joined = json!({"success": true, "roomId": "g", "members": []});
        assert_eq!(
            answer(
                None,
                "join",
                &Answer::Joined("g".into(), Style::Message),
                joined
            ),
            Some(json!({"type":"joined","roomId":"g","members":[]}))
        );
    }
}
