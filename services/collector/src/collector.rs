//! [`SystemCollector`]: the `ProcessCollector` served by `procmond`.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use daemoneye_ipc::{BlockingPool, IpcConfig, Status};
use daemoneye_proto::{
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessFilter, ProcessList,
};

use crate::{
    enumerate::{self, CpuSampler},
    filter::Matcher,
    hash, limits, task, ProcessCollector,
};

/// Collects process data from the local operating system with `sysinfo`, and hashes
/// files with SHA-256, SHA-512 or BLAKE3.
///
/// Cheap to clone: clones share the CPU sampler and the blocking pools. All blocking
/// work (reading the process table, compiling a pattern, reading files) runs on tokio's
/// blocking threads through two [`BlockingPool`]s, one for hashing and one for process
/// enumeration, so a runtime is required. Each pool runs a bounded number of jobs at
/// once and answers `RESOURCE_EXHAUSTED` when full; having two means hashes stuck on a
/// filesystem that never answers cannot stop process enumeration.
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
    hashing: BlockingPool,
    enumeration: BlockingPool,
}

impl SystemCollector {
    /// A collector with no CPU history yet, whose pools each run
    /// [`DEFAULT_MAX_BLOCKING`](daemoneye_ipc::blocking::DEFAULT_MAX_BLOCKING) jobs;
    /// reads nothing until the first call.
    pub fn new() -> Self {
        Self::with_limits(BlockingPool::default(), BlockingPool::default())
    }

    /// A collector whose hashing and process enumeration each run at most
    /// [`config.max_blocking`](IpcConfig::max_blocking) jobs at once (what `procmond`
    /// serves).
    pub fn from_config(config: &IpcConfig) -> Self {
        Self::with_limits(
            BlockingPool::from_config(config),
            BlockingPool::from_config(config),
        )
    }

    /// A collector that hashes on `hashing` and enumerates processes on `enumeration`.
    /// The two may be clones of one pool, to share one limit.
    pub fn with_limits(hashing: BlockingPool, enumeration: BlockingPool) -> Self {
        Self {
            cpu: Arc::new(Mutex::new(CpuSampler::new())),
            hashing,
            enumeration,
        }
    }

    /// The pool that hashing runs on.
    pub fn hashing_pool(&self) -> &BlockingPool {
        &self.hashing
    }

    /// The pool that process enumeration runs on.
    pub fn enumeration_pool(&self) -> &BlockingPool {
        &self.enumeration
    }
}

impl Default for SystemCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SystemCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemCollector")
            .field("hashing", &self.hashing)
            .field("enumeration", &self.enumeration)
            .finish_non_exhaustive()
    }
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
/// **Errors**: `INVALID_ARGUMENT` when a field is over its bound
/// ([`MAX_PIDS`](crate::MAX_PIDS), [`MAX_PROCESS_NAMES`](crate::MAX_PROCESS_NAMES),
/// [`MAX_PROCESS_NAME_BYTES`](crate::MAX_PROCESS_NAME_BYTES),
/// [`MAX_PATTERN_BYTES`](crate::MAX_PATTERN_BYTES),
/// [`MAX_PATTERN_WILDCARDS`](crate::MAX_PATTERN_WILDCARDS)), checked before any work,
/// or when `executable_pattern` is not a valid glob; `RESOURCE_EXHAUSTED` when the
/// enumeration pool is running its limit of jobs; `INTERNAL` if the blocking job
/// panicked. Messages quote at most a short, escaped excerpt of a field.
///
/// **`check_hash`** answers a [`HashResult`] whatever happens to the file. Its call
/// errors: `INVALID_ARGUMENT` when `path` is over [`MAX_PATH_BYTES`](crate::MAX_PATH_BYTES),
/// `algorithm` over [`MAX_ALGORITHM_BYTES`](crate::MAX_ALGORITHM_BYTES) or
/// `expected_hash` over [`MAX_EXPECTED_HASH_BYTES`](crate::MAX_EXPECTED_HASH_BYTES);
/// `RESOURCE_EXHAUSTED` when the hashing pool is running its limit of jobs (a hash whose
/// caller gave up keeps its slot until its current read returns); `INTERNAL` if the
/// blocking job panicked. `algorithm` is one of [`HASH_ALGORITHMS`](crate::HASH_ALGORITHMS)
/// (`sha256`, `sha512`, `blake3`, any case; empty means `sha256`); `hash_value` is
/// lowercase hex. `success` is `true` only when the hash was computed *and* either no
/// `expected_hash` was given (absent or empty) or it equals the computed one, compared
/// case-insensitively. Otherwise `success` is `false` and `error_message` says why:
///
/// - another algorithm: `unsupported hash algorithm "md5" (supported: sha256, sha512, blake3)`;
/// - a file that cannot be opened or read: `cannot open <path>: <OS error>` (also
///   `cannot read ...`); something not a regular file: `<path> is not a regular file`;
/// - a mismatch: `hash mismatch: expected <expected>, got <actual>`, and then
///   `hash_value` **is** filled with the computed hash.
///
/// Files are streamed through a [`HASH_BUFFER_BYTES`](crate::HASH_BUFFER_BYTES)
/// buffer; if the call is cancelled (deadline, or the caller dropped it) hashing stops
/// at the next chunk.
///
/// **`run_task`** answers a [`DetectionResult`] carrying the task's `task_id`, unless
/// that is over [`MAX_TASK_ID_BYTES`](crate::MAX_TASK_ID_BYTES): it cannot be echoed,
/// and the call fails `INVALID_ARGUMENT` (a seed-era bare connection is closed).
/// `ENUMERATE_PROCESSES` runs `enumerate_processes` with the task's `process_filter`
/// (absent: every process); any call error of it (invalid filter, field over its bound,
/// pool full) gives a failed result with the same message. `CHECK_PROCESS_HASH` checks
/// `hash_check`'s fields against the same bounds as `check_hash` (a failed result naming
/// `hash_check.<field>`), runs `check_hash` and answers [`DetectionResult::hash`] (a
/// failed result when `hash_check` is missing or on a call error of `check_hash`);
/// `MONITOR_PROCESS_TREE` and `VERIFY_EXECUTABLE` answer a failed result
/// `task type <NAME> is not supported by this collector`; an unknown numeric task type
/// answers `unknown task type <n>`.
impl ProcessCollector for SystemCollector {
    async fn enumerate_processes(&self, filter: ProcessFilter) -> Result<ProcessList, Status> {
        // Cheap checks on the async worker; the pattern is compiled on the blocking
        // thread, where its cost cannot hold up other calls.
        limits::check_filter(&filter)?;
        let cpu = self.cpu.clone();
        let started = Instant::now();
        let processes = self
            .enumeration
            .run("process enumeration", move |cancelled| {
                let matcher = Matcher::new(filter)?;
                Ok::<_, Status>(enumerate::collect(&matcher, &cpu, cancelled))
            })
            .await??;
        tracing::debug!(
            count = processes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "enumerated processes"
        );
        Ok(ProcessList { processes })
    }

    async fn check_hash(&self, request: HashRequest) -> Result<HashResult, Status> {
        limits::check_hash_request(&request)?;
        self.hashing
            .run("hashing", move |cancelled| {
                hash::hash_request(&request, cancelled)
            })
            .await
    }

    async fn run_task(&self, task: DetectionTask) -> Result<DetectionResult, Status> {
        task::run(self, task).await
    }
}
