//! The client side of a connection: many calls in flight on one connection, each answer
//! matched to its caller by correlation id.
//!
//! A [`Client`] is a cheap, cloneable handle. A call's request is encoded straight into
//! its frame (`request`): by the caller itself, which also writes it when nothing else
//! is queued and the writer task is idle, or else by one writer task, which batches
//! whatever frames are queued into one write. One reader task routes each answer to the
//! waiting call through a `oneshot`, and ends calls whose deadline passed (one timer
//! per connection, not per call). A call that times out, or whose future is dropped, is
//! removed from the table and the server is sent a `Cancel`. When the connection fails,
//! every call in flight ends with that error; the next call opens a new connection (a
//! call is never sent twice).
//!
//! Layout: this module is the handle (retries, deadlines, breaker, rate limit,
//! reconnection); `connection` is one connection (its table of calls in flight, the
//! outbox, reader and writer tasks); `request` encodes a request's envelope.

mod connection;
mod request;
mod stream;

pub use self::stream::Streaming;

use std::{
    num::NonZeroU32,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use std::{future::Future, pin::Pin};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument;

use self::{
    connection::{Connection, Deadline, PendingCall},
    request::{Encoded, Message, RequestBody, RequestFrame},
    stream::RawStreaming,
};
use crate::{
    config::millis,
    envelope::{pb, Body, Envelope, ENVELOPE_OVERHEAD},
    resilience::{
        is_failure, is_retryable, BreakerConfig, BreakerState, CircuitBreaker, RateLimit,
        RetryPolicy,
    },
    transport::{self, StreamHalf},
    IpcConfig, IpcError, PeerPolicy, ServiceDescriptor,
};

/// A call's result.
type Answer = Result<Bytes, IpcError>;

/// A typed service's client handle; generated clients (`FooClient`) wrap one.
///
/// Cloning is cheap and clones share the connection (and the circuit breaker and rate
/// limit, when set). Every call ends exactly once: with its response, the server's
/// [`Status`](crate::Status) (as [`IpcError::Status`]), or a transport error. When the connection is
/// lost, the next call opens a new one, with backoff, per its [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
    timeout: Duration,
    /// The deadline of server-streaming calls; `None`: they run until they end, are
    /// dropped, or the connection goes.
    stream_timeout: Option<Duration>,
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
    /// How connections are made.
    dialer: Dialer,
    /// The live connection, if any; read on every call, so a plain mutex held briefly.
    /// Read by every call; written only to replace a failed connection.
    current: RwLock<Option<Arc<Connection>>>,
    /// Serialises reconnection so that concurrent callers open one connection, not many.
    reconnect: tokio::sync::Mutex<()>,
}

/// Makes a connection's two halves (the `testing` module's in-memory pipes).
pub(crate) type DialFn = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<(StreamHalf, StreamHalf), IpcError>> + Send>>
        + Send
        + Sync,
>;

/// How a client reaches its server.
#[derive(Clone)]
enum Dialer {
    /// The endpoint's local socket, checked against the server policy.
    Socket,
    /// Anything else that yields a connection's halves.
    Custom(DialFn),
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialer::Socket => "Socket",
            Dialer::Custom(_) => "Custom",
        })
    }
}

impl Shared {
    /// A new connection, handshake done.
    async fn open(&self) -> Result<Arc<Connection>, IpcError> {
        let halves = match &self.dialer {
            Dialer::Socket => {
                let endpoint = self.config.endpoint_path.as_str();
                let timeout = self.config.accept_timeout();
                let stream =
                    transport::connect_trusted(endpoint, timeout, &self.server_policy).await?;
                StreamHalf::pair(stream)
            }
            Dialer::Custom(dial) => dial().await?,
        };
        Connection::open(halves, &self.config, self.service).await
    }
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
        let connection = client.shared.open().await?;
        *client.slot_mut() = Some(connection);
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
            stream_timeout: None,
            retry: RetryPolicy::default(),
            breaker: None,
            rate_limit: None,
            shared: Arc::new(Shared {
                config: config.clone(),
                service,
                server_policy: PeerPolicy::same_user(),
                dialer: Dialer::Socket,
                current: RwLock::new(None),
                reconnect: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A lazy client whose connections come from `dial` rather than the endpoint's
    /// socket (the `testing` module's in-memory pipes).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn with_dialer(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
        dial: DialFn,
    ) -> Result<Self, IpcError> {
        let mut client = Self::lazy(config, service)?;
        client.shared = Arc::new(Shared {
            config: config.clone(),
            service,
            server_policy: PeerPolicy::any(),
            dialer: Dialer::Custom(dial),
            current: RwLock::new(None),
            reconnect: tokio::sync::Mutex::new(()),
        });
        Ok(client)
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
            dialer: self.shared.dialer.clone(),
            current: RwLock::new(None),
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

    /// This handle with a deadline for its server-streaming calls: the whole stream
    /// must end within `timeout` (sent to the server, which stops the producer then),
    /// else its last item is `DeadlineExceeded`. By default streams have no deadline:
    /// a watch runs until it is dropped or the connection is lost. Opening a stream
    /// (connecting, sending the request) is bounded by the unary timeout either way.
    pub fn with_stream_timeout(mut self, timeout: Duration) -> Self {
        self.stream_timeout = Some(timeout);
        self
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
        let answer = self.call_body(method_id, &Message(request)).await?;
        Ok(crate::payload::decode::<Resp>(&answer)?)
    }

    /// Like [`call`](Self::call) with the request already encoded; returns the encoded
    /// response.
    ///
    /// # Errors
    /// As for [`call`](Self::call), except `Decode`.
    pub async fn call_raw(&self, method_id: u32, payload: Bytes) -> Answer {
        self.call_body(method_id, &Encoded(&payload)).await
    }

    /// A call, its request encoded into its frame by `payload` (on every attempt).
    async fn call_body(&self, method_id: u32, payload: &dyn RequestBody) -> Answer {
        let service = self.shared.service;
        let span = tracing::debug_span!(
            "call",
            service = service.name,
            method = service.method(method_id).map_or("(unknown)", |m| m.name),
            deadline_ms = millis(self.timeout),
            outcome = tracing::field::Empty,
        );
        let answer = self
            .call_with_retries(method_id, payload)
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            match &answer {
                Ok(_) => span.record("outcome", "OK"),
                Err(IpcError::Status(status)) => {
                    span.record("outcome", status.code().as_str_name())
                }
                Err(error) => span.record("outcome", tracing::field::display(error)),
            };
        }
        answer
    }

    async fn call_with_retries(&self, method_id: u32, payload: &dyn RequestBody) -> Answer {
        let max = self.shared.config.max_frame_bytes;
        let size = payload.encoded_len() + ENVELOPE_OVERHEAD;
        if size > max {
            return Err(IpcError::TooLarge {
                size,
                max_size: max,
            });
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        let idempotent = self
            .shared
            .service
            .method(method_id)
            .is_some_and(|method| method.idempotent);
        // The first attempt reuses the deadline's clock reading (one per call, W1)
        // unless the rate limit made it wait.
        let mut now = Some(start);
        if let Some(limit) = &self.rate_limit {
            limit.acquire(self.timeout).await?;
            now = None;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = match &self.breaker {
                Some(breaker) => Some(breaker.acquire()?),
                None => None,
            };
            let (answer, sent) = self.attempt(method_id, payload, deadline, now.take()).await;
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
    /// may have reached the server. `now` is a clock reading taken just before, if
    /// there is one.
    async fn attempt(
        &self,
        method_id: u32,
        payload: &dyn RequestBody,
        deadline: Instant,
        mut now: Option<Instant>,
    ) -> (Answer, bool) {
        let expired = || IpcError::DeadlineExceeded {
            after_ms: millis(self.timeout),
        };
        let connection = match self.live() {
            Some(connection) => connection,
            None => {
                now = None; // connecting takes time
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, self.connection()).await {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => return (Err(error), false),
                    Err(_) => return (Err(expired()), false),
                }
            }
        };
        let registered = connection.register(Deadline {
            at: deadline,
            after_ms: millis(self.timeout),
        });
        let (correlation_id, answer) = match registered {
            Ok(registered) => registered,
            Err(error) => return (Err(error), false),
        };
        let pending = PendingCall {
            connection: &connection,
            correlation_id,
            done: false,
        };
        let remaining = deadline.saturating_duration_since(now.unwrap_or_else(Instant::now));
        let timeout_us = u64::try_from(remaining.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let request = RequestFrame {
            correlation_id,
            method_id,
            timeout_us,
            payload,
        };
        // The connection's reader ends the call at its deadline (no timer per call);
        // only a wait for room in a full queue takes a timer of its own.
        if connection.write_now(&request) {
            return self.answer(answer, pending).await;
        }
        match connection.outbound.try_send(request.to_envelope()) {
            Ok(()) => {}
            Err(TrySendError::Full(request)) => {
                let queued = connection.outbound.send(request);
                match tokio::time::timeout_at(deadline.into(), queued).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_closed)) => return (Err(IpcError::PeerClosed), false),
                    Err(_) => return (Err(expired()), false),
                }
            }
            Err(TrySendError::Closed(_)) => return (Err(IpcError::PeerClosed), false),
        }
        self.answer(answer, pending).await
    }

    /// Waits for the answer of a call whose request is on its way.
    async fn answer(
        &self,
        answer: tokio::sync::oneshot::Receiver<connection::Delivery>,
        mut pending: PendingCall<'_>,
    ) -> (Answer, bool) {
        let outcome = match answer.await {
            Ok(Ok(payload)) => (Ok(payload), true),
            Ok(Err(failed)) => (Err(failed.error), failed.sent),
            Err(_) => (Err(IpcError::PeerClosed), true),
        };
        pending.done = true;
        outcome
    }

    /// Starts server-streaming method `method_id` with `request`; its items arrive on
    /// the returned [`Streaming`]. Returns once the request is on its way (not when the
    /// first item comes); the connection is opened first if needed, with the unary
    /// retry policy for connection failures (nothing was sent, so any method may be
    /// retried then).
    ///
    /// # Errors
    /// `TooLarge` when the request exceeds `max_frame_bytes`; `DeadlineExceeded` when
    /// the connection could not be had within this handle's timeout; `RateLimited`,
    /// `CircuitOpen`; the [`connect`](Self::connect) errors. Failures after that
    /// (the handler's status, a lost connection) come as the stream's last item.
    pub async fn server_stream<Req, Item>(
        &self,
        method_id: u32,
        request: &Req,
    ) -> Result<Streaming<Item>, IpcError>
    where
        Req: prost::Message,
    {
        let payload = Bytes::from(request.encode_to_vec());
        let max = self.shared.config.max_frame_bytes;
        if payload.len() + ENVELOPE_OVERHEAD > max {
            return Err(IpcError::TooLarge {
                size: payload.len() + ENVELOPE_OVERHEAD,
                max_size: max,
            });
        }
        let opened = Instant::now() + self.timeout;
        if let Some(limit) = &self.rate_limit {
            limit.acquire(self.timeout).await?;
        }
        let window = self.shared.config.stream_window;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = match &self.breaker {
                Some(breaker) => Some(breaker.acquire()?),
                None => None,
            };
            let error = match self
                .open_stream(method_id, payload.clone(), window, opened)
                .await
            {
                Ok(raw) => {
                    if let Some(permit) = permit {
                        permit.record(true);
                    }
                    return Ok(Streaming::new(raw));
                }
                Err(error) => error,
            };
            if let Some(permit) = permit {
                permit.record(!is_failure(&error));
            }
            if attempt >= self.retry.max_attempts || !is_retryable(&error, false, false) {
                return Err(error);
            }
            let pause = self.retry.backoff(attempt);
            if Instant::now() + pause >= opened {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt at starting a stream: connection, registration, request queued.
    /// Every error it returns means nothing was sent.
    async fn open_stream(
        &self,
        method_id: u32,
        payload: Bytes,
        window: u32,
        opened: Instant,
    ) -> Result<RawStreaming, IpcError> {
        let remaining = opened.saturating_duration_since(Instant::now());
        let expired = || IpcError::DeadlineExceeded {
            after_ms: millis(self.timeout),
        };
        let connection = tokio::time::timeout(remaining, self.connection())
            .await
            .map_err(|_| expired())??;
        let (correlation_id, items) = connection.register_stream(window)?;
        let timeout_us = self.stream_timeout.map_or(0, |timeout| {
            u64::try_from(timeout.as_micros())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        let request = Envelope::new(
            correlation_id,
            Body::Request(pb::Request {
                method_id,
                timeout_us,
                payload,
                initial_credit: window,
            }),
        );
        // From here the stream owns the registration: dropping it cancels the call.
        let raw = RawStreaming::new(
            correlation_id,
            items,
            connection.clone(),
            window,
            self.stream_timeout,
        );
        let remaining = opened.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, connection.outbound.send(request)).await {
            Ok(Ok(())) => Ok(raw),
            Ok(Err(_closed)) => Err(IpcError::PeerClosed),
            Err(_) => Err(expired()),
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
        let connection = self.shared.open().await?;
        *self.slot_mut() = Some(connection.clone());
        Ok(connection)
    }

    fn slot(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<Connection>>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slot_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Connection>>> {
        self.shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection unless it has failed (a failed one is let go).
    fn live(&self) -> Option<Arc<Connection>> {
        match self.slot().as_ref() {
            Some(connection) if !connection.is_closed() => return Some(connection.clone()),
            Some(_) => {}
            None => return None,
        }
        let mut slot = self.slot_mut();
        if slot
            .as_ref()
            .is_some_and(|connection| connection.is_closed())
        {
            *slot = None;
        }
        None
    }

    /// Calls waiting for an answer on the current connection (0 when there is none).
    pub fn in_flight(&self) -> usize {
        self.slot()
            .as_ref()
            .map_or(0, |connection| connection.in_flight())
    }
}
