//! Process enumeration with `sysinfo`.
//!
//! Each enumeration reads a fresh snapshot of the process table, so names, executables,
//! command lines and owners are never stale (a process that called `execve` keeps its
//! pid and start time, and a long-lived `sysinfo::System` would keep reporting its old
//! name). CPU usage needs two samples of a process's CPU time, so it comes from a second,
//! long-lived [`CpuSampler`] that refreshes CPU times only.
//!
//! Every function here blocks on `/proc` (or the platform's equivalent): call them on
//! a blocking thread (`SystemCollector` uses a [`BlockingPool`](daemoneye_ipc::BlockingPool)).

use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use daemoneye_ipc::CancelFlag;
use daemoneye_proto::{model, ProcessRecord};
use sysinfo::{
    Pid, Process, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System, UpdateKind,
};

use crate::{filter::Matcher, table::TableWatch};

/// Identifies one process over time: a pid together with its start time (pids are reused).
type ProcessKey = (Pid, u64);

fn key(process: &Process) -> ProcessKey {
    (process.pid(), process.start_time())
}

/// Keeps CPU times between enumerations to derive each process's CPU usage.
pub(crate) struct CpuSampler {
    system: System,
    /// When CPU times were last read; `None` before the first sample.
    last_sample: Option<Instant>,
    /// Processes present at the last sample.
    sampled: HashSet<ProcessKey>,
    /// Processes whose `cpu_usage` covers a full interval between two samples.
    measured: HashSet<ProcessKey>,
}

impl std::fmt::Debug for CpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuSampler")
            .field("last_sample", &self.last_sample)
            .field("sampled", &self.sampled.len())
            .finish_non_exhaustive()
    }
}

impl CpuSampler {
    /// An empty sampler; reads nothing until [`sample`](Self::sample).
    pub(crate) fn new() -> Self {
        Self {
            system: System::new_with_specifics(RefreshKind::nothing()),
            last_sample: None,
            sampled: HashSet::new(),
            measured: HashSet::new(),
        }
    }

    /// Reads every process's CPU time, unless the last sample is younger than
    /// `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` (then the previous usage figures stand).
    fn sample(&mut self) {
        let due = self
            .last_sample
            .is_none_or(|at| at.elapsed() >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        if !due {
            return;
        }
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_cpu().without_tasks(),
        );
        let now: HashSet<ProcessKey> = self.system.processes().values().map(key).collect();
        self.measured = now.intersection(&self.sampled).copied().collect();
        self.sampled = now;
        self.last_sample = Some(Instant::now());
    }

    /// CPU usage of `process` in percent (100.0 = one busy core), averaged between the
    /// last two samples; `None` when the process was not seen by both.
    fn usage(&self, process: &Process) -> Option<f64> {
        let key = key(process);
        if !self.measured.contains(&key) {
            return None;
        }
        self.system
            .process(key.0)
            .filter(|sampled| sampled.start_time() == key.1)
            .map(|sampled| f64::from(sampled.cpu_usage()))
    }
}

/// What a snapshot reads for each process: no environment, cwd, root, disk I/O or
/// threads (on Linux threads would otherwise be listed as processes of their own).
pub(crate) fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_memory()
        .with_exe(UpdateKind::Always)
        .with_cmd(UpdateKind::Always)
        .with_user(UpdateKind::Always)
        .without_tasks()
}

/// Reads the whole process table (pids only) and returns how many processes it lists.
pub(crate) fn count() -> usize {
    let mut system = System::new_with_specifics(RefreshKind::nothing());
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().without_tasks(),
    );
    system.processes().len()
}

/// Collects the processes that `matcher` accepts, sorted by pid.
///
/// `cpu` supplies CPU usage; it is sampled after the snapshot so that its window ends
/// at collection time, and locked only for that. When `cancelled` is set by the time
/// the snapshot is read, nobody wants the answer: returns an empty list at once. A read
/// of the whole table (no pid in the filter) is recorded in `table`.
pub(crate) fn collect(
    matcher: &Matcher,
    cpu: &Mutex<CpuSampler>,
    cancelled: &CancelFlag,
    table: &TableWatch,
) -> Vec<ProcessRecord> {
    let mut system = System::new_with_specifics(RefreshKind::nothing());
    let wanted: Vec<Pid> = matcher.pids().iter().copied().map(Pid::from_u32).collect();
    let scope = if wanted.is_empty() {
        ProcessesToUpdate::All
    } else {
        ProcessesToUpdate::Some(&wanted)
    };
    system.refresh_processes_specifics(scope, true, refresh_kind());
    if wanted.is_empty() {
        table.record(system.processes().len());
    }
    if cancelled.is_cancelled() {
        return Vec::new();
    }
    let mut cpu = cpu.lock().unwrap_or_else(PoisonError::into_inner);
    cpu.sample();
    let collection_time = SystemTime::now();

    let mut records: Vec<ProcessRecord> = system
        .processes()
        .values()
        .filter_map(|process| {
            let name = process.name().to_string_lossy();
            matcher
                .matches(process.pid().as_u32(), &name, process.exe())
                .then(|| record(process, cpu.usage(process), collection_time).into())
        })
        .collect();
    records.sort_unstable_by_key(|record| record.pid);
    records
}

/// The native record for one process.
pub(crate) fn record(
    process: &Process,
    cpu_usage: Option<f64>,
    collection_time: SystemTime,
) -> model::ProcessRecord {
    let executable_path = process.exe().map(ToOwned::to_owned);
    let kernel_thread = process.thread_kind() == Some(sysinfo::ThreadKind::Kernel);
    // A path that no longer exists: the image was deleted (or replaced by a rename)
    // after the process started. Linux's " (deleted)" suffix is stripped by sysinfo.
    let file_exists = executable_path
        .as_deref()
        .is_some_and(|path| path.try_exists().unwrap_or(false));
    model::ProcessRecord {
        pid: process.pid().as_u32(),
        ppid: process.parent().map(Pid::as_u32),
        name: process.name().to_string_lossy().into_owned(),
        // Kernel threads have no executable; anything else without one could not be read.
        accessible: executable_path.is_some() || kernel_thread,
        file_exists,
        executable_path,
        command_line: process
            .cmd()
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect(),
        start_time: match process.start_time() {
            0 => None,
            secs => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        },
        cpu_usage,
        memory_usage: Some(process.memory()),
        executable_hash: None,
        hash_algorithm: None,
        user_id: process.user_id().map(|uid| format!("{}", **uid)),
        collection_time,
    }
}
