//! Throughput and latency of daemoneye-ipc against a bare Unix-socket floor.
//!
//! ```text
//! cargo run --release --example bench            # ~2 s per measurement
//! BENCH_SECS=5 cargo run --release --example bench
//! cargo run --release --example bench -- 0.5    # seconds per measurement as an argument
//! ```
//!
//! Everything runs in one process on a multi-thread tokio runtime with 2 workers, over
//! Unix sockets in a temporary directory:
//!
//! - **W1**: one client, one small call at a time (a 12-byte id and a `u32`).
//! - **W2**: 64 tasks calling concurrently through clones of one client (one connection).
//! - **W3**: a small request answered with 1000 `ProcessRecord`s (~114 KB encoded); the
//!   server clones its prebuilt list and returns it, so it is encoded on every call, as a
//!   real handler's answer would be.
//! - **raw-uds** (the floor): W1 and W3 over a bare `tokio::net::UnixStream`, with an
//!   8-byte header (`u32` length, `u32` opcode), no protobuf, no CRC, no envelope, the
//!   same payload sizes as the RPC.
//!
//! One line per measurement: `impl=<name> workload=<W1|W2|W3> calls_per_s p50_us p99_us
//! mb_per_s`, where `mb_per_s` counts payload bytes (the encoded request and response
//! messages, not headers or envelopes) of both directions, MB = 10^6 bytes. Then one
//! `ratio` line per workload that has a floor.

use std::{error::Error, future::Future, time::Duration, time::Instant};

use daemoneye_ipc::{ipc_service, IpcConfig, Server, Status};
use daemoneye_proto::{prost::Message, ProcessList, ProcessRecord};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

type BoxError = Box<dyn Error + Send + Sync>;

/// Concurrent callers in W2.
const W2_TASKS: usize = 64;
/// Process records in the W3 answer.
const W3_RECORDS: usize = 1000;
/// Largest raw-floor body either end accepts, in bytes.
const RAW_MAX: usize = 1 << 20;
/// Raw-floor opcodes (the second `u32` of the raw header).
const OP_SMALL: u32 = 1;
const OP_LIST: u32 = 3;

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

/// The service under test.
#[ipc_service(name = "bench.Bench")]
pub trait Bench {
    /// Returns the request unchanged.
    async fn echo(&self, req: Small) -> Result<Small, Status>;
    /// Returns the server's process list (1000 records).
    async fn list(&self, req: Small) -> Result<ProcessList, Status>;
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

/// The result of one measurement.
struct Run {
    calls: u64,
    elapsed: Duration,
    /// Per-call latencies, sorted.
    latencies: Vec<Duration>,
    /// Payload bytes per call, request plus response.
    bytes_per_call: usize,
}

impl Run {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration, bytes_per_call: usize) -> Self {
        latencies.sort_unstable();
        Self {
            calls: latencies.len() as u64,
            elapsed,
            latencies,
            bytes_per_call,
        }
    }

    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
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
        println!(
            "impl={implementation} workload={workload} calls_per_s={:.1} p50_us={:.1} p99_us={:.1} mb_per_s={:.2}",
            self.calls_per_s(),
            self.percentile_us(50.0),
            self.percentile_us(99.0),
            self.mb_per_s()
        );
    }
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

/// `tasks` callers each running `call` back to back until `duration` has passed; returns
/// every call's latency.
async fn concurrent<F, Fut>(
    tasks: usize,
    duration: Duration,
    call: F,
) -> Result<(Vec<Duration>, Duration), BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let start = Instant::now();
    let end = start + duration;
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
    Ok((all, start.elapsed()))
}

/// The floor's server: answers each `[len][op]` frame with a prebuilt frame.
async fn raw_server(listener: UnixListener, small: Vec<u8>, list: Vec<u8>) -> Result<(), BoxError> {
    let (mut stream, _) = listener.accept().await?;
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; 8];
        if stream.read_exact(&mut header).await.is_err() {
            return Ok(()); // the client hung up
        }
        let len = raw_len(&header)?;
        let op = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        body.resize(len, 0);
        stream.read_exact(&mut body).await?;
        let reply = if op == OP_LIST { &list } else { &small };
        stream.write_all(reply).await?;
    }
}

/// The body length a raw header announces, refused above [`RAW_MAX`].
fn raw_len(header: &[u8; 8]) -> Result<usize, BoxError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > RAW_MAX {
        return Err(format!("raw frame of {len} bytes exceeds {RAW_MAX}").into());
    }
    Ok(len)
}

/// `[u32 LE len][u32 LE op][body]` as one buffer.
fn raw_frame(op: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&op.to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// One raw round trip: send `request`, read one framed answer into `body`.
async fn raw_call(
    stream: &mut UnixStream,
    request: &[u8],
    body: &mut Vec<u8>,
) -> Result<(), BoxError> {
    stream.write_all(request).await?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let len = raw_len(&header)?;
    body.resize(len, 0);
    stream.read_exact(body).await?;
    Ok(())
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

/// Prints what the W3 answer costs in-process, without any socket: the handler's clone,
/// one encode (the runtime encodes the handler's answer, then copies it into the
/// envelope), one CRC32C (each end computes one) and the client's decode.
fn w3_breakdown(list: &ProcessList) {
    const ROUNDS: u32 = 200;
    let time = |f: &mut dyn FnMut()| {
        f();
        let start = Instant::now();
        for _ in 0..ROUNDS {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
    };
    let encoded = list.encode_to_vec();
    let clone_us = time(&mut || drop(std::hint::black_box(list.clone())));
    let encode_us = time(&mut || drop(std::hint::black_box(list.encode_to_vec())));
    let crc_us = time(&mut || {
        std::hint::black_box(daemoneye_ipc::Crc32Variant::Castagnoli.checksum(&encoded));
    });
    let decode_us = time(&mut || drop(std::hint::black_box(ProcessList::decode(&encoded[..]))));
    println!(
        "# W3 in-process costs per call (no I/O): clone_us={clone_us:.1} encode_us={encode_us:.1} crc32c_us={crc_us:.1} decode_us={decode_us:.1}"
    );
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
    println!(
        "# payloads: small message {small_bytes} B; W3 response {} records = {list_bytes} B ({:.1} KB)",
        list.processes.len(),
        list_bytes as f64 / 1e3
    );
    println!(
        "# {secs} s per measurement after {:.2} s warm-up; tokio multi-thread runtime, 2 workers",
        warmup.as_secs_f64()
    );

    w3_breakdown(&list);

    // --- daemoneye-ipc ------------------------------------------------------------
    let config = IpcConfig::with_endpoint(dir.path().join("bench.sock").to_string_lossy());
    let server = Server::bind(&config, BenchServer::new(BenchImpl { list: list.clone() }))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let client = BenchClient::connect(&config).await?;

    let ipc_w1 = sequential!(warmup, duration, 2 * small_bytes, {
        client.echo(small.clone()).await
    })
    .await?;
    ipc_w1.print("daemoneye-ipc", "W1");

    let w2_call = {
        let (client, small) = (client.clone(), small.clone());
        move || {
            let (client, small) = (client.clone(), small.clone());
            async move {
                client.echo(small).await?;
                Ok(())
            }
        }
    };
    concurrent(W2_TASKS, warmup, w2_call.clone()).await?;
    let (latencies, elapsed) = concurrent(W2_TASKS, duration, w2_call).await?;
    Run::new(latencies, elapsed, 2 * small_bytes).print("daemoneye-ipc", "W2");

    let check = client.list(small.clone()).await?;
    if check.processes.len() != W3_RECORDS {
        return Err(format!("list returned {} records", check.processes.len()).into());
    }
    let ipc_w3 = sequential!(warmup, duration, small_bytes + list_bytes, {
        client.list(small.clone()).await
    })
    .await?;
    ipc_w3.print("daemoneye-ipc", "W3");

    drop(client);
    let _ = stop.send(());
    server.await??;

    // --- raw-uds floor ------------------------------------------------------------
    let path = dir.path().join("raw.sock");
    let listener = UnixListener::bind(&path)?;
    let small_body = vec![0x5a; small_bytes];
    let raw = tokio::spawn(raw_server(
        listener,
        raw_frame(OP_SMALL, &small_body),
        raw_frame(OP_LIST, &list.encode_to_vec()),
    ));
    let mut stream = UnixStream::connect(&path).await?;
    let mut body = Vec::new();

    let small_request = raw_frame(OP_SMALL, &small_body);
    let raw_w1 = sequential!(warmup, duration, 2 * small_bytes, {
        raw_call(&mut stream, &small_request, &mut body).await
    })
    .await?;
    raw_w1.print("raw-uds", "W1");

    let list_request = raw_frame(OP_LIST, &small_body);
    let raw_w3 = sequential!(warmup, duration, small_bytes + list_bytes, {
        raw_call(&mut stream, &list_request, &mut body).await
    })
    .await?;
    if body.len() != list_bytes {
        return Err(format!("raw W3 answer is {} bytes, not {list_bytes}", body.len()).into());
    }
    raw_w3.print("raw-uds", "W3");
    drop(stream);
    raw.await??;

    for (workload, ipc, raw) in [("W1", &ipc_w1, &raw_w1), ("W3", &ipc_w3, &raw_w3)] {
        println!(
            "ratio workload={workload} daemoneye-ipc/raw-uds calls_per_s={:.3} p50={:.3}",
            ipc.calls_per_s() / raw.calls_per_s(),
            ipc.percentile_us(50.0) / raw.percentile_us(50.0)
        );
    }
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        // Spawned, so that the callers too run on the 2 workers, not on the main thread.
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
