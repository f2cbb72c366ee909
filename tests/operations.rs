//! Operating a server: per-method counters and latency after a known mix of calls, the
//! Prometheus exposition and the built-in health service. (The tracing span per call is
//! tested in `tracing_spans.rs`, alone in its process: tracing caches callsite interest
//! process-wide, which a thread-local test subscriber cannot share with parallel tests.)

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use daemoneye_ipc::{
    envelope::pb,
    health::{HealthClient, ServingStatus},
    ipc_service,
    metrics::Report,
    Code, IpcConfig, IpcError, Server, ServerMetrics, Status,
};
use futures_util::StreamExt;

/// What the handler does.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    /// Sleep this long first, in milliseconds.
    #[prost(uint64, tag = "1")]
    pub sleep_ms: u64,
    /// Fail with `INVALID_ARGUMENT` instead of answering.
    #[prost(bool, tag = "2")]
    pub fail: bool,
    /// Filler, to count request bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub filler: Vec<u8>,
}

/// The answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {
    /// Filler, to count response bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub filler: Vec<u8>,
}

/// The service under observation.
#[ipc_service(name = "test.Observed")]
pub trait Observed {
    /// Does what the order says.
    async fn run(&self, order: Order) -> Result<Done, Status>;
    /// Never called.
    async fn idle(&self, order: Order) -> Result<Done, Status>;
}

struct ObservedImpl;

impl Observed for ObservedImpl {
    async fn run(&self, order: Order) -> Result<Done, Status> {
        if order.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(order.sleep_ms)).await;
        }
        if order.fail {
            return Err(Status::invalid_argument("asked to fail"));
        }
        Ok(Done {
            filler: vec![1; 100],
        })
    }

    async fn idle(&self, _order: Order) -> Result<Done, Status> {
        Ok(Done::default())
    }
}

struct Running {
    config: IpcConfig,
    metrics: Arc<ServerMetrics>,
    health: daemoneye_ipc::health::HealthReporter,
    serving: tokio::task::JoinHandle<Result<(), IpcError>>,
    _dir: tempfile::TempDir,
}

fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "ops"));
    let server = Server::bind(&config, ObservedServer::new(ObservedImpl)).expect("bind");
    let (metrics, health) = (server.metrics(), server.health());
    let serving = tokio::spawn(server.serve());
    Running {
        config,
        metrics,
        health,
        serving,
        _dir: dir,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

fn method<'a>(report: &'a Report, name: &str) -> &'a daemoneye_ipc::metrics::MethodReport {
    report
        .methods
        .iter()
        .find(|m| m.service == "test.Observed" && m.method == name)
        .expect("the method is reported")
}

#[tokio::test]
async fn per_method_counters_match_a_known_mix_of_calls() {
    let server = start();
    let client = ObservedClient::connect(&server.config)
        .await
        .expect("connect");
    let order = |sleep_ms, fail| Order {
        sleep_ms,
        fail,
        filler: vec![0; 50],
    };
    for _ in 0..5 {
        client.run(order(0, false)).await.expect("ok");
    }
    for _ in 0..3 {
        client.run(order(0, true)).await.expect_err("handler error");
    }
    let short = client.clone().with_timeout(Duration::from_millis(50));
    for _ in 0..2 {
        let error = short.run(order(1_000, false)).await.expect_err("deadline");
        assert!(
            matches!(error, IpcError::DeadlineExceeded { .. }),
            "{error:?}"
        );
    }
    // Cancelled: the caller drops the call while the handler sleeps.
    let dropped = tokio::time::timeout(Duration::from_millis(50), client.run(order(5_000, false)));
    assert!(dropped.await.is_err(), "the caller gave up");

    // The deadline calls end on the server too (their deadline travels with them), and
    // the cancelled one when its cancel arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = server.metrics.report();
        if method(&report, "run").finished == 11 || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let run = method(&report, "run");
    assert_eq!(run.started, 11);
    assert_eq!(run.finished, 11);
    assert_eq!(run.in_flight, 0);
    // A call whose client deadline passes ends on the server either by the server's own
    // timer (the deadline travelled with it: DEADLINE_EXCEEDED) or by the client's
    // cancel, whichever comes first: the two deadline calls count under one of the two.
    let count = |code: &str| run.by_code.get(code).copied().unwrap_or(0);
    assert_eq!(count("OK"), 5, "{:?}", run.by_code);
    assert_eq!(count("INVALID_ARGUMENT"), 3, "{:?}", run.by_code);
    assert_eq!(
        count("DEADLINE_EXCEEDED") + count("CANCELLED"),
        3,
        "{:?}",
        run.by_code
    );
    assert!(
        count("CANCELLED") >= 1,
        "the dropped call: {:?}",
        run.by_code
    );
    assert_eq!(
        run.by_code.len(),
        4 - usize::from(count("DEADLINE_EXCEEDED") == 0)
    );
    assert_eq!(run.latency_count, 11);
    assert_eq!(run.latency_buckets.iter().sum::<u64>(), 11);
    assert!(run.p50_us > 0.0 && run.p50_us <= run.p90_us && run.p90_us <= run.p99_us);
    // The two deadline calls took about 50 ms: the 90th percentile is past 10 ms.
    assert!(run.p99_us >= 10_000.0, "{run:?}");
    // Five answers of `Done { filler: [1; 100] }`: 102 bytes each, encoded.
    assert_eq!(run.response_bytes, 5 * 102);
    assert!(run.request_bytes >= 11 * 50);
    let idle = method(&report, "idle");
    assert_eq!((idle.started, idle.finished), (0, 0));
    assert_eq!(report.crate_version, env!("CARGO_PKG_VERSION"));
}

/// Every non-comment line of the Prometheus text format 0.0.4:
/// `name{label="value",...} value` with a valid metric name and a number.
fn assert_exposition_format(text: &str) {
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "value of {line}"
        );
        let name = series.split('{').next().expect("a name");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name of {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (key, value) = pair.split_once('=').expect("label=value");
                    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(value.starts_with('"') && value.ends_with('"'), "{line}");
                }
            }
        }
    }
}

/// A metrics textfile is written at start, before serving begins: the per-method series
/// are there from bind on, at zero (procmond's textfile once lacked them).
#[tokio::test]
async fn every_method_is_reported_at_zero_before_serving_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "early"));
    let server = Server::bind(&config, ObservedServer::new(ObservedImpl)).expect("bind");
    let report = server.metrics().report();
    for name in ["run", "idle"] {
        let reported = method(&report, name);
        assert_eq!(reported.started, 0, "{reported:?}");
        assert!(reported.by_code.is_empty(), "{reported:?}");
    }
    assert!(
        report
            .methods
            .iter()
            .any(|m| m.service == "daemoneye.ipc.Health"),
        "the built-in services are listed too: {report:?}"
    );
    let text = server.metrics().prometheus();
    assert!(
        text.contains(
            "daemoneye_ipc_calls_started_total{service=\"test.Observed\",method=\"idle\"} 0"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn prometheus_text_is_well_formed_and_has_the_expected_series() {
    let server = start();
    let client = ObservedClient::connect(&server.config)
        .await
        .expect("connect");
    client
        .run(Order::default())
        .await
        .expect("one call to report");
    let health = HealthClient::connect(&server.config).await.expect("health");
    let report = health
        .metrics()
        .await
        .expect("metrics through the health service");
    let text = report.prometheus_text;
    assert_exposition_format(&text);
    for expected in [
        "# TYPE daemoneye_ipc_calls_total counter",
        "daemoneye_ipc_calls_total{service=\"test.Observed\",method=\"run\",code=\"OK\"} 1",
        "# TYPE daemoneye_ipc_call_duration_seconds histogram",
        "daemoneye_ipc_call_duration_seconds_bucket{service=\"test.Observed\",method=\"run\",le=\"+Inf\"} 1",
        "daemoneye_ipc_call_duration_seconds_count{service=\"test.Observed\",method=\"run\"} 1",
        "daemoneye_ipc_calls_in_flight{service=\"test.Observed\",method=\"run\"} 0",
        "daemoneye_ipc_connections_refused_total{reason=\"busy\"} 0",
        "daemoneye_ipc_uptime_seconds ",
        "daemoneye_ipc_build_info{version=",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let json: Report = serde_json::from_str(&report.json).expect("the JSON report");
    assert_eq!(method(&json, "run").by_code.get("OK"), Some(&1));
}

#[tokio::test]
async fn health_reports_serving_not_serving_and_unknown_services() {
    let server = start();
    let health = HealthClient::connect(&server.config).await.expect("health");
    let check = |service: &str| pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    let overall = health.check(check("")).await.expect("overall");
    assert_eq!(overall.status(), ServingStatus::Serving);
    let mut changes = health.watch(check("test.Observed")).await.expect("watch");
    let first = changes.next().await.expect("current status").expect("ok");
    assert_eq!(first.status(), ServingStatus::Serving);

    server
        .health
        .set("test.Observed", ServingStatus::NotServing);
    let status = health.check(check("test.Observed")).await.expect("check");
    assert_eq!(status.status(), ServingStatus::NotServing);
    let changed = tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("the watch sees the change")
        .expect("an item")
        .expect("ok");
    assert_eq!(changed.status(), ServingStatus::NotServing);

    let unknown = health
        .check(check("test.Nowhere"))
        .await
        .expect_err("not served");
    assert!(
        matches!(&unknown, IpcError::Status(s) if s.code() == Code::NotFound),
        "{unknown:?}"
    );
}
