//! The real `procmond` binary on this platform's endpoint, a Unix socket or (on
//! Windows, run under Wine in CI) a named pipe: it lists processes as a stream, hashes
//! a file, and a second instance on the same endpoint is refused while the first goes
//! on. Signals and socket files are Unix-only and tested in daemon.rs.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::{IpcConfig, StreamExt};
use daemoneye_proto::{HashRequest, ProcessFilter};

/// Upper bound for startup and for a second instance to give up.
const PATIENCE: Duration = Duration::from_secs(20);

/// A `procmond` child, killed when the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn procmond(endpoint: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_procmond"));
    command
        .args(["--endpoint", endpoint])
        .env_remove("RUST_LOG")
        .env_remove("DAEMONEYE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Connects once the daemon serves, at most [`PATIENCE`] after its start.
async fn connect(daemon: &mut Daemon, config: &IpcConfig) -> ProcessCollectorClient {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = daemon.0.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("procmond exited early ({status}): {stderr}");
        }
        match ProcessCollectorClient::connect(config).await {
            Ok(client) => return client,
            Err(error) => assert!(Instant::now() < deadline, "not serving: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procmond_lists_hashes_and_refuses_a_second_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "procmond");
    let config = IpcConfig::with_endpoint(&endpoint);
    let mut daemon = Daemon(procmond(&endpoint).spawn().expect("spawn procmond"));
    let client = connect(&mut daemon, &config).await;

    // The whole table as a stream: procmond and this test are in it.
    let mut batches = client
        .stream_processes(ProcessFilter::default())
        .await
        .expect("stream");
    let mut pids = Vec::new();
    while let Some(batch) = batches.next().await {
        pids.extend(batch.expect("a batch").processes.iter().map(|r| r.pid));
    }
    for pid in [daemon.0.id(), std::process::id()] {
        assert!(pids.contains(&pid), "{pid} not listed among {}", pids.len());
    }

    // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
    let file = dir.path().join("abc.txt");
    std::fs::write(&file, b"abc").expect("write");
    let result = client
        .check_hash(HashRequest {
            path: file.to_string_lossy().into_owned(),
            algorithm: "sha256".to_owned(),
            expected_hash: None,
        })
        .await
        .expect("hash");
    assert!(result.success, "{result:?}");
    assert_eq!(
        result.hash_value,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    // A second instance on the same endpoint gives up readably; the first goes on.
    let second = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || procmond(&endpoint).output().expect("run a second procmond")
    });
    let second = tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second instance gives up")
        .expect("join");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    let again = client
        .enumerate_processes(ProcessFilter {
            pids: vec![std::process::id()],
            ..ProcessFilter::default()
        })
        .await
        .expect("the first instance still answers");
    assert_eq!(again.processes.len(), 1);
}
