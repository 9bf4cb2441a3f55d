//! A client whose parser is not the server's: with `--parser msgpack`, every
//! Socket.IO packet is binary, so a text one (an Engine.IO `4` message) comes
//! from a client with socket.io-client's default JSON parser. socketioxide
//! would drop its session without a word (the client saw only `xhr poll
//! error`); instead the packet is refused where it arrives, with a reason
//! the client can show: a long-polling POST gets `400 { error, code:
//! "parser_mismatch" }`, a websocket is closed with 1003 and [`REASON`].
//! (A msgpack client against a JSON server cannot be told apart from JSON
//! binary attachments at this level; it gets no CONNECT back.)

use std::sync::atomic::{AtomicBool, Ordering};

/// What the client is told (at most 123 bytes: a close frame's reason).
pub const REASON: &str =
    "this server speaks msgpack (--parser msgpack): use socket.io-msgpack-parser in the client";

/// Websocket close code for data the server cannot take (RFC 6455 §7.4.1).
pub const CLOSE_UNSUPPORTED: u16 = 1003;

/// Whether a long-polling body (Engine.IO packets separated by 0x1e) holds a
/// text message packet.
pub fn has_text_packet(body: &[u8]) -> bool {
    body.split(|&b| b == 0x1e).any(|p| p.first() == Some(&b'4'))
}

static LOGGED: AtomicBool = AtomicBool::new(false);

/// Logs the first mismatch at info (a misconfigured frontend sends one per
/// attempt; the log says it once) and counts every one.
pub fn seen(transport: &str) {
    crate::metrics::connection_refused("parser_mismatch");
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::info!(
            transport,
            "a client sent a JSON (text) Socket.IO packet, but this server speaks msgpack \
             (--parser msgpack); it was refused (the client needs socket.io-msgpack-parser). \
             Logged once."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_messages_in_a_polling_body() {
        assert!(has_text_packet(b"40"));
        assert!(has_text_packet(b"2\x1e40{\"token\":\"x\"}"));
        // msgpack packets travel base64-encoded (`b...`); pings and noops are text.
        assert!(!has_text_packet(b"bAAE="));
        assert!(!has_text_packet(b"2\x1e3\x1e6\x1ebAAE="));
        assert!(!has_text_packet(b""));
    }

    #[test]
    fn the_reason_fits_a_close_frame() {
        assert!(REASON.len() <= 123);
    }
}
