//! [`SystemCollector`]: the `ProcessCollector` served by `procmond`.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use daemoneye_ipc::Status;
use daemoneye_proto::{
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessFilter, ProcessList,
};

use crate::{
    enumerate::{self, CpuSampler},
    filter::Matcher,
    hash, task, ProcessCollector,
};

/// Collects process data from the local operating system with `sysinfo`, and hashes
/// files with SHA-256.
///
/// Cheap to clone: clones share the CPU sampler. All blocking work (reading the process
/// table, reading files) runs on tokio's blocking pool, so a runtime is required.
///
/// ```no_run
/// use daemoneye_collector::{ProcessCollector, SystemCollector};
/// use daemoneye_proto::ProcessFilter;
///
/// # async fn run() -> Result<(), daemoneye_ipc::Status> {
/// let collector = SystemCollector::new();
/// let mine = ProcessFilter { pids: vec![std::process::id()], ..Default::default() };
/// let list = collector.enumerate_processes(mine).await?;
/// assert_eq!(list.processes.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SystemCollector {
    cpu: Arc<Mutex<CpuSampler>>,
}

impl SystemCollector {
    /// A collector with no CPU history yet; reads nothing until the first call.
    pub fn new() -> Self {
        Self {
            cpu: Arc::new(Mutex::new(CpuSampler::new())),
        }
    }
}

impl Default for SystemCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SystemCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemCollector").finish_non_exhaustive()
    }
}

/// Sets its flag when dropped: tells a blocking task that its caller went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs blocking `work` on tokio's blocking pool; a panic in it becomes `INTERNAL`.
async fn blocking<R: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Status::internal(format!("{what} failed: {error}")))
}

/// # Semantics
///
/// **`enumerate_processes`**: every non-empty criterion of the filter must match (AND
/// between criteria); within `process_names` or `pids` any entry may match (OR). A
/// name matches the process name or the file name of its executable (on Linux the
/// process name is the kernel's `comm`, at most 15 bytes). `executable_pattern` is a
/// shell glob over the executable path in which only `**` crosses `/`; a process whose
/// executable path is unknown never matches it. Processes are sorted by pid; threads
/// are not listed. Per record:
///
/// - `start_time`: Unix seconds; `collection_time`: Unix milliseconds, the same for
///   every record of one answer; `memory_usage`: resident set size in bytes;
/// - `cpu_usage`: percent of one core, averaged since the previous enumeration by this
///   collector (at least 200 ms earlier on Linux, else the previous figure is kept);
///   `None` for a process not seen then, hence for every process on the first call;
/// - `accessible`: the executable path could be read (kernel threads, which have none,
///   count as accessible); `false` means access was denied or the process was exiting;
/// - `file_exists`: the executable path exists now (`false` when the image was deleted
///   or renamed after the process started);
/// - `user_id`: numeric uid on Unix, SID on Windows; `executable_hash`: never set here
///   (use `check_hash`).
///
/// **Errors**: `INVALID_ARGUMENT` naming the pattern when `executable_pattern` is not a
/// valid glob; `INTERNAL` if the blocking task panicked.
///
/// **`check_hash`** always answers a [`HashResult`] (a call error only if the blocking
/// task panicked). `algorithm` may be empty or `sha256` (any case); `hash_value` is
/// lowercase hex. `success` is `true` only when the hash was computed *and* either no
/// `expected_hash` was given (absent or empty) or it equals the computed one, compared
/// case-insensitively. Otherwise `success` is `false` and `error_message` says why:
///
/// - another algorithm: `unsupported hash algorithm "md5" (supported: sha256)`;
/// - a file that cannot be opened or read: `cannot open <path>: <OS error>` (also
///   `cannot read ...`); something not a regular file: `<path> is not a regular file`;
/// - a mismatch: `hash mismatch: expected <expected>, got <actual>`, and then
///   `hash_value` **is** filled with the computed hash.
///
/// Files are streamed through a [`HASH_BUFFER_BYTES`](crate::HASH_BUFFER_BYTES)
/// buffer; if the call is cancelled (deadline, or the caller dropped it) hashing stops
/// at the next chunk.
///
/// **`run_task`** always answers a [`DetectionResult`] carrying the task's `task_id`:
/// `ENUMERATE_PROCESSES` runs `enumerate_processes` with the task's `process_filter`
/// (absent: every process), an invalid filter gives a failed result with the same
/// message; `CHECK_PROCESS_HASH` runs `check_hash` on `hash_check` and answers
/// [`DetectionResult::hash`] (a failed result when `hash_check` is missing);
/// `MONITOR_PROCESS_TREE` and `VERIFY_EXECUTABLE` answer a failed result
/// `task type <NAME> is not supported by this collector`; an unknown numeric task type
/// answers `unknown task type <n>`.
impl ProcessCollector for SystemCollector {
    async fn enumerate_processes(&self, filter: ProcessFilter) -> Result<ProcessList, Status> {
        let matcher = Matcher::new(&filter)?;
        let cpu = self.cpu.clone();
        let started = Instant::now();
        let processes = blocking("process enumeration", move || {
            enumerate::collect(&matcher, &cpu)
        })
        .await?;
        tracing::debug!(
            count = processes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "enumerated processes"
        );
        Ok(ProcessList { processes })
    }

    async fn check_hash(&self, request: HashRequest) -> Result<HashResult, Status> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancelled.clone());
        blocking("hashing", move || hash::hash_request(&request, &cancelled)).await
    }

    async fn run_task(&self, task: DetectionTask) -> Result<DetectionResult, Status> {
        Ok(task::run(self, task).await)
    }
}
