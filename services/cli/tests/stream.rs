//! The real `daemoneye-cli` binary on what does not fit in one answer or one moment:
//! `processes` on a synthetic host of 20,000 records with 1 KB command lines (table and
//! JSON), `watch` seeing a child process this test starts and kills, and `verify` on a
//! process whose executable file is replaced, then deleted.
#![cfg(unix)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use daemoneye_collector::{ProcessCollectorServer, SystemCollector};
use daemoneye_ipc::{IpcConfig, Server};
use daemoneye_proto::ProcessRecord;

/// Upper bound for anything waited for here; never a speed requirement.
const PATIENCE: Duration = Duration::from_secs(30);

fn serve(dir: &Path, collector: SystemCollector) -> String {
    let endpoint = daemoneye_ipc::config::endpoint_in(dir, "procmond");
    let config = IpcConfig::with_endpoint(endpoint.clone());
    let server = Server::bind(&config, ProcessCollectorServer::new(collector)).expect("bind");
    tokio::spawn(server.serve());
    endpoint
}

fn cli_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_daemoneye-cli"));
    command
        .args(args)
        .env_remove("DAEMONEYE_ENDPOINT")
        .env_remove("RUST_LOG");
    command
}

/// Runs the cli to completion on the blocking pool (the server runs meanwhile).
async fn cli(args: &[&str]) -> Output {
    let mut command = cli_command(args);
    tokio::task::spawn_blocking(move || command.output().expect("run daemoneye-cli"))
        .await
        .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

/// 20,000 processes with command lines of 1 KB each (about 21 MB encoded).
fn synthetic_host() -> Arc<Vec<ProcessRecord>> {
    Arc::new(
        (1..=20_000u32)
            .map(|pid| ProcessRecord {
                pid,
                ppid: Some(1),
                name: format!("worker-{pid}"),
                executable_path: Some("/opt/app/bin/worker".to_owned()),
                command_line: vec!["/opt/app/bin/worker".to_owned(), "-".repeat(1024)],
                memory_usage: Some(64 << 20),
                user_id: Some("1000".to_owned()),
                accessible: true,
                file_exists: true,
                collection_time: 1_700_000_000_000,
                ..ProcessRecord::default()
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_lists_a_synthetic_host_of_20000_records_with_1kb_command_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = synthetic_host();
    let collector = SystemCollector::new().with_process_table(move || host.as_ref().clone());
    let endpoint = serve(dir.path(), collector);

    let started = Instant::now();
    let out = cli(&["--endpoint", &endpoint, "processes"]).await;
    let table_time = started.elapsed();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 20_002, "header, 20,000 rows, count");
    assert!(
        lines[0].trim_start().starts_with("PID  PPID  USER"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].trim_start().starts_with("1     1  1000"),
        "{}",
        lines[1]
    );
    assert!(lines[20_000].contains("worker-20000"), "{}", lines[20_000]);
    assert_eq!(lines[20_001], "20000 processes");

    let started = Instant::now();
    let out = cli(&["--endpoint", &endpoint, "processes", "--json"]).await;
    let json_time = started.elapsed();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let records: Vec<ProcessRecord> =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON array");
    assert_eq!(records.len(), 20_000);
    assert!(
        records.windows(2).all(|w| w[0].pid < w[1].pid),
        "in pid order"
    );
    assert!(records.iter().all(|r| r.command_line[1].len() == 1024));
    assert_eq!(records, *synthetic_host(), "every field arrives as served");
    eprintln!("20,000 records: table in {table_time:?}, JSON in {json_time:?}");
}

/// Lines from a child's stdout, read by a thread, with a deadline per wait.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Self {
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// The first JSON line (skipping others) for which `wanted` holds, within PATIENCE.
    fn wait_for(
        &self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {what} within {PATIENCE:?}"));
            let line = self
                .0
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?} (stream ended?)"));
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if wanted(&value) {
                return value;
            }
        }
    }
}

/// Kills a child process when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Waits for `child` to exit, at most PATIENCE.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_a_child_started_then_killed_as_json_lines_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = serve(dir.path(), SystemCollector::new());
    let me = std::process::id();
    let me_text = me.to_string();
    let mut watch = Reap(
        cli_command(&[
            "--endpoint",
            &endpoint,
            "watch",
            "--tree",
            &me_text,
            "--existing",
            "--interval-ms",
            "100",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch"),
    );
    let lines = Lines::of(&mut watch.0);
    tokio::task::spawn_blocking(move || {
        // The first snapshot is taken: this process, the tree's root, is listed.
        lines.wait_for("this process as existing", |event| {
            event["event"] == "existing" && event["pid"] == me
        });

        let mut sleeper = Reap(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        );
        let pid = sleeper.0.id();
        let started = lines.wait_for("the child started", |event| {
            event["event"] == "started" && event["pid"] == pid
        });
        assert_eq!(started["ppid"], me, "{started}");
        assert_eq!(started["name"], "sleep", "{started}");
        assert_eq!(started["command_line"], serde_json::json!(["sleep", "30"]));
        assert!(
            started["observed_at"].as_i64().is_some_and(|ms| ms > 0),
            "{started}"
        );

        sleeper.0.kill().expect("kill");
        sleeper.0.wait().expect("reap");
        let exited = lines.wait_for("the child exited", |event| {
            event["event"] == "exited" && event["pid"] == pid
        });
        assert_eq!(exited["name"], "sleep", "{exited}");

        // Runs until interrupted; SIGTERM is a clean exit.
        signal(&watch.0, libc::SIGTERM);
        let status = wait_exit(&mut watch.0);
        assert_eq!(status.code(), Some(0), "{status:?}");
    })
    .await
    .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fails_when_the_collector_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "procmond");
    let config = IpcConfig {
        drain_timeout_ms: 100,
        ..IpcConfig::with_endpoint(endpoint.clone())
    };
    let server =
        Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new())).expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let me = std::process::id().to_string();
    let mut watch = Reap(
        cli_command(&[
            "--endpoint",
            &endpoint,
            "watch",
            "--tree",
            &me,
            "--existing",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch"),
    );
    let lines = Lines::of(&mut watch.0);
    // Keep reading the cli's stdout until it exits: with `--tree` of this test process,
    // other tests' children make events too, and a closed pipe would end the cli early
    // (EPIPE is a quiet exit 0, as for `| head`), not the collector going away.
    let (watch, _lines) = tokio::task::spawn_blocking(move || {
        lines.wait_for("a first event", |_| true);
        (watch, lines)
    })
    .await
    .expect("join");
    let _ = stop.send(());
    let _ = serving.await;
    let mut watch = watch;
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut watch.0);
        let mut stderr = String::new();
        std::io::Read::read_to_string(watch.0.stderr.as_mut().expect("piped stderr"), &mut stderr)
            .expect("stderr");
        (status, stderr)
    })
    .await
    .expect("join");
    let (status, stderr) = status;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(&endpoint),
        "{stderr}"
    );
}

/// Starts `program` with `args`, retrying while the kernel says the file is busy: a
/// copy just written may still be open for writing in a child forked meanwhile by
/// another test thread.
fn spawn_retrying(program: &Path, args: &[&str]) -> Child {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Command::new(program).args(args).spawn() {
            Ok(child) => return child,
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) => {
                assert!(Instant::now() < deadline, "{error}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("spawn {}: {error}", program.display()),
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_an_executable_replaced_on_disk_then_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = serve(dir.path(), SystemCollector::new());
    let app = dir.path().join("app");
    std::fs::copy("/bin/sleep", &app).expect("copy /bin/sleep");
    let running = Reap(spawn_retrying(&app, &["30"]));
    let pid = running.0.id().to_string();
    let app_text = app.to_string_lossy().into_owned();

    let out = cli(&["--endpoint", &endpoint, "verify", &pid]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!("{pid}  unchanged  {app_text}  sha256:")),
        "{line}"
    );

    // Replaced the way package managers do: a new file renamed over the old name.
    let new = dir.path().join("app.new");
    std::fs::write(&new, b"#!/bin/sh\necho not the program that runs\n").expect("write");
    std::fs::rename(&new, &app).expect("rename");
    let out = cli(&["--endpoint", &endpoint, "verify", &pid]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!("{pid}  replaced  {app_text}  running sha256:")),
        "{line}"
    );
    assert!(line.contains("  on disk sha256:"), "{line}");

    let out = cli(&[
        "--endpoint",
        &endpoint,
        "verify",
        &pid,
        "--json",
        "--algorithm",
        "blake3",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(result["state"], "replaced", "{result}");
    assert_eq!(result["algorithm"], "blake3");
    assert_eq!(result["executable_path"], app_text.as_str());
    assert_eq!(result["same_file"], false);
    let (running_hash, disk_hash) = (&result["running_hash"], &result["disk_hash"]);
    assert!(
        running_hash.as_str().is_some_and(|h| h.len() == 64),
        "{result}"
    );
    assert!(
        disk_hash.as_str().is_some_and(|h| h.len() == 64),
        "{result}"
    );
    assert_ne!(running_hash, disk_hash);

    std::fs::remove_file(&app).expect("remove");
    let out = cli(&["--endpoint", &endpoint, "verify", &pid, "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(result["state"], "deleted", "{result}");
    assert_eq!(result["disk_hash"], serde_json::Value::Null);
    assert!(
        result["running_hash"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{result}"
    );
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("deleted")),
        "{result}"
    );

    // No such process: the collector cannot tell; exit status 2, reason on stderr.
    let out = cli(&["--endpoint", &endpoint, "verify", "4294967295"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "error: cannot verify process 4294967295: no process 4294967295\n"
    );
    drop(running);
}
