//! Clients check who serves, over real sockets: the credentials of the server process
//! (against the client's server policy, by default its own uid or root) and the
//! directories on the socket's path (owned by a trusted user, not writable by others
//! without the sticky bit); servers check those directories too. Refusals are
//! `IpcError::PermissionDenied` naming the owner found, and come before the client
//! sends anything.
//!
//! The impostor cases start a real server as uid 65534 ("nobody"), which needs root;
//! they are skipped with a message otherwise. The others work as any user.
#![cfg(unix)]

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use daemoneye_ipc::{ipc_service, IpcConfig, IpcError, PeerPolicy, Server, Status};

use crate::support;

/// A request echoed back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    /// Echoed back.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// The service a server, real or impostor, offers.
#[ipc_service(name = "test.Trust")]
pub trait Trust {
    /// Echoes the request.
    async fn echo(&self, req: Text) -> Result<Text, Status>;
}

struct TrustImpl;

impl Trust for TrustImpl {
    async fn echo(&self, req: Text) -> Result<Text, Status> {
        Ok(req)
    }
}

/// The unprivileged uid and gid the impostor runs as ("nobody" on most distributions).
const NOBODY: u32 = 65534;
/// Names the endpoint the impostor helper serves on.
const IMPOSTOR_ENDPOINT_VAR: &str = "DAEMONEYE_TRUST_IMPOSTOR_ENDPOINT";
/// The line the impostor prints once it serves.
const IMPOSTOR_READY: &str = "IMPOSTOR_READY";
/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn config(endpoint: &Path) -> IpcConfig {
    IpcConfig::with_endpoint(endpoint.to_string_lossy())
}

/// Serves [`Trust`] at `endpoint` in this process.
fn serve(endpoint: &Path) {
    let server = Server::bind(&config(endpoint), TrustServer::new(TrustImpl)).expect("bind");
    tokio::spawn(server.serve());
}

/// The reason of a `PermissionDenied` for `endpoint`; panics on anything else.
fn denied(result: Result<TrustClient, IpcError>, endpoint: &Path) -> String {
    match result {
        Err(IpcError::PermissionDenied {
            endpoint: named,
            reason,
        }) => {
            assert_eq!(named, endpoint.to_string_lossy(), "names the endpoint");
            reason
        }
        Err(other) => panic!("expected PermissionDenied, got {other:?}"),
        Ok(_) => panic!("expected PermissionDenied, but the client connected"),
    }
}

async fn connect_with(endpoint: &Path, policy: PeerPolicy) -> Result<TrustClient, IpcError> {
    daemoneye_ipc::Client::connect_with_server_policy(
        &config(endpoint),
        TrustClient::DESCRIPTOR,
        policy,
    )
    .await
    .map(TrustClient::from_client)
}

async fn echo(client: &TrustClient) -> Result<String, IpcError> {
    let req = Text {
        text: "hello".into(),
    };
    client.echo(req).await.map(|reply| reply.text)
}

// ---- (a) the server's credentials, against the client's server policy -----------------

/// A uid that is neither ours nor root's.
fn stranger() -> u32 {
    euid().wrapping_add(12345).max(1)
}

#[tokio::test]
async fn a_server_outside_the_clients_server_policy_is_refused_naming_its_uid_and_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = dir.path().join("trust.sock");
    serve(&endpoint);
    let me = euid();

    let only_stranger = PeerPolicy::only_listed().allow_uid(stranger());
    let reason = denied(
        connect_with(&endpoint, only_stranger.clone()).await,
        &endpoint,
    );
    let server = format!("uid={me} gid=");
    let pid = format!("pid={}", std::process::id());
    assert!(
        reason.contains(&server) && reason.contains(&pid),
        "names the server's uid and pid: {reason}"
    );
    assert!(
        reason.contains(&format!("uid {}", stranger())),
        "says whom the policy trusts: {reason}"
    );
    let shown = IpcError::PermissionDenied {
        endpoint: endpoint.to_string_lossy().into_owned(),
        reason: reason.clone(),
    }
    .to_string();
    assert!(
        shown.contains(&server),
        "Display carries the reason: {shown}"
    );

    // A lazy client with the same policy: every call is refused, without retrying.
    let lazy = TrustClient::lazy(&config(&endpoint))
        .expect("lazy")
        .configure(|c| c.with_server_policy(only_stranger));
    let started = std::time::Instant::now();
    match echo(&lazy).await {
        Err(IpcError::PermissionDenied { reason, .. }) => assert!(reason.contains(&server)),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "not retried");

    // The default policy (this user or root) and an explicit allow-list both connect.
    let client = TrustClient::connect(&config(&endpoint))
        .await
        .expect("own server");
    assert_eq!(echo(&client).await.expect("echo"), "hello");
    let listed = PeerPolicy::only_listed().allow_uid(me);
    let client = connect_with(&endpoint, listed).await.expect("listed uid");
    assert_eq!(echo(&client).await.expect("echo"), "hello");
}

/// The refusal comes before the hello: a listener that records what it receives gets
/// nothing at all from a client that does not trust it.
#[tokio::test]
async fn an_untrusted_server_receives_nothing_from_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = dir.path().join("listener.sock");
    let listener = std::os::unix::net::UnixListener::bind(&endpoint).expect("bind");
    let (received, bytes) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut seen = Vec::new();
        let _ = stream.read_to_end(&mut seen);
        let _ = received.send(seen.len());
    });
    let config = IpcConfig {
        accept_timeout_ms: 1_000,
        ..config(&endpoint)
    };
    let result = daemoneye_ipc::Client::connect_with_server_policy(
        &config,
        TrustClient::DESCRIPTOR,
        PeerPolicy::only_listed().allow_uid(stranger()),
    )
    .await
    .map(TrustClient::from_client);
    let reason = denied(result, &endpoint);
    assert!(reason.contains(&format!("uid={}", euid())), "{reason}");
    let sent = tokio::task::spawn_blocking(move || bytes.recv_timeout(PATIENCE))
        .await
        .expect("join")
        .expect("the listener saw the client go");
    assert_eq!(
        sent, 0,
        "the client sent nothing to a server it does not trust"
    );
}

// ---- (b) a real impostor: a server running as another user -------------------------

/// Not a test: run by the impostor tests in a child process as uid [`NOBODY`]. Serves
/// [`Trust`] at the endpoint named in the environment, prints [`IMPOSTOR_READY`] and
/// serves until killed (at most a minute).
#[tokio::test]
#[ignore = "helper run as another uid by the impostor tests"]
async fn impostor_helper_serve() {
    let Ok(endpoint) = std::env::var(IMPOSTOR_ENDPOINT_VAR) else {
        return;
    };
    let server = Server::bind(
        &IpcConfig::with_endpoint(&endpoint),
        TrustServer::new(TrustImpl),
    )
    .expect("impostor bind");
    tokio::spawn(server.serve());
    println!("{IMPOSTOR_READY} uid={} pid={}", euid(), std::process::id());
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// A server process running as [`NOBODY`]; killed when dropped.
struct Impostor {
    child: Child,
}

impl Impostor {
    /// Starts the helper as [`NOBODY`] serving at `endpoint` and waits until it serves.
    /// `None` (with the reason printed) when this system cannot run it.
    fn start(endpoint: &Path) -> Option<Impostor> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().expect("test binary path");
        let spawned = Command::new(exe)
            .args([
                "--exact",
                &support::test_name(module_path!(), "impostor_helper_serve"),
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(IMPOSTOR_ENDPOINT_VAR, endpoint)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                eprintln!("skipped: cannot run a process as uid {NOBODY}: {error}");
                return None;
            }
        };
        let stdout = child.stdout.take().expect("piped");
        let (ready, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(IMPOSTOR_READY) {
                    let _ = ready.send(line);
                }
            }
        });
        let impostor = Impostor { child };
        match lines.recv_timeout(PATIENCE) {
            Ok(line) => {
                let expected = format!("uid={NOBODY} pid={}", impostor.child.id());
                assert!(line.contains(&expected), "{line}");
                Some(impostor)
            }
            Err(_) => {
                let mut impostor = impostor;
                let _ = impostor.child.kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = impostor.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("the impostor did not start serving: {stderr}");
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Impostor::start`] off the async workers.
async fn start_impostor(endpoint: &Path) -> Option<Impostor> {
    let endpoint = endpoint.to_owned();
    tokio::task::spawn_blocking(move || Impostor::start(&endpoint))
        .await
        .expect("impostor start")
}

/// A directory tree for an impostor: a root-owned temporary directory others may
/// traverse (0755).
fn impostor_tree() -> Option<tempfile::TempDir> {
    if euid() != 0 {
        eprintln!("skipped: needs root to run a server as uid {NOBODY}");
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    chmod(tmp.path(), 0o755);
    Some(tmp)
}

/// The impostor serves from a shared directory that passes every directory check
/// (root's, world-writable with the sticky bit, like `/tmp`): only the server's
/// credentials give it away.
#[tokio::test]
async fn an_impostor_server_in_a_sticky_shared_directory_is_refused_naming_its_uid() {
    let Some(tmp) = impostor_tree() else { return };
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    chmod(&shared, 0o1777);
    let endpoint = shared.join("procmond.sock");
    let Some(impostor) = start_impostor(&endpoint).await else {
        return;
    };

    let result = TrustClient::connect(&config(&endpoint)).await;
    let reason = denied(result, &endpoint);
    let expected = format!(
        "server process uid={NOBODY} gid={NOBODY} pid={}",
        impostor.pid()
    );
    assert!(
        reason.starts_with(&expected),
        "names the impostor's uid and pid: {reason}"
    );

    // It really serves: a client that trusts uid 65534 talks to it.
    let trusting = PeerPolicy::same_user().allow_uid(NOBODY);
    let client = connect_with(&endpoint, trusting).await.expect("trusted");
    assert_eq!(echo(&client).await.expect("echo"), "hello");
}

/// The case: another user creates the socket's directory first and serves in
/// it. The directory's owner gives it away before the client even connects.
#[tokio::test]
async fn an_impostor_in_a_directory_it_owns_is_refused_naming_the_owner() {
    let Some(tmp) = impostor_tree() else { return };
    let planted = tmp.path().join("daemoneye-0");
    std::fs::create_dir(&planted).expect("mkdir");
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).expect("chown");
    chmod(&planted, 0o700);
    let endpoint = planted.join("procmond.sock");
    let Some(_impostor) = start_impostor(&endpoint).await else {
        return;
    };

    let reason = denied(TrustClient::connect(&config(&endpoint)).await, &endpoint);
    assert_eq!(
        reason,
        format!(
            "socket directory {} is owned by uid {NOBODY}, not by this user (uid 0) or root",
            planted.display()
        )
    );
    // A client that trusts uid 65534 accepts both its directory and its server.
    let trusting = PeerPolicy::same_user().allow_uid(NOBODY);
    let client = connect_with(&endpoint, trusting).await.expect("trusted");
    assert_eq!(echo(&client).await.expect("echo"), "hello");
}

/// A symlink on the socket's path owned by another user could be pointed elsewhere by
/// that user at any time: refused, naming the link and its owner.
#[tokio::test]
async fn a_symlink_owned_by_another_user_on_the_path_is_refused() {
    let Some(tmp) = impostor_tree() else { return };
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    chmod(&real, 0o700);
    let endpoint = real.join("trust.sock");
    serve(&endpoint);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).expect("lchown");

    let through_link = link.join("trust.sock");
    let reason = denied(
        TrustClient::connect(&config(&through_link)).await,
        &through_link,
    );
    assert!(
        reason.starts_with(&format!(
            "{} on the socket's path is a symlink owned by uid {NOBODY}",
            link.display()
        )),
        "{reason}"
    );
    TrustClient::connect(&config(&endpoint))
        .await
        .expect("the real path is fine");
}

// ---- (c), (d) directories others could tamper with ----------------------------------

/// Directories `tmp/parent/run`, both 0700, for a socket `tmp/parent/run/trust.sock`.
fn nested(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let parent = tmp.join("parent");
    let run = parent.join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    chmod(&parent, 0o700);
    chmod(&run, 0o700);
    let endpoint = run.join("trust.sock");
    (parent, run, endpoint)
}

#[tokio::test]
async fn a_parent_directory_writable_by_others_without_sticky_bit_is_refused_by_server_and_client()
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let (parent, run, endpoint) = nested(tmp.path());
    let me = euid();
    let expected = format!(
        "directory above the socket's {} (owner uid {me}) is writable by group or others \
         (mode 777) without the sticky bit",
        parent.display()
    );

    // The server refuses to bind below it, and creates nothing there.
    chmod(&parent, 0o777);
    std::fs::remove_dir(&run).expect("rmdir");
    let err = Server::bind(&config(&endpoint), TrustServer::new(TrustImpl)).expect_err("unsafe");
    match &err {
        IpcError::Config {
            field: "endpoint_path",
            reason,
        } => assert_eq!(reason, &expected),
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert!(!run.exists(), "nothing created under an unsafe parent");

    // A server that bound while the parent was private; then the parent is opened up.
    chmod(&parent, 0o700);
    serve(&endpoint);
    TrustClient::connect(&config(&endpoint))
        .await
        .expect("private path");
    chmod(&parent, 0o777);
    let reason = denied(TrustClient::connect(&config(&endpoint)).await, &endpoint);
    assert_eq!(reason, expected);

    // With the sticky bit, as /tmp has, others cannot replace what they do not own.
    chmod(&parent, 0o1777);
    let client = TrustClient::connect(&config(&endpoint))
        .await
        .expect("sticky parent");
    assert_eq!(echo(&client).await.expect("echo"), "hello");
}

#[tokio::test]
async fn a_socket_directory_writable_by_others_without_sticky_bit_is_refused_by_the_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, run, endpoint) = nested(tmp.path());
    serve(&endpoint);
    chmod(&run, 0o777);
    let expected = format!(
        "socket directory {} (owner uid {}) is writable by group or others (mode 777) \
         without the sticky bit",
        run.display(),
        euid()
    );
    let reason = denied(TrustClient::connect(&config(&endpoint)).await, &endpoint);
    assert_eq!(reason, expected);

    // A lazy client's calls are refused the same way, and not retried.
    let lazy = TrustClient::lazy(&config(&endpoint)).expect("lazy");
    match echo(&lazy).await {
        Err(IpcError::PermissionDenied { reason, .. }) => assert_eq!(reason, expected),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }

    // Group-writable is as bad; PeerPolicy::any() turns the checks off.
    chmod(&run, 0o770);
    let reason = denied(TrustClient::connect(&config(&endpoint)).await, &endpoint);
    assert!(reason.contains("mode 770"), "{reason}");
    let client = connect_with(&endpoint, PeerPolicy::any())
        .await
        .expect("checks off");
    assert_eq!(echo(&client).await.expect("echo"), "hello");
}
