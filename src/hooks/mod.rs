//! Hooks that decide: the backend is asked before a `room:join`
//! (`join`), before a message is stored (`publish`: allow, refuse or
//! replace the content), and answers client events under a prefix (`rpc`).
//! [`Hooks`] is the trait an embedding application implements in Rust;
//! [`http::HttpHooks`] is the implementation the `--*-hook-url` flags
//! configure. See docs/http-api.md, "Hooks".

pub mod breaker;
pub mod http;

use async_trait::async_trait;
use serde_json::Value;

/// What the backend decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Allowed, with this content instead (publish only).
    Replace(String),
    /// Refused: the client's error ack carries `code` and `message`.
    Refuse {
        code: String,
        message: String,
    },
}

/// The answer to an RPC event: the ack's `result`, or an error.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcAnswer {
    Result(Value),
    Error { code: String, message: String },
}

/// Where a message goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Room(&'a str),
    User(&'a str),
}

/// Why a hook gave no answer: the backend timed out, failed, answered
/// something unreadable, or its circuit is open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

/// The decisions a backend can take. Every method has the answer of a
/// server without hooks, so an implementation overrides only what it needs.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// May `user` join `room`? Asked after the token's `rooms` claim allowed it.
    async fn join(&self, _ns: &str, _user: &str, _room: &str) -> Result<Verdict, HookError> {
        Ok(Verdict::Allow)
    }

    /// May `user` send `content` there, as it is or changed?
    async fn publish(
        &self,
        _ns: &str,
        _user: &str,
        _target: Target<'_>,
        _content: &str,
    ) -> Result<Verdict, HookError> {
        Ok(Verdict::Allow)
    }

    /// Whether client events named `{prefix}…` go to [`Hooks::rpc`], and the prefix.
    fn rpc_prefix(&self) -> Option<&str> {
        None
    }

    /// Answers a client event under the RPC prefix.
    async fn rpc(
        &self,
        _ns: &str,
        _user: &str,
        _event: &str,
        _data: &Value,
    ) -> Result<RpcAnswer, HookError> {
        Err(HookError("no rpc hook".into()))
    }

    /// Whether a join is allowed when the hook gives no answer.
    fn join_fails_open(&self) -> bool {
        false
    }

    /// Whether a message goes as it is when the hook gives no answer.
    fn publish_fails_open(&self) -> bool {
        false
    }
}

/// A code from a backend, as the client will see it: 1–64 characters of
/// `[a-z0-9_.-]`, else `forbidden`.
pub fn clean_code(code: Option<&str>) -> String {
    match code {
        Some(c)
            if !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')) =>
        {
            c.to_string()
        }
        _ => "forbidden".to_string(),
    }
}

/// A backend's message for the client, at most 256 characters.
pub fn clean_message(message: Option<&str>, default: &str) -> String {
    let m = message.unwrap_or(default);
    m.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_bounded() {
        assert_eq!(clean_code(Some("banned_word")), "banned_word");
        assert_eq!(clean_code(Some("Bad Code")), "forbidden");
        assert_eq!(clean_code(Some(&"a".repeat(65))), "forbidden");
        assert_eq!(clean_code(None), "forbidden");
        assert_eq!(
            clean_message(Some(&"x".repeat(1000)), "").chars().count(),
            256
        );
        assert_eq!(clean_message(None, "refused"), "refused");
    }
}
