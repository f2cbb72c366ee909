//! The agent's cycle against collectors served in this process (a fake with fixed
//! processes and hash outcomes, and the real `SystemCollector`), and the real
//! `daemoneye-agent` binary run as a separate process.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use daemoneye_agent::{run_cycle, Agent, CycleError, HashRotation};
use daemoneye_collector::{
    ProcessCollector, ProcessCollectorClient, ProcessCollectorServer, SystemCollector,
};
use daemoneye_ipc::{IpcConfig, Server, ServerStream, Status};
use daemoneye_proto::{
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessEvent, ProcessFilter,
    ProcessList, ProcessRecord, VerifyRequest, VerifyResult, WatchRequest,
};

/// Six processes, four distinct executables: `/bin/a` (twice) and `/bin/b` hash,
/// `/bin/gone` answers `success: false`, `/bin/refused` answers a `Status`.
#[derive(Default)]
struct Fake {
    requests: Arc<Mutex<Vec<HashRequest>>>,
}

fn record(pid: u32, path: Option<&str>) -> ProcessRecord {
    ProcessRecord {
        pid,
        name: format!("proc{pid}"),
        executable_path: path.map(str::to_owned),
        ..ProcessRecord::default()
    }
}

impl ProcessCollector for Fake {
    async fn enumerate_processes(&self, _filter: ProcessFilter) -> Result<ProcessList, Status> {
        Err(Status::unimplemented(
            "the agent lists with stream_processes",
        ))
    }
    /// The six processes, in two batches.
    async fn stream_processes(
        &self,
        filter: ProcessFilter,
        mut tx: ServerStream<ProcessList>,
    ) -> Result<(), Status> {
        assert_eq!(
            filter,
            ProcessFilter::default(),
            "the agent lists everything"
        );
        let mut processes = vec![
            record(1, Some("/bin/b")),
            record(2, Some("/bin/a")),
            record(3, Some("/bin/refused")),
            record(4, Some("/bin/a")),
            record(5, None),
            record(6, Some("/bin/gone")),
        ];
        let second = processes.split_off(4);
        tx.send(ProcessList { processes }).await?;
        tx.send(ProcessList { processes: second }).await
    }
    async fn watch_processes(
        &self,
        _request: WatchRequest,
        _tx: ServerStream<ProcessEvent>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not used by these tests"))
    }
    async fn verify_executable(&self, _request: VerifyRequest) -> Result<VerifyResult, Status> {
        Err(Status::unimplemented("not used by the agent"))
    }
    async fn check_hash(&self, request: HashRequest) -> Result<HashResult, Status> {
        self.requests.lock().expect("lock").push(request.clone());
        let answer = |success: bool, hash: &str, error: Option<&str>| HashResult {
            hash_value: hash.to_owned(),
            algorithm: "sha256".to_owned(),
            file_path: request.path.clone(),
            success,
            error_message: error.map(str::to_owned),
        };
        match request.path.as_str() {
            "/bin/gone" => Ok(answer(false, "", Some("cannot open /bin/gone"))),
            "/bin/refused" => Err(Status::permission_denied("not allowed")),
            _ => Ok(answer(true, "ab12", None)),
        }
    }
    async fn run_task(&self, _task: DetectionTask) -> Result<DetectionResult, Status> {
        Err(Status::unimplemented("not used by the agent"))
    }
}

fn endpoint_in(dir: &Path) -> IpcConfig {
    IpcConfig {
        // Short, so that a cycle with the server down fails quickly.
        call_timeout_ms: 2_000,
        ..IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir, "procmond"))
    }
}

/// Serves `service` at `config`'s endpoint until the returned sender is dropped or sent
/// to; the join handle completes once the server has stopped and removed its socket.
fn serve<T: ProcessCollector>(
    config: &IpcConfig,
    service: T,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = Server::bind(config, ProcessCollectorServer::new(service)).expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve_with_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

fn paths(requests: &Mutex<Vec<HashRequest>>) -> Vec<String> {
    let mut requests = requests.lock().expect("lock");
    assert!(requests
        .iter()
        .all(|r| r.algorithm == "sha256" && r.expected_hash.is_none()));
    requests.drain(..).map(|r| r.path).collect()
}

#[tokio::test]
async fn cycle_counts_processes_hashes_and_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let fake = Fake::default();
    let requests = fake.requests.clone();
    let _server = serve(&config, fake);
    let client = ProcessCollectorClient::connect(&config)
        .await
        .expect("connect");

    let summary = run_cycle(&client, &mut HashRotation::new(), 10)
        .await
        .expect("cycle");
    assert_eq!(summary.processes, 6);
    assert_eq!(summary.executables, 4);
    assert_eq!(summary.hashed, 2, "/bin/a and /bin/b");
    assert_eq!(summary.failures, 2, "/bin/gone and /bin/refused");
    assert_eq!(
        paths(&requests),
        ["/bin/a", "/bin/b", "/bin/gone", "/bin/refused"]
    );

    let summary = run_cycle(&client, &mut HashRotation::new(), 0)
        .await
        .expect("cycle");
    assert_eq!((summary.hashed, summary.failures), (0, 0));
    assert!(paths(&requests).is_empty());
}

#[tokio::test]
async fn agent_rotates_and_survives_a_collector_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let mut agent = Agent::new(config.clone(), 3);

    // No collector yet: the cycle fails, naming the endpoint.
    let error = agent.cycle().await.expect_err("no server");
    assert!(matches!(error, CycleError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&config.endpoint_path), "{error}");

    let fake = Fake::default();
    let requests = fake.requests.clone();
    let (stop, stopped) = serve(&config, fake);
    let summary = agent.cycle().await.expect("first cycle");
    assert_eq!(
        (summary.processes, summary.hashed, summary.failures),
        (6, 2, 1)
    );
    assert_eq!(paths(&requests), ["/bin/a", "/bin/b", "/bin/gone"]);

    // The collector goes away: the cycle fails, the agent is still usable.
    let _ = stop.send(());
    stopped.await.expect("server stopped");
    assert!(agent.cycle().await.is_err());

    // A new collector at the same endpoint: the same agent picks up where it left off
    // (the rotation continues with the executable it has not hashed yet).
    let fake = Fake::default();
    let requests = fake.requests.clone();
    let _server = serve(&config, fake);
    let summary = agent.cycle().await.expect("cycle after restart");
    assert_eq!(
        (summary.processes, summary.hashed, summary.failures),
        (6, 2, 1)
    );
    assert_eq!(paths(&requests), ["/bin/refused", "/bin/a", "/bin/b"]);
}

#[tokio::test]
async fn real_collector_cycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let _server = serve(&config, SystemCollector::new());
    let started = std::time::Instant::now();
    let mut agent = Agent::new(config, 1);
    let summary = agent.cycle().await.expect("cycle");
    eprintln!("{summary:?} in {:?}", started.elapsed());
    // This test process at least is running, and its executable is readable.
    assert!(summary.processes >= 1, "{summary:?}");
    assert!(summary.executables >= 1, "{summary:?}");
    assert_eq!(summary.hashed + summary.failures, 1, "{summary:?}");
}

/// Asks process `pid` (a child not yet reaped) to stop: SIGTERM. Windows has no
/// counterpart a test can send to a console-less child, so the tests that need it are
/// Unix-only.
#[cfg(unix)]
fn terminate(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

#[cfg(not(unix))]
fn terminate(pid: u32) {
    panic!("no SIGTERM for process {pid} on this platform");
}

/// Kills process `pid` (a child not yet reaped), if it is still running.
fn kill(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: the child has not been reaped (wait has not returned).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    #[cfg(windows)]
    let _ = Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .status();
}

/// Runs the agent binary with `args`; once a line of its stderr contains `wait_for`
/// (when given), sends it SIGTERM. Returns its exit status and whole stderr. Bounded:
/// the agent is killed and the test fails after 30 s.
async fn agent_binary(args: Vec<String>, wait_for: Option<&'static str>) -> (ExitStatus, String) {
    let pid = Arc::new(AtomicU32::new(0));
    let run = tokio::task::spawn_blocking({
        let pid = pid.clone();
        move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
                .args(&args)
                .env_remove("DAEMONEYE_ENDPOINT")
                .env_remove("DAEMONEYE_CONFIG")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn agent");
            pid.store(child.id(), Ordering::SeqCst);
            let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
            let mut log = String::new();
            if let Some(marker) = wait_for {
                loop {
                    let mut line = String::new();
                    if stderr.read_line(&mut line).expect("read stderr") == 0 {
                        break;
                    }
                    log.push_str(&line);
                    if line.contains(marker) {
                        terminate(child.id());
                        break;
                    }
                }
            }
            stderr.read_to_string(&mut log).expect("read stderr");
            (child.wait().expect("wait"), log)
        }
    });
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(outcome) => outcome.expect("join"),
        Err(_) => {
            kill(pid.load(Ordering::SeqCst));
            panic!("the agent did not finish within 30 s");
        }
    }
}

#[tokio::test]
async fn binary_once_reports_the_cycle_and_its_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let endpoint = config.endpoint_path.clone();
    let once = |limit: &str| {
        ["--endpoint", &endpoint, "--once", "--hash-limit", limit]
            .map(str::to_owned)
            .to_vec()
    };

    let (status, log) = agent_binary(once("5"), None).await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cycle failed"), "{log}");
    assert!(log.contains(&endpoint), "{log}");

    let _server = serve(&config, Fake::default());
    let (status, log) = agent_binary(once("2"), None).await;
    assert!(status.success(), "{log}");
    let summary = log
        .lines()
        .find(|line| line.contains("cycle complete"))
        .unwrap_or_else(|| panic!("no summary in {log}"));
    for field in [
        "processes=6",
        "executables=4",
        "hashed=2",
        "failures=0",
        "elapsed_ms=",
    ] {
        assert!(summary.contains(field), "{field} missing from {summary}");
    }
}

/// A failed cycle is one warning that says why once, and when the next try is.
#[cfg(unix)] // stopped with SIGTERM
#[tokio::test]
async fn binary_says_once_why_a_cycle_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let endpoint = config.endpoint_path.clone();
    let args = ["--endpoint", &endpoint, "--interval", "3600"]
        .map(str::to_owned)
        .to_vec();
    let (status, log) = agent_binary(args, Some("cycle failed")).await;
    assert!(status.success(), "{status:?}: {log}");
    let failed: Vec<&str> = log.lines().filter(|line| line.contains("fail")).collect();
    assert_eq!(failed.len(), 1, "{log}");
    let line = failed[0];
    assert!(line.contains("WARN"), "{line}");
    assert_eq!(
        line.matches(&format!("no server at {endpoint} (is procmond running?)"))
            .count(),
        1,
        "{line}"
    );
    assert!(line.contains("next try in 3600 s"), "{line}");
}

/// `--config` is read as procmond reads it, flags on top.
#[tokio::test]
async fn binary_reads_the_configuration_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let _server = serve(&config, Fake::default());
    let file = dir.path().join("ipc.yaml");
    std::fs::write(
        &file,
        format!("ipc:\n  endpoint_path: {}\n", config.endpoint_path),
    )
    .expect("write");
    let file = file.to_string_lossy().into_owned();
    let args = ["--config", &file, "--once", "--hash-limit", "1"]
        .map(str::to_owned)
        .to_vec();
    let (status, log) = agent_binary(args, None).await;
    assert!(status.success(), "{log}");
    assert!(log.contains("cycle complete"), "{log}");

    // A flag wins over the file.
    let elsewhere = daemoneye_ipc::config::endpoint_in(dir.path(), "elsewhere");
    let args = ["--config", &file, "--endpoint", &elsewhere, "--once"]
        .map(str::to_owned)
        .to_vec();
    let (status, log) = agent_binary(args, None).await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&elsewhere), "{log}");

    // A key the configuration does not have is refused, by name.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_conections = 3\n").expect("write");
    let args = ["--config", &*bad.to_string_lossy(), "--once"]
        .map(str::to_owned)
        .to_vec();
    let (status, log) = agent_binary(args, None).await;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("max_conections"), "{log}");
}

#[cfg(unix)] // SIGTERM
#[tokio::test]
async fn binary_keeps_running_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let _server = serve(&config, Fake::default());
    let args = ["--endpoint", &config.endpoint_path, "--interval", "3600"]
        .map(str::to_owned)
        .to_vec();

    let (status, log) = agent_binary(args, Some("cycle complete")).await;
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert_eq!(log.matches("cycle complete").count(), 1, "{log}");
}

/// `--watch` against the real collector: a process this test starts is logged as
/// started, its executable hashed, then logged as exited once killed. A child started
/// before the agent's first snapshot would go unseen, so each attempt starts a new one
/// until one is reported.
#[cfg(unix)] // SIGTERM
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_watch_logs_a_child_started_then_killed_and_hashes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint_in(dir.path());
    let _server = serve(&config, SystemCollector::new());
    let mut agent = Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
        .args([
            "--endpoint",
            &config.endpoint_path,
            "--watch",
            "--watch-interval-ms",
            "100",
        ])
        .env_remove("DAEMONEYE_ENDPOINT")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let agent_pid = libc::pid_t::try_from(agent.id()).expect("pid");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = agent.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let mut wait_for = |what: &dyn Fn(&str) -> bool, within: Duration| -> bool {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let found = what(&line);
                    log.push_str(&line);
                    log.push('\n');
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    };
    assert!(
        wait_for(
            &|line| line.contains("watching processes"),
            Duration::from_secs(20)
        ),
        "the agent never subscribed"
    );

    let mut seen = None;
    for _attempt in 0..5 {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let started = format!("pid={pid} ");
        if wait_for(
            &|line| line.contains("process started") && line.contains(&started),
            Duration::from_secs(5),
        ) {
            let hashed = wait_for(
                &|line| line.contains("executable hashed") && line.contains(&started),
                Duration::from_secs(10),
            );
            child.kill().expect("kill");
            child.wait().expect("reap");
            let exited = wait_for(
                &|line| line.contains("process exited") && line.contains(&started),
                Duration::from_secs(10),
            );
            seen = Some((hashed, exited));
            break;
        }
        child.kill().expect("kill");
        child.wait().expect("reap");
    }
    // SAFETY: kill(2) on the agent we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGTERM) }, 0);
    let status = agent.wait().expect("wait");
    drop(reader);
    assert_eq!(seen, Some((true, true)), "{log}");
    assert!(status.success(), "{status:?}: {log}");
}
