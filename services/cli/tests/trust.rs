//! The real `daemoneye-cli` binary refuses a collector it does not trust, before
//! sending it anything: one served from a directory others could tamper with, or (as
//! root) one served by another user, the impostor of issue 11. It prints why, naming
//! the owner found, on one line on stderr, nothing on stdout, and exits 2.
#![cfg(unix)]

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use daemoneye_collector::{ProcessCollector, ProcessCollectorServer};
use daemoneye_ipc::{IpcConfig, Server, ServerStream, Status};
use daemoneye_proto::{
    DetectionResult, DetectionTask, HashRequest, HashResult, ProcessEvent, ProcessFilter,
    ProcessList, ProcessRecord, VerifyRequest, VerifyResult, WatchRequest,
};

/// A collector whose one process is made up.
struct Fabricated;

fn fabricated() -> ProcessList {
    let fake = ProcessRecord {
        pid: 31337,
        name: "fabricated".into(),
        accessible: true,
        ..ProcessRecord::default()
    };
    ProcessList {
        processes: vec![fake],
    }
}

impl ProcessCollector for Fabricated {
    async fn enumerate_processes(&self, _filter: ProcessFilter) -> Result<ProcessList, Status> {
        Ok(fabricated())
    }
    async fn stream_processes(
        &self,
        _filter: ProcessFilter,
        mut tx: ServerStream<ProcessList>,
    ) -> Result<(), Status> {
        tx.send(fabricated()).await
    }
    async fn watch_processes(
        &self,
        _request: WatchRequest,
        _tx: ServerStream<ProcessEvent>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("no watching"))
    }
    async fn verify_executable(&self, _request: VerifyRequest) -> Result<VerifyResult, Status> {
        Err(Status::unimplemented("no verifying"))
    }
    async fn check_hash(&self, _request: HashRequest) -> Result<HashResult, Status> {
        Err(Status::unimplemented("no hashing"))
    }
    async fn run_task(&self, _task: DetectionTask) -> Result<DetectionResult, Status> {
        Err(Status::unimplemented("no tasks"))
    }
}

/// The uid and gid the impostor runs as ("nobody").
const NOBODY: u32 = 65534;
/// Names the endpoint the impostor helper serves on.
const ENDPOINT_VAR: &str = "DAEMONEYE_CLI_IMPOSTOR_ENDPOINT";
/// The line the impostor prints once it serves.
const READY: &str = "CLI_IMPOSTOR_READY";

fn serve(endpoint: &Path) {
    let config = IpcConfig::with_endpoint(endpoint.to_string_lossy());
    let server = Server::bind(&config, ProcessCollectorServer::new(Fabricated)).expect("bind");
    tokio::spawn(server.serve());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Runs the cli's `processes` against `endpoint`, with `extra` arguments before it.
async fn processes(endpoint: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    args.extend([
        "--endpoint".to_owned(),
        endpoint.to_string_lossy().into_owned(),
    ]);
    args.push("processes".to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_daemoneye-cli"))
            .args(&args)
            .env_remove("DAEMONEYE_ENDPOINT")
            .env_remove("RUST_LOG")
            .output()
            .expect("run daemoneye-cli")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

fn assert_refused(out: &Output, endpoint: &Path, reason: &str) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing printed: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: permission denied for {}: {reason}",
            endpoint.display()
        )) && stderr.ends_with('\n')
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[tokio::test]
async fn a_collector_in_a_directory_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chmod(&run, 0o700);
    let endpoint = run.join("procmond.sock");
    serve(&endpoint);
    let out = processes(&endpoint, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    chmod(&run, 0o777);
    let out = processes(&endpoint, &[]).await;
    assert_refused(
        &out,
        &endpoint,
        &format!("socket directory {} (owner uid ", run.display()),
    );
    assert!(text(&out.stderr).contains("mode 777"), "{out:?}");
}

/// Not a test: run by [`a_collector_run_by_another_user_is_refused`] as uid
/// [`NOBODY`]. Serves [`Fabricated`] at the endpoint in the environment.
#[tokio::test]
#[ignore = "helper run as another uid by a_collector_run_by_another_user_is_refused"]
async fn impostor_collector_helper() {
    let Ok(endpoint) = std::env::var(ENDPOINT_VAR) else {
        return;
    };
    serve(Path::new(&endpoint));
    println!("{READY}");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Kills the impostor when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_collector_run_by_another_user_is_refused() {
    use std::os::unix::{fs::MetadataExt, process::CommandExt};
    // A shared directory like /tmp (root's, sticky), so only the server gives it away.
    let tmp = tempfile::tempdir().expect("tempdir");
    // Owned by this process's effective uid.
    if std::fs::metadata(tmp.path()).expect("stat").uid() != 0 {
        eprintln!("skipped: needs root to run a collector as uid {NOBODY}");
        return;
    }
    chmod(tmp.path(), 0o755);
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    chmod(&shared, 0o1777);
    let endpoint = shared.join("procmond.sock");

    let spawned = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "impostor_collector_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENDPOINT_VAR, &endpoint)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            eprintln!("skipped: cannot run a process as uid {NOBODY}: {error}");
            return;
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let impostor = Reap(child);
    let (ready, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(READY) {
                let _ = ready.send(());
            }
        }
    });
    lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the impostor serves");

    let out = processes(&endpoint, &[]).await;
    let expected = format!(
        "server process uid={NOBODY} gid={NOBODY} pid={} is not trusted",
        impostor.0.id()
    );
    assert_refused(&out, &endpoint, &expected);

    // --server-uid trusts it: then the cli prints what it serves.
    let out = processes(&endpoint, &["--server-uid", &NOBODY.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("fabricated"), "{out:?}");
}
