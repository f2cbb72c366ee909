//! `daemoneye-agent`'s work, as a library so that it can be tested against an in-process
//! collector: one **cycle** lists every process through procmond (streamed, so any
//! number of them), picks up to N distinct executables and has procmond hash each of
//! them.
//!
//! [`Agent`] holds the state that lives across cycles (the client, which reconnects by
//! itself after its connection dies, and the [`HashRotation`]); [`run_cycle`] is one
//! cycle on a connected client. The binary (`src/main.rs`) runs [`Agent::cycle`] on a
//! timer, or, with `--watch`, [`Agent::watch`]: it subscribes to procmond's process
//! monitor instead of polling, and hashes each executable the first time a process
//! running it starts.
#![deny(missing_docs)]

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
    time::{Duration, Instant},
};

use daemoneye_collector::{ProcessCollectorClient, DEFAULT_HASH_ALGORITHM};
use daemoneye_ipc::{IpcConfig, IpcError};
use daemoneye_proto::{
    model, HashRequest, HashResult, ProcessEventKind, ProcessFilter, ProcessRecord, WatchRequest,
};
use futures_util::StreamExt;

/// What one cycle did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleSummary {
    /// Processes the collector reported.
    pub processes: usize,
    /// Distinct executable paths among them (records without a path are not counted).
    pub executables: usize,
    /// Executables hashed successfully this cycle.
    pub hashed: usize,
    /// Executables the collector could not hash this cycle (unreadable, gone, refused,
    /// or not hashed within the call timeout).
    pub failures: usize,
    /// Wall-clock time the cycle took, connection included.
    pub elapsed: Duration,
}

/// Why a cycle failed as a whole. Per-file hashing failures are not errors; they are
/// counted in [`CycleSummary::failures`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CycleError {
    /// No connection to the collector could be made.
    Connect {
        /// The collector's endpoint.
        endpoint: String,
        /// Why connecting failed.
        source: IpcError,
    },
    /// Listing the processes failed.
    Enumerate {
        /// The collector's endpoint.
        endpoint: String,
        /// The transport error or the collector's status.
        source: IpcError,
    },
    /// The process watch could not be opened, or ended with an error (the collector's
    /// status or a lost connection).
    Watch {
        /// The collector's endpoint.
        endpoint: String,
        /// The transport error or the collector's status.
        source: IpcError,
    },
    /// The connection failed while an executable was being hashed (transport errors
    /// only: see [`run_cycle`] for what counts as a per-file failure instead).
    Hash {
        /// The collector's endpoint.
        endpoint: String,
        /// The executable being hashed.
        path: String,
        /// The transport error.
        source: IpcError,
    },
}

impl fmt::Display for CycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CycleError::Connect { endpoint, source } => match source {
                IpcError::ServerNotFound { .. } => {
                    write!(f, "no server at {endpoint} (is procmond running?)")
                }
                // The other connect errors name the endpoint themselves.
                other => write!(f, "cannot connect to procmond: {other}"),
            },
            CycleError::Enumerate { endpoint, source } => {
                write!(f, "listing processes via {endpoint} failed: {source}")
            }
            CycleError::Watch { endpoint, source } => {
                write!(f, "watching processes via {endpoint} failed: {source}")
            }
            CycleError::Hash {
                endpoint,
                path,
                source,
            } => write!(f, "hashing {path} via {endpoint} failed: {source}"),
        }
    }
}

impl std::error::Error for CycleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CycleError::Connect { source, .. }
            | CycleError::Enumerate { source, .. }
            | CycleError::Watch { source, .. }
            | CycleError::Hash { source, .. } => Some(source),
        }
    }
}

/// Chooses which executables to hash so that, over successive cycles, every executable
/// seen gets hashed rather than the same few each time.
///
/// A *round* hashes each distinct executable once, in path order; when every executable
/// currently running has been hashed in this round, the next round starts. Executables
/// that are no longer running are forgotten, so the state is bounded by the number of
/// distinct executables in the last enumeration.
#[derive(Clone, Debug, Default)]
pub struct HashRotation {
    done: HashSet<String>,
}

impl HashRotation {
    /// A rotation with nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Up to `limit` distinct, non-empty executable paths of `records`: first those not
    /// yet hashed in this round (in path order), then, if the round is complete, the
    /// first ones of the next round. Each path appears at most once.
    pub fn pick(&mut self, records: &[ProcessRecord], limit: usize) -> Vec<String> {
        let candidates: BTreeSet<&str> = records
            .iter()
            .filter_map(|record| record.executable_path.as_deref())
            .filter(|path| !path.is_empty())
            .collect();
        self.done.retain(|path| candidates.contains(path.as_str()));
        let mut picked: Vec<String> = candidates
            .iter()
            .filter(|path| !self.done.contains(**path))
            .take(limit)
            .map(|path| (*path).to_owned())
            .collect();
        if picked.len() < limit {
            // This round has covered everything: start the next one with what is left.
            self.done.clear();
            let more: Vec<String> = candidates
                .iter()
                .filter(|path| !picked.iter().any(|p| p == **path))
                .take(limit - picked.len())
                .map(|path| (*path).to_owned())
                .collect();
            self.done.extend(more.iter().cloned());
            picked.extend(more);
        } else {
            self.done.extend(picked.iter().cloned());
        }
        picked
    }
}

/// Every process, through `stream_processes` (batches, so any number of them).
///
/// # Errors
/// The transport error or the collector's status.
pub async fn list_processes(
    client: &ProcessCollectorClient,
) -> Result<Vec<ProcessRecord>, IpcError> {
    let mut batches = client.stream_processes(ProcessFilter::default()).await?;
    let mut processes = Vec::new();
    while let Some(batch) = batches.next().await {
        processes.extend(batch?.processes);
    }
    Ok(processes)
}

/// Hashes `path` (sha256); `Ok(Err(reason))` when the collector could not (its answer
/// says so, it refused, or the call timed out), logged at debug level.
///
/// # Errors
/// Transport errors other than the call's deadline.
async fn hash_one(
    client: &ProcessCollectorClient,
    path: &str,
) -> Result<Result<HashResult, String>, IpcError> {
    let request = HashRequest {
        path: path.to_owned(),
        algorithm: DEFAULT_HASH_ALGORITHM.to_owned(),
        expected_hash: None,
    };
    match client.check_hash(request).await {
        Ok(result) if result.success && !result.hash_value.is_empty() => {
            tracing::debug!(%path, hash = %result.hash_value, algorithm = %result.algorithm, "hashed");
            Ok(Ok(result))
        }
        Ok(result) => {
            let reason = result.error_message.unwrap_or_default();
            tracing::debug!(%path, %reason, "collector could not hash");
            Ok(Err(reason))
        }
        Err(IpcError::Status(status)) => {
            tracing::debug!(%path, %status, "collector refused to hash");
            Ok(Err(status.to_string()))
        }
        // A file too large to hash within the call timeout says nothing about the
        // connection (the server was told to cancel); go on with the next one.
        Err(IpcError::DeadlineExceeded { after_ms }) => {
            tracing::debug!(%path, after_ms, "hashing took longer than the call timeout");
            Ok(Err(format!("not hashed within {after_ms} ms")))
        }
        Err(source) => Err(source),
    }
}

/// One cycle on a connected `client`: enumerate every process, pick up to `hash_limit`
/// executables with `rotation`, hash each (sha256, one at a time so as not to load the
/// collector's disk), and count.
///
/// # Errors
/// [`CycleError::Enumerate`] when listing fails; [`CycleError::Hash`] when the
/// connection fails during hashing. A file the collector cannot hash (its answer has
/// `success == false`, the call returns a [`Status`](daemoneye_ipc::Status), or it
/// outlives the call timeout) only counts as a failure.
pub async fn run_cycle(
    client: &ProcessCollectorClient,
    rotation: &mut HashRotation,
    hash_limit: usize,
) -> Result<CycleSummary, CycleError> {
    let started = Instant::now();
    let endpoint = || client.client().endpoint().to_owned();
    let processes = list_processes(client)
        .await
        .map_err(|source| CycleError::Enumerate {
            endpoint: endpoint(),
            source,
        })?;
    let executables = processes
        .iter()
        .filter_map(|record| record.executable_path.as_deref())
        .filter(|path| !path.is_empty())
        .collect::<HashSet<_>>()
        .len();
    let mut summary = CycleSummary {
        processes: processes.len(),
        executables,
        hashed: 0,
        failures: 0,
        elapsed: Duration::ZERO,
    };
    for path in rotation.pick(&processes, hash_limit) {
        match hash_one(client, &path).await {
            Ok(Ok(_)) => summary.hashed += 1,
            Ok(Err(_)) => summary.failures += 1,
            Err(source) => {
                return Err(CycleError::Hash {
                    endpoint: endpoint(),
                    path,
                    source,
                })
            }
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// What [`Agent::watch`] reports as it goes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WatchReport {
    /// The watch is open: the collector takes its first snapshot now.
    Subscribed,
    /// A process started or exited.
    Event(model::ProcessEvent),
    /// The executable of a process that started, hashed (the first time it is seen).
    Hashed {
        /// The process that runs it.
        pid: u32,
        /// Its path.
        path: String,
        /// The hash (sha256, lowercase hex).
        hash: String,
    },
    /// The executable of a process that started could not be hashed.
    HashFailed {
        /// The process that runs it.
        pid: u32,
        /// Its path.
        path: String,
        /// Why, as the collector said.
        reason: String,
    },
}

/// Most executables [`Agent::watch`] remembers as hashed; past that it forgets them
/// all and hashes each again when next started.
pub const WATCH_HASHED_MEMORY: usize = 16_384;

/// The agent's state across cycles: where the collector is, the client once connected,
/// and the hashing rotation.
#[derive(Debug)]
pub struct Agent {
    config: IpcConfig,
    hash_limit: usize,
    client: Option<ProcessCollectorClient>,
    rotation: HashRotation,
}

impl Agent {
    /// An agent that talks to the collector at `config.endpoint_path` and hashes up to
    /// `hash_limit` executables per cycle. Nothing is connected until the first cycle.
    pub fn new(config: IpcConfig, hash_limit: usize) -> Self {
        Self {
            config,
            hash_limit,
            client: None,
            rotation: HashRotation::new(),
        }
    }

    /// The client, connecting first if no connection was ever made.
    async fn client(&mut self) -> Result<&ProcessCollectorClient, CycleError> {
        if self.client.is_none() {
            let client = ProcessCollectorClient::connect(&self.config)
                .await
                .map_err(|source| CycleError::Connect {
                    endpoint: self.config.endpoint_path.clone(),
                    source,
                })?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// Subscribes to procmond's process monitor (every process, a snapshot every
    /// `interval_ms`) and reports each event to `report`; the executable of each
    /// process that starts is hashed the first time it is seen (at most
    /// [`WATCH_HASHED_MEMORY`] are remembered), so programs are checked as they run
    /// rather than on a rotation. Runs until the watch fails; the caller stops it by
    /// dropping the future.
    ///
    /// # Errors
    /// [`CycleError::Connect`] when no connection can be made, [`CycleError::Watch`]
    /// when the watch cannot be opened or fails (lost connection included: the next
    /// call reconnects), [`CycleError::Hash`] when the connection fails while hashing.
    pub async fn watch(
        &mut self,
        interval_ms: u32,
        mut report: impl FnMut(WatchReport),
    ) -> Result<(), CycleError> {
        let endpoint = self.config.endpoint_path.clone();
        let watch_error = |source| CycleError::Watch {
            endpoint: endpoint.clone(),
            source,
        };
        let client = self.client().await?.clone();
        let request = WatchRequest {
            filter: None,
            tree_root: None,
            interval_ms,
            include_existing: false,
        };
        let mut events = client.watch_processes(request).await.map_err(watch_error)?;
        report(WatchReport::Subscribed);
        let mut hashed: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            let event = event.map_err(watch_error)?;
            let started = event.kind() == ProcessEventKind::Started;
            let Ok(event) = model::ProcessEvent::try_from(event) else {
                continue; // a kind this build does not know
            };
            let pid = event.process.pid;
            let path = event
                .process
                .executable_path
                .as_ref()
                .map(|path| path.to_string_lossy().into_owned())
                .filter(|path| !path.is_empty());
            report(WatchReport::Event(event));
            let Some(path) = path.filter(|path| started && !hashed.contains(path)) else {
                continue;
            };
            if hashed.len() >= WATCH_HASHED_MEMORY {
                hashed.clear();
            }
            hashed.insert(path.clone());
            match hash_one(&client, &path).await {
                Ok(Ok(result)) => report(WatchReport::Hashed {
                    pid,
                    path,
                    hash: result.hash_value,
                }),
                Ok(Err(reason)) => report(WatchReport::HashFailed { pid, path, reason }),
                Err(source) => {
                    return Err(CycleError::Hash {
                        endpoint: endpoint.clone(),
                        path,
                        source,
                    })
                }
            }
        }
        // The monitor of the whole host never ends by itself; the server did.
        Err(watch_error(IpcError::PeerClosed))
    }

    /// The collector endpoint this agent talks to.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint_path
    }

    /// Runs one cycle (see [`run_cycle`]), connecting first if no connection was ever
    /// made. Once connected, the client reconnects by itself on the next call after its
    /// connection dies, so a collector restart costs at most one failed cycle.
    ///
    /// # Errors
    /// [`CycleError::Connect`] when the first connection cannot be made; otherwise as
    /// [`run_cycle`].
    pub async fn cycle(&mut self) -> Result<CycleSummary, CycleError> {
        let started = Instant::now();
        let hash_limit = self.hash_limit;
        let client = self.client().await?.clone();
        let mut summary = run_cycle(&client, &mut self.rotation, hash_limit).await?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, path: Option<&str>) -> ProcessRecord {
        ProcessRecord {
            pid,
            name: format!("p{pid}"),
            executable_path: path.map(str::to_owned),
            ..ProcessRecord::default()
        }
    }

    #[test]
    fn rotation_covers_every_executable_before_repeating() {
        let records = [
            record(1, Some("/c")),
            record(2, Some("/a")),
            record(3, Some("/b")),
            record(4, Some("/a")),
            record(5, None),
            record(6, Some("")),
        ];
        let mut rotation = HashRotation::new();
        assert_eq!(rotation.pick(&records, 2), ["/a", "/b"]);
        // "/c" finishes the round; the next round starts with "/a".
        assert_eq!(rotation.pick(&records, 2), ["/c", "/a"]);
        assert_eq!(rotation.pick(&records, 2), ["/b", "/c"]);
        assert_eq!(rotation.pick(&records, 10), ["/a", "/b", "/c"]);
        assert!(rotation.pick(&records, 0).is_empty());
    }

    #[test]
    fn rotation_forgets_executables_that_stopped() {
        let mut rotation = HashRotation::new();
        assert_eq!(
            rotation.pick(&[record(1, Some("/a")), record(2, Some("/b"))], 1),
            ["/a"]
        );
        assert_eq!(rotation.pick(&[record(2, Some("/b"))], 1), ["/b"]);
        assert_eq!(rotation.done.len(), 1);
        assert!(rotation.pick(&[], 5).is_empty());
        assert!(rotation.done.is_empty());
    }

    #[test]
    fn connect_error_names_the_endpoint() {
        let error = CycleError::Connect {
            endpoint: "/run/x.sock".into(),
            source: IpcError::ServerNotFound {
                endpoint: "/run/x.sock".into(),
            },
        };
        assert_eq!(
            error.to_string(),
            "no server at /run/x.sock (is procmond running?)"
        );
    }
}
