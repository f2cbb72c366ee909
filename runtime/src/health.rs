//! The built-in health service, `daemoneye.ipc.Health`, that every endpoint serves (in
//! the spirit of `grpc.health.v1`): whether the server and each of its services is
//! serving, a stream of changes, and the server's metrics (Prometheus text and JSON).
//!
//! A service implementation sets its own state through the server's
//! [`HealthReporter`] ([`Server::health`](crate::Server::health)); procmond reports
//! `NOT_SERVING` when it cannot read the process table. Every service starts
//! `SERVING`; at shutdown every one becomes `NOT_SERVING`, so watchers learn it.
//!
//! ```no_run
//! # async fn run() -> Result<(), daemoneye_ipc::IpcError> {
//! use daemoneye_ipc::{envelope::pb, health::HealthClient, IpcConfig};
//! let health = HealthClient::connect(&IpcConfig::with_endpoint("/run/daemoneye/procmond.sock")).await?;
//! let answer = health.check(pb::HealthCheckRequest { service: String::new() }).await?;
//! println!("{:?}", answer.status());
//! # Ok(()) }
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

pub use crate::envelope::pb::ServingStatus;
use crate::{envelope::pb, ipc_service, metrics::ServerMetrics, ServerStream, Status};

/// What every endpoint says about its health; see the [module docs](self).
#[ipc_service(
    name = "daemoneye.ipc.Health",
    descriptors = crate::envelope::FILE_DESCRIPTOR_SET
)]
pub trait Health {
    /// Whether `service` (empty: the whole server) is serving. `NOT_FOUND` for a
    /// service not served here.
    #[ipc(id = 1, idempotent)]
    async fn check(
        &self,
        request: pb::HealthCheckRequest,
    ) -> Result<pb::HealthCheckResponse, Status>;

    /// The status of `service` now, then each change, until the stream is dropped;
    /// `SERVICE_UNKNOWN` for a service not served here.
    #[ipc(id = 2)]
    async fn watch(
        &self,
        request: pb::HealthCheckRequest,
        tx: ServerStream<pb::HealthCheckResponse>,
    ) -> Result<(), Status>;

    /// The server's counters: Prometheus text, and the same as JSON.
    #[ipc(id = 3, idempotent)]
    async fn metrics(&self) -> Result<pb::MetricsReport, Status>;
}

/// Sets the serving state of a server's services (cheap to clone; clones share it).
#[derive(Clone, Debug)]
pub struct HealthReporter {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    statuses: Mutex<HashMap<String, ServingStatus>>,
    /// Bumped on every change, for `watch`.
    changed: watch::Sender<u64>,
}

impl Default for HealthReporter {
    fn default() -> Self {
        Self {
            state: Arc::new(State {
                statuses: Mutex::new(HashMap::new()),
                changed: watch::channel(0).0,
            }),
        }
    }
}

impl HealthReporter {
    /// Sets `service`'s state (`""`: the whole server). Watchers see the change.
    pub fn set(&self, service: &str, status: ServingStatus) {
        let changed = {
            let mut statuses = self.lock();
            statuses.insert(service.to_owned(), status) != Some(status)
        };
        if changed {
            self.state.changed.send_modify(|version| *version += 1);
        }
    }

    /// `service`'s state (`""`: the whole server); `SERVING` unless set otherwise.
    pub fn get(&self, service: &str) -> ServingStatus {
        self.lock()
            .get(service)
            .copied()
            .unwrap_or(ServingStatus::Serving)
    }

    /// Every service of `served`, and the server, becomes `NOT_SERVING` (at shutdown).
    pub(crate) fn shut_down(&self, served: &[&str]) {
        for service in std::iter::once("").chain(served.iter().copied()) {
            self.set(service, ServingStatus::NotServing);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServingStatus>> {
        self.state
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The health service of one server.
pub(crate) struct Served {
    pub(crate) reporter: HealthReporter,
    pub(crate) services: Vec<&'static str>,
    pub(crate) metrics: Arc<ServerMetrics>,
}

impl Served {
    fn known(&self, service: &str) -> bool {
        service.is_empty() || self.services.contains(&service)
    }
}

impl Health for Served {
    async fn check(
        &self,
        request: pb::HealthCheckRequest,
    ) -> Result<pb::HealthCheckResponse, Status> {
        if !self.known(&request.service) {
            return Err(Status::not_found(format!(
                "{:?} is not served here; served: {}",
                request.service,
                self.services.join(", ")
            )));
        }
        Ok(pb::HealthCheckResponse {
            status: self.reporter.get(&request.service) as i32,
        })
    }

    async fn watch(
        &self,
        request: pb::HealthCheckRequest,
        mut tx: ServerStream<pb::HealthCheckResponse>,
    ) -> Result<(), Status> {
        let mut changes = self.reporter.state.changed.subscribe();
        let mut last = None;
        loop {
            let status = if self.known(&request.service) {
                self.reporter.get(&request.service)
            } else {
                ServingStatus::ServiceUnknown
            };
            if last != Some(status) {
                tx.send(pb::HealthCheckResponse {
                    status: status as i32,
                })
                .await?;
                last = Some(status);
            }
            if changes.changed().await.is_err() {
                return Ok(()); // the server is gone
            }
        }
    }

    async fn metrics(&self) -> Result<pb::MetricsReport, Status> {
        let report = self.metrics.report();
        let json = serde_json::to_string(&report)
            .map_err(|error| Status::internal(format!("cannot encode the metrics: {error}")))?;
        Ok(pb::MetricsReport {
            prometheus_text: self.metrics.prometheus(),
            json,
        })
    }
}
