//! Running work without a task where it needs no waiting.
//!
//! A `tokio::spawn` per event was a measurable share of what an acked
//! `chat:send` costs (allocation, scheduling, a wake-up and a second poll):
//! most events finish without ever waiting (a memory-store write, a
//! broadcast to local sockets), so they are run right where they arrive and
//! only the ones that must wait become tasks.

use std::future::Future;
use std::task::{Context, Waker};

/// Polls `fut` once here; if it is not finished, spawns it to finish.
///
/// A future that returns `Pending` must wake the waker of its latest poll,
/// and the spawned task polls it again with its own, so the first poll's
/// do-nothing waker is never the one relied upon.
pub fn run_or_spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(fut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn ready_work_runs_inline_and_waiting_work_finishes_in_a_task() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        run_or_spawn(async move {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1, "ran before returning");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        run_or_spawn(async move {
            let _ = rx.await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1, "still waiting");
        tx.send(()).unwrap();
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the spawned rest never ran: a wake-up went to the first poll's waker");
    }
}
