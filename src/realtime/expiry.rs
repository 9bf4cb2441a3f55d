//! Token lifetime for sockets (docs/protocol.md §3): shortly before a token's `exp`
//! the socket gets `auth:expiring { expiresAt }`; when `exp` passes it gets
//! `server:closing { reason: "token_expired" }` and is disconnected, unless an
//! `auth:refresh { token }` moved the deadline.
//!
//! One sweeper task per server handles every socket (an idle socket costs no
//! timer); [`Schedule`] is the pure bookkeeping it runs on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What the sweeper does to one socket.
pub trait Expiring: Send + Sync {
    /// The token expires at `exp` (epoch seconds): tell the client.
    fn warn(&self, exp: u64);
    /// The token has expired: end the connection.
    fn expire(&self);
}

/// What is due for one tracked socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Warn(u64),
    Expire,
}

#[derive(Debug)]
struct Entry<T> {
    exp: u64,
    warned: bool,
    target: T,
}

/// Deadlines by time; each tracked key has exactly one entry, at its next
/// due time (the warning, then the expiry).
#[derive(Debug)]
pub struct Schedule<T> {
    warning_secs: u64,
    next_key: u64,
    by_time: BTreeMap<(u64, u64), Entry<T>>,
    due_of: HashMap<u64, u64>,
}

impl<T: Clone> Schedule<T> {
    pub fn new(warning_secs: u64) -> Self {
        Schedule {
            warning_secs,
            next_key: 0,
            by_time: BTreeMap::new(),
            due_of: HashMap::new(),
        }
    }

    fn insert(&mut self, key: u64, entry: Entry<T>) {
        let due = if entry.warned {
            entry.exp
        } else {
            entry.exp.saturating_sub(self.warning_secs)
        };
        self.due_of.insert(key, due);
        self.by_time.insert((due, key), entry);
    }

    /// Starts tracking a token that expires at `exp`; returns its key.
    pub fn track(&mut self, exp: u64, target: T) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.insert(
            key,
            Entry {
                exp,
                warned: false,
                target,
            },
        );
        key
    }

    fn take(&mut self, key: u64) -> Option<Entry<T>> {
        let due = self.due_of.remove(&key)?;
        self.by_time.remove(&(due, key))
    }

    /// Stops tracking `key` (the socket is gone).
    pub fn untrack(&mut self, key: u64) {
        self.take(key);
    }

    /// Moves the deadline of `key` to `exp` (a refreshed token; an earlier
    /// one does not shorten it) and returns the deadline now in force, or
    /// `None` when the key is no longer tracked (the socket already expired).
    pub fn extend(&mut self, key: u64, exp: u64) -> Option<u64> {
        let mut entry = self.take(key)?;
        if exp > entry.exp {
            entry.exp = exp;
            entry.warned = false;
        }
        let now = entry.exp;
        self.insert(key, entry);
        Some(now)
    }

    /// Everything due at `now` (epoch seconds). A warned entry stays tracked
    /// until its expiry; an expired one is removed.
    pub fn pop_due(&mut self, now: u64) -> Vec<(T, Due)> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            let (due, key) = *entry.key();
            if due > now {
                break;
            }
            let mut entry = entry.remove();
            self.due_of.remove(&key);
            if now >= entry.exp {
                out.push((entry.target, Due::Expire));
            } else {
                out.push((entry.target.clone(), Due::Warn(entry.exp)));
                entry.warned = true;
                self.insert(key, entry);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.due_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due_of.is_empty()
    }
}

/// The server's schedule and its sweeper (started with the first socket).
pub struct Expiries {
    schedule: Mutex<Schedule<Arc<dyn Expiring>>>,
    sweeper: std::sync::Once,
}

impl Expiries {
    pub fn new(warning_secs: u64) -> Arc<Self> {
        Arc::new(Expiries {
            schedule: Mutex::new(Schedule::new(warning_secs)),
            sweeper: std::sync::Once::new(),
        })
    }

    /// Tracks a socket whose token expires at `exp`; returns its key.
    pub fn track(self: &Arc<Self>, exp: u64, target: Arc<dyn Expiring>) -> u64 {
        self.sweeper.call_once(|| {
            let weak = Arc::downgrade(self);
            tokio::spawn(sweep(weak));
        });
        self.lock().track(exp, target)
    }

    pub fn untrack(&self, key: u64) {
        self.lock().untrack(key);
    }

    pub fn extend(&self, key: u64, exp: u64) -> Option<u64> {
        self.lock().extend(key, exp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule<Arc<dyn Expiring>>> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Once a second: warns and expires what is due; ends with the server.
async fn sweep(expiries: Weak<Expiries>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(expiries) = expiries.upgrade() else {
            return;
        };
        let due = expiries.lock().pop_due(crate::auth::now_secs());
        drop(expiries);
        for (target, due) in due {
            match due {
                Due::Warn(exp) => target.warn(exp),
                Due::Expire => target.expire(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_then_expires() {
        let mut s = Schedule::new(30);
        let k = s.track(1000, "a");
        assert!(s.pop_due(969).is_empty());
        assert_eq!(s.pop_due(970), vec![("a", Due::Warn(1000))]);
        assert!(s.pop_due(999).is_empty(), "warned once");
        assert_eq!(s.pop_due(1000), vec![("a", Due::Expire)]);
        assert!(s.is_empty());
        assert_eq!(s.extend(k, 2000), None, "gone after expiry");
    }

    #[test]
    fn a_token_close_to_expiry_is_warned_at_once() {
        let mut s = Schedule::new(30);
        s.track(1010, "a");
        assert_eq!(s.pop_due(1000), vec![("a", Due::Warn(1010))]);
    }

    #[test]
    fn refresh_moves_the_deadline_and_warns_again() {
        let mut s = Schedule::new(30);
        let k = s.track(1000, "a");
        assert_eq!(s.pop_due(975), vec![("a", Due::Warn(1000))]);
        assert_eq!(s.extend(k, 1600), Some(1600));
        assert!(s.pop_due(1000).is_empty(), "no expiry at the old exp");
        assert_eq!(s.pop_due(1570), vec![("a", Due::Warn(1600))]);
        assert_eq!(s.pop_due(1600), vec![("a", Due::Expire)]);
    }

    #[test]
    fn an_earlier_token_does_not_shorten_the_deadline() {
        let mut s = Schedule::new(30);
        let k = s.track(1000, "a");
        assert_eq!(s.extend(k, 500), Some(1000));
        assert!(s.pop_due(969).is_empty());
    }

    #[test]
    fn untracked_sockets_are_forgotten() {
        let mut s = Schedule::new(30);
        let a = s.track(1000, "a");
        s.track(1000, "b");
        s.untrack(a);
        assert_eq!(s.pop_due(1000), vec![("b", Due::Expire)]);
        assert_eq!(s.len(), 0);
    }
}
