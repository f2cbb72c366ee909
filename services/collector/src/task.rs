//! Running a seed-era [`DetectionTask`]: dispatch on its task type.

use daemoneye_ipc::Status;
use daemoneye_proto::{
    prost::Message, DetectionResult, DetectionTask, HashRequest, TaskType, VerifyRequest,
};

use crate::{limits, ProcessCollector};

/// Runs `task` on `collector`; every outcome, including errors, is a
/// [`DetectionResult`] carrying the task's `task_id`, of at most `max_answer` encoded
/// bytes (a larger one is replaced by a failure saying so: a seed-era peer would
/// otherwise lose its connection).
///
/// # Errors
/// `INVALID_ARGUMENT` only when the `task_id` is over its bound (it cannot be echoed).
pub(crate) async fn run<C: ProcessCollector>(
    collector: &C,
    task: DetectionTask,
    max_answer: usize,
) -> Result<DetectionResult, Status> {
    limits::check_task_id(&task.task_id)?;
    let task_id = task.task_id.clone();
    let result = answer(collector, task).await;
    let size = result.encoded_len();
    if size <= max_answer {
        return Ok(result);
    }
    let listed = result.processes.len();
    Ok(DetectionResult::failure(
        task_id,
        format!(
            "the answer ({listed} processes) takes {size} bytes, more than the {max_answer} \
             that fit in a frame: narrow the process_filter, or call the streaming method \
             stream_processes, which sends any number of processes in batches"
        ),
    ))
}

/// The answer to `task`, whatever its size.
async fn answer<C: ProcessCollector>(collector: &C, task: DetectionTask) -> DetectionResult {
    let DetectionTask {
        task_id,
        task_type,
        process_filter,
        hash_check,
        metadata: _,
    } = task;
    match TaskType::try_from(task_type) {
        Ok(TaskType::EnumerateProcesses) => {
            let filter = process_filter.unwrap_or_default();
            match collector.enumerate_processes(filter).await {
                Ok(list) => DetectionResult::success(task_id, list.processes),
                Err(status) => DetectionResult::failure(task_id, status.message()),
            }
        }
        Ok(TaskType::CheckProcessHash) => {
            let Some(check) = hash_check else {
                return DetectionResult::failure(
                    task_id,
                    "task type CHECK_PROCESS_HASH needs a hash_check (executable_path, \
                     hash_algorithm, expected_hash)",
                );
            };
            if let Err(status) = limits::check_hash_check(&check) {
                return DetectionResult::failure(task_id, status.message());
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
        Ok(TaskType::VerifyExecutable) => {
            let pids = process_filter.map(|filter| filter.pids).unwrap_or_default();
            let [pid] = pids[..] else {
                return DetectionResult::failure(
                    task_id,
                    format!(
                        "task type VERIFY_EXECUTABLE needs exactly one pid in \
                         process_filter.pids, not {}",
                        pids.len()
                    ),
                );
            };
            let check = hash_check.unwrap_or_default();
            if let Err(status) = limits::check_hash_check(&check) {
                return DetectionResult::failure(task_id, status.message());
            }
            let request = VerifyRequest {
                pid,
                algorithm: check.hash_algorithm,
            };
            match collector.verify_executable(request).await {
                Ok(result) => DetectionResult::verify(task_id, result),
                Err(status) => DetectionResult::failure(task_id, status.message()),
            }
        }
        Ok(TaskType::MonitorProcessTree) => DetectionResult::failure(
            task_id,
            "task type MONITOR_PROCESS_TREE is not supported as a task, which has one \
             answer: call the streaming method watch_processes",
        ),
        Err(_) => DetectionResult::failure(task_id, format!("unknown task type {task_type}")),
    }
}
