//! Bounded blocking work for handlers.
//!
//! A handler must not block its async worker, so synchronous work (reading a file,
//! walking the process table) goes to tokio's blocking threads. Unbounded, that lets a
//! peer start as many threads as it sends requests (tokio allows 512), and a read that
//! never returns (a hung network filesystem, a FUSE mount that does not answer) keeps its
//! thread for good. A [`BlockingPool`] puts a limit on it:
//!
//! - at most [`limit`](BlockingPool::limit) jobs of a pool run at once; one more is
//!   answered [`RESOURCE_EXHAUSTED`](crate::Code::ResourceExhausted) at once, never
//!   queued, so memory and threads stay bounded whatever a peer sends;
//! - a job's slot is held until the job itself returns, not until its caller stops
//!   waiting, so the count is the true number of threads the pool keeps busy;
//! - every job receives a [`CancelFlag`], set as soon as the future awaiting the job is
//!   dropped (the call was cancelled, or its deadline passed and the server stopped the
//!   handler). A job checks it between units of work (each read) and returns early.
//!
//! The limit comes from [`IpcConfig::max_blocking`] (default
//! [`DEFAULT_MAX_BLOCKING`]) through [`BlockingPool::from_config`]. Give independent kinds
//! of work pools of their own, so that one that hangs cannot lock out the others.
//!
//! ```no_run
//! use daemoneye_ipc::{BlockingPool, Status};
//!
//! # async fn handler(pool: &BlockingPool) -> Result<u64, Status> {
//! let total = pool
//!     .run("summing", |cancel| {
//!         let mut total = 0u64;
//!         for chunk in 0..1_000u64 {
//!             if cancel.is_cancelled() {
//!                 break; // nobody is waiting for the answer any more
//!             }
//!             total += chunk; // one unit of blocking work
//!         }
//!         total
//!     })
//!     .await?;
//! # Ok(total) }
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::{IpcConfig, Status};

/// Default of [`IpcConfig::max_blocking`]: blocking jobs one [`BlockingPool`] runs at
/// once. 16 is the default connection limit, so each connection of a default server can
/// have one job running in each pool.
pub const DEFAULT_MAX_BLOCKING: usize = 16;

/// Largest pool size: what both a semaphore and a `u32` count can hold.
const MAX_LIMIT: usize = {
    let semaphore = Semaphore::MAX_PERMITS;
    if (u32::MAX as usize) < semaphore {
        u32::MAX as usize
    } else {
        semaphore
    }
};

/// Tells a blocking job that nobody waits for its result any more.
///
/// Cheap to clone; clones share the flag. [`BlockingPool`] sets it when the future
/// awaiting the job is dropped; the job should check [`is_cancelled`](Self::is_cancelled)
/// between units of work and return early once it is set.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the job's caller went away.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the flag (for every clone). Setting it twice is harmless.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs blocking jobs on tokio's blocking threads, at most [`limit`](Self::limit) at
/// once; see the [module docs](self).
///
/// Cheap to clone: clones share the limit.
#[derive(Clone)]
pub struct BlockingPool {
    inner: Arc<Inner>,
}

struct Inner {
    slots: Arc<Semaphore>,
    limit: usize,
    /// Woken whenever a job ends, for [`BlockingPool::wait_idle`].
    finished: Notify,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPool")
            .field("limit", &self.inner.limit)
            .field("running", &self.running())
            .finish()
    }
}

impl Default for BlockingPool {
    /// A pool of [`DEFAULT_MAX_BLOCKING`] jobs.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BLOCKING)
    }
}

impl BlockingPool {
    /// A pool that runs at most `limit` jobs at once. A `limit` of 0 is taken as 1, and
    /// one above `u32::MAX` as `u32::MAX` ([`IpcConfig::validate`] refuses both).
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, MAX_LIMIT);
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(limit)),
                limit,
                finished: Notify::new(),
            }),
        }
    }

    /// A pool of [`config.max_blocking`](IpcConfig::max_blocking) jobs.
    pub fn from_config(config: &IpcConfig) -> Self {
        Self::new(config.max_blocking)
    }

    /// Jobs this pool runs at once.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Jobs running now, including jobs whose caller has gone but which have not yet
    /// returned (a read that does not come back keeps its slot).
    pub fn running(&self) -> usize {
        self.inner.limit - self.inner.slots.available_permits()
    }

    /// Starts `job` on a blocking thread now, or refuses at once when the pool is full.
    ///
    /// `what` names the work in error messages ("hashing"). The returned [`BlockingJob`]
    /// resolves to the job's result; dropping it sets the job's [`CancelFlag`] (the job
    /// keeps its slot until it returns).
    ///
    /// # Errors
    /// - `RESOURCE_EXHAUSTED` when [`limit`](Self::limit) jobs are running;
    /// - `INTERNAL` when called outside a tokio runtime.
    pub fn spawn<F, R>(&self, what: &'static str, job: F) -> Result<BlockingJob<R>, Status>
    where
        F: FnOnce(&CancelFlag) -> R + Send + 'static,
        R: Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Status::internal(format!("{what} needs a tokio runtime")))?;
        let permit = Arc::clone(&self.inner.slots)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{what}: all {} blocking slots are busy; retry later",
                    self.inner.limit
                ))
            })?;
        let cancel = CancelFlag::new();
        let slot = Slot {
            permit: Some(permit),
            pool: Arc::clone(&self.inner),
        };
        let flag = cancel.clone();
        let handle = runtime.spawn_blocking(move || {
            let _slot = slot; // freed when the job returns or unwinds
            job(&flag)
        });
        Ok(BlockingJob {
            handle,
            cancel,
            what,
        })
    }

    /// Runs `job` on a blocking thread and waits for its result: [`spawn`](Self::spawn)
    /// then await. Dropping the returned future sets the job's [`CancelFlag`].
    ///
    /// # Errors
    /// Those of [`spawn`](Self::spawn) and of awaiting a [`BlockingJob`].
    pub async fn run<F, R>(&self, what: &'static str, job: F) -> Result<R, Status>
    where
        F: FnOnce(&CancelFlag) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn(what, job)?.await
    }

    /// Completes once no job is running. New jobs may still start meanwhile; meant for
    /// shutdown, under a timeout (a job stuck in a read never ends).
    pub async fn wait_idle(&self) {
        loop {
            let finished = self.inner.finished.notified();
            tokio::pin!(finished);
            // Registered before the check, so that a job ending in between wakes us.
            finished.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            finished.await;
        }
    }
}

/// A job's place in its pool, held by the blocking thread until the job returns.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Release first, so that a waiter woken below sees the slot free.
        drop(self.permit.take());
        self.pool.finished.notify_waiters();
    }
}

/// A job started by [`BlockingPool::spawn`]; await it for the job's result.
///
/// Dropping it before the job ends sets the job's [`CancelFlag`].
#[must_use = "dropping a BlockingJob cancels it"]
pub struct BlockingJob<R> {
    handle: JoinHandle<R>,
    cancel: CancelFlag,
    what: &'static str,
}

impl<R> fmt::Debug for BlockingJob<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingJob")
            .field("what", &self.what)
            .field("finished", &self.handle.is_finished())
            .finish()
    }
}

impl<R> BlockingJob<R> {
    /// The job's cancellation flag (set it to ask the job to stop early).
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.cancel
    }
}

impl<R> Future for BlockingJob<R> {
    /// The job's result.
    ///
    /// # Errors
    /// `INTERNAL` when the job panicked (the panic's message is not repeated: it may
    /// hold request data); `UNAVAILABLE` when the runtime shut down before the job ran.
    type Output = Result<R, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let what = self.what;
        Pin::new(&mut self.handle).poll(cx).map(|joined| {
            joined.map_err(|error| {
                if error.is_panic() {
                    Status::internal(format!("{what} failed: the blocking job panicked"))
                } else {
                    Status::unavailable(format!("{what} was stopped: the runtime is shutting down"))
                }
            })
        })
    }
}

impl<R> Drop for BlockingJob<R> {
    fn drop(&mut self) {
        if !self.handle.is_finished() {
            self.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::Code;

    /// Upper bound for anything awaited here.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// Polls `condition` until it holds, at most `PATIENCE`.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(Instant::now() < deadline, "{what} not within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_pool_refuses_at_once_and_frees_the_slot_when_a_job_ends() {
        let pool = BlockingPool::new(2);
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let released = Arc::clone(&released);
            jobs.push(
                pool.spawn("waiting", move |_| {
                    let _ = released.lock().expect("lock").recv();
                })
                .expect("a free slot"),
            );
        }
        assert_eq!(pool.running(), 2);
        let refused = pool
            .run("one more", |_| ())
            .await
            .expect_err("pool is full");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("one more"), "{refused}");
        assert!(refused.message().contains('2'), "{refused}");

        release.send(()).expect("send");
        eventually("one slot free", || pool.running() == 1).await;
        assert_eq!(pool.run("again", |_| 7).await.expect("a free slot"), 7);
        release.send(()).expect("send");
        for job in jobs {
            job.await.expect("job ends");
        }
        assert_eq!(pool.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_future_sets_the_flag_and_the_job_keeps_its_slot_until_it_returns() {
        let pool = BlockingPool::new(1);
        let (seen_tx, seen_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let job = pool
            .spawn("looping", move |cancel| {
                while !cancel.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = seen_tx.send(());
                let _ = go_rx.recv();
            })
            .expect("a free slot");
        drop(job);
        seen_rx
            .recv_timeout(PATIENCE)
            .expect("the job saw the flag");
        assert_eq!(pool.running(), 1, "slot held until the job returns");
        assert_eq!(
            pool.run("meanwhile", |_| ())
                .await
                .expect_err("full")
                .code(),
            Code::ResourceExhausted
        );
        go_tx.send(()).expect("send");
        tokio::time::timeout(PATIENCE, pool.wait_idle())
            .await
            .expect("idle once the job returns");
        pool.run("after", |_| ()).await.expect("slot free again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_job_is_not_cancelled_and_a_panic_is_internal_without_its_message() {
        let pool = BlockingPool::new(1);
        let flag = pool
            .run("copying the flag", |cancel| cancel.clone())
            .await
            .expect("runs");
        assert!(!flag.is_cancelled());

        let status = pool
            .run("panicking", |_| -> () { panic!("secret request data") })
            .await
            .expect_err("panicked");
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"), "{status}");
        eventually("slot freed after the panic", || pool.running() == 0).await;
    }

    #[test]
    fn limits_are_clamped_and_outside_a_runtime_is_an_error() {
        assert_eq!(BlockingPool::new(0).limit(), 1);
        assert_eq!(BlockingPool::new(usize::MAX).limit(), MAX_LIMIT);
        assert_eq!(BlockingPool::default().limit(), DEFAULT_MAX_BLOCKING);
        let status = BlockingPool::new(1)
            .spawn("outside", |_| ())
            .expect_err("no runtime");
        assert_eq!(status.code(), Code::Internal);
    }
}
