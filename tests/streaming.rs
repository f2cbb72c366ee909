//! Server streaming over real Unix sockets: order and completeness through the frame
//! limit, credit flow control (a stalled consumer suspends the producer), cancellation
//! by drop, errors mid-stream, a server killed mid-stream, fairness with unary calls on
//! the same connection, oversize items and deadlines.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use daemoneye_ipc::{
    ipc_service, Code, IpcConfig, IpcError, Server, ServerMetrics, ServerStream, Status,
};
use futures_util::StreamExt;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::support;

/// What to stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Produce {
    /// Items to send.
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// Filler bytes in each item.
    #[prost(uint64, tag = "2")]
    pub item_bytes: u64,
    /// When non-zero: fail with `ABORTED` after this many items.
    #[prost(uint64, tag = "3")]
    pub fail_after: u64,
}

/// One item.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    /// Position in the stream, from 0.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Filler.
    #[prost(bytes = "vec", tag = "2")]
    pub blob: Vec<u8>,
}

/// A unary request/answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Echoed.
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// The service under test.
#[ipc_service(name = "test.Streams")]
pub trait Streams {
    /// Sends `count` items, each of `item_bytes` filler bytes.
    async fn produce(&self, req: Produce, tx: ServerStream<Item>) -> Result<(), Status>;
    /// Answers at once.
    async fn ping(&self, req: Ping) -> Result<Ping, Status>;
}

/// What the producers did, observed server-side.
#[derive(Default)]
struct Observed {
    /// Items handed to `send` that it accepted.
    sent: AtomicU64,
    /// A producer was dropped before it finished (cancelled).
    dropped: AtomicBool,
}

struct StreamsImpl(Arc<Observed>);

struct DropFlag<'a>(&'a AtomicBool, bool);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

impl Streams for StreamsImpl {
    async fn produce(&self, req: Produce, mut tx: ServerStream<Item>) -> Result<(), Status> {
        let mut finished = DropFlag(&self.0.dropped, false);
        let blob = vec![0xA5; usize::try_from(req.item_bytes).unwrap_or(0)];
        for seq in 0..req.count {
            if req.fail_after > 0 && seq == req.fail_after {
                finished.1 = true;
                return Err(Status::aborted(format!("failed after {seq} items")));
            }
            tx.send(Item {
                seq,
                blob: blob.clone(),
            })
            .await?;
            self.0.sent.fetch_add(1, Ordering::SeqCst);
        }
        finished.1 = true;
        Ok(())
    }

    async fn ping(&self, req: Ping) -> Result<Ping, Status> {
        Ok(req)
    }
}

const PATIENCE: Duration = Duration::from_secs(20);

struct Harness {
    config: IpcConfig,
    observed: Arc<Observed>,
    metrics: Arc<ServerMetrics>,
    _stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), IpcError>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(edit: impl FnOnce(&mut IpcConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config =
            IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "s"));
        edit(&mut config);
        let observed = Arc::new(Observed::default());
        let server =
            Server::bind(&config, StreamsServer::new(StreamsImpl(observed.clone()))).expect("bind");
        let metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_with_shutdown(async {
            let _ = stopped.await;
        }));
        Self {
            config,
            observed,
            metrics,
            _stop: stop,
            serving,
            _dir: dir,
        }
    }

    async fn client(&self) -> StreamsClient {
        StreamsClient::connect(&self.config).await.expect("connect")
    }

    /// Waits (at most `PATIENCE`) until `condition` holds.
    async fn until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "never reached `{what}`: {:?}",
                self.metrics.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

#[tokio::test]
async fn fifty_thousand_items_arrive_complete_and_in_order() {
    const COUNT: u64 = 50_000;
    let harness = Harness::start(|_| {});
    let client = harness.client().await;
    let mut stream = client
        .produce(Produce {
            count: COUNT,
            item_bytes: 1000,
            fail_after: 0,
        })
        .await
        .expect("stream opens");
    let mut next = 0;
    while let Some(item) = stream.next().await {
        let item = item.expect("every item is Ok");
        assert_eq!(item.seq, next, "in order");
        assert_eq!(item.blob.len(), 1000);
        next += 1;
    }
    assert_eq!(
        next, COUNT,
        "complete: {COUNT} items of 1 KB = 50 MB through 1 MiB frames"
    );
    harness
        .until("stream closed", |h| h.metrics.snapshot().streams_open == 0)
        .await;
    assert_eq!(harness.metrics.snapshot().stream_items_sent, COUNT);
}

#[tokio::test]
async fn a_consumer_that_stops_reading_suspends_the_producer_after_the_window() {
    const WINDOW: u32 = 8;
    let harness = Harness::start(|_| {});
    let config = IpcConfig {
        stream_window: WINDOW,
        ..harness.config.clone()
    };
    let client = StreamsClient::connect(&config).await.expect("connect");
    let mut stream = client
        .produce(Produce {
            count: 10_000,
            item_bytes: 100,
            fail_after: 0,
        })
        .await
        .expect("stream opens");
    let mut taken = 0u64;
    for _ in 0..20 {
        stream.next().await.expect("an item").expect("ok");
        taken += 1;
    }
    // Stop reading: the producer may use what credit it holds, then must wait.
    harness
        .until("producer stalls on credit", |h| {
            h.metrics.snapshot().credit_stalls > 0
                && h.observed.sent.load(Ordering::SeqCst) >= taken
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = harness.observed.sent.load(Ordering::SeqCst);
    assert!(
        sent <= taken + u64::from(WINDOW),
        "the producer ran {} items ahead of a consumer that took {taken}, window {WINDOW}",
        sent - taken
    );
    // Reading again resumes it.
    for _ in 0..100 {
        stream.next().await.expect("an item").expect("ok");
    }
}

#[tokio::test]
async fn dropping_the_stream_stops_the_producer() {
    let harness = Harness::start(|_| {});
    let client = harness.client().await;
    let mut stream = client
        .produce(Produce {
            count: u64::MAX,
            item_bytes: 10,
            fail_after: 0,
        })
        .await
        .expect("stream opens");
    for _ in 0..10 {
        stream.next().await.expect("an item").expect("ok");
    }
    drop(stream);
    harness
        .until("producer dropped", |h| {
            h.observed.dropped.load(Ordering::SeqCst)
        })
        .await;
    harness
        .until("no stream open", |h| {
            let m = h.metrics.snapshot();
            m.streams_open == 0 && m.calls_in_flight == 0
        })
        .await;
    // The connection is still good.
    let pong = client
        .ping(Ping { id: 7 })
        .await
        .expect("unary after cancel");
    assert_eq!(pong.id, 7);
}

#[tokio::test]
async fn an_error_after_five_items_arrives_after_them() {
    let harness = Harness::start(|_| {});
    let client = harness.client().await;
    let stream = client
        .produce(Produce {
            count: 100,
            item_bytes: 10,
            fail_after: 5,
        })
        .await
        .expect("stream opens");
    let all: Vec<Result<Item, IpcError>> = stream.collect().await;
    assert_eq!(all.len(), 6, "5 items, then the status: {all:?}");
    for (seq, item) in all[..5].iter().enumerate() {
        assert_eq!(item.as_ref().expect("ok").seq, seq as u64);
    }
    match &all[5] {
        Err(IpcError::Status(status)) => {
            assert_eq!(status.code(), Code::Aborted);
            assert!(status.message().contains("after 5"), "{status}");
        }
        other => panic!("expected the handler's status last, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversize_item_ends_only_its_stream() {
    let harness = Harness::start(|c| c.max_frame_bytes = 64 * 1024);
    let client = harness.client().await;
    let stream = client
        .produce(Produce {
            count: 3,
            item_bytes: 100 * 1024,
            fail_after: 0,
        })
        .await
        .expect("stream opens");
    let all: Vec<Result<Item, IpcError>> = stream.collect().await;
    match all.as_slice() {
        [Err(IpcError::Status(status))] => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}")
        }
        other => panic!("expected one RESOURCE_EXHAUSTED, got {other:?}"),
    }
    let pong = client
        .ping(Ping { id: 1 })
        .await
        .expect("the connection lives on");
    assert_eq!(pong.id, 1);
}

#[tokio::test]
async fn a_unary_call_completes_while_a_50_mb_stream_is_in_flight() {
    let harness = Harness::start(|_| {});
    let client = harness.client().await;
    // 100 items of 512 KB: 50 MB, read slowly on the same connection.
    let mut stream = client
        .produce(Produce {
            count: 100,
            item_bytes: 512 * 1024,
            fail_after: 0,
        })
        .await
        .expect("stream opens");
    stream.next().await.expect("first item").expect("ok");
    for id in 0..20 {
        let pong = tokio::time::timeout(PATIENCE, client.ping(Ping { id }))
            .await
            .expect("the unary call is not starved")
            .expect("answered");
        assert_eq!(pong.id, id);
        stream.next().await.expect("an item").expect("ok");
    }
    let rest = stream.count().await;
    assert_eq!(rest, 100 - 21, "the stream completes too");
}

#[tokio::test]
async fn the_stream_deadline_bounds_the_whole_stream() {
    let harness = Harness::start(|_| {});
    let client = harness
        .client()
        .await
        .configure(|c| c.with_stream_timeout(Duration::from_millis(300)));
    let mut stream = client
        .produce(Produce {
            count: u64::MAX,
            item_bytes: 10,
            fail_after: 0,
        })
        .await
        .expect("stream opens");
    let last = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(error)) => break error,
            None => panic!("an endless stream cannot end normally"),
        }
    };
    assert!(
        matches!(
            &last,
            IpcError::DeadlineExceeded { .. } | IpcError::Status(_)
        ),
        "{last:?}"
    );
    if let IpcError::Status(status) = &last {
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
    assert!(
        stream.next().await.is_none(),
        "nothing after the last error"
    );
    harness
        .until("producer stopped", |h| {
            h.metrics.snapshot().streams_open == 0
        })
        .await;
}

/// A server process killed mid-stream ends the client's stream with an error.
#[test]
fn a_server_killed_mid_stream_ends_the_stream_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "killed");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            &support::test_name(module_path!(), "helper_serve_streams"),
            "--ignored",
            "--nocapture",
        ])
        .env("STREAMS_HELPER_ENDPOINT", &endpoint)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the server process");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = runtime.block_on(async {
        let config = IpcConfig::with_endpoint(endpoint.as_str());
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            match StreamsClient::connect(&config).await {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(error) => panic!("the helper server never came up: {error}"),
            }
        };
        let mut stream = client
            .produce(Produce {
                count: u64::MAX,
                item_bytes: 100,
                fail_after: 0,
            })
            .await
            .expect("stream opens");
        for _ in 0..50 {
            stream.next().await.expect("an item").expect("ok");
        }
        child.kill().expect("kill the server"); // SIGKILL: no goodbye
        tokio::time::timeout(PATIENCE, async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Some(error),
                    None => return None,
                }
            }
        })
        .await
        .expect("the stream ends, it does not hang")
    });
    let _ = child.wait();
    let error = outcome.expect("the stream ends with an error, not a normal end");
    assert!(
        matches!(error, IpcError::PeerClosed | IpcError::Io(_)),
        "{error:?}"
    );
}

/// Not a test: the server process of
/// [`a_server_killed_mid_stream_ends_the_stream_with_an_error`].
#[test]
#[ignore = "helper run as a child process by a_server_killed_mid_stream_ends_the_stream_with_an_error"]
fn helper_serve_streams() {
    let Some(endpoint) = std::env::var_os("STREAMS_HELPER_ENDPOINT") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = IpcConfig::with_endpoint(endpoint.to_string_lossy());
        let server =
            Server::bind(&config, StreamsServer::new(StreamsImpl(Arc::default()))).expect("bind");
        let _ = server.serve().await;
    });
}
