//! `procmond` exits on SIGTERM within its drain timeout even when a hash is stuck for
//! good in a read: the blocking job is abandoned, with a warning, instead of being
//! waited for.
//!
//! A read that never returns comes from a tiny FUSE filesystem served by this test: it
//! serves one file but never answers a read of it, as a hung network or FUSE mount
//! would. Like a well-behaved FUSE server, it gives up a read when the kernel says the
//! reader is being killed (`FUSE_INTERRUPT`), so that the process can be reaped once
//! it exits. Mounting needs root and `/dev/fuse`; without them the test says so on
//! stderr and passes without running.
#![cfg(target_os = "linux")]

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::IpcConfig;
use daemoneye_proto::HashRequest;

/// The drain timeout procmond runs with here, in milliseconds.
const DRAIN_MS: u64 = 1_000;
/// Upper bound for startup, for a call, and for the exit past the drain timeout.
const PATIENCE: Duration = Duration::from_secs(10);
/// Name of the one file of the FUSE filesystem.
const STUCK_FILE: &str = "stuck.bin";

/// FUSE opcodes used here (`include/uapi/linux/fuse.h`).
mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const RELEASE: u32 = 18;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const INTERRUPT: u32 = 36;
    pub const BATCH_FORGET: u32 = 42;
}
/// `fuse_in_header`: len, opcode, unique, nodeid, uid, gid, pid, extlen, padding.
const IN_HEADER: usize = 40;
/// `FOPEN_DIRECT_IO`: reads go to the filesystem, not through the page cache.
const FOPEN_DIRECT_IO: u32 = 1;
const ROOT_NODE: u64 = 1;
const FILE_NODE: u64 = 2;

/// A FUSE filesystem mounted on a directory; unmounted (lazily) on drop, after which
/// its server thread ends.
struct StuckMount {
    dir: tempfile::TempDir,
    device: File,
}

impl StuckMount {
    /// Mounts the filesystem and starts its server; `None` when this machine cannot
    /// mount FUSE (not root, no `/dev/fuse`, a container without the capability).
    /// The receiver gets a message for each read of the file, which is not answered.
    fn mount() -> Option<(Self, mpsc::Receiver<()>)> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting FUSE needs root");
            return None;
        }
        let device = match OpenOptions::new().read(true).write(true).open("/dev/fuse") {
            Ok(device) => device,
            Err(error) => {
                eprintln!("skipped: cannot open /dev/fuse: {error}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("no NUL");
        let options = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            device.as_raw_fd()
        ))
        .expect("no NUL");
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let mounted = unsafe {
            libc::mount(
                c"daemoneye-stuck".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            eprintln!(
                "skipped: cannot mount FUSE: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let server = device.try_clone().expect("clone /dev/fuse");
        let (reading, on_read) = mpsc::channel();
        thread::spawn(move || serve(server, reading));
        Some((Self { dir, device }, on_read))
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join(STUCK_FILE)
    }
}

impl Drop for StuckMount {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: target is a valid NUL-terminated string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        // Once unused, the filesystem goes away and the server's next read of the
        // device fails, which ends its thread; this descriptor closes with `self`.
        let _ = &self.device;
    }
}

/// Serves the filesystem until it is unmounted. A read of the file is never answered
/// (`reading` hears of it) unless the kernel interrupts it: then it fails with EINTR.
fn serve(mut device: File, reading: mpsc::Sender<()>) {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match device.read(&mut buffer) {
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return, // unmounted
        };
        let request = &buffer[..n];
        let opcode = u32_at(request, 4);
        let unique = u64_at(request, 8);
        let node = u64_at(request, 16);
        let body = &request[IN_HEADER.min(n)..];
        match opcode {
            op::INIT => {
                let max_readahead = u32_at(body, 8);
                let mut init = Vec::with_capacity(64);
                init.extend_from_slice(&7u32.to_le_bytes()); // major
                init.extend_from_slice(&31u32.to_le_bytes()); // minor
                init.extend_from_slice(&max_readahead.to_le_bytes());
                init.extend_from_slice(&0u32.to_le_bytes()); // flags
                init.extend_from_slice(&16u16.to_le_bytes()); // max_background
                init.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
                init.extend_from_slice(&4096u32.to_le_bytes()); // max_write
                init.extend_from_slice(&1u32.to_le_bytes()); // time_gran
                init.resize(64, 0);
                reply(&mut device, unique, 0, &init);
            }
            op::LOOKUP => {
                let name = body.split(|b| *b == 0).next().unwrap_or_default();
                if node == ROOT_NODE && name == STUCK_FILE.as_bytes() {
                    let mut entry = Vec::with_capacity(128);
                    entry.extend_from_slice(&FILE_NODE.to_le_bytes());
                    entry.extend_from_slice(&0u64.to_le_bytes()); // generation
                    entry.extend_from_slice(&3600u64.to_le_bytes()); // entry_valid
                    entry.extend_from_slice(&3600u64.to_le_bytes()); // attr_valid
                    entry.extend_from_slice(&[0; 8]); // the two nsec fields
                    entry.extend_from_slice(&attr(FILE_NODE));
                    reply(&mut device, unique, 0, &entry);
                } else {
                    reply(&mut device, unique, -libc::ENOENT, &[]);
                }
            }
            op::GETATTR => {
                let mut out = Vec::with_capacity(104);
                out.extend_from_slice(&3600u64.to_le_bytes()); // attr_valid
                out.extend_from_slice(&[0; 8]); // attr_valid_nsec, dummy
                out.extend_from_slice(&attr(node));
                reply(&mut device, unique, 0, &out);
            }
            op::OPEN => {
                let mut out = Vec::with_capacity(16);
                out.extend_from_slice(&1u64.to_le_bytes()); // fh
                out.extend_from_slice(&FOPEN_DIRECT_IO.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                reply(&mut device, unique, 0, &out);
            }
            op::READ => {
                let _ = reading.send(()); // and no answer
            }
            op::INTERRUPT => {
                // fuse_interrupt_in { unique }: the request to give up.
                reply(&mut device, u64_at(body, 0), -libc::EINTR, &[]);
            }
            op::FLUSH | op::RELEASE => reply(&mut device, unique, 0, &[]),
            op::FORGET | op::BATCH_FORGET => {} // no answer expected
            _ => reply(&mut device, unique, -libc::ENOSYS, &[]),
        }
    }
}

/// `fuse_attr` of the root directory or of the 1 MiB file.
fn attr(node: u64) -> Vec<u8> {
    let (size, mode, nlink) = if node == ROOT_NODE {
        (0u64, 0o040_755u32, 2u32)
    } else {
        (1u64 << 20, 0o100_644, 1)
    };
    let mut attr = Vec::with_capacity(88);
    attr.extend_from_slice(&node.to_le_bytes()); // ino
    attr.extend_from_slice(&size.to_le_bytes());
    attr.extend_from_slice(&(size / 512).to_le_bytes()); // blocks
    attr.extend_from_slice(&[0; 24]); // atime, mtime, ctime
    attr.extend_from_slice(&[0; 12]); // their nanoseconds
    attr.extend_from_slice(&mode.to_le_bytes());
    attr.extend_from_slice(&nlink.to_le_bytes());
    attr.extend_from_slice(&[0; 12]); // uid, gid, rdev
    attr.extend_from_slice(&4096u32.to_le_bytes()); // blksize
    attr.extend_from_slice(&0u32.to_le_bytes()); // flags
    attr
}

/// Writes one answer (`fuse_out_header` then `payload`) in a single write.
fn reply(device: &mut File, unique: u64, error: i32, payload: &[u8]) {
    let len = u32::try_from(16 + payload.len()).expect("small");
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&error.to_le_bytes());
    out.extend_from_slice(&unique.to_le_bytes());
    out.extend_from_slice(payload);
    let _ = device.write(&out);
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).map_or(0, |b| {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    })
}

/// A running procmond, killed if the test ends before it exits.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_procmond(endpoint: &Path) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--endpoint")
        .arg(endpoint)
        .env_remove("RUST_LOG")
        .env("DAEMONEYE_DRAIN_TIMEOUT_MS", DRAIN_MS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn procmond");
    Daemon(child)
}

async fn connect(daemon: &mut Daemon, config: &IpcConfig) -> ProcessCollectorClient {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            panic!("procmond exited early: {status}");
        }
        if let Ok(client) = ProcessCollectorClient::connect(config).await {
            return client;
        }
        assert!(Instant::now() < deadline, "procmond not serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_drain_timeout_despite_a_hash_stuck_in_a_read() {
    let Some((mount, on_read)) = StuckMount::mount() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = dir.path().join("p.sock");
    let config = IpcConfig::with_endpoint(endpoint.to_string_lossy());
    let mut daemon = spawn_procmond(&endpoint);
    let client = connect(&mut daemon, &config).await;

    let request = HashRequest {
        path: mount.file().to_string_lossy().into_owned(),
        algorithm: String::new(),
        expected_hash: None,
    };
    let outcome = client
        .clone()
        .with_timeout(Duration::from_millis(500))
        .check_hash(request)
        .await;
    assert!(
        outcome.is_err(),
        "a hash of a file nobody serves: {outcome:?}"
    );
    tokio::task::spawn_blocking(move || on_read.recv_timeout(PATIENCE))
        .await
        .expect("join")
        .expect("procmond is reading the file, and will never get an answer");
    drop(client);

    let pid = libc::pid_t::try_from(daemon.0.id()).expect("pid fits");
    let signalled = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let limit = Duration::from_millis(DRAIN_MS) + PATIENCE;
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < limit,
            "procmond still running {limit:?} after SIGTERM (waiting for its stuck thread?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = daemon.0.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("1 blocking job(s)") && stderr.contains("after the drain timeout"),
        "no warning about the abandoned job: {stderr}"
    );
    assert!(!endpoint.exists(), "socket file left behind");
    drop(mount);
}
