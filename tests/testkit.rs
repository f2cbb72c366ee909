//! The in-memory test kit (`daemoneye_ipc::testing`): each injected fault gives the
//! client-side error it documents; an idempotent call is retried after a dropped
//! connection and succeeds, a non-idempotent one is not retried.

use std::time::Duration;

use daemoneye_ipc::{
    ipc_service,
    testing::{Fault, TestServer},
    IpcConfig, IpcError, Status,
};

/// A number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    /// The value.
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// The service under test.
#[ipc_service(name = "test.Kit")]
pub trait Kit {
    /// Doubles: safe to run twice.
    #[ipc(idempotent)]
    async fn double(&self, req: Number) -> Result<Number, Status>;
    /// Records: not safe to run twice.
    async fn record(&self, req: Number) -> Result<Number, Status>;
}

#[derive(Default)]
struct KitImpl {
    recorded: std::sync::atomic::AtomicU64,
}

impl Kit for KitImpl {
    async fn double(&self, req: Number) -> Result<Number, Status> {
        Ok(Number {
            value: req.value * 2,
        })
    }
    async fn record(&self, req: Number) -> Result<Number, Status> {
        self.recorded
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(req)
    }
}

fn setup() -> (TestServer<KitServer<KitImpl>>, KitClient) {
    let config = IpcConfig {
        call_timeout_ms: 2_000,
        ..IpcConfig::default()
    };
    let server = TestServer::new(&config, KitServer::new(KitImpl::default()));
    let client = KitClient::from_client(server.client(KitClient::DESCRIPTOR).expect("client"));
    (server, client)
}

fn n(value: u64) -> Number {
    Number { value }
}

#[tokio::test]
async fn a_healthy_in_memory_call_goes_through_the_real_handshake_and_dispatch() {
    let (server, client) = setup();
    assert_eq!(client.double(n(21)).await.expect("answer").value, 42);
    assert_eq!(server.connections(), 1);
    let report = server.metrics().report();
    let double = report
        .methods
        .iter()
        .find(|m| m.method == "double")
        .expect("per-method counters");
    assert_eq!(double.by_code.get("OK"), Some(&1));
}

#[tokio::test]
async fn an_idempotent_call_is_retried_after_a_dropped_connection() {
    let (server, client) = setup();
    server.inject(Fault::DropAfter(2)); // the request (frame 2) left; no answer comes
    assert_eq!(client.double(n(4)).await.expect("retried").value, 8);
    assert_eq!(server.connections(), 2, "one retry on a new connection");
}

#[tokio::test]
async fn a_non_idempotent_call_is_not_retried_after_a_dropped_connection() {
    let (server, client) = setup();
    server.inject(Fault::DropAfter(2));
    let error = client.record(n(1)).await.expect_err("not retried");
    assert!(matches!(error, IpcError::PeerClosed), "{error:?}");
    assert_eq!(server.connections(), 1);
    // The next call opens a healthy connection.
    assert_eq!(client.record(n(2)).await.expect("healthy").value, 2);
}

#[tokio::test]
async fn a_flipped_byte_fails_the_crc() {
    let (server, client) = setup();
    server.inject(Fault::Corrupt(2));
    let error = client.record(n(1)).await.expect_err("corrupt answer");
    assert!(matches!(error, IpcError::CrcMismatch { .. }), "{error:?}");
}

#[tokio::test]
async fn a_truncated_frame_is_peer_closed() {
    let (server, client) = setup();
    server.inject(Fault::Truncate(2));
    let error = client.record(n(1)).await.expect_err("truncated answer");
    assert!(matches!(error, IpcError::PeerClosed), "{error:?}");
}

#[tokio::test]
async fn a_stalled_reader_ends_the_call_at_its_deadline() {
    let (server, client) = setup();
    server.inject(Fault::StallAfter(1));
    let client = client.with_timeout(Duration::from_millis(200));
    let error = client.record(n(1)).await.expect_err("no answer arrives");
    assert!(
        matches!(error, IpcError::DeadlineExceeded { .. }),
        "{error:?}"
    );
}

/// The client's deadlines share one timer per connection, set no further ahead than
/// the configured call timeout: a handle whose timeout is longer still waits its own
/// whole timeout, and one whose timeout is shorter is not held up by the others.
#[tokio::test]
async fn deadlines_longer_and_shorter_than_the_configured_timeout_both_hold() {
    let config = IpcConfig {
        call_timeout_ms: 1_000,
        ..IpcConfig::default()
    };
    let server = TestServer::new(&config, KitServer::new(KitImpl::default()));
    let client = KitClient::from_client(server.client(KitClient::DESCRIPTOR).expect("client"));
    server.inject(Fault::StallAfter(1)); // the hello's answer, then nothing
    let long = client.clone().with_timeout(Duration::from_millis(1_300));
    let short = client.clone().with_timeout(Duration::from_millis(30));
    let started = std::time::Instant::now();
    let (long, short) = tokio::join!(long.record(n(1)), async {
        // After the long call is waiting, so that the short deadline comes before the
        // timer the long one left.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let error = short.record(n(2)).await.expect_err("no answer arrives");
        (error, started.elapsed())
    });
    let long = long.expect_err("no answer arrives");
    assert!(
        matches!(long, IpcError::DeadlineExceeded { after_ms: 1_300 }),
        "{long:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1_300),
        "ended early: {:?}",
        started.elapsed()
    );
    let (short, at) = short;
    assert!(
        matches!(short, IpcError::DeadlineExceeded { after_ms: 30 }),
        "{short:?}"
    );
    assert!(at >= Duration::from_millis(50), "ended early: {at:?}");
    // Had the short deadline not moved the timer, it would end with the timer's first
    // firing, a whole configured timeout (1 s) after the connection opened.
    assert!(
        at < Duration::from_millis(1_000),
        "held up by the timer: {at:?}"
    );
}

#[tokio::test]
async fn a_delayed_frame_still_arrives() {
    let (server, client) = setup();
    server.inject(Fault::Delay(Duration::from_millis(50)));
    let started = tokio::time::Instant::now();
    assert_eq!(client.double(n(1)).await.expect("late but there").value, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "two frames, each delayed"
    );
}

#[tokio::test]
async fn a_failed_handshake_answer_is_a_connect_error() {
    let (server, client) = setup();
    server.inject(Fault::Corrupt(1)); // the hello ack
    let client = client.configure(|c| c.with_retry_policy(daemoneye_ipc::RetryPolicy::never()));
    let error = client.double(n(1)).await.expect_err("handshake broken");
    assert!(matches!(error, IpcError::CrcMismatch { .. }), "{error:?}");
}
