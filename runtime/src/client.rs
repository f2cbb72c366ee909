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
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::{
    codec::FrameCodec,
    envelope::{pb, Body, Envelope, HELLO_MAGIC, PROTOCOL_VERSION},
    transport::{self, StreamHalf},
    IpcConfig, IpcError, ServiceDescriptor, Status,
};

/// What a call in flight is eventually sent: the response payload or why there is none.
type Answer = Result<Bytes, IpcError>;

/// A typed service's client handle; generated clients (`FooClient`) wrap one.
///
/// Cloning is cheap and clones share the connection. Every call ends exactly once: with
/// its response, the server's [`Status`] (as [`IpcError::Status`]), or a transport error.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
    timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    config: IpcConfig,
    service: &'static ServiceDescriptor,
    /// The live connection, if any; read on every call, so a plain mutex held briefly.
    current: Mutex<Option<Arc<Connection>>>,
    /// Serialises reconnection so that concurrent callers open one connection, not many.
    reconnect: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects to the service described by `service` at `config.endpoint_path` and
    /// performs the handshake.
    ///
    /// # Errors
    /// `Config` for an invalid configuration; `ServerNotFound`, `ConnectionRefused`,
    /// `PermissionDenied`, `ConnectionTimeout` naming the endpoint; `Busy` when the
    /// server is at its connection limit; `Handshake` when the server serves another
    /// service or another version of it.
    pub async fn connect(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
    ) -> Result<Self, IpcError> {
        config.validate()?;
        let connection = Connection::open(config, service).await?;
        Ok(Self {
            timeout: config.call_timeout(),
            shared: Arc::new(Shared {
                config: config.clone(),
                service,
                current: Mutex::new(Some(connection)),
                reconnect: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// This handle with another per-call timeout (the deadline sent with each call).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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
    /// handle's timeout.
    ///
    /// # Errors
    /// `Status` when the handler returned an error; `DeadlineExceeded` when the timeout
    /// passed (the server is told to cancel); `TooLarge` when the request exceeds
    /// `max_frame_bytes` (nothing is sent); `PeerClosed` or a framing error when the
    /// connection failed; `Decode` when the response is not a valid `Resp`; the
    /// [`connect`](Self::connect) errors when a new connection was needed and failed.
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
    pub async fn call_raw(&self, method_id: u32, payload: Bytes) -> Answer {
        // Leave room for the envelope around the payload (ids, tags, lengths).
        const ENVELOPE_OVERHEAD: usize = 32;
        let max = self.shared.config.max_frame_bytes;
        if payload.len() + ENVELOPE_OVERHEAD > max {
            return Err(IpcError::TooLarge {
                size: payload.len() + ENVELOPE_OVERHEAD,
                max_size: max,
            });
        }
        let connection = self.connection().await?;
        let (correlation_id, answer) = connection.register()?;
        let mut pending = PendingCall {
            connection: &connection,
            correlation_id,
            done: false,
        };
        let timeout_us = u64::try_from(self.timeout.as_micros()).unwrap_or(u64::MAX);
        let request = Envelope::new(
            correlation_id,
            Body::Request(pb::Request {
                method_id,
                timeout_us,
                payload,
            }),
        );
        let outcome = tokio::time::timeout(self.timeout, async {
            connection
                .outbound
                .send(request)
                .await
                .map_err(|_| IpcError::PeerClosed)?;
            answer.await.unwrap_or(Err(IpcError::PeerClosed))
        })
        .await;
        match outcome {
            Ok(answer) => {
                pending.done = true;
                answer
            }
            Err(_) => Err(IpcError::DeadlineExceeded {
                after_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            }),
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
        let connection = Connection::open(&self.shared.config, self.shared.service).await?;
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
    /// The reader task; it holds only a weak reference, so it is stopped here when the
    /// last handle goes away.
    reader: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let reader = self
            .reader
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(reader) = reader.take() {
            reader.abort();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Answer>>,
    /// Set once, when the connection fails; no call is registered after that.
    closed: Option<IpcError>,
}

impl Connection {
    async fn open(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
    ) -> Result<Arc<Self>, IpcError> {
        let endpoint = config.endpoint_path.as_str();
        let timeout = config.accept_timeout();
        let stream = transport::connect(endpoint, timeout).await?;
        let (read_half, write_half) = StreamHalf::pair(stream);
        let codec = FrameCodec::new(config.max_frame_bytes, config.crc32_variant);
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
            writer.send(hello).await?;
            match reader.next().await {
                Some(frame) => Ok(<Envelope as prost::Message>::decode(frame?)?),
                None => Err(IpcError::PeerClosed),
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
                return Err(if status.code() == crate::Code::ResourceExhausted {
                    IpcError::Busy {
                        endpoint: endpoint.to_owned(),
                        reason: status.message().to_owned(),
                    }
                } else {
                    IpcError::Handshake {
                        endpoint: endpoint.to_owned(),
                        reason: status.message().to_owned(),
                    }
                });
            }
            _ => {
                return Err(IpcError::Handshake {
                    endpoint: endpoint.to_owned(),
                    reason: "server did not answer the handshake".to_owned(),
                })
            }
        };

        let (outbound, queue) = mpsc::channel(max_in_flight.max(16));
        let connection = Arc::new(Connection {
            outbound,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            reader: Mutex::new(None),
        });
        let write_timeout = config.write_timeout();
        tokio::spawn(write_loop(
            writer,
            queue,
            write_timeout,
            Arc::downgrade(&connection),
        ));
        let reader = tokio::spawn(read_loop(reader, Arc::downgrade(&connection)));
        *connection
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reader.abort_handle());
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
    fn register(&self) -> Result<(u64, oneshot::Receiver<Answer>), IpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if let Some(error) = &state.closed {
            return Err(error.clone());
        }
        state.pending.insert(id, tx);
        Ok((id, rx))
    }

    fn complete(&self, correlation_id: u64, answer: Answer) {
        let waiter = self.lock().pending.remove(&correlation_id);
        // No waiter: the call timed out or was dropped; its late answer is discarded.
        if let Some(waiter) = waiter {
            let _ = waiter.send(answer);
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
            let _ = waiter.send(Err(error.clone()));
        }
    }
}

/// Writes queued envelopes, batching everything already queued into one flush.
async fn write_loop(
    mut writer: FramedWrite<StreamHalf, FrameCodec>,
    mut queue: mpsc::Receiver<Envelope>,
    write_timeout: Duration,
    connection: std::sync::Weak<Connection>,
) {
    let mut batch = Vec::with_capacity(64);
    while queue.recv_many(&mut batch, 64).await > 0 {
        let write = async {
            for envelope in batch.drain(..) {
                writer.feed(envelope).await?;
            }
            SinkExt::<Envelope>::flush(&mut writer).await
        };
        let error = match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(_) => IpcError::Timeout {
                operation: "write",
                after_ms: u64::try_from(write_timeout.as_millis()).unwrap_or(u64::MAX),
            },
        };
        tracing::debug!(%error, "client write failed");
        if let Some(connection) = connection.upgrade() {
            connection.fail(error);
        }
        return;
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
                connection.complete(id, Err(Status::from_wire(status).into()))
            }
            Some(Body::Status(status)) => break Status::from_wire(status).into(),
            Some(Body::GoAway(go_away)) => {
                // Answers to the calls in flight still come; new calls go elsewhere.
                tracing::debug!(reason = %go_away.reason, "server is going away");
                connection.going_away.store(true, Ordering::Release);
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
