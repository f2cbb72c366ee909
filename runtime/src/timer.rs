//! Timeouts that cost nothing when the work is done at once, and the connections'
//! long-lived timers, kept off the application's runtime.
//!
//! `tokio::time::timeout` reads the clock to compute its deadline on every call and,
//! when the work is pending at its first poll, enters and then removes a timer entry.
//! Most writes on a local socket finish in their first poll, so [`unless_done_now`]
//! polls the work once before creating the timeout at all.
//!
//! Each connection also keeps one timer for as long as it lives: a server connection's
//! idle timer, a client's timer for the earliest deadline in flight. While any timer is
//! registered with a tokio runtime, every worker of that runtime that runs out of work
//! parks with a timeout instead of without one, and pays for it on every park: with one
//! pending 100 s sleep on the bench's runtime, the raw ping-pong floor's p50 went from
//! 3.4–3.5 µs to 3.6–3.8 µs (3 of 3 pairs). [`sleep_until`] therefore registers these
//! timers with a small runtime of its own, on one helper thread per process, so that a
//! timer-free application's runtime keeps an empty timer wheel (W1's p50 ratio to the
//! raw floor went from 1.29–1.37 to 1.25–1.28 in alternating bench runs). An
//! application that has timers of its own pays the park cost anyway.

use std::{
    future::Future,
    pin::pin,
    sync::OnceLock,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use tokio::{
    runtime::Handle,
    time::{error::Elapsed, Sleep},
};

/// `work`, failing with `Elapsed` if it is still pending `limit` after its first poll.
/// Equivalent to `tokio::time::timeout(limit, work)` except that the clock is read and
/// the timer armed only when the first poll returns `Pending`, and that the limit then
/// counts from there (the first poll is a handful of microseconds at most).
pub(crate) async fn unless_done_now<F: Future>(
    limit: Duration,
    work: F,
) -> Result<F::Output, Elapsed> {
    let mut work = pin!(work);
    // The first poll runs with a no-op waker; a pending `work` is polled again at
    // once by the timeout below, with the task's real waker, before anything waits.
    if let Some(output) = work.as_mut().now_or_never() {
        return Ok(output);
    }
    tokio::time::timeout(limit, work).await
}

/// A [`Sleep`] until `at` (a `std::time::Instant`), registered with the
/// process's timer runtime (see the module's documentation) rather than the caller's.
/// It is polled, reset and dropped like any other `Sleep`, from any runtime; when it
/// fires, the timer thread wakes the polling task. If the timer thread could not be
/// started (the OS refused a thread), the caller's runtime keeps the timer instead, as
/// `tokio::time::sleep_until` would.
///
/// # Panics
///
/// Only in that fallback, and as `tokio::time::sleep_until` does: when called outside a
/// tokio runtime, or on one built without the time driver.
pub(crate) fn sleep_until(at: Instant) -> Sleep {
    let _entered = timer_runtime().map(Handle::enter);
    tokio::time::sleep_until(at.into())
}

/// The handle of the process's timer runtime: a current-thread tokio runtime with only
/// the time driver, run by the thread `daemoneye-ipc-timer` for the life of the process.
/// Started at the first call; `None` if that failed, and then never tried again.
fn timer_runtime() -> Option<&'static Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::sync_channel(1);
            let spawned = std::thread::Builder::new()
                .name("daemoneye-ipc-timer".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            // A send fails only if the receiver is gone, which it is not
                            // until the handle arrives.
                            let _ = sender.send(Some(runtime.handle().clone()));
                            // Drives the timer wheel; never returns.
                            runtime.block_on(std::future::pending::<()>());
                        }
                        Err(error) => {
                            tracing::warn!(%error, "no timer runtime: timers use the caller's");
                            let _ = sender.send(None);
                        }
                    }
                });
            match spawned {
                // Waits once, for the thread to build its runtime.
                Ok(_) => receiver.recv().ok().flatten(),
                Err(error) => {
                    tracing::warn!(%error, "no timer thread: timers use the caller's runtime");
                    None
                }
            }
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer runtime drives the sleep: a caller's runtime built without the time
    /// driver (where `tokio::time::sleep_until` panics) still sees it fire, and the
    /// timer thread is the only one started, however many sleeps are made.
    #[test]
    fn sleeps_fire_without_the_callers_time_driver_on_one_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime without the time driver");
        runtime.block_on(async {
            let first = sleep_until(Instant::now() + Duration::from_millis(5));
            let second = sleep_until(Instant::now() + Duration::from_millis(1));
            tokio::join!(first, second);
        });
        let first = timer_runtime().expect("timer runtime");
        let again = timer_runtime().expect("timer runtime");
        assert!(std::ptr::eq(first, again));
    }

    #[tokio::test]
    async fn a_reset_sleep_fires_at_its_new_time() {
        let sleep = sleep_until(Instant::now() + Duration::from_secs(3600));
        tokio::pin!(sleep);
        let soon = Instant::now() + Duration::from_millis(2);
        sleep.as_mut().reset(soon.into());
        sleep.await;
        assert!(Instant::now() >= soon);
    }
}
