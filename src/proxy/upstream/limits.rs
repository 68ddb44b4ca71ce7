//! Connection limits: at most `maxConnections` requests in flight to a backend, at most
//! `maxPendingRequests` waiting (each for at most `pendingTimeout`); anything more is refused at
//! once, so overload is shed instead of queued without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::ConnectionLimits;

/// Default wait for a slot.
const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(1);

/// The limiter of one backend.
#[derive(Debug)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    max: u32,
    max_pending: u32,
    pending: AtomicU32,
    pending_timeout: Duration,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overloaded {
    /// Every slot is taken and the queue is full.
    QueueFull,
    /// It waited `pendingTimeout` in the queue.
    Timeout,
}

impl Limiter {
    /// A limiter for `limits`, or `None` when they set no maximum.
    pub fn new(limits: &ConnectionLimits) -> Option<Self> {
        let max = limits.max_connections?;
        Some(Self {
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            // Unset: as many waiting as in flight — bounded either way.
            max_pending: limits.max_pending_requests.unwrap_or(max),
            pending: AtomicU32::new(0),
            pending_timeout: limits.pending_timeout.unwrap_or(DEFAULT_PENDING_TIMEOUT),
        })
    }

    /// Whether this limiter enforces `limits` (so a reload can keep it and its queue).
    pub fn matches(&self, limits: &ConnectionLimits) -> bool {
        limits.max_connections == Some(self.max)
            && limits.max_pending_requests.unwrap_or(self.max) == self.max_pending
            && limits.pending_timeout.unwrap_or(DEFAULT_PENDING_TIMEOUT) == self.pending_timeout
    }

    /// A slot, waiting in the bounded queue if needed.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let queued = self.pending.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.pending);
        if queued >= self.max_pending {
            return Err(Overloaded::QueueFull);
        }
        match tokio::time::timeout(self.pending_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Overloaded::Timeout),
        }
    }

    /// Requests in flight and waiting.
    pub fn usage(&self) -> (u32, u32) {
        (
            self.max - self.slots.available_permits() as u32,
            self.pending.load(Ordering::Relaxed),
        )
    }
}

struct Leave<'a>(&'a AtomicU32);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sheds_beyond_the_queue_and_times_out_in_it() {
        let l = Arc::new(
            Limiter::new(&ConnectionLimits {
                max_connections: Some(1),
                max_pending_requests: Some(1),
                pending_timeout: Some(Duration::from_millis(100)),
                ..Default::default()
            })
            .unwrap(),
        );
        let held = l.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(l.acquire().await.map(|_| ()), Err(Overloaded::QueueFull));
        assert_eq!(waiter.await.unwrap(), Err(Overloaded::Timeout));
        drop(held);
        assert!(l.acquire().await.is_ok());
    }
}
