//! Who is in which room, per user: a user with two tabs in a room is one
//! member with two connections. Keyed by namespace so tenants stay apart.

pub mod cluster;
pub mod keys;

use std::collections::{HashMap, HashSet};

use dashmap::DashMap;
use serde::Serialize;

use crate::presence::keys::Pair;

/// A room member as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    /// The name the user joined with.
    pub username: String,
    /// How many of the user's sockets are in the room.
    pub connections: usize,
}

#[derive(Debug, Default)]
struct UserEntry {
    name: String,
    sockets: HashSet<String>,
}

/// What one socket's join or leave changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// The socket was newly recorded (join) or was recorded (leave).
    pub counted: bool,
    /// It was the user's first socket in the room (join) or last (leave).
    pub user: bool,
    /// The room had no member before (join: occupied) or has none left
    /// (leave: vacated).
    pub room: bool,
}

impl Change {
    pub const fn new(counted: bool, user: bool, room: bool) -> Self {
        Change {
            counted,
            user,
            room,
        }
    }
}

/// The local (single-node) presence registry.
#[derive(Debug, Default)]
pub struct Presence {
    rooms: DashMap<(String, String), HashMap<String, UserEntry>>,
}

impl Presence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that socket `sid` of `user_id` is in the room.
    pub fn join(&self, ns: &str, room: &str, user_id: &str, name: &str, sid: &str) -> Change {
        let mut users = self.rooms.entry((ns.into(), room.into())).or_default();
        // A user's entry goes with their last socket: none is ever empty.
        let room_was_empty = users.is_empty();
        let entry = users.entry(user_id.into()).or_default();
        entry.name = name.into();
        let was_empty = entry.sockets.is_empty();
        let counted = entry.sockets.insert(sid.into());
        Change {
            counted,
            user: counted && was_empty,
            room: counted && room_was_empty,
        }
    }

    /// Every (namespace, room, user, name, sockets) on this node.
    pub fn entries(&self) -> Vec<(String, String, String, String, usize)> {
        let mut out = Vec::new();
        for r in self.rooms.iter() {
            let (ns, room) = r.key();
            for (user, e) in r.value() {
                out.push((
                    ns.clone(),
                    room.clone(),
                    user.clone(),
                    e.name.clone(),
                    e.sockets.len(),
                ));
            }
        }
        out
    }

    /// Removes socket `sid`.
    pub fn leave(&self, ns: &str, room: &str, user_id: &str, sid: &str) -> Change {
        let key = (ns.to_string(), room.to_string());
        let mut change = Change::default();
        if let Some(mut users) = self.rooms.get_mut(&key)
            && let Some(entry) = users.get_mut(user_id)
            && entry.sockets.remove(sid)
        {
            change.counted = true;
            if entry.sockets.is_empty() {
                users.remove(user_id);
                change.user = true;
                change.room = users.is_empty();
            }
        }
        if change.room {
            self.rooms.remove_if(&key, |_, users| users.is_empty());
        }
        change
    }

    /// Whether socket `sid` is recorded in the room.
    pub fn contains(&self, ns: &str, room: &str, user_id: &str, sid: &str) -> bool {
        self.rooms
            .get(&(ns, room) as &dyn Pair)
            .and_then(|users| users.get(user_id).map(|e| e.sockets.contains(sid)))
            .unwrap_or(false)
    }

    /// The room's members, sorted by user id.
    pub fn members(&self, ns: &str, room: &str) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .rooms
            .get(&(ns.to_string(), room.to_string()))
            .map(|users| {
                users
                    .iter()
                    .map(|(id, e)| Member {
                        user_id: id.clone(),
                        username: e.name.clone(),
                        connections: e.sockets.len(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tabs_are_one_member() {
        let c = Change::new;
        let p = Presence::new();
        assert_eq!(
            p.join("/", "r", "alice", "Alice", "s1"),
            c(true, true, true)
        );
        assert_eq!(
            p.join("/", "r", "alice", "Alice", "s2"),
            c(true, false, false)
        );
        assert_eq!(
            p.join("/", "r", "alice", "Alice", "s2"),
            c(false, false, false)
        );
        assert_eq!(p.join("/", "r", "bob", "Bob", "s3"), c(true, true, false));
        assert_eq!(p.entries().len(), 2);
        let m = p.members("/", "r");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].connections, 2);
        assert_eq!(p.leave("/", "r", "alice", "s1"), c(true, false, false));
        assert_eq!(p.leave("/", "r", "alice", "s2"), c(true, true, false));
        assert_eq!(
            p.leave("/", "r", "alice", "s2"),
            c(false, false, false),
            "leaving twice is no-op"
        );
        assert_eq!(
            p.leave("/", "r", "bob", "s3"),
            c(true, true, true),
            "the last member: vacated"
        );
        assert!(p.members("/", "r").is_empty());
        assert!(p.rooms.is_empty(), "empty rooms are dropped");
        assert!(p.members("/acme", "r").is_empty());
        // Occupied again, and rooms are per namespace.
        assert_eq!(p.join("/", "r", "bob", "Bob", "s4"), c(true, true, true));
        assert_eq!(
            p.join("/acme", "r", "bob", "Bob", "s5"),
            c(true, true, true)
        );
    }
}
