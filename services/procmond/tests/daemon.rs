//! Runs the real `procmond` binary: serves, answers, refuses a second instance, stops
//! cleanly on SIGTERM / SIGINT and removes its socket; fails readably on a bad path.
#![cfg(unix)]

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::IpcConfig;
use daemoneye_proto::{DetectionTask, ProcessFilter};

/// Upper bound for startup and for shutdown.
const PATIENCE: Duration = Duration::from_secs(10);
/// Interval between two looks at a condition being polled.
const POLL: Duration = Duration::from_millis(20);

/// A running `procmond`, killed if the test ends before it exits.
struct Daemon {
    child: Child,
    endpoint: PathBuf,
}

impl Daemon {
    fn spawn(endpoint: &Path) -> Self {
        let child = procmond(endpoint).spawn().expect("spawn procmond");
        Self {
            child,
            endpoint: endpoint.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn config(&self) -> IpcConfig {
        IpcConfig::with_endpoint(self.endpoint.to_string_lossy())
    }

    /// Polls until the socket exists and a client completes the handshake.
    async fn wait_until_serving(&mut self) -> ProcessCollectorClient {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("procmond exited early ({status}): {}", self.stderr());
            }
            let last_error = if self.endpoint.exists() {
                match ProcessCollectorClient::connect(&self.config()).await {
                    Ok(client) => return client,
                    Err(error) => error.to_string(),
                }
            } else {
                "no socket yet".to_owned()
            };
            assert!(
                Instant::now() < deadline,
                "procmond not serving after {PATIENCE:?}: {last_error}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill has no memory-safety preconditions; pid is our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }

    /// Polls until the process exits, at most `PATIENCE`.
    async fn wait_for_exit(&mut self) -> ExitStatus {
        wait_for_exit(&mut self.child).await
    }

    /// What the process wrote to stderr (complete once it has exited).
    fn stderr(&mut self) -> String {
        read_stderr(&mut self.child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn procmond(endpoint: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_procmond"));
    command
        .arg("--endpoint")
        .arg(endpoint)
        .env_remove("RUST_LOG")
        .env_remove("DAEMONEYE_MAX_CONNECTIONS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

async fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "procmond still running after {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn read_stderr(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut text).expect("read stderr");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_refuses_a_second_instance_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = dir.path().join("p.sock");
    let mut daemon = Daemon::spawn(&endpoint);
    let client = daemon.wait_until_serving().await;

    let own = ProcessFilter {
        pids: vec![daemon.pid()],
        ..ProcessFilter::default()
    };
    let list = client.enumerate_processes(own).await.expect("enumerate");
    let record = list
        .processes
        .iter()
        .find(|r| r.pid == daemon.pid())
        .expect("procmond lists itself");
    assert!(record.name.contains("procmond"), "{record:?}");
    assert_eq!(list.processes.len(), 1);

    let task = DetectionTask {
        task_type: 42,
        ..DetectionTask::new_enumerate_processes("t-1", None)
    };
    let result = client
        .run_task(task)
        .await
        .expect("answered, not a call error");
    assert_eq!(result.task_id, "t-1");
    assert_eq!(
        result.error_message.as_deref(),
        Some("unknown task type 42")
    );

    // A second instance on the same endpoint fails readably and leaves the first alone.
    let mut second = procmond(&endpoint).spawn().expect("spawn second");
    let status = wait_for_exit(&mut second).await;
    let stderr = read_stderr(&mut second);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(endpoint.exists());
    assert!(client
        .enumerate_processes(ProcessFilter::default())
        .await
        .is_ok());

    drop(client);
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_for_exit().await;
    let stderr = daemon.stderr();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!endpoint.exists(), "socket file left behind");
    assert!(stderr.contains("procmond serving"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid={}", daemon.pid())),
        "{stderr}"
    );
    assert!(
        stderr.contains("SIGTERM") && stderr.contains("procmond stopped"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_on_sigint_with_a_client_connected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = dir.path().join("nested").join("p.sock");
    let mut daemon = Daemon::spawn(&endpoint);
    let client = daemon.wait_until_serving().await;

    daemon.signal(libc::SIGINT);
    let status = daemon.wait_for_exit().await;
    assert!(status.success(), "{status}: {}", daemon.stderr());
    assert!(!endpoint.exists(), "socket file left behind");
    assert!(client
        .enumerate_processes(ProcessFilter::default())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_endpoint_exits_with_a_readable_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let endpoint = file.join("p.sock");

    let mut child = procmond(&endpoint).spawn().expect("spawn");
    let status = wait_for_exit(&mut child).await;
    let stderr = read_stderr(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot serve on") && stderr.contains(&*endpoint.to_string_lossy()),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("not a directory"),
        "{stderr}"
    );
}
