//! One client connection: the writer queue, the table of calls in flight (each answer
//! routed to its caller by correlation id), and the reader and writer tasks.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
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
    envelope::{pb, Body, Envelope},
    handshake,
    transport::{self, StreamHalf},
    IpcConfig, IpcError, PeerPolicy, ServiceDescriptor, Status,
};

/// What the reader (or a failing connection) hands a waiting call.
pub(super) type Delivery = Result<Bytes, Failed>;

/// A call that ended without a response.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: IpcError,
    /// Whether the request may have reached the server. `false` only when its frame was
    /// provably not (completely) written, so a retry cannot run the handler twice.
    pub(super) sent: bool,
}

/// Removes a call from the table when it ends without an answer (timeout, or its future
/// was dropped) and tells the server to cancel it.
pub(super) struct PendingCall<'a> {
    pub(super) connection: &'a Connection,
    pub(super) correlation_id: u64,
    pub(super) done: bool,
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
pub(super) struct Connection {
    pub(super) outbound: mpsc::Sender<Envelope>,
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
    pub(super) async fn open(
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
        server_policy: &PeerPolicy,
    ) -> Result<Arc<Self>, IpcError> {
        let endpoint = config.endpoint_path.as_str();
        let timeout = config.accept_timeout();
        let stream = transport::connect_trusted(endpoint, timeout, server_policy).await?;
        let (read_half, write_half) = StreamHalf::pair(stream);
        let codec = config.frame_codec();
        let mut reader = FramedRead::new(read_half, codec);
        let mut writer = FramedWrite::new(write_half, codec);

        let hello = handshake::hello(config, service);
        let exchange = async {
            // A busy server answers and closes even when the hello could not be written,
            // so read its answer either way.
            let sent = writer.send(hello).await;
            match reader.next().await {
                Some(frame) => Ok(<Envelope as prost::Message>::decode(frame?)?),
                None => Err(sent.err().unwrap_or(IpcError::PeerClosed)),
            }
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(IpcError::ConnectionTimeout {
                    endpoint: endpoint.to_owned(),
                })
            }
        };
        let ack = handshake::accepted(reply, endpoint)?;
        let max_in_flight = ack.max_in_flight.max(1) as usize;

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

    /// Calls waiting for an answer on this connection.
    pub(super) fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || self.going_away.load(Ordering::Acquire)
            || self.outbound.is_closed()
    }

    /// Allocates a correlation id and a slot for its answer.
    pub(super) fn register(&self) -> Result<(u64, oneshot::Receiver<Delivery>), IpcError> {
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

    pub(super) fn complete(&self, correlation_id: u64, delivery: Delivery) {
        let waiter = self.lock().pending.remove(&correlation_id);
        // No waiter: the call timed out or was dropped; its late answer is discarded.
        if let Some(waiter) = waiter {
            let _ = waiter.answer.send(delivery);
        }
    }

    /// Marks requests as (about to be) written, or as not written after all. Returns
    /// `false`, marking nothing, once the connection has failed: then nothing more
    /// may be written, because its calls were already told whether they were sent.
    pub(super) fn mark_written(&self, ids: impl Iterator<Item = u64>, written: bool) -> bool {
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
    pub(super) fn fail_unread(&self, last_read: u64) {
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
    pub(super) fn fail(&self, error: IpcError) {
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
