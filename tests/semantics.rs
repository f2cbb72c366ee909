//! Call semantics: deadlines, cancellation and backpressure in memory (the
//! `daemoneye_ipc::testing` kit: the same codec, handshake and dispatch, no socket), and
//! over real sockets what is about sockets: busy, handshake refusal, graceful shutdown,
//! reconnection, peer credentials, and seed-era bare frames.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use daemoneye_ipc::{ipc_service, Code, IpcConfig, IpcError, Server, Status};
use prost::Message;
use tokio::io::AsyncReadExt;

use crate::support::{self, read_frame, write_frame};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    #[prost(string, tag = "1")]
    pub id: String,
    /// How long the handler takes, in milliseconds.
    #[prost(uint64, tag = "2")]
    pub millis: u64,
}

/// A service whose calls take as long as asked.
#[ipc_service(name = "test.Lab")]
pub trait Lab {
    /// Sleeps `millis`, then echoes the job.
    #[ipc(bare)]
    async fn run(&self, job: Job) -> Result<Job, Status>;
}

/// Another service, to provoke handshake refusals.
#[ipc_service(name = "test.Other")]
pub trait Other {
    /// Never served.
    async fn run(&self, job: Job) -> Result<Job, Status>;
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    finished: AtomicUsize,
    /// Handlers dropped before finishing (cancelled or past their deadline).
    abandoned: AtomicUsize,
    changed: tokio::sync::Notify,
}

struct LabImpl(Arc<Counters>);

struct Abandon<'a>(&'a Counters, bool);
impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::SeqCst);
            self.0.changed.notify_waiters();
        }
    }
}

impl Lab for LabImpl {
    async fn run(&self, job: Job) -> Result<Job, Status> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
        let mut guard = Abandon(&self.0, false);
        tokio::time::sleep(Duration::from_millis(job.millis)).await;
        guard.1 = true;
        self.0.finished.fetch_add(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
        Ok(job)
    }
}

struct Lab1 {
    config: IpcConfig,
    _dir: tempfile::TempDir,
}

fn start_with(edit: impl FnOnce(&mut IpcConfig)) -> Lab1 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "lab"));
    edit(&mut config);
    let server = Server::bind(&config, LabServer::new(LabImpl(Arc::default()))).expect("bind");
    tokio::spawn(server.serve());
    Lab1 { config, _dir: dir }
}

/// The same service served in memory, for what does not depend on a socket.
struct InMemory {
    server: daemoneye_ipc::testing::TestServer<LabServer<LabImpl>>,
    counters: Arc<Counters>,
}

impl InMemory {
    fn start(edit: impl FnOnce(&mut IpcConfig)) -> Self {
        let mut config = IpcConfig::default();
        edit(&mut config);
        let counters = Arc::new(Counters::default());
        let server = daemoneye_ipc::testing::TestServer::new(
            &config,
            LabServer::new(LabImpl(counters.clone())),
        );
        Self { server, counters }
    }

    fn client(&self) -> LabClient {
        LabClient::from_client(self.server.client(LabClient::DESCRIPTOR).expect("client"))
    }
}

/// Waits (at most 5 s) until `condition` holds.
async fn until(counters: &Counters, condition: impl Fn(&Counters) -> bool) {
    let wait = async {
        loop {
            let changed = counters.changed.notified();
            if condition(counters) {
                return;
            }
            changed.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("condition not reached within 5 s");
}

fn job(id: &str, millis: u64) -> Job {
    Job {
        id: id.into(),
        millis,
    }
}

#[tokio::test]
async fn deadline_travels_and_the_server_stops_the_handler() {
    let lab = InMemory::start(|_| {});
    let client = lab.client().with_timeout(Duration::from_millis(100));
    let err = client.run(job("slow", 60_000)).await.expect_err("deadline");
    assert!(
        matches!(err, IpcError::DeadlineExceeded { after_ms: 100 }),
        "{err:?}"
    );
    until(&lab.counters, |c| c.abandoned.load(Ordering::SeqCst) == 1).await;
    assert_eq!(lab.counters.finished.load(Ordering::SeqCst), 0);
    // The connection is still good.
    assert_eq!(client.run(job("quick", 0)).await.expect("ok").id, "quick");
    assert_eq!(client.client().in_flight(), 0);
}

#[tokio::test]
async fn dropping_a_call_cancels_it_on_the_server() {
    let lab = InMemory::start(|_| {});
    let client = lab.client();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.run(job("forever", 3_600_000)).await }
    });
    until(&lab.counters, |c| c.started.load(Ordering::SeqCst) == 1).await;
    call.abort();
    until(&lab.counters, |c| c.abandoned.load(Ordering::SeqCst) == 1).await;
    assert_eq!(client.client().in_flight(), 0);
    assert_eq!(client.run(job("next", 0)).await.expect("ok").id, "next");
}

#[tokio::test]
async fn over_the_connection_limit_is_an_explicit_busy_error() {
    let lab = start_with(|c| c.max_connections = 1);
    let first = LabClient::connect(&lab.config).await.expect("first");
    let err = LabClient::connect(&lab.config).await.expect_err("busy");
    match &err {
        IpcError::Busy { endpoint, reason } => {
            assert_eq!(endpoint, &lab.config.endpoint_path);
            assert!(reason.contains("1 connections"), "{reason}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // The connected client is unaffected.
    assert_eq!(first.run(job("a", 0)).await.expect("ok").id, "a");
}

#[tokio::test]
async fn another_service_is_refused_in_the_handshake() {
    let lab = start_with(|_| {});
    let err = OtherClient::connect(&lab.config)
        .await
        .expect_err("refused");
    match &err {
        IpcError::Handshake { reason, .. } => {
            assert!(
                reason.contains("test.Lab") && reason.contains("test.Other"),
                "{reason}"
            )
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight_and_removes_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "lab"));
    let counters = Arc::new(Counters::default());
    let server = Server::bind(&config, LabServer::new(LabImpl(counters.clone()))).expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let client = LabClient::connect(&config).await.expect("connect");
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.run(job("in-flight", 200)).await }
    });
    until(&counters, |c| c.started.load(Ordering::SeqCst) == 1).await;
    stop.send(()).expect("server running");
    let answer = call
        .await
        .expect("task")
        .expect("the call in flight completes");
    assert_eq!(answer.id, "in-flight");
    serving.await.expect("task").expect("clean shutdown");
    assert!(
        !std::path::Path::new(&config.endpoint_path).exists(),
        "socket removed"
    );
    let err = client.run(job("after", 0)).await.expect_err("server gone");
    assert!(
        matches!(
            err,
            IpcError::ServerNotFound { .. } | IpcError::ConnectionRefused { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_bare_peer_gets_bare_answers() {
    let lab = start_with(|_| {});
    let mut stream = support::connect_raw(&lab.config.endpoint_path).await;
    for id in ["seed-1", "seed-2"] {
        write_frame(&mut stream, &job(id, 0).encode_to_vec()).await;
        let answer = Job::decode(&read_frame(&mut stream).await[..]).expect("a bare Job");
        assert_eq!(answer.id, id);
    }
}

#[tokio::test]
async fn a_non_hello_first_frame_to_a_service_without_bare_entry_is_refused() {
    // `Other` has no bare method: a garbage first frame gets a status, then EOF.
    struct Never;
    impl Other for Never {
        async fn run(&self, job: Job) -> Result<Job, Status> {
            Ok(job)
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "o"));
    let server = Server::bind(&config, OtherServer::new(Never)).expect("bind");
    tokio::spawn(server.serve());
    let mut stream = support::connect_raw(&config.endpoint_path).await;
    write_frame(&mut stream, b"\x0a\x03abc").await;
    let reply = daemoneye_ipc::envelope::Envelope::decode(&read_frame(&mut stream).await[..])
        .expect("an envelope");
    match reply.body {
        Some(daemoneye_ipc::envelope::Body::Status(status)) => {
            assert_eq!(status.code, Code::FailedPrecondition as i32)
        }
        other => panic!("expected a status, got {other:?}"),
    }
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("eof");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_client_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "lab"));
    let serve = |stopped: tokio::sync::oneshot::Receiver<()>| {
        let server = Server::bind(&config, LabServer::new(LabImpl(Arc::default()))).expect("bind");
        tokio::spawn(server.serve_with_shutdown(async {
            let _ = stopped.await;
        }))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let first = serve(stopped);
    let client = LabClient::connect(&config).await.expect("connect");
    assert_eq!(client.run(job("before", 0)).await.expect("ok").id, "before");
    stop.send(()).expect("running");
    first.await.expect("task").expect("stopped");

    let (_stop, stopped) = tokio::sync::oneshot::channel();
    let _second = serve(stopped);
    // Not idempotent, but the old connection is known dead before sending: reconnecting
    // is safe, and the call goes through on the new server.
    assert_eq!(
        client.run(job("after", 0)).await.expect("reconnected").id,
        "after"
    );
}

#[tokio::test]
async fn a_lazy_client_waits_for_a_server_that_starts_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "late"));
    let client = LabClient::lazy(&config)
        .expect("valid config")
        .configure(|c| {
            c.with_retry_policy(daemoneye_ipc::RetryPolicy {
                max_attempts: 100,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
            })
        });
    let call = tokio::spawn(async move { client.run(job("early", 0)).await });
    let server = Server::bind(&config, LabServer::new(LabImpl(Arc::default()))).expect("bind");
    tokio::spawn(server.serve());
    assert_eq!(call.await.expect("task").expect("served").id, "early");
}

#[tokio::test]
async fn a_call_in_flight_when_the_server_dies_is_not_retried_unless_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "lab"));
    config.drain_timeout_ms = 1;
    let counters = Arc::new(Counters::default());
    let server = Server::bind(&config, LabServer::new(LabImpl(counters.clone()))).expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let client = LabClient::connect(&config).await.expect("connect");
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.run(job("doomed", 3_600_000)).await }
    });
    until(&counters, |c| c.started.load(Ordering::SeqCst) == 1).await;
    stop.send(()).expect("running");
    let err = call.await.expect("task").expect_err("server died mid-call");
    assert!(matches!(err, IpcError::PeerClosed), "{err:?}");
    until(&counters, |c| c.abandoned.load(Ordering::SeqCst) == 1).await;
    assert_eq!(counters.started.load(Ordering::SeqCst), 1, "never re-sent");
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_fails_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "none"));
    let client = LabClient::lazy(&config).expect("valid").configure(|c| {
        c.with_retry_policy(daemoneye_ipc::RetryPolicy::never())
            .with_circuit_breaker(daemoneye_ipc::BreakerConfig {
                failure_threshold: 3,
                open_for: Duration::from_secs(3600),
            })
    });
    for _ in 0..3 {
        let err = client.run(job("x", 0)).await.expect_err("no server");
        assert!(matches!(err, IpcError::ServerNotFound { .. }), "{err:?}");
    }
    let err = client.run(job("x", 0)).await.expect_err("open");
    assert!(matches!(err, IpcError::CircuitOpen { .. }), "{err:?}");
    assert!(matches!(
        client.client().circuit_state(),
        Some(daemoneye_ipc::resilience::BreakerState::Open { .. })
    ));
}

/// Tells callers who they are.
#[ipc_service(name = "test.Who")]
pub trait Who {
    /// The caller's uid, as the server saw it, in `millis`.
    async fn who(&self) -> Result<Job, Status>;
}

struct WhoImpl;
impl Who for WhoImpl {
    async fn who(&self) -> Result<Job, Status> {
        let caller = daemoneye_ipc::peer::caller().ok_or_else(|| Status::internal("no caller"))?;
        Ok(Job {
            id: caller.to_string(),
            millis: u64::from(caller.uid.unwrap_or(u32::MAX)),
        })
    }
}

#[tokio::test]
async fn handlers_see_the_callers_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "who"));
    let server = Server::bind(&config, WhoServer::new(WhoImpl)).expect("bind");
    tokio::spawn(server.serve());
    let client = WhoClient::connect(&config).await.expect("connect");
    let me = client.who().await.expect("who");
    #[cfg(unix)]
    {
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(me.millis, u64::from(uid));
    }
    #[cfg(windows)]
    assert!(me.id.contains("sid=S-1-"), "{}", me.id);
    assert!(
        me.id.contains(&format!("pid={}", std::process::id())),
        "{}",
        me.id
    );
}

#[tokio::test]
async fn a_peer_outside_the_policy_is_refused_before_any_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "who"));
    // Allow only a user that is not us (nor root, SYSTEM or Administrators).
    #[cfg(unix)]
    let policy = {
        // SAFETY: geteuid cannot fail.
        let stranger = unsafe { libc::geteuid() }.wrapping_add(12345).max(1);
        daemoneye_ipc::PeerPolicy::only_listed().allow_uid(stranger)
    };
    #[cfg(windows)]
    let policy = daemoneye_ipc::PeerPolicy::only_listed().allow_sid("S-1-5-21-1-2-3-4242");
    let server = Server::bind(&config, WhoServer::new(WhoImpl))
        .expect("bind")
        .with_peer_policy(policy);
    tokio::spawn(server.serve());
    let err = WhoClient::connect(&config).await.expect_err("refused");
    match &err {
        IpcError::PermissionDenied { endpoint, .. } => assert_eq!(endpoint, &config.endpoint_path),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_bounds_handlers_even_when_the_client_allows_more() {
    let lab = InMemory::start(|c| c.handler_timeout_ms = 50);
    let client = lab.client().with_timeout(Duration::from_secs(30));
    let err = client
        .run(job("long", 60_000))
        .await
        .expect_err("server limit");
    let status = err.status().expect("a status from the server");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    until(&lab.counters, |c| c.abandoned.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn a_full_connection_is_not_read_until_a_call_finishes() {
    // Two calls at once per connection: the third waits for a slot (backpressure), it is
    // not refused, and all three are answered.
    let lab = InMemory::start(|c| c.max_in_flight = 2);
    let client = lab.client();
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.run(job(&format!("bp-{i}"), 500)).await })
        })
        .collect();
    until(&lab.counters, |c| c.started.load(Ordering::SeqCst) == 2).await;
    // While two run, the third has not been read.
    assert_eq!(lab.counters.started.load(Ordering::SeqCst), 2);
    assert_eq!(lab.counters.finished.load(Ordering::SeqCst), 0);
    for call in calls {
        call.await.expect("task").expect("answered");
    }
    assert_eq!(lab.counters.started.load(Ordering::SeqCst), 3);
}
