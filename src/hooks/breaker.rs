//! A circuit breaker per hook: after `threshold` failures in a row the
//! backend is taken for down and not called for `cool_down`; then one call
//! is let through, and its outcome closes the circuit or opens it again. A
//! dead backend then costs nothing per event. Pure: the caller gives the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    failures: u32,
    open_until: Option<Instant>,
    /// The one call let through after the cool-down is running.
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            threshold,
            cool_down,
            failures: 0,
            open_until: None,
            probing: false,
        }
    }

    /// Whether a call may go to the backend now.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.probing => false,
            Some(_) => {
                self.probing = true;
                true
            }
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.probing = false;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.probing || self.failures >= self.threshold {
            self.open_until = Some(now + self.cool_down);
        }
        self.probing = false;
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert!(b.allow(t0), "two failures: still closed");
        b.success();
        for _ in 0..3 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert!(b.is_open());
        assert!(!b.allow(t0 + Duration::from_secs(4)), "open: no call");
        let later = t0 + Duration::from_secs(6);
        assert!(b.allow(later), "one probe after the cool-down");
        assert!(!b.allow(later), "only one");
        b.failure(later);
        assert!(
            !b.allow(later + Duration::from_secs(1)),
            "the probe failed: open again"
        );
        let again = later + Duration::from_secs(6);
        assert!(b.allow(again));
        b.success();
        assert!(!b.is_open() && b.allow(again));
    }
}
