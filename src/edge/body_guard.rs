//! Request bodies must arrive in time, whatever route they are for.
//!
//! hyper's header timeout ends once the headers are in; a body could then
//! take forever, one byte every few seconds or stalled one byte before its
//! end, holding its connection and whatever the handler buffered of it (a
//! long-polling POST is read whole before Engine.IO sees a packet). So every
//! request with a body gets, from the end of its headers:
//!
//! * `--body-timeout-ms`: the whole body must have arrived by then;
//! * `--min-body-bytes-per-sec`: after [`GRACE`], the body must have
//!   arrived at least that fast on average since it started.
//!
//! A body that fails either gets a JSON 408 and its connection is closed;
//! the request's handler is dropped with everything it had read (see
//! [`crate::edge::serve`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, Response, StatusCode, header};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::Instant;

/// How long a body may arrive at any pace before the minimum rate applies
/// (a client's first bytes may wait for a round trip or two).
pub const GRACE: Duration = Duration::from_secs(5);

/// The two rules, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub timeout: Duration,
    /// Bytes per second; 0: no minimum.
    pub min_rate: u64,
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// Not whole within `--body-timeout-ms`.
    Timeout,
    /// Slower than `--min-body-bytes-per-sec`.
    TooSlow,
}

impl Overdue {
    /// The code in the answer and the limit's metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Overdue::Timeout => "body_timeout",
            Overdue::TooSlow => "min_body_rate",
        }
    }

    /// The answer (the connection closes after it).
    pub fn response(self) -> Response<axum::body::Body> {
        let error = match self {
            Overdue::Timeout => "request body not received within --body-timeout-ms",
            Overdue::TooSlow => "request body slower than --min-body-bytes-per-sec",
        };
        let body = serde_json::json!({ "error": error, "code": self.as_str() }).to_string();
        json_then_close(StatusCode::REQUEST_TIMEOUT, body)
    }
}

/// What the body's reader has seen so far, shared with [`overdue`].
#[derive(Debug, Default)]
pub struct Progress {
    received: AtomicU64,
    /// The body ended, failed, or its reader dropped it: no rule applies.
    done: AtomicBool,
}

impl Progress {
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// A request body that counts what passes through it.
pub struct TimedBody {
    inner: Incoming,
    progress: Arc<Progress>,
}

impl TimedBody {
    pub fn new(inner: Incoming) -> (Self, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let body = TimedBody {
            inner,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.progress
                        .received
                        .fetch_add(data.len() as u64, Ordering::AcqRel);
                }
                if self.inner.is_end_stream() {
                    self.progress.done.store(true, Ordering::Release);
                }
            }
            Poll::Ready(_) => self.progress.done.store(true, Ordering::Release),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.progress.done.store(true, Ordering::Release);
    }
}

/// Resolves when the body started at `start` breaks a rule; never, once it
/// is done. Wakes only when a rule could next be broken by what has arrived.
pub async fn overdue(progress: &Progress, rules: BodyRules, start: Instant) -> Overdue {
    loop {
        if progress.done() {
            return std::future::pending().await;
        }
        let received = progress.received.load(Ordering::Acquire);
        match check(rules, received, start.elapsed()) {
            Err(broken) => return broken,
            Ok(next) => tokio::time::sleep_until(start + next).await,
        }
    }
}

/// The rules for a body with `received` bytes after `elapsed`: broken, or
/// the time (since the start) at which they could next be, if nothing more
/// arrives.
fn check(rules: BodyRules, received: u64, elapsed: Duration) -> Result<Duration, Overdue> {
    if elapsed >= rules.timeout {
        return Err(Overdue::Timeout);
    }
    if rules.min_rate == 0 {
        return Ok(rules.timeout);
    }
    // When the bytes received so far stop being enough.
    let enough_until = Duration::from_secs_f64((received + 1) as f64 / rules.min_rate as f64);
    if elapsed >= GRACE && elapsed >= enough_until {
        return Err(Overdue::TooSlow);
    }
    Ok(rules.timeout.min(enough_until.max(GRACE)))
}

/// A JSON error answer after which the connection closes.
pub(crate) fn json_then_close(status: StatusCode, body: String) -> Response<axum::body::Body> {
    let mut res = Response::new(axum::body::Body::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn rules(timeout_s: u64, min_rate: u64) -> BodyRules {
        BodyRules {
            timeout: S(timeout_s),
            min_rate,
        }
    }

    #[test]
    fn a_stalled_body_times_out() {
        let r = rules(30, 1000);
        // 998 KB in the first second, then nothing.
        assert_eq!(check(r, 998_000, S(1)), Ok(S(30)));
        assert_eq!(check(r, 998_000, S(30)), Err(Overdue::Timeout));
    }

    #[test]
    fn a_trickle_is_too_slow_after_the_grace() {
        let r = rules(30, 1000);
        assert_eq!(check(r, 1, S(1)), Ok(GRACE));
        assert_eq!(check(r, 3, GRACE), Err(Overdue::TooSlow));
        // 7,999 bytes are enough at 1,000 B/s until 8 s.
        assert_eq!(check(r, 7_999, S(6)), Ok(S(8)));
        assert_eq!(check(r, 7_999, S(8)), Err(Overdue::TooSlow));
        assert_eq!(check(r, 8_500, S(8)), Ok(Duration::from_millis(8_501)));
    }

    #[test]
    fn no_minimum_rate_leaves_the_timeout() {
        let r = rules(12, 0);
        assert_eq!(check(r, 0, S(11)), Ok(S(12)));
        assert_eq!(check(r, 0, S(12)), Err(Overdue::Timeout));
    }

    #[test]
    fn the_timeout_comes_first_when_it_is_shorter_than_the_grace() {
        let r = rules(2, 1000);
        assert_eq!(check(r, 0, Duration::ZERO), Ok(S(2)));
        assert_eq!(check(r, 0, S(2)), Err(Overdue::Timeout));
    }
}
