//! Presence across nodes, in Redis.
//!
//! Keys (under the configured prefix):
//! * `pres:{ns}:{room}`: hash user -> sockets of that user in the room, all nodes;
//! * `pres-node:{node}`: hash `ns␟room␟user` -> this node's share of those counts,
//!   so a dead node's share can be taken back;
//! * `names:{ns}`: hash user -> display name;
//! * `node:{node}`: a key with a TTL that the node refreshes (its heartbeat);
//! * `reaped:{node}`: set when the others took a dead node's share back;
//! * `nodes`: the set of node ids.
//!
//! Every change is one Lua script, so concurrent joins and leaves on several
//! nodes see consistent totals: `room:user-joined` goes out for a user's
//! first socket anywhere, `room:user-left` for the last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{Change, Member};

/// How long a node stays alive without a heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// The longest one presence call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node that was counted dead can learn it when it comes back.
pub const REAPED_MARK_TTL: Duration = Duration::from_secs(3600);
/// How often a node refreshes its heartbeat and looks for dead nodes.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

const SEP: char = '\u{1f}';

pub struct ClusterPresence {
    conn: ConnectionManager,
    /// The driver's view of Redis: while down, calls fail at once and the
    /// callers use this node's presence instead of waiting.
    up: Arc<AtomicBool>,
    prefix: String,
    pub node_id: String,
    /// Set when the node leaves the cluster on a clean stop: no heartbeat
    /// may bring it back.
    stopped: AtomicBool,
    /// Arrivals and departures this node reported from its own view while
    /// Redis was away, so the resync afterwards does not report them again.
    reported_alone: Mutex<HashMap<(String, String, String), Reported>>,
    join: Script,
    leave: Script,
    reap: Script,
}

/// The most reports kept from one outage (beyond it, a report may be made
/// twice after the outage: webhooks are at least once).
const MAX_REPORTED_ALONE: usize = 100_000;

/// What a node reported alone about a user in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Joined,
    Left,
}

/// A user whose last socket in a room went away with a dead node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    pub ns: String,
    pub room: String,
    pub user: String,
    /// No user is left in the room on any node (it was vacated).
    pub room_empty: bool,
}

impl ClusterPresence {
    pub fn new(conn: ConnectionManager, up: Arc<AtomicBool>, prefix: &str) -> Self {
        ClusterPresence {
            conn,
            up,
            prefix: prefix.to_string(),
            node_id: ulid::Ulid::new().to_string(),
            stopped: AtomicBool::new(false),
            reported_alone: Mutex::new(HashMap::new()),
            // KEYS: room hash, node hash, names; ARGV: user, node field, name
            join: Script::new(
                r#"
                local total = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
                redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
                redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
                return {total, redis.call('HLEN', KEYS[1])}
                "#,
            ),
            // KEYS: room hash, node hash; ARGV: user, node field.
            // Returns the user's sockets left in the room and the room's
            // users, or {-1, -1} if this node had not counted that socket.
            leave: Script::new(
                r#"
                local mine = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
                if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
                if mine < 0 then return {-1, -1} end
                local total = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
                if total <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]); total = 0 end
                return {total, redis.call('HLEN', KEYS[1])}
                "#,
            ),
            // KEYS: node hash, nodes set; ARGV: room-hash key prefix, node id.
            // Takes a node's whole share back; returns the fields whose user
            // has no socket left in that room, each followed by 1 when the
            // room has no user left (0 otherwise).
            reap: Script::new(
                r#"
                local share = redis.call('HGETALL', KEYS[1])
                local gone = {}
                for i = 1, #share, 2 do
                    local field, n = share[i], tonumber(share[i + 1])
                    local ns, room, user = string.match(field, '^(.-)\31(.-)\31(.*)$')
                    if ns then
                        local key = ARGV[1] .. ns .. ':' .. room
                        local total = redis.call('HINCRBY', key, user, -n)
                        if total <= 0 then
                            redis.call('HDEL', key, user)
                            table.insert(gone, field)
                        end
                    end
                end
                local out = {}
                for _, field in ipairs(gone) do
                    local ns, room = string.match(field, '^(.-)\31(.-)\31')
                    local empty = redis.call('EXISTS', ARGV[1] .. ns .. ':' .. room) == 0
                    table.insert(out, field)
                    table.insert(out, empty and '1' or '0')
                end
                redis.call('DEL', KEYS[1])
                redis.call('SREM', KEYS[2], ARGV[2])
                return out
                "#,
            ),
        }
    }

    /// Notes that this node reported `user` joining or leaving `room` from
    /// its own view (Redis was away).
    pub fn reported_alone(&self, ns: &str, room: &str, user: &str, what: Reported) {
        let mut r = self
            .reported_alone
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if r.len() < MAX_REPORTED_ALONE {
            r.insert((ns.into(), room.into(), user.into()), what);
        }
    }

    /// What was reported alone since the last call.
    pub fn take_reported_alone(&self) -> HashMap<(String, String, String), Reported> {
        std::mem::take(
            &mut *self
                .reported_alone
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Whether Redis answered the last call (see [`Self::bounded`]).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Whether the node has left the cluster (a clean stop).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Runs a presence call within [`CALL_TIMEOUT`]; a call that fails or
    /// takes longer marks Redis down, so the next ones fail at once until
    /// a heartbeat gets through. (A connection being re-established would
    /// otherwise keep the call, and the socket's queue, waiting for as long
    /// as Redis is away.)
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.up.store(false, Ordering::SeqCst);
                Err(e)
            }
            Err(_) => {
                self.up.store(false, Ordering::SeqCst);
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "redis did not answer in time",
                )))
            }
        }
    }

    /// Whether another node took this node's share back (and reported its
    /// users gone) while it could not reach Redis; asks once.
    pub async fn take_reaped_mark(&self) -> redis::RedisResult<bool> {
        self.bounded(self.take_reaped_mark_now()).await
    }

    /// One more socket of `user` in the room, on any node.
    pub async fn join(
        &self,
        ns: &str,
        room: &str,
        user: &str,
        name: &str,
    ) -> redis::RedisResult<Change> {
        self.check_up()?;
        self.bounded(self.join_now(ns, room, user, name)).await
    }

    /// One socket fewer, on any node; `None` when this node had not counted
    /// it (it joined while Redis was away, or its share was taken back).
    pub async fn leave(
        &self,
        ns: &str,
        room: &str,
        user: &str,
    ) -> redis::RedisResult<Option<Change>> {
        self.check_up()?;
        self.bounded(self.leave_now(ns, room, user)).await
    }

    /// The room's members across nodes, sorted by user id.
    pub async fn members(&self, ns: &str, room: &str) -> redis::RedisResult<Vec<Member>> {
        self.check_up()?;
        self.bounded(self.members_now(ns, room)).await
    }

    /// Refreshes this node's heartbeat (none after [`Self::deregister`]);
    /// Redis answering it counts as Redis being up.
    pub async fn heartbeat(&self) -> redis::RedisResult<()> {
        self.bounded(self.heartbeat_now()).await?;
        self.up.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// See [`Self::deregister_now`].
    pub async fn deregister(&self) -> redis::RedisResult<()> {
        self.bounded(self.deregister_now()).await
    }

    /// Takes back the share of every node whose heartbeat lapsed; returns
    /// the users who thereby left their rooms.
    pub async fn reap_dead(&self) -> redis::RedisResult<Vec<Departed>> {
        self.bounded(self.reap_dead_now()).await
    }

    /// Takes back `node`'s whole share (a dead node's, or this node's own
    /// before it re-registers after a Redis outage).
    pub async fn reap(&self, node: &str) -> redis::RedisResult<Vec<Departed>> {
        self.bounded(self.reap_now(node)).await
    }

    fn check_up(&self) -> redis::RedisResult<()> {
        if self.up.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "redis is down",
            )))
        }
    }

    fn reaped_key(&self, node: &str) -> String {
        format!("{}:reaped:{node}", self.prefix)
    }

    /// Whether another node took this node's share back (and reported its
    /// users gone) while it could not reach Redis; asks once.
    async fn take_reaped_mark_now(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = conn.del(self.reaped_key(&self.node_id)).await?;
        Ok(n > 0)
    }

    fn room_key(&self, ns: &str, room: &str) -> String {
        format!("{}:pres:{ns}:{room}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:pres-node:{node}", self.prefix)
    }

    fn names_key(&self, ns: &str) -> String {
        format!("{}:names:{ns}", self.prefix)
    }

    /// One more socket of `user` in the room, on any node.
    async fn join_now(
        &self,
        ns: &str,
        room: &str,
        user: &str,
        name: &str,
    ) -> redis::RedisResult<Change> {
        let field = format!("{ns}{SEP}{room}{SEP}{user}");
        let (total, users): (i64, i64) = self
            .join
            .key(self.room_key(ns, room))
            .key(self.node_key(&self.node_id))
            .key(self.names_key(ns))
            .arg(user)
            .arg(field)
            .arg(name)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Change::new(true, total == 1, total == 1 && users == 1))
    }

    /// One socket fewer, on any node; `None` when this node had not counted
    /// it (it joined while Redis was away).
    async fn leave_now(
        &self,
        ns: &str,
        room: &str,
        user: &str,
    ) -> redis::RedisResult<Option<Change>> {
        let field = format!("{ns}{SEP}{room}{SEP}{user}");
        let (total, users): (i64, i64) = self
            .leave
            .key(self.room_key(ns, room))
            .key(self.node_key(&self.node_id))
            .arg(user)
            .arg(field)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if total < 0 {
            return Ok(None);
        }
        Ok(Some(Change::new(
            true,
            total == 0,
            total == 0 && users == 0,
        )))
    }

    /// The room's members across nodes, sorted by user id.
    async fn members_now(&self, ns: &str, room: &str) -> redis::RedisResult<Vec<Member>> {
        let mut conn = self.conn.clone();
        let counts: Vec<(String, i64)> = conn.hgetall(self.room_key(ns, room)).await?;
        let counts: Vec<(String, i64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&str> = counts.iter().map(|(u, _)| u.as_str()).collect();
        let names: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.names_key(ns))
            .arg(&users)
            .query_async(&mut conn)
            .await?;
        let mut members: Vec<Member> = counts
            .iter()
            .zip(names)
            .map(|((user, n), name)| Member {
                user_id: user.clone(),
                username: name.unwrap_or_else(|| user.clone()),
                connections: *n as usize,
            })
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(members)
    }

    /// Refreshes this node's heartbeat (none after [`Self::deregister`]).
    async fn heartbeat_now(&self) -> redis::RedisResult<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(
                format!("{}:node:{}", self.prefix, self.node_id),
                1,
                NODE_TTL.as_secs(),
            )
            .await?;
        let _: () = conn
            .sadd(format!("{}:nodes", self.prefix), &self.node_id)
            .await?;
        Ok(())
    }

    /// Leaves the cluster on a clean stop, once this node's sockets are
    /// closed: the heartbeat stops and its key goes at once, so the other
    /// nodes take this node's presence share back at their next heartbeat
    /// (`HEARTBEAT_EVERY`) and tell the rooms who left, rather than after
    /// `NODE_TTL`. This node cannot tell them itself: its adapter is closed
    /// by then, and sockets closed at shutdown may not have left their
    /// rooms in Redis yet.
    async fn deregister_now(&self) -> redis::RedisResult<()> {
        self.stopped.store(true, Ordering::Release);
        let mut conn = self.conn.clone();
        conn.del(format!("{}:node:{}", self.prefix, self.node_id))
            .await
    }

    /// Takes back the share of every node whose heartbeat lapsed; returns the
    /// users who thereby left their rooms.
    async fn reap_dead_now(&self) -> redis::RedisResult<Vec<Departed>> {
        let mut conn = self.conn.clone();
        let nodes: Vec<String> = conn.smembers(format!("{}:nodes", self.prefix)).await?;
        let mut departed = Vec::new();
        for node in nodes {
            if node == self.node_id {
                continue;
            }
            let alive: bool = conn.exists(format!("{}:node:{node}", self.prefix)).await?;
            if !alive {
                tracing::warn!(
                    node,
                    "a node stopped its heartbeat; removing its users from presence"
                );
                let gone = self.reap_now(&node).await?;
                // Should the node come back (its Redis link was down), it
                // learns that its users were reported gone.
                let _: () = conn
                    .set_ex(self.reaped_key(&node), 1, REAPED_MARK_TTL.as_secs())
                    .await?;
                departed.extend(gone);
            }
        }
        Ok(departed)
    }

    /// Takes back `node`'s whole share (a dead node's, or this node's own
    /// before it re-registers after a Redis outage).
    async fn reap_now(&self, node: &str) -> redis::RedisResult<Vec<Departed>> {
        let gone: Vec<String> = self
            .reap
            .key(self.node_key(node))
            .key(format!("{}:nodes", self.prefix))
            .arg(format!("{}:pres:", self.prefix))
            .arg(node)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut departed: Vec<Departed> = gone
            .chunks(2)
            .filter_map(|pair| {
                let [field, empty] = pair else { return None };
                let mut parts = field.splitn(3, SEP);
                Some(Departed {
                    ns: parts.next()?.to_string(),
                    room: parts.next()?.to_string(),
                    user: parts.next()?.to_string(),
                    room_empty: empty == "1",
                })
            })
            .collect();
        // Rooms are left before the user goes offline (the online room is
        // the empty one; its field came first, as the user's first join).
        departed.sort_by_key(|d| d.room.is_empty());
        // A room is vacated once: by the last of its users in the list.
        let mut seen = std::collections::HashSet::new();
        for d in departed.iter_mut().rev() {
            if !seen.insert((d.ns.clone(), d.room.clone())) {
                d.room_empty = false;
            }
        }
        Ok(departed)
    }
}
