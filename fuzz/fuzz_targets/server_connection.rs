//! Drives a whole server connection from arbitrary bytes: handshake, envelopes, calls,
//! cancels, against a real server on a Unix socket.
//!
//! One server is started once per process: a lazily built tokio runtime, a small echo
//! service, a socket in a temporary directory. Each input opens one connection, writes
//! bytes derived from the input, reads what the server sends until it closes the
//! connection (or for a moment, when the input keeps it open), hangs up, and checks the
//! server. A crash is:
//! - any panic, on any thread (libFuzzer aborts on a panic, so one inside a server task
//!   counts even though tokio would have caught it);
//! - a server that keeps the connection open after we shut down our side, or whose
//!   `connections_open` / `calls_in_flight` do not return to 0 after we hung up, within
//!   [`HANG`] (the message starts with `HANG`);
//! - a malformed frame from the server (bad length or CRC, not an envelope, an envelope
//!   only a client sends), no `hello_ack` after a valid hello, or more answers to a
//!   correlation id than requests sent with it;
//! - every [`HEALTH_EVERY`] inputs, a normal call from a generated client failing.
//!
//! # Input format
//!
//! `[control: 1 byte][body: the rest]`. Bits of `control`:
//! - bit 0: write a valid hello first, so that most inputs get past the handshake and
//!   reach envelope dispatch;
//! - bit 1: the body is a sequence of chunks `[u16 LE header][bytes]`, where header bits
//!   0-14 are the chunk's length (cut short at the end of the input) and bit 15 says how
//!   it is written: clear, wrapped in a frame with the right length and CRC32C (so that
//!   the fuzzer gets past the integrity check to the envelope decoder); set, as it is.
//!   Bit 1 clear: the body is written as it is;
//! - bit 2: keep our side open after writing, read for [`KEEP_OPEN`], then hang up.
//!   Clear: shut down our writing side (the server sees the end of stream) and read
//!   until the server closes;
//! - bit 3: write in pieces of 1 to 8 bytes with a yield between them, so that frames
//!   straddle the server's reads.
#![no_main]

use std::{
    collections::HashMap,
    io::ErrorKind,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, LazyLock,
    },
    time::{Duration, Instant},
};

use daemoneye_ipc::{
    envelope::{pb, Body, Envelope, HELLO_MAGIC, PROTOCOL_VERSION},
    ipc_service, Code, IpcConfig, Server, ServerMetrics, Status,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

/// A call of the fuzzed service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Echoed back.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Handler delay in microseconds, at most [`MAX_DELAY_US`].
    #[prost(uint32, tag = "2")]
    pub micros: u32,
    /// When non-zero: fail with this status code.
    #[prost(int32, tag = "3")]
    pub fail_with: i32,
    /// Size of the answer's blob, at most [`MAX_BLOB`] (over the frame limit: the
    /// server answers `RESOURCE_EXHAUSTED`).
    #[prost(uint32, tag = "4")]
    pub blob_bytes: u32,
}

/// An answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    /// The request's id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Filler.
    #[prost(bytes = "vec", tag = "2")]
    pub blob: Vec<u8>,
}

/// The service behind the fuzzed connection.
#[ipc_service(name = "fuzz.Target")]
pub trait Target {
    /// Echoes the id after a short delay, or fails as asked.
    async fn echo(&self, req: Ping) -> Result<Pong, Status>;
    /// Answers at once.
    #[ipc(idempotent)]
    async fn ping(&self) -> Result<Pong, Status>;
}

const MAX_DELAY_US: u32 = 1_000;
const MAX_BLOB: u32 = 4_096;
/// The server's frame limit: small, so that fuzzed lengths fall on both sides of it.
const MAX_FRAME: usize = 2_048;

struct TargetImpl;

impl Target for TargetImpl {
    async fn echo(&self, req: Ping) -> Result<Pong, Status> {
        if req.micros > 0 {
            let micros = req.micros.min(MAX_DELAY_US);
            tokio::time::sleep(Duration::from_micros(u64::from(micros))).await;
        }
        if req.fail_with != 0 {
            let code = Code::try_from(req.fail_with).unwrap_or(Code::Unknown);
            return Err(Status::new(
                code,
                format!("ping {} failed as asked", req.id),
            ));
        }
        Ok(Pong {
            id: req.id,
            blob: vec![7; req.blob_bytes.min(MAX_BLOB) as usize],
        })
    }

    async fn ping(&self) -> Result<Pong, Status> {
        Ok(Pong::default())
    }
}

/// Longest the server may take to close a connection we shut down, or to settle its
/// counters after we hung up.
const HANG: Duration = Duration::from_secs(5);
/// How long an input that keeps its side open is read before we hang up.
const KEEP_OPEN: Duration = Duration::from_millis(2);
/// A normal call from a generated client once every this many inputs.
const HEALTH_EVERY: u64 = 64;

/// The server, started on first use and kept for the life of the process.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    config: IpcConfig,
    metrics: Arc<ServerMetrics>,
    inputs: AtomicU64,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = IpcConfig::with_endpoint(dir.path().join("fuzz.sock").to_string_lossy());
    config.max_frame_bytes = MAX_FRAME;
    config.max_in_flight = 4; // fuzzed pipelines reach backpressure
    config.max_connections = 8;
    config.accept_timeout_ms = 1_000;
    config.read_timeout_ms = 1_000;
    config.handler_timeout_ms = 100;
    let server = {
        let _context = runtime.enter();
        Server::bind(&config, TargetServer::new(TargetImpl)).expect("bind")
    };
    let metrics = server.metrics();
    runtime.spawn(server.serve());
    Fixture {
        runtime,
        config,
        metrics,
        inputs: AtomicU64::new(0),
        _dir: dir,
    }
});

/// `payload` in a frame: length, CRC32C, bytes.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

// Built with `..Default::default()`: the hello may gain fields.
#[allow(clippy::needless_update)]
fn hello() -> Vec<u8> {
    let hello = Envelope::new(
        0,
        Body::Hello(pb::Hello {
            magic: HELLO_MAGIC,
            protocol_version: PROTOCOL_VERSION,
            service: TargetClient::DESCRIPTOR.name.to_owned(),
            schema_hash: TargetClient::DESCRIPTOR.schema_hash,
            max_frame_bytes: 1 << 20,
            ..Default::default()
        }),
    );
    let mut out = Vec::new();
    frame(&hello.encode_to_vec(), &mut out);
    out
}

/// The bytes an input writes: see the module docs.
fn bytes_to_send(control: u8, body: &[u8]) -> Vec<u8> {
    let mut out = if control & 1 != 0 {
        hello()
    } else {
        Vec::new()
    };
    if control & 2 == 0 {
        out.extend_from_slice(body);
        return out;
    }
    let mut rest = body;
    while rest.len() >= 2 {
        let header = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(header & 0x7FFF).min(rest.len() - 2);
        let chunk = &rest[2..2 + len];
        if header & 0x8000 == 0 {
            frame(chunk, &mut out);
        } else {
            out.extend_from_slice(chunk);
        }
        rest = &rest[2 + len..];
    }
    out
}

/// Splits `bytes` into the frames a server would read (stopping where it would stop
/// reading: a zero or over-limit length, or the end), as envelopes when they decode
/// (`None` when not).
fn frames(bytes: &[u8], max_frame: usize) -> Vec<Option<Envelope>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len == 0 || len > max_frame || rest.len() < 8 + len {
            break;
        }
        out.push(Envelope::decode(&rest[8..8 + len]).ok());
        rest = &rest[8 + len..];
    }
    out
}

/// Checks what the server sent on a connection that carried `sent`.
fn check_answers(control: u8, sent: &[u8], received: &[u8]) {
    // Every whole frame from the server: a sane length, the right CRC, an envelope.
    let mut rest = received;
    let mut answers = Vec::new();
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        assert!(
            len > 0 && len <= MAX_FRAME,
            "server frame of {len} bytes (limit {MAX_FRAME})"
        );
        if rest.len() < 8 + len {
            break; // cut short by a reset
        }
        let payload = &rest[8..8 + len];
        assert_eq!(crc32c::crc32c(payload), crc, "server frame CRC");
        let envelope = Envelope::decode(payload).expect("the server sends envelopes");
        assert!(
            matches!(
                envelope.body,
                Some(Body::HelloAck(_) | Body::Response(_) | Body::Status(_) | Body::GoAway(_))
            ),
            "the server sent {envelope:?}"
        );
        answers.push(envelope);
        rest = &rest[8 + len..];
    }
    // A valid hello first: the server accepts it.
    if control & 1 != 0 {
        if let Some(first) = answers.first() {
            assert!(
                matches!(first.body, Some(Body::HelloAck(_))),
                "a valid hello got {first:?}"
            );
        }
    }
    // No correlation id answered more often than it was asked.
    let mut asked: HashMap<u64, usize> = HashMap::new();
    for envelope in frames(sent, MAX_FRAME).into_iter().flatten() {
        if matches!(envelope.body, Some(Body::Request(_))) {
            *asked.entry(envelope.correlation_id).or_default() += 1;
        }
    }
    let mut answered: HashMap<u64, usize> = HashMap::new();
    for envelope in &answers {
        if envelope.correlation_id != 0 {
            *answered.entry(envelope.correlation_id).or_default() += 1;
        }
    }
    for (id, count) in answered {
        let limit = asked.get(&id).copied().unwrap_or(0);
        assert!(
            count <= limit,
            "correlation id {id} answered {count} times, asked {limit} times"
        );
    }
}

/// One connection driven by one input; returns what the server sent.
async fn drive(fixture: &Fixture, control: u8, sent: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(&fixture.config.endpoint_path)
        .await
        .expect("the server accepts connections");
    // The server may close before it has read everything: a failed write is fine.
    if control & 8 != 0 {
        let mut rest = sent;
        let mut size = 0;
        while !rest.is_empty() {
            size = size % 8 + 1;
            let (piece, more) = rest.split_at(size.min(rest.len()));
            if stream.write_all(piece).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
            rest = more;
        }
    } else {
        let _ = stream.write_all(sent).await;
    }
    let keep_open = control & 4 != 0;
    if !keep_open {
        let _ = stream.shutdown().await;
    }
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    };
    let limit = if keep_open { KEEP_OPEN } else { HANG };
    let closed = tokio::time::timeout(limit, read).await.is_ok();
    assert!(
        closed || keep_open,
        "HANG: the server kept the connection open {HANG:?} after our end of stream"
    );
    received
}

/// Waits until the server has no connection open and no call in flight.
async fn settle(fixture: &Fixture) {
    let deadline = Instant::now() + HANG;
    let mut spins = 0u32;
    loop {
        let now = fixture.metrics.snapshot();
        if now.connections_open == 0 && now.calls_in_flight == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "HANG: the server did not settle after we hung up: {now:?}"
        );
        spins += 1;
        if spins < 200 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A generated client connects and is served.
async fn assert_healthy(fixture: &Fixture, id: u64) {
    let call = async {
        let client = TargetClient::connect(&fixture.config)
            .await
            .expect("a generated client connects");
        let pong = client
            .echo(Ping {
                id,
                ..Ping::default()
            })
            .await
            .expect("a normal call is served");
        assert_eq!(pong.id, id);
    };
    tokio::time::timeout(HANG, call)
        .await
        .expect("HANG: a normal call took too long");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let fixture = &*FIXTURE;
    let n = fixture.inputs.fetch_add(1, Ordering::Relaxed);
    let sent = bytes_to_send(control, body);
    fixture.runtime.block_on(async {
        let received = drive(fixture, control, &sent).await;
        check_answers(control, &sent, &received);
        settle(fixture).await;
        if n.is_multiple_of(HEALTH_EVERY) {
            assert_healthy(fixture, n).await;
            settle(fixture).await;
        }
    });
});
