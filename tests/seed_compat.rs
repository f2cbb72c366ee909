//! A seed-era agent talks to the collector with bare `DetectionTask` frames (no envelope,
//! no handshake) and must get bare `DetectionResult` frames back, its `task_id` echoed
//! (DESIGN.md, Wire protocol: Compatibility).

use daemoneye_collector::{ProcessCollectorServer, SystemCollector};
use daemoneye_ipc::{IpcConfig, Server};
use daemoneye_proto::{DetectionResult, DetectionTask, HashCheck, ProcessFilter, TaskType};
use prost::Message;

use crate::support;

/// The seed's writer: `[u32 LE len][u32 LE crc32c][protobuf]`.
async fn send(stream: &mut support::RawStream, task: &DetectionTask) {
    support::write_frame(stream, &task.encode_to_vec()).await;
}

async fn receive(stream: &mut support::RawStream) -> DetectionResult {
    let payload = support::read_frame(stream).await;
    DetectionResult::decode(&payload[..]).expect("a bare DetectionResult")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_era_agent_gets_bare_detection_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "procmond"));
    let server =
        Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new())).expect("bind");
    tokio::spawn(server.serve());
    let mut stream = support::connect_raw(&config.endpoint_path).await;

    // Enumerate this process.
    let me = std::process::id();
    let filter = ProcessFilter {
        pids: vec![me],
        ..ProcessFilter::default()
    };
    send(
        &mut stream,
        &DetectionTask::new_enumerate_processes("seed-enum-1", Some(filter)),
    )
    .await;
    let result = receive(&mut stream).await;
    assert_eq!(result.task_id, "seed-enum-1");
    assert!(result.success, "{:?}", result.error_message);
    assert_eq!(result.processes.len(), 1);
    assert_eq!(result.processes[0].pid, me);

    // Hash a file with known content, on the same connection.
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"hello world\n").expect("write");
    let check = HashCheck {
        expected_hash: "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447".into(),
        hash_algorithm: "sha256".into(),
        executable_path: file.to_string_lossy().into_owned(),
    };
    send(
        &mut stream,
        &DetectionTask::new_hash_check("seed-hash-2", check),
    )
    .await;
    let result = receive(&mut stream).await;
    assert_eq!(result.task_id, "seed-hash-2");
    assert!(result.success, "{:?}", result.error_message);
    let hash = result.hash_result.expect("hash result");
    assert_eq!(
        hash.hash_value,
        "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
    );

    // A task type the collector does not do: a failure with the task id, not a hang-up.
    let mut task = DetectionTask::new_enumerate_processes("seed-tree-3", None);
    task.task_type = TaskType::MonitorProcessTree as i32;
    send(&mut stream, &task).await;
    let result = receive(&mut stream).await;
    assert_eq!(result.task_id, "seed-tree-3");
    assert!(!result.success);
    assert!(result
        .error_message
        .unwrap_or_default()
        .contains("not supported"));

    // Meanwhile a typed client is served on the same endpoint.
    let client = daemoneye_collector::ProcessCollectorClient::connect(&config)
        .await
        .expect("typed client");
    let list = client
        .enumerate_processes(ProcessFilter {
            pids: vec![me],
            ..ProcessFilter::default()
        })
        .await
        .expect("enumerate");
    assert_eq!(list.processes.len(), 1);
}
