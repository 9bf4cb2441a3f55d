//! How many Socket.IO connections one user may hold on this node
//! (`--max-connections-per-user`).
//!
//! Each connection a user holds costs its buffers and session whatever the
//! user does with it; with a token, one user could otherwise open as many
//! as the per-address cap allows, from as many addresses as they have. A
//! CONNECT past the cap gets `connect_error` "too many connections for this
//! user" and is counted (`switchboard_limit_hits_total{limit="max_connections_per_user"}`).
//!
//! The count must stay exact whatever way a socket ends. Each admitted
//! socket carries a [`UserConn`] in its extensions: it is given back by the
//! disconnect handler (at once, so that a client reconnecting right away
//! finds its place free) or, if that never runs, when the socket itself is
//! dropped; giving it back twice counts once (socketioxide can close one
//! socket twice: its `41` packet, then the transport).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

/// The counts of one node; 0 as the limit means none.
#[derive(Debug)]
pub struct UserConns {
    max: usize,
    open: Mutex<HashMap<Box<str>, usize>>,
}

/// A CONNECT refused at the cap (its text is the client's `err.message`).
#[derive(Debug, thiserror::Error)]
#[error("too many connections for this user")]
pub struct TooMany;

impl UserConns {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(UserConns {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for one more connection of `user`.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<Arc<UserConn>, TooMany> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user.into()).or_insert(0);
        if self.max > 0 && *n >= self.max {
            crate::metrics::limit_hit("max_connections_per_user");
            return Err(TooMany);
        }
        *n += 1;
        Ok(Arc::new(UserConn {
            conns: self.clone(),
            user: user.into(),
            released: AtomicBool::new(false),
        }))
    }

    /// Connections `user` holds now.
    pub fn open_for(&self, user: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(user).copied().unwrap_or(0)
    }

    fn give_back(&self, user: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                open.remove(user);
            }
        }
    }
}

/// One socket's place in its user's count.
#[derive(Debug)]
pub struct UserConn {
    conns: Arc<UserConns>,
    user: Box<str>,
    released: AtomicBool,
}

impl UserConn {
    /// Gives the place back; only the first call counts.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.conns.give_back(&self.user);
        }
    }
}

impl Drop for UserConn {
    fn drop(&mut self) {
        self.release();
    }
}

/// Gives back the place of `socket` (from its disconnect handler).
pub fn release<A: Adapter>(socket: &SocketRef<A>) {
    if let Some(conn) = socket.extensions.get::<Arc<UserConn>>() {
        conn.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_user_and_exact() {
        let c = UserConns::new(2);
        let a1 = c.acquire("a").unwrap();
        let a2 = c.acquire("a").unwrap();
        assert!(c.acquire("a").is_err());
        let b = c.acquire("b").unwrap();
        assert_eq!((c.open_for("a"), c.open_for("b")), (2, 1));
        // Released by the handler, then dropped with the socket: once.
        a1.release();
        a1.release();
        drop(a1);
        assert_eq!(c.open_for("a"), 1);
        let a3 = c.acquire("a").unwrap();
        assert!(c.acquire("a").is_err());
        // Never released explicitly: the drop gives it back.
        drop(a2);
        drop(a3);
        drop(b);
        assert_eq!((c.open_for("a"), c.open_for("b")), (0, 0));
        assert!(c.open.lock().unwrap().is_empty(), "no entry left behind");
    }

    #[test]
    fn zero_means_no_limit() {
        let c = UserConns::new(0);
        let held: Vec<_> = (0..1000).map(|_| c.acquire("a").unwrap()).collect();
        assert_eq!(c.open_for("a"), 1000);
        drop(held);
        assert_eq!(c.open_for("a"), 0);
    }
}
