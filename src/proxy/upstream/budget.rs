//! The retry budget: retries may add at most a fixed share of the requests (20%), plus a small
//! reserve, so that retries cannot multiply the load on a backend that is down.

use std::sync::atomic::{AtomicI64, Ordering};

/// Share of requests that may be retried, in thousandths.
const RATIO_MILLI: i64 = 200;
/// Unused retries saved at most (and at the start), in thousandths.
const RESERVE_MILLI: i64 = 10_000;

/// Tokens in thousandths: a request deposits 0.2, a retry withdraws 1.
#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            balance: AtomicI64::new(RESERVE_MILLI),
        }
    }
}

impl RetryBudget {
    /// Counts an original request.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < RESERVE_MILLI).then(|| (b + RATIO_MILLI).min(RESERVE_MILLI))
            });
    }

    /// Takes a retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_a_fifth_of_requests_plus_the_reserve() {
        let b = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            // A full outage: every request wants a retry.
            if b.withdraw() {
                retries += 1;
            }
        }
        assert!((200..=210).contains(&retries), "{retries}");
    }
}
