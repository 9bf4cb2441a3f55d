//! Broadcasts turned into plain JSON once, not once per recipient.
//!
//! Every bridge in a room receives the very same Socket.IO frame for a
//! broadcast; reading it into a JSON tree and writing the plain message
//! again, per recipient, made a plain client's delivery cost about twice a
//! Socket.IO client's. The first bridge to meet a frame leaves the text it
//! made here; the others compare the frame and reuse the text. Only events
//! without side effects on the bridge (no ack id, not `server:closing` or
//! `room:left`) are kept, and the text also depends on one thing per
//! client: whether it joined the message's room with `join` (the `message`
//! shape).

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes as Text;
use tokio_tungstenite_client::tungstenite::Utf8Bytes as Frame;

/// How many recent frames are kept: enough for broadcasts to a few rooms
/// at once to meet their recipients.
const KEPT: usize = 16;

/// One frame and its plain texts.
struct Entry {
    frame: Frame,
    /// The room of a chat message (its shape depends on it), if any.
    room: Option<String>,
    /// The text for clients that joined the room otherwise / with `join`.
    texts: [Option<Text>; 2],
}

/// The recent translations, shared by the bridges of one server.
#[derive(Default)]
pub struct Translations {
    recent: Mutex<VecDeque<Entry>>,
}

impl std::fmt::Debug for Translations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Translations")
    }
}

impl Translations {
    /// The text made for `frame` in the shape `message_style` says for its
    /// room.
    pub fn find(&self, frame: &Frame, message_style: impl Fn(&str) -> bool) -> Option<Text> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let e = recent.iter().find(|e| e.frame == *frame)?;
        let shape = usize::from(e.room.as_deref().is_some_and(&message_style));
        e.texts[shape].clone()
    }

    /// Keeps `text`, made for `frame` (a message of `room`, if any) in the
    /// `message` shape or not.
    pub fn keep(&self, frame: &Frame, room: Option<&str>, message_shape: bool, text: Text) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let shape = usize::from(message_shape);
        if let Some(e) = recent.iter_mut().find(|e| e.frame == *frame) {
            e.texts[shape] = Some(text);
            return;
        }
        if recent.len() >= KEPT {
            recent.pop_front();
        }
        let mut texts = [None, None];
        texts[shape] = Some(text);
        recent.push_back(Entry {
            frame: frame.clone(),
            room: room.map(str::to_owned),
            texts,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_translated_once_per_shape() {
        let t = Translations::default();
        let frame = Frame::from("42[\"chat:message\",{\"roomId\":\"g\"}]");
        let text = |found: Option<Text>| found.map(|t| t.as_str().to_owned());
        assert_eq!(text(t.find(&frame, |_| false)), None);
        t.keep(&frame, Some("g"), false, Text::from("room_msg"));
        assert_eq!(text(t.find(&frame, |_| false)).as_deref(), Some("room_msg"));
        // A client that joined "g" with `join` needs the other shape.
        assert_eq!(text(t.find(&frame, |r| r == "g")), None);
        t.keep(&frame, Some("g"), true, Text::from("message"));
        assert_eq!(
            text(t.find(&frame, |r| r == "g")).as_deref(),
            Some("message")
        );
        assert_eq!(text(t.find(&frame, |_| false)).as_deref(), Some("room_msg"));
        // Other frames push the oldest out.
        for i in 0..KEPT {
            t.keep(
                &Frame::from(format!("42[\"x\",{i}]")),
                None,
                false,
                Text::from("x"),
            );
        }
        assert_eq!(text(t.find(&frame, |_| false)), None);
    }
}
