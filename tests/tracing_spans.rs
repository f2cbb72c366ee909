//! A tracing span per call, with its context and outcome, and a failed call logged once.
//! Alone in its test binary: tracing caches callsite interest process-wide.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use daemoneye_ipc::{ipc_service, IpcConfig, Server, Status};

/// What the handler does.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    /// Fail with `INVALID_ARGUMENT` instead of answering.
    #[prost(bool, tag = "1")]
    pub fail: bool,
}

/// The service under observation.
#[ipc_service(name = "test.Observed")]
pub trait Observed {
    /// Does what the order says.
    async fn run(&self, order: Order) -> Result<Order, Status>;
}

struct ObservedImpl;

impl Observed for ObservedImpl {
    async fn run(&self, order: Order) -> Result<Order, Status> {
        if order.fail {
            return Err(Status::invalid_argument("asked to fail"));
        }
        Ok(order)
    }
}

/// A `Write` that keeps what is logged.
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

#[tokio::test(flavor = "current_thread")]
async fn each_call_has_a_span_with_its_context_and_outcome() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "spans"));
    let server = Server::bind(&config, ObservedServer::new(ObservedImpl)).expect("bind");
    let serving = tokio::spawn(server.serve());
    let client = ObservedClient::connect(&config).await.expect("connect");
    client
        .run(Order { fail: true })
        .await
        .expect_err("handler error");
    serving.abort();
    let logged = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    let closed = logged
        .lines()
        .find(|line| line.contains("call{") && line.contains("close"))
        .unwrap_or_else(|| panic!("no closed call span in:\n{logged}"));
    for field in [
        "service=\"test.Observed\"",
        "method=\"run\"",
        "correlation_id=",
        "peer_pid=",
        if cfg!(windows) {
            "peer_sid=\"S-1-"
        } else {
            "peer_uid="
        },
        "deadline_us=",
        "code=\"INVALID_ARGUMENT\"",
        "time.busy=",
    ] {
        assert!(closed.contains(field), "{field} missing from {closed}");
    }
    let failures = logged.lines().filter(|l| l.contains("call failed")).count();
    assert_eq!(failures, 1, "a failed call is logged once:\n{logged}");
}
