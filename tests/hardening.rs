//! What a hostile local peer found, each over a real Unix socket: connections that went
//! idle after a call and were never closed, a status too large for a frame, a client
//! that never reads, a reused correlation id, a request crossing `GoAway`, a slow hello
//! over the connection limit, and unbounded logging of refused peers.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use daemoneye_ipc::{
    envelope::{pb, Body, Envelope, HELLO_MAGIC, PROTOCOL_VERSION},
    ipc_service, Code, IpcConfig, IpcError, PeerPolicy, Server, ServerMetrics, Status,
};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
};

use crate::support::{self, frame, read_envelope, write_envelope, RawStream};

/// What a call asks the handler to do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    /// Handler delay before answering, in microseconds.
    #[prost(uint64, tag = "1")]
    pub micros: u64,
    /// Size of the answer's `blob`, in bytes.
    #[prost(uint64, tag = "2")]
    pub answer_bytes: u64,
    /// When non-zero: fail with a status message of this many bytes.
    #[prost(uint64, tag = "3")]
    pub status_bytes: u64,
}

/// The answer: `blob` of the asked size.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {
    /// Filler bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub blob: Vec<u8>,
}

/// The service under attack.
#[ipc_service(name = "test.Hardening")]
pub trait Target {
    /// Does what the job says.
    async fn work(&self, job: Job) -> Result<Done, Status>;
}

struct TargetImpl {
    started: Arc<AtomicUsize>,
}

impl Target for TargetImpl {
    async fn work(&self, job: Job) -> Result<Done, Status> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if job.micros > 0 {
            tokio::time::sleep(Duration::from_micros(job.micros)).await;
        }
        if job.status_bytes > 0 {
            return Err(Status::invalid_argument(
                "x".repeat(usize::try_from(job.status_bytes).unwrap_or(0)),
            ));
        }
        Ok(Done {
            blob: vec![7; usize::try_from(job.answer_bytes).unwrap_or(0)],
        })
    }
}

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);

struct Harness {
    config: IpcConfig,
    started: Arc<AtomicUsize>,
    metrics: Arc<ServerMetrics>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<Result<(), IpcError>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(edit: impl FnOnce(&mut IpcConfig)) -> Self {
        Self::start_with(edit, PeerPolicy::default())
    }

    fn start_with(edit: impl FnOnce(&mut IpcConfig), policy: PeerPolicy) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config =
            IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "h"));
        edit(&mut config);
        let started = Arc::new(AtomicUsize::new(0));
        let server = Server::bind(
            &config,
            TargetServer::new(TargetImpl {
                started: started.clone(),
            }),
        )
        .expect("bind")
        .with_peer_policy(policy);
        let metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_with_shutdown(async {
            let _ = stopped.await;
        }));
        Self {
            config,
            started,
            metrics,
            stop: Some(stop),
            serving: Some(serving),
            _dir: dir,
        }
    }

    async fn raw(&self) -> RawStream {
        support::connect_raw(&self.config.endpoint_path).await
    }

    /// A raw connection that has completed the handshake.
    async fn handshaken(&self) -> RawStream {
        let mut stream = self.raw().await;
        let hello = Envelope::new(
            0,
            Body::Hello(pb::Hello {
                magic: HELLO_MAGIC,
                protocol_version: PROTOCOL_VERSION,
                service: TargetClient::DESCRIPTOR.name.to_owned(),
                schema_hash: TargetClient::DESCRIPTOR.schema_hash,
                max_frame_bytes: 1 << 20,
                methods: Vec::new(),
            }),
        );
        write_envelope(&mut stream, &hello).await;
        let ack = read_envelope(&mut stream).await;
        assert!(
            matches!(ack.body, Some(Body::HelloAck(_))),
            "handshake: {ack:?}"
        );
        stream
    }

    /// Waits (at most `PATIENCE`) until `condition` holds for the server's metrics.
    async fn until(&self, what: &str, condition: impl Fn(&daemoneye_ipc::MetricsSnapshot) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(&self.metrics.snapshot()) {
            assert!(
                Instant::now() < deadline,
                "never reached `{what}`: {:?}",
                self.metrics.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            tokio::time::timeout(PATIENCE, serving)
                .await
                .expect("server stops")
                .expect("server task")
                .expect("clean shutdown");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

fn work_id() -> u32 {
    TargetClient::DESCRIPTOR
        .method_by_name("work")
        .expect("work")
        .id
}

fn request(id: u64, job: &Job) -> Envelope {
    Envelope::new(
        id,
        Body::Request(pb::Request {
            method_id: work_id(),
            timeout_us: 0,
            payload: job.encode_to_vec().into(),
            initial_credit: 0,
        }),
    )
}

/// Reads frames until the server closes the connection (at most `PATIENCE`); returns
/// them.
async fn read_until_closed(stream: &mut RawStream) -> Vec<Envelope> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    let mut envelopes = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        envelopes.push(Envelope::decode(&rest[8..8 + len]).expect("envelope"));
        rest = &rest[8 + len..];
    }
    envelopes
}

/// Issue 11, 1: after a call whose handler awaited, a silent connection is still
/// closed once it has been idle for `read_timeout_ms` (it used to stay open for good,
/// holding a connection slot).
#[tokio::test]
async fn idle_timeout_applies_after_a_call_that_awaited() {
    let harness = Harness::start(|c| c.read_timeout_ms = 300);
    let mut stream = harness.handshaken().await;
    let job = Job {
        micros: 100_000,
        ..Job::default()
    };
    write_envelope(&mut stream, &request(1, &job)).await;
    let answer = read_envelope(&mut stream).await;
    assert!(matches!(answer.body, Some(Body::Response(_))), "{answer:?}");
    // Now silent: the server must close the connection.
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "nothing more is sent: {rest:?}");
    harness
        .until("connection closed", |m| m.connections_open == 0)
        .await;
}

/// A connection with a call in flight is not idle, however long the call takes
/// (handlers are bounded by `handler_timeout_ms`, not by the read timeout).
#[tokio::test]
async fn a_call_in_flight_keeps_the_connection_open() {
    let harness = Harness::start(|c| c.read_timeout_ms = 100);
    let client = TargetClient::connect(&harness.config)
        .await
        .expect("connect");
    let job = Job {
        micros: 600_000,
        ..Job::default()
    };
    client
        .work(job)
        .await
        .expect("answered after 6 read timeouts");
}

/// Calls spaced closer than the read timeout keep one connection open for many read
/// timeouts: the idle timer, armed once per connection, is moved on when it fires
/// early rather than closing an active connection.
#[tokio::test]
async fn regular_calls_keep_the_connection_open_past_the_read_timeout() {
    let harness = Harness::start(|c| c.read_timeout_ms = 100);
    let client = TargetClient::connect(&harness.config)
        .await
        .expect("connect");
    for _ in 0..12 {
        client.work(Job::default()).await.expect("answered");
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let metrics = harness.metrics.snapshot();
    assert_eq!(metrics.connections_total, 1, "{metrics:?}");
    assert_eq!(metrics.connections_open, 1, "{metrics:?}");
    assert_eq!(metrics.protocol_errors, 0, "{metrics:?}");
}

/// Issue 11, 4: a status far larger than a frame is truncated, and the connection
/// goes on answering.
#[tokio::test]
async fn an_oversize_status_is_truncated_and_the_connection_lives_on() {
    let harness = Harness::start(|_| {});
    let client = TargetClient::connect(&harness.config)
        .await
        .expect("connect");
    let job = Job {
        status_bytes: 3_000_000,
        ..Job::default()
    };
    let error = client.work(job).await.expect_err("handler error");
    let IpcError::Status(status) = error else {
        panic!("expected the handler's status, got {error:?}");
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() <= daemoneye_ipc::status::MAX_STATUS_MESSAGE);
    assert!(
        status.message().contains("truncated"),
        "{}",
        status.message()
    );
    let ok = client.work(Job::default()).await;
    assert!(ok.is_ok(), "the next call on the same connection: {ok:?}");
}

/// Issue 11, 5: a client that pipelines requests and never reads is closed at the
/// write timeout, and the server stops running its requests.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_at_the_write_timeout() {
    const SENT: u64 = 20_000;
    let harness = Harness::start(|c| {
        c.write_timeout_ms = 200;
        c.max_in_flight = 8;
    });
    let stream = harness.handshaken().await;
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let job = Job {
        answer_bytes: 64 * 1024,
        ..Job::default()
    };
    // Pipeline until the server stops reading, then closes (the write fails).
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        for id in 1..=SENT {
            let bytes = frame(&request(id, &job).encode_to_vec());
            if write_half.write_all(&bytes).await.is_err() {
                break;
            }
            sent += 1;
        }
        (sent, write_half)
    });
    harness
        .until("connection closed", |m| m.connections_open == 0)
        .await;
    let ran = harness.started.load(Ordering::SeqCst);
    assert!(
        (ran as u64) < SENT / 10,
        "the server ran {ran} of the requests of a peer it could not answer"
    );
    // The peer sees the close: reading ends (after the answers that were written).
    let mut sink = Vec::new();
    let read = tokio::time::timeout(PATIENCE, read_half.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the connection is closed");
    let (sent, _write_half) = tokio::time::timeout(PATIENCE, writer)
        .await
        .expect("writer ends")
        .expect("writer task");
    assert!(sent < SENT, "the server kept reading all {sent} requests");
}

/// Issue 11 (smaller): a reused correlation id is a protocol error; the connection
/// ends with a connection-level status and no id is ever answered twice.
#[tokio::test]
async fn a_reused_correlation_id_gets_one_answer_at_most() {
    let harness = Harness::start(|_| {});
    let mut stream = harness.handshaken().await;
    let slow = Job {
        micros: 300_000,
        ..Job::default()
    };
    write_envelope(&mut stream, &request(5, &slow)).await;
    write_envelope(&mut stream, &request(5, &Job::default())).await;
    let frames = read_until_closed(&mut stream).await;
    let answers_to_5 = frames.iter().filter(|e| e.correlation_id == 5).count();
    assert!(answers_to_5 <= 1, "id 5 answered {answers_to_5} times");
    let closing = frames
        .iter()
        .find(|e| e.correlation_id == 0)
        .expect("a connection-level status says why");
    let Some(Body::Status(status)) = &closing.body else {
        panic!("expected a status, got {closing:?}");
    };
    assert_eq!(status.code, Code::FailedPrecondition as i32);
    assert!(
        status.message.contains("correlation id 5"),
        "{}",
        status.message
    );
    harness
        .until("protocol error counted", |m| m.protocol_errors == 1)
        .await;
}

/// Answers to requests read in one batch leave in one write, but one written that way
/// is not held back while the reader waits for a slot behind slow calls: here the two
/// slow calls take both slots with a fourth request still buffered.
#[tokio::test]
async fn a_batched_answer_is_not_held_behind_slow_calls() {
    let harness = Harness::start(|c| c.max_in_flight = 2);
    let mut stream = harness.handshaken().await;
    let slow = Job {
        micros: 60_000_000,
        ..Job::default()
    };
    let jobs = [
        (1, Job::default()),
        (3, slow.clone()),
        (5, slow),
        (7, Job::default()),
    ];
    let mut batch = Vec::new();
    for (id, job) in &jobs {
        batch.extend(frame(&request(*id, job).encode_to_vec()));
    }
    stream.write_all(&batch).await.expect("write the batch");
    let first = tokio::time::timeout(PATIENCE, read_envelope(&mut stream))
        .await
        .expect("the quick call's answer arrives while the slow calls run");
    assert_eq!(first.correlation_id, 1);
    assert!(matches!(first.body, Some(Body::Response(_))), "{first:?}");
}

/// Issue 11 (smaller): `GoAway` names the last request the server read, so a client
/// knows which of its calls were never read.
#[tokio::test]
async fn go_away_names_the_last_request_read() {
    let mut harness = Harness::start(|_| {});
    let mut stream = harness.handshaken().await;
    let slow = Job {
        micros: 200_000,
        ..Job::default()
    };
    write_envelope(&mut stream, &request(3, &slow)).await;
    write_envelope(&mut stream, &request(7, &slow)).await;
    harness
        .until("two calls running", |m| m.calls_in_flight == 2)
        .await;
    let (_, frames) = tokio::join!(harness.shutdown(), read_until_closed(&mut stream));
    let go_away = frames
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::GoAway(go_away)) => Some(go_away.clone()),
            _ => None,
        })
        .expect("a GoAway");
    assert_eq!(go_away.last_correlation_id, 7);
    let answered: Vec<u64> = frames
        .iter()
        .filter(|e| matches!(e.body, Some(Body::Response(_))))
        .map(|e| e.correlation_id)
        .collect();
    assert_eq!(answered, [3, 7], "calls read before GoAway are answered");
}

/// Issue 11 (smaller): a client over the connection limit gets the busy status even
/// when its hello is slow (it used to be closed without a word after one second).
#[tokio::test]
async fn a_slow_hello_over_the_limit_still_gets_busy() {
    let harness = Harness::start(|c| c.max_connections = 1);
    let _held = harness.handshaken().await;
    harness
        .until("one connection", |m| m.connections_open == 1)
        .await;
    let mut late = harness.raw().await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // no hello yet
    let refusal = read_envelope(&mut late).await;
    let Some(Body::Status(status)) = refusal.body else {
        panic!("expected a status, got {refusal:?}");
    };
    assert_eq!(status.code, Code::ResourceExhausted as i32);
}

/// A `Write` that keeps what is logged, for counting lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 11 (smaller): refused peers cannot fill the log; the first few are logged,
/// the rest counted.
#[tokio::test(flavor = "current_thread")]
async fn refused_peers_do_not_flood_the_log() {
    const CONNECTS: usize = 500;
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Nobody is allowed: every connection is a refused peer.
    let harness = Harness::start_with(|_| {}, PeerPolicy::only_listed());
    for _ in 0..CONNECTS {
        let error = TargetClient::connect(&harness.config)
            .await
            .expect_err("refused");
        assert!(
            matches!(error, IpcError::PermissionDenied { .. }),
            "{error:?}"
        );
    }
    harness
        .until("all refused", |m| m.refused_peer == CONNECTS as u64)
        .await;
    let logged = captured
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let lines = String::from_utf8_lossy(&logged)
        .lines()
        .filter(|line| line.contains("refusing peer"))
        .count();
    assert!(
        (1..=20).contains(&lines),
        "{lines} log lines for {CONNECTS} refused peers"
    );
}
