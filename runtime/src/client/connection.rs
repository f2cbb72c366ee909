//! One client connection: the writer queue, the table of calls in flight (each answer
//! routed to its caller by correlation id), and the reader and writer tasks.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
// Our own correlation ids: foldhash hashes them in a few ns, SipHash in ~20.
use foldhash::HashMap;
use futures_util::{task::AtomicWaker, SinkExt, StreamExt};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot, Notify},
};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

use super::request::RequestFrame;
use crate::{
    codec::FrameCodec,
    config::millis,
    envelope::{pb, Body, Envelope},
    handshake,
    transport::StreamHalf,
    IpcConfig, IpcError, ServiceDescriptor, Status,
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

/// What the reader hands a server-streaming call: an item, or the error that ends it.
/// The stream's channel closes after its last item or error.
pub(super) type StreamEvent = Result<Bytes, IpcError>;

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
        self.connection.cancel(self.correlation_id);
    }
}

/// One connection: the writer queue, the table of calls in flight, and its two tasks.
#[derive(Debug)]
pub(super) struct Connection {
    /// Requests, bounded: a caller waits when the writer is behind.
    pub(super) outbound: mpsc::Sender<Envelope>,
    /// Cancels and stream credit, written before queued requests. Unbounded so that a
    /// `Drop` can always send one; bounded in practice by the calls (one cancel each)
    /// and the items received (one credit frame per half window).
    control: mpsc::UnboundedSender<Envelope>,
    state: Mutex<State>,
    /// Mirrors `state.closed.is_some()` so the per-call check takes no lock.
    closed: AtomicBool,
    /// The server sent `GoAway`: no new calls on this connection.
    going_away: AtomicBool,
    next_id: AtomicU64,
    /// The unary calls' deadlines, enforced by the reader task.
    deadlines: Arc<Deadlines>,
    /// The write half and the bytes on their way out, shared with the writer task.
    outlet: Arc<Outlet>,
    codec: FrameCodec,
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
    route: Route,
    /// Set by the writer just before the request's frame is written, and cleared again
    /// if the write provably did not get the whole frame out.
    written: bool,
    /// When the reader ends the call with `DeadlineExceeded` (unary calls only).
    deadline: Option<Deadline>,
}

/// A unary call's deadline.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    /// The caller's timeout, for the error (`DeadlineExceeded { after_ms }`).
    pub(super) after_ms: u64,
}

/// The deadlines of one connection's unary calls, enforced by its reader task with one
/// timer, rather than a timer entry per call (entering and removing one cost about 2% of
/// a W1 call and contended across workers in W2, in the bench). The timer is moved only
/// when it fires, or when a call's deadline comes before it; calls that end in time
/// never touch it.
#[derive(Debug)]
struct Deadlines {
    epoch: Instant,
    /// When the reader's timer fires, in microseconds from `epoch`: never after the
    /// earliest deadline of the calls in the table. Changed under the state lock.
    armed_us: AtomicU64,
    /// Set when `armed_us` moved earlier; the reader clears it and re-arms its timer.
    moved_earlier: AtomicBool,
    /// The reader task, woken when `moved_earlier` is set. Checked on every pass of the
    /// reader's loop: an atomic exchange, where a `Notify` took a lock (W1).
    reader: AtomicWaker,
    /// How far ahead the timer is set when no call has a deadline (the configured call
    /// timeout: calls with the default timeout then never move it).
    horizon: Duration,
}

impl Deadlines {
    fn new(horizon: Duration) -> Self {
        let epoch = Instant::now();
        let deadlines = Self {
            epoch,
            armed_us: AtomicU64::new(0),
            moved_earlier: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            horizon,
        };
        deadlines.set_armed(epoch + horizon);
        deadlines
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn armed(&self) -> Instant {
        self.epoch + Duration::from_micros(self.armed_us.load(Ordering::Acquire))
    }

    fn set_armed(&self, at: Instant) {
        self.armed_us.store(self.micros(at), Ordering::Release);
    }

    /// Ready once `armed_us` has moved earlier since the last time it was; otherwise
    /// registers the reader's waker (before looking, so no move is missed).
    fn poll_moved_earlier(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.reader.register(cx.waker());
        if self.moved_earlier.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Where a call's answers go.
#[derive(Debug)]
enum Route {
    /// A unary call: its one answer.
    Unary(oneshot::Sender<Delivery>),
    /// A server-streaming call: its items, then its error if it fails. The channel
    /// holds the credit window plus one, and the reader never fills the last slot with
    /// an item, so the ending error always fits.
    Stream(mpsc::Sender<StreamEvent>),
}

impl Waiter {
    /// Ends the call with `error`; `sent` says whether its request may have got out.
    fn fail(self, error: IpcError, sent: bool) {
        match self.route {
            Route::Unary(answer) => {
                let _ = answer.send(Err(Failed { error, sent }));
            }
            Route::Stream(items) => {
                let _ = items.try_send(Err(error));
            }
        }
    }
}

/// The connection's way out: the write half, and the frames not yet written. The
/// writer task takes the stream out while it writes; while it waits for work, a caller
/// whose request finds nothing queued writes its own frame (see
/// [`Connection::write_now`]), which spares the hand-off to the writer task.
#[derive(Debug)]
struct Outlet {
    outbox: Mutex<Outbox>,
    /// Tells the writer task that a caller left bytes in the outbox.
    flush: Notify,
}

#[derive(Debug)]
struct Outbox {
    /// `None` while the writer task is writing with it (or after it failed).
    stream: Option<StreamHalf>,
    /// What a caller's write left unwritten (the writer task writes it next).
    buffer: BytesMut,
    /// (correlation id, end offset in `buffer`) of each request frame in `buffer`.
    requests: Vec<(u64, usize)>,
}

impl Outlet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Largest request a caller writes itself, in bytes; larger ones go to the writer task.
const DIRECT_WRITE_MAX: usize = 64 * 1024;

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
        (read_half, write_half): (StreamHalf, StreamHalf),
        config: &IpcConfig,
        service: &'static ServiceDescriptor,
    ) -> Result<Arc<Self>, IpcError> {
        let endpoint = config.endpoint_path.as_str();
        let timeout = config.accept_timeout();
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
        let (control, control_queue) = mpsc::unbounded_channel();
        let connection = Arc::new(Connection {
            outbound,
            control,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            deadlines: Arc::new(Deadlines::new(config.call_timeout())),
            outlet: Arc::new(Outlet {
                outbox: Mutex::new(Outbox {
                    stream: Some(writer.into_inner()),
                    buffer: BytesMut::new(),
                    requests: Vec::new(),
                }),
                flush: Notify::new(),
            }),
            codec,
            tasks: Mutex::new(Vec::new()),
        });
        let writer = tokio::spawn(write_loop(
            connection.outlet.clone(),
            codec,
            control_queue,
            queue,
            config.write_timeout(),
            Arc::downgrade(&connection),
        ));
        let reader = tokio::spawn(read_loop(
            reader,
            connection.deadlines.clone(),
            Arc::downgrade(&connection),
        ));
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

    /// Allocates a correlation id and a slot for its answer, which is
    /// `DeadlineExceeded` if nothing else came by `deadline`.
    pub(super) fn register(
        &self,
        deadline: Deadline,
    ) -> Result<(u64, oneshot::Receiver<Delivery>), IpcError> {
        let (answer, receiver) = oneshot::channel();
        let id = self.register_route(Route::Unary(answer), Some(deadline))?;
        Ok((id, receiver))
    }

    /// Allocates a correlation id for a server-streaming call that grants `window`
    /// items of credit, and the channel its items arrive on.
    pub(super) fn register_stream(
        &self,
        window: u32,
    ) -> Result<(u64, mpsc::Receiver<StreamEvent>), IpcError> {
        let (items, receiver) = mpsc::channel(window as usize + 1);
        let id = self.register_route(Route::Stream(items), None)?;
        Ok((id, receiver))
    }

    fn register_route(&self, route: Route, deadline: Option<Deadline>) -> Result<u64, IpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
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
                route,
                written: false,
                deadline,
            },
        );
        let deadlines = &*self.deadlines;
        let earlier = deadline.filter(|deadline| {
            deadlines.micros(deadline.at) < deadlines.armed_us.load(Ordering::Acquire)
        });
        if let Some(deadline) = earlier {
            deadlines.set_armed(deadline.at);
        }
        drop(state);
        if earlier.is_some() {
            deadlines.moved_earlier.store(true, Ordering::Release);
            deadlines.reader.wake();
        }
        Ok(id)
    }

    /// Ends the calls whose deadline is at or before `now` with `DeadlineExceeded` and
    /// tells the server to stop them; returns when the reader's timer is to fire next.
    fn expire(&self, now: Instant) -> Instant {
        let (expired, next) = {
            let mut state = self.lock();
            let mut earliest = now + self.deadlines.horizon;
            let mut ids = Vec::new();
            for (id, waiter) in &state.pending {
                match waiter.deadline {
                    Some(deadline) if deadline.at <= now => ids.push(*id),
                    Some(deadline) => earliest = earliest.min(deadline.at),
                    None => {}
                }
            }
            let expired: Vec<(u64, Waiter)> = ids
                .into_iter()
                .filter_map(|id| state.pending.remove(&id).map(|waiter| (id, waiter)))
                .collect();
            self.deadlines.set_armed(earliest);
            (expired, earliest)
        };
        for (id, waiter) in expired {
            let _ = self
                .control
                .send(Envelope::new(id, Body::Cancel(pb::Cancel {})));
            let after_ms = waiter.deadline.map_or(0, |deadline| deadline.after_ms);
            let sent = waiter.written;
            waiter.fail(IpcError::DeadlineExceeded { after_ms }, sent);
        }
        next
    }

    /// Writes `request` here, on the caller's task, when nothing is queued and the
    /// writer task is idle: encoded into the outbox and written as far as the socket
    /// takes it without waiting (all synchronous: dropping the caller cannot cut a
    /// frame). The writer task writes what is left, or meets the failure and ends the
    /// connection. `false`: nothing was done, the request is to be queued.
    pub(super) fn write_now(&self, request: &RequestFrame<'_>) -> bool {
        let queued = self.outbound.capacity() != self.outbound.max_capacity();
        let len = request.encoded_len();
        if queued || len > DIRECT_WRITE_MAX {
            return false;
        }
        let Ok(mut outbox) = self.outlet.outbox.try_lock() else {
            return false; // the writer task is taking or returning the stream
        };
        let Outbox {
            stream: Some(stream),
            buffer,
            requests,
        } = &mut *outbox
        else {
            return false; // the writer task is writing
        };
        if !buffer.is_empty() {
            return false; // the writer task has yet to write what is there
        }
        let id = request.correlation_id;
        if let Err(error) = self
            .codec
            .encode_with(len, buffer, |dst| request.encode(dst))
        {
            drop(outbox);
            self.complete(id, Err(Failed { error, sent: false }));
            return true;
        }
        if !self.mark_written(std::iter::once(id), true) {
            buffer.clear(); // the connection failed meanwhile; the call was told
            return true;
        }
        requests.push((id, buffer.len()));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let mut written = 0;
        while written < buffer.len() {
            match std::pin::Pin::new(&mut *stream).poll_write(&mut context, &buffer[written..]) {
                std::task::Poll::Ready(Ok(n)) if n > 0 => written += n,
                // Full, closed or failed: the writer task takes over.
                _ => break,
            }
        }
        buffer.advance(written);
        requests.retain_mut(|(_, end)| {
            *end = end.saturating_sub(written);
            *end > 0
        });
        let rest = !buffer.is_empty();
        drop(outbox);
        if rest {
            self.outlet.flush.notify_one();
        }
        true
    }

    /// Ends call `correlation_id` with `delivery` (a response, or why it failed).
    pub(super) fn complete(&self, correlation_id: u64, delivery: Delivery) {
        let waiter = self.lock().pending.remove(&correlation_id);
        // No waiter: the call timed out or was dropped; its late answer is discarded.
        match (waiter, delivery) {
            (None, _) => {}
            (Some(waiter), Err(failed)) => {
                let error = match (failed.error, waiter.deadline) {
                    // The server stopped the handler at the deadline this call sent it,
                    // and said so before this side's timer fired (the server's clock
                    // starts at arrival, so its deadline is never before ours, but the
                    // two timers round to different millisecond ticks): the caller
                    // sees the same error either way.
                    (IpcError::Status(status), Some(deadline))
                        if status.code() == crate::status::Code::DeadlineExceeded
                            && deadline.at <= Instant::now() =>
                    {
                        IpcError::DeadlineExceeded {
                            after_ms: deadline.after_ms,
                        }
                    }
                    (error, _) => error,
                };
                waiter.fail(error, failed.sent)
            }
            (
                Some(Waiter {
                    route: Route::Unary(answer),
                    ..
                }),
                Ok(payload),
            ) => {
                let _ = answer.send(Ok(payload));
            }
            (Some(waiter), Ok(_)) => waiter.fail(
                IpcError::InvalidMessage {
                    reason: "a unary response to a streaming call".to_owned(),
                },
                true,
            ),
        }
    }

    /// Hands one item to streaming call `correlation_id`.
    ///
    /// # Errors
    /// `InvalidMessage` when the server broke flow control (more items than the credit
    /// granted) or sent an item for a unary call: the connection is to be closed.
    fn stream_item(&self, correlation_id: u64, payload: Bytes) -> Result<(), IpcError> {
        let state = self.lock();
        match state
            .pending
            .get(&correlation_id)
            .map(|waiter| &waiter.route)
        {
            // The stream was dropped (and cancelled): items in flight are discarded.
            None => Ok(()),
            Some(Route::Stream(items)) if items.capacity() > 1 => {
                // Closed: the consumer is going away; the cancel is on its way.
                let _ = items.try_send(Ok(payload));
                Ok(())
            }
            Some(Route::Stream(_)) => Err(IpcError::InvalidMessage {
                reason: format!(
                    "the server sent more items on stream {correlation_id} than its credit"
                ),
            }),
            Some(Route::Unary(_)) => Err(IpcError::InvalidMessage {
                reason: format!("a stream item for unary call {correlation_id}"),
            }),
        }
    }

    /// Ends streaming call `correlation_id`, with the server's status if it failed.
    fn end_stream(&self, correlation_id: u64, status: Option<pb::Status>) {
        let waiter = self.lock().pending.remove(&correlation_id);
        match (waiter, status) {
            (None, _) => {}
            (
                Some(Waiter {
                    route: Route::Stream(_),
                    ..
                }),
                None,
            ) => {} // closes the channel
            (Some(waiter), Some(status)) => waiter.fail(Status::from_wire(status).into(), true),
            (Some(waiter), None) => waiter.fail(
                IpcError::InvalidMessage {
                    reason: "a stream end for a unary call".to_owned(),
                },
                true,
            ),
        }
    }

    /// Removes call `correlation_id` if it is still in flight and tells the server to
    /// stop it.
    pub(super) fn cancel(&self, correlation_id: u64) {
        let removed = self.lock().pending.remove(&correlation_id);
        if removed.is_some() {
            let cancel = Envelope::new(correlation_id, Body::Cancel(pb::Cancel {}));
            let _ = self.control.send(cancel);
        }
    }

    /// Grants streaming call `correlation_id` `items` more items of credit.
    pub(super) fn grant(&self, correlation_id: u64, items: u32) {
        let credit = Envelope::new(correlation_id, Body::Credit(pb::Credit { items }));
        let _ = self.control.send(credit);
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
            waiter.fail(IpcError::PeerClosed, false);
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
            let sent = waiter.written;
            waiter.fail(error.clone(), sent);
        }
    }
}

/// Largest chunk the writer assembles before writing it out, in bytes.
const WRITE_CHUNK: usize = 64 * 1024;

/// Writes queued envelopes, batching whatever is queued into as few writes as possible
/// (control frames first), and what callers' own writes left in the outbox; keeps exact
/// track of which requests got out: a request whose frame was not completely written
/// when the connection failed is reported as not sent.
async fn write_loop(
    outlet: Arc<Outlet>,
    mut codec: FrameCodec,
    mut control: mpsc::UnboundedReceiver<Envelope>,
    mut queue: mpsc::Receiver<Envelope>,
    write_timeout: Duration,
    connection: std::sync::Weak<Connection>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut controls = Vec::with_capacity(64);
    let error = 'write: loop {
        let received = tokio::select! {
            biased;
            n = control.recv_many(&mut controls, 64) => {
                batch.append(&mut controls);
                n
            }
            n = queue.recv_many(&mut batch, 64) => n,
            () = outlet.flush.notified() => usize::MAX, // only the outbox to write
        };
        if received == 0 {
            return; // every sender is gone: the connection was dropped
        }
        let Some(live) = connection.upgrade() else {
            return;
        };
        // The stream, and what callers left unwritten (already marked written).
        let (mut stream, mut buffer, mut requests) = {
            let mut outbox = outlet.lock();
            let Some(stream) = outbox.stream.take() else {
                return;
            };
            let buffer = std::mem::take(&mut outbox.buffer);
            (stream, buffer, std::mem::take(&mut outbox.requests))
        };
        let mut envelopes = batch.drain(..).peekable();
        loop {
            for envelope in envelopes.by_ref() {
                let id = envelope.correlation_id;
                let is_request = matches!(envelope.body, Some(Body::Request(_)));
                match codec.encode(envelope, &mut buffer) {
                    Ok(()) if is_request => requests.push((id, buffer.len())),
                    Ok(()) => {}
                    Err(error) => live.complete(id, Err(Failed { error, sent: false })),
                }
                if buffer.len() >= WRITE_CHUNK {
                    break;
                }
            }
            if buffer.is_empty() {
                break;
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
            let result = match crate::timer::unless_done_now(write_timeout, write).await {
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
                buffer = BytesMut::new(); // give a burst's memory back
            }
            if envelopes.peek().is_none() {
                break;
            }
        }
        drop(envelopes);
        let mut outbox = outlet.lock();
        outbox.stream = Some(stream);
        outbox.buffer = buffer;
        outbox.requests = requests;
    };
    tracing::debug!(%error, "client write failed");
    // Nothing more goes out: requests still queued were never written.
    queue.close();
    while queue.try_recv().is_ok() {}
    if let Some(connection) = connection.upgrade() {
        connection.fail(error);
    }
}

/// Routes each answer to its call, and ends calls whose deadline passed; on failure
/// ends every call in flight.
async fn read_loop(
    mut reader: FramedRead<StreamHalf, FrameCodec>,
    deadlines: Arc<Deadlines>,
    connection: std::sync::Weak<Connection>,
) {
    let timer = crate::timer::sleep_until(deadlines.armed());
    tokio::pin!(timer);
    let error = loop {
        let next = tokio::select! {
            biased;
            next = reader.next() => next,
            () = std::future::poll_fn(|cx| deadlines.poll_moved_earlier(cx)) => {
                timer.as_mut().reset(deadlines.armed().into());
                continue;
            }
            () = &mut timer => {
                let Some(connection) = connection.upgrade() else {
                    return;
                };
                timer.as_mut().reset(connection.expire(Instant::now()).into());
                continue;
            }
        };
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => break error,
            None => break IpcError::PeerClosed,
        };
        let Some(connection) = connection.upgrade() else {
            return; // every client handle is gone
        };
        let envelope = match crate::payload::decode::<Envelope>(&frame) {
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
            Some(Body::StreamItem(item)) => {
                if let Err(error) = connection.stream_item(id, item.payload) {
                    break error;
                }
            }
            Some(Body::StreamEnd(end)) => connection.end_stream(id, end.status),
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
