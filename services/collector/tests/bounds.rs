//! What a hostile local peer meets, over a real socket against an in-process server:
//! blocking work is bounded (a full pool answers `RESOURCE_EXHAUSTED` at once while
//! other calls go on; a hash cut by its deadline stops and frees its slot), and request
//! fields are bounded (`INVALID_ARGUMENT` with a short message, before any work), on the
//! typed calls, on `run_task` and on the seed-era bare path alike.

use std::{
    fs::File,
    future::Future,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use daemoneye_collector::{
    ProcessCollectorClient, ProcessCollectorServer, SystemCollector, MAX_PATH_BYTES, MAX_PIDS,
};
use daemoneye_ipc::{BlockingPool, Code, Crc32Variant, IpcConfig, IpcError, Server};
use daemoneye_proto::{
    prost::Message, DetectionResult, DetectionTask, HashCheck, HashRequest, ProcessFilter, TaskType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for anything awaited or polled here; never a speed requirement.
const PATIENCE: Duration = Duration::from_secs(20);
/// Longest status or error message a peer's request may produce here.
const SHORT_MESSAGE: usize = 512;
/// sha256("hello world\n").
const HELLO_SHA256: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

/// A `ProcessCollector` server on a socket in a temporary directory.
struct Served {
    dir: tempfile::TempDir,
    config: IpcConfig,
    collector: SystemCollector,
}

impl Served {
    /// Serves a collector whose hashing and enumeration pools run `hashing` and
    /// `enumeration` jobs at once.
    fn start(hashing: usize, enumeration: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "collector"));
        let collector = SystemCollector::with_limits(
            BlockingPool::new(hashing),
            BlockingPool::new(enumeration),
        );
        let server =
            Server::bind(&config, ProcessCollectorServer::new(collector.clone())).expect("bind");
        tokio::spawn(server.serve());
        Self {
            dir,
            config,
            collector,
        }
    }

    async fn client(&self) -> ProcessCollectorClient {
        ProcessCollectorClient::connect(&self.config)
            .await
            .expect("connect")
    }

    /// A file that takes far longer to hash than any test runs: 1 TiB, all one hole.
    fn huge_sparse_file(&self) -> PathBuf {
        let path = self.dir.path().join("huge.bin");
        File::create(&path)
            .and_then(|file| file.set_len(1 << 40))
            .expect("sparse file");
        path
    }

    fn small_file(&self) -> PathBuf {
        let path = self.dir.path().join("hello.txt");
        File::create(&path)
            .and_then(|mut file| file.write_all(b"hello world\n"))
            .expect("small file");
        path
    }
}

fn hash_request(path: &Path) -> HashRequest {
    HashRequest {
        path: path.to_string_lossy().into_owned(),
        algorithm: String::new(),
        expected_hash: None,
    }
}

/// The status of a call that must fail with one.
fn status_of<T: std::fmt::Debug>(result: Result<T, IpcError>) -> daemoneye_ipc::Status {
    match result {
        Err(IpcError::Status(status)) => status,
        other => panic!("expected an error status, got {other:?}"),
    }
}

/// Awaits `call`, at most `PATIENCE`.
async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
}

/// Polls `condition` until it holds, at most `PATIENCE`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_past_the_limit_are_refused_at_once_while_other_calls_answer() {
    let served = Served::start(2, 2);
    let client = served.client().await;
    let huge = served.huge_sparse_file();
    let hashing = served.collector.hashing_pool().clone();

    let running: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let request = hash_request(&huge);
            tokio::spawn(async move { client.check_hash(request).await })
        })
        .collect();
    eventually("two hashes running", || hashing.running() == 2).await;

    let refused = status_of(within("third hash", client.check_hash(hash_request(&huge))).await);
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("hashing"), "{refused}");
    assert!(refused.message().len() < SHORT_MESSAGE, "{refused}");

    // Enumeration has a pool of its own and still answers.
    let mine = ProcessFilter {
        pids: vec![std::process::id()],
        ..ProcessFilter::default()
    };
    let list = within("enumeration", client.enumerate_processes(mine))
        .await
        .expect("enumeration answers while hashing is full");
    assert_eq!(list.processes.len(), 1);

    // Dropping the calls cancels them; each hash stops at its next read.
    for call in &running {
        call.abort();
    }
    eventually("hashing slots freed", || hashing.running() == 0).await;
    let result = within(
        "hash after",
        client.check_hash(hash_request(&served.small_file())),
    )
    .await
    .expect("a slot is free again");
    assert!(result.success, "{result:?}");
    assert_eq!(result.hash_value, HELLO_SHA256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_cut_by_its_deadline_stops_and_frees_its_slot() {
    let served = Served::start(1, 1);
    let client = served.client().await;
    let huge = served.huge_sparse_file();

    let short = client.clone().with_timeout(Duration::from_millis(300));
    let outcome = within(
        "hash with a deadline",
        short.check_hash(hash_request(&huge)),
    )
    .await;
    assert!(outcome.is_err(), "a 1 TiB hash finished: {outcome:?}");

    // The only slot comes back once the job has seen its cancellation flag: a following
    // hash is accepted (retried while the job winds down, at most PATIENCE).
    let small = hash_request(&served.small_file());
    let deadline = Instant::now() + PATIENCE;
    let result = loop {
        match within("hash after", client.check_hash(small.clone())).await {
            Ok(result) => break result,
            Err(IpcError::Status(status)) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "slot still taken: {status}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("hash after the deadline: {other}"),
        }
    };
    assert_eq!(result.hash_value, HELLO_SHA256);
    assert_eq!(served.collector.hashing_pool().running(), 0);
}

/// A filter whose pattern is 1 MB of `*a`: once a second of CPU, a globset panic and
/// hundreds of MB.
fn megabyte_pattern() -> ProcessFilter {
    ProcessFilter {
        executable_pattern: Some("*a".repeat(500_000)),
        ..ProcessFilter::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_pattern_is_invalid_argument_with_a_short_message() {
    let served = Served::start(2, 2);
    let client = served.client().await;

    let status = status_of(
        within(
            "huge pattern",
            client.enumerate_processes(megabyte_pattern()),
        )
        .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        status.message().len() < SHORT_MESSAGE,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status
            .message()
            .starts_with("executable_pattern is 1000000 bytes, more than the 1024 allowed"),
        "{status}"
    );

    // The same through the seed's entry point: a failed result with the same message.
    let task = DetectionTask {
        task_id: "huge-pattern".to_owned(),
        task_type: TaskType::EnumerateProcesses as i32,
        process_filter: Some(megabyte_pattern()),
        hash_check: None,
        metadata: None,
    };
    let result = within("huge pattern task", client.run_task(task))
        .await
        .expect("a DetectionResult");
    assert_eq!(result.task_id, "huge-pattern");
    assert!(!result.success);
    let message = result.error_message.expect("message");
    assert!(message.len() < SHORT_MESSAGE, "{} bytes", message.len());
    assert!(
        message.starts_with("executable_pattern is 1000000 bytes"),
        "{message}"
    );

    // Other calls on the connection still answer.
    let list = within(
        "enumeration after",
        client.enumerate_processes(ProcessFilter {
            pids: vec![std::process::id()],
            ..ProcessFilter::default()
        }),
    )
    .await
    .expect("enumeration");
    assert_eq!(list.processes.len(), 1);
}

/// Writes one bare frame (`[u32 LE length][u32 LE CRC32C][payload]`) and reads one back.
async fn bare_exchange(stream: &mut daemoneye_ipc::transport::Stream, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("fits").to_le_bytes());
    frame.extend_from_slice(&Crc32Variant::Castagnoli.checksum(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.expect("write frame");
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.expect("read header");
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer).await.expect("read payload");
    assert_eq!(
        Crc32Variant::Castagnoli.checksum(&answer),
        crc,
        "answer CRC"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_era_agent_sending_a_megabyte_pattern_gets_a_short_failure() {
    let served = Served::start(2, 2);
    let mut stream = daemoneye_ipc::transport::connect(
        &served.config.endpoint_path,
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("connect");
    let task = DetectionTask {
        task_id: "bare-huge".to_owned(),
        task_type: TaskType::EnumerateProcesses as i32,
        process_filter: Some(megabyte_pattern()),
        hash_check: None,
        metadata: None,
    };
    let answer = within(
        "bare task",
        bare_exchange(&mut stream, &task.encode_to_vec()),
    )
    .await;
    let result = DetectionResult::decode(&answer[..]).expect("a bare DetectionResult");
    assert_eq!(result.task_id, "bare-huge");
    assert!(!result.success);
    let message = result.error_message.expect("message");
    assert!(message.len() < SHORT_MESSAGE, "{} bytes", message.len());
    assert!(
        message.starts_with("executable_pattern is 1000000 bytes"),
        "{message}"
    );

    // The bare connection goes on serving.
    let task = DetectionTask {
        task_id: "bare-mine".to_owned(),
        task_type: TaskType::EnumerateProcesses as i32,
        process_filter: Some(ProcessFilter {
            pids: vec![std::process::id()],
            ..ProcessFilter::default()
        }),
        hash_check: None,
        metadata: None,
    };
    let answer = within(
        "second bare task",
        bare_exchange(&mut stream, &task.encode_to_vec()),
    )
    .await;
    let result = DetectionResult::decode(&answer[..]).expect("a bare DetectionResult");
    assert!(result.success, "{result:?}");
    assert_eq!(result.processes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pids_long_paths_and_long_task_ids_are_invalid_argument() {
    let served = Served::start(2, 2);
    let client = served.client().await;

    let pids = ProcessFilter {
        pids: (1..=u32::try_from(MAX_PIDS).expect("fits") + 1).collect(),
        ..ProcessFilter::default()
    };
    let status = status_of(within("pids", client.enumerate_processes(pids)).await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert_eq!(
        status.message(),
        "pids has 4097 entries, more than the 4096 allowed"
    );

    let long_path = format!("/{}", "p".repeat(MAX_PATH_BYTES));
    let status = status_of(
        within(
            "path",
            client.check_hash(HashRequest {
                path: long_path.clone(),
                algorithm: String::new(),
                expected_hash: None,
            }),
        )
        .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        status
            .message()
            .starts_with("path is 4097 bytes, more than the 4096 allowed: \"/ppp"),
        "{status}"
    );
    assert!(status.message().len() < SHORT_MESSAGE, "{status}");

    let status = status_of(
        within(
            "algorithm",
            client.check_hash(HashRequest {
                path: "/bin/sh".to_owned(),
                algorithm: "\u{1b}[2J".repeat(100),
                expected_hash: None,
            }),
        )
        .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        !status.message().contains('\u{1b}'),
        "control characters escaped: {status}"
    );

    // The seed's entry point checks the same fields, named as in HashCheck.
    let task = DetectionTask {
        task_id: "long-path".to_owned(),
        task_type: TaskType::CheckProcessHash as i32,
        process_filter: None,
        hash_check: Some(HashCheck {
            expected_hash: String::new(),
            hash_algorithm: String::new(),
            executable_path: long_path,
        }),
        metadata: None,
    };
    let result = within("long path task", client.run_task(task))
        .await
        .expect("a DetectionResult");
    assert_eq!(result.task_id, "long-path");
    assert!(!result.success);
    let message = result.error_message.expect("message");
    assert!(
        message.starts_with("hash_check.executable_path is 4097 bytes"),
        "{message}"
    );

    // A task_id too long to echo fails the call.
    let task = DetectionTask {
        task_id: "t".repeat(100_000),
        task_type: TaskType::EnumerateProcesses as i32,
        ..DetectionTask::default()
    };
    let status = status_of(within("long task id", client.run_task(task)).await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(
        status.message().starts_with("task_id is 100000 bytes"),
        "{status}"
    );
    assert!(status.message().len() < SHORT_MESSAGE, "{status}");
}
