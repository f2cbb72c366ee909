//! [`SystemCollector`]: the `ProcessCollector` served by `procmond`.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use daemoneye_ipc::{
    envelope::ENVELOPE_OVERHEAD, BlockingPool, Code, IpcConfig, ServerStream, Status,
};
use daemoneye_proto::{
    prost::Message, DetectionResult, DetectionTask, HashRequest, HashResult, ProcessEvent,
    ProcessFilter, ProcessList, ProcessRecord, VerifyRequest, VerifyResult, WatchRequest,
};
use tokio::time::MissedTickBehavior;

use crate::{
    batch::{Batcher, STREAM_BATCH_BYTES},
    enumerate::CpuSampler,
    filter::Matcher,
    hash, limits,
    source::Source,
    table::{TableState, TableWatch},
    task, verify,
    watch::{self, Tracker},
    ProcessCollector,
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
    source: Source,
    hashing: BlockingPool,
    enumeration: BlockingPool,
    max_frame_bytes: usize,
    table: TableWatch,
}

impl SystemCollector {
    /// A collector with no CPU history yet, whose pools each run
    /// [`DEFAULT_MAX_BLOCKING`](daemoneye_ipc::blocking::DEFAULT_MAX_BLOCKING) jobs and
    /// whose answers fit the default `max_frame_bytes`; reads nothing until the first
    /// call.
    pub fn new() -> Self {
        Self::with_limits(BlockingPool::default(), BlockingPool::default())
    }

    /// A collector whose hashing and process enumeration each run at most
    /// [`config.max_blocking`](IpcConfig::max_blocking) jobs at once, and whose unary
    /// answers are checked against [`config.max_frame_bytes`](IpcConfig::max_frame_bytes)
    /// (what `procmond` serves).
    pub fn from_config(config: &IpcConfig) -> Self {
        Self::with_limits(
            BlockingPool::from_config(config),
            BlockingPool::from_config(config),
        )
        .with_max_frame_bytes(config.max_frame_bytes)
    }

    /// A collector that hashes on `hashing` and enumerates processes on `enumeration`.
    /// The two may be clones of one pool, to share one limit.
    pub fn with_limits(hashing: BlockingPool, enumeration: BlockingPool) -> Self {
        Self {
            source: Source::System(Arc::new(Mutex::new(CpuSampler::new()))),
            hashing,
            enumeration,
            max_frame_bytes: IpcConfig::default().max_frame_bytes,
            table: TableWatch::new(),
        }
    }

    /// This collector with answers checked against a frame limit of `max_frame_bytes`
    /// (the server's [`IpcConfig::max_frame_bytes`]): a unary answer that would not fit
    /// is refused with a message naming the way out, rather than by the runtime.
    pub fn with_max_frame_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = max_frame_bytes;
        self
    }

    /// This collector with a synthetic process table: every enumeration, and every
    /// snapshot of a watch, lists what `table` returns (filtered and sorted by pid as
    /// real processes are; records are sent as given, CPU usage included) instead of
    /// the operating system's processes. For tests and demonstrations of hosts of any
    /// size; `table` runs on the enumeration pool, like a real enumeration. Hashing and
    /// `verify_executable` still look at real files and processes.
    pub fn with_process_table(
        mut self,
        table: impl Fn() -> Vec<ProcessRecord> + Send + Sync + 'static,
    ) -> Self {
        self.source = Source::Synthetic(Arc::new(table));
        self
    }

    /// The pool that hashing runs on.
    pub fn hashing_pool(&self) -> &BlockingPool {
        &self.hashing
    }

    /// The pool that process enumeration runs on.
    pub fn enumeration_pool(&self) -> &BlockingPool {
        &self.enumeration
    }

    /// Whether the process table can be read, as the last read of the whole table
    /// found (an unfiltered listing, a watch snapshot, or
    /// [`probe_process_table`](Self::probe_process_table)); the receiver sees each
    /// change. Shared by clones. See [`TableState`].
    pub fn process_table(&self) -> tokio::sync::watch::Receiver<TableState> {
        self.table.subscribe()
    }

    /// Reads the whole process table now (pids only, on the enumeration pool), records
    /// what it found (see [`process_table`](Self::process_table)) and returns it.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` when the enumeration pool is full (nothing is recorded);
    /// `INTERNAL` if the job panicked.
    pub async fn probe_process_table(&self) -> Result<TableState, Status> {
        let source = self.source.clone();
        let table = self.table.clone();
        self.enumeration
            .run("process table probe", move |_| {
                table.record(source.count());
                table.get()
            })
            .await
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
            .field("source", &self.source)
            .field("hashing", &self.hashing)
            .field("enumeration", &self.enumeration)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

impl SystemCollector {
    /// The processes `filter` selects, sorted by pid, read on the enumeration pool.
    async fn list(&self, filter: ProcessFilter) -> Result<Vec<ProcessRecord>, Status> {
        // Cheap checks on the async worker; the pattern is compiled on the blocking
        // thread, where its cost cannot hold up other calls.
        limits::check_filter(&filter)?;
        let source = self.source.clone();
        let table = self.table.clone();
        let started = Instant::now();
        let processes = self
            .enumeration
            .run("process enumeration", move |cancelled| {
                let matcher = Matcher::new(filter)?;
                Ok::<_, Status>(source.list(&matcher, cancelled, &table))
            })
            .await??;
        tracing::debug!(
            count = processes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "enumerated processes"
        );
        Ok(processes)
    }

    /// Room for a unary answer's message in one frame, in bytes.
    pub(crate) fn max_answer_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_sub(ENVELOPE_OVERHEAD)
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
/// enumeration pool is running its limit of jobs, or when the list does not fit in one
/// answer (the frame limit, [`with_max_frame_bytes`](SystemCollector::with_max_frame_bytes)):
/// the message names `stream_processes`; `INTERNAL` if the blocking job panicked.
/// Messages quote at most a short, escaped excerpt of a field.
///
/// **`stream_processes`** lists the same processes with the same errors (before any
/// item), as [`ProcessList`] items in pid order, each filled up to
/// [`STREAM_BATCH_BYTES`](crate::STREAM_BATCH_BYTES) (a larger record travels alone).
/// A record too large for a frame on its own (a command line of megabytes) has its
/// command line cut: arguments are dropped from the end, the last one kept is cut, and
/// a last element starting with [`TRUNCATED_MARKER`](crate::TRUNCATED_MARKER) says how
/// many bytes are not shown. The process table is read once, then sent as fast as the
/// client grants credit.
///
/// **`watch_processes`** takes a snapshot of the process table every `interval_ms`
/// ([`DEFAULT_WATCH_INTERVAL_MS`](crate::DEFAULT_WATCH_INTERVAL_MS) when 0, at least
/// [`MIN_WATCH_INTERVAL_MS`](crate::MIN_WATCH_INTERVAL_MS)), each on the enumeration
/// pool, and sends one `ProcessEvent` per matching process that appeared
/// (`STARTED`) or disappeared (`EXITED`; a zombie counts as exited) since the previous
/// one, exits first, each group by pid; with `include_existing`, the first snapshot
/// reports every matching process as `EXISTING`. A process is identified by pid and
/// start time (a reused pid is an exit and a start); the filter is applied to a
/// process once, when it is first seen (a later `execve` does not change whether it is
/// watched), and its record is the one read then (no CPU usage). With `tree_root`, the
/// members are that process and its descendants, found through parent pids at each
/// snapshot; a member stays one until it exits, even re-parented. The stream ends `Ok`
/// once the root and every member have exited; `NOT_FOUND` when the root is not
/// running at the first snapshot; `INVALID_ARGUMENT` for a filter over its bounds
/// (fields named `filter.<field>`) or an invalid glob. A snapshot refused by a full
/// pool is skipped (the next one catches up), except the first, which ends the stream
/// `RESOURCE_EXHAUSTED`. A process that starts and exits between two snapshots is not
/// seen.
///
/// **`verify_executable`** answers a [`VerifyResult`] whatever happens to the process
/// (call errors: `INVALID_ARGUMENT` for pid 0 or an `algorithm` over
/// [`MAX_ALGORITHM_BYTES`](crate::MAX_ALGORITHM_BYTES), `RESOURCE_EXHAUSTED` when the
/// hashing pool, where it runs, is full). On Linux it hashes the image the process runs
/// through `/proc/PID/exe` and compares it with the file at the path that link names
/// (looked up through `/proc/PID/root`, then directly): `UNCHANGED` when that is the
/// same file (device and inode) or a file with the same hash, `REPLACED` when another
/// file with another hash (or that cannot be hashed) is there, `DELETED` when nothing is
/// there and the kernel marks the path `(deleted)`; `ERROR` with `error_message` for a
/// process that does not exist, has no executable (kernel threads), cannot be read, an
/// unsupported algorithm, a path not visible from the collector, or on other
/// platforms. `REPLACED` and `DELETED` also say what happened in `error_message`.
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
/// failed result when `hash_check` is missing or on a call error of `check_hash`).
/// `VERIFY_EXECUTABLE` takes its pid from `process_filter.pids` (exactly one) and its
/// algorithm from `hash_check.hash_algorithm` (optional), runs `verify_executable` and
/// answers [`DetectionResult::verify`]: `success` only when `UNCHANGED`, the
/// `verify_result` (field 6, unknown to seed-era peers) and the running image's hash as
/// `hash_result`. `MONITOR_PROCESS_TREE` cannot be one answer: a failed result
/// `task type MONITOR_PROCESS_TREE is not supported as a task ...` names
/// `watch_processes`. An unknown numeric task type answers `unknown task type <n>`.
/// Any answer larger than a frame (a listing of every process on a large host) is
/// replaced by a failed result saying so and naming `stream_processes`: a seed-era
/// peer gets `success: false`, never a closed connection.
impl ProcessCollector for SystemCollector {
    async fn enumerate_processes(&self, filter: ProcessFilter) -> Result<ProcessList, Status> {
        let list = ProcessList {
            processes: self.list(filter).await?,
        };
        let size = list.encoded_len();
        if size > self.max_answer_bytes() {
            return Err(too_large(list.processes.len(), size, self.max_frame_bytes));
        }
        Ok(list)
    }

    async fn stream_processes(
        &self,
        filter: ProcessFilter,
        mut tx: ServerStream<ProcessList>,
    ) -> Result<(), Status> {
        let processes = self.list(filter).await?;
        let count = processes.len();
        let mut batcher = Batcher::new(STREAM_BATCH_BYTES, tx.max_item_bytes());
        for record in processes {
            if let Some(batch) = batcher.push(record) {
                tx.send(batch).await?;
            }
        }
        if let Some(batch) = batcher.finish() {
            tx.send(batch).await?;
        }
        if batcher.truncated > 0 {
            tracing::debug!(
                truncated = batcher.truncated,
                "command lines cut to fit in a frame"
            );
        }
        tracing::debug!(count, "streamed processes");
        Ok(())
    }

    async fn watch_processes(
        &self,
        request: WatchRequest,
        mut tx: ServerStream<ProcessEvent>,
    ) -> Result<(), Status> {
        limits::check_watch(&request)?;
        let WatchRequest {
            filter,
            tree_root,
            interval_ms,
            include_existing,
        } = request;
        let filter = filter.unwrap_or_default();
        let matcher = self
            .enumeration
            .run("compiling a filter", move |_| Matcher::new(filter))
            .await??;
        // Shared with each snapshot's job: a job refused by a full pool never runs, and
        // must not take the watch's memory with it.
        let tracker = Arc::new(Mutex::new(Tracker::new(
            matcher,
            tree_root,
            include_existing,
        )));
        let mut ticks = tokio::time::interval(watch::interval(interval_ms));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            ticks.tick().await;
            let source = self.source.clone();
            let tracker = tracker.clone();
            let table = self.table.clone();
            let job = self
                .enumeration
                .run("process watch", move |_| {
                    let snapshot = source.snapshot();
                    table.record(snapshot.live.len());
                    tracker
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .step(snapshot)
                })
                .await;
            let step = match job {
                Ok(step) => step?,
                // A full pool later on costs one snapshot: the next one catches up,
                // since changes are counted from the last snapshot taken.
                Err(status) if !first && status.code() == Code::ResourceExhausted => {
                    tracing::debug!(%status, "process watch skips a snapshot");
                    continue;
                }
                Err(status) => return Err(status),
            };
            first = false;
            for event in step.events {
                tx.send(event.into()).await?;
            }
            if step.finished {
                return Ok(());
            }
        }
    }

    async fn verify_executable(&self, request: VerifyRequest) -> Result<VerifyResult, Status> {
        limits::check_verify(&request)?;
        self.hashing
            .run("verifying an executable", move |cancelled| {
                verify::verify(request.pid, &request.algorithm, cancelled)
            })
            .await
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
        task::run(self, task, self.max_answer_bytes()).await
    }
}

/// Why a unary listing cannot be answered: it does not fit in a frame.
fn too_large(count: usize, size: usize, max_frame: usize) -> Status {
    Status::resource_exhausted(format!(
        "{count} processes take {size} bytes, more than one answer can carry (frame limit \
         {max_frame} bytes): use stream_processes, which sends them in batches, or narrow \
         the filter"
    ))
}
