//! The process-tree monitor behind `watch_processes` (the seed's
//! `MONITOR_PROCESS_TREE`): successive snapshots of the process table, compared.
//!
//! Why snapshots: Linux reports process starts and exits as they happen only through
//! the proc connector (netlink, `CAP_NET_ADMIN`) or eBPF, both privileged; `pidfd`s
//! report the exit of a process one already knows, not starts. Polling `/proc` needs
//! no privilege beyond what listing processes needs, works the same on every platform
//! `sysinfo` supports, and its cost is bounded by the interval. What it cannot see: a
//! process that starts and exits between two snapshots, and a process that only calls
//! `execve` (same pid, same start time: the same process to this monitor).
//!
//! Each snapshot reads only pid, parent, start time and state of every process (one
//! small `/proc/PID/stat` read each); names, executables and command lines are read
//! for newcomers only.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use daemoneye_ipc::Status;
use daemoneye_proto::{model, ProcessRecord};

use crate::{
    filter::Matcher,
    source::{self, Seen, Snapshot},
};

/// Snapshot interval when a `WatchRequest` asks for none (`interval_ms == 0`), in ms.
pub const DEFAULT_WATCH_INTERVAL_MS: u32 = 1000;

/// Shortest snapshot interval, in ms: a request asking for less gets this.
pub const MIN_WATCH_INTERVAL_MS: u32 = 100;

/// The interval a request's `interval_ms` stands for.
pub(crate) fn interval(interval_ms: u32) -> Duration {
    let ms = match interval_ms {
        0 => DEFAULT_WATCH_INTERVAL_MS,
        ms => ms.max(MIN_WATCH_INTERVAL_MS),
    };
    Duration::from_millis(u64::from(ms))
}

/// Identifies one process over time: pid and start time (pids are reused).
type Key = (u32, u64);

fn key(seen: &Seen) -> Key {
    (seen.pid, seen.start)
}

/// What one snapshot changed.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Events in order: exits first, then starts, each by pid.
    pub(crate) events: Vec<model::ProcessEvent>,
    /// The watched tree is gone: its root and every descendant seen have exited.
    pub(crate) finished: bool,
}

/// A watch's memory between snapshots.
#[derive(Debug)]
pub(crate) struct Tracker {
    matcher: Matcher,
    /// `tree_root` as asked; its start time is learnt from the first snapshot.
    root_pid: Option<u32>,
    root: Option<Key>,
    include_existing: bool,
    /// Watched processes alive at the last snapshot: the root's tree, or every process.
    members: HashSet<Key>,
    /// Members the filter accepted, with their record as first seen (reported on exit).
    reported: HashMap<Key, ProcessRecord>,
    first: bool,
}

impl Tracker {
    /// A watch of the processes `matcher` accepts, within the tree of `root_pid` when
    /// set; with `include_existing`, the first snapshot reports what already runs.
    pub(crate) fn new(matcher: Matcher, root_pid: Option<u32>, include_existing: bool) -> Self {
        Self {
            matcher,
            root_pid,
            root: None,
            include_existing,
            members: HashSet::new(),
            reported: HashMap::new(),
            first: true,
        }
    }

    /// Compares `snapshot` with the previous one.
    ///
    /// # Errors
    /// `NOT_FOUND` on the first snapshot when the tree's root is not running.
    pub(crate) fn step(&mut self, mut snapshot: Snapshot) -> Result<Step, Status> {
        let live: HashMap<u32, Seen> = snapshot.live.iter().map(|s| (s.pid, *s)).collect();
        let alive = |key: &Key| live.get(&key.0).is_some_and(|seen| seen.start == key.1);
        if self.first {
            if let Some(pid) = self.root_pid {
                let seen = live.get(&pid).ok_or_else(|| {
                    Status::not_found(format!("no process {pid} to watch the tree of"))
                })?;
                self.root = Some(key(seen));
            }
        }

        let members: HashSet<Key> = match self.root {
            None => live.values().map(key).collect(),
            Some(root) => {
                // The root's descendants now, and the members seen before that are still
                // alive (re-parented orphans stay watched), with their descendants.
                let mut children: HashMap<u32, Vec<Key>> = HashMap::new();
                for seen in live.values() {
                    if let Some(ppid) = seen.ppid {
                        children.entry(ppid).or_default().push(key(seen));
                    }
                }
                let mut members = HashSet::new();
                let mut pending: Vec<Key> = std::iter::once(root)
                    .chain(self.members.iter().copied())
                    .filter(|key| alive(key))
                    .collect();
                while let Some(next) = pending.pop() {
                    if members.insert(next) {
                        pending.extend(children.get(&next.0).into_iter().flatten());
                    }
                }
                members
            }
        };

        let mut step = Step::default();
        let observed_at = snapshot.taken_at;
        let mut exited: Vec<(Key, ProcessRecord)> = self
            .reported
            .iter()
            .filter(|(key, _)| !members.contains(key))
            .map(|(key, record)| (*key, record.clone()))
            .collect();
        exited.sort_unstable_by_key(|(key, _)| *key);
        for (key, record) in exited {
            self.reported.remove(&key);
            step.events
                .push(event(model::ProcessEventKind::Exited, record, observed_at));
        }

        let mut newcomers: Vec<u32> = members
            .iter()
            .filter(|key| !self.members.contains(key))
            .map(|key| key.0)
            .collect();
        newcomers.sort_unstable();
        let kind = if !self.first {
            Some(model::ProcessEventKind::Started)
        } else if self.include_existing {
            Some(model::ProcessEventKind::Existing)
        } else {
            None
        };
        for record in snapshot.details(&newcomers) {
            let Some(seen) = live.get(&record.pid) else {
                continue;
            };
            if !source::matches(&self.matcher, &record) {
                continue;
            }
            self.reported.insert(key(seen), record.clone());
            if let Some(kind) = kind {
                step.events.push(event(kind, record, observed_at));
            }
        }

        self.members = members;
        self.first = false;
        step.finished = self.root.is_some() && self.members.is_empty();
        Ok(step)
    }
}

fn event(
    kind: model::ProcessEventKind,
    record: ProcessRecord,
    observed_at: SystemTime,
) -> model::ProcessEvent {
    model::ProcessEvent {
        kind,
        process: record.into(),
        observed_at,
    }
}

#[cfg(test)]
mod tests {
    use daemoneye_ipc::Code;
    use daemoneye_proto::ProcessFilter;
    use model::ProcessEventKind::{Existing, Exited, Started};

    use super::*;

    fn proc(pid: u32, ppid: u32, name: &str) -> ProcessRecord {
        ProcessRecord {
            pid,
            ppid: Some(ppid),
            name: name.to_owned(),
            start_time: Some(1_700_000_000 + i64::from(pid)),
            ..ProcessRecord::default()
        }
    }

    fn all() -> Matcher {
        Matcher::new(ProcessFilter::default()).expect("empty filter")
    }

    fn named(name: &str) -> Matcher {
        Matcher::new(ProcessFilter {
            process_names: vec![name.to_owned()],
            ..ProcessFilter::default()
        })
        .expect("filter")
    }

    /// (kind, pid) of each event of one step.
    fn run(tracker: &mut Tracker, table: &[ProcessRecord]) -> Vec<(model::ProcessEventKind, u32)> {
        let step = tracker.step(Snapshot::of(table.to_vec())).expect("step");
        step.events
            .iter()
            .map(|e| (e.kind, e.process.pid))
            .collect()
    }

    #[test]
    fn starts_and_exits_are_reported_once_after_the_first_snapshot() {
        let mut tracker = Tracker::new(all(), None, false);
        let base = [proc(1, 0, "init"), proc(10, 1, "sshd")];
        assert!(
            run(&mut tracker, &base).is_empty(),
            "what runs at the start is silent"
        );
        let with_child = [base[0].clone(), base[1].clone(), proc(20, 10, "bash")];
        assert_eq!(run(&mut tracker, &with_child), [(Started, 20)]);
        assert!(run(&mut tracker, &with_child).is_empty());
        assert_eq!(run(&mut tracker, &base), [(Exited, 20)]);
        assert_eq!(run(&mut tracker, &[base[0].clone()]), [(Exited, 10)]);
    }

    #[test]
    fn include_existing_reports_the_first_snapshot() {
        let mut tracker = Tracker::new(all(), None, true);
        let table = [proc(1, 0, "init"), proc(10, 1, "sshd")];
        assert_eq!(run(&mut tracker, &table), [(Existing, 1), (Existing, 10)]);
        assert!(run(&mut tracker, &table).is_empty());
    }

    #[test]
    fn a_reused_pid_is_an_exit_then_a_start() {
        let mut tracker = Tracker::new(all(), None, false);
        run(&mut tracker, &[proc(1, 0, "init"), proc(5, 1, "old")]);
        let mut reborn = proc(5, 1, "new");
        reborn.start_time = Some(1_800_000_000);
        let events = tracker
            .step(Snapshot::of(vec![proc(1, 0, "init"), reborn]))
            .expect("step")
            .events;
        let names: Vec<(model::ProcessEventKind, &str)> = events
            .iter()
            .map(|e| (e.kind, e.process.name.as_str()))
            .collect();
        assert_eq!(names, [(Exited, "old"), (Started, "new")]);
    }

    #[test]
    fn the_filter_selects_which_members_are_reported() {
        let mut tracker = Tracker::new(named("sleep"), None, false);
        run(&mut tracker, &[proc(1, 0, "init")]);
        let table = [proc(1, 0, "init"), proc(2, 1, "bash"), proc(3, 2, "sleep")];
        assert_eq!(run(&mut tracker, &table), [(Started, 3)]);
        assert_eq!(run(&mut tracker, &[proc(1, 0, "init")]), [(Exited, 3)]);
    }

    #[test]
    fn a_tree_watch_follows_descendants_and_orphans_until_all_are_gone() {
        let mut tracker = Tracker::new(all(), Some(10), false);
        let outside = proc(2, 1, "other");
        let root = proc(10, 1, "build");
        assert!(run(
            &mut tracker,
            &[proc(1, 0, "init"), outside.clone(), root.clone()]
        )
        .is_empty());

        // A child and a grandchild of the root start; a process outside does too.
        let child = proc(11, 10, "make");
        let grandchild = proc(12, 11, "cc");
        let table = [
            proc(1, 0, "init"),
            outside.clone(),
            root.clone(),
            child.clone(),
            grandchild.clone(),
            proc(30, 2, "unrelated"),
        ];
        assert_eq!(run(&mut tracker, &table), [(Started, 11), (Started, 12)]);

        // The child exits; the grandchild is re-parented to init and stays watched,
        // and so do its own children.
        let mut orphan = grandchild.clone();
        orphan.ppid = Some(1);
        let table = [
            proc(1, 0, "init"),
            root.clone(),
            orphan.clone(),
            proc(13, 12, "as"),
        ];
        assert_eq!(run(&mut tracker, &table), [(Exited, 11), (Started, 13)]);

        // The root exits; the watch goes on while a descendant lives.
        let step = tracker
            .step(Snapshot::of(vec![proc(1, 0, "init"), orphan]))
            .expect("step");
        let events: Vec<_> = step
            .events
            .iter()
            .map(|e| (e.kind, e.process.pid))
            .collect();
        assert_eq!(events, [(Exited, 10), (Exited, 13)]);
        assert!(!step.finished);
        let step = tracker
            .step(Snapshot::of(vec![proc(1, 0, "init")]))
            .expect("step");
        assert_eq!(step.events.len(), 1);
        assert!(step.finished, "root and every descendant have exited");
    }

    #[test]
    fn a_missing_root_is_not_found() {
        let mut tracker = Tracker::new(all(), Some(99), false);
        let error = tracker
            .step(Snapshot::of(vec![proc(1, 0, "init")]))
            .expect_err("no root");
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), "no process 99 to watch the tree of");
    }

    #[test]
    fn intervals_have_a_default_and_a_floor() {
        assert_eq!(interval(0), Duration::from_millis(1000));
        assert_eq!(interval(1), Duration::from_millis(100));
        assert_eq!(interval(250), Duration::from_millis(250));
    }
}
