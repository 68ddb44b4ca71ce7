//! The timers that bound attempts, kept per worker thread for the next attempts: a tokio
//! `Sleep` made, registered and dropped for every request cost ~370 instructions (a runtime
//! handle cloned and released, the timer wheel locked twice); one kept and set again for a
//! later deadline is moved forward without touching the wheel.
//!
//! A kept timer is set again only for an earlier deadline than it has. For a later one (the
//! common case: the same timeout, a later request) it is left as it is, and when it fires
//! before the attempt's own deadline, [`race`] sets it for that deadline then: once per
//! timeout's length per timer, instead of once per request (~110 instructions each, most of
//! them turning the deadline into the wheel's tick).
//!
//! A timer belongs to the runtime that made it, so only the threads of the binary's one runtime
//! keep them ([`keep_timers_on_this_thread`]); elsewhere (tests, a program that embeds the
//! library and may run several runtimes on one thread) each attempt makes its own, on its
//! stack.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// Timers kept per thread: one for each attempt a thread has under way at once, up to this.
const KEPT_TIMERS: usize = crate::proxy::transport::recycle::KEPT_PER_THREAD;

thread_local! {
    static KEEPS: Cell<bool> = const { Cell::new(false) };
    static KEPT: RefCell<Vec<Pin<Box<Sleep>>>> = const { RefCell::new(Vec::new()) };
}

/// Lets the calling thread keep attempt timers. Only for a thread that runs no runtime but the
/// process's one (the binary's worker threads).
pub fn keep_timers_on_this_thread() {
    KEEPS.set(true);
}

/// A kept timer, set for `deadline`; `None` on a thread that keeps none (the caller makes its
/// own).
pub(super) fn take(deadline: Instant) -> Option<Kept> {
    if !KEEPS.get() {
        return None;
    }
    let kept = KEPT.try_with(|k| k.borrow_mut().pop()).ok().flatten();
    let sleep = match kept {
        Some(mut sleep) => {
            // Firing early is caught by `race`; firing late would not be.
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            sleep
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    Some(Kept(Some(sleep)))
}

/// A timer that goes back to its thread's when dropped. It fires at the latest at the deadline
/// it was taken for, possibly before: race it with [`race`], which knows that deadline.
pub(super) struct Kept(Option<Pin<Box<Sleep>>>);

impl Kept {
    /// The timer, to race with.
    pub(super) fn sleep(&mut self) -> Pin<&mut Sleep> {
        self.0
            .as_mut()
            .expect("a kept timer until dropped")
            .as_mut()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(sleep) = self.0.take() {
            let _ = KEPT.try_with(|k| {
                let mut k = k.borrow_mut();
                if k.len() < KEPT_TIMERS {
                    k.push(sleep);
                }
            });
        }
    }
}

/// `work`'s output, or `timed_out()`'s once `deadline` has passed. `timer` fires at the latest
/// at `deadline`; when it fires sooner (a kept timer left at an earlier deadline), it is set for
/// `deadline` and the race goes on. (A plain future: an async layer more would copy the output
/// once more.)
pub(super) fn race<'a, F: Future + 'a>(
    mut work: Pin<&'a mut F>,
    mut timer: Pin<&'a mut Sleep>,
    deadline: Instant,
    timed_out: impl FnOnce() -> F::Output + 'a,
) -> impl Future<Output = F::Output> + 'a {
    let mut timed_out = Some(timed_out);
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if timer.deadline() < deadline => timer.as_mut().reset(deadline),
                Poll::Ready(()) => {
                    return Poll::Ready((timed_out.take().expect("polled once ready"))());
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What an attempt does: a kept timer, else one of its own.
    async fn within<F: Future>(
        deadline: Instant,
        work: F,
        timed_out: impl FnOnce() -> F::Output,
    ) -> F::Output {
        let work = std::pin::pin!(work);
        match take(deadline) {
            Some(mut kept) => race(work, kept.sleep(), deadline, timed_out).await,
            None => {
                race(
                    work,
                    std::pin::pin!(tokio::time::sleep_until(deadline)),
                    deadline,
                    timed_out,
                )
                .await
            }
        }
    }

    /// On a thread of its own, with its own runtime, which it keeps timers for.
    fn on_a_keeping_thread<F: Future<Output = ()>>(test: impl FnOnce() -> F + Send + 'static) {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            keep_timers_on_this_thread();
            rt.block_on(test());
        })
        .join()
        .unwrap();
    }

    fn kept_count() -> usize {
        KEPT.with(|k| k.borrow().len())
    }

    fn first_kept() -> *const Sleep {
        KEPT.with(|k| &*k.borrow()[0] as *const Sleep)
    }

    #[test]
    fn a_kept_timer_fires_at_each_deadline_it_is_set_for() {
        on_a_keeping_thread(|| async {
            // Answered first: the timer goes back to the thread.
            let answer = within(Instant::now() + Duration::from_secs(60), async { 1 }, || 0).await;
            assert_eq!((answer, kept_count()), (1, 1));
            let kept = first_kept();
            // The same timer, set sooner than before: it fires then; set later after firing,
            // and sooner again.
            for ms in [50, 80, 20] {
                let started = Instant::now();
                let answer = within(
                    started + Duration::from_millis(ms),
                    std::future::pending::<u64>(),
                    || ms,
                )
                .await;
                assert_eq!(answer, ms);
                let waited = started.elapsed();
                assert!(waited >= Duration::from_millis(ms), "{waited:?}");
                assert!(waited < Duration::from_secs(5), "{waited:?}");
                assert_eq!((kept_count(), first_kept()), (1, kept));
            }
            // Two at once: a second timer is made, and both are kept.
            let slow = within(
                Instant::now() + Duration::from_millis(30),
                std::future::pending::<u32>(),
                || 2,
            );
            let fast = within(
                Instant::now() + Duration::from_millis(10),
                std::future::pending::<u32>(),
                || 1,
            );
            assert_eq!(tokio::join!(slow, fast), (2, 1));
            assert_eq!(kept_count(), 2);
        });
    }

    #[test]
    fn a_kept_timer_left_at_an_earlier_deadline_does_not_cut_a_later_one_short() {
        on_a_keeping_thread(|| async {
            // Answered at once: the timer goes back still set for 30 ms from now.
            let soon = Instant::now() + Duration::from_millis(30);
            assert_eq!(within(soon, async { 1 }, || 0).await, 1);
            let kept = first_kept();
            // A later deadline leaves it there: it fires at 30 ms, and the work, done at 100 ms,
            // is not cut at the earlier deadline.
            let started = Instant::now();
            let slow_work = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                2
            };
            let answer = within(started + Duration::from_millis(400), slow_work, || 0).await;
            assert_eq!(answer, 2);
            assert!(Instant::now() > soon);
            // And a deadline that passes still times out, at that deadline, not the earlier one.
            let started = Instant::now();
            let deadline = started + Duration::from_millis(60);
            assert_eq!(within(deadline, std::future::pending(), || 3).await, 3);
            assert!(Instant::now() >= deadline);
            assert_eq!((kept_count(), first_kept()), (1, kept));
        });
    }

    #[tokio::test]
    async fn a_thread_that_keeps_none_times_out_all_the_same() {
        let started = Instant::now();
        let answer = within(
            started + Duration::from_millis(20),
            std::future::pending::<u32>(),
            || 3,
        )
        .await;
        assert_eq!(answer, 3);
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(kept_count(), 0);
    }
}
