//! Acks and payload checks shared by the event handlers: every refusal is an
//! error ack `{ success: false, error, code }`, never silence.

use serde::Serialize;
use serde::de::DeserializeOwned;
use socketioxide::SendError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

pub use super::ack::{Ack, Code, Refusal};

#[derive(Serialize)]
struct ErrorAck<'a> {
    success: bool,
    error: &'a str,
    code: &'a str,
}

/// Emits `event` to this socket alone, from an event handler.
///
/// socketioxide writes CONNECT before it marks the socket connected, and a
/// client that emits the moment CONNECT arrives (socket.io-client sends its
/// buffered emits then) can have that event handled in between: `emit`
/// refuses with `Closed` in that window while the ack, sent another way, goes
/// out. So wait for the flag, briefly; a socket that really is gone fails
/// after the wait as before.
pub async fn emit_to_self<A: Adapter, T: Serialize + ?Sized>(
    socket: &SocketRef<A>,
    event: &str,
    data: &T,
) -> Result<(), SendError> {
    for _ in 0..CONNECT_SETTLE_TRIES {
        if socket.connected() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    socket.emit(event, data)
}

/// How many 1 ms waits `emit_to_self` gives the connect task to finish.
const CONNECT_SETTLE_TRIES: u32 = 100;

/// Sends `data` as the ack, if the client asked for one.
pub fn ok<A: Adapter, T: Serialize + ?Sized>(ack: Option<Ack<A>>, data: &T) {
    send(ack, data, "success");
}

/// Counts the ack under `outcome` once it is queued; one that could not be
/// is counted as `dropped`, and its socket is disconnected when the reason is
/// a full queue. A success ack on a guarded websocket is counted when its
/// frame is written instead (`ws_frames`: a text frame with the JSON parser,
/// a binary one with msgpack): a queued ack can still be lost with its
/// connection (a slow consumer's), and must then not count. Keys expected
/// and never written go with the connection.
fn send<A: Adapter, T: Serialize + ?Sized>(ack: Option<Ack<A>>, data: &T, outcome: &'static str) {
    let Some(Ack { sender, socket, id }) = ack else {
        return;
    };
    let wire = (outcome == "success")
        .then(|| counted_on_the_wire(&socket))
        .flatten();
    let key = ((socket.ns() != "/").then(|| socket.ns().into()), id);
    if let Some(conn) = &wire {
        conn.expect_success_ack(key.clone());
    }
    match sender.send(data) {
        Ok(()) if wire.is_some() => {}
        Ok(()) => crate::metrics::ack(outcome),
        Err(e) => {
            if let Some(conn) = &wire {
                conn.forget_success_ack(&key);
            }
            crate::metrics::ack("dropped");
            tracing::debug!("ack not sent: {e}");
            if let SendError::Socket(socketioxide::SocketError::InternalChannelFull) = e {
                super::slow::disconnect(&socket, "ack");
            }
        }
    }
}

/// The guarded websocket that counts the socket's success acks as it writes
/// them, if there is one.
fn counted_on_the_wire<A: Adapter>(
    socket: &SocketRef<A>,
) -> Option<crate::edge::guarded_io::ConnHandle> {
    if socket.transport_type() != socketioxide::TransportType::Websocket {
        return None;
    }
    let session = socket
        .extensions
        .get::<std::sync::Arc<super::session::Session<A>>>()?;
    // Looked up once: a websocket stays the socket's transport.
    if let Some(conn) = session.websocket.get() {
        return Some(conn.clone());
    }
    let conn = super::slow::connection_of(&session.ctx, socket)?;
    Some(session.websocket.get_or_init(|| conn).clone())
}

/// Sends an error ack, if the client asked for one, and logs the refusal.
pub fn error<A: Adapter>(ack: Option<Ack<A>>, code: Code, error: &str) {
    error_as(ack, code, code.as_str(), error);
}

/// An error ack whose `code` the client sees is `shown` (a backend's hook
/// code); the metric counts it under `code`.
fn error_as<A: Adapter>(ack: Option<Ack<A>>, code: Code, shown: &str, error: &str) {
    tracing::debug!(?code, shown, error, "event refused");
    send(
        ack,
        &ErrorAck {
            success: false,
            error,
            code: shown,
        },
        code.as_str(),
    );
}

pub fn refuse<A: Adapter>(ack: Option<Ack<A>>, r: &Refusal) {
    let shown = r.hook_code.as_deref().unwrap_or(r.code.as_str());
    error_as(ack, r.code, shown, &r.error);
}

/// Parses the event payload into `T`, or explains what is wrong with it.
pub fn parse<T: DeserializeOwned>(data: Option<serde_json::Value>) -> Result<T, Refusal> {
    let data = data.ok_or_else(|| Refusal::invalid("missing payload"))?;
    serde_json::from_value(data).map_err(|e| Refusal::invalid(format!("invalid payload: {e}")))
}

/// Checks a client room id: 1–128 characters from `[A-Za-z0-9_.:@-]`.
pub fn room_id(id: &str) -> Result<&str, Refusal> {
    if crate::names::valid_room_id(id) {
        Ok(id)
    } else {
        Err(Refusal::invalid(
            "roomId must be 1-128 characters from A-Z a-z 0-9 _ . : @ -",
        ))
    }
}

/// A payload that is either the room id itself or `{ roomId }`.
pub fn room_arg(data: Option<serde_json::Value>) -> Result<String, Refusal> {
    let id = match data {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Object(mut o)) => match o.remove("roomId") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(Refusal::invalid("roomId must be a string")),
        },
        _ => return Err(Refusal::invalid("expected a roomId string or { roomId }")),
    };
    room_id(&id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn room_ids() {
        assert!(room_id("general").is_ok());
        assert!(room_id("a.b:c@d-e_f").is_ok());
        assert!(room_id("").is_err());
        assert!(room_id(&"x".repeat(129)).is_err());
        assert!(room_id("has space").is_err());
        assert!(room_id("ünï").is_err());
        assert_eq!(room_arg(Some(json!({ "roomId": "r" }))).unwrap(), "r");
        assert_eq!(room_arg(Some(json!("r"))).unwrap(), "r");
        assert!(room_arg(Some(json!(5))).is_err());
        assert!(room_arg(None).is_err());
    }
}
