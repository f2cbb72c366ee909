//! Fault injection over real Unix sockets: broken frames written by hand, idle and
//! vanishing peers, a server restarted under load, a connection flood, ten thousand
//! calls with random deadlines and cancellations, and a peer running as another user.
//!
//! Every case ends by checking that the server still answers a normal call from a
//! fresh generated client ([`assert_healthy`]): a fault may close the connection that
//! carried it, never the server.

mod support;

use std::{
    io::ErrorKind,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use daemoneye_ipc::{
    envelope::{pb, Body, Envelope, HELLO_MAGIC, PROTOCOL_VERSION},
    ipc_service, Code, IpcConfig, IpcError, MetricsSnapshot, Server, ServerMetrics, Status,
};
use prost::Message;
use support::{frame, frame_with_crc, read_envelope, write_envelope, RawStream};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
};

/// A request echoed back; `micros` is how long the handler takes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    /// Chosen by the caller, echoed back.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Handler delay, in microseconds (0: answer at once).
    #[prost(uint64, tag = "2")]
    pub micros: u64,
}

/// The service under fault. No `#[ipc(bare)]` method: a first frame that is not a
/// hello is refused rather than served as a seed-era request.
#[ipc_service(name = "test.Faults")]
pub trait Faulty {
    /// Sleeps `micros`, then echoes the request.
    async fn echo(&self, req: Echo) -> Result<Echo, Status>;
}

/// What the handlers did, with a `Notify` to wait on instead of sleeping.
#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    finished: AtomicUsize,
    /// Handlers dropped before finishing (cancelled or past their deadline).
    abandoned: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Counters {
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

struct FaultyImpl(Arc<Counters>);

/// Counts a handler as abandoned when it is dropped before it finished.
struct Abandon<'a>(&'a Counters, bool);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.bump(&self.0.abandoned);
        }
    }
}

impl Faulty for FaultyImpl {
    async fn echo(&self, req: Echo) -> Result<Echo, Status> {
        self.0.bump(&self.0.started);
        let mut guard = Abandon(&self.0, false);
        if req.micros > 0 {
            tokio::time::sleep(Duration::from_micros(req.micros)).await;
        }
        guard.1 = true;
        self.0.bump(&self.0.finished);
        Ok(req)
    }
}

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(5);
/// Interval between two looks at the server's counters.
const POLL: Duration = Duration::from_millis(2);
/// A handler delay no test waits for: an hour, in microseconds.
const FOREVER_US: u64 = 3_600_000_000;

/// A server running in this process, on a socket in its own temporary directory.
struct Harness {
    config: IpcConfig,
    counters: Arc<Counters>,
    metrics: Arc<ServerMetrics>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<Result<(), IpcError>>>,
    /// Holds the socket (Unix); kept for its lifetime on every platform.
    #[cfg_attr(not(unix), allow(dead_code))]
    dir: tempfile::TempDir,
}

impl Harness {
    fn start(edit: impl FnOnce(&mut IpcConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config =
            IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "faults"));
        edit(&mut config);
        let mut harness = Self {
            config,
            counters: Arc::default(),
            metrics: Arc::default(),
            stop: None,
            serving: None,
            dir,
        };
        harness.serve();
        harness
    }

    /// Binds and serves (again, after [`stop`](Self::stop)), with fresh metrics.
    fn serve(&mut self) {
        let server = Server::bind(
            &self.config,
            FaultyServer::new(FaultyImpl(self.counters.clone())),
        )
        .expect("bind");
        self.metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.serving = Some(tokio::spawn(server.serve_with_shutdown(async {
            let _ = stopped.await;
        })));
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).expect("server running");
        }
        let serving = self.serving.take().expect("server started");
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("server stops within PATIENCE")
            .expect("server task")
            .expect("clean shutdown");
    }

    fn endpoint(&self) -> &str {
        &self.config.endpoint_path
    }

    fn snapshot(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Polls the server's counters (at most `PATIENCE`) until `condition` holds.
    async fn metrics_until(
        &self,
        what: &str,
        condition: impl Fn(&MetricsSnapshot) -> bool,
    ) -> MetricsSnapshot {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let snapshot = self.snapshot();
            if condition(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "server metrics never reached `{what}`: {snapshot:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (at most `PATIENCE`) until the handler counters satisfy `condition`.
    async fn handlers_until(&self, condition: impl Fn(&Counters) -> bool) {
        let counters = &*self.counters;
        let wait = async {
            loop {
                let changed = counters.changed.notified();
                if condition(counters) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("handler condition not reached within PATIENCE");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

/// A normal call from a fresh generated client is answered: the server survived.
async fn assert_healthy(harness: &Harness) {
    let client = tokio::time::timeout(PATIENCE, FaultyClient::connect(&harness.config))
        .await
        .expect("connect in time")
        .expect("a fresh client connects");
    let answer = client
        .echo(Echo {
            id: 4242,
            micros: 0,
        })
        .await
        .expect("a fresh client is served");
    assert_eq!(answer.id, 4242);
    assert_eq!(client.client().in_flight(), 0);
}

fn echo_method() -> u32 {
    FaultyClient::DESCRIPTOR
        .method_by_name("echo")
        .expect("echo is in the descriptor")
        .id
}

// ---- raw frames, by hand ----------------------------------------------------------

/// Connects without a handshake.
async fn raw(harness: &Harness) -> RawStream {
    support::connect_raw(harness.endpoint()).await
}

/// Connects and completes the handshake by hand.
async fn raw_after_handshake(harness: &Harness) -> RawStream {
    let mut stream = raw(harness).await;
    let hello = pb::Hello {
        magic: HELLO_MAGIC,
        protocol_version: PROTOCOL_VERSION,
        service: FaultyClient::DESCRIPTOR.name.to_owned(),
        schema_hash: FaultyClient::DESCRIPTOR.schema_hash,
        max_frame_bytes: 1 << 20,
        methods: Vec::new(),
    };
    write_envelope(&mut stream, &Envelope::new(0, Body::Hello(hello))).await;
    let ack = read_envelope(&mut stream).await;
    assert!(
        matches!(ack.body, Some(Body::HelloAck(_))),
        "handshake: {ack:?}"
    );
    stream
}

fn request(correlation_id: u64, method_id: u32, echo: &Echo) -> Envelope {
    Envelope::new(
        correlation_id,
        Body::Request(pb::Request {
            method_id,
            timeout_us: 0,
            payload: Bytes::from(echo.encode_to_vec()),
            initial_credit: 0,
        }),
    )
}

/// Waits until the server closes `stream`; returns what it sent before closing and how
/// long that took. A reset counts as closed (Linux resets a Unix socket whose peer
/// closed with unread data queued).
async fn expect_closed(stream: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = async {
        match stream.read_to_end(&mut received).await {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => panic!("unexpected read error: {error}"),
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server closes the connection within PATIENCE");
    (received, started.elapsed())
}

/// Sends a sound frame whose envelope breaks the protocol after the handshake; expects
/// one connection-level `FAILED_PRECONDITION` status whose message contains `why`,
/// then the close, and one protocol error counted.
async fn protocol_error_closes(harness: &Harness, bytes: &[u8], why: &str) {
    let before = harness.snapshot().protocol_errors;
    let mut stream = raw_after_handshake(harness).await;
    stream.write_all(bytes).await.expect("write");
    let (received, _) = expect_closed(&mut stream).await;
    assert!(
        received.len() > 8,
        "a status frame is expected, got {received:?}"
    );
    let len = u32::from_le_bytes([received[0], received[1], received[2], received[3]]) as usize;
    let envelope = Envelope::decode(&received[8..8 + len]).expect("an envelope");
    assert_eq!(envelope.correlation_id, 0, "connection-level");
    let Some(Body::Status(status)) = envelope.body else {
        panic!("expected a status, got {envelope:?}");
    };
    assert_eq!(status.code, Code::FailedPrecondition as i32);
    assert!(status.message.contains(why), "{}", status.message);
    harness
        .metrics_until("protocol_errors + 1", |m| m.protocol_errors == before + 1)
        .await;
}

/// Where a broken frame goes: as the connection's first frame, or after the handshake.
#[derive(Clone, Copy, Debug)]
enum When {
    FirstFrame,
    AfterHandshake,
}

async fn connect_for(harness: &Harness, when: When) -> RawStream {
    match when {
        When::FirstFrame => raw(harness).await,
        When::AfterHandshake => raw_after_handshake(harness).await,
    }
}

/// Sends `bytes` at point `when`, expects the server to close without answering, and
/// to count one protocol error.
async fn broken_frame_closes(harness: &Harness, when: When, bytes: &[u8]) -> Duration {
    let before = harness.snapshot().protocol_errors;
    let mut stream = connect_for(harness, when).await;
    stream.write_all(bytes).await.expect("write");
    let (received, took) = expect_closed(&mut stream).await;
    assert!(
        received.is_empty(),
        "{when:?}: no answer expected, got {received:?}"
    );
    harness
        .metrics_until("protocol_errors + 1", |m| m.protocol_errors == before + 1)
        .await;
    took
}

// ---- 1. zero-length frame ---------------------------------------------------------

#[tokio::test]
async fn zero_length_frame_closes_the_connection() {
    let harness = Harness::start(|_| {});
    for when in [When::FirstFrame, When::AfterHandshake] {
        broken_frame_closes(&harness, when, &[0u8; 8]).await;
        assert_healthy(&harness).await;
    }
}

// ---- 2. 4 GiB - 1 length header ---------------------------------------------------

/// A field of `/proc/self/status` (e.g. `VmPeak`), in kB.
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn huge_length_header_closes_promptly_without_allocating() {
    let harness = Harness::start(|_| {});
    for when in [When::FirstFrame, When::AfterHandshake] {
        // Peak virtual size: a 4 GiB buffer would show even if its pages were never
        // touched (RSS would not). Other tests in this process move it by megabytes.
        let peak_before = proc_status_kb("VmPeak");
        let mut header = Vec::new();
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(b"only a few body bytes");
        let took = broken_frame_closes(&harness, when, &header).await;
        // The read and accept timeouts are seconds: closing within one second means the
        // server judged the header alone and did not wait for 4 GiB of body.
        assert!(
            took < Duration::from_secs(1),
            "{when:?}: closed after {took:?}"
        );
        if let (Some(before), Some(after)) = (peak_before, proc_status_kb("VmPeak")) {
            let grown_mib = after.saturating_sub(before) / 1024;
            assert!(grown_mib < 2048, "{when:?}: VmPeak grew by {grown_mib} MiB");
        }
        assert_healthy(&harness).await;
    }
}

// ---- 3. CRC mismatch, with a good connection alongside --------------------------

#[tokio::test]
async fn crc_mismatch_closes_only_that_connection() {
    let harness = Harness::start(|_| {});
    let good = FaultyClient::connect(&harness.config)
        .await
        .expect("connect");
    // A call in flight on the good connection while the other one breaks.
    let in_flight = tokio::spawn({
        let good = good.clone();
        async move {
            good.echo(Echo {
                id: 1,
                micros: 50_000,
            })
            .await
        }
    });
    harness
        .handlers_until(|c| c.started.load(Ordering::SeqCst) == 1)
        .await;
    let connections = harness.snapshot().connections_total;

    let payload = request(1, echo_method(), &Echo { id: 9, micros: 0 }).encode_to_vec();
    let wrong_crc = crc32c::crc32c(&payload) ^ 0x0100_0000;
    broken_frame_closes(
        &harness,
        When::AfterHandshake,
        &frame_with_crc(&payload, wrong_crc),
    )
    .await;
    assert_eq!(
        harness.counters.started.load(Ordering::SeqCst),
        1,
        "bad frame never ran"
    );

    let answer = in_flight
        .await
        .expect("task")
        .expect("the good call completes");
    assert_eq!(answer.id, 1);
    assert_eq!(
        good.echo(Echo { id: 2, micros: 0 }).await.expect("ok").id,
        2
    );
    assert_eq!(
        harness.snapshot().connections_total,
        connections + 1,
        "the good client kept its connection (only the broken one was added)"
    );
    assert_healthy(&harness).await;
}

// ---- 4. truncated frame, then the peer shuts down -------------------------------

#[cfg(unix)] // a named pipe has no half-close: `shutdown` only flushes
#[tokio::test]
async fn truncated_frame_then_shutdown_is_a_clean_close() {
    let harness = Harness::start(|_| {});
    for when in [When::FirstFrame, When::AfterHandshake] {
        let before = harness.snapshot();
        // interprocess's `shutdown` is a no-op: half-close through tokio's own type.
        let RawStream::UdSocket(stream) = connect_for(&harness, when).await;
        let stream = std::os::fd::OwnedFd::try_from(stream).expect("the socket's descriptor");
        let stream = std::os::unix::net::UnixStream::from(stream);
        stream.set_nonblocking(true).expect("nonblocking");
        let mut stream = tokio::net::UnixStream::from_std(stream).expect("tokio stream");
        let mut partial = Vec::new();
        partial.extend_from_slice(&100u32.to_le_bytes());
        partial.extend_from_slice(&0u32.to_le_bytes());
        partial.extend_from_slice(&[0xAB; 10]);
        stream.write_all(&partial).await.expect("write");
        stream.shutdown().await.expect("shutdown our side");
        let (received, _) = expect_closed(&mut stream).await;
        assert!(received.is_empty(), "{when:?}: {received:?}");
        harness
            .metrics_until("connection gone", |m| m.connections_open == 0)
            .await;
        // A peer hanging up mid-frame is not a protocol violation by a live peer.
        assert_eq!(
            harness.snapshot().protocol_errors,
            before.protocol_errors,
            "{when:?}"
        );
        assert_healthy(&harness).await;
    }
}

// ---- 5. garbage protobuf in a well-formed frame ---------------------------------

#[tokio::test]
async fn garbage_envelope_after_the_handshake_closes_the_connection() {
    let harness = Harness::start(|_| {});
    // Field 1 with wire type 7, which does not exist: not decodable as any message.
    let garbage = [0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x02, 0x03];
    assert!(Envelope::decode(&garbage[..]).is_err(), "really garbage");
    protocol_error_closes(&harness, &frame(&garbage), "decode").await;
    assert_healthy(&harness).await;

    // A decodable envelope with no body is just as unexpected from a client.
    let empty = Envelope {
        correlation_id: 5,
        body: None,
    }
    .encode_to_vec();
    protocol_error_closes(&harness, &frame(&empty), "no body").await;
    assert_eq!(
        harness.counters.started.load(Ordering::SeqCst),
        1,
        "only the health check"
    );
    assert_healthy(&harness).await;
}

// ---- 6. unknown method id -------------------------------------------------------

#[tokio::test]
async fn unknown_method_is_unimplemented_and_the_connection_lives_on() {
    let harness = Harness::start(|_| {});
    let mut stream = raw_after_handshake(&harness).await;
    write_envelope(&mut stream, &request(77, 999, &Echo { id: 1, micros: 0 })).await;
    let answer = read_envelope(&mut stream).await;
    assert_eq!(answer.correlation_id, 77);
    match answer.body {
        Some(Body::Status(status)) => {
            assert_eq!(status.code, Code::Unimplemented as i32, "{status:?}");
            assert!(status.message.contains("999"), "{status:?}");
        }
        other => panic!("expected a status, got {other:?}"),
    }
    // The same connection then serves a valid request.
    let echo = Echo { id: 78, micros: 0 };
    write_envelope(&mut stream, &request(78, echo_method(), &echo)).await;
    let answer = read_envelope(&mut stream).await;
    assert_eq!(answer.correlation_id, 78);
    match answer.body {
        Some(Body::Response(response)) => {
            assert_eq!(Echo::decode(response.payload).expect("an Echo"), echo)
        }
        other => panic!("expected a response, got {other:?}"),
    }
    assert_eq!(harness.snapshot().protocol_errors, 0);
    assert_healthy(&harness).await;
}

// ---- 7. idle peer ---------------------------------------------------------------

#[tokio::test]
async fn idle_peer_is_closed_after_the_read_timeout() {
    let harness = Harness::start(|c| c.read_timeout_ms = 200);
    let mut stream = raw_after_handshake(&harness).await;
    let (received, took) = expect_closed(&mut stream).await;
    assert!(received.is_empty(), "{received:?}");
    // Not before the timeout could have run (generously: half of it).
    assert!(
        took >= Duration::from_millis(100),
        "closed after only {took:?}"
    );
    harness
        .metrics_until("protocol_errors == 1", |m| m.protocol_errors == 1)
        .await;
    assert_healthy(&harness).await;
}

// ---- 8. client gone mid-call ----------------------------------------------------

#[tokio::test]
async fn a_peer_that_vanishes_mid_call_has_its_handler_cancelled() {
    let harness = Harness::start(|_| {});
    let mut stream = raw_after_handshake(&harness).await;
    let slow = Echo {
        id: 1,
        micros: FOREVER_US,
    };
    write_envelope(&mut stream, &request(1, echo_method(), &slow)).await;
    harness
        .handlers_until(|c| c.started.load(Ordering::SeqCst) == 1)
        .await;
    assert_eq!(harness.snapshot().calls_in_flight, 1);
    drop(stream);
    harness
        .handlers_until(|c| c.abandoned.load(Ordering::SeqCst) == 1)
        .await;
    let after = harness
        .metrics_until("handler cancelled", |m| {
            m.calls_in_flight == 0 && m.calls_cancelled == 1 && m.connections_open == 0
        })
        .await;
    assert_eq!(
        after.protocol_errors, 0,
        "hanging up is not a protocol error"
    );
    assert_eq!(harness.counters.finished.load(Ordering::SeqCst), 0);
    assert_healthy(&harness).await;
}

// ---- 9. server restarted under concurrent callers --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_carry_on_across_a_server_restart() {
    const CALLERS: u64 = 8;
    let mut harness = Harness::start(|_| {});
    let client = FaultyClient::connect(&harness.config)
        .await
        .expect("connect");

    // Calls in flight when the server is told to stop are finished, not dropped.
    let in_flight: Vec<_> = (0..CALLERS)
        .map(|id| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .echo(Echo {
                        id,
                        micros: 100_000,
                    })
                    .await
            })
        })
        .collect();
    harness
        .handlers_until(|c| c.started.load(Ordering::SeqCst) == CALLERS as usize)
        .await;
    harness.stop().await;
    for (id, call) in (0..CALLERS).zip(in_flight) {
        let answer = call.await.expect("task").expect("drained, not dropped");
        assert_eq!(answer.id, id);
    }
    assert!(!std::path::Path::new(harness.endpoint()).exists());

    // Same handle, new server: every caller gets through, over one new connection.
    harness.serve();
    let after: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                for round in 0..5 {
                    let id = 1000 + caller * 10 + round;
                    let answer = client.echo(Echo { id, micros: 0 }).await?;
                    assert_eq!(answer.id, id);
                }
                Ok::<_, IpcError>(())
            })
        })
        .collect();
    for call in after {
        call.await.expect("task").expect("served after the restart");
    }
    let metrics = harness.snapshot();
    assert_eq!(
        metrics.connections_total, 1,
        "callers shared one reconnection"
    );
    assert_eq!(metrics.calls_total, CALLERS * 5);
    assert_eq!(client.client().in_flight(), 0);
    assert_healthy(&harness).await;
}

// ---- 10. connection flood over the limit -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_gets_explicit_busy_errors() {
    const ATTEMPTS: usize = 200;
    const LIMIT: usize = 16;
    let harness = Harness::start(|c| c.max_connections = LIMIT);
    let attempts: Vec<_> = (0..ATTEMPTS)
        .map(|_| {
            let config = harness.config.clone();
            tokio::spawn(async move { FaultyClient::connect(&config).await })
        })
        .collect();
    let mut admitted = Vec::new();
    let (mut busy, mut closed) = (0, 0);
    let mut other = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(client) => admitted.push(client),
            Err(IpcError::Busy { endpoint, reason }) => {
                assert_eq!(endpoint, harness.config.endpoint_path);
                assert!(reason.contains("16 connections"), "{reason}");
                busy += 1;
            }
            // Windows (Wine): a refusal beyond the `max_connections` that get a task
            // of their own is written without waiting and the pipe closed at once,
            // which loses the unread status; the client sees the close.
            Err(IpcError::PeerClosed) if cfg!(windows) => closed += 1,
            Err(error) => other.push(error),
        }
    }
    assert!(other.is_empty(), "neither admitted nor busy: {other:?}");
    assert_eq!(admitted.len(), LIMIT);
    assert_eq!(busy + closed, ATTEMPTS - LIMIT);
    assert!(
        busy >= LIMIT,
        "each refusal with a task of its own says why: {busy}"
    );
    let metrics = harness.snapshot();
    assert_eq!(metrics.refused_busy, (ATTEMPTS - LIMIT) as u64);
    assert_eq!(metrics.connections_open, LIMIT as u64);

    // The admitted ones are served.
    for (id, client) in (0u64..).zip(&admitted) {
        assert_eq!(
            client
                .echo(Echo { id, micros: 0 })
                .await
                .expect("served")
                .id,
            id
        );
    }
    drop(admitted);
    harness
        .metrics_until("all connections closed", |m| m.connections_open == 0)
        .await;
    assert_healthy(&harness).await;
}

// ---- 11. ten thousand calls, random deadlines and cancellations ------------------

/// A server that answers every handshake and then never reads: the client's own
/// writes and its writer task's stop at the socket's buffer, the write timeout ends the
/// connection, and every call ends with an error (none hangs, whether its frame was
/// written by its caller, by the writer task, or never).
#[tokio::test]
async fn calls_to_a_server_that_stops_reading_end_at_the_write_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig {
        write_timeout_ms: 200,
        call_timeout_ms: 3_000,
        ..IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "deaf"))
    };
    let listener = daemoneye_ipc::transport::bind(&config).expect("bind");
    let deaf = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(mut stream) = daemoneye_ipc::transport::accept(&listener).await {
            let hello = read_envelope(&mut stream).await;
            let Some(Body::Hello(hello)) = hello.body else {
                panic!("expected a hello, got {hello:?}");
            };
            let ack = pb::HelloAck {
                protocol_version: PROTOCOL_VERSION,
                service: hello.service,
                schema_hash: hello.schema_hash,
                max_frame_bytes: 16 << 20,
                max_in_flight: 64,
            };
            write_envelope(&mut stream, &Envelope::new(0, Body::HelloAck(ack))).await;
            held.push(stream); // never read again
        }
    });
    let client = FaultyClient::connect(&config).await.expect("connect");
    let raw = client.client().clone();
    // 64 requests of 60 KB: far more than a socket buffer holds.
    let payload = Bytes::from(vec![0x5a; 60_000]);
    let calls = (0..64).map(|_| {
        let (raw, payload) = (raw.clone(), payload.clone());
        tokio::spawn(async move { raw.call_raw(echo_method(), payload).await })
    });
    let ended = tokio::time::timeout(PATIENCE, futures_util::future::join_all(calls))
        .await
        .expect("every call ends");
    let mut write_timeouts = 0;
    for result in ended {
        let error = result.expect("task").expect_err("nothing is answered");
        if matches!(
            error,
            IpcError::Timeout {
                operation: "write",
                ..
            }
        ) {
            write_timeouts += 1;
        }
    }
    assert!(write_timeouts > 0, "no call saw the write timeout");
    deaf.abort();
}

/// How one call of the storm ended.
#[derive(Debug)]
enum Outcome {
    Answered,
    DeadlineExceeded,
    Dropped,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_with_random_deadlines_and_cancellations() {
    const CALLS: u64 = 10_000;
    const CONNECTIONS: usize = 4;
    const CONCURRENCY: usize = 64;
    let harness = Harness::start(|_| {});
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(
            FaultyClient::connect(&harness.config)
                .await
                .expect("connect"),
        );
    }
    let mut rng = fastrand::Rng::with_seed(0x0DAE_0E7E_5EED);
    let mut planned_drops = 0;
    let mut storm = tokio::task::JoinSet::new();
    let mut outcomes = Vec::with_capacity(CALLS as usize);
    for id in 0..CALLS {
        // Handler 0-3 ms; a quarter of the calls get a 1-3 ms deadline (some shorter
        // than the handler), the rest a generous one; a fifth are dropped at a random
        // point (0-3 ms in), whatever stage they are at.
        let micros = rng.u64(0..=3) * 1000;
        let timeout = if rng.u8(0..4) == 0 {
            Duration::from_millis(rng.u64(1..=3))
        } else {
            PATIENCE
        };
        let drop_after = (rng.u8(0..5) == 0).then(|| Duration::from_micros(rng.u64(0..=3000)));
        planned_drops += u64::from(drop_after.is_some());
        let client = clients[rng.usize(0..CONNECTIONS)]
            .clone()
            .with_timeout(timeout);
        if storm.len() >= CONCURRENCY {
            outcomes.push(storm.join_next().await.expect("a task").expect("task"));
        }
        storm.spawn(async move {
            let call = client.echo(Echo { id, micros });
            let result = match drop_after {
                Some(after) => match tokio::time::timeout(after, call).await {
                    Ok(result) => result,
                    Err(_) => return Outcome::Dropped,
                },
                None => call.await,
            };
            match result {
                Ok(answer) => {
                    assert_eq!(answer, Echo { id, micros }, "answer for call {id}");
                    Outcome::Answered
                }
                Err(IpcError::DeadlineExceeded { .. }) => Outcome::DeadlineExceeded,
                // The server's timer may fire before the client's.
                Err(IpcError::Status(status)) if status.code() == Code::DeadlineExceeded => {
                    Outcome::DeadlineExceeded
                }
                Err(error) => panic!("call {id} failed unexpectedly: {error:?}"),
            }
        });
    }
    while let Some(outcome) = storm.join_next().await {
        outcomes.push(outcome.expect("task"));
    }

    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    let answered = count(|o| matches!(o, Outcome::Answered));
    let deadline = count(|o| matches!(o, Outcome::DeadlineExceeded));
    let dropped = count(|o| matches!(o, Outcome::Dropped));
    println!("answered {answered}, deadline {deadline}, dropped {dropped} of {planned_drops}");
    assert_eq!(answered + deadline + dropped, CALLS);
    assert!(dropped <= planned_drops, "{dropped} > {planned_drops}");
    assert!(answered > CALLS / 2, "answered {answered}");
    assert!(
        deadline > 0 && dropped > 0,
        "deadline {deadline}, dropped {dropped}"
    );

    // Nothing is left in any in-flight table, on either side.
    for client in &clients {
        assert_eq!(client.client().in_flight(), 0);
    }
    let metrics = harness
        .metrics_until("calls_in_flight == 0", |m| m.calls_in_flight == 0)
        .await;
    assert!(metrics.calls_total <= CALLS, "{metrics:?}");
    let completed = metrics.calls_total - metrics.calls_cancelled - metrics.calls_deadline_exceeded;
    assert!(completed >= answered, "{metrics:?}, answered {answered}");
    assert_eq!(metrics.protocol_errors, 0);
    assert_eq!(
        metrics.connections_total, CONNECTIONS as u64,
        "no connection broke under the storm"
    );
    for (id, client) in (0u64..).zip(&clients) {
        assert_eq!(
            client.echo(Echo { id, micros: 0 }).await.expect("ok").id,
            id
        );
    }
    assert_healthy(&harness).await;
}

// ---- 12. a peer running as another user ------------------------------------------

/// Set in the child process of [`a_peer_running_as_another_uid_is_refused`]: the
/// endpoint the helper connects to.
#[cfg(unix)] // uids
const PEER_ENDPOINT_VAR: &str = "DAEMONEYE_FAULTS_PEER_ENDPOINT";
/// The line prefix through which the helper reports its result.
#[cfg(unix)] // uids
const PEER_RESULT: &str = "PEER_RESULT:";
/// The unprivileged uid and gid the child runs as ("nobody" on most distributions).
#[cfg(unix)] // uids
const NOBODY: u32 = 65534;

/// Not a test: run by [`a_peer_running_as_another_uid_is_refused`] in a child process
/// as another user. Connects to the endpoint named in the environment and prints the
/// result.
#[cfg(unix)] // uids
#[tokio::test]
#[ignore = "helper run as another uid by a_peer_running_as_another_uid_is_refused"]
async fn peer_helper_connect_as_another_uid() {
    let Ok(endpoint) = std::env::var(PEER_ENDPOINT_VAR) else {
        return;
    };
    let result = FaultyClient::connect(&IpcConfig::with_endpoint(endpoint)).await;
    let report = match result {
        Ok(_) => "connected".to_owned(),
        Err(IpcError::PermissionDenied { .. }) => "PermissionDenied".to_owned(),
        Err(other) => format!("{other:?}"),
    };
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    println!("{PEER_RESULT} uid={uid} {report}");
}

/// Runs the helper test as `NOBODY` against `endpoint`; `None` when this system cannot
/// switch users. Blocks: run it off the runtime that serves `endpoint`.
#[cfg(unix)] // uids
fn connect_as_nobody(endpoint: &str) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "peer_helper_connect_as_another_uid",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_ENDPOINT_VAR, endpoint)
        .uid(NOBODY)
        .gid(NOBODY)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            println!("skipped: cannot run a process as uid {NOBODY}: {error}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    // libtest prints the test's name on the same line, before the result.
    let line = stdout
        .lines()
        .find_map(|line| line.find(PEER_RESULT).map(|at| &line[at..]));
    let line = line.unwrap_or_else(|| {
        panic!(
            "helper printed no result ({}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Some(line.to_owned())
}

/// Two refusals of a peer running as another user: by the kernel when the socket keeps
/// its owner-only modes (directory 0700, socket 0600), and by the server's default
/// peer policy (same user or root) when those modes are loosened by hand. Both reach
/// the client as `IpcError::PermissionDenied`. Needs root to start the peer under
/// another uid; the policy itself is also tested without root in `semantics.rs`.
#[cfg(unix)] // uids
#[tokio::test]
async fn a_peer_running_as_another_uid_is_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root to run a peer under another uid");
        return;
    }
    let harness = Harness::start(|_| {});
    let expected = format!("{PEER_RESULT} uid={NOBODY} PermissionDenied");

    // Owner-only modes: the kernel refuses before the server sees anything.
    let endpoint = harness.endpoint().to_owned();
    let run_peer = || {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || connect_as_nobody(&endpoint))
    };
    let Some(kernel) = run_peer().await.expect("peer task") else {
        return;
    };
    assert_eq!(kernel, expected);
    assert_eq!(
        harness.snapshot().refused_peer,
        0,
        "never reached the server"
    );

    // Modes opened up: the connection reaches the server, whose policy refuses it.
    use std::os::unix::fs::PermissionsExt;
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    open(harness.dir.path(), 0o755);
    open(std::path::Path::new(harness.endpoint()), 0o666);
    let policy = run_peer()
        .await
        .expect("peer task")
        .expect("ran once already");
    assert_eq!(policy, expected);
    let metrics = harness
        .metrics_until("refused_peer == 1", |m| m.refused_peer == 1)
        .await;
    assert_eq!(metrics.connections_total, 0, "never admitted");
    assert_healthy(&harness).await;
}
