//! A bounded soak: one server in this process, and for a fixed number of rounds, all
//! at once, every kind of peer the other suites meet one at a time:
//!
//! - good callers (generated clients, some sharing a connection) whose answers must
//!   each be the right one for its request (id, echoed bytes, asked size, asked status,
//!   `INTERNAL` for a handler that panics);
//! - callers that give up: a call's future dropped by a short `timeout`, the loser of a
//!   `select!` between two calls, a task aborted mid-call;
//! - callers with deadlines shorter than some of their handlers;
//! - raw connections sending garbage: bad CRC, absurd or zero length, random bytes,
//!   random payloads with a good CRC, envelopes a client may not send, a wrong hello,
//!   an unknown method, and a partial frame that then goes silent;
//! - slow readers: a raw connection that pipelines requests with large answers and reads
//!   them back a few KiB at a time (each must be answered exactly once, correctly);
//! - abrupt disconnects: raw connections that hang up with calls running, answers
//!   unread or half a frame written, and generated clients whose task is aborted.
//!
//! At the end: every good call was answered correctly, the server has no call in
//! flight and no connection open, no handler future is alive, a fresh client is served,
//! and the process has exactly the threads and file descriptors it had once the
//! runtime was built and the server bound (read from `/proc/self`); after a graceful
//! shutdown, the descriptors it had before the bind.
//!
//! Everything is bounded: fixed rounds, and every wait on the server has an upper bound
//! after which the test fails (a hung server is a failure, not a hung test). Nothing is
//! timed for speed. This file holds a single test: the thread and descriptor counts are
//! process-wide, so no other test may run beside it.
#![cfg(target_os = "linux")]

mod support;

use std::{
    collections::HashMap,
    io::ErrorKind,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use daemoneye_ipc::{
    envelope::{pb, Body, Envelope, HELLO_MAGIC, PROTOCOL_VERSION},
    ipc_service, Code, IpcConfig, IpcError, MetricsSnapshot, Server, ServerMetrics, Status,
};
use prost::Message;
use support::{frame, frame_with_crc};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::oneshot,
    task::JoinSet,
};

// ---- the service ------------------------------------------------------------------

/// What a call asks the handler to do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Work {
    /// Chosen by the caller, echoed back (and named in a failure's message).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Handler delay, in microseconds (capped at [`MAX_HANDLER_DELAY`]).
    #[prost(uint64, tag = "2")]
    pub micros: u64,
    /// When non-zero: fail with this status code.
    #[prost(int32, tag = "3")]
    pub fail_with: i32,
    /// Panic instead of answering.
    #[prost(bool, tag = "4")]
    pub panic: bool,
    /// Echoed back.
    #[prost(bytes = "vec", tag = "5")]
    pub data: Vec<u8>,
    /// Size of the answer's `pad`, in bytes (capped at [`MAX_PAD`]).
    #[prost(uint32, tag = "6")]
    pub pad_bytes: u32,
}

/// A successful answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echoed {
    /// The request's id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The request's data.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// `pad_bytes` filler bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub pad: Vec<u8>,
}

/// The service under soak.
#[ipc_service(name = "test.Soak")]
pub trait Soak {
    /// Sleeps, then echoes, fails or panics as the request says.
    async fn work(&self, req: Work) -> Result<Echoed, Status>;
}

/// Garbage with a good CRC may decode as a request: bound what it can ask for.
const MAX_PAD: u32 = 64 * 1024;
/// See [`MAX_PAD`].
const MAX_HANDLER_DELAY: Duration = Duration::from_secs(5);
/// What a handler asked to panic says.
const EXPECTED_PANIC: &str = "this handler was asked to panic";
/// The filler byte of `pad`.
const PAD: u8 = 0xA5;

/// Handler futures alive now, counted independently of the server's metrics.
#[derive(Default)]
struct Handlers {
    started: AtomicU64,
    live: AtomicI64,
}

struct SoakImpl(Arc<Handlers>);

/// Decrements `live` however the handler ends: answer, status, panic, or dropped.
struct Alive<'a>(&'a AtomicI64);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Soak for SoakImpl {
    async fn work(&self, req: Work) -> Result<Echoed, Status> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        self.0.live.fetch_add(1, Ordering::SeqCst);
        let _alive = Alive(&self.0.live);
        if req.micros > 0 {
            tokio::time::sleep(Duration::from_micros(req.micros).min(MAX_HANDLER_DELAY)).await;
        }
        assert!(!req.panic, "call {}: {EXPECTED_PANIC}", req.id);
        if req.fail_with != 0 {
            let code = Code::try_from(req.fail_with).unwrap_or(Code::Unknown);
            return Err(Status::new(
                code,
                format!("call {} failed as asked", req.id),
            ));
        }
        Ok(Echoed {
            id: req.id,
            data: req.data,
            pad: vec![PAD; req.pad_bytes.min(MAX_PAD) as usize],
        })
    }
}

// ---- parameters -------------------------------------------------------------------

/// Rounds each kind of worker runs, chosen so that all run for about as long (some
/// seconds on two cores) and overlap throughout.
const GOOD_ROUNDS: u64 = 2_500;
/// See [`GOOD_ROUNDS`].
const CANCEL_ROUNDS: u64 = 3_000;
/// See [`GOOD_ROUNDS`].
const DEADLINE_ROUNDS: u64 = 2_800;
/// See [`GOOD_ROUNDS`].
const VANDAL_ROUNDS: u64 = 2_000;
/// See [`GOOD_ROUNDS`].
const SLOW_ROUNDS: u64 = 40;
/// See [`GOOD_ROUNDS`].
const QUIT_ROUNDS: u64 = 2_500;
/// Calls a good caller runs at once in each round.
const GOOD_BATCH: u64 = 8;
/// Requests a slow reader pipelines in each round.
const SLOW_BATCH: u64 = 16;
/// Answer size a slow reader asks for.
const SLOW_PAD: u32 = 16 * 1024;
/// Upper bound for anything the test waits for from the server.
const PATIENCE: Duration = Duration::from_secs(10);
/// Upper bound for the whole soak.
const WHOLE_SOAK: Duration = Duration::from_secs(90);

/// What happened, for the final checks and the summary line.
#[derive(Default, Debug)]
struct Tally {
    /// Good calls made (generated clients and slow readers); each must be answered.
    good_planned: AtomicU64,
    /// Good calls answered correctly.
    good_ok: AtomicU64,
    /// Calls given up by their caller (future dropped) before an answer.
    dropped: AtomicU64,
    /// Calls of the cancelling callers that still got their (correct) answer.
    raced_ok: AtomicU64,
    /// Calls that ended at their deadline.
    deadline: AtomicU64,
    /// Calls with a short deadline that were answered (correctly) in time.
    deadline_ok: AtomicU64,
    /// Garbage connections the server closed.
    garbage: AtomicU64,
    /// Abrupt disconnects.
    disconnects: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What every worker needs.
#[derive(Clone)]
struct Env {
    config: IpcConfig,
    tally: Arc<Tally>,
}

// ---- process resources ------------------------------------------------------------

/// Threads and open descriptors of this process. `threads` leaves out the runtime's
/// one timer thread (`daemoneye-ipc-timer`, see `runtime/src/timer.rs`), which the
/// first connection starts and which lives as long as the process; [`Resources::now`]
/// fails the test if there is ever more than one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resources {
    threads: usize,
    fds: usize,
}

/// The timer thread's name as /proc shows it (cut to 15 bytes).
const TIMER_THREAD: &str = "daemoneye-ipc-t";

impl Resources {
    fn now() -> Self {
        let mut threads = 0;
        let mut timer_threads = 0;
        for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            // A thread that ended meanwhile has no comm left: it is not counted.
            let Ok(comm) = std::fs::read_to_string(entry.expect("task entry").path().join("comm"))
            else {
                continue;
            };
            if comm.trim() == TIMER_THREAD {
                timer_threads += 1;
            } else {
                threads += 1;
            }
        }
        assert!(timer_threads <= 1, "{timer_threads} timer threads");
        // The directory handle read_dir holds is counted every time alike.
        let fds = std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .count();
        Self { threads, fds }
    }

    /// What the descriptors and threads are, for a failure message.
    fn describe() -> String {
        let mut out = String::from("descriptors:");
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            for entry in entries.flatten() {
                let target = std::fs::read_link(entry.path())
                    .map_or_else(|e| e.to_string(), |t| t.display().to_string());
                out.push_str(&format!(
                    " {}={target}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        out.push_str("; threads:");
        if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
            for entry in entries.flatten() {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                out.push_str(&format!(" {}", comm.trim()));
            }
        }
        out
    }
}

/// Waits (at most `PATIENCE`) until the process is back to `baseline`.
async fn resources_return_to(baseline: Resources, when: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = Resources::now();
        if now == baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: threads and descriptors never returned to {baseline:?}, still {now:?}; {}",
            Resources::describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the server's counters (at most `PATIENCE`) until `condition` holds.
async fn metrics_until(
    metrics: &ServerMetrics,
    what: &str,
    condition: impl Fn(&MetricsSnapshot) -> bool,
) -> MetricsSnapshot {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let snapshot = metrics.snapshot();
        if condition(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "server metrics never reached `{what}`: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- raw frames -------------------------------------------------------------------

fn work_method() -> u32 {
    SoakClient::DESCRIPTOR
        .method_by_name("work")
        .expect("work is in the descriptor")
        .id
}

// Built with `..Default::default()`: the envelope may gain fields (streaming) without
// this test changing.
#[allow(clippy::needless_update)]
fn hello(schema_hash: u64) -> Envelope {
    Envelope::new(
        0,
        Body::Hello(pb::Hello {
            magic: HELLO_MAGIC,
            protocol_version: PROTOCOL_VERSION,
            service: SoakClient::DESCRIPTOR.name.to_owned(),
            schema_hash,
            max_frame_bytes: 1 << 20,
            ..Default::default()
        }),
    )
}

#[allow(clippy::needless_update)]
fn request(correlation_id: u64, method_id: u32, work: &Work) -> Envelope {
    Envelope::new(
        correlation_id,
        Body::Request(pb::Request {
            method_id,
            timeout_us: 0,
            payload: Bytes::from(work.encode_to_vec()),
            ..Default::default()
        }),
    )
}

/// A response, which only a server may send.
#[allow(clippy::needless_update)]
fn unasked_response() -> Envelope {
    Envelope::new(
        3,
        Body::Response(pb::Response {
            payload: Bytes::from_static(b"unasked"),
            ..Default::default()
        }),
    )
}

fn framed(envelope: &Envelope) -> Vec<u8> {
    frame(&envelope.encode_to_vec())
}

async fn raw(env: &Env) -> UnixStream {
    tokio::time::timeout(PATIENCE, UnixStream::connect(&env.config.endpoint_path))
        .await
        .expect("raw connect within PATIENCE")
        .expect("raw connect")
}

/// Reads one frame and checks its CRC; `None` when the server closed first.
async fn read_frame(stream: &mut UnixStream, chunk: usize, pause: Duration) -> Option<Envelope> {
    let mut header = [0u8; 8];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return None
        }
        Err(e) => panic!("read: {e}"),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    assert!(
        len > 0 && len <= 1 << 20,
        "the server sent a frame of {len} bytes"
    );
    let mut payload = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let end = (filled + chunk).min(len);
        stream
            .read_exact(&mut payload[filled..end])
            .await
            .expect("the rest of a frame");
        filled = end;
        if !pause.is_zero() && filled < len {
            tokio::time::sleep(pause).await;
        }
    }
    assert_eq!(
        crc32c::crc32c(&payload),
        crc,
        "CRC of a frame from the server"
    );
    Some(Envelope::decode(&payload[..]).expect("the server sends envelopes"))
}

async fn read_envelope(stream: &mut UnixStream) -> Envelope {
    tokio::time::timeout(PATIENCE, read_frame(stream, usize::MAX, Duration::ZERO))
        .await
        .expect("a frame within PATIENCE")
        .expect("a frame before the server closed")
}

/// A raw connection that has completed the handshake.
async fn handshaken(env: &Env) -> UnixStream {
    let mut stream = raw(env).await;
    stream
        .write_all(&framed(&hello(SoakClient::DESCRIPTOR.schema_hash)))
        .await
        .expect("write hello");
    let ack = read_envelope(&mut stream).await;
    assert!(
        matches!(ack.body, Some(Body::HelloAck(_))),
        "handshake: {ack:?}"
    );
    stream
}

/// Reads until the server closes `stream` (end of stream or reset), at most
/// `PATIENCE`: a server that keeps a broken connection open fails the test. Returns
/// what it sent.
async fn until_closed(stream: &mut UnixStream, what: &str) -> Vec<Envelope> {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("{what}: read: {e}"),
            }
            assert!(received.len() < 1 << 22, "{what}: the server keeps talking");
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server did not close within {PATIENCE:?}"));
    let mut envelopes = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 8 + len {
            break; // cut by a reset
        }
        envelopes.push(Envelope::decode(&rest[8..8 + len]).expect("an envelope"));
        rest = &rest[8 + len..];
    }
    envelopes
}

// ---- checking answers --------------------------------------------------------------

/// What a good call expects.
enum Expect {
    Echo { data: Vec<u8>, pad: u32 },
    Status(Code),
    Panic,
}

/// A request for a good call, and what its answer must be.
fn good_work(rng: &mut fastrand::Rng, id: u64) -> (Work, Expect) {
    let mut work = Work {
        id,
        micros: rng.u64(0..=2_000),
        ..Work::default()
    };
    let expect = match rng.u8(0..100) {
        0..=2 => {
            work.panic = true;
            Expect::Panic
        }
        3..=22 => {
            let code = Code::try_from(rng.i32(1..=16)).expect("codes 1 to 16 exist");
            work.fail_with = code as i32;
            Expect::Status(code)
        }
        _ => {
            work.data = (0..rng.usize(0..2048)).map(|_| rng.u8(..)).collect();
            work.pad_bytes = rng.u32(0..4096);
            Expect::Echo {
                data: work.data.clone(),
                pad: work.pad_bytes,
            }
        }
    };
    (work, expect)
}

/// Panics unless `answer` is the right one for call `id`.
fn check(id: u64, expect: &Expect, answer: Result<Echoed, IpcError>) {
    match (expect, answer) {
        (Expect::Echo { data, pad }, Ok(echoed)) => {
            assert_eq!(echoed.id, id, "answer to call {id} carries another id");
            assert_eq!(&echoed.data, data, "call {id}: data not echoed");
            assert_eq!(echoed.pad.len(), *pad as usize, "call {id}: pad size");
            assert!(echoed.pad.iter().all(|&b| b == PAD), "call {id}: pad bytes");
        }
        (Expect::Status(code), Err(IpcError::Status(status))) => {
            assert_eq!(status.code(), *code, "call {id}: {status:?}");
            assert_eq!(
                status.message(),
                format!("call {id} failed as asked"),
                "call {id}: the status of another call"
            );
        }
        (Expect::Panic, Err(IpcError::Status(status))) => {
            assert_eq!(status.code(), Code::Internal, "call {id}: {status:?}");
        }
        (_, answer) => panic!("call {id}: wrong answer {answer:?}"),
    }
}

async fn connect(env: &Env) -> SoakClient {
    tokio::time::timeout(PATIENCE, SoakClient::connect(&env.config))
        .await
        .expect("connect within PATIENCE")
        .expect("connect")
}

fn call_id(worker: u64, n: u64) -> u64 {
    (worker << 32) | n
}

// ---- workers ----------------------------------------------------------------------

/// Good calls, `GOOD_BATCH` at once per round, on `client` (maybe shared with another
/// worker); every answer checked.
async fn good_caller(env: Env, worker: u64, client: SoakClient) {
    let mut rng = fastrand::Rng::with_seed(worker);
    let mut n = 0;
    for _ in 0..GOOD_ROUNDS {
        let mut batch = JoinSet::new();
        for _ in 0..GOOD_BATCH {
            n += 1;
            let id = call_id(worker, n);
            let (work, expect) = good_work(&mut rng, id);
            let (client, tally) = (client.clone(), env.tally.clone());
            bump(&tally.good_planned);
            batch.spawn(async move {
                check(id, &expect, client.work(work).await);
                bump(&tally.good_ok);
            });
        }
        while let Some(done) = batch.join_next().await {
            done.expect("a good call");
        }
    }
}

/// Calls whose caller gives up at a random point: dropped by a timeout, the loser of a
/// `select!`, or in a task aborted mid-call. Those that finish must be right.
async fn canceller(env: Env, worker: u64) {
    let mut rng = fastrand::Rng::with_seed(worker);
    let client = connect(&env).await;
    let tally = &env.tally;
    for round in 0..CANCEL_ROUNDS {
        let id = call_id(worker, round * 2 + 1);
        let mut work = Work {
            id,
            micros: rng.u64(0..=4_000),
            ..Work::default()
        };
        let give_up = Duration::from_micros(rng.u64(0..=3_000));
        match rng.u8(0..3) {
            0 => match tokio::time::timeout(give_up, client.work(work.clone())).await {
                Ok(answer) => {
                    check(
                        id,
                        &Expect::Echo {
                            data: vec![],
                            pad: 0,
                        },
                        answer,
                    );
                    bump(&tally.raced_ok);
                }
                Err(_) => bump(&tally.dropped),
            },
            1 => {
                let other_id = id + 1;
                let other = Work {
                    id: other_id,
                    micros: rng.u64(0..=4_000),
                    ..Work::default()
                };
                let echo = Expect::Echo {
                    data: vec![],
                    pad: 0,
                };
                tokio::select! {
                    answer = client.work(work) => check(id, &echo, answer),
                    answer = client.work(other) => check(other_id, &echo, answer),
                }
                bump(&tally.raced_ok);
                bump(&tally.dropped);
            }
            _ => {
                work.micros += 2_000;
                let call = tokio::spawn({
                    let client = client.clone();
                    async move { client.work(work).await }
                });
                tokio::time::sleep(give_up).await;
                call.abort();
                match call.await {
                    Ok(answer) => {
                        check(
                            id,
                            &Expect::Echo {
                                data: vec![],
                                pad: 0,
                            },
                            answer,
                        );
                        bump(&tally.raced_ok);
                    }
                    Err(error) if error.is_cancelled() => bump(&tally.dropped),
                    Err(error) => panic!("call {id}: {error}"),
                }
            }
        }
    }
    // The connection survived every cancellation.
    let id = call_id(worker, u64::from(u32::MAX));
    let last = client
        .work(Work {
            id,
            ..Work::default()
        })
        .await;
    check(
        id,
        &Expect::Echo {
            data: vec![],
            pad: 0,
        },
        last,
    );
    assert_eq!(client.client().in_flight(), 0, "calls left in the table");
}

/// Calls with deadlines of 1-4 ms on handlers of 0-8 ms: each is answered correctly
/// or ends `DEADLINE_EXCEEDED` (from either side), nothing else.
async fn deadliner(env: Env, worker: u64) {
    let mut rng = fastrand::Rng::with_seed(worker);
    let client = connect(&env).await;
    let tally = &env.tally;
    for round in 0..DEADLINE_ROUNDS {
        let id = call_id(worker, round + 1);
        let short = client
            .clone()
            .with_timeout(Duration::from_micros(rng.u64(1_000..=4_000)));
        let work = Work {
            id,
            micros: rng.u64(0..=8_000),
            ..Work::default()
        };
        match short.work(work).await {
            Err(IpcError::DeadlineExceeded { .. }) => bump(&tally.deadline),
            Err(IpcError::Status(status)) if status.code() == Code::DeadlineExceeded => {
                bump(&tally.deadline);
            }
            answer => {
                check(
                    id,
                    &Expect::Echo {
                        data: vec![],
                        pad: 0,
                    },
                    answer,
                );
                bump(&tally.deadline_ok);
            }
        }
    }
    assert_eq!(client.client().in_flight(), 0, "calls left in the table");
}

/// One kind of broken peer.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    BadCrc,
    AbsurdLength,
    ZeroLength,
    RandomBytes,
    RandomPayloadGoodCrc,
    ClientSendsServerEnvelope,
    EnvelopeWithNoBody,
    WrongSchemaHash,
    UnknownMethodThenBye,
}

/// Raw connections that break the protocol in one way each round; the server must
/// close each (at most `PATIENCE`), after answering what deserves an answer.
async fn vandal(env: Env, worker: u64) {
    use Garbage::*;
    let mut rng = fastrand::Rng::with_seed(worker);
    let kinds = [
        BadCrc,
        AbsurdLength,
        ZeroLength,
        RandomBytes,
        RandomPayloadGoodCrc,
        ClientSendsServerEnvelope,
        EnvelopeWithNoBody,
        WrongSchemaHash,
        UnknownMethodThenBye,
    ];
    // Once per vandal: a partial frame, then silence. The server closes it at the
    // accept timeout; the other peers carry on meanwhile.
    let slowloris = async {
        let mut stream = raw(&env).await;
        stream
            .write_all(&[100, 0, 0, 0, 1, 2, 3, 4, 5])
            .await
            .expect("write");
        let got = until_closed(&mut stream, "slowloris").await;
        assert!(got.is_empty(), "slowloris got {got:?}");
        bump(&env.tally.garbage);
    };
    let rounds = async {
        for round in 0..VANDAL_ROUNDS {
            let kind = kinds[rng.usize(0..kinds.len())];
            let after_handshake = rng.bool();
            let mut stream = if after_handshake {
                handshaken(&env).await
            } else {
                raw(&env).await
            };
            let what =
                format!("vandal {worker} round {round}: {kind:?}, after hello {after_handshake}");
            let bytes = match kind {
                BadCrc => {
                    let payload = request(1, work_method(), &Work::default()).encode_to_vec();
                    frame_with_crc(&payload, crc32c::crc32c(&payload) ^ 1)
                }
                AbsurdLength => {
                    let mut bytes = u32::MAX.to_le_bytes().to_vec();
                    bytes.extend_from_slice(&[0; 4]);
                    bytes.extend_from_slice(b"not four gigabytes");
                    bytes
                }
                ZeroLength => vec![0; 8],
                RandomBytes => (0..rng.usize(1..2000)).map(|_| rng.u8(..)).collect(),
                RandomPayloadGoodCrc => frame(
                    &(0..rng.usize(1..300))
                        .map(|_| rng.u8(..))
                        .collect::<Vec<_>>(),
                ),
                ClientSendsServerEnvelope => framed(&unasked_response()),
                EnvelopeWithNoBody => framed(&Envelope {
                    correlation_id: 7,
                    body: None,
                }),
                WrongSchemaHash => framed(&hello(SoakClient::DESCRIPTOR.schema_hash ^ 1)),
                UnknownMethodThenBye => {
                    let mut bytes = framed(&request(1, 0xBAD, &Work::default()));
                    bytes.extend(framed(&request(
                        2,
                        work_method(),
                        &Work {
                            id: 2,
                            ..Work::default()
                        },
                    )));
                    bytes
                }
            };
            // The server may close before reading everything: a failed write is fine.
            let _ = stream.write_all(&bytes).await;
            // Random bytes may announce a frame longer than what follows: end our side
            // so that the server sees the end of stream inside it.
            let _ = stream.shutdown().await;
            let got = until_closed(&mut stream, &what).await;
            match kind {
                // Everything got an answer before the server saw the end of stream.
                UnknownMethodThenBye if after_handshake => {
                    let status = got.iter().find(|e| e.correlation_id == 1);
                    assert!(
                        matches!(status, Some(Envelope { body: Some(Body::Status(s)), .. }) if s.code == Code::Unimplemented as i32),
                        "{what}: {got:?}"
                    );
                    let answer = got.iter().find(|e| e.correlation_id == 2);
                    assert!(
                        matches!(
                            answer,
                            Some(Envelope {
                                body: Some(Body::Response(_)),
                                ..
                            })
                        ),
                        "{what}: {got:?}"
                    );
                }
                // Random payloads may happen to be a valid request; bytes before a
                // handshake get a status at most.
                RandomPayloadGoodCrc | RandomBytes if after_handshake => {}
                _ => assert!(
                    got.iter().all(|e| matches!(e.body, Some(Body::Status(_)))),
                    "{what}: only a status may precede the close, got {got:?}"
                ),
            }
            bump(&env.tally.garbage);
            // Paced, so that garbage keeps arriving while the other peers work.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::join!(slowloris, rounds);
}

/// Pipelines `SLOW_BATCH` requests with large answers on a raw connection and reads
/// them back a few KiB at a time; each must be answered once, correctly. A new
/// connection every few rounds.
async fn slow_reader(env: Env, worker: u64) {
    let mut rng = fastrand::Rng::with_seed(worker);
    let method = work_method();
    let mut stream = None;
    let mut next_id = 0;
    for round in 0..SLOW_ROUNDS {
        if round % 4 == 0 {
            stream = Some(handshaken(&env).await);
        }
        let stream = stream.as_mut().expect("a connection");
        let mut pending = HashMap::new();
        let mut bytes = Vec::new();
        for _ in 0..SLOW_BATCH {
            next_id += 1;
            let work = Work {
                id: call_id(worker, next_id),
                micros: rng.u64(0..=500),
                pad_bytes: SLOW_PAD,
                ..Work::default()
            };
            bytes.extend(framed(&request(next_id, method, &work)));
            pending.insert(next_id, work.id);
            bump(&env.tally.good_planned);
        }
        stream.write_all(&bytes).await.expect("pipeline requests");
        let chunk = rng.usize(512..=8192);
        while !pending.is_empty() {
            let read = read_frame(stream, chunk, Duration::from_millis(1));
            let envelope = tokio::time::timeout(PATIENCE, read)
                .await
                .expect("an answer within PATIENCE")
                .expect("an answer before the server closed");
            let id = pending
                .remove(&envelope.correlation_id)
                .unwrap_or_else(|| panic!("unasked or repeated answer {envelope:?}"));
            let Some(Body::Response(response)) = envelope.body else {
                panic!("call {id}: {envelope:?}");
            };
            let echoed = Echoed::decode(response.payload).expect("an Echoed");
            check(
                id,
                &Expect::Echo {
                    data: vec![],
                    pad: SLOW_PAD,
                },
                Ok(echoed),
            );
            bump(&env.tally.good_ok);
        }
    }
}

/// Peers that hang up mid-call: raw connections with calls running, answers unread, or
/// half a frame written; generated clients whose task is aborted during a call.
async fn quitter(env: Env, worker: u64) {
    let mut rng = fastrand::Rng::with_seed(worker);
    let method = work_method();
    for round in 0..QUIT_ROUNDS {
        match rng.u8(0..4) {
            // Calls running, maybe half a frame after them.
            0 | 1 => {
                let mut stream = handshaken(&env).await;
                let mut bytes = Vec::new();
                for id in 1..=rng.u64(1..=8) {
                    let work = Work {
                        id,
                        micros: rng.u64(1_000..=1_000_000),
                        ..Work::default()
                    };
                    bytes.extend(framed(&request(id, method, &work)));
                }
                if rng.bool() {
                    let half = framed(&request(99, method, &Work::default()));
                    bytes.extend_from_slice(&half[..rng.usize(1..half.len())]);
                }
                stream.write_all(&bytes).await.expect("write requests");
                tokio::time::sleep(Duration::from_micros(rng.u64(0..=3_000))).await;
                drop(stream);
            }
            // Large answers never read.
            2 => {
                let mut stream = handshaken(&env).await;
                let mut bytes = Vec::new();
                for id in 1..=16 {
                    let work = Work {
                        id,
                        pad_bytes: MAX_PAD,
                        ..Work::default()
                    };
                    bytes.extend(framed(&request(id, method, &work)));
                }
                stream.write_all(&bytes).await.expect("write requests");
                tokio::time::sleep(Duration::from_micros(rng.u64(0..=5_000))).await;
                drop(stream);
            }
            // A generated client, its connection and its call, all gone at once.
            _ => {
                let config = env.config.clone();
                let id = call_id(worker, round + 1);
                let task = tokio::spawn(async move {
                    let client = SoakClient::connect(&config).await.expect("connect");
                    let work = Work {
                        id,
                        micros: 1_000_000,
                        ..Work::default()
                    };
                    client.work(work).await
                });
                tokio::time::sleep(Duration::from_micros(rng.u64(0..=5_000))).await;
                task.abort();
                let ended = tokio::time::timeout(PATIENCE, task).await.expect("aborted");
                assert!(
                    matches!(&ended, Err(error) if error.is_cancelled()),
                    "a 1 s call ended within 5 ms: {ended:?}"
                );
            }
        }
        bump(&env.tally.disconnects);
    }
}

/// Runs a worker and says how long it took (shown with `--nocapture`; informative, not
/// checked).
async fn timed(name: &'static str, worker: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    worker.await;
    println!("soak: {name} took {:?}", started.elapsed());
}

// ---- the soak ---------------------------------------------------------------------

async fn soak(env: Env, metrics: Arc<ServerMetrics>, handlers: Arc<Handlers>, baseline: Resources) {
    let started = Instant::now();
    // Two connections shared by three good callers.
    let shared = [connect(&env).await, connect(&env).await];
    let mut workers = JoinSet::new();
    for worker in 0..3u64 {
        let client = shared[worker as usize % 2].clone();
        workers.spawn(timed(
            "good_caller",
            good_caller(env.clone(), 1 + worker, client),
        ));
    }
    workers.spawn(timed("canceller", canceller(env.clone(), 10)));
    workers.spawn(timed("canceller", canceller(env.clone(), 11)));
    workers.spawn(timed("deadliner", deadliner(env.clone(), 20)));
    workers.spawn(timed("vandal", vandal(env.clone(), 30)));
    workers.spawn(timed("vandal", vandal(env.clone(), 31)));
    workers.spawn(timed("slow_reader", slow_reader(env.clone(), 40)));
    workers.spawn(timed("quitter", quitter(env.clone(), 50)));
    workers.spawn(timed("quitter", quitter(env.clone(), 51)));
    while let Some(done) = workers.join_next().await {
        if let Err(error) = done {
            // A worker's assertion: show it, and stop the rest.
            workers.abort_all();
            std::panic::resume_unwind(error.into_panic());
        }
    }
    drop(shared);
    let tally = &env.tally;
    println!("soak: {tally:?}, in {:?}", started.elapsed());

    // Every good call was answered, correctly (each was checked as it came).
    assert_eq!(get(&tally.good_ok), get(&tally.good_planned));
    assert!(
        get(&tally.dropped) > 0 && get(&tally.deadline) > 0,
        "{tally:?}"
    );

    // Nothing left on the server: no call, no connection, no handler future.
    let after = metrics_until(&metrics, "nothing in flight, no connection", |m| {
        m.calls_in_flight == 0 && m.connections_open == 0
    })
    .await;
    println!("soak: server {after:?}");
    assert!(
        after.protocol_errors > 0 && after.calls_cancelled > 0,
        "{after:?}"
    );
    let deadline = Instant::now() + PATIENCE;
    while handlers.live.load(Ordering::SeqCst) != 0 {
        assert!(Instant::now() < deadline, "handler futures still alive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(handlers.started.load(Ordering::SeqCst) >= get(&tally.good_planned));

    // The server still serves.
    let client = connect(&env).await;
    let id = u64::MAX;
    check(
        id,
        &Expect::Echo {
            data: vec![],
            pad: 0,
        },
        client
            .work(Work {
                id,
                ..Work::default()
            })
            .await,
    );
    drop(client);
    metrics_until(&metrics, "the last client gone", |m| {
        m.connections_open == 0
    })
    .await;

    // No thread, no descriptor left behind.
    resources_return_to(baseline, "after the soak").await;
}

/// Handlers that panic on purpose would print a message (and a backtrace, with
/// `RUST_BACKTRACE`) each; keep other panics as they are.
fn quiet_expected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map_or("", String::as_str);
        if !message.ends_with(EXPECTED_PANIC) {
            default(info);
        }
    }));
}

#[test]
fn soak_many_peers_at_once_leaves_nothing_behind() {
    quiet_expected_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_millis(100))
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "soak"));
    config.max_connections = 64; // the soak runs about twenty at once: none is refused
    config.accept_timeout_ms = 2_000; // the slowloris waits this long
    config.call_timeout_ms = PATIENCE.as_millis() as u64;
    let before_bind = Resources::now();
    let handlers = Arc::new(Handlers::default());
    let server = {
        let _context = runtime.enter();
        Server::bind(&config, SoakServer::new(SoakImpl(handlers.clone()))).expect("bind")
    };
    let metrics = server.metrics();
    let baseline = Resources::now();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = runtime.spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let env = Env {
        config,
        tally: Arc::default(),
    };
    runtime.block_on(async {
        tokio::time::timeout(WHOLE_SOAK, soak(env, metrics, handlers, baseline))
            .await
            .expect("the soak ends within WHOLE_SOAK");
        // A graceful shutdown closes the listener too.
        stop.send(()).expect("server running");
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("server stops within PATIENCE")
            .expect("server task")
            .expect("clean shutdown");
        resources_return_to(
            Resources {
                threads: baseline.threads,
                fds: before_bind.fds,
            },
            "after shutdown",
        )
        .await;
    });
}
