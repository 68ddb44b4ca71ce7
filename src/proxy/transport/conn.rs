//! Per-connection state: who the peer is and whether the connection is busy (for idle timeouts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::time::{Duration, Instant};

/// Limits every client connection runs under, whichever codec serves it.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// A client must send the whole request head within this time.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// A request body whose next bytes take longer than this is cut (`None`: no limit).
    pub body_read_timeout: Option<Duration>,
}

/// What a request handler knows about its connection.
pub struct ConnCtx {
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https` as seen by the client.
    pub scheme: &'static str,
    /// Busy/idle tracking.
    pub activity: Arc<Activity>,
}

/// Counts requests in flight and remembers when the last one ended.
pub struct Activity {
    start: Instant,
    inflight: AtomicUsize,
    last_done_ms: AtomicU64,
}

impl Activity {
    /// A connection that was just accepted (idle from now).
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// Marks a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }

    /// When the connection becomes idle-expired, or `None` while a request is in flight.
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed));
        Some(self.start + last + idle)
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Held by a request (and then its response body) while it is in flight.
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done_ms
            .store(a.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.inflight.fetch_sub(1, Ordering::Release);
    }
}
