//! Client-side resilience: reconnection with exponential backoff and jitter, a circuit
//! breaker, and an optional token-bucket rate limit (seed: IPC, Connection Management;
//! Migration Overview, "automatic reconnection with exponential backoff", "circuit
//! breaker").
//!
//! What is retried ([`RetryPolicy`]):
//!
//! | failure | retried? |
//! | --- | --- |
//! | connecting failed (`ServerNotFound`, `ConnectionRefused`, `ConnectionTimeout`, `Busy`, `PeerClosed` during the handshake) | yes, any method: the call was not sent |
//! | the connection failed after the call was sent (`PeerClosed`, `Io`, framing errors, `GoAway` races) | only methods marked `#[ipc(idempotent)]`: the handler may have run |
//! | the server answered `UNAVAILABLE` | only idempotent methods |
//! | any other `Status`, `DeadlineExceeded`, `Handshake`, `PermissionDenied`, `TooLarge`, `Decode`, `Config` | never |
//!
//! Every attempt and every backoff stays within the call's one deadline.

use std::{
    num::NonZeroU32,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use governor::{
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
    Quota, RateLimiter,
};

use crate::{config::millis, Code, IpcError};

/// How a client retries a call that failed for a transient reason; see the
/// [module docs](self) for which failures qualify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retrying. Default 4.
    pub max_attempts: u32,
    /// Backoff before the second attempt. Default 20 ms.
    pub initial_backoff: Duration,
    /// Largest backoff between attempts. Default 1 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The pause after failed attempt number `attempt` (1-based): exponential
    /// (`initial_backoff * 2^(attempt-1)`, capped at `max_backoff`) with "full jitter",
    /// a uniformly random duration between zero and that value, so that many clients
    /// that lost the same server do not come back in lock step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Whether a failed attempt may be tried again.
///
/// `sent` is whether the request may have reached the server; `idempotent` whether the
/// method is marked safe to run twice.
pub(crate) fn is_retryable(error: &IpcError, sent: bool, idempotent: bool) -> bool {
    match error {
        IpcError::Status(status) => idempotent && status.code() == Code::Unavailable,
        IpcError::DeadlineExceeded { .. }
        | IpcError::Handshake { .. }
        | IpcError::PermissionDenied { .. } => false,
        error if is_caller_side(error) => false,
        _ => !sent || idempotent,
    }
}

/// Failures that come from the caller's own side (its message, its configuration, its
/// policies): trying again changes nothing, and they say nothing about the server.
fn is_caller_side(error: &IpcError) -> bool {
    matches!(
        error,
        IpcError::TooLarge { .. }
            | IpcError::Decode(_)
            | IpcError::Encode(_)
            | IpcError::Config { .. }
            | IpcError::CircuitOpen { .. }
            | IpcError::RateLimited { .. }
    )
}

/// Whether a failure says the server is unhealthy (and so counts against the breaker):
/// transport failures and deadlines do, answers from a live server do not.
pub(crate) fn is_failure(error: &IpcError) -> bool {
    match error {
        IpcError::Status(status) => status.code() == Code::Unavailable,
        error => !is_caller_side(error),
    }
}

/// Settings of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the circuit. Default 5.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe call is let through. Default 5 s.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` consecutive ones have failed.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls fail fast with [`IpcError::CircuitOpen`] until `until`.
    Open {
        /// When one probe call will be let through.
        until: Instant,
    },
    /// One probe call is in flight; others fail fast until it ends. Its success closes
    /// the circuit, its failure opens it again.
    HalfOpen,
}

/// A circuit breaker shared by every clone of a client handle.
///
/// Closed -> (threshold consecutive failures) -> Open -> (after `open_for`) -> HalfOpen
/// -> (probe succeeds) -> Closed, or (probe fails) -> Open. The state lives behind one
/// mutex and persists across calls; a half-open circuit stays half-open until its probe
/// reports.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks to make a call now; report its outcome through the returned permit.
    ///
    /// # Errors
    /// [`IpcError::CircuitOpen`] while open, or half-open with the probe in flight.
    pub fn acquire(&self) -> Result<BreakerPermit<'_>, IpcError> {
        let mut state = self.lock();
        let probe = match *state {
            BreakerState::Closed { .. } => false,
            BreakerState::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(IpcError::CircuitOpen {
                        retry_after_ms: millis(until - now),
                    });
                }
                *state = BreakerState::HalfOpen;
                true
            }
            BreakerState::HalfOpen => return Err(IpcError::CircuitOpen { retry_after_ms: 0 }),
        };
        Ok(BreakerPermit {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    fn record(&self, healthy: bool) {
        let mut state = self.lock();
        *state = match (*state, healthy) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false)
                if failures + 1 < self.config.failure_threshold =>
            {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => BreakerState::Open {
                until: Instant::now() + self.config.open_for,
            },
        };
    }
}

/// Permission to make one call, from [`CircuitBreaker::acquire`].
///
/// Dropping a probe's permit without [`record`](Self::record) (its call was
/// abandoned) counts as a failed probe, so the breaker can never stay half-open.
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl BreakerPermit<'_> {
    /// Reports how the call ended: `healthy` unless it showed the server unhealthy.
    pub fn record(mut self, healthy: bool) {
        self.recorded = true;
        self.breaker.record(healthy);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.record(false);
        }
    }
}

/// A token-bucket limit on the calls a client handle starts.
#[derive(Debug)]
pub struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    clock: DefaultClock,
}

impl RateLimit {
    /// Allows `per_second` calls per second on average and bursts of `burst` calls.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::direct(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token, waiting for one when that takes less than `budget`.
    ///
    /// # Errors
    /// [`IpcError::RateLimited`] when the next token comes later than `budget`.
    pub async fn acquire(&self, budget: Duration) -> Result<(), IpcError> {
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait >= budget {
                        return Err(IpcError::RateLimited {
                            retry_after_ms: millis(wait),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_its_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(10));
            assert!(policy.backoff(3) <= Duration::from_millis(40));
            assert!(policy.backoff(30) <= Duration::from_millis(100));
        }
        // Jitter: not every draw is the ceiling.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(4)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn retry_classification() {
        let closed = IpcError::PeerClosed;
        assert!(is_retryable(&closed, false, false), "not sent: always");
        assert!(
            !is_retryable(&closed, true, false),
            "sent, not idempotent: never"
        );
        assert!(is_retryable(&closed, true, true), "sent, idempotent: yes");
        let unavailable = IpcError::Status(crate::Status::unavailable("x"));
        assert!(is_retryable(&unavailable, true, true));
        assert!(!is_retryable(&unavailable, true, false));
        let not_found = IpcError::Status(crate::Status::not_found("x"));
        assert!(!is_retryable(&not_found, true, true));
        let deadline = IpcError::DeadlineExceeded { after_ms: 1 };
        assert!(!is_retryable(&deadline, false, true));
    }

    #[test]
    fn breaker_opens_after_the_threshold_and_fails_fast() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(3600),
        });
        breaker.acquire().unwrap().record(false);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 1 });
        breaker.acquire().unwrap().record(true);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed { failures: 0 },
            "success resets"
        );
        breaker.acquire().unwrap().record(false);
        breaker.acquire().unwrap().record(false);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        let refused = breaker.acquire().unwrap_err();
        assert!(matches!(refused, IpcError::CircuitOpen { retry_after_ms } if retry_after_ms > 0));
    }

    #[test]
    fn half_open_persists_until_its_probe_reports() {
        // open_for zero: the first acquire after opening is the probe.
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::ZERO,
        });
        breaker.acquire().unwrap().record(false);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        let probe = breaker.acquire().expect("the probe goes through");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        for _ in 0..3 {
            assert!(matches!(
                breaker.acquire(),
                Err(IpcError::CircuitOpen { .. })
            ));
            assert_eq!(breaker.state(), BreakerState::HalfOpen);
        }
        probe.record(false);
        assert!(
            matches!(breaker.state(), BreakerState::Open { .. }),
            "failed probe reopens"
        );
        breaker.acquire().expect("next probe").record(true);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn an_abandoned_probe_reopens_the_circuit() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::ZERO,
        });
        breaker.acquire().unwrap().record(false);
        drop(breaker.acquire().expect("probe"));
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        // A non-probe permit dropped unreported changes nothing.
        breaker.acquire().unwrap().record(true);
        drop(breaker.acquire().unwrap());
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[tokio::test]
    async fn rate_limit_waits_within_budget_and_refuses_beyond() {
        let one = NonZeroU32::MIN;
        let limit = RateLimit::new(NonZeroU32::new(20).unwrap(), one);
        limit.acquire(Duration::ZERO).await.expect("burst of one");
        let refused = limit.acquire(Duration::from_millis(1)).await;
        assert!(
            matches!(refused, Err(IpcError::RateLimited { retry_after_ms }) if retry_after_ms <= 50)
        );
        limit
            .acquire(Duration::from_secs(1))
            .await
            .expect("waits ~50 ms for a token");
    }
}
