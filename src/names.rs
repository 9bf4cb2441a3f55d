//! Names and their rules, pure: the Socket.IO rooms behind a user and a
//! client room, which room ids (and document ids) a client may use, and
//! which event names the server emits on a backend's behalf (HTTP API and
//! [`crate::hub::Hub`]): 1–128 characters, no control characters (an SSE
//! `event:` line cannot carry a line break), and none that Socket.IO reserves.

/// The Socket.IO room of every socket of user `user_id`.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The Socket.IO room behind client room `room_id`.
pub fn client_room(room_id: &str) -> String {
    format!("room:{room_id}")
}

/// Whether `id` is a valid room id (and document id): 1–128 characters
/// from `[A-Za-z0-9_.:@-]`.
pub fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
}

/// Longest event name, in characters.
pub const MAX_EVENT_NAME_CHARS: usize = 128;

/// Events the Socket.IO protocol reserves; a server must not emit them.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Why `name` cannot be emitted, if it cannot.
pub fn check_event_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_EVENT_NAME_CHARS {
        return Err(format!("event must be 1-{MAX_EVENT_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("event must not contain control characters".into());
    }
    if RESERVED_EVENTS.contains(&name) {
        return Err(format!("'{name}' is a reserved event name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        assert!(check_event_name("notification").is_ok());
        assert!(check_event_name("é \"quoted\" ünïcode").is_ok());
        assert!(check_event_name(&"é".repeat(128)).is_ok());
        assert!(check_event_name(&"é".repeat(129)).is_err());
        assert!(check_event_name("").is_err());
        assert!(check_event_name("a\nb").is_err());
        assert!(check_event_name("a\rb").is_err());
        assert!(check_event_name("a\u{0}b").is_err());
        assert!(check_event_name("disconnect").is_err());
    }
}
