//! What a refusal and an ack are: the error codes of docs/protocol.md §11,
//! a refusal (code and reason), and a client's callback. Sending them is
//! `reply`'s job; these are apart so the per-socket queue (`session`) can
//! hold a callback without depending on how it is answered.

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};

/// The error codes of docs/protocol.md §11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    InvalidPayload,
    NotInRoom,
    ForbiddenRoom,
    RateLimited,
    TooLarge,
    NotFound,
    Unavailable,
    /// A document op made on a version older than the ops the server keeps.
    StaleVersion,
    /// Refused by the backend's hook: the ack carries the backend's code.
    Hook,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidPayload => "invalid_payload",
            Code::NotInRoom => "not_in_room",
            Code::ForbiddenRoom => "forbidden_room",
            Code::RateLimited => "rate_limited",
            Code::TooLarge => "too_large",
            Code::NotFound => "not_found",
            Code::Unavailable => "unavailable",
            Code::StaleVersion => "stale_version",
            Code::Hook => "hook_refused",
            Code::Internal => "internal",
        }
    }
}

/// A refusal: the code and a short human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub error: String,
    /// The code a backend's hook gave (with `Code::Hook`): the client sees it.
    pub hook_code: Option<String>,
}

impl Refusal {
    pub fn new(code: Code, error: impl Into<String>) -> Self {
        Refusal {
            code,
            error: error.into(),
            hook_code: None,
        }
    }

    /// Refused by a backend's hook, with its (already checked) code.
    pub fn by_hook(code: String, error: impl Into<String>) -> Self {
        Refusal {
            code: Code::Hook,
            error: error.into(),
            hook_code: Some(code),
        }
    }

    pub fn invalid(error: impl Into<String>) -> Self {
        Self::new(Code::InvalidPayload, error)
    }
}

/// A client's callback: the ack to send, and the socket that waits for it
/// (a full queue disconnects that socket, see `slow`).
pub struct Ack<A: Adapter> {
    pub(super) sender: AckSender<A>,
    pub(super) socket: SocketRef<A>,
    pub(super) id: i64,
}

impl<A: Adapter> Ack<A> {
    pub fn new(sender: AckSender<A>, socket: SocketRef<A>, id: i64) -> Self {
        Ack { sender, socket, id }
    }
}
