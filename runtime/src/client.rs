//! The client side of a connection: many calls in flight on one connection, each answer
//! matched to its caller by correlation id.
//!
//! A [`Client`] is a cheap, cloneable handle. Calls are encoded in the caller's task and
//! handed to one writer task, which batches whatever frames are queued into one write;
//! one reader task routes each answer to the waiting call through a `oneshot`. A call
//! that times out, or whose future is dropped, is removed from the table and the server
//! is sent a `Cancel`. When the connection fails, every call in flight ends with that
//! error; the next call opens a new connection (a call is never sent twice).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, oneshot},
};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

use crate::{
    codec::FrameCodec,
    config::millis,
    envelope::{pb, Body, Envelope, ENVELOPE_OVERHEAD, HELLO_MAGIC, PROTOCOL_VERSION},
    resilience::{
        is_failure, is_retryable, BreakerConfig, BreakerState, CircuitBreaker, RateLimit,
        RetryPolicy,
    },
    transport::{self, StreamHalf},
    IpcConfig, IpcError, PeerPolicy, ServiceDescriptor, Status,
};

/// A call's result.
type Answer = Result<Bytes, IpcError>;

/// What the reader (or a failing connection) hands a waiting call.
type Delivery = Result<Bytes, Failed>;

/// A call that ended without a response.
#[derive(Debug)]
struct Failed {
    error: IpcError,
    /// Whether the request may have reached the server. `false` only when its frame was
    /// provably not (completely) written, so a retry cannot run the handler twice.
    sent: bool,
}

/// A typed service's client handle; generated clients (`FooClient`) wrap one.
///
/// Cloning is cheap and clones share the connection (and the circuit breaker and rate
/// limit, when set). Every call ends exactly once: with its response, the server's
/// [`Status`] (as [`IpcError::Status`]), or a transport error. When the connection is
/// lost, the next call opens a new one, with backoff, per its [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
    timeout: Duration,
    retry: RetryPolicy,
    breaker: Option<Arc<CircuitBreaker>>,
    rate_limit: Option<Arc<RateLimit>>,
}

#[derive(Debug)]
struct Shared {
    config: IpcConfig,
    service: &'static ServiceDescriptor,
    /// Who may serve the endpoint (and own the directories on its path).
    server_policy: PeerPolicy,
    /// The live connection, if any; read on every call, so a plain mutex held briefly.
    current: Mutex<Option<Arc<Connection>>>,
    /// Serialises reconnection so that concurrent callers open one connection, not many.
    reconnect: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects to the service described by `service` at `config.endpoint_path` and
    /// performs the handshake, once (no retry: a caller that wants to wait for the
    /// server uses [`lazy`](Self::lazy)).
    ///
    /// Before anything is sent, the server is checked against the default server
    /// policy, [`PeerPolicy::same_user`]: the process serving the endpoint must run as
    /// this user or root, and (on Unix) the socket's directory and the directories above
    /// it must be safe from other users (see [`with_server_policy`](Self::with_server_policy)
    /// and [`transport`]).
    ///
    /// # Errors
    /// `Config` for an invalid configuration; `ServerNotFound`, `ConnectionRefused`,
    /// `PermissionDenied`, `ConnectionTimeout` naming the endpoint; `Busy` when the
    /// server is at its connection limit; `Handshake` when the server serves another
    /// service or another version of it. `PermissionDenied` also when the server or a
    /// directory on the socket's path is not trusted; its reason names the owner found.
    pub async fn connect(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
    ) -> Result<Self, IpcError> {
        Self::connect_with_server_policy(config, service, PeerPolicy::same_user()).await
    }

    /// [`connect`](Self::connect), trusting the servers that `server_policy` admits in
    /// place of the default (this user and root). The policy applies to every
    /// connection this client opens later.
    ///
    /// # Errors
    /// As for [`connect`](Self::connect).
    pub async fn connect_with_server_policy(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
        server_policy: PeerPolicy,
    ) -> Result<Self, IpcError> {
        let client = Self::lazy(config, service)?.with_server_policy(server_policy);
        let shared = &client.shared;
        let connection =
            Connection::open(&shared.config, shared.service, &shared.server_policy).await?;
        *client.slot() = Some(connection);
        Ok(client)
    }

    /// A client that connects on its first call (and reconnects, with backoff, per its
    /// [`RetryPolicy`]): for callers that may start before the server.
    ///
    /// # Errors
    /// `Config` for an invalid configuration.
    pub fn lazy(config: &IpcConfig, service: &'static ServiceDescriptor) -> Result<Self, IpcError> {
        config.validate()?;
        Ok(Self {
            timeout: config.call_timeout(),
            retry: RetryPolicy::default(),
            breaker: None,
            rate_limit: None,
            shared: Arc::new(Shared {
                config: config.clone(),
                service,
                server_policy: PeerPolicy::same_user(),
                current: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// This handle trusting the servers that `server_policy` admits, in place of the
    /// default [`PeerPolicy::same_user`] (this user and root): checked on every
    /// connection it opens, before anything is sent, against the credentials of the
    /// process serving the endpoint. On Unix the socket's directory and the directories
    /// above it must be owned by this user, root or a uid the policy lists, and not be
    /// writable by others without the sticky bit. [`PeerPolicy::any`] turns both checks
    /// off.
    ///
    /// Set it on a [`lazy`](Self::lazy) client (or use
    /// [`connect_with_server_policy`](Self::connect_with_server_policy)): this handle
    /// and the clones made from it then have a connection of their own, and one that
    /// [`connect`](Self::connect) already opened under the default policy is not used.
    pub fn with_server_policy(mut self, server_policy: PeerPolicy) -> Self {
        self.shared = Arc::new(Shared {
            config: self.shared.config.clone(),
            service: self.shared.service,
            server_policy,
            current: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(()),
        });
        self
    }

    /// The policy deciding which servers this handle trusts.
    pub fn server_policy(&self) -> &PeerPolicy {
        &self.shared.server_policy
    }

    /// This handle with another per-call timeout (the deadline sent with each call,
    /// which also bounds every retry).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This handle with another retry policy ([`RetryPolicy::never`] to disable).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// This handle with a new circuit breaker, shared by the clones made from it.
    pub fn with_circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(Arc::new(CircuitBreaker::new(config)));
        self
    }

    /// This handle with a token-bucket limit of `per_second` calls per second and
    /// bursts of `burst`, shared by the clones made from it. A call waits for a token
    /// when one comes before its deadline, else fails with `RateLimited`.
    pub fn with_rate_limit(mut self, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        self.rate_limit = Some(Arc::new(RateLimit::new(per_second, burst)));
        self
    }

    /// The circuit breaker's state, when this handle has one.
    pub fn circuit_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(|breaker| breaker.state())
    }

    /// The per-call timeout of this handle.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The service this client talks to.
    pub fn descriptor(&self) -> &'static ServiceDescriptor {
        self.shared.service
    }

    /// The endpoint this client connects to.
    pub fn endpoint(&self) -> &str {
        &self.shared.config.endpoint_path
    }

    /// Calls method `method_id` with `request` and waits for its answer, at most this
    /// handle's timeout (retries included).
    ///
    /// # Errors
    /// `Status` when the handler returned an error; `DeadlineExceeded` when the timeout
    /// passed (the server is told to cancel); `TooLarge` when the request exceeds
    /// `max_frame_bytes` (nothing is sent); `PeerClosed` or a framing error when the
    /// connection failed; `Decode` when the response is not a valid `Resp`;
    /// `CircuitOpen`, `RateLimited` from the handle's policies; the
    /// [`connect`](Self::connect) errors when a new connection was needed and could not
    /// be made within the retry policy.
    pub async fn call<Req, Resp>(&self, method_id: u32, request: &Req) -> Result<Resp, IpcError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let payload = Bytes::from(request.encode_to_vec());
        let answer = self.call_raw(method_id, payload).await?;
        Ok(Resp::decode(answer)?)
    }

    /// Like [`call`](Self::call) with the request already encoded; returns the encoded
    /// response.
    ///
    /// # Errors
    /// As for [`call`](Self::call), except `Decode`.
    pub async fn call_raw(&self, method_id: u32, payload: Bytes) -> Answer {
        let max = self.shared.config.max_frame_bytes;
        if payload.len() + ENVELOPE_OVERHEAD > max {
            return Err(IpcError::TooLarge {
                size: payload.len() + ENVELOPE_OVERHEAD,
                max_size: max,
            });
        }
        let deadline = Instant::now() + self.timeout;
        let idempotent = self
            .shared
            .service
            .method(method_id)
            .is_some_and(|method| method.idempotent);
        if let Some(limit) = &self.rate_limit {
            limit.acquire(self.timeout).await?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = match &self.breaker {
                Some(breaker) => Some(breaker.acquire()?),
                None => None,
            };
            let (answer, sent) = self.attempt(method_id, payload.clone(), deadline).await;
            if let Some(permit) = permit {
                permit.record(!matches!(&answer, Err(error) if is_failure(error)));
            }
            let error = match answer {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if attempt >= self.retry.max_attempts || !is_retryable(&error, sent, idempotent) {
                return Err(error);
            }
            let pause = self.retry.backoff(attempt);
            if Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(%error, attempt, ?pause, method_id, "retrying call");
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt: (re)connect if needed, send, wait. Also says whether the request
    /// may have reached the server.
    async fn attempt(&self, method_id: u32, payload: Bytes, deadline: Instant) -> (Answer, bool) {
        let expired = || IpcError::DeadlineExceeded {
            after_ms: millis(self.timeout),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let connection = match tokio::time::timeout(remaining, self.connection()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return (Err(error), false),
            Err(_) => return (Err(expired()), false),
        };
        let (correlation_id, answer) = match connection.register() {
            Ok(registered) => registered,
            Err(error) => return (Err(error), false),
        };
        let mut pending = PendingCall {
            connection: &connection,
            correlation_id,
            done: false,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout_us = u64::try_from(remaining.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let request = Envelope::new(
            correlation_id,
            Body::Request(pb::Request {
                method_id,
                timeout_us,
                payload,
            }),
        );
        let outcome = tokio::time::timeout_at(deadline.into(), async {
            if connection.outbound.send(request).await.is_err() {
                return (Err(IpcError::PeerClosed), false);
            }
            match answer.await {
                Ok(Ok(payload)) => (Ok(payload), true),
                Ok(Err(failed)) => (Err(failed.error), failed.sent),
                Err(_) => (Err(IpcError::PeerClosed), true),
            }
        })
        .await;
        match outcome {
            Ok(outcome) => {
                pending.done = true;
                outcome
            }
            Err(_) => (Err(expired()), true),
        }
    }

    /// The live connection, opening a new one when the last one failed.
    async fn connection(&self) -> Result<Arc<Connection>, IpcError> {
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let _one_at_a_time = self.shared.reconnect.lock().await;
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let shared = &self.shared;
        let connection =
            Connection::open(&shared.config, shared.service, &shared.server_policy).await?;
        *self.slot() = Some(connection.clone());
        Ok(connection)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Connection>>> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let mut slot = self.slot();
        match slot.as_ref() {
            Some(connection) if !connection.is_closed() => Some(connection.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Calls waiting for an answer on the current connection (0 when there is none).
    pub fn in_flight(&self) -> usize {
        self.slot()
            .as_ref()
            .map_or(0, |connection| connection.lock().pending.len())
    }
}

/// Removes a call from the table when it ends without an answer (timeout, or its future
/// was dropped) and tells the server to cancel it.
struct PendingCall<'a> {
    connection: &'a Connection,
    correlation_id: u64,
    done: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let removed = self.connection.lock().pending.remove(&self.correlation_id);
        if removed.is_some() {
            // Best effort: if the queue is full the server's deadline still bounds the work.
            let cancel = Envelope::new(self.correlation_id, Body::Cancel(pb::Cancel {}));
            let _ = self.connection.outbound.try_send(cancel);
        }
    }
}

/// One connection: the writer queue, the table of calls in flight, and its two tasks.
#[derive(Debug)]
struct Connection {
    outbound: mpsc::Sender<Envelope>,
    state: Mutex<State>,
    /// Mirrors `state.closed.is_some()` so the per-call check takes no lock.
    closed: AtomicBool,
    /// The server sent `GoAway`: no new calls on this connection.
    going_away: AtomicBool,
    next_id: AtomicU64,
    /// The reader and writer tasks; they hold only weak references, so they are stopped
    /// here when the last handle goes away.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

#[derive(Debug)]
struct Waiter {
    answer: oneshot::Sender<Delivery>,
    /// Set by the writer just before the request's frame is written, and cleared again
    /// if the write provably did not get the whole frame out.
    written: bool,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, Waiter>,
    /// Set once, when the connection fails; no call is registered after that.
    closed: Option<IpcError>,
}

impl Connection {
    /// Connects (checking who serves, per `server_policy`, before anything is sent)
    /// and performs the handshake.
    async fn open(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
        server_policy: &PeerPolicy,
    ) -> Result<Arc<Self>, IpcError> {
        let endpoint = config.endpoint_path.as_str();
        let timeout = config.accept_timeout();
        let stream = transport::connect_trusted(endpoint, timeout, server_policy).await?;
        let (read_half, write_half) = StreamHalf::pair(stream);
        let codec = FrameCodec::from_config(config);
        let mut reader = FramedRead::new(read_half, codec);
        let mut writer = FramedWrite::new(write_half, codec);

        let hello = Envelope::new(
            0,
            Body::Hello(pb::Hello {
                magic: HELLO_MAGIC,
                protocol_version: PROTOCOL_VERSION,
                service: service.name.to_owned(),
                schema_hash: service.schema_hash,
                max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
            }),
        );
        let handshake = async {
            // A busy server answers and closes even when the hello could not be written,
            // so read its answer either way.
            let sent = writer.send(hello).await;
            match reader.next().await {
                Some(frame) => Ok(<Envelope as prost::Message>::decode(frame?)?),
                None => Err(sent.err().unwrap_or(IpcError::PeerClosed)),
            }
        };
        let reply = match tokio::time::timeout(timeout, handshake).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(IpcError::ConnectionTimeout {
                    endpoint: endpoint.to_owned(),
                })
            }
        };
        let max_in_flight = match reply.body {
            Some(Body::HelloAck(ack)) => ack.max_in_flight.max(1) as usize,
            Some(Body::Status(status)) => {
                let status = Status::from_wire(status);
                let (endpoint, reason) = (endpoint.to_owned(), status.message().to_owned());
                return Err(match status.code() {
                    crate::Code::ResourceExhausted => IpcError::Busy { endpoint, reason },
                    crate::Code::PermissionDenied => {
                        tracing::debug!(%reason, "server refused this peer");
                        let reason = format!("the server refused this client: {reason}");
                        IpcError::PermissionDenied { endpoint, reason }
                    }
                    _ => IpcError::Handshake { endpoint, reason },
                });
            }
            _ => {
                return Err(IpcError::Handshake {
                    endpoint: endpoint.to_owned(),
                    reason: "server did not answer the handshake".to_owned(),
                })
            }
        };

        let (outbound, queue) = mpsc::channel(max_in_flight.clamp(16, 1024));
        let connection = Arc::new(Connection {
            outbound,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
        });
        let write_half = writer.into_inner();
        let writer = tokio::spawn(write_loop(
            write_half,
            codec,
            queue,
            config.write_timeout(),
            Arc::downgrade(&connection),
        ));
        let reader = tokio::spawn(read_loop(reader, Arc::downgrade(&connection)));
        connection
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([writer.abort_handle(), reader.abort_handle()]);
        Ok(connection)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || self.going_away.load(Ordering::Acquire)
            || self.outbound.is_closed()
    }

    /// Allocates a correlation id and a slot for its answer.
    fn register(&self) -> Result<(u64, oneshot::Receiver<Delivery>), IpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        let mut state = self.lock();
        if let Some(error) = &state.closed {
            return Err(error.clone());
        }
        if self.going_away.load(Ordering::Acquire) {
            return Err(IpcError::PeerClosed); // never sent: retried on a new connection
        }
        state.pending.insert(
            id,
            Waiter {
                answer,
                written: false,
            },
        );
        Ok((id, receiver))
    }

    fn complete(&self, correlation_id: u64, delivery: Delivery) {
        let waiter = self.lock().pending.remove(&correlation_id);
        // No waiter: the call timed out or was dropped; its late answer is discarded.
        if let Some(waiter) = waiter {
            let _ = waiter.answer.send(delivery);
        }
    }

    /// Marks requests as (about to be) written, or as not written after all. Returns
    /// `false`, marking nothing, once the connection has failed: then nothing more
    /// may be written, because its calls were already told whether they were sent.
    fn mark_written(&self, ids: impl Iterator<Item = u64>, written: bool) -> bool {
        let mut state = self.lock();
        if state.closed.is_some() {
            return false;
        }
        for id in ids {
            if let Some(waiter) = state.pending.get_mut(&id) {
                waiter.written = written;
            }
        }
        true
    }

    /// Ends the calls whose request the server says it never read (correlation id above
    /// `last_read`, from `GoAway`) as not sent, so that they may be retried, and takes
    /// no new call.
    fn fail_unread(&self, last_read: u64) {
        let unread: Vec<Waiter> = {
            let mut state = self.lock();
            // Under the lock, so that no call registers after this without seeing it.
            self.going_away.store(true, Ordering::Release);
            let ids: Vec<u64> = state
                .pending
                .keys()
                .copied()
                .filter(|id| *id > last_read)
                .collect();
            ids.iter()
                .filter_map(|id| state.pending.remove(id))
                .collect()
        };
        for waiter in unread {
            let failed = Failed {
                error: IpcError::PeerClosed,
                sent: false,
            };
            let _ = waiter.answer.send(Err(failed));
        }
    }

    /// Ends every call in flight with `error` and refuses new ones.
    fn fail(&self, error: IpcError) {
        let pending = {
            let mut state = self.lock();
            state.closed.get_or_insert(error.clone());
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut state.pending)
        };
        for (_, waiter) in pending {
            let failed = Failed {
                error: error.clone(),
                sent: waiter.written,
            };
            let _ = waiter.answer.send(Err(failed));
        }
    }
}

/// Largest chunk the writer assembles before writing it out, in bytes.
const WRITE_CHUNK: usize = 64 * 1024;

/// Writes queued envelopes, batching whatever is queued into as few writes as possible,
/// and keeps exact track of which requests got out: a request whose frame was not
/// completely written when the connection failed is reported as not sent.
async fn write_loop(
    mut stream: StreamHalf,
    mut codec: FrameCodec,
    mut queue: mpsc::Receiver<Envelope>,
    write_timeout: Duration,
    connection: std::sync::Weak<Connection>,
) {
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let mut batch = Vec::with_capacity(64);
    // (correlation id, end offset in `buffer`) of each request frame in the chunk.
    let mut requests: Vec<(u64, usize)> = Vec::with_capacity(64);
    let error = 'write: loop {
        if queue.recv_many(&mut batch, 64).await == 0 {
            return; // every sender is gone: the connection was dropped
        }
        let Some(live) = connection.upgrade() else {
            return;
        };
        let mut envelopes = batch.drain(..).peekable();
        while let Some(envelope) = envelopes.next() {
            let id = envelope.correlation_id;
            let is_request = matches!(envelope.body, Some(Body::Request(_)));
            match codec.encode(envelope, &mut buffer) {
                Ok(()) if is_request => requests.push((id, buffer.len())),
                Ok(()) => {}
                Err(error) => live.complete(id, Err(Failed { error, sent: false })),
            }
            if buffer.len() < WRITE_CHUNK && envelopes.peek().is_some() {
                continue;
            }
            if !live.mark_written(requests.iter().map(|(id, _)| *id), true) {
                return; // failed meanwhile; the reader has reported it
            }
            let mut written = 0;
            let write = async {
                while written < buffer.len() {
                    match stream.write(&buffer[written..]).await {
                        Ok(0) => return Err(IpcError::PeerClosed),
                        Ok(n) => written += n,
                        Err(error) => return Err(error.into()),
                    }
                }
                Ok(())
            };
            let result = match tokio::time::timeout(write_timeout, write).await {
                Ok(result) => result,
                Err(_) => Err(IpcError::Timeout {
                    operation: "write",
                    after_ms: millis(write_timeout),
                }),
            };
            if let Err(error) = result {
                let unwritten = requests.iter().filter(|(_, end)| *end > written);
                let _ = live.mark_written(unwritten.map(|(id, _)| *id), false);
                break 'write error;
            }
            buffer.clear();
            requests.clear();
            if buffer.capacity() > 4 * WRITE_CHUNK {
                buffer = BytesMut::with_capacity(8 * 1024); // give a burst's memory back
            }
        }
    };
    tracing::debug!(%error, "client write failed");
    // Nothing more goes out: requests still queued were never written.
    queue.close();
    while queue.try_recv().is_ok() {}
    if let Some(connection) = connection.upgrade() {
        connection.fail(error);
    }
}

/// Routes each answer to its call; on failure ends every call in flight.
async fn read_loop(
    mut reader: FramedRead<StreamHalf, FrameCodec>,
    connection: std::sync::Weak<Connection>,
) {
    let error = loop {
        let frame = match reader.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => break error,
            None => break IpcError::PeerClosed,
        };
        let Some(connection) = connection.upgrade() else {
            return; // every client handle is gone
        };
        let envelope = match <Envelope as prost::Message>::decode(frame) {
            Ok(envelope) => envelope,
            Err(error) => break error.into(),
        };
        let id = envelope.correlation_id;
        match envelope.body {
            Some(Body::Response(response)) => connection.complete(id, Ok(response.payload)),
            Some(Body::Status(status)) if id != 0 => {
                let error = Status::from_wire(status).into();
                connection.complete(id, Err(Failed { error, sent: true }))
            }
            Some(Body::Status(status)) => break Status::from_wire(status).into(),
            Some(Body::GoAway(go_away)) => {
                // Answers to the calls the server read still come; the others were
                // never read, so they end now as not sent (and are retried elsewhere).
                // New calls go to a new connection.
                tracing::debug!(
                    reason = %go_away.reason,
                    last = go_away.last_correlation_id,
                    "server is going away"
                );
                connection.fail_unread(go_away.last_correlation_id);
            }
            other => {
                break IpcError::InvalidMessage {
                    reason: format!("unexpected envelope from server: {other:?}"),
                }
            }
        }
    };
    tracing::debug!(%error, "client connection closed");
    if let Some(connection) = connection.upgrade() {
        connection.fail(error);
    }
}
