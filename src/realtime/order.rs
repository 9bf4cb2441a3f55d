//! A conversation's messages delivered in seq order on this node.
//!
//! A message takes its seq when it is appended (`MessageStore::append`), but
//! becomes durable and is delivered by a task of its own, and those tasks
//! finish in any order: two sockets sending to one room at once had their
//! messages reach listeners out of seq order (and listeners disagree), so a
//! client catching up with `after: <last seq seen>` could skip some. Here
//! each message takes a turn when it is appended, under one lock, and waits
//! for the turn before it in the same conversation before it is delivered.
//! Every wait is on a message appended earlier, so nothing waits in a circle.
//! Messages appended on other nodes keep the order of their own node.
//!
//! Conversations are told apart by a 64-bit hash (no allocation per
//! message): two that collide only deliver one after the other, which
//! costs a wait and never a circle (every wait is still on an earlier one).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The last turn taken in each conversation that has one in flight.
#[derive(Debug, Default)]
pub struct DeliveryOrder {
    last: Mutex<HashMap<u64, (u64, oneshot::Receiver<()>), KeyIsHash>>,
    next_id: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

/// The map's keys are hashes already (`DeliveryOrder::key`): hashing them
/// again cost a SipHash round per insert, lookup and removal.
#[derive(Debug, Default, Clone, Copy)]
struct KeyIsHash;

impl BuildHasher for KeyIsHash {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; this keeps any other input sound.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One message's place in its conversation's delivery order: ends (and lets
/// the next one go) when dropped.
#[derive(Debug)]
pub struct Turn {
    prev: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
    key: u64,
    id: u64,
    order: Arc<DeliveryOrder>,
}

impl DeliveryOrder {
    /// The key of a conversation (`store::Conversation`) for `append`.
    pub fn key(&self, conversation: &impl Hash) -> u64 {
        self.hasher.hash_one(conversation)
    }

    /// Runs `append` (which fixes the message's seq) and takes the message's
    /// turn in conversation `key`, both under one lock, so that turns follow
    /// seq order.
    pub fn append<T>(self: &Arc<Self>, key: u64, append: impl FnOnce() -> T) -> (T, Turn) {
        let (done, next) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let appended = append();
        let prev = last.insert(key, (id, next)).map(|(_, rx)| rx);
        drop(last);
        let turn = Turn {
            prev,
            done: Some(done),
            key,
            id,
            order: self.clone(),
        };
        (appended, turn)
    }

    /// Conversations with a message in flight.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.last.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl Turn {
    /// Resolves once every message appended before this one in the same
    /// conversation has been delivered (or given up).
    /// Cancel-safe: a wait dropped half way keeps the turn waiting.
    pub async fn wait(&mut self) {
        if let Some(prev) = self.prev.as_mut() {
            let _ = prev.await;
            self.prev = None;
        }
    }
}

impl DeliveryOrder {
    /// A turn is over: the next one may go; the entry goes with the last
    /// turn, so idle conversations cost nothing.
    fn finish(&self, key: u64, id: u64, done: Option<oneshot::Sender<()>>) {
        drop(done);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(&key).is_some_and(|(last_id, _)| *last_id == id) {
            last.remove(&key);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let done = self.done.take();
        // The runtime is only looked up (a handle cloned) when it is needed.
        let prev = self.prev.take();
        let runtime = prev
            .as_ref()
            .and_then(|_| tokio::runtime::Handle::try_current().ok());
        match (prev, runtime) {
            // Ended before its own turn came (a duplicate, a failed append,
            // a cancelled request): the next one must still wait for the
            // one before this.
            (Some(prev), Some(runtime)) => {
                let order = self.order.clone();
                let (key, id) = (self.key, self.id);
                runtime.spawn(async move {
                    let _ = prev.await;
                    order.finish(key, id, done);
                });
            }
            _ => self.order.finish(self.key, self.id, done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_follow_append_order_per_conversation() {
        let order = Arc::new(DeliveryOrder::default());
        let (_, mut a1) = order.append(order.key(&"a"), || ());
        let (_, mut b1) = order.append(order.key(&"b"), || ());
        let (_, mut a2) = order.append(order.key(&"a"), || ());
        // Another conversation does not wait; the second of "a" waits for the first.
        b1.wait().await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), a2.wait()).await;
        assert!(waiting.is_err(), "a2 went before a1");
        a1.wait().await;
        drop(a1);
        a2.wait().await;
        drop((a2, b1));
        assert_eq!(order.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_turn_dropped_early_still_keeps_the_order() {
        let order = Arc::new(DeliveryOrder::default());
        let (_, mut a1) = order.append(order.key(&"a"), || ());
        let (_, duplicate) = order.append(order.key(&"a"), || ());
        let (_, mut a3) = order.append(order.key(&"a"), || ());
        // The one in the middle ends without waiting for a1.
        drop(duplicate);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), a3.wait()).await;
        assert!(early.is_err(), "a3 went before a1");
        a1.wait().await;
        drop(a1);
        a3.wait().await;
        drop(a3);
        tokio::task::yield_now().await;
        assert_eq!(order.in_flight(), 0);
    }
}
