//! Timeouts that cost nothing when the work is done at once.
//!
//! `tokio::time::timeout` reads the clock to compute its deadline on every call and,
//! when the work is pending at its first poll, enters and then removes a timer entry.
//! Most writes on a local socket finish in their first poll, so [`unless_done_now`]
//! polls the work once before creating the timeout at all.

use std::{future::Future, pin::pin, time::Duration};

use futures_util::FutureExt;
use tokio::time::error::Elapsed;

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
