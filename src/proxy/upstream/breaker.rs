//! A per-backend circuit breaker: closed → open (shed everything) → half-open (a few trials)
//! → closed again, or open again on a failed trial.

use std::sync::Mutex;

use crate::model::CircuitBreaker;

use super::endpoint::Clock;

/// Buckets of the sliding window.
const BUCKETS: u64 = 10;

#[derive(Debug)]
enum State {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { started: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (bucket number, requests, failures), one per window tenth.
    buckets: [(u64, u32, u32); BUCKETS as usize],
}

/// A breaker in one of its states, with its failure window.
#[derive(Debug)]
pub struct Breaker {
    policy: CircuitBreaker,
    inner: Mutex<Inner>,
}

/// What the breaker allows for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: a normal request.
    Normal,
    /// Half-open: a trial request.
    Trial,
}

/// The breaker is open (or half-open with all trials taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: CircuitBreaker) -> Self {
        Self {
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed,
                buckets: [(0, 0, 0); BUCKETS as usize],
            }),
        }
    }

    /// The settings it runs with.
    pub fn policy(&self) -> &CircuitBreaker {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to send one request.
    pub fn admit(&self, clock: &Clock) -> Result<Admission, Rejected> {
        let now = clock.now_ms();
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Ok(Admission::Normal),
            State::Open { until_ms } if now < until_ms => Err(Rejected),
            State::Open { .. } => {
                inner.state = State::HalfOpen {
                    started: 1,
                    succeeded: 0,
                };
                Ok(Admission::Trial)
            }
            State::HalfOpen {
                ref mut started, ..
            } if *started < self.policy.half_open_requests => {
                *started += 1;
                Ok(Admission::Trial)
            }
            State::HalfOpen { .. } => Err(Rejected),
        }
    }

    /// Gives back an admission whose request says nothing about the upstream (the client's
    /// own body failed): a trial slot is freed for another request.
    pub fn release(&self, admission: Admission) {
        let mut inner = self.lock();
        if let (State::HalfOpen { started, .. }, Admission::Trial) = (&mut inner.state, admission) {
            *started = started.saturating_sub(1);
        }
    }

    /// Records the outcome of an admitted request. Returns the new open/closed state when it
    /// changed (true: open).
    pub fn record(&self, clock: &Clock, admission: Admission, success: bool) -> Option<bool> {
        let now = clock.now_ms();
        let mut inner = self.lock();
        let open_until = now + self.policy.open_duration.as_millis() as u64;
        match (&mut inner.state, admission) {
            (State::HalfOpen { succeeded, .. }, Admission::Trial) => {
                if !success {
                    inner.state = State::Open {
                        until_ms: open_until,
                    };
                    return Some(true);
                }
                *succeeded += 1;
                if *succeeded >= self.policy.half_open_requests {
                    inner.state = State::Closed;
                    inner.buckets = [(0, 0, 0); BUCKETS as usize];
                    return Some(false);
                }
                None
            }
            (State::Closed, Admission::Normal) => {
                let width = (self.policy.window.as_millis() as u64 / BUCKETS).max(1);
                let bucket = now / width;
                let slot = &mut inner.buckets[(bucket % BUCKETS) as usize];
                if slot.0 != bucket {
                    *slot = (bucket, 0, 0);
                }
                slot.1 += 1;
                slot.2 += u32::from(!success);
                let (requests, failures) = inner
                    .buckets
                    .iter()
                    .filter(|b| b.0 + BUCKETS > bucket)
                    .fold((0u32, 0u32), |(r, f), b| (r + b.1, f + b.2));
                let tripped = requests >= self.policy.min_requests
                    && f64::from(failures) >= self.policy.failure_ratio * f64::from(requests);
                if tripped {
                    inner.state = State::Open {
                        until_ms: open_until,
                    };
                    return Some(true);
                }
                None
            }
            // An outcome from before a state change: it no longer counts.
            _ => None,
        }
    }

    /// `closed`, `open` or `half-open`.
    pub fn state_name(&self, clock: &Clock) -> &'static str {
        match self.lock().state {
            State::Closed => "closed",
            State::Open { until_ms } if clock.now_ms() < until_ms => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> CircuitBreaker {
        CircuitBreaker {
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_duration: Duration::from_secs(5),
            half_open_requests: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_sheds_half_opens_and_closes() {
        let clock = Clock::new();
        let b = Breaker::new(policy());
        for i in 0..9 {
            let a = b.admit(&clock).unwrap();
            assert_eq!(
                b.record(&clock, a, i % 2 == 0),
                None,
                "below minRequests nothing trips"
            );
        }
        let a = b.admit(&clock).unwrap();
        assert_eq!(
            b.record(&clock, a, false),
            Some(true),
            "5 of 10 failed: open"
        );
        assert_eq!(b.admit(&clock), Err(Rejected));
        assert_eq!(b.state_name(&clock), "open");

        tokio::time::advance(Duration::from_secs(5)).await;
        let t1 = b.admit(&clock).unwrap();
        let t2 = b.admit(&clock).unwrap();
        assert_eq!((t1, t2), (Admission::Trial, Admission::Trial));
        assert_eq!(
            b.admit(&clock),
            Err(Rejected),
            "only halfOpenRequests trials"
        );
        assert_eq!(b.record(&clock, t1, true), None);
        assert_eq!(
            b.record(&clock, t2, true),
            Some(false),
            "all trials passed: closed"
        );
        assert_eq!(b.admit(&clock), Ok(Admission::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_again() {
        let clock = Clock::new();
        let b = Breaker::new(CircuitBreaker {
            min_requests: 1,
            ..policy()
        });
        let a = b.admit(&clock).unwrap();
        assert_eq!(b.record(&clock, a, false), Some(true));
        tokio::time::advance(Duration::from_secs(6)).await;
        let t = b.admit(&clock).unwrap();
        assert_eq!(b.record(&clock, t, false), Some(true));
        assert_eq!(b.admit(&clock), Err(Rejected));
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let clock = Clock::new();
        let b = Breaker::new(policy());
        for _ in 0..9 {
            let a = b.admit(&clock).unwrap();
            b.record(&clock, a, false);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..9 {
            let a = b.admit(&clock).unwrap();
            assert_eq!(b.record(&clock, a, true), None);
        }
        let a = b.admit(&clock).unwrap();
        assert_eq!(
            b.record(&clock, a, false),
            None,
            "1 failure of 10 in the window"
        );
    }
}
