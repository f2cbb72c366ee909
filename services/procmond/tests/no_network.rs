//! procmond and the IPC runtime talk over local sockets only: after serving real calls,
//! every socket the `procmond` process holds is a Unix socket (one of them bound to its
//! endpoint), none is TCP, UDP or raw; the same holds for this test process after an
//! in-process server and client have talked.
//!
//! Linux only: it reads `/proc/<pid>/fd` (a socket is a `socket:[INODE]` link) and the
//! socket tables of `/proc/<pid>/net/` (the process's network namespace) and
//! `/proc/net/` (this one's). Elsewhere the tests print why they are skipped.
#![cfg(unix)]

#[cfg(not(target_os = "linux"))]
#[test]
fn skipped_off_linux() {
    println!("skipped: socket inspection needs Linux /proc");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::{
        collections::{BTreeMap, BTreeSet},
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    use daemoneye_collector::{ProcessCollectorClient, ProcessCollectorServer, SystemCollector};
    use daemoneye_ipc::{IpcConfig, Server};
    use daemoneye_proto::{DetectionTask, HashRequest, ProcessFilter};

    /// Upper bound for the daemon to start serving.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// Interval between two connection attempts while it starts.
    const POLL: Duration = Duration::from_millis(20);

    /// Socket tables that must not hold any of the process's sockets.
    const INET_TABLES: [&str; 8] = [
        "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6",
    ];

    /// The inodes of the sockets `pid` holds open: `/proc/<pid>/fd/N -> socket:[INODE]`.
    fn socket_inodes(pid: u32) -> BTreeSet<u64> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/<pid>/fd");
        fds.filter_map(|fd| {
            // An fd closed since the listing has no link any more: skip it.
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
    }

    /// Inode -> row of one `/proc/.../net/<table>` file (empty when the table does not
    /// exist, e.g. IPv6 disabled). `inode_column` is the inode's 0-based column.
    fn table(path: &Path, inode_column: usize) -> BTreeMap<u64, String> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return BTreeMap::new();
        };
        text.lines()
            .skip(1) // header
            .filter_map(|row| {
                let inode = row.split_whitespace().nth(inode_column)?.parse().ok()?;
                Some((inode, row.trim().to_owned()))
            })
            .collect()
    }

    /// The Unix socket table: inode (column 6) -> bound path (column 7, may be absent).
    fn unix_table(net: &Path) -> BTreeMap<u64, String> {
        table(&net.join("unix"), 6)
            .into_iter()
            .map(|(inode, row)| {
                let path = row.split_whitespace().nth(7).unwrap_or("").to_owned();
                (inode, path)
            })
            .collect()
    }

    /// What `pid`'s sockets turned out to be.
    struct Sockets {
        /// Unix sockets: inode -> bound path ("" when unbound).
        unix: BTreeMap<u64, String>,
    }

    /// Checks that every socket `pid` holds is a Unix socket, in both the process's own
    /// network namespace and this process's, and returns them.
    ///
    /// Only sockets open both before and after the tables are read are judged, so that
    /// one opened or closed meanwhile (another test's connection) cannot confuse it.
    fn only_unix_sockets(pid: u32) -> Sockets {
        let before = socket_inodes(pid);
        let namespaces = [
            PathBuf::from(format!("/proc/{pid}/net")),
            PathBuf::from("/proc/net"),
        ];
        let mut unix = BTreeMap::new();
        let mut inet = BTreeMap::new();
        for net in &namespaces {
            unix.extend(unix_table(net));
            for name in INET_TABLES {
                // Column 9 is the inode in the tcp/udp/raw tables, v4 and v6.
                for (inode, row) in table(&net.join(name), 9) {
                    inet.insert(inode, format!("{}: {row}", net.join(name).display()));
                }
            }
        }
        let after = socket_inodes(pid);
        let stable: BTreeSet<u64> = before.intersection(&after).copied().collect();
        assert!(!stable.is_empty(), "pid {pid} holds no socket at all");
        let network: Vec<&String> = stable.iter().filter_map(|inode| inet.get(inode)).collect();
        assert!(
            network.is_empty(),
            "pid {pid} holds network sockets: {network:#?}"
        );
        let other: Vec<&u64> = stable.iter().filter(|i| !unix.contains_key(i)).collect();
        assert!(
            other.is_empty(),
            "pid {pid} holds sockets that are not Unix sockets (netlink?): inodes {other:?}"
        );
        Sockets {
            unix: stable
                .iter()
                .map(|inode| (*inode, unix[inode].clone()))
                .collect(),
        }
    }

    /// A running `procmond`, killed when dropped.
    struct Daemon(Child);

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn wait_until_serving(daemon: &mut Daemon, config: &IpcConfig) -> ProcessCollectorClient {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = daemon.0.try_wait().expect("try_wait") {
                panic!("procmond exited early: {status}");
            }
            match ProcessCollectorClient::connect(config).await {
                Ok(client) => return client,
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "procmond not serving after {PATIENCE:?}: {error}"
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn procmond_holds_unix_sockets_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = dir.path().join("p.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_procmond"))
            .arg("--endpoint")
            .arg(&endpoint)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn procmond");
        let mut daemon = Daemon(child);
        let pid = daemon.0.id();
        let config = IpcConfig::with_endpoint(endpoint.to_string_lossy());
        let client = wait_until_serving(&mut daemon, &config).await;

        // Serve a few real calls of each kind first.
        let own = ProcessFilter {
            pids: vec![pid],
            ..ProcessFilter::default()
        };
        let list = client
            .enumerate_processes(own.clone())
            .await
            .expect("enumerate");
        assert_eq!(list.processes.len(), 1);
        let hashed = client
            .check_hash(HashRequest {
                path: env!("CARGO_BIN_EXE_procmond").to_owned(),
                ..HashRequest::default()
            })
            .await
            .expect("check_hash");
        assert!(!hashed.hash_value.is_empty(), "{hashed:?}");
        let task = DetectionTask::new_enumerate_processes("nn-1", Some(own));
        assert_eq!(
            client.run_task(task).await.expect("run_task").task_id,
            "nn-1"
        );

        // With our client still connected: the listener and its connection, nothing else.
        let sockets = only_unix_sockets(pid);
        let endpoint = endpoint.to_string_lossy();
        assert!(
            sockets.unix.values().any(|path| *path == endpoint),
            "no socket of procmond is bound to {endpoint}: {:?}",
            sockets.unix
        );
        assert!(
            sockets.unix.len() >= 2,
            "listener and connection: {:?}",
            sockets.unix
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runtime_opens_no_network_socket_in_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = dir.path().join("in-process.sock");
        let config = IpcConfig::with_endpoint(endpoint.to_string_lossy());
        let server = Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new()))
            .expect("bind");
        tokio::spawn(server.serve());
        let client = ProcessCollectorClient::connect(&config)
            .await
            .expect("connect");
        let me = std::process::id();
        let own = ProcessFilter {
            pids: vec![me],
            ..ProcessFilter::default()
        };
        let list = client.enumerate_processes(own).await.expect("enumerate");
        assert_eq!(list.processes.first().map(|p| p.pid), Some(me));

        let sockets = only_unix_sockets(me);
        let endpoint = endpoint.to_string_lossy();
        assert!(
            sockets.unix.values().any(|path| *path == endpoint),
            "the in-process listener is not among this process's sockets: {:?}",
            sockets.unix
        );
    }
}
