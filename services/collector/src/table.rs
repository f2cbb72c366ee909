//! Whether the collector can read the process table: every read of the whole table
//! (an unfiltered listing, a watch snapshot, a probe) records what it found, and
//! [`SystemCollector::process_table`](crate::SystemCollector::process_table) hands out
//! a receiver of the latest finding, for a health check to follow.
//!
//! There is always at least one process, the collector itself, so a read of the whole
//! table that lists none means the table cannot be read (on Linux: `/proc` is not
//! mounted, or not readable). A read limited to some pids says nothing either way.

use std::{sync::Arc, time::Duration};

use daemoneye_ipc::health::{HealthReporter, ServingStatus};
use tokio::sync::watch;

use crate::{ProcessCollectorClient, SystemCollector};

/// How often [`SystemCollector::report_health`] reads the table again while it is
/// unreadable, so that the health check recovers without waiting for a call.
pub const TABLE_RETRY: Duration = Duration::from_secs(10);

/// What the last read of the whole process table found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableState {
    /// Not read yet.
    Unknown,
    /// The last read listed processes.
    Readable,
    /// The last read listed none: the table cannot be read. Says why, for an operator.
    Unreadable(String),
}

impl TableState {
    /// What a read of the whole table that listed `processes` processes says.
    pub(crate) fn from_count(processes: usize) -> Self {
        if processes > 0 {
            TableState::Readable
        } else {
            TableState::Unreadable(UNREADABLE.to_owned())
        }
    }
}

/// Why a table with no process in it counts as unreadable.
#[cfg(target_os = "linux")]
const UNREADABLE: &str =
    "the process table lists no process, not even the collector's own: is /proc mounted \
     and readable by the collector?";
#[cfg(not(target_os = "linux"))]
const UNREADABLE: &str =
    "the process table lists no process, not even the collector's own: the operating \
     system refused to list processes";

/// The latest [`TableState`], shared by a collector's clones.
#[derive(Clone, Debug)]
pub(crate) struct TableWatch(Arc<watch::Sender<TableState>>);

impl TableWatch {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(TableState::Unknown)))
    }

    /// Records that a read of the whole table listed `processes` processes; receivers
    /// are woken only when the state changes.
    pub(crate) fn record(&self, processes: usize) {
        let state = TableState::from_count(processes);
        self.0.send_if_modified(|current| {
            if *current == state {
                false
            } else {
                *current = state;
                true
            }
        });
    }

    /// A receiver of the state, starting with the current one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<TableState> {
        self.0.subscribe()
    }

    /// The current state.
    pub(crate) fn get(&self) -> TableState {
        self.0.borrow().clone()
    }
}

impl SystemCollector {
    /// Keeps `health` in step with the process table, until dropped: reads the table
    /// now unless it was read already, then, each time a read of the whole table (a listing, a watch snapshot, a
    /// probe) finds it unreadable after it was readable (or at first), sets both the
    /// server (`""`) and `daemoneye.ProcessCollector` to `NOT_SERVING` and logs a
    /// warning saying why; and back to `SERVING` when a read finds it readable again. While it is unreadable the
    /// table is read again every `retry`, so a health check recovers by itself.
    /// Nothing is set while no read has finished (every service starts `SERVING`).
    pub async fn report_health(self, health: HealthReporter, retry: Duration) {
        let service = ProcessCollectorClient::DESCRIPTOR.name;
        let mut states = self.process_table();
        if *states.borrow() == TableState::Unknown {
            if let Err(status) = self.probe_process_table().await {
                tracing::debug!(%status, "the first process table probe did not run");
            }
        }
        let mut unreadable = false;
        loop {
            let state = states.borrow_and_update().clone();
            match state {
                // Only changes are applied, so that a read at shutdown cannot undo the
                // server's own NOT_SERVING.
                TableState::Unreadable(reason) if !unreadable => {
                    tracing::warn!(%reason, "cannot read the process table: not serving");
                    unreadable = true;
                    health.set("", ServingStatus::NotServing);
                    health.set(service, ServingStatus::NotServing);
                }
                TableState::Readable if unreadable => {
                    tracing::info!("the process table is readable again: serving");
                    unreadable = false;
                    health.set("", ServingStatus::Serving);
                    health.set(service, ServingStatus::Serving);
                }
                _ => {}
            }
            tokio::select! {
                changed = states.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(retry), if unreadable => {
                    if let Err(status) = self.probe_process_table().await {
                        tracing::debug!(%status, "process table probe did not run");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_wake_receivers_and_repeats_do_not() {
        let table = TableWatch::new();
        let mut receiver = table.subscribe();
        assert_eq!(*receiver.borrow_and_update(), TableState::Unknown);
        table.record(12);
        assert!(receiver.has_changed().expect("open"));
        assert_eq!(*receiver.borrow_and_update(), TableState::Readable);
        table.record(13);
        assert!(!receiver.has_changed().expect("open"), "same state");
        table.record(0);
        assert!(matches!(
            &*receiver.borrow_and_update(),
            TableState::Unreadable(reason) if reason.contains("no process")
        ));
        assert!(matches!(table.get(), TableState::Unreadable(_)));
    }
}
