//! Server counters, cheap enough to keep always on (relaxed atomics), for health checks,
//! logs and tests ("afterwards nothing is left in any in-flight table"): server-wide
//! ones ([`MetricsSnapshot`]) and per method ([`MethodReport`]), readable in-process
//! ([`ServerMetrics::report`]), as Prometheus text ([`ServerMetrics::prometheus`]) and
//! through the built-in health service.
//!
//! Recording a call costs a clock read at each end and a handful of relaxed atomic
//! additions; nothing is allocated or locked.

mod method;
mod prometheus;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        PoisonError, RwLock,
    },
    time::Instant,
};

use serde::{Deserialize, Serialize};

pub(crate) use self::method::{CallRecord, MethodStats, MethodTable, ServiceMethods};
pub use self::method::{MethodReport, LATENCY_BUCKETS_US};
use crate::ServiceDescriptor;

/// Live counters of one [`Server`](crate::Server); see [`Server::metrics`](crate::Server::metrics).
#[derive(Debug)]
pub struct ServerMetrics {
    started: Instant,
    /// Replaced only before serving (at bind and by `add_service`); read per connection.
    methods: RwLock<MethodTable>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    refused_busy: AtomicU64,
    refused_peer: AtomicU64,
    protocol_errors: AtomicU64,
    calls_in_flight: AtomicU64,
    calls_total: AtomicU64,
    calls_cancelled: AtomicU64,
    calls_deadline_exceeded: AtomicU64,
    streams_open: AtomicU64,
    stream_items_sent: AtomicU64,
    credit_stalls: AtomicU64,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            methods: RwLock::default(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            refused_peer: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            calls_in_flight: AtomicU64::new(0),
            calls_total: AtomicU64::new(0),
            calls_cancelled: AtomicU64::new(0),
            calls_deadline_exceeded: AtomicU64::new(0),
            streams_open: AtomicU64::new(0),
            stream_items_sent: AtomicU64::new(0),
            credit_stalls: AtomicU64::new(0),
        }
    }
}

/// Everything [`ServerMetrics`] knows, at one moment: the server-wide counters and each
/// method's figures. Serialised as JSON by the health service's `metrics` method.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Time since the server's metrics were created (at bind), in milliseconds.
    pub uptime_ms: u64,
    /// Version of the daemoneye-ipc crate.
    pub crate_version: String,
    /// Wire protocol version.
    pub protocol_version: u32,
    /// The server-wide counters.
    pub server: MetricsSnapshot,
    /// Every method of every service served, in the order served.
    pub methods: Vec<MethodReport>,
}

/// A copy of [`ServerMetrics`]' server-wide counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSnapshot {
    /// Connections being served now.
    pub connections_open: u64,
    /// Connections admitted since the server started.
    pub connections_total: u64,
    /// Connections refused because `max_connections` were open.
    pub refused_busy: u64,
    /// Connections refused by the peer policy.
    pub refused_peer: u64,
    /// Connections closed because the peer broke framing or protocol (bad length, CRC,
    /// garbage envelope, unexpected message) or went idle past the read timeout.
    pub protocol_errors: u64,
    /// Calls whose handler is running now, over all connections.
    pub calls_in_flight: u64,
    /// Calls started since the server started.
    pub calls_total: u64,
    /// Calls stopped by a client's cancel or by their connection closing.
    pub calls_cancelled: u64,
    /// Calls stopped because their deadline passed.
    pub calls_deadline_exceeded: u64,
    /// Server-streaming calls producing now.
    pub streams_open: u64,
    /// Stream items sent since the server started, over all streams.
    pub stream_items_sent: u64,
    /// Times a stream producer found no credit and had to wait for the consumer.
    pub credit_stalls: u64,
}

impl ServerMetrics {
    /// Every figure now, per method included.
    pub fn report(&self) -> Report {
        Report {
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: crate::handshake::PROTOCOL_VERSION,
            server: self.snapshot(),
            methods: self
                .methods
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .reports(),
        }
    }

    /// The figures in the Prometheus text exposition format (version 0.0.4), as
    /// node_exporter's textfile collector reads it, written by `prometheus-client`:
    /// `daemoneye_ipc_calls_total{service,method,code}`,
    /// `daemoneye_ipc_call_duration_seconds` (histogram), `..._calls_in_flight`,
    /// `..._request_bytes_total`, `..._response_bytes_total`,
    /// `..._stream_items_total` (per method), and the server-wide
    /// `daemoneye_ipc_connections_open`, `..._connections_total`,
    /// `..._connections_refused_total{reason}`, `..._protocol_errors_total`,
    /// `..._uptime_seconds`, `daemoneye_ipc_build_info{version,protocol}`.
    pub fn prometheus(&self) -> String {
        prometheus::render(&self.report())
    }

    /// Sets up the per-method counters (all zero) for the services served: at bind and
    /// again by each `add_service`, so that figures read before serving starts (a
    /// metrics textfile written at start) already list every method.
    pub(crate) fn register(&self, descriptors: &[&'static ServiceDescriptor]) {
        *self.methods.write().unwrap_or_else(PoisonError::into_inner) =
            MethodTable::new(descriptors);
    }

    /// The per-method counters of service `name`.
    pub(crate) fn service(&self, name: &str) -> ServiceMethods {
        self.methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .service(name)
    }

    /// The server-wide counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            refused_busy: get(&self.refused_busy),
            refused_peer: get(&self.refused_peer),
            protocol_errors: get(&self.protocol_errors),
            calls_in_flight: get(&self.calls_in_flight),
            calls_total: get(&self.calls_total),
            calls_cancelled: get(&self.calls_cancelled),
            calls_deadline_exceeded: get(&self.calls_deadline_exceeded),
            streams_open: get(&self.streams_open),
            stream_items_sent: get(&self.stream_items_sent),
            credit_stalls: get(&self.credit_stalls),
        }
    }

    pub(crate) fn refused_busy(&self) {
        self.refused_busy.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn refused_peer(&self) {
        self.refused_peer.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn cancelled(&self) {
        self.calls_cancelled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn deadline_exceeded(&self) {
        self.calls_deadline_exceeded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_item(&self) {
        self.stream_items_sent.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn credit_stall(&self) {
        self.credit_stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a producing stream until the guard is dropped.
    pub(crate) fn stream(&self) -> Gauge<'_> {
        Gauge::new(&self.streams_open)
    }

    /// Counts an open connection until the guard is dropped.
    pub(crate) fn connection(&self) -> Gauge<'_> {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Gauge::new(&self.connections_open)
    }

    /// Counts a running call until the guard is dropped.
    pub(crate) fn call(&self) -> Gauge<'_> {
        self.calls_total.fetch_add(1, Ordering::Relaxed);
        Gauge::new(&self.calls_in_flight)
    }
}

/// Decrements its gauge when dropped, however the work it counts ends.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
