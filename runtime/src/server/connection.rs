//! One connection: the handshake answer, then the table of calls in flight, the reader
//! (this task) and the writer task.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::Poll,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
// Correlation ids hash in a few ns with foldhash (randomly seeded), against ~20 with
// SipHash; whatever ids a peer picks, the table never holds more than `max_in_flight`.
use foldhash::HashMap;
use futures_util::{
    future::{AbortHandle, Abortable},
    FutureExt, SinkExt, StreamExt,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::{
    codec::{Encoder, FramedRead, FramedWrite},
    sync::CancellationToken,
};
use tracing::Instrument;

use super::{
    bare::serve_bare,
    catalog::{Catalog, Selected},
    slots::Slots,
    stream::{ItemSink, MAX_CREDIT},
    Service, Shared,
};
use crate::{
    codec::FrameCodec,
    envelope::{pb, Body, Envelope, ENVELOPE_OVERHEAD},
    handshake::{self, Verdict},
    metrics::{CallRecord, ServerMetrics},
    peer::{self, PeerIdentity},
    reply::{Answer, AnswerKind},
    transport::StreamHalf,
    Code, IpcConfig, IpcError, Status,
};

/// What the connection's writer sends: an envelope, or an answer whose payload it
/// encodes straight into the frame.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Envelope(Envelope),
    Answer(Answer),
    /// Nothing to encode: the writer task writes out what an answer written on the
    /// reader's task left in the frame buffer (see [`CallEnd::write_now`]).
    Flush,
}

impl Encoder<Outgoing> for FrameCodec {
    type Error = IpcError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), IpcError> {
        match item {
            Outgoing::Envelope(envelope) => Encoder::<Envelope>::encode(self, envelope, dst),
            Outgoing::Answer(answer) => {
                self.encode_with(answer.encoded_len(), dst, |dst| answer.encode(dst))
            }
            Outgoing::Flush => Ok(()),
        }
    }
}

/// A call in flight on this connection.
struct CallEntry {
    /// Stops the handler (a cancel, or the connection ending).
    abort: AbortHandle,
    /// For a server-streaming call, its credit: `Credit` frames add to it.
    credit: Option<Arc<Semaphore>>,
}

type CallTable = Arc<Mutex<HashMap<u64, CallEntry>>>;

fn lock(calls: &CallTable) -> std::sync::MutexGuard<'_, HashMap<u64, CallEntry>> {
    calls.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the calls of one connection share: one reference count per call, not one per
/// field.
struct Link {
    /// Answers and stream frames for the writer task; it ends when every sender is gone.
    outbound: mpsc::Sender<Outgoing>,
    /// For [`CallEnd::write_now`].
    writer: SharedWriter,
    /// Cancelled when an answer cannot be written: the connection ends.
    broken: CancellationToken,
    /// The calls that outlived their first poll.
    calls: CallTable,
    /// The calls in flight, and the reader's next frame (backpressure).
    slots: Slots,
    clock: IdleClock,
    metrics: Arc<ServerMetrics>,
}

impl Link {
    /// Writes out what answers written on the reader's task left in the frame buffer
    /// (see [`CallEnd::write_now`]), as far as the socket takes it without waiting; the
    /// writer task writes the rest, woken by [`Outgoing::Flush`] (if its queue is full
    /// it has frames to write and writes the buffer first; if the writer task holds the
    /// buffer, it flushes before it lets go).
    fn flush_now(&self) {
        if let Ok(mut writer) = self.writer.try_lock() {
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            match SinkExt::<Outgoing>::poll_flush_unpin(&mut *writer, &mut context) {
                Poll::Ready(Ok(())) => return,
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "server write failed; closing the connection");
                    self.broken.cancel();
                    return;
                }
                Poll::Pending => {}
            }
        }
        let _ = self.outbound.try_send(Outgoing::Flush);
    }
}

/// What a connection's first frame turned out to be.
enum Opening<S> {
    /// A daemoneye-ipc client of this service: the handshake was answered and accepted.
    Envelopes(Selected<S>),
    /// A seed-era peer sending bare requests; its first request is attached.
    Bare(Bytes),
    /// Refused or broken; the connection is to be closed.
    Closed,
}

/// The read buffer a connection starts with, in bytes: enough for a hello and a burst
/// of small requests; it grows with the traffic (a frame's whole body is reserved once
/// its header is read).
const READ_BUFFER_START: usize = 2 * 1024;

/// A buffer that held a frame this large, in bytes, is given back (the read buffer at
/// once, the write buffer once the connection has sent nothing for
/// [`WRITE_BUFFER_IDLE`]), so that a connection that once moved a big message does not
/// keep its memory while it idles.
const BUFFER_KEEP_MAX: usize = 64 * 1024;

/// How long the writer keeps a large buffer with nothing to write: long enough that
/// back-to-back large answers reuse it.
const WRITE_BUFFER_IDLE: Duration = Duration::from_secs(1);

pub(super) type Reader = FramedRead<StreamHalf, FrameCodec>;
pub(super) type Writer = FramedWrite<StreamHalf, FrameCodec>;
/// The connection's writer: held by the writer task while it writes a batch, and taken
/// by the reader's task for an answer that is ready at once while nothing is queued.
type SharedWriter = Arc<tokio::sync::Mutex<Writer>>;

/// Serves one connection, given as its two halves, from the hello to the close.
pub(crate) async fn serve_connection<S: Service>(
    shared: Shared<S>,
    (read_half, write_half): (StreamHalf, StreamHalf),
    identity: PeerIdentity,
    stop: CancellationToken,
) {
    let (catalog, config) = (&shared.catalog, &shared.config);
    let mut reader = FramedRead::with_capacity(read_half, config.frame_codec(), READ_BUFFER_START);
    let mut writer = FramedWrite::new(write_half, config.frame_codec());
    // No write buffer until there is something to write: it grows to fit the answers.
    // (Not `with_capacity(.., 0)`, which would also make every frame its own write.)
    *writer.write_buffer_mut() = BytesMut::new();
    match open(catalog, &mut reader, &mut writer, config, &shared.metrics).await {
        Opening::Envelopes(service) => {
            serve_envelopes(&shared, service, identity, reader, writer, stop).await
        }
        Opening::Bare(first) => {
            let bare = serve_bare(&*catalog.primary, first, reader, writer, config, &stop);
            peer::with_caller(identity, bare).await
        }
        Opening::Closed => {}
    }
}

/// Reads the first frame and answers the handshake.
async fn open<S: Service>(
    catalog: &Catalog<S>,
    reader: &mut Reader,
    writer: &mut Writer,
    config: &IpcConfig,
    metrics: &ServerMetrics,
) -> Opening<S> {
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
    let (reply, selected) = match handshake::check(first.clone(), catalog.descriptors(), config) {
        Verdict::Accepted(descriptor, ack) => (
            Envelope::new(0, Body::HelloAck(ack)),
            catalog.select(descriptor.name),
        ),
        Verdict::Refused(status) => (Envelope::new(0, Body::Status(status.to_wire())), None),
        Verdict::NotHello(status) => {
            if catalog.primary.descriptor().bare_method().is_some() {
                return Opening::Bare(first);
            }
            (Envelope::new(0, Body::Status(status.to_wire())), None)
        }
    };
    match tokio::time::timeout(config.write_timeout(), writer.send(reply)).await {
        Ok(Ok(())) => selected.map_or(Opening::Closed, Opening::Envelopes),
        _ => Opening::Closed,
    }
}

async fn serve_envelopes<S: Service>(
    shared: &Shared<S>,
    service: Selected<S>,
    identity: PeerIdentity,
    mut reader: Reader,
    writer: Writer,
    stop: CancellationToken,
) {
    let config = &*shared.config;
    let (outbound, queue) = mpsc::channel(config.max_in_flight);
    // Cancelled by the writer when it fails (write timeout, broken pipe): the peer can
    // no longer be answered, so the connection ends and its calls stop. A child of
    // `stop`, so that the reader waits on one token (polled once per frame, not
    // re-created) and tells a shutdown from a broken writer by `stop` afterwards.
    let ended = stop.child_token();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let writer_task = tokio::spawn(write_loop(
        writer.clone(),
        queue,
        config.write_timeout(),
        ended.clone(),
    ));
    let link = Arc::new(Link {
        outbound,
        writer,
        broken: ended.clone(),
        calls: Arc::default(),
        slots: Slots::new(config.max_in_flight),
        clock: IdleClock::new(),
        metrics: shared.metrics.clone(),
    });
    let calls = &link.calls;
    let clock = &link.clock;
    let slots = &link.slots;
    // If this task is aborted (drain timeout), its handlers and writer go with it.
    let _abort_on_drop = AbortOnDrop {
        calls: calls.clone(),
        writer: writer_task.abort_handle(),
    };
    let max_frame = config.max_frame_bytes;
    let handler_timeout = config.handler_timeout();
    // This service's per-method counters, looked up once per connection.
    let methods = shared.metrics.service(service.descriptor().name);
    // The highest correlation id read, reported in `GoAway`.
    let mut last_read = 0;

    // `Some(error)`: the peer broke the protocol or the connection failed; `None` with
    // `draining`: the server is shutting down; `None` otherwise: the peer closed.
    let mut draining = false;
    // An answer written on this task is in the frame buffer, not yet flushed: more
    // frames were already read, so their answers go out in the same write (W2).
    let mut unflushed = false;
    // Created once: a timer entry and a token waiter per frame cost more than a frame's
    // own work (W1 in the bench).
    let closing = ended.cancelled();
    let idle = crate::timer::sleep_until(clock.idle_at(config.read_timeout()));
    tokio::pin!(closing, idle);
    let error = loop {
        // Backpressure: take a slot before reading, so a full connection is not read.
        let slot = match slots.try_take() {
            Some(slot) => Some(slot),
            // Not biased (nor below): a peer whose frames are always ready must not
            // keep the reader from seeing a shutdown.
            None => {
                if std::mem::take(&mut unflushed) {
                    link.flush_now(); // before waiting for a call to end
                }
                tokio::select! {
                    slot = slots.take() => Some(slot),
                    () = &mut closing => None,
                }
            }
        };
        let frame = match slot {
            Some(slot) => tokio::select! {
                next = next_frame(&mut reader, clock, slots, config, idle.as_mut()) => {
                    next.map(|frame| frame.map(|frame| (frame, slot)))
                }
                () = &mut closing => Ok(None),
            },
            None => Ok(None),
        };
        let (frame, slot) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) if stop.is_cancelled() => {
                draining = true;
                break None;
            }
            Ok(None) if ended.is_cancelled() => break Some(IpcError::PeerClosed),
            Ok(None) => break None,
            Err(error) => break Some(error),
        };
        // One clock reading for the idle clock and the call's latency.
        let arrived = Instant::now();
        clock.touch_at(arrived);
        let envelope = match crate::payload::decode::<Envelope>(&frame) {
            Ok(envelope) => envelope,
            Err(error) => break Some(error.into()),
        };
        let id = envelope.correlation_id;
        match envelope.body {
            Some(Body::Request(request)) => {
                if lock(calls).contains_key(&id) {
                    // Two answers would carry one id: a protocol error, as a reused
                    // stream id is in HTTP/2. The connection ends; no id is answered twice.
                    break Some(IpcError::InvalidMessage {
                        reason: format!("correlation id {id} reused while its call is in flight"),
                    });
                }
                last_read = last_read.max(id);
                let streaming = service
                    .descriptor()
                    .method(request.method_id)
                    .is_some_and(|method| method.server_streaming);
                let credit = streaming.then(|| {
                    let window = (request.initial_credit.max(1) as usize).min(MAX_CREDIT);
                    Arc::new(Semaphore::new(window))
                });
                let stats = methods.get(request.method_id).cloned();
                let span = call_span(&service, &request, id, &identity);
                slot.keep(); // given back by the call's end
                let ending = CallEnd {
                    id,
                    record: stats
                        .as_ref()
                        .map(|s| s.start(request.payload.len(), arrived)),
                    ended: None,
                    span: span.clone(),
                    link: link.clone(),
                    entered: false,
                };
                let service = service.clone();
                let stall_limit = config.read_timeout();
                // Each kind of call is boxed as its own type, so that a unary call's
                // box is not the size of a stream's state.
                match credit {
                    Some(credit) => {
                        // The table's copy, for `Credit` frames, if the stream outlives
                        // its first poll.
                        let table_credit = Some(credit.clone());
                        let (outbound, metrics) = (link.outbound.clone(), link.metrics.clone());
                        let call = async move {
                            let _running = metrics.call();
                            let sink = ItemSink::new(
                                id,
                                credit,
                                outbound,
                                max_frame,
                                stall_limit,
                                metrics.clone(),
                                stats,
                            );
                            let end = run_stream(&service, request, sink, &metrics).await;
                            Outgoing::Envelope(Envelope::new(id, end))
                        };
                        let call =
                            Box::pin(peer::with_caller(identity.clone(), call).instrument(span));
                        run_or_spawn(call, ending, table_credit, false);
                    }
                    None => {
                        let link = link.clone();
                        let call = async move {
                            let _running = link.metrics.call();
                            let limits = (max_frame, handler_timeout);
                            run_call(&service, id, request, limits, &link.metrics).await
                        };
                        let call =
                            Box::pin(peer::with_caller(identity.clone(), call).instrument(span));
                        let more = FrameCodec::holds_frame(reader.read_buffer());
                        unflushed |= run_or_spawn(call, ending, None, more);
                    }
                }
            }
            Some(Body::Cancel(_)) => {
                if let Some(call) = lock(calls).remove(&id) {
                    call.abort.abort();
                }
            }
            Some(Body::Credit(grant)) => {
                // Credit for a call that has ended (or never streamed) is ignored.
                if let Some(credit) = lock(calls).get(&id).and_then(|c| c.credit.as_ref()) {
                    let room = MAX_CREDIT.saturating_sub(credit.available_permits());
                    credit.add_permits((grant.items as usize).min(room));
                }
            }
            other => {
                break Some(IpcError::InvalidMessage {
                    reason: format!("unexpected envelope from client: {}", kind(other.as_ref())),
                })
            }
        }
        if unflushed && !FrameCodec::holds_frame(reader.read_buffer()) {
            // The next frame needs a read from the socket: answer what was read first.
            unflushed = false;
            link.flush_now();
        }
    };
    if unflushed {
        link.flush_now();
    }
    if let Some(error) = &error {
        tracing::debug!(%error, "closing connection");
        if !matches!(error, IpcError::PeerClosed) {
            shared.metrics.protocol_error();
        }
        if matches!(error, IpcError::InvalidMessage { .. } | IpcError::Decode(_)) {
            // The frames were sound but their content broke the protocol: say why
            // before closing (every call in flight fails with this status). After a
            // framing error nothing is said: the peer's boundaries cannot be trusted.
            let status = Status::failed_precondition(format!("protocol error: {error}"));
            let status = Envelope::new(0, Body::Status(status.to_wire()));
            let _ = link.outbound.try_send(Outgoing::Envelope(status));
        }
    }
    if draining {
        // Tell the client before answering what is in flight, so it sends no more, and
        // which requests were never read, so it can send them elsewhere.
        let go_away = pb::GoAway {
            reason: "server is shutting down".to_owned(),
            last_correlation_id: last_read,
        };
        let go_away = Envelope::new(0, Body::GoAway(go_away));
        let _ = link.outbound.try_send(Outgoing::Envelope(go_away));
    } else {
        // Nobody is left to read the answers: stop the handlers now.
        for (_, call) in lock(calls).drain() {
            call.abort.abort();
        }
    }
    // The writer ends once every handler has sent its answer and dropped its link.
    drop(link);
    let _ = writer_task.await;
}

/// The span of one call: service, method, correlation id, peer and deadline; its
/// `code` and `duration_us` are recorded when the call ends. Debug level, so that a
/// default `info` filter costs nothing per call; `RUST_LOG=daemoneye_ipc=debug` shows
/// every call's life.
fn call_span(
    service: &impl Service,
    request: &pb::Request,
    id: u64,
    peer: &PeerIdentity,
) -> tracing::Span {
    let descriptor = service.descriptor();
    let method = descriptor
        .method(request.method_id)
        .map_or("(unknown)", |method| method.name);
    tracing::debug_span!(
        "call",
        service = descriptor.name,
        method,
        correlation_id = id,
        peer_pid = peer.pid,
        peer_uid = peer.uid,
        peer_sid = peer.sid.as_deref(),
        deadline_us = request.timeout_us,
        code = tracing::field::Empty,
    )
}

/// A call's status code and answer size, from its answer.
fn outcome_of(answer: &Outgoing) -> (Code, usize) {
    let answer = match answer {
        Outgoing::Answer(answer) => return (Code::Ok, answer.reply.len()),
        Outgoing::Envelope(envelope) => envelope.body.as_ref(),
        Outgoing::Flush => None,
    };
    match answer {
        Some(Body::Response(response)) => (Code::Ok, response.payload.len()),
        Some(Body::Status(status)) => (Code::try_from(status.code).unwrap_or(Code::Unknown), 0),
        Some(Body::StreamEnd(end)) => (
            end.status.as_ref().map_or(Code::Ok, |s| {
                Code::try_from(s.code).unwrap_or(Code::Unknown)
            }),
            0,
        ),
        _ => (Code::Unknown, 0),
    }
}

/// Records a call's code in its span and logs a failed call once, at a level that fits
/// its cause: the runtime's or the handler's fault is a warning, the caller's own
/// doing (a bad argument, a deadline it chose) is debug.
fn log_outcome(span: &tracing::Span, code: Code, answer: &Outgoing) {
    span.record("code", code.as_str_name());
    let Outgoing::Envelope(Envelope {
        body: Some(answer), ..
    }) = answer
    else {
        return;
    };
    let message = match answer {
        Body::Status(status) => status.message.as_str(),
        Body::StreamEnd(pb::StreamEnd {
            status: Some(status),
        }) => status.message.as_str(),
        _ => return,
    };
    match code {
        Code::Ok => {}
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::warn!(parent: span, code = code.as_str_name(), message, "call failed")
        }
        _ => tracing::debug!(parent: span, code = code.as_str_name(), message, "call failed"),
    }
}

/// The kind of an envelope body, for error messages (never its contents).
fn kind(body: Option<&Body>) -> &'static str {
    match body {
        None => "an envelope with no body",
        Some(Body::Request(_)) => "request",
        Some(Body::Response(_)) => "response",
        Some(Body::Status(_)) => "status",
        Some(Body::Cancel(_)) => "cancel",
        Some(Body::StreamItem(_)) => "stream_item",
        Some(Body::StreamEnd(_)) => "stream_end",
        Some(Body::Credit(_)) => "credit",
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
        self.touch_at(Instant::now());
    }

    /// Activity at `now`.
    fn touch_at(&self, now: Instant) {
        let since = now.saturating_duration_since(self.start);
        let now = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
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
///
/// `idle` is the connection's one idle timer: it is not moved when frames arrive, only
/// when it fires early (the connection was active meanwhile), to the new idle time.
async fn next_frame(
    reader: &mut Reader,
    clock: &IdleClock,
    slots: &Slots,
    config: &IpcConfig,
    mut idle: Pin<&mut tokio::time::Sleep>,
) -> Result<Option<Bytes>, IpcError> {
    let timeout = config.read_timeout();
    loop {
        // `FramedRead::next` is cancel-safe: bytes already read stay buffered.
        tokio::select! {
            biased;
            next = reader.next() => return match next {
                Some(Ok(frame)) => {
                    if frame.len() > BUFFER_KEEP_MAX && reader.read_buffer().is_empty() {
                        // The big allocation goes when the frame's last user drops it.
                        *reader.read_buffer_mut() = BytesMut::with_capacity(READ_BUFFER_START);
                    }
                    Ok(Some(frame))
                }
                Some(Err(error)) => Err(error),
                None => Ok(None),
            },
            () = idle.as_mut() => {
                // The reader holds one slot itself.
                let in_flight = slots.taken().saturating_sub(1);
                if in_flight > 0 {
                    clock.touch(); // busy: idleness starts when the last call ends
                }
                let now = Instant::now();
                let idle_at = clock.idle_at(timeout);
                if in_flight == 0 && now >= idle_at {
                    return Err(IpcError::Timeout {
                        operation: "read",
                        after_ms: config.read_timeout_ms,
                    });
                }
                idle.as_mut()
                    .reset(idle_at.max(now + Duration::from_millis(1)).into());
            }
        }
    }
}

/// Polls a call once on the reader's task and spawns it only if it is not finished:
/// a handler that answers at once then costs no task, no hand-off and no entry in the
/// call table (measured: W1 p50 and allocations per call in the bench). A pending call
/// is entered in `calls` (so that a `Cancel` can stop it and `Credit` reach it) and
/// spawned; the runtime polls it again with a real waker, so the no-op waker of the
/// first poll is never relied on. No frame is read meanwhile, so nothing about this
/// call can arrive before it is in the table.
///
/// `more`: the reader holds further frames, so an answer written here may wait in the
/// frame buffer for theirs. Returns whether it does: the caller must then
/// [`Link::flush_now`] before it waits for the socket.
fn run_or_spawn(
    mut call: Pin<Box<impl Future<Output = Outgoing> + Send + 'static>>,
    mut ending: CallEnd,
    credit: Option<Arc<Semaphore>>,
    more: bool,
) -> bool {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    if let Poll::Ready(answer) = call.as_mut().poll(&mut context) {
        return ending.answered_now(answer, more);
    }
    let (abort, registration) = AbortHandle::new_pair();
    lock(&ending.link.calls).insert(ending.id, CallEntry { abort, credit });
    ending.entered = true;
    tokio::spawn(async move {
        match Abortable::new(call, registration).await {
            Ok(answer) => ending.answered(answer).await,
            Err(_aborted) => ending.cancelled(),
        }
    });
    false
}

/// What is left to do when a call ends: record its outcome, queue its answer, leave
/// the call table, and give back its slot (when dropped, however the call ended).
struct CallEnd {
    id: u64,
    /// The method's figures, taken when the outcome is known.
    record: Option<CallRecord>,
    span: tracing::Span,
    link: Arc<Link>,
    /// Whether the call was entered in the call table (a call that ends in its first
    /// poll never is).
    entered: bool,
    /// When the call's end was recorded (one clock reading for the latency and the
    /// idle clock).
    ended: Option<Instant>,
}

impl CallEnd {
    /// Records how the call ended.
    fn record(&mut self, answer: &Outgoing) {
        let (code, bytes) = outcome_of(answer);
        log_outcome(&self.span, code, answer);
        let now = Instant::now();
        if let Some(record) = self.record.take() {
            record.finish(code, bytes, now);
        }
        self.ended = Some(now);
    }

    /// The call answered: queue the answer, waiting for room.
    async fn answered(mut self, answer: Outgoing) {
        self.record(&answer);
        let _ = self.link.outbound.send(answer).await;
        self.close();
    }

    /// The call answered in its first poll, on the reader's task: write it here, or
    /// queue it without waiting; only when the writer's queue is full does a task wait
    /// for room. `more` and the result: see [`CallEnd::write_now`].
    fn answered_now(mut self, answer: Outgoing, more: bool) -> bool {
        self.record(&answer);
        let answer = match self.write_now(answer, more) {
            Ok(unflushed) => {
                self.close();
                return unflushed;
            }
            Err(answer) => answer,
        };
        match self.link.outbound.try_send(answer) {
            Err(mpsc::error::TrySendError::Full(answer)) => {
                tokio::spawn(async move {
                    let _ = self.link.outbound.send(answer).await;
                    self.close();
                });
            }
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => self.close(),
        }
        false
    }

    /// Writes a unary answer of at most [`BUFFER_KEEP_MAX`] bytes here, on the reader's
    /// task, when nothing is queued and the writer task is not writing: encoded into the
    /// frame buffer and written as far as the socket takes it without waiting, which
    /// spares the hand-off to the writer task (W2 +12% in the bench). What the socket
    /// did not take, the writer task writes, woken by [`Outgoing::Flush`]. Gives the
    /// answer back (to be queued) otherwise. Streams' frames always go through the
    /// queue, which keeps each stream's items before its end.
    ///
    /// With `more` (the reader holds further frames), the frame is only added to the
    /// buffer, so that the answers to one read of requests leave in one write (as a
    /// server that writes whenever its read buffer runs dry does); returns `Ok(true)`
    /// then, and the reader calls [`Link::flush_now`] before it next waits for the
    /// socket. The buffer is still bounded: past the codec's backpressure boundary,
    /// `poll_ready` writes it out first.
    fn write_now(&self, answer: Outgoing, more: bool) -> Result<bool, Outgoing> {
        let small = matches!(&answer, Outgoing::Answer(a) if a.encoded_len() <= BUFFER_KEEP_MAX);
        if !small || self.link.outbound.capacity() != self.link.outbound.max_capacity() {
            return Err(answer);
        }
        let Ok(mut writer) = self.link.writer.try_lock() else {
            return Err(answer); // the writer task is writing
        };
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let mut sink = Pin::new(&mut *writer);
        if !matches!(
            SinkExt::<Outgoing>::poll_ready_unpin(&mut sink, &mut context),
            Poll::Ready(Ok(()))
        ) {
            return Err(answer); // a backlog, or a failure the writer task will meet
        }
        let written = futures_util::Sink::start_send(sink.as_mut(), answer).map(|()| {
            if more {
                return Poll::Ready(Ok(()));
            }
            SinkExt::<Outgoing>::poll_flush_unpin(&mut sink, &mut context)
        });
        drop(writer);
        match written {
            Ok(Poll::Ready(Ok(()))) => {}
            Ok(Poll::Pending) => {
                // The socket took part of it: the writer task writes the rest. If the
                // queue is full, the writer has frames to write anyway (and writes the
                // buffer first); if it is closed, the connection is ending.
                let _ = self.link.outbound.try_send(Outgoing::Flush);
            }
            Ok(Poll::Ready(Err(error))) | Err(error) => {
                tracing::debug!(%error, "server write failed; closing the connection");
                self.link.broken.cancel();
                return Ok(false);
            }
        }
        Ok(more)
    }

    /// The call was stopped by a cancel or the connection's end: nothing is answered.
    fn cancelled(mut self) {
        self.link.metrics.cancelled();
        self.span.record("code", Code::Cancelled.as_str_name());
        tracing::debug!(parent: &self.span, "call cancelled");
        drop(self.record.take()); // counted as CANCELLED
        self.close();
    }

    fn close(self) {
        if self.entered {
            lock(&self.link.calls).remove(&self.id);
        }
        self.link
            .clock
            .touch_at(self.ended.unwrap_or_else(Instant::now));
    }
}

impl Drop for CallEnd {
    /// The call's place among `max_in_flight` (taken by the reader for its frame).
    fn drop(&mut self) {
        self.link.slots.give_back();
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
            call.abort.abort();
        }
        self.writer.abort();
    }
}

/// Runs one server-streaming call to completion: its `StreamEnd`, never a panic. Its
/// items went out through `sink` meanwhile.
///
/// A stream is bounded by the client's deadline when the request carries one; without
/// one it runs until it ends, the client cancels, or the connection goes (a watch).
/// `handler_timeout_ms` does not apply: a stream is not one long handler but a
/// sequence of items, each bounded by credit (a consumer that grants none for
/// `read_timeout_ms` ends it).
async fn run_stream<S: Service>(
    service: &S,
    request: pb::Request,
    sink: ItemSink,
    metrics: &ServerMetrics,
) -> Body {
    let _open = metrics.stream();
    let stream = AssertUnwindSafe(service.call_stream(request.method_id, request.payload, sink))
        .catch_unwind();
    let result = match request.timeout_us {
        0 => stream.await,
        us => {
            let limit = Duration::from_micros(us);
            match tokio::time::timeout(limit, stream).await {
                Ok(result) => result,
                Err(_) => {
                    metrics.deadline_exceeded();
                    Ok(Err(Status::deadline_exceeded(format!(
                        "stream did not finish within {} ms",
                        limit.as_millis()
                    ))))
                }
            }
        }
    };
    let result = result.unwrap_or_else(|_| Err(Status::internal("handler panicked")));
    Body::StreamEnd(pb::StreamEnd {
        status: result.err().map(|status| status.to_wire()),
    })
}

/// Runs call `id` to completion: its answer, never a panic. `limits` are the frame
/// limit (bytes) and the server's bound on handlers.
async fn run_call<S: Service>(
    service: &S,
    id: u64,
    request: pb::Request,
    (max_frame, handler_timeout): (usize, Duration),
    metrics: &ServerMetrics,
) -> Outgoing {
    let call = AssertUnwindSafe(service.call(request.method_id, request.payload)).catch_unwind();
    // The client's deadline, capped by the server's own limit on handlers.
    let limit = match request.timeout_us {
        0 => handler_timeout,
        us => Duration::from_micros(us).min(handler_timeout),
    };
    let result = match crate::timer::unless_done_now(limit, call).await {
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
    let status = match result {
        Ok(reply) if reply.len() + ENVELOPE_OVERHEAD > max_frame => {
            Status::resource_exhausted(format!(
                "response of {} bytes exceeds the frame limit of {max_frame} bytes",
                reply.len()
            ))
        }
        Ok(reply) => {
            return Outgoing::Answer(Answer {
                correlation_id: id,
                kind: AnswerKind::Response,
                reply,
            })
        }
        Err(status) => status,
    };
    Outgoing::Envelope(Envelope::new(id, Body::Status(status.to_wire())))
}

/// Writes queued answers, batching whatever is queued into one write. Any failure
/// (write timeout, broken pipe, an envelope that cannot be framed) cancels `broken`,
/// which ends the connection: an unanswerable peer is closed, not left waiting.
async fn write_loop(
    writer: SharedWriter,
    mut queue: mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    broken: CancellationToken,
) {
    let _close_on_exit = broken.clone().drop_guard();
    // Allocated by the first answers, not while the connection idles.
    let mut batch = Vec::new();
    let mut holding_large = false;
    loop {
        let received = if holding_large {
            match tokio::time::timeout(WRITE_BUFFER_IDLE, queue.recv_many(&mut batch, 64)).await {
                Ok(received) => received,
                Err(_idle) => {
                    let mut writer = writer.lock().await;
                    // Bytes a direct write left (its `Flush` still queued) stay.
                    if writer.write_buffer().is_empty() {
                        *writer.write_buffer_mut() = BytesMut::new();
                        holding_large = false;
                    }
                    continue;
                }
            }
        } else {
            queue.recv_many(&mut batch, 64).await
        };
        if received == 0 {
            return; // every sender is gone
        }
        let mut writer = writer.lock().await;
        let write = async {
            for envelope in batch.drain(..) {
                writer.feed(envelope).await?;
            }
            // Measured before the flush empties the buffer (its capacity then no
            // longer shows the allocation).
            let large = writer.write_buffer().len() > BUFFER_KEEP_MAX;
            SinkExt::<Outgoing>::flush(&mut *writer)
                .await
                .map(|()| large)
        };
        match crate::timer::unless_done_now(write_timeout, write).await {
            Ok(Ok(large)) => holding_large |= large,
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
