//! Where a [`SystemCollector`](crate::SystemCollector) reads processes from: the
//! operating system (through `sysinfo`), or a synthetic table given by the embedder
//! (a test host of any size).
//!
//! Every function here blocks: call them on a blocking thread.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use daemoneye_ipc::CancelFlag;
use daemoneye_proto::ProcessRecord;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, RefreshKind, System};

use crate::{
    enumerate::{self, CpuSampler},
    filter::Matcher,
    table::TableWatch,
};

/// A synthetic process table: called once per enumeration or watch snapshot.
pub(crate) type SyntheticTable = dyn Fn() -> Vec<ProcessRecord> + Send + Sync;

/// The process table a collector reads.
#[derive(Clone)]
pub(crate) enum Source {
    /// The operating system's, with CPU usage from a long-lived sampler.
    System(Arc<Mutex<CpuSampler>>),
    /// Whatever the function returns, as is (its `cpu_usage`, times and all).
    Synthetic(Arc<SyntheticTable>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::System(_) => f.write_str("System"),
            Source::Synthetic(_) => f.write_str("Synthetic"),
        }
    }
}

impl Source {
    /// The processes `matcher` accepts, sorted by pid; empty when `cancelled` is set.
    /// What a read of the whole table finds is recorded in `state`.
    pub(crate) fn list(
        &self,
        matcher: &Matcher,
        cancelled: &CancelFlag,
        state: &TableWatch,
    ) -> Vec<ProcessRecord> {
        match self {
            Source::System(cpu) => enumerate::collect(matcher, cpu, cancelled, state),
            Source::Synthetic(table) => {
                let all = table();
                state.record(all.len());
                let mut records: Vec<ProcessRecord> = all
                    .into_iter()
                    .filter(|record| matches(matcher, record))
                    .collect();
                records.sort_by_key(|record| record.pid);
                records
            }
        }
    }

    /// How many processes the whole table lists now (a cheap read: pids only).
    pub(crate) fn count(&self) -> usize {
        match self {
            Source::System(_) => enumerate::count(),
            Source::Synthetic(table) => table().len(),
        }
    }

    /// One snapshot for a watch: every live process with its parent and start time;
    /// details are read only for the pids asked for later ([`Snapshot::details`]).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let taken_at = SystemTime::now();
        match self {
            Source::System(_) => {
                let mut system = System::new_with_specifics(RefreshKind::nothing());
                // pid, parent, start time and state come from /proc/PID/stat, read anyway.
                system.refresh_processes_specifics(
                    ProcessesToUpdate::All,
                    true,
                    ProcessRefreshKind::nothing().without_tasks(),
                );
                let live = system
                    .processes()
                    .values()
                    .filter(|process| process.status() != ProcessStatus::Zombie)
                    .map(|process| Seen {
                        pid: process.pid().as_u32(),
                        ppid: process.parent().map(Pid::as_u32),
                        start: process.start_time(),
                    })
                    .collect();
                Snapshot {
                    live,
                    taken_at,
                    details: Details::System(Box::new(system)),
                }
            }
            Source::Synthetic(table) => {
                let records: HashMap<u32, ProcessRecord> = table()
                    .into_iter()
                    .map(|record| (record.pid, record))
                    .collect();
                let live = records
                    .values()
                    .map(|record| Seen {
                        pid: record.pid,
                        ppid: record.ppid,
                        start: record
                            .start_time
                            .and_then(|secs| u64::try_from(secs).ok())
                            .unwrap_or(0),
                    })
                    .collect();
                Snapshot {
                    live,
                    taken_at,
                    details: Details::Synthetic(records),
                }
            }
        }
    }
}

/// Whether `matcher` accepts `record`.
pub(crate) fn matches(matcher: &Matcher, record: &ProcessRecord) -> bool {
    matcher.matches(
        record.pid,
        &record.name,
        record.executable_path.as_deref().map(Path::new),
    )
}

/// A live process as a snapshot first sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) pid: u32,
    pub(crate) ppid: Option<u32>,
    /// Start time (Unix seconds): with the pid, tells one process from a later one
    /// that reuses its pid.
    pub(crate) start: u64,
}

/// The processes alive at one moment (zombies count as exited), and the means to
/// read the details of some of them.
pub(crate) struct Snapshot {
    pub(crate) live: Vec<Seen>,
    pub(crate) taken_at: SystemTime,
    details: Details,
}

enum Details {
    System(Box<System>),
    Synthetic(HashMap<u32, ProcessRecord>),
}

impl Snapshot {
    /// Full records of `pids` (those still readable), collected now. No CPU usage.
    pub(crate) fn details(&mut self, pids: &[u32]) -> Vec<ProcessRecord> {
        if pids.is_empty() {
            return Vec::new();
        }
        match &mut self.details {
            Details::System(system) => {
                let wanted: Vec<Pid> = pids.iter().copied().map(Pid::from_u32).collect();
                system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&wanted),
                    false,
                    enumerate::refresh_kind(),
                );
                let now = SystemTime::now();
                wanted
                    .iter()
                    .filter_map(|pid| system.process(*pid))
                    .map(|process| enumerate::record(process, None, now).into())
                    .collect()
            }
            Details::Synthetic(records) => pids
                .iter()
                .filter_map(|pid| records.get(pid).cloned())
                .collect(),
        }
    }

    /// For tests: a snapshot of `records` as a synthetic table would give it.
    #[cfg(test)]
    pub(crate) fn of(records: Vec<ProcessRecord>) -> Self {
        let table = Arc::new(move || records.clone());
        Source::Synthetic(table).snapshot()
    }
}
