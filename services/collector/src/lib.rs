//! The `ProcessCollector` service: the contract between `daemoneye-agent` (and
//! `daemoneye-cli`), which call it, and `procmond`, which serves it.
//!
//! The trait is the whole contract; `#[ipc_service]` generates
//! [`ProcessCollectorClient`] and [`ProcessCollectorServer`] from it.
//! [`SystemCollector`] is the implementation `procmond` serves: it enumerates processes
//! with `sysinfo` and hashes files with SHA-256, SHA-512 or BLAKE3 (see its `ProcessCollector` impl for the
//! exact semantics of each method).
//!
//! A peer cannot make it do unbounded work: every request field it reads is bounded by
//! a `MAX_*` constant of this crate, checked before any work (`INVALID_ARGUMENT`), and
//! its blocking work runs on bounded [`BlockingPool`](daemoneye_ipc::BlockingPool)s
//! (`RESOURCE_EXHAUSTED` when full).
//!
//! ```no_run
//! use daemoneye_collector::{ProcessCollectorServer, SystemCollector};
//! use daemoneye_ipc::{IpcConfig, Server};
//!
//! # async fn run() -> Result<(), daemoneye_ipc::IpcError> {
//! let config = IpcConfig::with_endpoint("/tmp/procmond.sock");
//! let server = Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new()))?;
//! server.serve().await
//! # }
//! ```
#![deny(missing_docs)]

mod batch;
mod collector;
mod enumerate;
mod filter;
mod hash;
mod limits;
mod source;
mod table;
mod task;
#[cfg(test)]
mod tests;
mod verify;
mod watch;

pub use batch::{STREAM_BATCH_BYTES, TRUNCATED_MARKER};
pub use collector::SystemCollector;
pub use hash::{DEFAULT_HASH_ALGORITHM, HASH_ALGORITHMS, HASH_BUFFER_BYTES};
pub use limits::{
    MAX_ALGORITHM_BYTES, MAX_EXPECTED_HASH_BYTES, MAX_PATH_BYTES, MAX_PATTERN_BYTES,
    MAX_PATTERN_WILDCARDS, MAX_PIDS, MAX_PROCESS_NAMES, MAX_PROCESS_NAME_BYTES, MAX_TASK_ID_BYTES,
};
pub use table::{TableState, TABLE_RETRY};
pub use watch::{DEFAULT_WATCH_INTERVAL_MS, MIN_WATCH_INTERVAL_MS};

use daemoneye_ipc::{ipc_service, ServerStream, Status};

/// Where `procmond` serves the collector, and where its clients look for it, unless
/// told otherwise: [`default_endpoint_for("procmond")`](daemoneye_ipc::config::default_endpoint_for).
///
/// - Unix, effective uid 0: `/var/run/daemoneye/procmond.sock` (seed: IPC, Default Paths).
/// - Unix, other users: `$XDG_RUNTIME_DIR/daemoneye/procmond.sock`, or
///   `/tmp/daemoneye-<uid>/procmond.sock` when that variable is unset.
/// - Windows: `\\.\pipe\daemoneye\procmond`.
pub fn default_endpoint() -> String {
    daemoneye_ipc::config::default_endpoint_for("procmond")
}
use daemoneye_proto::{
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessEvent, ProcessFilter,
    ProcessList, VerifyRequest, VerifyResult, WatchRequest,
};

/// Collects process data from the operating system (DaemonEye's `procmond`).
///
/// Method ids are pinned: 1 to 3 are the original methods, later ones are numbered
/// after them whatever their place here, so that no id ever changes.
#[ipc_service(
    name = "daemoneye.ProcessCollector",
    descriptors = daemoneye_proto::FILE_DESCRIPTOR_SET
)]
pub trait ProcessCollector {
    /// Lists the processes that match `filter`: any of its names, any of its pids, and
    /// the executable glob when set; an empty filter matches every process. The whole
    /// list is one answer, which must fit in a frame: for listings of any size, use
    /// `stream_processes`.
    #[ipc(id = 1, idempotent)]
    async fn enumerate_processes(&self, filter: ProcessFilter) -> Result<ProcessList, Status>;

    /// Lists the processes that match `filter` (as `enumerate_processes` does) as a
    /// stream of batches, in pid order, each batch a `ProcessList` of about 256 KiB at
    /// most: any number of processes, whatever the frame limit.
    #[ipc(id = 4)]
    async fn stream_processes(
        &self,
        filter: ProcessFilter,
        tx: ServerStream<ProcessList>,
    ) -> Result<(), Status>;

    /// Reports processes that start or exit, as they are seen by snapshots of the
    /// process table every `interval_ms`: those `filter` accepts, within the tree of
    /// `tree_root` when set. Runs until the caller drops the stream (or the tree is
    /// gone): call it without a deadline.
    #[ipc(id = 5)]
    async fn watch_processes(
        &self,
        request: WatchRequest,
        tx: ServerStream<ProcessEvent>,
    ) -> Result<(), Status>;

    /// Compares the executable process `pid` runs with the file at its path today:
    /// unchanged, replaced or deleted, with the hashes of both.
    #[ipc(id = 6, idempotent)]
    async fn verify_executable(&self, request: VerifyRequest) -> Result<VerifyResult, Status>;

    /// Hashes the file at `request.path` (sha256 unless `algorithm` names sha512 or
    /// blake3) and, when `expected_hash` is set, reports whether it matches.
    #[ipc(id = 2, idempotent)]
    async fn check_hash(&self, request: HashRequest) -> Result<HashResult, Status>;

    /// The seed's entry point: runs a `DetectionTask` and answers a `DetectionResult`
    /// with the task's `task_id` (seed: Protobuf IPC Implementation, DetectionTask).
    ///
    /// Also served to seed-era agents that send bare `DetectionTask` frames with no
    /// envelope or handshake; they get bare `DetectionResult` frames back.
    #[ipc(id = 3, idempotent, bare)]
    async fn run_task(&self, task: DetectionTask) -> Result<DetectionResult, Status>;
}
