//! The real `daemoneye-cli` binary, run as a separate process against collectors served
//! in this test process: a fake with fixed records (exact output) and the real
//! `SystemCollector` (this process's own pid, real file hashing).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use daemoneye_collector::{ProcessCollector, ProcessCollectorServer, SystemCollector};
use daemoneye_ipc::{IpcConfig, Server, ServerStream, Status};
use daemoneye_proto::{
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessEvent, ProcessFilter,
    ProcessList, ProcessRecord, VerifyRequest, VerifyResult, WatchRequest,
};

/// sha256("hello\n"), as printed by `sha256sum`.
const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

/// A collector with two fixed processes that records the filters it is sent.
#[derive(Default)]
struct Fake {
    filters: Arc<Mutex<Vec<ProcessFilter>>>,
}

fn fake_records() -> Vec<ProcessRecord> {
    // Not in pid order: the fake's stream sorts, as the collector's does.
    vec![
        ProcessRecord {
            pid: 4242,
            ppid: Some(77),
            name: "bash".into(),
            executable_path: None,
            cpu_usage: None,
            memory_usage: Some(2048),
            user_id: Some("1000".into()),
            accessible: true,
            collection_time: 1_700_000_000_000,
            ..ProcessRecord::default()
        },
        ProcessRecord {
            pid: 77,
            ppid: Some(1),
            name: "sshd".into(),
            executable_path: Some("/usr/sbin/sshd".into()),
            command_line: vec!["/usr/sbin/sshd".into(), "-D".into()],
            cpu_usage: Some(0.5),
            memory_usage: Some(5 * 1024 * 1024),
            user_id: Some("0".into()),
            accessible: true,
            file_exists: true,
            collection_time: 1_700_000_000_000,
            ..ProcessRecord::default()
        },
    ]
}

impl ProcessCollector for Fake {
    async fn enumerate_processes(&self, _filter: ProcessFilter) -> Result<ProcessList, Status> {
        Err(Status::unimplemented("the cli lists with stream_processes"))
    }
    /// The records the filter's pids select, in pid order, in one batch.
    async fn stream_processes(
        &self,
        filter: ProcessFilter,
        mut tx: ServerStream<ProcessList>,
    ) -> Result<(), Status> {
        self.filters.lock().expect("lock").push(filter.clone());
        let mut processes: Vec<ProcessRecord> = fake_records()
            .into_iter()
            .filter(|r| filter.pids.is_empty() || filter.pids.contains(&r.pid))
            .collect();
        processes.sort_by_key(|r| r.pid);
        if !processes.is_empty() {
            tx.send(ProcessList { processes }).await?;
        }
        Ok(())
    }
    async fn watch_processes(
        &self,
        _request: WatchRequest,
        _tx: ServerStream<ProcessEvent>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("the fake does not watch"))
    }
    async fn verify_executable(&self, _request: VerifyRequest) -> Result<VerifyResult, Status> {
        Err(Status::unimplemented("the fake does not verify"))
    }
    async fn check_hash(&self, _request: HashRequest) -> Result<HashResult, Status> {
        Err(Status::unimplemented("the fake does not hash"))
    }
    async fn run_task(&self, _task: DetectionTask) -> Result<DetectionResult, Status> {
        Err(Status::unimplemented("the fake runs no tasks"))
    }
}

/// Serves `service` on a socket in `dir`; returns the endpoint. The listener exists when
/// this returns, so a client may connect at once.
fn serve<T: ProcessCollector>(dir: &Path, service: T) -> String {
    let endpoint = daemoneye_ipc::config::endpoint_in(dir, "procmond");
    let config = IpcConfig::with_endpoint(endpoint.clone());
    let server = Server::bind(&config, ProcessCollectorServer::new(service)).expect("bind");
    tokio::spawn(server.serve());
    endpoint
}

/// Runs the cli with `args` (in `cwd` when given) on the blocking pool, so the server
/// in this process keeps running meanwhile.
async fn cli(args: &[&str], cwd: Option<&Path>) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let cwd: Option<PathBuf> = cwd.map(Path::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_daemoneye-cli"));
        command
            .args(&args)
            .env_remove("DAEMONEYE_ENDPOINT")
            .env_remove("RUST_LOG");
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        command.output().expect("run daemoneye-cli")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

#[tokio::test]
async fn processes_json_is_exactly_the_records_and_sends_the_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Fake::default();
    let filters = fake.filters.clone();
    let endpoint = serve(dir.path(), fake);

    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "--timeout-ms",
            "5000",
            "processes",
            "--pid",
            "4242",
            "--name",
            "bash",
            "--exe-pattern",
            "/bin/*",
            "--json",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let records: Vec<ProcessRecord> = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(records, vec![fake_records().remove(0)]);
    assert_eq!(
        filters.lock().expect("lock").as_slice(),
        [ProcessFilter {
            process_names: vec!["bash".into()],
            pids: vec![4242],
            executable_pattern: Some("/bin/*".into()),
        }]
    );
}

#[tokio::test]
async fn processes_table_is_sorted_and_aligned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = serve(dir.path(), Fake::default());

    let out = cli(&["--endpoint", &endpoint, "processes"], None).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let expected = concat!(
        " PID  PPID  USER   MEMORY  CPU%  NAME  EXECUTABLE\n",
        "  77     1  0     5.0 MiB   0.5  sshd  /usr/sbin/sshd\n",
        "4242    77  1000  2.0 KiB     -  bash  -\n",
        "2 processes\n",
    );
    assert_eq!(text(&out.stdout), expected);
}

#[tokio::test]
async fn real_collector_lists_this_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = serve(dir.path(), SystemCollector::new());
    let pid = std::process::id();

    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "processes",
            "--pid",
            &pid.to_string(),
            "--json",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let records: Vec<ProcessRecord> = serde_json::from_str(&text(&out.stdout)).expect("JSON");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].pid, pid);
}

#[tokio::test]
async fn hash_checks_against_expect_and_exits_by_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = serve(dir.path(), SystemCollector::new());
    std::fs::write(dir.path().join("hello.txt"), "hello\n").expect("write");
    let in_dir = Some(dir.path());

    // Relative path: resolved against the cli's cwd, printed as given.
    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "hash",
            "hello.txt",
            "--expect",
            HELLO_SHA256,
        ],
        in_dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{HELLO_SHA256}  hello.txt\n"));

    // Upper-case expectation still matches.
    let upper = HELLO_SHA256.to_ascii_uppercase();
    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "hash",
            "hello.txt",
            "--expect",
            &upper,
        ],
        in_dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let wrong = "0".repeat(64);
    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "hash",
            "hello.txt",
            "--expect",
            &wrong,
        ],
        in_dir,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("mismatch"), "{stderr}");
    assert!(stderr.contains(HELLO_SHA256), "{stderr}");

    let out = cli(&["--endpoint", &endpoint, "hash", "missing.txt"], in_dir).await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot hash missing.txt"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Each algorithm the cli offers, through the real collector, against published
/// vectors for "abc" (FIPS 180-2, BLAKE3 reference); output like sha256sum and b3sum.
#[tokio::test]
async fn hash_with_each_algorithm_matches_published_vectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = serve(dir.path(), SystemCollector::new());
    std::fs::write(dir.path().join("abc.txt"), "abc").expect("write");
    let vectors = [
        (
            "sha256",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            "sha512",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        (
            "blake3",
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
        ),
    ];
    for (algorithm, expected) in vectors {
        let out = cli(
            &[
                "--endpoint",
                &endpoint,
                "hash",
                "abc.txt",
                "--algorithm",
                algorithm,
                "--expect",
                expected,
            ],
            Some(dir.path()),
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{algorithm}: {out:?}");
        assert_eq!(text(&out.stdout), format!("{expected}  abc.txt\n"));
    }

    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "hash",
            "abc.txt",
            "--algorithm",
            "md5",
        ],
        Some(dir.path()),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[possible values: sha256, sha512, blake3]"),
        "{stderr}"
    );
}

#[tokio::test]
async fn no_server_is_a_one_line_error_naming_the_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "nobody");

    // --timeout-ms is the time allowed to connect: no server within it.
    let out = cli(
        &["--endpoint", &endpoint, "--timeout-ms", "300", "processes"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        format!("error: no server at {endpoint} (is procmond running?)\n")
    );
}

#[tokio::test]
async fn endpoint_comes_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "env");
    let out = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_daemoneye-cli"))
                .args(["--timeout-ms", "300", "processes"])
                .env("DAEMONEYE_ENDPOINT", endpoint)
                .output()
                .expect("run")
        }
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&endpoint));
}

#[tokio::test]
async fn describe_needs_no_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "nobody");
    let out = cli(&["--endpoint", &endpoint, "describe"], None).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let descriptor = daemoneye_collector::ProcessCollectorClient::DESCRIPTOR;
    assert!(
        stdout.starts_with("built-in contract of this cli (no server at"),
        "says which contract it shows: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "service daemoneye.ProcessCollector  (schema hash {:016x})\n",
            descriptor.schema_hash
        )),
        "{stdout}"
    );
    for method in descriptor.methods {
        let line = format!("  {}(", method.name);
        assert!(stdout.contains(&line), "missing {line:?} in {stdout}");
    }
}

/// `describe` asks a running server through reflection: the same contract as the one
/// compiled in, plus the built-in services; `docs` writes a file per service.
#[tokio::test]
async fn describe_and_docs_ask_a_running_server() {
    use daemoneye_collector::{ProcessCollectorServer, SystemCollector};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = daemoneye_ipc::IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(
        dir.path(),
        "live",
    ));
    let server =
        daemoneye_ipc::Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new()))
            .expect("bind");
    let serving = tokio::spawn(server.serve());
    let endpoint = config.endpoint_path.clone();

    let out = cli(&["--endpoint", &endpoint, "describe", "--json"], None).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["source"]["kind"], "endpoint");
    let services: Vec<&str> = json["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(
        services,
        [
            "daemoneye.ProcessCollector",
            "daemoneye.ipc.Reflection",
            "daemoneye.ipc.Health"
        ]
    );
    let live: daemoneye_ipc::Contract =
        serde_json::from_value(json["services"][0].clone()).expect("a contract");
    let compiled = daemoneye_collector::ProcessCollectorClient::DESCRIPTOR
        .contract()
        .expect("compiled-in contract");
    assert_eq!(live, compiled, "reflection gives the compiled-in contract");

    let out = cli(&["--endpoint", &endpoint, "describe", "--messages"], None).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("endpoint {endpoint}: protocol 1")),
        "{stdout}"
    );
    assert!(stdout.contains(" 14  collection_time: int64"), "{stdout}");

    let docs = dir.path().join("docs");
    let out = cli(
        &[
            "--endpoint",
            &endpoint,
            "docs",
            "--out",
            &docs.to_string_lossy(),
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let reference = std::fs::read_to_string(docs.join("daemoneye.ProcessCollector.md"))
        .expect("one file per service");
    assert_eq!(reference, daemoneye_ipc::docs::render_markdown(&compiled));
    assert!(docs.join("daemoneye.ipc.Health.md").exists());
    serving.abort();
}
