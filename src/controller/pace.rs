//! When to apply a change: at once when it follows a quiet period, at most once per window
//! during a burst.
//!
//! Waiting a fixed debounce before every compile made each change cost that debounce (50 ms of a
//! 55 ms file reload, half of a `kubectl apply`'s propagation). Instead the first change after a
//! quiet period is applied at once, and changes that arrive within `window` of the last apply
//! wait for the end of that window and are applied together: a burst of N changes costs at most
//! one compile per window, not N.

use std::time::Duration;

use tokio::time::Instant;

/// What a trigger says about the change behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The writer is done: a file closed after writing, renamed into place or removed, or an
    /// explicit reload. Safe to apply at once.
    Complete,
    /// Data was written (or a file created) and more may follow: applied once the writer closes
    /// the file, or after the debounce of quiet.
    Partial,
}

/// Runs `work`, a compile or anything that long without an `.await`, where it does not hold up
/// traffic: on a multi-threaded runtime the worker it runs on hands its queued tasks (a
/// connection woken meanwhile) to another thread first ([`tokio::task::block_in_place`]); on a
/// single-threaded one, where that is not possible, in place. At 10,000 Routes a compile and
/// the status worked out after it take tens of milliseconds.
pub fn off_the_workers<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Paces applies: remembers the last one and says how long the next must wait.
#[derive(Debug)]
pub struct Pace {
    window: Duration,
    last: Option<Instant>,
}

impl Pace {
    /// A pace that applies at most once per `window` during a burst.
    pub fn new(window: Duration) -> Self {
        Self { window, last: None }
    }

    /// The earliest instant the next apply may run: now after a quiet period, else the end of
    /// the window that began with the last apply.
    pub fn next(&self) -> Instant {
        let now = Instant::now();
        match self.last {
            Some(last) if last + self.window > now => last + self.window,
            _ => now,
        }
    }

    /// Records an apply that just finished (the window starts when the work is done, so a compile
    /// longer than the window still leaves room for the rest of the program).
    pub fn applied(&mut self) {
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_change_after_quiet_is_applied_at_once() {
        let mut pace = Pace::new(Duration::from_millis(50));
        assert_eq!(pace.next(), Instant::now());
        pace.applied();
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(pace.next(), Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn change_within_window_waits_for_its_end() {
        let mut pace = Pace::new(Duration::from_millis(50));
        pace.applied();
        let end = Instant::now() + Duration::from_millis(50);
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(pace.next(), end);
    }
}
