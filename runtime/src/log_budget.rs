//! A bound on log volume for events a peer can trigger at will (refused connections,
//! protocol errors): the first few of each window are logged, the rest are counted and
//! reported as one summary line when the next window opens.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Lets through at most `per_window` events per `window`; see the module docs.
#[derive(Debug)]
pub(crate) struct LogBudget {
    per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `suppressed` events of the window before were not logged (say so).
    Log {
        /// Events of the previous window that were counted but not logged.
        suppressed: u64,
    },
    /// Count it, log nothing.
    Suppress,
}

impl LogBudget {
    /// At most `per_window` events logged per `window`.
    pub(crate) fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Records one event and says whether to log it.
    pub(crate) fn spend(&self) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut suppressed = 0;
        if now.duration_since(state.started) >= self.window {
            suppressed = std::mem::take(&mut state.suppressed);
            state.started = now;
            state.logged = 0;
        }
        if state.logged < self.per_window {
            state.logged += 1;
            Verdict::Log { suppressed }
        } else {
            state.suppressed += 1;
            Verdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_ones_then_counts() {
        let budget = LogBudget::new(3, Duration::from_millis(50));
        let verdicts: Vec<_> = (0..10).map(|_| budget.spend()).collect();
        assert_eq!(
            verdicts[..3],
            [
                Verdict::Log { suppressed: 0 },
                Verdict::Log { suppressed: 0 },
                Verdict::Log { suppressed: 0 }
            ]
        );
        assert!(verdicts[3..].iter().all(|v| *v == Verdict::Suppress));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(budget.spend(), Verdict::Log { suppressed: 7 });
    }
}
