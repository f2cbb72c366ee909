//! The `ProcessCollector` service: the contract between `daemoneye-agent` (and
//! `daemoneye-cli`), which call it, and `procmond`, which serves it.
//!
//! The trait is the whole contract; `#[ipc_service]` generates
//! [`ProcessCollectorClient`] and [`ProcessCollectorServer`] from it.

use daemoneye_ipc::{ipc_service, Status};
use daemoneye_proto::{DetectionResult, DetectionTask, HashRequest, HashResult, ProcessFilter, ProcessList};

/// Collects process data from the operating system (DaemonEye's `procmond`).
#[ipc_service(name = "daemoneye.ProcessCollector")]
pub trait ProcessCollector {
    /// Lists the processes that match `filter`: any of its names, any of its pids, and
    /// the executable glob when set; an empty filter matches every process.
    async fn enumerate_processes(&self, filter: ProcessFilter) -> Result<ProcessList, Status>;

    /// Hashes the file at `request.path` (sha256 unless `algorithm` says otherwise) and,
    /// when `expected_hash` is set, reports whether it matches.
    async fn check_hash(&self, request: HashRequest) -> Result<HashResult, Status>;

    /// The seed's entry point: runs a `DetectionTask` and answers a `DetectionResult`
    /// with the task's `task_id` (seed: Protobuf IPC Implementation, DetectionTask).
    async fn run_task(&self, task: DetectionTask) -> Result<DetectionResult, Status>;
}
