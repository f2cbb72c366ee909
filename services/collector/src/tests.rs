//! Tests of [`SystemCollector`] through the `ProcessCollector` trait, against the real
//! process table and real files.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use daemoneye_ipc::Code;
use daemoneye_proto::{
    DetectionTask, HashCheck, HashRequest, ProcessFilter, ProcessRecord, TaskType,
};
use sha2::{Digest, Sha256};

use crate::{ProcessCollector, SystemCollector, HASH_BUFFER_BYTES};

/// sha256("hello world\n"), as printed by `sha256sum`.
const HELLO_SHA256: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

fn own_pid() -> u32 {
    std::process::id()
}

fn own_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Windows' canonical form is the verbatim `\\?\C:\…`, which no process listing uses;
    // current_exe is already absolute there.
    if cfg!(windows) {
        return exe;
    }
    exe.canonicalize().unwrap_or(exe)
}

fn by_pid(pid: u32) -> ProcessFilter {
    ProcessFilter {
        pids: vec![pid],
        ..ProcessFilter::default()
    }
}

fn by_pattern(pattern: &str) -> ProcessFilter {
    ProcessFilter {
        executable_pattern: Some(pattern.to_owned()),
        ..ProcessFilter::default()
    }
}

async fn enumerate(collector: &SystemCollector, filter: ProcessFilter) -> Vec<ProcessRecord> {
    collector
        .enumerate_processes(filter)
        .await
        .expect("enumeration")
        .processes
}

fn pids(records: &[ProcessRecord]) -> Vec<u32> {
    records.iter().map(|r| r.pid).collect()
}

fn temp_file(content: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(content).expect("write");
    file.flush().expect("flush");
    file
}

fn unix_millis(t: SystemTime) -> i64 {
    i64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
    )
    .expect("fits")
}

#[tokio::test]
async fn enumerate_without_filter_includes_this_process_with_its_details() {
    let before = unix_millis(SystemTime::now());
    let all = enumerate(&SystemCollector::new(), ProcessFilter::default()).await;
    let after = unix_millis(SystemTime::now());

    assert!(all.len() > 1, "only {} processes", all.len());
    assert!(
        all.windows(2).all(|w| w[0].pid < w[1].pid),
        "sorted by pid, no duplicates"
    );
    let collected_at = all[0].collection_time;
    assert!(all.iter().all(|r| r.collection_time == collected_at));
    assert!((before..=after).contains(&collected_at));

    let me = all
        .iter()
        .find(|r| r.pid == own_pid())
        .expect("own process listed");
    assert!(!me.name.is_empty());
    assert!(me.memory_usage.is_some_and(|bytes| bytes > 0), "{me:?}");
    assert!(me.accessible && me.file_exists, "{me:?}");
    let exe = me.executable_path.as_deref().expect("own exe path");
    assert_eq!(Path::new(exe), own_exe());
    assert!(!me.command_line.is_empty());
    let start = me.start_time.expect("start time");
    assert!(start > 0 && start * 1000 <= after, "start {start}");
    assert_eq!(me.cpu_usage, None, "first sample has no CPU baseline");
    #[cfg(unix)]
    {
        assert_eq!(me.ppid, Some(std::os::unix::process::parent_id()));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(me.user_id.as_deref(), Some(uid.to_string().as_str()));
    }
}

#[tokio::test]
async fn filter_by_own_pid_returns_exactly_this_process() {
    let found = enumerate(&SystemCollector::new(), by_pid(own_pid())).await;
    assert_eq!(pids(&found), [own_pid()]);
}

#[tokio::test]
async fn filter_by_pids_is_an_or_and_skips_missing_ones() {
    let collector = SystemCollector::new();
    // A process Wine starts from Unix has no parent on the Windows side: a child that
    // waits on its stdin (`cmd /c pause`) stands in for it.
    let parent = enumerate(&collector, by_pid(own_pid())).await[0].ppid;
    let mut child = match parent {
        Some(_) => None,
        None => Some(
            std::process::Command::new("cmd")
                .args(["/c", "pause"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn a child"),
        ),
    };
    let other = parent
        .or(child.as_ref().map(std::process::Child::id))
        .expect("a parent or a child");
    let filter = ProcessFilter {
        // u32::MAX is never a valid pid.
        pids: vec![own_pid(), other, u32::MAX],
        ..ProcessFilter::default()
    };
    let found = pids(&enumerate(&collector, filter).await);
    if let Some(child) = child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut expected = vec![own_pid(), other];
    expected.sort_unstable();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn filter_by_own_name_finds_this_process() {
    let collector = SystemCollector::new();
    let name = enumerate(&collector, by_pid(own_pid())).await[0]
        .name
        .clone();
    let filter = ProcessFilter {
        process_names: vec!["no-such-process-name".to_owned(), name.clone()],
        ..ProcessFilter::default()
    };
    let found = enumerate(&collector, filter).await;
    assert!(pids(&found).contains(&own_pid()), "{name} not found");
    assert!(found.iter().all(|r| r.name == name
        || r.executable_path
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            == Some(name.as_ref())));

    let filter = ProcessFilter {
        process_names: vec![name],
        pids: vec![u32::MAX],
        executable_pattern: None,
    };
    assert!(
        enumerate(&collector, filter).await.is_empty(),
        "criteria are ANDed"
    );
}

#[tokio::test]
async fn executable_glob_selects_by_path() {
    let collector = SystemCollector::new();
    let exe = own_exe();
    let file_name = exe.file_name().expect("file name").to_string_lossy();

    let exact = globset::escape(&exe.to_string_lossy());
    assert!(pids(&enumerate(&collector, by_pattern(&exact)).await).contains(&own_pid()));

    let anywhere = format!("**/{}", globset::escape(&file_name));
    let found = enumerate(&collector, by_pattern(&anywhere)).await;
    assert!(pids(&found).contains(&own_pid()));
    assert!(found
        .iter()
        .all(|r| r.executable_path.as_deref().map(PathBuf::from) == Some(exe.clone())));

    let elsewhere = format!("/nonexistent-dir/**/{}", globset::escape(&file_name));
    assert!(enumerate(&collector, by_pattern(&elsewhere))
        .await
        .is_empty());
}

#[tokio::test]
async fn invalid_glob_is_invalid_argument() {
    let error = SystemCollector::new()
        .enumerate_processes(by_pattern("/usr/{bin"))
        .await
        .expect_err("unclosed alternation");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("/usr/{bin"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_usage_is_measured_from_the_second_sample() {
    let collector = SystemCollector::new();
    assert_eq!(
        enumerate(&collector, by_pid(own_pid())).await[0].cpu_usage,
        None
    );
    // Burn CPU across the minimum sampling interval so that usage is visibly above 0.
    let burn = tokio::task::spawn_blocking(|| {
        let until =
            Instant::now() + sysinfo::MINIMUM_CPU_UPDATE_INTERVAL + Duration::from_millis(50);
        let mut hasher = Sha256::new();
        while Instant::now() < until {
            hasher.update([0u8; 4096]);
        }
        hasher.finalize()
    });
    burn.await.expect("burn");
    let usage = enumerate(&collector, by_pid(own_pid())).await[0].cpu_usage;
    assert!(usage.is_some_and(|percent| percent > 0.0), "{usage:?}");
}

fn hash_request(path: &Path, expected: Option<&str>) -> HashRequest {
    HashRequest {
        path: path.to_string_lossy().into_owned(),
        algorithm: String::new(),
        expected_hash: expected.map(str::to_owned),
    }
}

#[tokio::test]
async fn check_hash_of_known_content() {
    let file = temp_file(b"hello world\n");
    let result = SystemCollector::new()
        .check_hash(hash_request(file.path(), Some(HELLO_SHA256)))
        .await
        .expect("answer");
    assert!(result.success, "{result:?}");
    assert_eq!(result.hash_value, HELLO_SHA256);
    assert_eq!(result.algorithm, "sha256");
}

#[tokio::test]
async fn check_hash_of_a_file_larger_than_the_buffer() {
    let content: Vec<u8> = (0..(1024 * 1024 + 3))
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    assert!(content.len() > HASH_BUFFER_BYTES);
    let file = temp_file(&content);
    let result = SystemCollector::new()
        .check_hash(hash_request(file.path(), None))
        .await
        .expect("answer");
    assert!(result.success, "{result:?}");
    assert_eq!(result.hash_value, format!("{:x}", Sha256::digest(&content)));
}

#[tokio::test]
async fn check_hash_of_a_missing_file_fails_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing");
    let result = SystemCollector::new()
        .check_hash(hash_request(&path, None))
        .await
        .expect("answer, not a call error");
    assert!(!result.success);
    assert!(result.hash_value.is_empty());
    let message = result.error_message.expect("message");
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    assert!(message.contains("os error"), "{message}");
}

async fn run(task: DetectionTask) -> daemoneye_proto::DetectionResult {
    SystemCollector::new().run_task(task).await.expect("answer")
}

#[tokio::test]
async fn run_task_enumerate_processes() {
    let result = run(DetectionTask::new_enumerate_processes(
        "enum-1",
        Some(by_pid(own_pid())),
    ))
    .await;
    assert_eq!(result.task_id, "enum-1");
    assert!(result.success, "{result:?}");
    assert_eq!(pids(&result.processes), [own_pid()]);
    assert_eq!(result.hash_result, None);

    let everything = run(DetectionTask::new_enumerate_processes("enum-2", None)).await;
    assert!(everything.success);
    assert!(pids(&everything.processes).contains(&own_pid()));

    let bad = run(DetectionTask::new_enumerate_processes(
        "enum-3",
        Some(by_pattern("[")),
    ))
    .await;
    assert_eq!(bad.task_id, "enum-3");
    assert!(!bad.success);
    assert!(bad
        .error_message
        .expect("message")
        .contains("not a valid glob"));
}

#[tokio::test]
async fn run_task_check_process_hash() {
    let file = temp_file(b"hello world\n");
    let check = |expected: &str| HashCheck {
        expected_hash: expected.to_owned(),
        hash_algorithm: "SHA256".to_owned(),
        executable_path: file.path().to_string_lossy().into_owned(),
    };

    let ok = run(DetectionTask::new_hash_check("hash-1", check(HELLO_SHA256))).await;
    assert_eq!(ok.task_id, "hash-1");
    assert!(ok.success, "{ok:?}");
    let hash = ok.hash_result.expect("hash result");
    assert_eq!(hash.hash_value, HELLO_SHA256);

    let unchecked = run(DetectionTask::new_hash_check("hash-2", check(""))).await;
    assert!(unchecked.success, "empty expected_hash only computes");

    let wrong = run(DetectionTask::new_hash_check("hash-3", check("00ff"))).await;
    assert!(!wrong.success);
    assert_eq!(
        wrong.error_message.as_deref(),
        Some(format!("hash mismatch: expected 00ff, got {HELLO_SHA256}").as_str())
    );
    assert_eq!(
        wrong.hash_result.expect("hash result").hash_value,
        HELLO_SHA256
    );

    let missing = run(DetectionTask {
        hash_check: None,
        ..DetectionTask::new_hash_check("hash-4", check(""))
    })
    .await;
    assert_eq!(missing.task_id, "hash-4");
    assert!(!missing.success);
    assert!(missing
        .error_message
        .expect("message")
        .contains("needs a hash_check"));
    assert_eq!(missing.hash_result, None);
}

#[tokio::test]
async fn run_task_unsupported_and_unknown_types_fail_with_the_task_id() {
    let result = run(DetectionTask {
        task_type: TaskType::MonitorProcessTree as i32,
        ..DetectionTask::new_enumerate_processes("tree", None)
    })
    .await;
    assert_eq!(result.task_id, "tree");
    assert!(!result.success);
    assert!(result.processes.is_empty());
    assert_eq!(
        result.error_message.as_deref(),
        Some(
            "task type MONITOR_PROCESS_TREE is not supported as a task, which has one answer: \
             call the streaming method watch_processes"
        )
    );

    let unknown = run(DetectionTask {
        task_type: 42,
        ..DetectionTask::new_enumerate_processes("weird", None)
    })
    .await;
    assert_eq!(unknown.task_id, "weird");
    assert!(!unknown.success);
    assert_eq!(
        unknown.error_message.as_deref(),
        Some("unknown task type 42")
    );
}

#[test]
fn default_endpoint_is_procmonds_socket() {
    let endpoint = crate::default_endpoint();
    assert_eq!(
        endpoint,
        daemoneye_ipc::config::default_endpoint_for("procmond")
    );
    #[cfg(unix)]
    assert!(endpoint.ends_with("/daemoneye/procmond.sock"), "{endpoint}");
}
