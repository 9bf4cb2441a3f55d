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

/// The local (single-node) presence registry.
#[derive(Debug, Default)]
pub struct Presence {
    rooms: DashMap<(String, String), HashMap<String, UserEntry>>,
}

impl Presence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that socket `sid` of `user_id` is in the room. Returns
    /// (socket newly added, first socket of the user here).
    pub fn join(&self, ns: &str, room: &str, user_id: &str, name: &str, sid: &str) -> (bool, bool) {
        let mut users = self.rooms.entry((ns.into(), room.into())).or_default();
        let entry = users.entry(user_id.into()).or_default();
        entry.name = name.into();
        let was_empty = entry.sockets.is_empty();
        let added = entry.sockets.insert(sid.into());
        (added, was_empty)
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

    /// Removes socket `sid`. Returns true when that was the user's last socket
    /// in the room (the user just left).
    pub fn leave(&self, ns: &str, room: &str, user_id: &str, sid: &str) -> bool {
        let key = (ns.to_string(), room.to_string());
        let mut left = false;
        let mut room_empty = false;
        if let Some(mut users) = self.rooms.get_mut(&key) {
            if let Some(entry) = users.get_mut(user_id)
                && entry.sockets.remove(sid)
                && entry.sockets.is_empty()
            {
                users.remove(user_id);
                left = true;
            }
            room_empty = users.is_empty();
        }
        if room_empty {
            self.rooms.remove_if(&key, |_, users| users.is_empty());
        }
        left
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
        let p = Presence::new();
        assert_eq!(p.join("/", "r", "alice", "Alice", "s1"), (true, true));
        assert_eq!(p.join("/", "r", "alice", "Alice", "s2"), (true, false));
        assert_eq!(p.join("/", "r", "alice", "Alice", "s2"), (false, false));
        assert_eq!(p.join("/", "r", "bob", "Bob", "s3"), (true, true));
        assert_eq!(p.entries().len(), 2);
        let m = p.members("/", "r");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].connections, 2);
        assert!(!p.leave("/", "r", "alice", "s1"));
        assert!(p.leave("/", "r", "alice", "s2"));
        assert!(!p.leave("/", "r", "alice", "s2"), "leaving twice is no-op");
        assert!(p.leave("/", "r", "bob", "s3"));
        assert!(p.members("/", "r").is_empty());
        assert!(p.rooms.is_empty(), "empty rooms are dropped");
        assert!(p.members("/acme", "r").is_empty());
    }
}
