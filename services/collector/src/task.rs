//! Running a seed-era [`DetectionTask`]: dispatch on its task type.

use daemoneye_ipc::Status;
use daemoneye_proto::{DetectionResult, DetectionTask, HashRequest, TaskType};

use crate::{limits, ProcessCollector};

/// Runs `task` on `collector`; every outcome, including errors, is a
/// [`DetectionResult`] carrying the task's `task_id`.
///
/// # Errors
/// `INVALID_ARGUMENT` only when the `task_id` is over its bound (it cannot be echoed).
pub(crate) async fn run<C: ProcessCollector>(
    collector: &C,
    task: DetectionTask,
) -> Result<DetectionResult, Status> {
    limits::check_task_id(&task.task_id)?;
    let DetectionTask {
        task_id,
        task_type,
        process_filter,
        hash_check,
        metadata: _,
    } = task;
    Ok(match TaskType::try_from(task_type) {
        Ok(TaskType::EnumerateProcesses) => {
            let filter = process_filter.unwrap_or_default();
            match collector.enumerate_processes(filter).await {
                Ok(list) => DetectionResult::success(task_id, list.processes),
                Err(status) => DetectionResult::failure(task_id, status.message()),
            }
        }
        Ok(TaskType::CheckProcessHash) => {
            let Some(check) = hash_check else {
                return Ok(DetectionResult::failure(
                    task_id,
                    "task type CHECK_PROCESS_HASH needs a hash_check (executable_path, \
                     hash_algorithm, expected_hash)",
                ));
            };
            if let Err(status) = limits::check_hash_check(&check) {
                return Ok(DetectionResult::failure(task_id, status.message()));
            }
            let request = HashRequest {
                path: check.executable_path,
                algorithm: check.hash_algorithm,
                expected_hash: Some(check.expected_hash).filter(|hash| !hash.is_empty()),
            };
            match collector.check_hash(request).await {
                Ok(result) => DetectionResult::hash(task_id, result),
                Err(status) => DetectionResult::failure(task_id, status.message()),
            }
        }
        Ok(unsupported @ (TaskType::MonitorProcessTree | TaskType::VerifyExecutable)) => {
            DetectionResult::failure(
                task_id,
                format!(
                    "task type {} is not supported by this collector",
                    unsupported.as_str_name()
                ),
            )
        }
        Err(_) => DetectionResult::failure(task_id, format!("unknown task type {task_type}")),
    })
}
