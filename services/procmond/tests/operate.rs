//! Operating the real `procmond` binary: socket activation and readiness as systemd
//! does them (a bound listener passed as fd 3 with `LISTEN_FDS`/`LISTEN_PID`, `READY=1`
//! on `NOTIFY_SOCKET`), the metrics textfile, JSON logs, and `NOT_SERVING` when the
//! process table cannot be read.
#![cfg(target_os = "linux")]

use std::{
    io::Read,
    os::{
        fd::{AsRawFd, RawFd},
        unix::{
            fs::PermissionsExt,
            net::{UnixDatagram, UnixListener},
            process::CommandExt,
        },
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::{
    envelope::pb,
    health::{HealthClient, ServingStatus},
    IpcConfig,
};
use daemoneye_proto::ProcessFilter;

/// Upper bound for startup, a call, and shutdown; never a speed requirement.
const PATIENCE: Duration = Duration::from_secs(15);
/// Interval between two looks at a condition being polled.
const POLL: Duration = Duration::from_millis(20);

/// A running `procmond`, killed if the test ends before it exits.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Daemon {
    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits");
        // SAFETY: kill has no memory-safety preconditions; pid is our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill failed");
    }

    async fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "procmond still running");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything it wrote to stderr (complete once it has exited).
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            stderr.read_to_string(&mut text).expect("read stderr");
        }
        text
    }
}

fn procmond() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_procmond"));
    command
        .env_remove("RUST_LOG")
        .env_remove("DAEMONEYE_ENDPOINT")
        .env_remove("DAEMONEYE_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// `procmond ARGS` started as systemd starts a socket-activated service: `listener`
/// as fd 3, `LISTEN_FDS=1` and `LISTEN_PID` set to its own pid (a shell exports its
/// `$$` and execs procmond, which keeps the pid), and `NOTIFY_SOCKET`.
fn activated(listener: RawFd, notify: &Path, args: &[&str]) -> Daemon {
    let mut shell = Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_procmond"))
        .args(args)
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", notify)
        .env_remove("RUST_LOG")
        .env_remove("DAEMONEYE_ENDPOINT")
        .env_remove("DAEMONEYE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec this only calls dup2 and fcntl, which are
    // async-signal-safe, on descriptors this process owns.
    unsafe {
        shell.pre_exec(move || {
            if listener == 3 {
                // dup2 onto itself keeps close-on-exec: clear it.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(listener, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Daemon(shell.spawn().expect("spawn procmond under sh"))
}

/// A private directory with a listener bound at `p.sock`, mode `mode`, as a
/// `.socket` unit makes it.
fn systemd_socket(mode: u32) -> (tempfile::TempDir, PathBuf, UnixListener) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let endpoint = dir.path().join("p.sock");
    let listener = UnixListener::bind(&endpoint).expect("bind");
    std::fs::set_permissions(&endpoint, std::fs::Permissions::from_mode(mode)).expect("chmod");
    (dir, endpoint, listener)
}

/// The next notification datagram, as text.
async fn notification(socket: &UnixDatagram) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = [0_u8; 4096];
    loop {
        match socket.recv(&mut buffer) {
            Ok(len) => return String::from_utf8_lossy(&buffer[..len]).into_owned(),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("recv: {error}"),
        }
        assert!(Instant::now() < deadline, "no notification");
        tokio::time::sleep(POLL).await;
    }
}

async fn health_of(config: &IpcConfig) -> ServingStatus {
    let health = HealthClient::connect(config).await.expect("health client");
    health
        .check(pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_socket_passed_by_systemd_and_reports_readiness() {
    let (dir, endpoint, listener) = systemd_socket(0o600);
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_nonblocking(true).expect("nonblocking");
    let shown = endpoint.to_string_lossy().into_owned();
    let mut daemon = activated(listener.as_raw_fd(), &notify_path, &["--endpoint", &shown]);

    // READY=1 comes once it serves; nothing was bound: the passed socket is used.
    let ready = notification(&notify).await;
    assert!(ready.contains("READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=serving on {shown}")),
        "{ready:?}"
    );
    let config = IpcConfig::with_endpoint(shown.clone());
    let client = ProcessCollectorClient::connect(&config)
        .await
        .expect("connect through the passed socket");
    let pid = daemon.0.id();
    let own = ProcessFilter {
        pids: vec![pid],
        ..ProcessFilter::default()
    };
    let listed = client.enumerate_processes(own).await.expect("enumerate");
    assert_eq!(listed.processes.len(), 1, "{listed:?}");
    assert!(listed.processes[0].name.contains("procmond"), "{listed:?}");
    assert_eq!(health_of(&config).await, ServingStatus::Serving);

    drop(client);
    daemon.sigterm();
    let stopping = notification(&notify).await;
    assert!(stopping.contains("STOPPING=1"), "{stopping:?}");
    let status = daemon.wait().await;
    let stderr = daemon.stderr();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("socket_activated=true"), "{stderr}");
    // The socket file is systemd's: left in place, still bound to our listener.
    assert!(endpoint.exists(), "procmond removed systemd's socket");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_socket_others_may_connect_to_is_refused() {
    // systemd's default SocketMode is 0666.
    let (dir, endpoint, listener) = systemd_socket(0o666);
    let notify_path = dir.path().join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    let shown = endpoint.to_string_lossy().into_owned();
    let mut daemon = activated(listener.as_raw_fd(), &notify_path, &["--endpoint", &shown]);
    let status = daemon.wait().await;
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot serve the socket passed by systemd")
            && stderr.contains("mode 666")
            && stderr.contains("SocketMode=0600"),
        "{stderr}"
    );

    // Bound elsewhere than the endpoint: named, both paths.
    let (_dir, other, listener) = systemd_socket(0o600);
    let mut daemon = activated(listener.as_raw_fd(), &notify_path, &["--endpoint", &shown]);
    let status = daemon.wait().await;
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bound to {}, not to {shown}",
            other.to_string_lossy()
        )),
        "{stderr}"
    );
}

/// Starts `procmond --endpoint DIR/p.sock ARGS` and waits until it serves.
async fn started(dir: &Path, args: &[&str]) -> (Daemon, IpcConfig) {
    let endpoint = daemoneye_ipc::config::endpoint_in(dir, "p");
    let mut daemon = Daemon(
        procmond()
            .arg("--endpoint")
            .arg(&endpoint)
            .args(args)
            .spawn()
            .expect("spawn procmond"),
    );
    let config = IpcConfig::with_endpoint(endpoint);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            panic!("procmond exited early ({status}): {}", daemon.stderr());
        }
        if HealthClient::connect(&config).await.is_ok() {
            return (daemon, config);
        }
        assert!(Instant::now() < deadline, "procmond not serving");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_metrics_textfile_and_logs_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let textfile = dir.path().join("procmond.prom");
    let shown = textfile.to_string_lossy().into_owned();
    let (mut daemon, config) = started(
        dir.path(),
        &[
            "--metrics-textfile",
            &shown,
            "--metrics-interval-secs",
            "1",
            "--log-format",
            "json",
        ],
    )
    .await;
    // Written at start, before the first call.
    let first = std::fs::read_to_string(&textfile).expect("written at start");
    assert!(
        first.contains("daemoneye_ipc_calls_started_total{service=\"daemoneye.ProcessCollector\",method=\"check_hash\"} 0"),
        "{first}"
    );
    let client = ProcessCollectorClient::connect(&config)
        .await
        .expect("connect");
    client
        .enumerate_processes(ProcessFilter {
            pids: vec![std::process::id()],
            ..ProcessFilter::default()
        })
        .await
        .expect("enumerate");
    let counted = "daemoneye_ipc_calls_total{service=\"daemoneye.ProcessCollector\",\
                   method=\"enumerate_processes\",code=\"OK\"} 1";
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(&textfile).expect("read");
        if text.contains(counted) {
            for line in text.lines().filter(|line| !line.starts_with('#')) {
                let value = line.rsplit(' ').next().expect("a value");
                assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    daemon.sigterm();
    let status = daemon.wait().await;
    let stderr = daemon.stderr();
    assert!(status.success(), "{status}: {stderr}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["procmond.prom"], "temporary files left behind");

    // Every log line is one JSON object; the start names the endpoint.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let serving = lines
        .iter()
        .find(|line| line["message"] == "procmond serving")
        .unwrap_or_else(|| panic!("no start line in {stderr}"));
    assert_eq!(serving["endpoint"], config.endpoint_path.as_str());
    assert_eq!(serving["level"], "INFO");
    assert!(lines
        .iter()
        .any(|line| line["message"] == "procmond stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_metrics_textfile_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let textfile = dir.path().join("missing").join("procmond.prom");
    let endpoint = dir.path().join("p.sock");
    let mut daemon = Daemon(
        procmond()
            .arg("--endpoint")
            .arg(&endpoint)
            .arg("--metrics-textfile")
            .arg(&textfile)
            .spawn()
            .expect("spawn"),
    );
    let status = daemon.wait().await;
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--metrics-textfile") && stderr.contains(&*textfile.to_string_lossy()),
        "{stderr}"
    );
}

/// With `/proc` hidden (a tmpfs over it, in a mount namespace of its own) procmond
/// cannot read the process table: it serves, but its health is `NOT_SERVING`, and the
/// log says why. Needs root and `unshare`; skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_process_table_is_not_serving() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: hiding /proc needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "p");
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs none /proc"])
        .output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        eprintln!("skipped: cannot mount over /proc in a new mount namespace: {probe:?}");
        return;
    }
    let program = env!("CARGO_BIN_EXE_procmond");
    let mut daemon = Daemon(
        Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                "mount -t tmpfs none /proc && exec \"$0\" \"$@\"",
            ])
            .arg(program)
            .args(["--endpoint", &endpoint])
            .env_remove("RUST_LOG")
            .env_remove("DAEMONEYE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let config = IpcConfig::with_endpoint(endpoint);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            panic!("procmond exited ({status}): {}", daemon.stderr());
        }
        if let Ok(health) = HealthClient::connect(&config).await {
            let service = ProcessCollectorClient::DESCRIPTOR.name;
            let check = |service: &str| {
                health.check(pb::HealthCheckRequest {
                    service: service.to_owned(),
                })
            };
            let server = check("").await.expect("check").status();
            let collector = check(service).await.expect("check").status();
            if (server, collector) == (ServingStatus::NotServing, ServingStatus::NotServing) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never NOT_SERVING");
        tokio::time::sleep(POLL).await;
    }
    daemon.sigterm();
    let status = daemon.wait().await;
    let stderr = daemon.stderr();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("cannot read the process table") && stderr.contains("/proc"),
        "{stderr}"
    );
}
