//! The operator's commands of the real `daemoneye-cli` binary against servers in this
//! test process: `health-check` exit codes (serving, not serving, no server), `--wait`
//! and `--timeout-ms` with a server that starts late, `ipc test` naming the step that
//! fails (no socket, a socket directory owned by another user, the other CRC variant,
//! another service), `metrics`, an endpoint that is not a socket, `--config`.
#![cfg(unix)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use daemoneye_collector::{ProcessCollectorServer, SystemCollector};
use daemoneye_ipc::{
    health::{HealthReporter, ServingStatus},
    ipc_service, Crc32Variant, IpcConfig, Server, Status,
};
use daemoneye_proto::ProcessRecord;

/// Runs the cli with `args` on the blocking pool, so the servers in this process keep
/// running meanwhile.
async fn cli(args: &[&str]) -> Output {
    cli_with_env(args, &[]).await
}

async fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_daemoneye-cli"));
        command
            .args(&args)
            .env_remove("DAEMONEYE_ENDPOINT")
            .env_remove("DAEMONEYE_CONFIG")
            .env_remove("DAEMONEYE_CRC32_VARIANT")
            .env_remove("RUST_LOG");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run daemoneye-cli")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

/// A collector over a one-process synthetic table.
fn collector() -> ProcessCollectorServer<SystemCollector> {
    ProcessCollectorServer::new(SystemCollector::new().with_process_table(|| {
        vec![ProcessRecord {
            pid: 4242,
            name: "fixture".to_owned(),
            ..ProcessRecord::default()
        }]
    }))
}

/// Serves a collector at `dir/procmond.sock` with `config`'s settings; its health.
fn serve_in(dir: &Path, config: IpcConfig) -> (String, HealthReporter) {
    let endpoint = daemoneye_ipc::config::endpoint_in(dir, "procmond");
    let config = IpcConfig {
        endpoint_path: endpoint.clone(),
        ..config
    };
    let server = Server::bind(&config, collector()).expect("bind");
    let health = server.health();
    tokio::spawn(server.serve());
    (endpoint, health)
}

fn serve(dir: &Path) -> (String, HealthReporter) {
    serve_in(dir, IpcConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_exit_codes_serving_not_serving_and_no_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, health) = serve(dir.path());

    let out = cli(&["--endpoint", &endpoint, "health-check"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), format!("{endpoint}: SERVING\n"));

    health.set("", ServingStatus::NotServing);
    let out = cli(&["--endpoint", &endpoint, "health-check"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), format!("{endpoint}: NOT_SERVING\n"));
    let out = cli(&["--endpoint", &endpoint, "health-check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["status"], "NOT_SERVING");
    assert_eq!(json["endpoint"], endpoint.as_str());

    // One service's state, and a service not served here.
    let out = cli(&[
        "--endpoint",
        &endpoint,
        "health-check",
        "--service",
        "daemoneye.ProcessCollector",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli(&["--endpoint", &endpoint, "health-check", "--service", "x.Y"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("SERVICE_UNKNOWN"), "{out:?}");

    let nobody = daemoneye_ipc::config::endpoint_in(dir.path(), "nobody");
    let args = ["--endpoint", &nobody, "--timeout-ms", "200", "health-check"];
    let out = cli(&args).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!("error: no server at {nobody} (is procmond running?)\n")
    );
    let out = cli(&[&args[..], &["--json"]].concat()).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["status"], "UNREACHABLE");
    assert!(json["error"].as_str().expect("error").contains("no server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_verbose_shows_the_server_and_every_method() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, _health) = serve(dir.path());
    // A call to count.
    let out = cli(&["--endpoint", &endpoint, "processes"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = cli(&["--endpoint", &endpoint, "health-check", "--verbose"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    for expected in [
        format!("{endpoint}: SERVING\n"),
        format!("  endpoint     {endpoint}\n"),
        "mode 0600".to_owned(),
        format!("daemoneye-ipc {}, protocol 1", env!("CARGO_PKG_VERSION")),
        "  crc32        crc32c (this cli: crc32c)\n".to_owned(),
        "frames up to 1048576 bytes, 16 connections".to_owned(),
        "  uptime ".to_owned(),
        "  connections ".to_owned(),
        "  services     daemoneye.ProcessCollector SERVING\n".to_owned(),
        "daemoneye.ipc.Health SERVING".to_owned(),
        "method".to_owned(),
        "p99".to_owned(),
    ] {
        assert!(
            stdout.contains(&expected),
            "{expected:?} missing in\n{stdout}"
        );
    }
    let row = stdout
        .lines()
        .find(|line| line.contains("stream_processes"))
        .expect("a row per method");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        [
            "daemoneye.ProcessCollector",
            "stream_processes",
            "1",
            "0",
            "0"
        ]
    );

    let out = cli(&[
        "--endpoint",
        &endpoint,
        "health-check",
        "--verbose",
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["socket"]["mode"], "0600");
    assert_eq!(json["server"]["crc32_variant"], "crc32c");
    assert_eq!(json["server"]["limits"]["max_frame_bytes"], 1_048_576);
    let methods = json["metrics"]["methods"].as_array().expect("methods");
    assert!(methods
        .iter()
        .any(|m| m["method"] == "stream_processes" && m["started"] == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_starts_late_is_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let late = dir.path().to_owned();
    let endpoint = daemoneye_ipc::config::endpoint_in(&late, "procmond");
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        serve(&late)
    });
    // --wait: ready within the time, exit 0.
    let started = Instant::now();
    let out = cli(&["--endpoint", &endpoint, "health-check", "--wait", "20"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "did not wait"
    );
    let _server = starter.await.expect("started");

    // --timeout-ms is the time allowed to connect: a command started before the
    // server waits for it (the README's two-process script).
    let dir = tempfile::tempdir().expect("tempdir");
    let late = dir.path().to_owned();
    let endpoint = daemoneye_ipc::config::endpoint_in(&late, "procmond");
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        serve(&late)
    });
    let out = cli(&[
        "--endpoint",
        &endpoint,
        "--timeout-ms",
        "20000",
        "processes",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("fixture"), "{out:?}");
    let _server = starter.await.expect("started");

    // --wait that runs out: the last finding (unreachable), not a hang.
    let nobody = daemoneye_ipc::config::endpoint_in(dir.path(), "nobody");
    let started = Instant::now();
    let out = cli(&["--endpoint", &nobody, "health-check", "--wait", "1"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_not_a_socket_is_named_as_such_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").expect("write");
    let file = file.to_string_lossy().into_owned();
    let directory = dir.path().to_string_lossy().into_owned();
    for (endpoint, kind) in [(&file, "a regular file"), (&directory, "a directory")] {
        let started = Instant::now();
        let out = cli(&["--endpoint", endpoint, "--timeout-ms", "20000", "processes"]).await;
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: {endpoint} is {kind}, not a socket")),
            "{stderr}"
        );
        assert!(!stderr.contains("stale"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited for a socket to appear"
        );
    }
}

/// The `[FAIL]` line of an `ipc test` that failed, after checking that it is the last
/// step printed, that every step before it passed and that the exit status is 1.
fn failed_step(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let failed = lines
        .iter()
        .position(|line| line.starts_with("[FAIL]"))
        .unwrap_or_else(|| panic!("no failed step in\n{stdout}"));
    assert!(
        lines[..failed]
            .iter()
            .all(|line| line.starts_with("[ ok ]")),
        "{stdout}"
    );
    assert_eq!(lines.len(), failed + 2, "stops at the failure:\n{stdout}");
    assert!(
        lines[failed + 1].trim_start().starts_with("advice: "),
        "{stdout}"
    );
    format!("{}\n{}", lines[failed], lines[failed + 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_test_passes_every_step_against_a_working_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, _health) = serve(dir.path());
    let out = cli(&["--endpoint", &endpoint, "ipc", "test", "--count", "20"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    let steps: Vec<&str> = stdout
        .lines()
        .map(|line| {
            assert!(line.starts_with("[ ok ] "), "{stdout}");
            line[7..].split("  ").next().expect("a name").trim()
        })
        .collect();
    assert_eq!(
        steps,
        [
            "socket",
            "directory",
            "owner",
            "connect",
            "handshake",
            "round trips",
            "frame limit"
        ]
    );
    assert!(stdout.contains("20 health checks: p50 "), "{stdout}");
    assert!(
        stdout.contains("(the same as this cli's), CRC crc32c"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_test_names_a_missing_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "none");
    let out = cli(&["--endpoint", &endpoint, "ipc", "test"]).await;
    let failed = failed_step(&out);
    assert!(
        failed.starts_with(&format!("[FAIL] socket       {endpoint} does not exist")),
        "{failed}"
    );
    assert!(
        failed.contains("verify that procmond is running"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_test_names_a_socket_the_user_may_not_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, _health) = serve(dir.path());
    let sockets = dir.path();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // The socket's directory given to another user: who could have planted it.
        let path = std::ffi::CString::new(sockets.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::chown(path.as_ptr(), 65534, 65534) },
            0,
            "chown"
        );
    } else {
        std::fs::set_permissions(sockets, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    }
    let out = cli(&["--endpoint", &endpoint, "ipc", "test"]).await;
    std::fs::set_permissions(sockets, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let failed = failed_step(&out);
    if root {
        assert!(
            failed.starts_with(&format!(
                "[FAIL] directory    {} is owned by uid 65534, not by you (uid 0) or root",
                sockets.display()
            )),
            "{failed}"
        );
        assert!(failed.contains("--server-uid 65534"), "{failed}");
    } else {
        assert!(failed.starts_with("[FAIL] socket "), "{failed}");
        assert!(failed.contains("searchable"), "{failed}");
    }
    assert!(
        failed.contains("advice: Permission denied: check the socket file"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_test_names_a_crc_variant_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ieee = IpcConfig {
        crc32_variant: Crc32Variant::Ieee,
        ..IpcConfig::default()
    };
    let (endpoint, _health) = serve_in(dir.path(), ieee);
    let out = cli(&["--endpoint", &endpoint, "ipc", "test"]).await;
    let failed = failed_step(&out);
    assert!(
        failed.starts_with(&format!(
            "[FAIL] handshake    CRC variant mismatch: {endpoint} frames with ieee, this cli \
             with crc32c"
        )),
        "{failed}"
    );
    assert!(failed.contains("advice: CRC mismatch: "), "{failed}");

    // The same file configures both ends: with it (or the variable) all is well.
    let file = dir.path().join("ipc.toml");
    std::fs::write(&file, "crc32_variant = \"ieee\"\n").expect("write");
    let file = file.to_string_lossy().into_owned();
    let out = cli(&["--config", &file, "--endpoint", &endpoint, "ipc", "test"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli_with_env(
        &["--endpoint", &endpoint, "health-check"],
        &[("DAEMONEYE_CRC32_VARIANT", "ieee")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Any other command names the mismatch too.
    let out = cli(&["--endpoint", &endpoint, "processes"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).starts_with(&format!(
            "error: CRC variant mismatch: {endpoint} frames with ieee, this cli with crc32c"
        )),
        "{out:?}"
    );
}

/// A request/answer of the other service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Word {
    /// The word.
    #[prost(string, tag = "1")]
    pub word: String,
}

/// Not the collector.
#[ipc_service(name = "test.Other")]
pub trait Other {
    /// Echoes.
    async fn echo(&self, req: Word) -> Result<Word, Status>;
}

struct OtherImpl;

impl Other for OtherImpl {
    async fn echo(&self, req: Word) -> Result<Word, Status> {
        Ok(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_test_names_a_server_of_another_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint: PathBuf = dir.path().join("other.sock");
    let endpoint = endpoint.to_string_lossy().into_owned();
    let config = IpcConfig::with_endpoint(endpoint.clone());
    let server = Server::bind(&config, OtherServer::new(OtherImpl)).expect("bind");
    tokio::spawn(server.serve());
    let out = cli(&["--endpoint", &endpoint, "ipc", "test"]).await;
    let failed = failed_step(&out);
    assert!(failed.starts_with("[FAIL] handshake "), "{failed}");
    assert!(failed.contains("serves test.Other"), "{failed}");
    assert!(
        failed.contains("advice: This endpoint serves another service"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_prints_the_prometheus_text_or_the_json_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, _health) = serve(dir.path());
    let out = cli(&["--endpoint", &endpoint, "processes"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = cli(&["--endpoint", &endpoint, "metrics"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "daemoneye_ipc_calls_total{service=\"daemoneye.ProcessCollector\",\
             method=\"stream_processes\",code=\"OK\"} 1\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("# TYPE daemoneye_ipc_call_duration_seconds histogram"));
    assert!(stdout.ends_with('\n'), "{stdout}");

    let out = cli(&["--endpoint", &endpoint, "metrics", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: daemoneye_ipc::metrics::Report =
        serde_json::from_slice(&out.stdout).expect("a metrics report");
    let streamed = report
        .methods
        .iter()
        .find(|m| m.method == "stream_processes")
        .expect("per method");
    assert_eq!((streamed.started, streamed.finished), (1, 1));
    assert_eq!(streamed.by_code.get("OK"), Some(&1));
    assert!(report.server.connections_total >= 2);
}
