//! The server side: accept loop, connection limit, handshake and concurrent dispatch.
//!
//! One task per connection reads frames; each request runs in its own task, so a slow
//! handler never holds up the others on the same connection; answers go back through a
//! writer task that batches whatever is queued into one write. Limits:
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

use std::{
    collections::{hash_map::Entry, HashMap},
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{
    future::{AbortHandle, Abortable},
    FutureExt, SinkExt, StreamExt,
};
use interprocess::local_socket::tokio::{Listener, Stream};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};

use crate::{
    codec::FrameCodec,
    envelope::{pb, Body, Envelope, ENVELOPE_OVERHEAD, HELLO_MAGIC, PROTOCOL_VERSION},
    log_budget::{LogBudget, Verdict},
    metrics::ServerMetrics,
    peer::{self, PeerIdentity, PeerPolicy},
    transport::{self, StreamHalf},
    IpcConfig, IpcError, ServiceDescriptor, Status,
};

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

    /// Runs method `method_id` on the prost-encoded `payload`, returning the
    /// prost-encoded response.
    ///
    /// # Errors
    /// The handler's [`Status`]; `UNIMPLEMENTED` for an unknown method id;
    /// `INVALID_ARGUMENT` when the payload is not a valid request.
    fn call(
        &self,
        method_id: u32,
        payload: Bytes,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send;

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
#[derive(Debug)]
pub struct Server<S> {
    listener: Listener,
    service: Arc<S>,
    config: Arc<IpcConfig>,
    policy: Arc<PeerPolicy>,
    metrics: Arc<ServerMetrics>,
}

impl<S: Service> Server<S> {
    /// Validates `config` and creates the endpoint (see [`transport::bind`]).
    ///
    /// # Errors
    /// `Config` for an invalid configuration; `Io` when the endpoint cannot be created
    /// (including `AddrInUse` when a live server already listens there).
    pub fn bind(config: &IpcConfig, service: S) -> Result<Self, IpcError> {
        let listener = transport::bind(config)?;
        Ok(Self {
            listener,
            service: Arc::new(service),
            config: Arc::new(config.clone()),
            policy: Arc::new(PeerPolicy::default()),
            metrics: Arc::default(),
        })
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
            config,
            policy,
            metrics,
        } = self;
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
                    let (service, config, stop) = (service.clone(), config.clone(), stop.clone());
                    let metrics = metrics.clone();
                    tasks.spawn(async move {
                        let _open = metrics.connection();
                        let shared = Shared {
                            service,
                            config,
                            metrics: metrics.clone(),
                        };
                        serve_connection(shared, stream, identity, stop).await;
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
/// client whose hello is slow still learns why; then the hello is read (for at most
/// `accept_timeout_ms`) so that closing does not reset a connection with unread data.
async fn refuse(stream: Stream, status: Status, config: &IpcConfig) {
    let (read_half, write_half) = StreamHalf::pair(stream);
    let mut reader = FramedRead::new(read_half, FrameCodec::from_config(config));
    let mut writer = FramedWrite::new(write_half, FrameCodec::from_config(config));
    let refusal = Envelope::new(0, Body::Status(status.to_wire()));
    let exchange = async {
        if writer.send(refusal).await.is_ok() {
            let _ = reader.next().await;
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
    if FrameCodec::from_config(config)
        .encode(refusal, &mut frame)
        .is_ok()
    {
        let _ = (&stream).write(&frame).now_or_never();
    }
}

/// The server's verdict on a connection's first frame.
enum Handshake {
    Accepted(pb::HelloAck),
    /// A hello this server cannot serve (version, service or schema differ).
    Refused(Status),
    /// Not a daemoneye-ipc hello at all (perhaps a seed-era bare request).
    NotHello(Status),
}

/// Checks a client's hello against this service.
fn handshake(frame: Bytes, descriptor: &ServiceDescriptor, config: &IpcConfig) -> Handshake {
    let hello = match <Envelope as prost::Message>::decode(frame) {
        Ok(Envelope {
            body: Some(Body::Hello(hello)),
            ..
        }) if hello.magic == HELLO_MAGIC => hello,
        _ => {
            return Handshake::NotHello(Status::failed_precondition(
                "expected a daemoneye-ipc hello as the first frame",
            ))
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Handshake::Refused(Status::failed_precondition(format!(
            "protocol version {} is not supported (server speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        )));
    }
    if hello.service != descriptor.name {
        return Handshake::Refused(Status::failed_precondition(format!(
            "this endpoint serves {:?}, not {:?}",
            descriptor.name, hello.service
        )));
    }
    if hello.schema_hash != descriptor.schema_hash {
        return Handshake::Refused(Status::failed_precondition(format!(
            "schema mismatch for {}: client {:016x}, server {:016x} (rebuild one side)",
            descriptor.name, hello.schema_hash, descriptor.schema_hash
        )));
    }
    Handshake::Accepted(pb::HelloAck {
        protocol_version: PROTOCOL_VERSION,
        service: descriptor.name.to_owned(),
        schema_hash: descriptor.schema_hash,
        max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
        max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
    })
}

type CallTable = Arc<Mutex<HashMap<u64, AbortHandle>>>;

fn lock(calls: &CallTable) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
    calls.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every connection of one server shares.
struct Shared<S> {
    service: Arc<S>,
    config: Arc<IpcConfig>,
    metrics: Arc<ServerMetrics>,
}

/// What a connection's first frame turned out to be.
enum Opening {
    /// A daemoneye-ipc client: the handshake was answered and accepted.
    Envelopes,
    /// A seed-era peer sending bare requests; its first request is attached.
    Bare(Bytes),
    /// Refused or broken; the connection is to be closed.
    Closed,
}

type Reader = FramedRead<StreamHalf, FrameCodec>;
type Writer = FramedWrite<StreamHalf, FrameCodec>;

async fn serve_connection<S: Service>(
    shared: Shared<S>,
    stream: Stream,
    identity: PeerIdentity,
    stop: CancellationToken,
) {
    let (service, config) = (&shared.service, &shared.config);
    let (read_half, write_half) = StreamHalf::pair(stream);
    let mut reader = FramedRead::new(read_half, FrameCodec::from_config(config));
    let mut writer = FramedWrite::new(write_half, FrameCodec::from_config(config));
    match open(
        &**service,
        &mut reader,
        &mut writer,
        config,
        &shared.metrics,
    )
    .await
    {
        Opening::Envelopes => serve_envelopes(&shared, identity, reader, writer, stop).await,
        Opening::Bare(first) => {
            let bare = serve_bare(&**service, first, reader, writer, config, &stop);
            peer::with_caller(identity, bare).await
        }
        Opening::Closed => {}
    }
}

/// Reads the first frame and answers the handshake.
async fn open<S: Service>(
    service: &S,
    reader: &mut Reader,
    writer: &mut Writer,
    config: &IpcConfig,
    metrics: &ServerMetrics,
) -> Opening {
    let first = match tokio::time::timeout(config.accept_timeout(), reader.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(error))) => {
            tracing::debug!(%error, "bad first frame");
            if !matches!(error, IpcError::PeerClosed) {
                metrics.protocol_error();
            }
            return Opening::Closed;
        }
        Ok(None) => return Opening::Closed,
        Err(_) => {
            tracing::debug!("no first frame before the accept timeout");
            return Opening::Closed;
        }
    };
    let reply = match handshake(first.clone(), service.descriptor(), config) {
        Handshake::Accepted(ack) => Envelope::new(0, Body::HelloAck(ack)),
        Handshake::Refused(status) => Envelope::new(0, Body::Status(status.to_wire())),
        Handshake::NotHello(status) => {
            if service.descriptor().bare_method().is_some() {
                return Opening::Bare(first);
            }
            Envelope::new(0, Body::Status(status.to_wire()))
        }
    };
    let accepted = matches!(reply.body, Some(Body::HelloAck(_)));
    match tokio::time::timeout(config.write_timeout(), writer.send(reply)).await {
        Ok(Ok(())) if accepted => Opening::Envelopes,
        _ => Opening::Closed,
    }
}

/// Answers a seed-era peer: each bare request frame gets one bare response frame, in
/// order, until the peer closes, goes idle past the read timeout, or sends garbage.
async fn serve_bare<S: Service>(
    service: &S,
    first: Bytes,
    mut reader: Reader,
    mut writer: Writer,
    config: &IpcConfig,
    stop: &CancellationToken,
) {
    let mut next = Some(first);
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => {
                let read = tokio::time::timeout(config.read_timeout(), reader.next());
                match tokio::select! {
                    read = read => read,
                    () = stop.cancelled() => return,
                } {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(error))) => {
                        tracing::debug!(%error, "closing bare connection");
                        return;
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        };
        let answer = match service.call_bare(frame).await {
            Some(Ok(answer)) => answer,
            Some(Err(status)) => {
                tracing::debug!(%status, "bare request failed; closing");
                return;
            }
            None => return,
        };
        let codec = *writer.encoder();
        if let Err(error) = codec.encode_bytes(&answer, writer.write_buffer_mut()) {
            tracing::debug!(%error, "bare response cannot be framed; closing");
            return;
        }
        let flush = SinkExt::<Envelope>::flush(&mut writer);
        if !matches!(
            tokio::time::timeout(config.write_timeout(), flush).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

async fn serve_envelopes<S: Service>(
    shared: &Shared<S>,
    identity: PeerIdentity,
    mut reader: Reader,
    writer: Writer,
    stop: CancellationToken,
) {
    let config = &*shared.config;
    let (outbound, queue) = mpsc::channel(config.max_in_flight);
    // Cancelled by the writer when it fails (write timeout, broken pipe): the peer can
    // no longer be answered, so the connection ends and its calls stop.
    let broken = CancellationToken::new();
    let writer_task = tokio::spawn(write_loop(
        writer,
        queue,
        config.write_timeout(),
        broken.clone(),
    ));
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let calls: CallTable = Arc::default();
    let clock = Arc::new(IdleClock::new());
    // If this task is aborted (drain timeout), its handlers and writer go with it.
    let _abort_on_drop = AbortOnDrop {
        calls: calls.clone(),
        writer: writer_task.abort_handle(),
    };
    let max_frame = config.max_frame_bytes;
    let handler_timeout = config.handler_timeout();
    // The highest correlation id read, reported in `GoAway`.
    let mut last_read = 0;

    // `Some(error)`: the peer broke the protocol or the connection failed; `None` with
    // `draining`: the server is shutting down; `None` otherwise: the peer closed.
    let mut draining = false;
    let error = loop {
        // Backpressure: take a slot before reading, so a full connection is not read.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break None,
            },
            () = stop.cancelled() => {
                draining = true;
                break None;
            }
            () = broken.cancelled() => break Some(IpcError::PeerClosed),
        };
        let next = next_frame(&mut reader, &clock, &slots, config);
        let frame = tokio::select! {
            next = next => next,
            () = stop.cancelled() => {
                draining = true;
                break None;
            }
            () = broken.cancelled() => break Some(IpcError::PeerClosed),
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(error) => break Some(error),
        };
        clock.touch();
        let envelope = match <Envelope as prost::Message>::decode(frame) {
            Ok(envelope) => envelope,
            Err(error) => break Some(error.into()),
        };
        let id = envelope.correlation_id;
        match envelope.body {
            Some(Body::Request(request)) => {
                let (abort, registration) = AbortHandle::new_pair();
                let duplicate = match lock(&calls).entry(id) {
                    Entry::Occupied(_) => true,
                    Entry::Vacant(slot) => {
                        slot.insert(abort);
                        false
                    }
                };
                if duplicate {
                    // Two answers would carry one id: a protocol error, as a reused
                    // stream id is in HTTP/2. The connection ends; no id is answered twice.
                    break Some(IpcError::InvalidMessage {
                        reason: format!("correlation id {id} reused while its call is in flight"),
                    });
                }
                last_read = last_read.max(id);
                let (service, outbound, calls) =
                    (shared.service.clone(), outbound.clone(), calls.clone());
                let (metrics, clock) = (shared.metrics.clone(), clock.clone());
                let task = async move {
                    let running = metrics.call();
                    let call = run_call(&*service, request, max_frame, handler_timeout, &metrics);
                    let call = peer::with_caller(identity, call);
                    match Abortable::new(call, registration).await {
                        Ok(answer) => {
                            let _ = outbound.send(Envelope::new(id, answer)).await;
                        }
                        Err(_aborted) => metrics.cancelled(),
                    }
                    lock(&calls).remove(&id);
                    clock.touch();
                    drop(running);
                    drop(slot);
                };
                run_or_spawn(task);
            }
            Some(Body::Cancel(_)) => {
                if let Some(call) = lock(&calls).remove(&id) {
                    call.abort();
                }
            }
            other => {
                break Some(IpcError::InvalidMessage {
                    reason: format!("unexpected envelope from client: {}", kind(other.as_ref())),
                })
            }
        }
    };
    if let Some(error) = &error {
        tracing::debug!(%error, "closing connection");
        if !matches!(error, IpcError::PeerClosed) {
            shared.metrics.protocol_error();
        }
        if let IpcError::InvalidMessage { reason } = error {
            // Say why before closing: every call in flight fails with this status.
            let status = Status::failed_precondition(format!("protocol error: {reason}"));
            let _ = outbound.try_send(Envelope::new(0, Body::Status(status.to_wire())));
        }
    }
    if draining {
        // Tell the client before answering what is in flight, so it sends no more, and
        // which requests were never read, so it can send them elsewhere.
        let go_away = pb::GoAway {
            reason: "server is shutting down".to_owned(),
            last_correlation_id: last_read,
        };
        let _ = outbound.try_send(Envelope::new(0, Body::GoAway(go_away)));
    } else {
        // Nobody is left to read the answers: stop the handlers now.
        for (_, call) in lock(&calls).drain() {
            call.abort();
        }
    }
    // The writer ends once every handler has sent its answer and dropped its sender.
    drop(outbound);
    let _ = writer_task.await;
}

/// The kind of an envelope body, for error messages (never its contents).
fn kind(body: Option<&Body>) -> &'static str {
    match body {
        None => "an envelope with no body",
        Some(Body::Request(_)) => "request",
        Some(Body::Response(_)) => "response",
        Some(Body::Status(_)) => "status",
        Some(Body::Cancel(_)) => "cancel",
        Some(Body::GoAway(_)) => "go_away",
        Some(Body::HelloAck(_)) => "hello_ack",
        Some(Body::Hello(_)) => "hello",
    }
}

/// When a connection last did something: received a frame or finished a call.
///
/// A connection is idle when no call is in flight and nothing has happened for
/// `read_timeout_ms`; the clock is read whenever the read timer fires, so a call that
/// finishes after the read began still starts a new idle period (seed: IPC
/// Implementation, Timeouts: read timeout 30 s).
struct IdleClock {
    start: Instant,
    /// Milliseconds from `start` to the last activity.
    last: AtomicU64,
}

impl IdleClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// When the connection becomes idle past `timeout` if nothing happens meanwhile.
    fn idle_at(&self, timeout: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + timeout
    }
}

/// Reads the next frame. `Ok(None)`: the peer closed. Fails with `Timeout` once the
/// connection has been idle (no call in flight, nothing received) for `read_timeout_ms`,
/// however long ago its last call was; a partial frame does not count as activity.
async fn next_frame(
    reader: &mut Reader,
    clock: &IdleClock,
    slots: &Semaphore,
    config: &IpcConfig,
) -> Result<Option<Bytes>, IpcError> {
    let timeout = config.read_timeout();
    loop {
        // `FramedRead::next` is cancel-safe: bytes already read stay buffered.
        let wake = clock
            .idle_at(timeout)
            .max(Instant::now() + Duration::from_millis(1));
        match tokio::time::timeout_at(wake.into(), reader.next()).await {
            Ok(Some(Ok(frame))) => return Ok(Some(frame)),
            Ok(Some(Err(error))) => return Err(error),
            Ok(None) => return Ok(None),
            Err(_elapsed) => {
                // The reader holds one slot itself.
                let in_flight =
                    (config.max_in_flight - 1).saturating_sub(slots.available_permits());
                if in_flight > 0 {
                    clock.touch(); // busy: idleness starts when the last call ends
                } else if Instant::now() >= clock.idle_at(timeout) {
                    return Err(IpcError::Timeout {
                        operation: "read",
                        after_ms: config.read_timeout_ms,
                    });
                }
            }
        }
    }
}

/// Polls a call once on the reader's task and spawns it only if it is not finished:
/// a handler that answers at once then costs no task and no hand-off (measured: W1
/// p50 of the bench). A pending call is spawned, and the runtime polls it again with a
/// real waker, so the no-op waker of the first poll is never relied on.
fn run_or_spawn(task: impl Future<Output = ()> + Send + 'static) {
    let mut task = Box::pin(task);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    if task.as_mut().poll(&mut context).is_pending() {
        tokio::spawn(task);
    }
}

/// Aborts a connection's handlers and writer when the connection task ends early.
struct AbortOnDrop {
    calls: CallTable,
    writer: tokio::task::AbortHandle,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for (_, call) in lock(&self.calls).drain() {
            call.abort();
        }
        self.writer.abort();
    }
}

/// Runs one call to completion: its answer, never a panic.
async fn run_call<S: Service>(
    service: &S,
    request: pb::Request,
    max_frame: usize,
    handler_timeout: Duration,
    metrics: &ServerMetrics,
) -> Body {
    let call = AssertUnwindSafe(service.call(request.method_id, request.payload)).catch_unwind();
    // The client's deadline, capped by the server's own limit on handlers.
    let limit = match request.timeout_us {
        0 => handler_timeout,
        us => Duration::from_micros(us).min(handler_timeout),
    };
    let result = match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => {
            metrics.deadline_exceeded();
            Ok(Err(Status::deadline_exceeded(format!(
                "handler did not finish within {} ms",
                limit.as_millis()
            ))))
        }
    };
    let result = result.unwrap_or_else(|_| Err(Status::internal("handler panicked")));
    match result {
        Ok(payload) if payload.len() + ENVELOPE_OVERHEAD > max_frame => Body::Status(
            Status::resource_exhausted(format!(
                "response of {} bytes exceeds the frame limit of {max_frame} bytes",
                payload.len()
            ))
            .to_wire(),
        ),
        Ok(payload) => Body::Response(pb::Response { payload }),
        Err(status) => Body::Status(status.to_wire()),
    }
}

/// Writes queued answers, batching whatever is queued into one write. Any failure
/// (write timeout, broken pipe, an envelope that cannot be framed) cancels `broken`,
/// which ends the connection: an unanswerable peer is closed, not left waiting.
async fn write_loop(
    mut writer: FramedWrite<StreamHalf, FrameCodec>,
    mut queue: mpsc::Receiver<Envelope>,
    write_timeout: Duration,
    broken: CancellationToken,
) {
    let _close_on_exit = broken.clone().drop_guard();
    let mut batch = Vec::with_capacity(64);
    while queue.recv_many(&mut batch, 64).await > 0 {
        let write = async {
            for envelope in batch.drain(..) {
                writer.feed(envelope).await?;
            }
            SinkExt::<Envelope>::flush(&mut writer).await
        };
        match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "server write failed; closing the connection");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    after_ms = write_timeout.as_millis(),
                    "server write timed out; closing the connection"
                );
                return;
            }
        }
    }
}
