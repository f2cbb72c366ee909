//! The server side: accept loop, connection limit, handshake and concurrent dispatch.
//!
//! One task per connection reads frames and polls each request's handler once; a
//! handler that is not done by then runs in its own task, so a slow handler never holds
//! up the others on the same connection. An answer ready at once is written by the
//! reader's task when the writer is idle; other answers go through a writer task that
//! batches whatever is queued into one write. Limits:
//!
//! - **connections**: a semaphore permit is held for each connection's life
//!   (`max_connections`); a client over the limit is answered with a
//!   `RESOURCE_EXHAUSTED` status in place of the handshake, then closed;
//! - **calls in flight per connection** (`max_in_flight`): when that many handlers run,
//!   the server stops reading from that peer until one finishes (backpressure);
//! - **deadlines**: a request's `timeout_us` bounds its handler, which is stopped and
//!   answered `DEADLINE_EXCEEDED` when it passes; a `Cancel` stops it silently;
//! - **idle peers**: a connection with no call in flight that sends nothing for
//!   `read_timeout_ms` is closed.
//!
//! A handler that panics is answered `INTERNAL`; the connection and the server go on.
//!
//! Layout: this module holds the handle (bind, accept loop, connection limit, refusals,
//! shutdown); `connection` serves one connection (handshake answer, call table,
//! reader, writer); `bare` serves seed-era peers.

mod bare;
mod catalog;
mod connection;
mod slots;
mod stream;

pub use self::stream::{ItemSink, ServerStream, MAX_CREDIT as MAX_STREAM_CREDIT};

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use interprocess::local_socket::tokio::{Listener, Stream};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};

use crate::{
    envelope::{Body, Envelope},
    health::HealthReporter,
    log_budget::{LogBudget, Verdict},
    metrics::ServerMetrics,
    peer::{self, PeerIdentity, PeerPolicy},
    transport::{self, StreamHalf},
    IpcConfig, IpcError, ServiceDescriptor, Status,
};

pub(crate) use self::catalog::Catalog;
use self::catalog::DynService;
pub(crate) use self::connection::serve_connection;

/// Refused peers logged per [`REFUSAL_LOG_WINDOW`]; the rest are counted, and the
/// count is logged (`suppressed`) with the first refusal of the next window.
const REFUSAL_LOGS_PER_WINDOW: u32 = 10;
/// See [`REFUSAL_LOGS_PER_WINDOW`].
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// A service the server can dispatch to. `#[ipc_service]` implements it for the
/// generated `FooServer<T>`; implement it by hand only for dynamic services.
///
/// Handlers are polled first on their connection's reader task and moved to a task of
/// their own only if they do not finish at once; as everywhere in async Rust, long
/// synchronous work belongs in `tokio::task::spawn_blocking`, or it holds up the
/// connection's next request.
pub trait Service: Send + Sync + 'static {
    /// The service's descriptor, checked against the client's in the handshake.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Runs method `method_id` on the prost-encoded `payload`, returning the response
    /// as a [`Reply`](crate::Reply): the message itself, which the connection's writer
    /// encodes straight into its frame ([`Reply::encoded`](crate::Reply::encoded) for
    /// bytes already encoded).
    ///
    /// # Errors
    /// The handler's [`Status`]; `UNIMPLEMENTED` for an unknown method id;
    /// `INVALID_ARGUMENT` when the payload is not a valid request.
    fn call(
        &self,
        method_id: u32,
        payload: Bytes,
    ) -> impl Future<Output = Result<crate::Reply, Status>> + Send;

    /// Runs server-streaming method `method_id` on the prost-encoded `payload`, sending
    /// its items through `sink`; `Ok(())` ends the stream normally. `#[ipc_service]`
    /// implements it for methods that take a [`ServerStream`]; the server calls it for
    /// the methods whose descriptor says `server_streaming`.
    ///
    /// # Errors
    /// The handler's [`Status`], which ends the stream after the items sent before it;
    /// `UNIMPLEMENTED` when the service has no such streaming method.
    fn call_stream(
        &self,
        method_id: u32,
        payload: Bytes,
        sink: ItemSink,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (payload, sink);
        std::future::ready(Err(Status::unimplemented(format!(
            "method id {method_id} is not a streaming method of this service"
        ))))
    }

    /// Serves one frame from a seed-era peer that sends bare request messages, with no
    /// envelope and no handshake (for procmond: a `DetectionTask`, answered with a bare
    /// `DetectionResult`). `None` means the service has no such entry point.
    /// `#[ipc_service]` routes here the method marked `#[ipc(bare)]`; the server only
    /// calls this when the descriptor has such a method
    /// ([`ServiceDescriptor::bare_method`]).
    ///
    /// # Errors
    /// A [`Status`] closes the bare connection: a bare peer has no way to receive one.
    fn call_bare(
        &self,
        payload: Bytes,
    ) -> impl Future<Output = Option<Result<Bytes, Status>>> + Send {
        let _ = payload;
        std::future::ready(None)
    }
}

/// A bound server for one service.
///
/// ```no_run
/// # async fn run<S: daemoneye_ipc::Service>(service: S) -> Result<(), daemoneye_ipc::IpcError> {
/// let config = daemoneye_ipc::IpcConfig::with_endpoint("/tmp/example.sock");
/// let server = daemoneye_ipc::Server::bind(&config, service)?;
/// server.serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct Server<S> {
    listener: Listener,
    service: Arc<S>,
    /// Services served beside the primary one, chosen by name in the hello.
    others: Vec<Arc<dyn DynService>>,
    health: HealthReporter,
    config: Arc<IpcConfig>,
    policy: Arc<PeerPolicy>,
    metrics: Arc<ServerMetrics>,
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let others: Vec<&str> = self.others.iter().map(|o| o.descriptor().name).collect();
        f.debug_struct("Server")
            .field("endpoint", &self.config.endpoint_path)
            .field("also_serves", &others)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Server<S> {
    /// Validates `config` and creates the endpoint (see [`transport::bind`]).
    ///
    /// # Errors
    /// `Config` for an invalid configuration; `Io` when the endpoint cannot be created
    /// (including `AddrInUse` when a live server already listens there).
    pub fn bind(config: &IpcConfig, service: S) -> Result<Self, IpcError> {
        let listener = transport::bind(config)?;
        Ok(Self::new(config, listener, service))
    }

    /// Like [`bind`](Self::bind) on a listener made elsewhere: for socket activation,
    /// with one that [`transport::listener_from_fd`] took over from systemd. `config`
    /// is validated and used as with `bind` (its `endpoint_path` should name the
    /// listener's socket: clients and logs use it); the peer policy applies as usual.
    /// At shutdown the listener is closed; a socket file it did not create is left in
    /// place.
    ///
    /// # Errors
    /// `Config` for an invalid configuration.
    pub fn from_listener(
        config: &IpcConfig,
        listener: Listener,
        service: S,
    ) -> Result<Self, IpcError> {
        config.validate()?;
        Ok(Self::new(config, listener, service))
    }

    fn new(config: &IpcConfig, listener: Listener, service: S) -> Self {
        let server = Self {
            listener,
            service: Arc::new(service),
            others: Vec::new(),
            health: HealthReporter::default(),
            config: Arc::new(config.clone()),
            policy: Arc::new(PeerPolicy::default()),
            metrics: Arc::default(),
        };
        server.register_methods();
        server
    }

    /// The per-method counters of everything served, listed (at zero) from the start.
    fn register_methods(&self) {
        self.metrics
            .register(&Catalog::<S>::served(&self.service, &self.others));
    }

    /// This server also serving `service` on the same endpoint: a client's hello names
    /// the service it wants (for example `Server::bind(&config, FooServer::new(foo))?
    /// .add_service(BarServer::new(bar))?`). The first service is dispatched without
    /// any allocation per call; added ones through a boxed future per call.
    ///
    /// # Errors
    /// `Config` (field `service`) when a service of that name is already served.
    pub fn add_service<T: Service>(mut self, service: T) -> Result<Self, IpcError> {
        let name = service.descriptor().name;
        let taken = self.service.descriptor().name == name
            || self.others.iter().any(|o| o.descriptor().name == name);
        if taken {
            return Err(IpcError::Config {
                field: "service",
                reason: format!("{name} is already served on this endpoint"),
            });
        }
        self.others.push(Arc::new(service));
        self.register_methods();
        Ok(self)
    }

    /// The handle that sets this server's health, as the built-in `daemoneye.ipc.Health`
    /// service reports it (e.g. `NOT_SERVING` when a service cannot do its work).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// The names of the services this server serves, its first service first.
    pub fn services(&self) -> Vec<&'static str> {
        std::iter::once(self.service.descriptor().name)
            .chain(self.others.iter().map(|o| o.descriptor().name))
            .collect()
    }

    /// The server's live counters (connections, calls in flight, refusals); keep the
    /// `Arc` to read them while the server runs.
    pub fn metrics(&self) -> Arc<ServerMetrics> {
        self.metrics.clone()
    }

    /// This server with another policy for which peers may connect (default:
    /// [`PeerPolicy::same_user`]).
    pub fn with_peer_policy(mut self, policy: PeerPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The endpoint this server listens on.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint_path
    }

    /// Serves until the task is dropped.
    ///
    /// # Errors
    /// None in practice: accept failures (e.g. out of file descriptors) are logged and
    /// retried.
    pub async fn serve(self) -> Result<(), IpcError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then stops accepting, removes the endpoint,
    /// tells every client (`GoAway`), lets the calls in flight finish for at most
    /// `drain_timeout_ms`, aborts what is left, and closes every connection.
    ///
    /// # Errors
    /// None in practice; see [`serve`](Self::serve).
    pub async fn serve_with_shutdown(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), IpcError> {
        let Server {
            listener,
            service,
            others,
            health,
            config,
            policy,
            metrics,
        } = self;
        let (catalog, names) = Catalog::with_builtins(service, others, &health, &config, &metrics);
        let server_uid = peer::own_uid();
        let connections = Arc::new(Semaphore::new(config.max_connections));
        // Refusals are answered by short tasks; bound them too.
        let refusals = Arc::new(Semaphore::new(config.max_connections));
        let stop = CancellationToken::new();
        let refused_log = LogBudget::new(REFUSAL_LOGS_PER_WINDOW, REFUSAL_LOG_WINDOW);
        // Connection tasks; dropping the set aborts whatever is left of them.
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                accepted = transport::accept(&listener) => match accepted {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        // Back off so a persistent error (EMFILE) does not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Who is calling, checked before anything is read from them.
            let verdict = match PeerIdentity::of(&stream) {
                Ok(identity) => policy
                    .check(&identity, server_uid)
                    .map(|()| identity)
                    .map_err(Status::permission_denied),
                Err(error) => Err(Status::permission_denied(format!(
                    "cannot read peer credentials: {error}"
                ))),
            };
            let admitted = match verdict {
                Ok(identity) => connections
                    .clone()
                    .try_acquire_owned()
                    .map(|permit| (identity, permit))
                    .map_err(|_| {
                        Status::resource_exhausted(format!(
                            "connection limit reached ({} connections)",
                            config.max_connections
                        ))
                    }),
                Err(refusal) => {
                    // A peer can connect as often as it likes: bound what that logs.
                    if let Verdict::Log { suppressed } = refused_log.spend() {
                        tracing::warn!(%refusal, suppressed, "refusing peer");
                    }
                    metrics.refused_peer();
                    Err(refusal)
                }
            };
            if matches!(&admitted, Err(refusal) if refusal.code() == crate::Code::ResourceExhausted)
            {
                metrics.refused_busy();
            }
            match admitted {
                Ok((identity, permit)) => {
                    let (catalog, config, stop) = (catalog.clone(), config.clone(), stop.clone());
                    let metrics = metrics.clone();
                    tasks.spawn(async move {
                        let _open = metrics.connection();
                        let shared = Shared {
                            catalog,
                            config,
                            metrics: metrics.clone(),
                        };
                        serve_connection(shared, StreamHalf::pair(stream), identity, stop).await;
                        drop(permit);
                    });
                }
                Err(refusal) => match refusals.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let config = config.clone();
                        tasks.spawn(async move {
                            refuse(stream, refusal, &config).await;
                            drop(permit);
                        });
                    }
                    // Too many refusals under way: still say why, without a task or
                    // a wait. The frame fits any fresh socket buffer; the client reads
                    // it before it sees the close.
                    Err(_) => refuse_now(stream, &refusal, &config),
                },
            }
        }
        health.shut_down(&names);
        drop(listener); // removes the socket file
        stop.cancel();
        let drain = Duration::from_millis(config.drain_timeout_ms);
        let drained =
            tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                connections = tasks.len(),
                "calls still running after the drain timeout; aborting them"
            );
            tasks.shutdown().await;
        }
        Ok(())
    }
}

/// Answers a connection that is not admitted (busy, or not allowed) with `status` in
/// place of the handshake answer, then closes it. The answer is written first, so a
/// client whose hello is slow still learns why; then what the client sends is read
/// until it hangs up (for at most `accept_timeout_ms` in all), so that closing neither
/// resets a connection with unread data (Unix) nor discards the answer before the
/// client has read it (named pipes under Wine).
async fn refuse(stream: Stream, status: Status, config: &IpcConfig) {
    let (read_half, write_half) = StreamHalf::pair(stream);
    let mut reader = FramedRead::new(read_half, config.frame_codec());
    let mut writer = FramedWrite::new(write_half, config.frame_codec());
    let refusal = Envelope::new(0, Body::Status(status.to_wire()));
    let exchange = async {
        if writer.send(refusal).await.is_ok() {
            while let Some(Ok(_)) = reader.next().await {}
        }
    };
    let _ = tokio::time::timeout(config.accept_timeout(), exchange).await;
}

/// Writes `status` to a fresh connection without waiting, then closes it.
fn refuse_now(stream: Stream, status: &Status, config: &IpcConfig) {
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;
    let mut frame = bytes::BytesMut::new();
    let refusal = Envelope::new(0, Body::Status(status.to_wire()));
    if config.frame_codec().encode(refusal, &mut frame).is_ok() {
        let _ = (&stream).write(&frame).now_or_never();
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared<S> {
    pub(crate) catalog: Arc<Catalog<S>>,
    pub(crate) config: Arc<IpcConfig>,
    pub(crate) metrics: Arc<ServerMetrics>,
}
