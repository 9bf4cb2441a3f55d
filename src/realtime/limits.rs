//! What one user or one socket may send: token buckets (governor) for
//! messages per user and events per socket, and the count of refusals after
//! which a socket that keeps flooding is disconnected.
//!
//! * **Messages** (`chat:send`, `chat:message`, `private:send`): per user,
//!   across all of the user's sockets on this node, `--messages-per-sec`
//!   sustained with bursts of `--message-burst`.
//! * **Messages per address**: the same messages, per client address (the
//!   forwarded one behind `--trusted-proxy`), `--address-messages-per-sec`
//!   with bursts of `--address-message-burst`, so that many tokens from one
//!   address do not add up to many users' worth.
//! * **Events** of any kind: per socket, `--events-per-sec` with bursts of
//!   `--event-burst`, checked on the socket's read path before the event is
//!   queued, so a flood costs no task and no queue slot.
//! * Each refusal answers `rate_limited`; more than `--max-rate-refusals`
//!   within [`REFUSAL_WINDOW`] disconnect the socket.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;

/// The window in which refusals are counted.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

fn quota(per_sec: u32, burst: u32) -> Quota {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nz(per_sec)).allow_burst(nz(burst.max(per_sec)))
}

/// The node-wide limiters.
pub struct Limits {
    messages: DefaultKeyedRateLimiter<(String, String)>,
    /// Per client address; none with `--address-messages-per-sec 0`.
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    event_quota: Quota,
    max_refusals: u32,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        Limits {
            messages: RateLimiter::keyed(quota(config.messages_per_sec, config.message_burst)),
            addresses: (config.address_messages_per_sec > 0).then(|| {
                RateLimiter::keyed(quota(
                    config.address_messages_per_sec,
                    config.address_message_burst,
                ))
            }),
            event_quota: quota(config.events_per_sec, config.event_burst),
            max_refusals: config.max_rate_refusals,
        }
    }

    /// Takes one message from `user`'s bucket in namespace `ns`.
    pub fn message(&self, ns: &str, user: &str) -> bool {
        self.messages
            .check_key(&(ns.to_string(), user.to_string()))
            .is_ok()
    }

    /// Takes one message from client address `addr`'s bucket (always
    /// allowed without an address or without the limit).
    pub fn address_message(&self, addr: Option<IpAddr>) -> bool {
        match (&self.addresses, addr) {
            (Some(limiter), Some(addr)) => limiter.check_key(&addr).is_ok(),
            _ => true,
        }
    }

    /// Forgets users and addresses whose buckets are full again (run every
    /// so often, so the maps hold only recent senders).
    pub fn forget_idle(&self) {
        self.messages.retain_recent();
        self.messages.shrink_to_fit();
        if let Some(addresses) = &self.addresses {
            addresses.retain_recent();
            addresses.shrink_to_fit();
        }
    }

    /// A fresh per-socket state.
    pub fn socket(&self) -> SocketLimits {
        SocketLimits {
            events: RateLimiter::direct(self.event_quota),
            refusals: Mutex::new((Instant::now(), 0)),
            max_refusals: self.max_refusals,
        }
    }
}

/// Drops the buckets of users who stopped sending, once a minute.
pub async fn forget_idle_users(ctx: std::sync::Arc<super::Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        ctx.limits.forget_idle();
    }
}

/// One socket's event bucket and refusal count.
pub struct SocketLimits {
    events: DefaultDirectRateLimiter,
    refusals: Mutex<(Instant, u32)>,
    max_refusals: u32,
}

impl SocketLimits {
    /// Takes one event from the socket's bucket.
    pub fn event(&self) -> bool {
        self.events.check().is_ok()
    }

    /// Counts a refusal; true when the socket has now been refused more
    /// than allowed within the window and must be disconnected.
    pub fn refused(&self) -> bool {
        self.refused_at(Instant::now())
    }

    /// [`SocketLimits::refused`] at time `now` (a new window starts once
    /// [`REFUSAL_WINDOW`] has passed since the current one began).
    fn refused_at(&self, now: Instant) -> bool {
        let Ok(mut r) = self.refusals.lock() else {
            return false;
        };
        if now.duration_since(r.0) > REFUSAL_WINDOW {
            *r = (now, 0);
        }
        r.1 += 1;
        r.1 > self.max_refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_sec: u32, burst: u32, refusals: u32) -> Config {
        Config {
            messages_per_sec: per_sec,
            message_burst: burst,
            events_per_sec: per_sec,
            event_burst: burst,
            max_rate_refusals: refusals,
            ..Config::default()
        }
    }

    #[test]
    fn messages_are_limited_per_user_with_a_burst() {
        let l = Limits::new(&config(1, 5, 10));
        for _ in 0..5 {
            assert!(l.message("/", "alice"));
        }
        assert!(!l.message("/", "alice"), "burst spent");
        assert!(
            l.message("/", "bob"),
            "another user has a bucket of his own"
        );
        assert!(l.message("/acme", "alice"), "and so has another namespace");
    }

    #[test]
    fn messages_are_limited_per_address_across_users() {
        let mut c = config(1000, 1000, 10);
        c.address_messages_per_sec = 1;
        c.address_message_burst = 3;
        let l = Limits::new(&c);
        let here = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(l.address_message(here) && l.address_message(here) && l.address_message(here));
        assert!(!l.address_message(here), "burst spent, whoever sends");
        assert!(l.address_message(Some(IpAddr::from([127, 0, 0, 2]))));
        assert!(
            l.address_message(None),
            "no address known: no address limit"
        );
        c.address_messages_per_sec = 0;
        let off = Limits::new(&c);
        assert!((0..10).all(|_| off.address_message(here)), "0 turns it off");
    }

    #[test]
    fn events_per_socket_and_refusals() {
        let l = Limits::new(&config(1, 3, 2));
        let s = l.socket();
        assert!(s.event() && s.event() && s.event());
        assert!(!s.event());
        assert!(!s.refused());
        assert!(!s.refused());
        assert!(s.refused(), "the third refusal is one too many");
        assert!(l.socket().event(), "a new socket starts full");
    }

    #[test]
    fn idle_users_and_addresses_are_forgotten_active_ones_kept() {
        // 1000 a second: one message is paid back within a millisecond,
        // a burst of 20000 takes 20 seconds, far longer than the pause even
        // on a busy machine.
        let mut c = config(1000, 20_000, 10);
        c.address_messages_per_sec = 1000;
        c.address_message_burst = 20_000;
        let l = Limits::new(&c);
        let (idle, busy) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        assert!(l.message("/", "idle") && l.address_message(Some(idle)));
        // Bounded, so that a limiter that never refuses fails the test
        // rather than hanging it.
        let spent = (0..30_000).take_while(|_| l.message("/", "busy")).count();
        assert!(spent < 30_000, "the busy user's burst ran out");
        let spent = (0..30_000)
            .take_while(|_| l.address_message(Some(busy)))
            .count();
        assert!(spent < 30_000, "the busy address's burst ran out");
        assert_eq!(l.messages.len(), 2);
        assert_eq!(l.addresses.as_ref().map(|a| a.len()), Some(2));
        std::thread::sleep(Duration::from_millis(50));
        l.forget_idle();
        assert_eq!(l.messages.len(), 1, "only the busy user is left");
        assert_eq!(l.addresses.as_ref().map(|a| a.len()), Some(1));
        // Kept, not started afresh: the spent burst is still (mostly) spent.
        let left = (0..20_000).take_while(|_| l.message("/", "busy")).count();
        assert!(left < 10_000, "{left} messages left");
    }

    #[test]
    fn refusals_are_counted_per_window() {
        let l = Limits::new(&config(1, 3, 2));
        let s = l.socket();
        let start = Instant::now();
        assert!(!s.refused_at(start));
        assert!(!s.refused_at(start + Duration::from_secs(9)));
        // A new window: the count starts again.
        let later = start + REFUSAL_WINDOW + Duration::from_secs(1);
        assert!(!s.refused_at(later));
        assert!(!s.refused_at(later + Duration::from_secs(1)));
        assert!(s.refused_at(later + Duration::from_secs(2)));
    }
}
