//! One endpoint's live state: requests in flight, active health, passive ejection, slow start.
//!
//! Everything is atomics: the request path reads these on every pick and writes them on every
//! outcome, from many threads, without a lock.

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::balance::EndpointList;
use crate::model::{Endpoint, PassiveHealthCheck};

/// Milliseconds on a monotonic clock shared by a registry (0 means "never").
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the epoch, at least 1.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The instant `ms` stands for.
    pub fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// The time, read when first asked for (a pick asks only when an endpoint was ejected or
    /// slow start is on: a clock read and a division per request otherwise).
    pub fn lazy(&self) -> LazyNow<'_> {
        LazyNow {
            clock: self,
            ms: Cell::new(0),
        }
    }
}

/// [`Clock::now_ms`] read once, on first use.
pub struct LazyNow<'a> {
    clock: &'a Clock,
    /// 0 until read (`now_ms` is at least 1).
    ms: Cell<u64>,
}

impl LazyNow<'_> {
    /// Milliseconds since the clock's epoch, as first read.
    pub fn get(&self) -> u64 {
        match self.ms.get() {
            0 => {
                let ms = self.clock.now_ms();
                self.ms.set(ms);
                ms
            }
            ms => ms,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One endpoint of one backend.
#[derive(Debug)]
pub struct EndpointState {
    /// Address and weight.
    pub endpoint: Endpoint,
    /// The address as a URI authority, parsed once (`None` if it is not one): a request's
    /// URI shares it instead of parsing and copying the address.
    pub authority: Option<http::uri::Authority>,
    in_flight: AtomicU32,
    /// False once active probes found it unhealthy (starts true: new endpoints get traffic).
    active_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// When the current ejection ends (0: not ejected).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// When it last became healthy (for slow start; 0: since the start).
    healthy_since: AtomicU64,
    /// What a layer above keeps per endpoint (the transport's idle connections).
    pub attached: Attachment,
}

/// State that a layer above keeps on an endpoint, typed there: it lives and dies with the
/// endpoint, and this layer never names it (the transport keeps its idle connections here).
/// One type per endpoint; made on first use.
#[derive(Default)]
pub struct Attachment(OnceLock<Box<dyn Any + Send + Sync>>);

impl Attachment {
    /// The attached `T`, made with `T::default()` on first use; `None` if another type was
    /// attached first.
    pub fn get_or_default<T: Any + Send + Sync + Default>(&self) -> Option<&T> {
        self.0.get_or_init(|| Box::<T>::default()).downcast_ref()
    }

    /// The attached `T`, if one was made.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get()?.downcast_ref()
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment").finish_non_exhaustive()
    }
}

impl EndpointList for Vec<Arc<EndpointState>> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn weight(&self, i: usize) -> u32 {
        self[i].endpoint.weight
    }
    fn in_flight(&self, i: usize) -> u32 {
        self[i].in_flight()
    }
}

impl EndpointState {
    /// A healthy endpoint with nothing in flight.
    pub fn new(endpoint: Endpoint) -> Self {
        let authority = http::uri::Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(
            endpoint.address.as_bytes(),
        ))
        .ok();
        Self {
            authority,
            endpoint,
            in_flight: AtomicU32::new(0),
            active_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            healthy_since: AtomicU64::new(0),
            attached: Attachment::default(),
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests in flight to it.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether active probes consider it healthy.
    pub fn active_healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    /// Sets the active-probe verdict; a change to healthy starts slow start.
    pub fn set_active_healthy(&self, healthy: bool, now_ms: u64) {
        let was = self.active_healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.healthy_since.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Whether a passive ejection is in force at `now_ms`.
    pub fn ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Ordering::Relaxed)
    }

    /// When the current (or last) ejection ends, 0 if never ejected.
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// Consecutive failures seen on real traffic.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Whether it may take new requests at `now_ms` (slow start aside).
    pub fn available(&self, now_ms: u64) -> bool {
        self.active_healthy() && !self.ejected(now_ms)
    }

    /// [`Self::available`], reading the clock only for an endpoint ever ejected.
    pub fn available_at(&self, now: &LazyNow<'_>) -> bool {
        self.active_healthy() && (self.ejected_until() == 0 || !self.ejected(now.get()))
    }

    /// Its share during slow start, from 0.1 to 1.0: it ramps linearly over `window` from the
    /// moment it became healthy or its ejection ended.
    pub fn slow_start_share(&self, now_ms: u64, window: Duration) -> f64 {
        let since = self
            .healthy_since
            .load(Ordering::Relaxed)
            .max(self.ejected_until.load(Ordering::Relaxed));
        if since == 0 || window.is_zero() {
            return 1.0;
        }
        let elapsed = now_ms.saturating_sub(since) as f64;
        (elapsed / window.as_millis() as f64).clamp(0.1, 1.0)
    }

    /// Records a successful exchange.
    pub fn record_success(&self, now_ms: u64, policy: Option<&PassiveHealthCheck>) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        // Forgive earlier ejections once it has stayed healthy for a whole ejection time.
        if let Some(p) = policy {
            let until = self.ejected_until.load(Ordering::Relaxed);
            if until != 0 && now_ms > until + p.ejection_time.as_millis() as u64 {
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Records a failed exchange; returns whether this failure crossed the threshold (the
    /// caller then decides, with the backend-wide budget, whether to eject).
    pub fn record_failure(&self, policy: Option<&PassiveHealthCheck>) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        policy.is_some_and(|p| n >= p.consecutive_failures)
    }

    /// Ejects it: the n-th ejection lasts n × ejection time (at most 10 ×).
    pub fn eject(&self, now_ms: u64, policy: &PassiveHealthCheck) -> Duration {
        let n = (self.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(10);
        let length = policy.ejection_time * n;
        self.ejected_until
            .store(now_ms + length.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        length
    }
}

/// A request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive() -> PassiveHealthCheck {
        PassiveHealthCheck {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
            failure_statuses: vec![(500, 599)],
        }
    }

    #[test]
    fn ejection_grows_on_repeat_and_is_forgiven_after_a_healthy_spell() {
        let e = EndpointState::new(Endpoint::new("127.0.0.1:1"));
        let p = passive();
        assert!(!e.record_failure(Some(&p)));
        assert!(!e.record_failure(Some(&p)));
        assert!(e.record_failure(Some(&p)));
        assert_eq!(e.eject(1_000, &p), Duration::from_secs(10));
        assert!(e.ejected(5_000) && !e.ejected(11_000));
        assert_eq!(e.eject(12_000, &p), Duration::from_secs(20));
        e.record_success(32_000 + 10_001, Some(&p));
        assert_eq!(e.eject(50_000, &p), Duration::from_secs(10), "forgiven");
    }

    #[test]
    fn the_lazy_clock_is_read_only_for_an_endpoint_ever_ejected() {
        // A clock a minute old: its time is ~60,000 ms.
        let clock = Clock {
            epoch: Instant::now() - Duration::from_secs(60),
        };
        let p = passive();
        let e = EndpointState::new(Endpoint::new("127.0.0.1:1"));
        let now = clock.lazy();
        assert!(e.available_at(&now));
        assert_eq!(now.ms.get(), 0, "never ejected: no clock read");
        // Ejected for 10 s from 55 s: still out; from 1 s: back.
        e.eject(55_000, &p);
        assert!(!e.available_at(&now) && now.ms.get() >= 60_000);
        assert_eq!(e.available_at(&now), e.available(now.get()));
        let e = EndpointState::new(Endpoint::new("127.0.0.1:1"));
        e.eject(1_000, &p);
        assert!(e.available_at(&clock.lazy()));
        e.set_active_healthy(false, 1);
        assert!(!e.available_at(&clock.lazy()));
    }

    #[test]
    fn slow_start_ramps_from_a_tenth() {
        let e = EndpointState::new(Endpoint::new("127.0.0.1:1"));
        let w = Duration::from_secs(10);
        assert_eq!(
            e.slow_start_share(5_000, w),
            1.0,
            "endpoints present from the start are at full share"
        );
        e.set_active_healthy(false, 1_000);
        e.set_active_healthy(true, 10_000);
        assert_eq!(e.slow_start_share(10_000, w), 0.1);
        assert!((e.slow_start_share(15_000, w) - 0.5).abs() < 1e-9);
        assert_eq!(e.slow_start_share(25_000, w), 1.0);
    }
}
