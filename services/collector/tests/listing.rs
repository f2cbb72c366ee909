//! Listings larger than a frame, over a real socket against a collector serving a
//! synthetic host: `stream_processes` delivers every record in batches that fit (a
//! command line larger than a frame is cut and marked), the unary
//! `enumerate_processes` refuses with a message naming `stream_processes`, and the
//! seed's `ENUMERATE_PROCESSES` task gets `success: false`, on the typed path and on a
//! seed-era bare connection alike. Also `VERIFY_EXECUTABLE` through `run_task`.

use std::{sync::Arc, time::Duration};

use daemoneye_collector::{
    ProcessCollectorClient, ProcessCollectorServer, SystemCollector, STREAM_BATCH_BYTES,
    TRUNCATED_MARKER,
};
use daemoneye_ipc::{Code, Crc32Variant, IpcConfig, IpcError, Server};
use daemoneye_proto::{
    prost::Message, DetectionResult, DetectionTask, ProcessFilter, ProcessRecord,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for anything awaited here; never a speed requirement.
const PATIENCE: Duration = Duration::from_secs(60);

/// `count` processes with command lines of about `cmd_bytes` bytes.
fn synthetic_host(count: u32, cmd_bytes: usize) -> Arc<Vec<ProcessRecord>> {
    Arc::new(
        (1..=count)
            .map(|pid| ProcessRecord {
                pid,
                ppid: Some(1),
                name: format!("java-{pid}"),
                executable_path: Some("/usr/lib/jvm/bin/java".to_owned()),
                command_line: vec!["java".to_owned(), "x".repeat(cmd_bytes)],
                memory_usage: Some(1 << 20),
                user_id: Some("1000".to_owned()),
                accessible: true,
                file_exists: true,
                collection_time: 1_700_000_000_000,
                ..ProcessRecord::default()
            })
            .collect(),
    )
}

struct Served {
    config: IpcConfig,
    _dir: tempfile::TempDir,
}

fn serve(table: Arc<Vec<ProcessRecord>>) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "collector"));
    let collector =
        SystemCollector::from_config(&config).with_process_table(move || table.as_ref().clone());
    let server = Server::bind(&config, ProcessCollectorServer::new(collector)).expect("bind");
    tokio::spawn(server.serve());
    Served { config, _dir: dir }
}

async fn client(served: &Served) -> ProcessCollectorClient {
    ProcessCollectorClient::connect(&served.config)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_records_stream_complete_in_order_in_batches_that_fit() {
    let served = serve(synthetic_host(20_000, 1024));
    let client = client(&served).await;
    let mut batches = client
        .stream_processes(ProcessFilter::default())
        .await
        .expect("stream opens");
    let (mut count, mut items, mut last_pid) = (0u32, 0, 0);
    while let Some(batch) = tokio::time::timeout(PATIENCE, batches.next())
        .await
        .expect("a batch within PATIENCE")
    {
        let batch = batch.expect("every batch is Ok");
        assert!(
            batch.encoded_len() <= STREAM_BATCH_BYTES,
            "{}",
            batch.encoded_len()
        );
        for record in &batch.processes {
            assert!(record.pid > last_pid, "in pid order");
            last_pid = record.pid;
            assert_eq!(record.command_line[1].len(), 1024);
        }
        count += u32::try_from(batch.processes.len()).expect("fits");
        items += 1;
    }
    assert_eq!(count, 20_000);
    // ~21 MB in batches of at most 256 KiB.
    assert!(items >= 80, "{items} batches");

    // The filter applies as to real processes.
    let filter = ProcessFilter {
        pids: vec![7, 19_999, 30_000],
        ..ProcessFilter::default()
    };
    let batches: Vec<_> = client
        .stream_processes(filter)
        .await
        .expect("stream opens")
        .collect()
        .await;
    let pids: Vec<u32> = batches
        .into_iter()
        .flat_map(|batch| batch.expect("ok").processes)
        .map(|record| record.pid)
        .collect();
    assert_eq!(pids, [7, 19_999]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_line_larger_than_a_frame_is_cut_and_marked() {
    let mut host = synthetic_host(3, 100);
    Arc::make_mut(&mut host)[1].command_line = vec!["a".repeat(3 << 20)];
    let served = serve(host);
    let client = client(&served).await;
    let records: Vec<ProcessRecord> = client
        .stream_processes(ProcessFilter::default())
        .await
        .expect("stream opens")
        .map(|batch| batch.expect("ok").processes)
        .concat()
        .await;
    assert_eq!(records.iter().map(|r| r.pid).collect::<Vec<_>>(), [1, 2, 3]);
    let cut = &records[1].command_line;
    assert_eq!(cut.len(), 2, "the start of the argument, then the marker");
    assert!(cut[0].len() > 1_000_000, "{} bytes kept", cut[0].len());
    let marker = &cut[1];
    assert!(marker.starts_with(TRUNCATED_MARKER), "{marker}");
    assert!(marker.ends_with("of 3145728 bytes not shown]"), "{marker}");
    assert_eq!(records[2].command_line[1].len(), 100, "others untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_listing_over_the_frame_limit_names_stream_processes() {
    let served = serve(synthetic_host(2_000, 1024));
    let client = client(&served).await;
    let status = match client.enumerate_processes(ProcessFilter::default()).await {
        Err(IpcError::Status(status)) => status,
        other => panic!("expected a status, got {other:?}"),
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    let message = status.message();
    assert!(
        message.starts_with("2000 processes take ") && message.contains("use stream_processes"),
        "{message}"
    );
    // A small filtered query still answers, on the same connection.
    let small = ProcessFilter {
        pids: vec![5],
        ..ProcessFilter::default()
    };
    let list = client
        .enumerate_processes(small)
        .await
        .expect("small query");
    assert_eq!(list.processes.len(), 1);

    // The seed's task through the typed client: a failed result, not an error.
    let result = client
        .run_task(DetectionTask::new_enumerate_processes("big", None))
        .await
        .expect("an answer");
    assert_eq!(result.task_id, "big");
    assert!(!result.success);
    assert!(result.processes.is_empty());
    let message = result.error_message.expect("message");
    assert!(message.contains("stream_processes"), "{message}");
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
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer).await.expect("read payload");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_era_enumeration_over_the_limit_is_a_failure_not_a_hang_up() {
    let served = serve(synthetic_host(2_000, 1024));
    let mut stream = daemoneye_ipc::transport::connect(
        &served.config.endpoint_path,
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("connect");
    let task = DetectionTask::new_enumerate_processes("seed-all", None);
    let answer = tokio::time::timeout(PATIENCE, bare_exchange(&mut stream, &task.encode_to_vec()))
        .await
        .expect("an answer");
    let result = DetectionResult::decode(&answer[..]).expect("a bare DetectionResult");
    assert_eq!(result.task_id, "seed-all");
    assert!(!result.success);
    let message = result.error_message.expect("message");
    assert!(
        message.contains("2000 processes") && message.contains("stream_processes"),
        "{message}"
    );

    // The connection lives on: a filtered task on it answers.
    let task = DetectionTask::new_enumerate_processes(
        "seed-one",
        Some(ProcessFilter {
            pids: vec![42],
            ..ProcessFilter::default()
        }),
    );
    let answer = bare_exchange(&mut stream, &task.encode_to_vec()).await;
    let result = DetectionResult::decode(&answer[..]).expect("a bare DetectionResult");
    assert!(result.success, "{result:?}");
    assert_eq!(result.processes.len(), 1);
    assert_eq!(result.processes[0].pid, 42);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_executable_task_answers_through_run_task() {
    let served = serve(synthetic_host(1, 10));
    let client = client(&served).await;
    let me = std::process::id();
    let result = client
        .run_task(DetectionTask::new_verify_executable("v-1", me, "blake3"))
        .await
        .expect("an answer");
    assert_eq!(result.task_id, "v-1");
    assert!(result.success, "{result:?}");
    let verify = result.verify_result.expect("verify_result");
    assert_eq!(verify.state(), daemoneye_proto::ExecutableState::Unchanged);
    assert_eq!(verify.algorithm, "blake3");
    assert_eq!(
        result
            .hash_result
            .expect("hash of the running image")
            .hash_value,
        verify.running_hash
    );

    let none = DetectionTask {
        process_filter: None,
        ..DetectionTask::new_verify_executable("v-2", me, "")
    };
    let result = client.run_task(none).await.expect("an answer");
    assert!(!result.success);
    assert_eq!(
        result.error_message.as_deref(),
        Some("task type VERIFY_EXECUTABLE needs exactly one pid in process_filter.pids, not 0")
    );

    let status = match client
        .verify_executable(daemoneye_proto::VerifyRequest {
            pid: 0,
            algorithm: String::new(),
        })
        .await
    {
        Err(IpcError::Status(status)) => status,
        other => panic!("expected a status, got {other:?}"),
    };
    assert_eq!(status.code(), Code::InvalidArgument);
}
