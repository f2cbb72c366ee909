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

mod collector;
mod enumerate;
mod filter;
mod hash;
mod limits;
mod task;
#[cfg(test)]
mod tests;

pub use collector::SystemCollector;
pub use hash::{DEFAULT_HASH_ALGORITHM, HASH_ALGORITHMS, HASH_BUFFER_BYTES};
pub use limits::{
    MAX_ALGORITHM_BYTES, MAX_EXPECTED_HASH_BYTES, MAX_PATH_BYTES, MAX_PATTERN_BYTES,
    MAX_PATTERN_WILDCARDS, MAX_PIDS, MAX_PROCESS_NAMES, MAX_PROCESS_NAME_BYTES, MAX_TASK_ID_BYTES,
};

use daemoneye_ipc::{ipc_service, Status};

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
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessFilter, ProcessList,
};

/// Collects process data from the operating system (DaemonEye's `procmond`).
#[ipc_service(name = "daemoneye.ProcessCollector")]
pub trait ProcessCollector {
    /// Lists the processes that match `filter`: any of its names, any of its pids, and
    /// the executable glob when set; an empty filter matches every process.
    #[ipc(idempotent)]
    async fn enumerate_processes(&self, filter: ProcessFilter) -> Result<ProcessList, Status>;

    /// Hashes the file at `request.path` (sha256 unless `algorithm` names sha512 or
    /// blake3) and, when `expected_hash` is set, reports whether it matches.
    #[ipc(idempotent)]
    async fn check_hash(&self, request: HashRequest) -> Result<HashResult, Status>;

    /// The seed's entry point: runs a `DetectionTask` and answers a `DetectionResult`
    /// with the task's `task_id` (seed: Protobuf IPC Implementation, DetectionTask).
    ///
    /// Also served to seed-era agents that send bare `DetectionTask` frames with no
    /// envelope or handshake; they get bare `DetectionResult` frames back.
    #[ipc(idempotent, bare)]
    async fn run_task(&self, task: DetectionTask) -> Result<DetectionResult, Status>;
}
