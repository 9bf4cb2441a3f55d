//! Connection state recovery: a socket.io-client whose transport died comes
//! back within `--recovery-window` with `socket.recovered === true`, its
//! rooms, and the `chat:message`s it missed, read from the durable history
//! (so it works after a restart and on another node). See docs/protocol.md,
//! "Reconnecting".
//!
//! socketioxide (0.18) has no recovery, so this module does what it would:
//! [`frames`] adds the `pid` to the CONNECT reply and follows the offsets
//! written to each socket at the edge; [`written`] turns the client's last
//! offset into a position in every room; sessions are kept in the message
//! store ([`Recovery`]). The socket side (restoring rooms, replaying) is
//! `realtime::recover`. The day socketioxide recovers sockets itself, this
//! folder and that file are what to remove.

pub mod frames;
pub mod offset;
pub mod wire;
pub mod written;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::store::{MessageStore, SavedSession, StoreError, now_ms};
use offset::Offset;
use written::{Held, Written};

/// Longest pid a client may present (ours are 32 hex digits).
pub const MAX_PID_LEN: usize = 64;
/// Session writes waiting for the store; beyond it a dropping socket is
/// not kept (counted).
const WRITE_QUEUE: usize = 65_536;
/// Session writes per store transaction.
const WRITE_BATCH: usize = 512;
/// How often expired sessions are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What is kept of a socket that dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionBody {
    pub user: String,
    pub ns: String,
    /// The client rooms it was in.
    pub rooms: Vec<String>,
    pub written: Written,
    /// When the first socket of this session connected: private messages
    /// since then that it was not sent are replayed.
    #[serde(default)]
    pub since_ms: u64,
}

/// A client's claim to a session, read from its CONNECT auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub pid: String,
    pub offset: Option<Offset>,
}

/// Why a recovery did not happen (the metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// pid or offset of the wrong type, size or shape.
    Malformed,
    /// No such session: never existed, expired, or already used.
    Unknown,
    /// The session is another user's or another namespace's.
    OtherUser,
    /// The offset is not one this session was sent.
    UnknownOffset,
    /// More missed in a room than `--recovery-max-replay`.
    TooFarBehind,
    /// The store could not be read.
    StoreUnavailable,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::Unknown => "unknown_session",
            Failure::OtherUser => "other_user",
            Failure::UnknownOffset => "unknown_offset",
            Failure::TooFarBehind => "too_far_behind",
            Failure::StoreUnavailable => "store_unavailable",
        }
    }

    pub const ALL: [Failure; 6] = [
        Failure::Malformed,
        Failure::Unknown,
        Failure::OtherUser,
        Failure::UnknownOffset,
        Failure::TooFarBehind,
        Failure::StoreUnavailable,
    ];
}

impl Claim {
    /// `None` when the client claims nothing (a first connection); an
    /// error when what it sent cannot be a claim.
    pub fn read(auth: Option<&serde_json::Value>) -> Option<Result<Claim, Failure>> {
        let auth = auth?.as_object()?;
        let pid = auth.get("pid")?;
        Some((|| {
            let pid = pid.as_str().ok_or(Failure::Malformed)?;
            if pid.is_empty()
                || pid.len() > MAX_PID_LEN
                || !pid.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(Failure::Malformed);
            }
            let offset = match auth.get("offset") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => {
                    Some(Offset::parse(s.as_bytes()).ok_or(Failure::Malformed)?)
                }
                Some(_) => return Err(Failure::Malformed),
            };
            Ok(Claim {
                pid: pid.to_string(),
                offset,
            })
        })())
    }
}

/// A session that can be restored: each room with what the client holds.
#[derive(Debug, Clone)]
pub struct Restored {
    pub rooms: Vec<(String, Held)>,
    /// The private messages it missed, each conversation's in seq order.
    pub private: Vec<crate::store::Message>,
    /// The positions and offset the new socket starts from.
    pub written: Written,
    pub since_ms: u64,
}

/// The tag of a private conversation in offsets: not a valid room id (`/`),
/// so it never meets a room's.
pub fn direct_tag(ns: &str, a: &str, b: &str) -> u64 {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    offset::room_tag(ns, &format!("dm/{x}/{y}"))
}

enum WriteOp {
    Save(SavedSession),
    Forget(String),
    Flush(oneshot::Sender<()>),
}

/// Sessions, where every node can read them (the message store).
pub struct Recovery {
    pub window: Duration,
    pub max_replay: usize,
    pub frames: Arc<frames::Frames>,
    store: Arc<dyn MessageStore>,
    max_sessions: u64,
    /// Sessions in the store, as of the last sweep plus those saved since.
    kept: Arc<AtomicU64>,
    writes: mpsc::Sender<WriteOp>,
}

/// A new pid: 128 random bits, as hex.
pub fn new_pid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Recovery {
    /// Starts the session writer and sweeper; `None` with a window of 0.
    pub fn start(
        config: &crate::Config,
        store: Arc<dyn MessageStore>,
        frames: Arc<frames::Frames>,
    ) -> Option<Arc<Recovery>> {
        if config.recovery_window == 0 {
            return None;
        }
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let kept = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(store.clone(), rx, config.recovery_sessions_per_user));
        tokio::spawn(sweeper(store.clone(), kept.clone()));
        Some(Arc::new(Recovery {
            window: Duration::from_secs(config.recovery_window),
            max_replay: config.recovery_max_replay,
            frames,
            store,
            max_sessions: config.recovery_max_sessions,
            kept,
            writes,
        }))
    }

    /// Keeps a socket that dropped, for the window.
    pub fn save(&self, pid: &str, body: &SessionBody) {
        if self.kept.load(Ordering::Relaxed) >= self.max_sessions {
            crate::metrics::limit_hit("recovery_max_sessions");
            return;
        }
        let Ok(text) = serde_json::to_string(body) else {
            return;
        };
        let saved = SavedSession {
            pid: pid.to_string(),
            user_key: format!("{}|{}", body.ns, body.user),
            expires_ms: now_ms() + self.window.as_millis() as u64,
            body: text,
        };
        match self.writes.try_send(WriteOp::Save(saved)) {
            Ok(()) => {
                self.kept.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => crate::metrics::limit_hit("recovery_max_sessions"),
        }
    }

    /// Resolves once every session handed over so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(WriteOp::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Reads the session `claim` names and checks it is `user`'s in `ns`,
    /// that the offset is one it was sent, and that no room is too far
    /// behind. The session is used up either way.
    pub async fn attempt(&self, claim: &Claim, user: &str, ns: &str) -> Result<Restored, Failure> {
        let saved = self
            .store
            .load_session(&claim.pid, now_ms())
            .await
            .map_err(|_| Failure::StoreUnavailable)?
            .ok_or(Failure::Unknown)?;
        let body: SessionBody = serde_json::from_str(&saved.body).map_err(|_| Failure::Unknown)?;
        if body.user != user || body.ns != ns {
            // Not used up: it is still its owner's to recover.
            return Err(Failure::OtherUser);
        }
        let _ = self.writes.try_send(WriteOp::Forget(claim.pid.clone()));
        let positions = body
            .written
            .holds(claim.offset)
            .ok_or(Failure::UnknownOffset)?;
        let mut rooms = Vec::with_capacity(body.rooms.len());
        for room in body.rooms {
            let tag = offset::room_tag(ns, &room);
            let held = positions.get(&tag).cloned().ok_or(Failure::UnknownOffset)?;
            let latest = self
                .latest_seq(ns, &room)
                .await
                .map_err(|_| Failure::StoreUnavailable)?;
            if latest.saturating_sub(held.upto) > self.max_replay as u64 {
                return Err(Failure::TooFarBehind);
            }
            rooms.push((room, held));
        }
        let mut private = self
            .store
            .direct_since(ns, user, body.since_ms, self.max_replay + 1)
            .await
            .map_err(|_| Failure::StoreUnavailable)?;
        if private.len() > self.max_replay {
            return Err(Failure::TooFarBehind);
        }
        let tag = |m: &crate::store::Message| {
            direct_tag(
                ns,
                &m.sender_id,
                m.to_user_id.as_deref().unwrap_or_default(),
            )
        };
        private.retain(|m| !positions.get(&tag(m)).is_some_and(|h| h.has(m.seq)));
        private.sort_by_key(|m| (tag(m), m.seq));
        // A conversation first met in this replay starts below its first
        // replayed message: a live one that overtakes the replay must not
        // make the replayed ones count as held.
        let mut positions = positions;
        for m in &private {
            positions
                .entry(tag(m))
                .or_insert_with(|| Held::at(m.seq.saturating_sub(1)));
        }
        Ok(Restored {
            rooms,
            private,
            written: Written::resumed(positions, claim.offset),
            since_ms: body.since_ms,
        })
    }

    /// The seq of a room's latest message (0 when it has none).
    pub async fn latest_seq(&self, ns: &str, room: &str) -> Result<u64, StoreError> {
        let conv = crate::store::Conversation::room(ns, room);
        let last = self
            .store
            .history(&conv, crate::store::Page::Latest, 1)
            .await?;
        Ok(last.first().map(|m| m.seq).unwrap_or(0))
    }
}

/// Writes sessions in batches: many sockets drop at once when a network
/// or a node goes, and one transaction each would queue behind fsyncs.
async fn writer(store: Arc<dyn MessageStore>, mut rx: mpsc::Receiver<WriteOp>, per_user: usize) {
    let mut ops = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut ops, WRITE_BATCH).await > 0 {
        let mut save = Vec::new();
        let mut forget = Vec::new();
        let mut flushed = Vec::new();
        for op in ops.drain(..) {
            match op {
                WriteOp::Save(s) => save.push(s),
                WriteOp::Forget(p) => forget.push(p),
                WriteOp::Flush(done) => flushed.push(done),
            }
        }
        if (!save.is_empty() || !forget.is_empty())
            && let Err(e) = store.save_sessions(&save, &forget, per_user).await
        {
            tracing::warn!("recoverable sessions not kept ({} lost): {e}", save.len());
            crate::metrics::recovery_sessions_lost(save.len() as u64);
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

async fn sweeper(store: Arc<dyn MessageStore>, kept: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        match store.sweep_sessions(now_ms()).await {
            Ok(left) => kept.store(left, Ordering::Relaxed),
            Err(e) => tracing::debug!("recovery sweep failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims() {
        assert_eq!(Claim::read(None), None);
        assert_eq!(Claim::read(Some(&json!({"token": "t"}))), None);
        let o = Offset::new("/", "r", 3);
        assert_eq!(
            Claim::read(Some(&json!({"pid": "abc123", "offset": o.encode()}))),
            Some(Ok(Claim {
                pid: "abc123".into(),
                offset: Some(o)
            }))
        );
        assert_eq!(
            Claim::read(Some(&json!({"pid": "abc123"}))),
            Some(Ok(Claim {
                pid: "abc123".into(),
                offset: None
            }))
        );
        for bad in [
            json!({"pid": 1}),
            json!({"pid": ""}),
            json!({"pid": "a".repeat(65)}),
            json!({"pid": "ab-c"}),
            json!({"pid": ["x"]}),
            json!({"pid": "abc", "offset": 5}),
            json!({"pid": "abc", "offset": "x".repeat(10_000)}),
            json!({"pid": "abc", "offset": "1.zz"}),
        ] {
            assert_eq!(
                Claim::read(Some(&bad)),
                Some(Err(Failure::Malformed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_failure_is_shown_at_zero() {
        for f in Failure::ALL {
            assert!(
                crate::metrics::RECOVERY_OUTCOMES.contains(&f.label()),
                "{f:?}"
            );
        }
        assert_eq!(
            crate::metrics::RECOVERY_OUTCOMES.len(),
            Failure::ALL.len() + 1
        );
    }

    #[test]
    fn pids_are_long_and_differ() {
        let (a, b) = (new_pid(), new_pid());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn sessions_are_kept_checked_and_used_once() {
        let store: Arc<dyn MessageStore> = Arc::new(crate::store::MemoryStore::new());
        let config = crate::Config::default();
        let r = Recovery::start(&config, store.clone(), Default::default()).unwrap();
        let mut written = Written::default();
        written.joined(offset::room_tag("/", "lobby"), 0);
        let body = SessionBody {
            user: "alice".into(),
            ns: "/".into(),
            rooms: vec!["lobby".into()],
            written,
            since_ms: 0,
        };
        r.save("p1", &body);
        r.flush().await;
        let claim = Claim {
            pid: "p1".into(),
            offset: None,
        };
        assert_eq!(
            r.attempt(&claim, "bob", "/").await.unwrap_err(),
            Failure::OtherUser
        );
        assert_eq!(
            r.attempt(&claim, "alice", "/t").await.unwrap_err(),
            Failure::OtherUser
        );
        let bad = Claim {
            offset: Some(Offset::new("/", "lobby", 1)),
            ..claim.clone()
        };
        assert_eq!(
            r.attempt(&bad, "alice", "/").await.unwrap_err(),
            Failure::UnknownOffset
        );
        // That attempt used the session up.
        r.flush().await;
        assert_eq!(
            r.attempt(&claim, "alice", "/").await.unwrap_err(),
            Failure::Unknown
        );
        r.save("p2", &body);
        r.flush().await;
        let restored = r
            .attempt(
                &Claim {
                    pid: "p2".into(),
                    offset: None,
                },
                "alice",
                "/",
            )
            .await
            .unwrap();
        assert_eq!(restored.rooms, vec![("lobby".to_string(), Held::at(0))]);
    }
}
