//! A test kit (feature `testing`): a generated client talks to a server in memory, with
//! no socket, through the same codec, handshake and dispatch, and faults are injected
//! on demand: delay frames, drop the connection after N frames, flip a byte (the CRC
//! fails), truncate a frame, stall the reader.
//!
//! Faults apply to the frames the client receives, on the next connection the client
//! opens (one fault per connection, in the order injected); later connections are
//! healthy. So "the connection drops after the request left" reads:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), daemoneye_ipc::IpcError> {
//! use daemoneye_ipc::{ipc_service, testing::{Fault, TestServer}, IpcConfig, IpcError, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Count { #[prost(uint64, tag = "1")] pub n: u64 }
//!
//! #[ipc_service(name = "example.Counter")]
//! pub trait Counter {
//!     /// Reads the counter: safe to retry.
//!     #[ipc(idempotent)]
//!     async fn get(&self) -> Result<Count, Status>;
//!     /// Adds one: not safe to retry.
//!     async fn add(&self) -> Result<Count, Status>;
//! }
//!
//! struct Impl;
//! impl Counter for Impl {
//!     async fn get(&self) -> Result<Count, Status> { Ok(Count { n: 7 }) }
//!     async fn add(&self) -> Result<Count, Status> { Ok(Count { n: 8 }) }
//! }
//!
//! let server = TestServer::new(&IpcConfig::default(), CounterServer::new(Impl));
//! let client = CounterClient::from_client(server.client(CounterClient::DESCRIPTOR)?);
//!
//! // The hello is frame 1 and the request frame 2: the connection drops once it left.
//! server.inject(Fault::DropAfter(2));
//! assert_eq!(client.get().await?.n, 7); // idempotent: retried on a new connection
//!
//! // A fault applies to the next connection opened: a fresh client opens one.
//! let client = CounterClient::from_client(server.client(CounterClient::DESCRIPTOR)?);
//! server.inject(Fault::DropAfter(2));
//! let error = client.add().await.unwrap_err(); // not idempotent: never sent twice
//! assert!(matches!(error, IpcError::PeerClosed));
//! # Ok(()) }
//! ```

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::{
    client::DialFn,
    codec::HEADER_LEN,
    health::HealthReporter,
    metrics::ServerMetrics,
    peer::PeerIdentity,
    server::{serve_connection, Catalog, Shared},
    transport::StreamHalf,
    Client, IpcConfig, IpcError, Service, ServiceDescriptor,
};

/// Bytes buffered in each direction of an in-memory connection.
const PIPE_BYTES: usize = 256 * 1024;

/// A fault for the next connection a [`TestServer`]'s client opens. Frames are counted
/// from 1 in each direction: the client's hello is the first frame it sends, the
/// handshake's answer the first it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every frame the client receives arrives this much later.
    Delay(Duration),
    /// The connection breaks once the client has sent this many frames: they reach the
    /// server, nothing after them does, and the client's reads end. `DropAfter(2)`
    /// loses the connection after the first request left: the call fails with
    /// `PeerClosed`, and only an `#[ipc(idempotent)]` method is retried.
    DropAfter(usize),
    /// One byte of the payload of the n-th frame received is flipped, so its CRC
    /// fails: the client sees `CrcMismatch` and closes the connection.
    Corrupt(usize),
    /// Only the first half of the n-th frame received arrives, then the connection
    /// ends: the client sees `PeerClosed` (end of stream inside a frame).
    Truncate(usize),
    /// After n frames received the client receives nothing more, though the server
    /// goes on: calls end at their deadline (`DeadlineExceeded`).
    StallAfter(usize),
}

/// A server reachable in memory; see the [module docs](self).
pub struct TestServer<S> {
    shared: Arc<Shared<S>>,
    health: HealthReporter,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    opened: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl<S> std::fmt::Debug for TestServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("connections", &self.opened.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S> Drop for TestServer<S> {
    fn drop(&mut self) {
        self.stop.cancel(); // ends every connection's task
    }
}

impl<S: Service> TestServer<S> {
    /// A server for `service` with `config`'s limits (its endpoint is not used). Also
    /// serves the built-in reflection and health services, like a real server.
    pub fn new(config: &IpcConfig, service: S) -> Self {
        let metrics = Arc::new(ServerMetrics::default());
        metrics.register(&Catalog::served(&service, &[]));
        let health = HealthReporter::default();
        let (catalog, _) =
            Catalog::with_builtins(Arc::new(service), Vec::new(), &health, config, &metrics);
        Self {
            shared: Arc::new(Shared {
                catalog,
                config: Arc::new(config.clone()),
                metrics,
            }),
            health,
            faults: Arc::default(),
            opened: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    /// A lazy client of service `descriptor` whose connections are in memory; wrap it
    /// in the generated client with `FooClient::from_client`. It reconnects (a new
    /// in-memory connection) like a socket client, per its retry policy.
    ///
    /// # Errors
    /// `Config` for an invalid configuration.
    pub fn client(&self, descriptor: &'static ServiceDescriptor) -> Result<Client, IpcError> {
        let (shared, faults) = (self.shared.clone(), self.faults.clone());
        let (opened, stop) = (self.opened.clone(), self.stop.clone());
        let dial: DialFn = Arc::new(move || {
            let fault = faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let (client_io, server_io) = tokio::io::duplex(PIPE_BYTES);
            let (server_read, server_write) = tokio::io::split(server_io);
            let identity = PeerIdentity::this_process();
            let shared = Shared {
                catalog: shared.catalog.clone(),
                config: shared.config.clone(),
                metrics: shared.metrics.clone(),
            };
            let halves = StreamHalf::from_io(server_read, server_write);
            tokio::spawn(serve_connection(shared, halves, identity, stop.clone()));
            opened.fetch_add(1, Ordering::Relaxed);
            let (client_read, client_write) = tokio::io::split(client_io);
            let broken = Arc::new(Broken::default());
            let reader = FaultyReader::new(client_read, fault, broken.clone());
            let writer = FaultyWriter {
                inner: client_write,
                broken,
                drop_after: match fault {
                    Some(Fault::DropAfter(n)) => Some(n),
                    _ => None,
                },
                sent: FrameCounter::default(),
            };
            Box::pin(async move { Ok(StreamHalf::from_io(reader, writer)) })
        });
        Client::with_dialer(&self.shared.config, descriptor, dial)
    }

    /// Injects `fault` into the next connection a client of this server opens.
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(fault);
    }

    /// Connections opened so far (a retry after a fault opens one more).
    pub fn connections(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The server's counters, as [`Server::metrics`](crate::Server::metrics) gives them.
    pub fn metrics(&self) -> Arc<ServerMetrics> {
        self.shared.metrics.clone()
    }

    /// The server's health, as [`Server::health`](crate::Server::health) gives it.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }
}

/// The client's reading end of an in-memory connection, releasing whole frames as the
/// fault says.
/// Set when the connection is broken (reads end, writes fail); wakes the reader.
#[derive(Debug, Default)]
struct Broken {
    set: AtomicBool,
    reader: futures_util::task::AtomicWaker,
}

impl Broken {
    fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.reader.wake();
    }
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
}

struct FaultyReader<R> {
    inner: R,
    fault: Option<Fault>,
    broken: Arc<Broken>,
    /// Bytes read from the pipe, not yet released.
    incoming: BytesMut,
    /// Bytes released to the client.
    outgoing: BytesMut,
    frames: usize,
    /// No more bytes after `outgoing`: the connection ended (or stalls, with `stalled`).
    ended: bool,
    stalled: bool,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<R> FaultyReader<R> {
    fn new(inner: R, fault: Option<Fault>, broken: Arc<Broken>) -> Self {
        Self {
            inner,
            fault,
            broken,
            incoming: BytesMut::new(),
            outgoing: BytesMut::new(),
            frames: 0,
            ended: false,
            stalled: false,
            delay: None,
        }
    }

    /// Moves the complete frames of `incoming` to `outgoing`, applying the fault; says
    /// whether it must wait (a delay) before the next one.
    fn release(&mut self, cx: &mut Context<'_>) -> bool {
        while !self.ended && self.incoming.len() >= HEADER_LEN {
            let len = u32::from_le_bytes([
                self.incoming[0],
                self.incoming[1],
                self.incoming[2],
                self.incoming[3],
            ]) as usize;
            if self.incoming.len() < HEADER_LEN + len {
                return false;
            }
            if let Some(Fault::Delay(pause)) = self.fault {
                let delay = self
                    .delay
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                if delay.as_mut().poll(cx).is_pending() {
                    return true;
                }
                self.delay = None;
            }
            let mut frame = self.incoming.split_to(HEADER_LEN + len);
            self.frames += 1;
            match self.fault {
                Some(Fault::Corrupt(n)) if n == self.frames && len > 0 => {
                    frame[HEADER_LEN] ^= 0xFF;
                }
                Some(Fault::Truncate(n)) if n == self.frames => {
                    frame.truncate((HEADER_LEN + len) / 2);
                    self.end();
                }
                _ => {}
            }
            self.outgoing.extend_from_slice(&frame);
            match self.fault {
                Some(Fault::StallAfter(n)) if n == self.frames => {
                    self.ended = true;
                    self.stalled = true;
                }
                _ => {}
            }
        }
        false
    }

    fn end(&mut self) {
        self.ended = true;
        self.broken.set();
    }
}

use std::future::Future as _;

impl<R: AsyncRead + Unpin> AsyncRead for FaultyReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.broken.reader.register(cx.waker());
        if this.broken.is_set() && !this.ended {
            // Broken by the writer: whatever was in flight is lost.
            this.outgoing.clear();
            this.ended = true;
        }
        loop {
            if !this.outgoing.is_empty() {
                let n = this.outgoing.len().min(buf.remaining());
                buf.put_slice(&this.outgoing[..n]);
                this.outgoing.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                // Stalled: nothing more, ever (the client gives up at its deadline).
                return if this.stalled {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(()))
                };
            }
            if this.release(cx) {
                return Poll::Pending; // a delay is running; it wakes us
            }
            if !this.outgoing.is_empty() || this.ended {
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.ended = true; // the server closed
                }
                Poll::Ready(Ok(())) => this.incoming.extend_from_slice(read.filled()),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Counts the frames in a byte stream as it passes, from their length headers.
#[derive(Clone, Debug, Default)]
struct FrameCounter {
    /// Frames completed so far.
    frames: usize,
    /// The header of the frame under way, as far as it has come.
    header: Vec<u8>,
    /// Body bytes of the frame under way still to come.
    body_left: usize,
}

impl FrameCounter {
    /// Takes one more byte; says whether it completed a frame.
    fn feed(&mut self, byte: u8) -> bool {
        if self.body_left > 0 {
            self.body_left -= 1;
        } else {
            self.header.push(byte);
            if self.header.len() == HEADER_LEN {
                let h = &self.header;
                self.body_left = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                self.header.clear();
            }
        }
        let done = self.body_left == 0 && self.header.is_empty();
        if done {
            self.frames += 1;
        }
        done
    }
}

/// The client's writing end: counts the frames it sends, breaks the connection after
/// the `DropAfter` one, and fails once the connection is broken.
struct FaultyWriter<W> {
    inner: W,
    broken: Arc<Broken>,
    drop_after: Option<usize>,
    sent: FrameCounter,
}

impl<W> FaultyWriter<W> {
    /// How many of `buf`'s bytes may go before the connection breaks (all of them when
    /// no `DropAfter` is due in them).
    fn allowed(&self, buf: &[u8]) -> usize {
        let Some(limit) = self.drop_after else {
            return buf.len();
        };
        let mut counter = self.sent.clone();
        buf.iter()
            .position(|byte| counter.feed(*byte) && counter.frames == limit)
            .map_or(buf.len(), |index| index + 1)
    }

    /// Counts the frames in `written`; breaks the connection at the `DropAfter` one.
    fn count(&mut self, written: &[u8]) {
        for byte in written {
            self.sent.feed(*byte);
        }
        if self
            .drop_after
            .is_some_and(|limit| self.sent.frames >= limit)
        {
            self.broken.set();
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FaultyWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.broken.is_set() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let allowed = this.allowed(buf);
        match Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]) {
            Poll::Ready(Ok(n)) => {
                this.count(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
