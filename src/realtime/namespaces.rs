//! Child namespaces of a pattern such as `/t-{tenant}`.
//!
//! socketioxide creates the child namespace for a matching name as soon as a
//! client asks for it, before any middleware has seen a token, and never
//! removes it: every made-up name used to cost memory for the life of the
//! process. A child is removed here as soon as it is empty: when a connect
//! to it is refused and no other connect is under way, and when its last
//! socket leaves (Node's `cleanupEmptyChildNamespaces`).
//!
//! Connects in progress are counted so that a child is never removed under a
//! client that is being authenticated in it. socketioxide hands a client the
//! namespace a moment before the middleware runs; should a removal fall in
//! that moment, the socket finds itself in a namespace that is gone, and
//! [`DynNamespaces::still_registered`] tells the connect handler to close it
//! (the client reconnects).

use std::collections::HashMap;
use std::sync::Mutex;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use crate::realtime::patterns::pattern_matches;

#[derive(Debug, Default)]
pub struct DynNamespaces {
    patterns: Vec<String>,
    /// Connects under way per child namespace.
    connecting: Mutex<HashMap<String, usize>>,
}

/// Marks a connect in progress; dropping it ends the mark.
pub struct Connecting<'a> {
    owner: &'a DynNamespaces,
    ns: String,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.owner.connecting.lock()
            && let Some(n) = c.get_mut(&self.ns)
        {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ns);
            }
        }
    }
}

impl DynNamespaces {
    /// The configured namespaces that are patterns.
    pub fn new(configured: &[String]) -> Self {
        DynNamespaces {
            patterns: configured
                .iter()
                .filter(|p| p.contains('{'))
                .cloned()
                .collect(),
            connecting: Default::default(),
        }
    }

    /// Whether `ns` is a child of a pattern (and so removable).
    pub fn is_child(&self, ns: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, ns))
    }

    /// The name `ns` is counted under in metrics: the pattern it is a child
    /// of, else the namespace itself (`/` or a fixed one, a bounded set).
    /// Clients choose child names, so they never become label values.
    pub fn label<'a>(&'a self, ns: &'a str) -> &'a str {
        self.patterns
            .iter()
            .find(|p| pattern_matches(p, ns))
            .map_or(ns, String::as_str)
    }

    /// Marks a connect to `ns` in progress (nothing for fixed namespaces).
    pub fn connecting(&self, ns: &str) -> Option<Connecting<'_>> {
        if !self.is_child(ns) {
            return None;
        }
        let mut c = self.connecting.lock().ok()?;
        *c.entry(ns.to_string()).or_insert(0) += 1;
        Some(Connecting {
            owner: self,
            ns: ns.to_string(),
        })
    }

    /// Removes child namespace `ns` if no socket is in it and no connect to
    /// it is under way. `leaving` is a socket on its way out, not counted.
    pub fn remove_if_empty<A: Adapter>(
        &self,
        io: &SocketIo<A>,
        ns: &str,
        leaving: Option<socketioxide::socket::Sid>,
    ) {
        if !self.is_child(ns) {
            return;
        }
        let Ok(connecting) = self.connecting.lock() else {
            return;
        };
        if connecting.contains_key(ns) {
            return;
        }
        let Some(op) = io.of(ns) else { return };
        let occupied = op.sockets().iter().any(|s| Some(s.id) != leaving);
        if !occupied {
            tracing::debug!(ns, "removing empty child namespace");
            // Under the lock: no connect can be counted while it goes.
            io.delete_ns(ns);
            crate::metrics::namespace_removed();
        }
    }

    /// False when `socket`'s namespace was removed while it was connecting.
    pub fn still_registered<A: Adapter>(&self, io: &SocketIo<A>, socket: &SocketRef<A>) -> bool {
        !self.is_child(socket.ns())
            || io
                .of(socket.ns())
                .and_then(|op| op.get_socket(socket.id))
                .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_labelled_by_their_pattern() {
        let n = DynNamespaces::new(&["/acme".into(), "/t-{tenant}".into()]);
        assert_eq!(n.label("/"), "/");
        assert_eq!(n.label("/acme"), "/acme");
        assert_eq!(n.label("/t-one"), "/t-{tenant}");
        assert_eq!(n.label("/t-two"), "/t-{tenant}");
    }
}
