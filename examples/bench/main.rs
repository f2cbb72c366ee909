//! Throughput and latency of daemoneye-ipc against bare local-socket floors.
//!
//! ```text
//! cargo run --release --example bench            # ~2 s per measurement, ~35 s in all
//! BENCH_SECS=5 cargo run --release --example bench
//! cargo run --release --example bench -- 0.5    # seconds per measurement as an argument
//! ```
//!
//! Everything runs in one process on a multi-thread tokio runtime with 2 workers, over
//! Unix sockets in a temporary directory (named pipes on Windows, `raw.rs`):
//!
//! - **W1**: one client, one small call at a time (a 12-byte id and a `u32`).
//! - **W2**: 64 tasks calling concurrently through clones of one client (one connection).
//! - **W3**: a small request answered with 1000 `ProcessRecord`s (~114 KB encoded); the
//!   server clones its prebuilt list and returns it, so it is encoded on every call, as a
//!   real handler's answer would be.
//! - **W3s**: the same 1000 records as a server stream of 10 items of 100 records; the
//!   caller collects them into one `Vec`. Compared with unary W3.
//! - **W4**: a server stream of 100,000 records (the W3 records, cycled), batched 1000
//!   records per item as a real producer would (each item is the W3 answer's size);
//!   **W4x1**: the same 100,000 records one per item. The server clones each item's
//!   records from its prebuilt list, as W3 does; the caller decodes every item (the
//!   `Streaming` does) and counts its records. Default config (`stream_window` 32).
//!
//! The floors, in the same run:
//!
//! - **raw-uds**: W1, W3 and W4 over a bare `tokio::net::UnixStream`, with an 8-byte
//!   header (`u32` length, `u32` opcode), no envelope, no CRC, no flow control, the same
//!   payload sizes as the RPC. W1/W3 send pre-built bytes and are not decoded. For W4 the
//!   server writes the very bytes of the RPC's items, pre-encoded, as length-prefixed
//!   frames (for W4x1, 1000 frames per `write`, as a buffered writer would), and the
//!   consumer reads each frame and **decodes** it with prost (`ProcessList::decode`) and
//!   counts its records: the RPC pays the same decode, so the ratio shows the rest
//!   (clone + encode on the server, the framework). **raw-uds-touch** W4 reads the same
//!   frames and only folds their bytes (no decode): the socket's own limit.
//! - **raw-mux** W2: 64 callers over one bare Unix socket, 8-byte header (`u32` length,
//!   `u32` request id), a table of waiting callers (`Mutex<HashMap<id, oneshot::Sender>>`),
//!   a writer task fed by an `mpsc` (batching what is queued into one write), and a reader
//!   task routing each answer by id to its caller's `oneshot`. The server echoes each
//!   frame, writing whenever its read buffer runs dry. No protobuf, as for W1.
//! - **codec-limit** W3: in-process, no I/O, one thread: the work every protobuf
//!   framework pays per W3 call, each step timed in its own loop: clone the W3 answer
//!   (the handler's copy), prost-encode it, decode it (each copy dropped).
//!   `calls_per_s` is 1 / (clone + encode + decode); p50/p99 are those of clone `i` +
//!   encode `i` + decode `i`. (The same three steps in one loop take longer than their
//!   sum with glibc's allocator, so that figure, printed on the `#` line before it, is
//!   no limit: the RPC, which spreads them over two threads, beats it.)
//!
//! The two targets' sides take turns: W1 with raw-uds W1, and W3 with the codec limit,
//! each in 4 rounds of a quarter of the measurement time (A B, B A, A B, B A), so that
//! a drift of the machine's speed during the run weighs on both sides of the ratio.
//! daemoneye-ipc's server and client are started afresh for each of their rounds and
//! stopped before the floor's: an idle connection's read timer alone, registered with
//! the runtime, made the raw W1 floor 5-10% slower.
//!
//! One line per measurement: `impl=<name> workload=<W> calls_per_s p50_us p99_us
//! mb_per_s`, where `mb_per_s` counts payload bytes (the encoded request and response
//! messages or stream items, not headers or envelopes) of both directions, MB = 10^6
//! bytes. Streaming lines add `records_per_s`, `items_per_s` and `records_per_item`; a
//! "call" of W4 is one whole 100,000-record stream (its p50 is the stream's duration).
//! Then one `ratio` line per comparison.
//!
//! Last, heap figures, counted by a counting global allocator (`alloc.rs`) with the
//! server on a runtime of its own (one worker thread, so each allocation is
//! attributed to the side whose thread made it), untimed:
//!
//! - `alloc workload=<W1|W3> side=<client|server> allocs_per_call bytes_per_call`:
//!   heap allocations (reallocations included) and bytes allocated per call, over
//!   20,000 W1 calls and 200 W3 calls after a warm-up;
//! - `memory workload=idle server_bytes_per_connection ...`: the server's live heap
//!   bytes per connection with 1000 connections open, each past its handshake and
//!   idle, and what the server still holds once they are closed.
//!
//! `BENCH_HEAP_ONLY=1` prints only the heap figures (a few seconds); `BENCH_ONLY=W1`
//! (or `W2`, `W3`) only that workload, its floor and their ratio (seconds: for comparing
//! two builds of the call path many times over, alternating). `BENCH_WORKERS=1` runs
//! everything on a 1-worker runtime instead of 2, for diagnosis only: both ends of a
//! call then share one thread, as the codec limit's steps do.

use std::{
    collections::HashMap,
    error::Error,
    future::Future,
    hint::black_box,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
    time::Instant,
};

use daemoneye_ipc::{config::endpoint_in, ipc_service, IpcConfig, Server, ServerStream, Status};
use daemoneye_proto::{prost::Message, ProcessList, ProcessRecord};
use futures_util::StreamExt;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    sync::{mpsc, oneshot},
};

mod alloc;
mod raw;

/// Counts heap allocations per side while [`alloc::set_counting`] is on.
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

type BoxError = Box<dyn Error + Send + Sync>;

/// Concurrent callers in W2.
const W2_TASKS: usize = 64;
/// Process records in the W3 answer.
const W3_RECORDS: usize = 1000;
/// Records per item of the W3s stream.
const W3S_PER_ITEM: usize = 100;
/// Records in one W4 stream.
const W4_RECORDS: usize = 100_000;
/// Records per item of W4 (the W3 answer's size).
const W4_PER_ITEM: usize = 1000;
/// Largest raw-floor body either end accepts, in bytes.
const RAW_MAX: usize = 1 << 20;
/// Read buffer of the raw floors' buffered readers, in bytes.
const RAW_BUFFER: usize = 64 * 1024;
/// Raw-floor opcodes (the second `u32` of the raw header).
const OP_SMALL: u32 = 1;
const OP_LIST: u32 = 3;
/// Requests for a W4 stream, 1000 records per item and one record per item.
const OP_STREAM_BATCHED: u32 = 4;
const OP_STREAM_SINGLE: u32 = 5;
/// The opcode of each raw stream frame.
const OP_ITEM: u32 = 6;

/// The small message of W1/W2: an id of about 12 bytes and a number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Small {
    /// Caller-chosen id, e.g. `req-00000001`.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Any number.
    #[prost(uint32, tag = "2")]
    pub seq: u32,
}

/// What to stream: `records` records, `per_item` to an item.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamRequest {
    /// Records in the whole stream.
    #[prost(uint64, tag = "1")]
    pub records: u64,
    /// Records per item (the last item may hold fewer).
    #[prost(uint64, tag = "2")]
    pub per_item: u64,
}

/// The service under test.
#[ipc_service(name = "bench.Bench")]
pub trait Bench {
    /// Returns the request unchanged.
    async fn echo(&self, req: Small) -> Result<Small, Status>;
    /// Returns the server's process list (1000 records).
    async fn list(&self, req: Small) -> Result<ProcessList, Status>;
    /// Streams `req.records` of the server's records (cycling through its list), in
    /// items of `req.per_item`.
    async fn records(
        &self,
        req: StreamRequest,
        tx: ServerStream<ProcessList>,
    ) -> Result<(), Status>;
}

struct BenchImpl {
    list: ProcessList,
}

impl Bench for BenchImpl {
    async fn echo(&self, req: Small) -> Result<Small, Status> {
        Ok(req)
    }

    async fn list(&self, _req: Small) -> Result<ProcessList, Status> {
        Ok(self.list.clone())
    }

    async fn records(
        &self,
        req: StreamRequest,
        mut tx: ServerStream<ProcessList>,
    ) -> Result<(), Status> {
        let all = &self.list.processes;
        let per_item = usize::try_from(req.per_item.max(1))
            .map_err(|_| Status::invalid_argument("per_item does not fit in memory"))?;
        let records = usize::try_from(req.records)
            .map_err(|_| Status::invalid_argument("records does not fit in memory"))?;
        let mut sent = 0;
        while sent < records {
            let take = per_item.min(records - sent);
            let processes = (sent..sent + take)
                .map(|i| all[i % all.len()].clone())
                .collect();
            tx.send(ProcessList { processes }).await?;
            sent += take;
        }
        Ok(())
    }
}

/// 1000 plausible process records: names, paths, 2-3 argument command lines, times,
/// CPU, memory and owner.
fn process_list() -> ProcessList {
    const NAMES: [(&str, &str, &str); 10] = [
        ("systemd", "/usr/lib/systemd/systemd", "--system"),
        ("sshd", "/usr/sbin/sshd", "-D"),
        ("nginx", "/usr/sbin/nginx", "-g"),
        ("postgres", "/usr/lib/postgresql/16/bin/postgres", "-D"),
        ("containerd", "/usr/bin/containerd", "--config"),
        ("python3", "/usr/bin/python3.12", "-m"),
        ("node", "/usr/local/bin/node", "server.js"),
        ("bash", "/usr/bin/bash", "-l"),
        ("chrome", "/opt/google/chrome/chrome", "--type=renderer"),
        ("rsyslogd", "/usr/sbin/rsyslogd", "-n"),
    ];
    let processes = (0..W3_RECORDS)
        .map(|i| {
            let (name, exe, arg) = NAMES[i % NAMES.len()];
            let mut command_line = vec![exe.to_owned(), arg.to_owned()];
            if i % 3 != 0 {
                command_line.push(format!("/etc/{name}.conf"));
            }
            let i64_i = i as i64;
            ProcessRecord {
                pid: 1000 + i as u32 * 7,
                ppid: Some(if i % 4 == 0 {
                    1
                } else {
                    1000 + (i as u32 / 4) * 7
                }),
                name: name.to_owned(),
                executable_path: Some(exe.to_owned()),
                command_line,
                start_time: Some(1_718_000_000 + i64_i * 37),
                cpu_usage: Some((i % 97) as f64 * 0.37),
                memory_usage: Some(4_194_304 + (i as u64 * 104_729) % 500_000_000),
                executable_hash: None,
                hash_algorithm: None,
                user_id: Some(["0", "1000", "33", "999"][i % 4].to_owned()),
                accessible: true,
                file_exists: true,
                collection_time: 1_718_100_000_000 + i64_i,
            }
        })
        .collect();
    ProcessList { processes }
}

/// The figures a ratio of two request/response runs compares.
const LATENCY: [&str; 3] = ["calls_per_s", "p50", "p99"];

/// The result of one measurement.
struct Run {
    calls: u64,
    elapsed: Duration,
    /// Per-call latencies, sorted.
    latencies: Vec<Duration>,
    /// Payload bytes per call, request plus response (or stream items).
    bytes_per_call: usize,
    /// Records per call (1 for W1/W2; W3's 1000 compare it with W4 per record).
    records: usize,
    /// For a stream: items per call.
    items: Option<usize>,
    /// Each merged round's p50, in µs, in the order the rounds ran.
    round_p50_us: Vec<f64>,
}

impl Run {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration, bytes_per_call: usize) -> Self {
        latencies.sort_unstable();
        let mut run = Self {
            calls: latencies.len() as u64,
            elapsed,
            latencies,
            bytes_per_call,
            records: 1,
            items: None,
            round_p50_us: Vec::new(),
        };
        run.round_p50_us.push(run.percentile_us(50.0));
        run
    }

    /// This run's calls and `other`'s as one run: their latencies together, their
    /// times added.
    fn merge(mut self, other: Run) -> Self {
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.calls += other.calls;
        self.elapsed += other.elapsed;
        self.round_p50_us.extend(other.round_p50_us);
        self
    }

    /// Sets the records each call delivers.
    fn records(mut self, records: usize) -> Self {
        self.records = records;
        self
    }

    /// Marks this run as a stream of `records` records in `items` items per call.
    fn streaming(self, records: usize, items: usize) -> Self {
        Self {
            items: Some(items),
            ..self.records(records)
        }
    }

    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn records_per_s(&self) -> f64 {
        self.calls_per_s() * self.records as f64
    }

    /// Nearest-rank percentile, in microseconds.
    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1e6
    }

    fn mb_per_s(&self) -> f64 {
        self.calls_per_s() * self.bytes_per_call as f64 / 1e6
    }

    fn print(&self, implementation: &str, workload: &str) {
        let mut line = format!(
            "impl={implementation} workload={workload} calls_per_s={:.1} p50_us={:.1} p99_us={:.1} mb_per_s={:.2}",
            self.calls_per_s(),
            self.percentile_us(50.0),
            self.percentile_us(99.0),
            self.mb_per_s()
        );
        if let Some(items) = self.items {
            line += &format!(
                " records_per_s={:.0} items_per_s={:.0} records_per_item={}",
                self.records_per_s(),
                self.calls_per_s() * items as f64,
                self.records / items.max(1)
            );
        }
        if self.round_p50_us.len() > 1 {
            let rounds: Vec<String> = self
                .round_p50_us
                .iter()
                .map(|us| format!("{us:.2}"))
                .collect();
            line += &format!(" round_p50_us={}", rounds.join(","));
        }
        println!("{line}");
    }
}

/// Rounds in which the two sides of a ratio that is a target (W1 and W2 against their
/// floors, W3 against the codec limit) take turns, each for a `ROUNDS`th of the measurement time,
/// in the order A B, B A, A B, B A: a drift of the machine's speed during the run (other
/// guests of the VM, CPU frequency) then weighs on both sides alike. Measured one after
/// the other, ~15 s apart, the W1 ratio varied by ±6% between runs on a 2-core VM.
const ROUNDS: u32 = 4;

/// The warm-up of round `round` of [`ROUNDS`]: all of it before the first, an eighth of
/// a round before each later one (the other side just ran).
fn round_warmup(round: u32, warmup: Duration, duration: Duration) -> Duration {
    if round == 0 {
        warmup
    } else {
        (duration / ROUNDS / 8).min(warmup)
    }
}

/// Adds a round to the rounds so far.
fn add_round(rounds: Option<Run>, round: Run) -> Option<Run> {
    Some(match rounds {
        Some(rounds) => rounds.merge(round),
        None => round,
    })
}

/// Prints `ratio workload=<W> <a>/<b>` with the ratio of each named quantity.
fn print_ratio(workload: &str, names: (&str, &str), a: &Run, b: &Run, fields: &[&str]) {
    let mut line = format!("ratio workload={workload} {}/{}", names.0, names.1);
    for field in fields {
        let value = match *field {
            "calls_per_s" => a.calls_per_s() / b.calls_per_s(),
            "records_per_s" => a.records_per_s() / b.records_per_s(),
            "mb_per_s" => a.mb_per_s() / b.mb_per_s(),
            "p50" => a.percentile_us(50.0) / b.percentile_us(50.0),
            "p99" => a.percentile_us(99.0) / b.percentile_us(99.0),
            _ => f64::NAN,
        };
        line += &format!(" {field}={value:.3}");
    }
    println!("{line}");
}

/// Runs `$call` (an expression awaiting one call, yielding `Result<_, BoxError>`) back to
/// back: for `$warmup` unrecorded, then for `$duration` timing each; evaluates to
/// `Result<Run, BoxError>`. A macro rather than a function taking an async closure, so
/// that the call borrows its connection directly and the future stays `Send`.
macro_rules! sequential {
    ($warmup:expr, $duration:expr, $bytes_per_call:expr, $call:expr) => {
        async {
            let end = Instant::now() + $warmup;
            while Instant::now() < end {
                $call?;
            }
            let mut latencies = Vec::with_capacity(1 << 16);
            let start = Instant::now();
            let end = start + $duration;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                $call?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>(Run::new(latencies, start.elapsed(), $bytes_per_call))
        }
    };
}

/// `tasks` callers each running `call` back to back: for `warmup` unrecorded, then for
/// `duration` timing each call.
async fn concurrent<F, Fut>(
    tasks: usize,
    warmup: Duration,
    duration: Duration,
    bytes_per_call: usize,
    call: F,
) -> Result<Run, BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    callers(tasks, warmup, call.clone()).await?;
    let start = Instant::now();
    let latencies = callers(tasks, duration, call).await?;
    Ok(Run::new(latencies, start.elapsed(), bytes_per_call))
}

/// `tasks` callers each running `call` back to back until `duration` has passed; returns
/// every call's latency.
async fn callers<F, Fut>(
    tasks: usize,
    duration: Duration,
    call: F,
) -> Result<Vec<Duration>, BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let end = Instant::now() + duration;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 12);
                loop {
                    let t = Instant::now();
                    if t >= end {
                        return Ok::<_, BoxError>(latencies);
                    }
                    call().await?;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await??);
    }
    Ok(all)
}

/// What the raw floor's server answers, pre-built.
struct RawReplies {
    /// The W1 answer frame.
    small: Vec<u8>,
    /// The W3 answer frame.
    list: Vec<u8>,
    /// `W4_PER_ITEM` records as one frame: W4's item, written once per item.
    batched: Vec<u8>,
    /// The 1000 records as 1000 one-record frames: written `W4_RECORDS / 1000` times.
    singles: Vec<u8>,
}

/// The floor's server: answers each `[len][op]` frame with prebuilt frames.
async fn raw_server(listener: raw::Listener, replies: RawReplies) -> Result<(), BoxError> {
    let mut stream = listener.accept().await?;
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; 8];
        if stream.read_exact(&mut header).await.is_err() {
            return Ok(()); // the client hung up
        }
        let (len, op) = raw_header(&header)?;
        body.resize(len, 0);
        stream.read_exact(&mut body).await?;
        match op {
            OP_LIST => stream.write_all(&replies.list).await?,
            OP_STREAM_BATCHED => {
                for _ in 0..W4_RECORDS / W4_PER_ITEM {
                    stream.write_all(&replies.batched).await?;
                }
            }
            OP_STREAM_SINGLE => {
                for _ in 0..W4_RECORDS / W3_RECORDS {
                    stream.write_all(&replies.singles).await?;
                }
            }
            _ => stream.write_all(&replies.small).await?,
        }
    }
}

/// The body length and the second word a raw header announces; the length is refused
/// above [`RAW_MAX`].
fn raw_header(header: &[u8; 8]) -> Result<(usize, u32), BoxError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > RAW_MAX {
        return Err(format!("raw frame of {len} bytes exceeds {RAW_MAX}").into());
    }
    Ok((
        len,
        u32::from_le_bytes([header[4], header[5], header[6], header[7]]),
    ))
}

/// `[u32 LE len][u32 LE op][body]` appended to `frame`.
fn put_raw_frame(frame: &mut Vec<u8>, op: u32, body: &[u8]) {
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&op.to_le_bytes());
    frame.extend_from_slice(body);
}

/// `[u32 LE len][u32 LE op][body]` as one buffer.
fn raw_frame(op: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    put_raw_frame(&mut frame, op, body);
    frame
}

/// Reads one raw frame's body into `body`; returns its second header word.
async fn read_raw_frame(
    reader: &mut (impl AsyncRead + Unpin),
    body: &mut Vec<u8>,
) -> Result<u32, BoxError> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    let (len, word) = raw_header(&header)?;
    body.resize(len, 0);
    reader.read_exact(body).await?;
    Ok(word)
}

/// One raw round trip: send `request`, read one framed answer into `body`.
async fn raw_call(
    stream: &mut raw::Stream,
    request: &[u8],
    body: &mut Vec<u8>,
) -> Result<(), BoxError> {
    stream.write_all(request).await?;
    read_raw_frame(stream, body).await?;
    Ok(())
}

/// How the raw W4 consumer handles each frame.
#[derive(Clone, Copy, PartialEq)]
enum Consume {
    /// `ProcessList::decode` it and count its records, as the RPC's caller does.
    Decode,
    /// Fold its bytes (every byte is read; nothing is decoded).
    Touch,
}

/// One raw W4 stream: request it, read `frames` frames, decode or touch each. Returns
/// the records decoded (0 when only touching).
async fn raw_stream(
    stream: &mut raw::Stream,
    request: &[u8],
    frames: usize,
    consume: Consume,
    body: &mut Vec<u8>,
) -> Result<usize, BoxError> {
    stream.write_all(request).await?;
    let mut reader = BufReader::with_capacity(RAW_BUFFER, stream);
    let (mut records, mut fold) = (0, 0u8);
    for _ in 0..frames {
        read_raw_frame(&mut reader, body).await?;
        match consume {
            Consume::Decode => records += ProcessList::decode(&body[..])?.processes.len(),
            Consume::Touch => fold ^= body.iter().fold(0u8, |a, b| a ^ b),
        }
    }
    if !reader.buffer().is_empty() {
        return Err("raw stream: bytes after the last frame".into());
    }
    std::hint::black_box(fold);
    Ok(records)
}

/// The raw multiplexer's client half: a table of waiting callers, a writer task and a
/// reader task (the W2 floor).
struct Mux {
    outbound: mpsc::Sender<(u32, Vec<u8>)>,
    waiting: Mutex<HashMap<u32, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU32,
    /// Ended with the mux: then both halves are gone and the server sees the end (a
    /// pipe's write half alone does not close it).
    reader: tokio::task::AbortHandle,
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Mux {
    async fn connect(endpoint: &str) -> Result<Arc<Self>, BoxError> {
        let (read_half, write_half) = raw::split(raw::connect(endpoint).await?);
        let (outbound, queue) = mpsc::channel(1024);
        tokio::spawn(mux_writer(write_half, queue));
        Ok(Arc::new_cyclic(|mux| Self {
            outbound,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            reader: tokio::spawn(mux_reader(read_half, mux.clone())).abort_handle(),
        }))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Vec<u8>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `body` under a fresh id and waits for the answer with that id.
    async fn call(&self, body: Vec<u8>) -> Result<Vec<u8>, BoxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        self.waiting().insert(id, answer);
        self.outbound
            .send((id, body))
            .await
            .map_err(|_| "raw mux writer is gone")?;
        Ok(receiver.await.map_err(|_| "raw mux reader is gone")?)
    }
}

/// Writes whatever requests are queued as one buffer.
async fn mux_writer(mut stream: raw::WriteHalf, mut queue: mpsc::Receiver<(u32, Vec<u8>)>) {
    let (mut batch, mut buffer) = (Vec::with_capacity(64), Vec::with_capacity(8 * 1024));
    while queue.recv_many(&mut batch, 64).await > 0 {
        for (id, body) in batch.drain(..) {
            put_raw_frame(&mut buffer, id, &body);
        }
        if stream.write_all(&buffer).await.is_err() {
            return;
        }
        buffer.clear();
    }
}

/// Routes each answer to the caller waiting on its id.
async fn mux_reader(stream: raw::ReadHalf, mux: std::sync::Weak<Mux>) {
    let mut reader = BufReader::with_capacity(RAW_BUFFER, stream);
    loop {
        let mut body = Vec::new();
        let Ok(id) = read_raw_frame(&mut reader, &mut body).await else {
            return;
        };
        let Some(mux) = mux.upgrade() else { return };
        let waiter = mux.waiting().remove(&id);
        if let Some(answer) = waiter {
            let _ = answer.send(body);
        }
    }
}

/// The raw multiplexer's server: echoes each `[len][id]` frame, writing its answers
/// whenever it has read everything that arrived.
async fn mux_server(listener: raw::Listener) -> Result<(), BoxError> {
    let (read_half, mut write_half) = raw::split(listener.accept().await?);
    let mut reader = BufReader::with_capacity(RAW_BUFFER, read_half);
    let (mut body, mut out) = (Vec::new(), Vec::with_capacity(RAW_BUFFER));
    loop {
        let Ok(id) = read_raw_frame(&mut reader, &mut body).await else {
            return Ok(()); // the client hung up
        };
        put_raw_frame(&mut out, id, &body);
        if reader.buffer().is_empty() || out.len() >= RAW_BUFFER {
            write_half.write_all(&out).await?;
            out.clear();
        }
    }
}

fn seconds_per_measurement() -> Result<f64, BoxError> {
    let text = match std::env::args().nth(1) {
        Some(arg) => arg,
        None => match std::env::var("BENCH_SECS") {
            Ok(value) => value,
            Err(_) => return Ok(2.0),
        },
    };
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err(format!("seconds per measurement must be a positive number, got {text:?}").into()),
    }
}

/// Times `step` back to back, each on its own: for `warmup` unrecorded, then for
/// `duration`; returns each step's time, in order.
fn time_steps(
    warmup: Duration,
    duration: Duration,
    mut step: impl FnMut() -> Result<(), BoxError>,
) -> Result<Vec<Duration>, BoxError> {
    let end = Instant::now() + warmup;
    while Instant::now() < end {
        step()?;
    }
    let mut times = Vec::with_capacity(1 << 14);
    let end = Instant::now() + duration;
    loop {
        let t = Instant::now();
        if t >= end {
            return Ok(times);
        }
        step()?;
        times.push(t.elapsed());
    }
}

fn mean_us(times: &[Duration]) -> f64 {
    times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len().max(1) as f64
}

/// The codec limit of W3, in-process, no I/O, on this thread: the work every protobuf
/// framework does per W3 call. Each step is timed in its own loop: the handler's clone
/// of the answer (and dropping it), prost-encoding it into a `Vec` (and dropping that),
/// and decoding it (and dropping the result).
#[derive(Default)]
struct CodecTimes {
    clone: Vec<Duration>,
    encode: Vec<Duration>,
    decode: Vec<Duration>,
}

impl CodecTimes {
    /// Times each step for a third of `duration`, after a third of `warmup`, and adds
    /// the times to these.
    fn measure(
        &mut self,
        list: &ProcessList,
        warmup: Duration,
        duration: Duration,
    ) -> Result<(), BoxError> {
        let (warmup, duration) = (warmup / 3, duration / 3);
        let encoded = list.encode_to_vec();
        self.clone.extend(time_steps(warmup, duration, || {
            drop(black_box(black_box(list).clone()));
            Ok(())
        })?);
        self.encode.extend(time_steps(warmup, duration, || {
            drop(black_box(black_box(list).encode_to_vec()));
            Ok(())
        })?);
        self.decode.extend(time_steps(warmup, duration, || {
            drop(black_box(ProcessList::decode(black_box(&encoded[..]))?));
            Ok(())
        })?);
        Ok(())
    }

    /// The limit as a run: round `i` is clone `i` + encode `i` + decode `i`, so its
    /// `calls_per_s` is 1 / (mean clone + mean encode + mean decode). Also prints the
    /// means, a CRC32C of the answer (each end of a real call computes one) and, for
    /// reference, the same three steps run in one loop.
    fn run(&self, list: &ProcessList, bytes_per_call: usize) -> Result<Run, BoxError> {
        let encoded = list.encode_to_vec();
        let crc = time_steps(Duration::ZERO, Duration::from_millis(20), || {
            black_box(daemoneye_ipc::Crc32Variant::Castagnoli.checksum(black_box(&encoded)));
            Ok(())
        })?;
        let one_loop = time_steps(Duration::ZERO, Duration::from_millis(300), || {
            let answer = black_box(list).clone();
            let encoded = answer.encode_to_vec();
            drop(answer);
            drop(black_box(ProcessList::decode(black_box(&encoded[..]))?));
            Ok(())
        })?;
        println!(
            "# W3 in-process costs per call (no I/O, means): clone_us={:.1} encode_us={:.1} decode_us={:.1} crc32c_us={:.1}; \
             the three in one loop: {:.1} us",
            mean_us(&self.clone),
            mean_us(&self.encode),
            mean_us(&self.decode),
            mean_us(&crc),
            mean_us(&one_loop),
        );
        let rounds = self
            .clone
            .len()
            .min(self.encode.len())
            .min(self.decode.len());
        let latencies: Vec<Duration> = (0..rounds)
            .map(|i| self.clone[i] + self.encode[i] + self.decode[i])
            .collect();
        let elapsed = latencies.iter().sum();
        Ok(Run::new(latencies, elapsed, bytes_per_call))
    }
}

/// A daemoneye-ipc server of the bench service, on a task of its own, and a client
/// connected to it.
struct IpcPair {
    client: BenchClient,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), daemoneye_ipc::IpcError>>,
}

impl IpcPair {
    async fn start(config: &IpcConfig, list: &ProcessList) -> Result<Self, BoxError> {
        let server = Server::bind(config, BenchServer::new(BenchImpl { list: list.clone() }))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_with_shutdown(async {
            let _ = stopped.await;
        }));
        let client = BenchClient::connect(config).await?;
        Ok(Self {
            client,
            stop,
            serving,
        })
    }

    /// Closes the client and stops the server, so that nothing of theirs stays
    /// registered with the runtime while a floor runs: an idle connection's read
    /// timer alone makes every park of a worker visit the timer wheel.
    async fn stop(self) -> Result<(), BoxError> {
        drop(self.client);
        let _ = self.stop.send(());
        self.serving.await??;
        Ok(())
    }
}

/// Checks that a stream delivered every record.
fn expect_records(what: &str, got: usize, want: usize) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} delivered {got} records, not {want}").into())
    }
}

async fn run() -> Result<(), BoxError> {
    let secs = seconds_per_measurement()?;
    let duration = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs_f64((secs / 4.0).min(0.5));
    let dir = tempfile::tempdir()?;

    let list = process_list();
    let list_bytes = list.encoded_len();
    let small = Small {
        id: "req-00000001".to_owned(),
        seq: 123_456,
    };
    let small_bytes = small.encoded_len();
    // The W4 items, exactly as the server sends them (and pre-encoded for the floor).
    let w4_item = ProcessList {
        processes: list.processes[..W4_PER_ITEM].to_vec(),
    }
    .encode_to_vec();
    let singles: Vec<Vec<u8>> = list
        .processes
        .iter()
        .map(|record| {
            ProcessList {
                processes: vec![record.clone()],
            }
            .encode_to_vec()
        })
        .collect();
    let w4_items = W4_RECORDS / W4_PER_ITEM;
    let w4_bytes = w4_items * w4_item.len();
    let w4x1_bytes = W4_RECORDS / W3_RECORDS * singles.iter().map(Vec::len).sum::<usize>();
    let batched_request = StreamRequest {
        records: W4_RECORDS as u64,
        per_item: W4_PER_ITEM as u64,
    };
    let single_request = StreamRequest {
        records: W4_RECORDS as u64,
        per_item: 1,
    };
    let w3s_request = StreamRequest {
        records: W3_RECORDS as u64,
        per_item: W3S_PER_ITEM as u64,
    };
    let stream_request_bytes = batched_request.encoded_len();
    println!(
        "# payloads: small message {small_bytes} B; W3 response {} records = {list_bytes} B ({:.1} KB); \
         W4 stream {W4_RECORDS} records = {w4_items} items of {} B ({:.1} MB), or {W4_RECORDS} items of ~{} B ({:.1} MB)",
        list.processes.len(),
        list_bytes as f64 / 1e3,
        w4_item.len(),
        w4_bytes as f64 / 1e6,
        w4x1_bytes / W4_RECORDS,
        w4x1_bytes as f64 / 1e6,
    );
    println!(
        "# {secs} s per measurement after {:.2} s warm-up; tokio multi-thread runtime, {} workers",
        warmup.as_secs_f64(),
        workers()
    );

    // `BENCH_ONLY=W1`, `W2` or `W3`: that workload and its floor only, then their ratio.
    let only = std::env::var("BENCH_ONLY").ok();
    if let Some(other) = only.as_deref().filter(|w| !["W1", "W2", "W3"].contains(w)) {
        return Err(format!("BENCH_ONLY={other}: expected W1, W2 or W3").into());
    }
    let rounds = |workload: &str| match only.as_deref() {
        Some(selected) if selected != workload => 0,
        _ => ROUNDS,
    };
    if std::env::var_os("BENCH_HEAP_ONLY").is_some() {
        return heap_figures(&heap_config(dir.path()), &list, &small).await;
    }

    // --- daemoneye-ipc ------------------------------------------------------------
    let config = IpcConfig::with_endpoint(endpoint_in(dir.path(), "bench"));

    // The raw-uds floor's server, up from the start: W1 takes turns with it.
    let endpoint = endpoint_in(dir.path(), "raw");
    let listener = raw::Listener::bind(&endpoint)?;
    let small_body = vec![0x5a; small_bytes];
    let mut singles_chunk = Vec::new();
    for single in &singles {
        put_raw_frame(&mut singles_chunk, OP_ITEM, single);
    }
    let raw = tokio::spawn(raw_server(
        listener,
        RawReplies {
            small: raw_frame(OP_SMALL, &small_body),
            list: raw_frame(OP_LIST, &list.encode_to_vec()),
            batched: raw_frame(OP_ITEM, &w4_item),
            singles: singles_chunk,
        },
    ));
    let mut stream = raw::connect(&endpoint).await?;
    let mut body = Vec::new();
    let small_request = raw_frame(OP_SMALL, &small_body);

    // W1 and its floor, in turns.
    let (mut ipc_w1, mut raw_w1) = (None, None);
    for round in 0..rounds("W1") {
        let warmup = round_warmup(round, warmup, duration);
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let ipc = IpcPair::start(&config, &list).await?;
                let run = sequential!(warmup, duration / ROUNDS, 2 * small_bytes, {
                    ipc.client.echo(small.clone()).await
                });
                ipc_w1 = add_round(ipc_w1, run.await?);
                ipc.stop().await?;
            } else {
                let run = sequential!(warmup, duration / ROUNDS, 2 * small_bytes, {
                    raw_call(&mut stream, &small_request, &mut body).await
                });
                raw_w1 = add_round(raw_w1, run.await?);
            }
        }
    }
    if let (Some(ipc), Some(raw)) = (&ipc_w1, &raw_w1) {
        ipc.print("daemoneye-ipc", "W1");
        raw.print("raw-uds", "W1");
    }

    // W2 and its floor (a bare multiplexer), in turns.
    let (mut ipc_w2, mut mux_w2, w2_bytes) = (None, None, 2 * small_bytes);
    for round in 0..rounds("W2") {
        let warmup = round_warmup(round, warmup, duration);
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let ipc = IpcPair::start(&config, &list).await?;
                let call = {
                    let (client, small) = (ipc.client.clone(), small.clone());
                    move || {
                        let (client, small) = (client.clone(), small.clone());
                        async move {
                            client.echo(small).await?;
                            Ok(())
                        }
                    }
                };
                let run = concurrent(W2_TASKS, warmup, duration / ROUNDS, w2_bytes, call).await?;
                ipc_w2 = add_round(ipc_w2, run);
                ipc.stop().await?;
            } else {
                let endpoint = endpoint_in(dir.path(), &format!("mux{round}"));
                let serving = tokio::spawn(mux_server(raw::Listener::bind(&endpoint)?));
                let mux = Mux::connect(&endpoint).await?;
                let call = {
                    let (mux, small_body) = (mux.clone(), small_body.clone());
                    move || {
                        let (mux, request) = (mux.clone(), small_body.clone());
                        async move {
                            let answer = mux.call(request).await?;
                            if answer.len() != small_bytes {
                                return Err("raw mux answer of the wrong size".into());
                            }
                            Ok(())
                        }
                    }
                };
                let run = concurrent(W2_TASKS, warmup, duration / ROUNDS, w2_bytes, call).await?;
                mux_w2 = add_round(mux_w2, run);
                // The writer's queue closes, the reader is ended, the server sees the end.
                drop(mux);
                serving.await??;
            }
        }
    }
    if let (Some(ipc), Some(mux)) = (&ipc_w2, &mux_w2) {
        ipc.print("daemoneye-ipc", "W2");
        mux.print("raw-mux", "W2");
    }

    // W3 and the codec limit, in turns.
    let mut codec_limit = None;
    let (mut codec_times, mut ipc_w3) = (CodecTimes::default(), None);
    for round in 0..rounds("W3") {
        let warmup = round_warmup(round, warmup, duration);
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let ipc = IpcPair::start(&config, &list).await?;
                let check = ipc.client.list(small.clone()).await?;
                expect_records("W3", check.processes.len(), W3_RECORDS)?;
                let run = sequential!(warmup, duration / ROUNDS, small_bytes + list_bytes, {
                    ipc.client.list(small.clone()).await
                });
                ipc_w3 = add_round(ipc_w3, run.await?);
                ipc.stop().await?;
            } else {
                codec_times.measure(&list, warmup, duration / ROUNDS)?;
            }
        }
    }
    let ipc_w3 = ipc_w3.map(|run| run.records(W3_RECORDS));
    if let Some(ipc) = &ipc_w3 {
        let codec = codec_times.run(&list, small_bytes + list_bytes)?;
        codec.print("codec-limit", "W3");
        ipc.print("daemoneye-ipc", "W3");
        codec_limit = Some(codec);
    }

    if only.is_some() {
        let pairs = [
            ("W1", "raw-uds", &ipc_w1, &raw_w1),
            ("W2", "raw-mux", &ipc_w2, &mux_w2),
            ("W3", "codec-limit", &ipc_w3, &codec_limit),
        ];
        for (workload, floor, ipc, other) in pairs {
            if let (Some(ipc), Some(other)) = (ipc, other) {
                print_ratio(workload, ("daemoneye-ipc", floor), ipc, other, &LATENCY);
            }
        }
        return Ok(());
    }
    let missing = "a workload ran no round";
    let (ipc_w1, raw_w1) = (ipc_w1.ok_or(missing)?, raw_w1.ok_or(missing)?);
    let (ipc_w2, mux_w2) = (ipc_w2.ok_or(missing)?, mux_w2.ok_or(missing)?);
    let (ipc_w3, codec) = (ipc_w3.ok_or(missing)?, codec_limit.ok_or(missing)?);

    // The other workloads, on one server and one client.
    let IpcPair {
        client,
        stop,
        serving: server,
    } = IpcPair::start(&config, &list).await?;

    // W3s: the W3 answer as a stream, collected into one list by the caller.
    let w3s_call = || async {
        let mut items = client.records(w3s_request.clone()).await?;
        let mut processes = Vec::with_capacity(W3_RECORDS);
        while let Some(item) = items.next().await {
            processes.extend(item?.processes);
        }
        expect_records("W3s", processes.len(), W3_RECORDS)?;
        Ok::<_, BoxError>(ProcessList { processes })
    };
    let ipc_w3s = sequential!(warmup, duration, stream_request_bytes + list_bytes, {
        w3s_call().await
    })
    .await?
    .streaming(W3_RECORDS, W3_RECORDS / W3S_PER_ITEM);
    ipc_w3s.print("daemoneye-ipc", "W3s");

    // W4: 100,000 records, the consumer decoding each item and counting its records.
    let w4_call = |request: &StreamRequest| {
        let request = request.clone();
        let client = &client;
        async move {
            let mut items = client.records(request).await?;
            let mut records = 0;
            while let Some(item) = items.next().await {
                records += item?.processes.len();
            }
            expect_records("W4", records, W4_RECORDS)
        }
    };
    let ipc_w4 = sequential!(warmup, duration, stream_request_bytes + w4_bytes, {
        w4_call(&batched_request).await
    })
    .await?
    .streaming(W4_RECORDS, w4_items);
    ipc_w4.print("daemoneye-ipc", "W4");
    let ipc_w4x1 = sequential!(warmup, duration, stream_request_bytes + w4x1_bytes, {
        w4_call(&single_request).await
    })
    .await?
    .streaming(W4_RECORDS, W4_RECORDS);
    ipc_w4x1.print("daemoneye-ipc", "W4x1");

    drop(client);
    let _ = stop.send(());
    server.await??;

    // --- raw-uds floor (W1 ran in turns with daemoneye-ipc's) ---------------------
    let list_request = raw_frame(OP_LIST, &small_body);
    let raw_w3 = sequential!(warmup, duration, small_bytes + list_bytes, {
        raw_call(&mut stream, &list_request, &mut body).await
    })
    .await?;
    if body.len() != list_bytes {
        return Err(format!("raw W3 answer is {} bytes, not {list_bytes}", body.len()).into());
    }
    raw_w3.print("raw-uds", "W3");

    let request_body = vec![0x5a; stream_request_bytes];
    let batched = raw_frame(OP_STREAM_BATCHED, &request_body);
    let raw_w4 = sequential!(warmup, duration, stream_request_bytes + w4_bytes, {
        let records = raw_stream(&mut stream, &batched, w4_items, Consume::Decode, &mut body);
        expect_records("raw W4", records.await?, W4_RECORDS)
    })
    .await?
    .streaming(W4_RECORDS, w4_items);
    raw_w4.print("raw-uds", "W4");
    let raw_w4_touch = sequential!(warmup, duration, stream_request_bytes + w4_bytes, {
        raw_stream(&mut stream, &batched, w4_items, Consume::Touch, &mut body).await
    })
    .await?
    .streaming(W4_RECORDS, w4_items);
    raw_w4_touch.print("raw-uds-touch", "W4");
    let single = raw_frame(OP_STREAM_SINGLE, &request_body);
    let raw_w4x1 = sequential!(warmup, duration, stream_request_bytes + w4x1_bytes, {
        let records = raw_stream(&mut stream, &single, W4_RECORDS, Consume::Decode, &mut body);
        expect_records("raw W4x1", records.await?, W4_RECORDS)
    })
    .await?
    .streaming(W4_RECORDS, W4_RECORDS);
    raw_w4x1.print("raw-uds", "W4x1");
    drop(stream);
    raw.await??;

    // --- ratios -------------------------------------------------------------------
    let ipc = "daemoneye-ipc";
    let records = ["records_per_s", "mb_per_s"];
    print_ratio("W1", (ipc, "raw-uds"), &ipc_w1, &raw_w1, &LATENCY);
    print_ratio("W2", (ipc, "raw-mux"), &ipc_w2, &mux_w2, &LATENCY);
    print_ratio("W3", (ipc, "raw-uds"), &ipc_w3, &raw_w3, &LATENCY);
    print_ratio("W3", (ipc, "codec-limit"), &ipc_w3, &codec, &LATENCY);
    let (w3, w3s, w4) = ("daemoneye-ipc-W3", "daemoneye-ipc-W3s", "daemoneye-ipc-W4");
    print_ratio("W3s", (w3s, w3), &ipc_w3s, &ipc_w3, &LATENCY);
    print_ratio("W4", (ipc, "raw-uds"), &ipc_w4, &raw_w4, &records);
    let touch = (ipc, "raw-uds-touch");
    print_ratio("W4", touch, &ipc_w4, &raw_w4_touch, &records);
    print_ratio("W4", (w4, w3), &ipc_w4, &ipc_w3, &["records_per_s"]);
    print_ratio("W4x1", (ipc, "raw-uds"), &ipc_w4x1, &raw_w4x1, &records);

    // --- heap: allocations per call, memory per idle connection ---------------------
    heap_figures(&heap_config(dir.path()), &list, &small).await
}

/// The configuration of the heap measurements: room for the idle connections.
fn heap_config(dir: &std::path::Path) -> IpcConfig {
    IpcConfig {
        max_connections: IDLE_CONNECTIONS + 16,
        ..IpcConfig::with_endpoint(endpoint_in(dir, "heap"))
    }
}

/// Calls counted in the allocation figures of W1.
const ALLOC_W1_CALLS: u64 = 20_000;
/// Calls counted in the allocation figures of W3.
const ALLOC_W3_CALLS: u64 = 200;
/// Idle connections opened to measure the server's memory per connection.
const IDLE_CONNECTIONS: usize = 1000;

/// Counts heap allocations per W1 and W3 call on each side, and the server's live heap
/// bytes per idle connection, with the server on a runtime of its own (one worker,
/// marked [`alloc::Side::Server`]) so that every allocation is attributed to the side
/// whose thread made it. Prints one `alloc` line per workload and side and one `memory`
/// line.
async fn heap_figures(
    config: &IpcConfig,
    list: &ProcessList,
    small: &Small,
) -> Result<(), BoxError> {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| alloc::mark_thread(alloc::Side::Server))
        .enable_all()
        .build()?;
    let server = {
        // Registered with the server runtime's reactor.
        let _enter = server_runtime.enter();
        Server::bind(config, BenchServer::new(BenchImpl { list: list.clone() }))?
    };
    let metrics = server.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = server_runtime.spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let result = heap_figures_against(config, &metrics, small).await;
    let _ = stop.send(());
    let served = serving.await;
    server_runtime.shutdown_background();
    result?;
    served??;
    Ok(())
}

async fn heap_figures_against(
    config: &IpcConfig,
    metrics: &daemoneye_ipc::ServerMetrics,
    small: &Small,
) -> Result<(), BoxError> {
    let client = BenchClient::connect(config).await?;
    for _ in 0..1000 {
        client.echo(small.clone()).await?;
    }
    client.list(small.clone()).await?;

    let counted = |calls: u64, workload: &str, counts: alloc::Snapshot| {
        for (side, c) in [("client", counts.client), ("server", counts.server)] {
            println!(
                "alloc workload={workload} side={side} allocs_per_call={:.2} bytes_per_call={:.0} calls={calls}",
                c.allocs as f64 / calls as f64,
                c.bytes as f64 / calls as f64,
            );
        }
    };
    alloc::set_counting(true);
    let before = alloc::Snapshot::now();
    for _ in 0..ALLOC_W1_CALLS {
        client.echo(small.clone()).await?;
    }
    let w1 = alloc::Snapshot::now().since(&before);
    let before = alloc::Snapshot::now();
    for _ in 0..ALLOC_W3_CALLS {
        client.list(small.clone()).await?;
    }
    let w3 = alloc::Snapshot::now().since(&before);
    alloc::set_counting(false);
    counted(ALLOC_W1_CALLS, "W1", w1);
    counted(ALLOC_W3_CALLS, "W3", w3);
    drop(client);
    wait_for_connections(metrics, 0).await;

    // Idle connections: each completed its handshake, none has a call in flight.
    alloc::set_counting(true);
    let before = alloc::Snapshot::now();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(BenchClient::connect(config).await?);
    }
    wait_for_connections(metrics, IDLE_CONNECTIONS as u64).await;
    // Let every connection's tasks reach their wait for the first request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = alloc::Snapshot::now().since(&before);
    drop(idle);
    wait_for_connections(metrics, 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = alloc::Snapshot::now().since(&before);
    alloc::set_counting(false);
    let n = IDLE_CONNECTIONS as f64;
    println!(
        "memory workload=idle connections={IDLE_CONNECTIONS} server_bytes_per_connection={:.0} \
         client_bytes_per_connection={:.0} server_allocs_per_connection={:.1} \
         server_bytes_left_after_close={}",
        open.server.live() as f64 / n,
        open.client.live() as f64 / n,
        open.server.allocs as f64 / n,
        closed.server.live(),
    );
    Ok(())
}

/// Waits until the server counts `open` connections (polling; the bench's own
/// connections open and close within milliseconds).
async fn wait_for_connections(metrics: &daemoneye_ipc::ServerMetrics, open: u64) {
    while metrics.snapshot().connections_open != open {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The runtime's worker threads: 2, or `BENCH_WORKERS` (a diagnosis: with 1, both
/// ends of a call run on one thread, as the codec limit does).
fn workers() -> usize {
    std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|workers| workers.parse().ok())
        .filter(|workers| *workers > 0)
        .unwrap_or(2)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build();
    let result = match runtime {
        // Spawned, so that the callers too run on the workers, not on the main thread.
        Ok(runtime) => runtime
            .block_on(runtime.spawn(run()))
            .unwrap_or_else(|join| Err(format!("bench task failed: {join}").into())),
        Err(error) => Err(error.into()),
    };
    if let Err(error) = result {
        eprintln!("bench failed: {error}");
        std::process::exit(1);
    }
}
