//! One backend's live state: its endpoint pool and selector, breaker, connection limiter, retry
//! budget, its own connection settings, and the active probes of its endpoints.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_util::sync::CancellationToken;

use super::balance::{self, PickContext, Selector};
use super::breaker::Breaker;
use super::budget::RetryBudget;
use super::custom::{HealthCheck, SelectorFactory};
use super::endpoint::{Clock, EndpointState};
use super::health;
use super::limits::Limiter;
use super::settings::UpstreamSettings;
use crate::model::{
    ActiveHealthCheck, Backend, DiscoveryKey, Endpoint, LoadBalancing, ObjectRef, UpstreamProtocol,
    UpstreamTls,
};
use crate::telemetry::metrics::RequestSeries;

/// One endpoint set with the selector built for it and the policy it runs under.
pub(super) struct Pool {
    pub(super) endpoints: Vec<Arc<EndpointState>>,
    /// Whether the endpoints are in more than one priority tier (SRV records).
    tiered: bool,
    selector: Arc<dyn Selector>,
    /// Session ids → endpoints, when the backend has a session cookie.
    sticky: Option<balance::StickyIndex>,
    pub(super) config: Arc<Backend>,
}

/// Active probes running for a backend: the settings, and a stop switch per endpoint.
#[derive(Default)]
struct Checks {
    /// The check, and the TLS settings its probes use (a change of either restarts them).
    config: Option<(
        ActiveHealthCheck,
        Option<Arc<UpstreamTls>>,
        UpstreamProtocol,
    )>,
    running: HashMap<Arc<str>, CancellationToken>,
}

/// Why no endpoint was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// The backend has no endpoints at all.
    Empty,
    /// It has endpoints, but all are unhealthy or ejected.
    NoneHealthy,
}

/// The session index of `endpoints`, when `config` has a session cookie.
fn sticky_index(config: &Backend, endpoints: &[Endpoint]) -> Option<balance::StickyIndex> {
    config
        .session_persistence
        .as_ref()
        .map(|_| balance::StickyIndex::new(endpoints))
}

/// Whether `endpoints` span more than one priority tier.
fn tiered(endpoints: &[Endpoint]) -> bool {
    endpoints
        .first()
        .is_some_and(|first| endpoints.iter().any(|e| e.priority != first.priority))
}

/// A part of a backend's state most backends do not have (a breaker, a connection limit,
/// settings of their own), read by every request: when it is not set, reading it is one load
/// of a flag (an `ArcSwapOption`'s read is ~50 instructions even when it holds nothing).
struct Rarely<T> {
    value: ArcSwapOption<T>,
    set: AtomicBool,
}

impl<T> Default for Rarely<T> {
    fn default() -> Self {
        Self {
            value: ArcSwapOption::empty(),
            set: AtomicBool::new(false),
        }
    }
}

impl<T> Rarely<T> {
    fn load_full(&self) -> Option<Arc<T>> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.value.load_full()
    }

    fn load(&self) -> arc_swap::Guard<Option<Arc<T>>> {
        self.value.load()
    }

    /// Set first and flagged after, unflagged first and cleared after: a reader that sees
    /// the flag down reads what was there before the store (or nothing), as it would have
    /// read a moment earlier.
    fn store(&self, value: Option<Arc<T>>) {
        if value.is_some() {
            self.value.store(value);
            self.set.store(true, Ordering::Release);
        } else {
            self.set.store(false, Ordering::Release);
            self.value.store(None);
        }
    }
}

/// One backend's live state.
pub struct BackendState {
    /// The backend's identity.
    pub id: ObjectRef,
    pub(super) clock: Clock,
    pub(super) pool: ArcSwap<Pool>,
    breaker: Rarely<Breaker>,
    limiter: Rarely<Limiter>,
    /// Connection settings of its own, when its `connection:` differs from the gateway's.
    settings: Rarely<UpstreamSettings>,
    /// Retries towards this backend draw on this budget.
    pub budget: RetryBudget,
    checks: Mutex<Checks>,
    /// A selector plugged in from code, used whatever `loadBalancer` says.
    custom_selector: Option<Arc<dyn SelectorFactory>>,
    /// A health check plugged in from code, replacing the `activeHealthCheck` probe.
    custom_check: Option<Arc<dyn HealthCheck>>,
    /// The maker of clients for HTTP probes over TLS.
    tls_probes: Option<Arc<dyn health::TlsProbes>>,
    /// The request metrics of each route that sends here (see [`BackendState::series`]).
    series: RwLock<Vec<(Arc<str>, Arc<RequestSeries>)>>,
    /// Whether the pool's balancer hashes requests (kept beside the pool, so that a request to
    /// a backend that does not reads one flag, not the pool: see [`BackendState::hashing`]).
    hashes: AtomicBool,
}

impl BackendState {
    pub(super) fn new(
        config: &Backend,
        clock: Clock,
        custom_selector: Option<Arc<dyn SelectorFactory>>,
        custom_check: Option<Arc<dyn HealthCheck>>,
        tls_probes: Option<Arc<dyn health::TlsProbes>>,
    ) -> Self {
        let select = |endpoints: &[Endpoint]| match &custom_selector {
            Some(factory) => factory.build(endpoints),
            None => balance::build(&config.load_balancer, endpoints),
        };
        let pool = Pool {
            endpoints: config
                .endpoints
                .iter()
                .cloned()
                .map(EndpointState::new)
                .map(Arc::new)
                .collect(),
            tiered: tiered(&config.endpoints),
            selector: select(&config.endpoints).into(),
            sticky: sticky_index(config, &config.endpoints),
            config: Arc::new(config.clone()),
        };
        Self {
            id: config.id.clone(),
            clock,
            pool: ArcSwap::from_pointee(pool),
            breaker: Rarely::default(),
            limiter: Rarely::default(),
            settings: Rarely::default(),
            budget: RetryBudget::default(),
            checks: Mutex::new(Checks::default()),
            custom_selector,
            custom_check,
            tls_probes,
            series: RwLock::default(),
            hashes: AtomicBool::new(config.load_balancer.hashes()),
        }
    }

    /// The request metrics of `route`'s requests to this backend; `None` once
    /// 256 routes have some (their requests go to the families directly).
    pub fn series(&self, route: &Arc<str>) -> Option<Arc<RequestSeries>> {
        let find = |all: &[(Arc<str>, Arc<RequestSeries>)]| {
            all.iter()
                .find(|(r, _)| Arc::ptr_eq(r, route))
                .or_else(|| all.iter().find(|(r, _)| r == route))
                .map(|(_, s)| s.clone())
        };
        if let Some(s) = find(&self.series.read().unwrap_or_else(PoisonError::into_inner)) {
            return Some(s);
        }
        let mut all = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = find(&all) {
            return Some(s);
        }
        (all.len() < Self::SERIES).then(|| {
            let s = Arc::new(RequestSeries::default());
            all.push((route.clone(), s.clone()));
            s
        })
    }

    /// How many routes' request metrics a backend keeps at hand.
    const SERIES: usize = 256;

    /// The clock outcomes are timed with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Applies a (possibly) changed configuration, keeping whatever it does not change.
    pub(super) fn configure(&self, config: &Backend, settings: &UpstreamSettings) {
        let current = self.pool.load();
        if *current.config != *config {
            self.replace_pool(config.clone(), config.endpoints.clone());
        }
        let breaker = self.breaker.load();
        if breaker.as_ref().map(|b| b.policy()) != config.circuit_breaker.as_ref() {
            self.breaker.store(
                config
                    .circuit_breaker
                    .clone()
                    .map(|p| Arc::new(Breaker::new(p))),
            );
        }
        let limiter = self.limiter.load();
        let keep = match (&*limiter, config.connection.max_connections) {
            (Some(l), Some(_)) => l.matches(&config.connection),
            (None, None) => true,
            _ => false,
        };
        if !keep {
            self.limiter
                .store(Limiter::new(&config.connection).map(Arc::new));
        }
        let own =
            config.connection.connect_timeout.is_some() || config.connection.idle_timeout.is_some();
        let wanted = own.then(|| UpstreamSettings {
            connect_timeout: config
                .connection
                .connect_timeout
                .unwrap_or(settings.connect_timeout),
            pool_idle_timeout: config
                .connection
                .idle_timeout
                .unwrap_or(settings.pool_idle_timeout),
            ..settings.clone()
        });
        if self.settings.load().as_deref() != wanted.as_ref() {
            self.settings.store(wanted.map(Arc::new));
        }
        self.reconcile_checks();
    }

    /// Replaces the endpoint set in place (discovery's fast path; no table rebuild). Endpoints
    /// that stay keep their health and counters.
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        let config = (*self.pool.load().config).clone();
        if config.endpoints != endpoints || self.pool.load().endpoints.len() != endpoints.len() {
            self.replace_pool(
                Backend {
                    endpoints: endpoints.clone(),
                    ..config
                },
                endpoints,
            );
            self.reconcile_checks();
        }
    }

    fn replace_pool(&self, config: Backend, endpoints: Vec<Endpoint>) {
        let current = self.pool.load();
        let states: Vec<Arc<EndpointState>> = endpoints
            .iter()
            .map(|e| {
                current
                    .endpoints
                    .iter()
                    .find(|s| s.endpoint == *e)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(e.clone())))
            })
            .collect();
        let same_set = current.endpoints.len() == states.len()
            && current
                .endpoints
                .iter()
                .zip(&states)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let selector = if same_set && current.config.load_balancer == config.load_balancer {
            current.selector.clone()
        } else if let Some(factory) = &self.custom_selector {
            factory.build(&endpoints).into()
        } else {
            balance::build(&config.load_balancer, &endpoints).into()
        };
        let hashes = config.load_balancer.hashes();
        self.pool.store(Arc::new(Pool {
            endpoints: states,
            tiered: tiered(&endpoints),
            selector,
            sticky: sticky_index(&config, &endpoints),
            config: Arc::new(config),
        }));
        self.hashes.store(hashes, Ordering::Release);
    }

    /// Starts and stops probe tasks so that exactly the current endpoints are probed with the
    /// current settings.
    fn reconcile_checks(&self) {
        let pool = self.pool.load();
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = pool
            .config
            .active_health_check
            .clone()
            .map(|c| (c, pool.config.tls.clone(), pool.config.protocol));
        if checks.config != wanted {
            for (_, stop) in checks.running.drain() {
                stop.cancel();
            }
            checks.config = wanted.clone();
        }
        let Some((check, tls, protocol)) = wanted else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        checks.running.retain(|addr, stop| {
            let keep = pool.endpoints.iter().any(|e| &e.endpoint.address == addr);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for ep in &pool.endpoints {
            if checks.running.contains_key(&ep.endpoint.address) {
                continue;
            }
            let stop = CancellationToken::new();
            checks
                .running
                .insert(ep.endpoint.address.clone(), stop.clone());
            runtime.spawn(health::run(
                ep.clone(),
                check.clone(),
                self.clock,
                health::Prober::new(
                    self.custom_check.clone(),
                    tls.clone().map(|tls| (tls, protocol)),
                    self.tls_probes.clone(),
                ),
                stop,
                pool.config.label.clone(),
            ));
        }
    }

    pub(super) fn stop_checks(&self) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        for (_, stop) in checks.running.drain() {
            stop.cancel();
        }
    }

    /// Whether a request would find an endpoint ([`Self::pick`] would not fail): one is
    /// known, healthy and not ejected.
    pub fn has_available_endpoint(&self) -> bool {
        let pool = self.pool.load();
        let now = self.clock.now_ms();
        pool.endpoints.iter().any(|e| e.available(now))
    }

    /// The endpoint for a request: a usable one (healthy, not ejected, admitted by slow start).
    pub fn pick(&self, ctx: &PickContext) -> Result<Arc<EndpointState>, NoEndpoint> {
        let pool = self.pool.load();
        if pool.endpoints.is_empty() {
            return Err(NoEndpoint::Empty);
        }
        let now = self.clock.lazy();
        let slow_start = pool.config.slow_start;
        // SRV priorities: only the lowest tier that has an available endpoint takes requests.
        let tier = if pool.tiered {
            pool.endpoints
                .iter()
                .filter(|e| e.available_at(&now))
                .map(|e| e.endpoint.priority)
                .min()
        } else {
            None
        };
        let in_tier = |i: usize| tier.is_none_or(|t| pool.endpoints[i].endpoint.priority == t);
        let admitted = |i: usize| {
            let e = &pool.endpoints[i];
            e.available_at(&now)
                && in_tier(i)
                && slow_start.is_none_or(|w| {
                    let share = e.slow_start_share(now.get(), w);
                    share >= 1.0 || (balance::random::random_u64() % 1000) < (share * 1000.0) as u64
                })
        };
        let available = |i: usize| pool.endpoints[i].available_at(&now) && in_tier(i);
        // If slow start happened to turn every candidate away, fall back to availability alone.
        let i = pool
            .selector
            .pick(&pool.endpoints, ctx, &admitted)
            .or_else(|| pool.selector.pick(&pool.endpoints, ctx, &available))
            .ok_or(NoEndpoint::NoneHealthy)?;
        Ok(pool.endpoints[i].clone())
    }

    /// The endpoint with session id `id` when it is in the set and available (healthy, not
    /// ejected; slow start does not turn a session away), else [`Self::pick`]'s. The flag says
    /// whether it is the session's endpoint.
    pub fn pick_session(
        &self,
        ctx: &PickContext,
        id: Option<u64>,
    ) -> Result<(Arc<EndpointState>, bool), NoEndpoint> {
        if let Some(id) = id {
            let pool = self.pool.load();
            if let Some(i) = pool.sticky.as_ref().and_then(|s| s.find(id))
                && pool.endpoints[i].available_at(&self.clock.lazy())
            {
                return Ok((pool.endpoints[i].clone(), true));
            }
        }
        self.pick(ctx).map(|e| (e, false))
    }

    /// Whether the session cookie in `headers` names an endpoint of this backend that is in
    /// the set and available (a split between backends keeps such a request here).
    pub fn holds_session(&self, headers: &http::HeaderMap) -> bool {
        let pool = self.pool.load();
        let (Some(cookie), Some(sticky)) = (&pool.config.session_persistence, &pool.sticky) else {
            return false;
        };
        cookie
            .value_in(headers)
            .and_then(balance::sticky::parse_cookie)
            .and_then(|id| sticky.find(id))
            .is_some_and(|i| pool.endpoints[i].available_at(&self.clock.lazy()))
    }

    /// The balancing policy (for computing a request's hash key).
    pub fn load_balancing(&self) -> LoadBalancing {
        self.pool.load().config.load_balancer.clone()
    }

    /// The balancing policy when it hashes requests (`None` otherwise, without reading the
    /// pool: a request to a backend that does not hash needs no key).
    pub fn hashing(&self) -> Option<LoadBalancing> {
        if !self.hashes.load(Ordering::Acquire) {
            return None;
        }
        Some(self.load_balancing())
    }

    /// What judges and records attempts' outcomes: the backend's passive health check, read
    /// once for both (each read of the pool is an `arc_swap` load, ~90 instructions).
    pub fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            state: self,
            pool: self.pool.load(),
        }
    }

    /// Whether an upstream status counts as a failure for passive health and the breaker.
    pub fn is_failure_status(&self, code: u16) -> bool {
        self.outcomes().is_failure_status(code)
    }

    /// Records the outcome of one attempt on `endpoint` (see [`Outcomes::record`]).
    pub fn record(&self, endpoint: &EndpointState, success: bool) -> Option<Duration> {
        self.outcomes().record(endpoint, success)
    }

    /// The circuit breaker, if configured.
    pub fn breaker(&self) -> Option<Arc<Breaker>> {
        self.breaker.load_full()
    }

    /// The connection limiter, if configured.
    pub fn limiter(&self) -> Option<Arc<Limiter>> {
        self.limiter.load_full()
    }

    /// This backend's own connection settings, when they differ from the gateway's.
    pub fn settings(&self) -> Option<Arc<UpstreamSettings>> {
        self.settings.load_full()
    }

    /// Where this backend's endpoints are discovered (a Service port, a DNS query), if they are.
    pub(super) fn discovery_key(&self) -> Option<DiscoveryKey> {
        self.pool.load().config.discovery_key()
    }

    /// The current endpoints' live state.
    pub fn endpoint_states(&self) -> Vec<Arc<EndpointState>> {
        self.pool.load().endpoints.clone()
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.pool
            .load()
            .endpoints
            .iter()
            .map(|e| e.endpoint.clone())
            .collect()
    }

    /// Whether the backend still has an endpoint at `address` (a connection to one it lost
    /// drains).
    pub fn has_endpoint(&self, address: &str) -> bool {
        self.pool
            .load()
            .endpoints
            .iter()
            .any(|e| &*e.endpoint.address == address)
    }

    /// The connect timeout to its endpoints: its own `connection.connectTimeout`, else `default`.
    pub fn connect_timeout(&self, default: Duration) -> Duration {
        self.settings
            .load()
            .as_ref()
            .map_or(default, |s| s.connect_timeout)
    }

    /// Endpoints that take new requests now, and all of them.
    pub fn counts(&self) -> (usize, usize) {
        let pool = self.pool.load();
        let now = self.clock.now_ms();
        (
            pool.endpoints.iter().filter(|e| e.available(now)).count(),
            pool.endpoints.len(),
        )
    }
}

/// Ejection, the breaker and slow start through a backend's state, on paused time: what the
/// request path sees, without sockets or waiting (`tests/resilience.rs` keeps one wall-clock
/// run of each through the binary).
/// A backend's passive health check as it was when an attempt's outcome came: see
/// [`BackendState::outcomes`]. Short-lived (it holds the pool's `arc_swap` guard).
pub struct Outcomes<'a> {
    state: &'a BackendState,
    pool: arc_swap::Guard<Arc<Pool>>,
}

impl Outcomes<'_> {
    /// The backend's clock (its breaker's).
    pub fn clock(&self) -> &Clock {
        self.state.clock()
    }

    /// Whether an upstream status counts as a failure for passive health and the breaker.
    pub fn is_failure_status(&self, code: u16) -> bool {
        match &self.pool.config.passive_health_check {
            Some(p) => p
                .failure_statuses
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&code)),
            None => (500..600).contains(&code),
        }
    }

    /// Records the outcome of one attempt on `endpoint`; may eject it (within the backend's
    /// ejection budget). Returns the ejection's length when it ejected.
    pub fn record(&self, endpoint: &EndpointState, success: bool) -> Option<Duration> {
        let pool = &self.pool;
        let policy = pool.config.passive_health_check.as_ref();
        if success {
            // Only a passive health check needs the time (a clock read per request otherwise).
            let now = policy.map_or(0, |_| self.state.clock.now_ms());
            endpoint.record_success(now, policy);
            return None;
        }
        let now = self.state.clock.now_ms();
        if !endpoint.record_failure(policy) {
            return None;
        }
        let policy = policy?;
        let n = pool.endpoints.len();
        let ejected = pool.endpoints.iter().filter(|e| e.ejected(now)).count();
        let allowed = if policy.max_ejection_percent == 0 {
            0
        } else {
            (n * policy.max_ejection_percent as usize / 100).max(1)
        };
        if endpoint.ejected(now) || ejected >= allowed {
            return None;
        }
        let length = endpoint.eject(now, policy);
        tracing::warn!(
            backend = %pool.config.label,
            endpoint = %endpoint.endpoint.address,
            seconds = length.as_secs_f64(),
            "endpoint ejected after consecutive failures"
        );
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{CircuitBreaker, Kind, PassiveHealthCheck, RoutingTable, UpstreamProtocol};
    use crate::proxy::upstream::{Admission, Registry, UpstreamSettings};

    /// What is stored is what is read, set or not, and the flag follows it both ways.
    #[test]
    fn rarely_reads_what_was_stored() {
        let r = Rarely::<u32>::default();
        assert_eq!(r.load_full(), None);
        r.store(Some(Arc::new(7)));
        assert_eq!(r.load_full().as_deref(), Some(&7));
        assert_eq!(r.load().as_deref(), Some(&7));
        r.store(Some(Arc::new(8)));
        assert_eq!(r.load_full().as_deref(), Some(&8));
        r.store(None);
        assert_eq!(r.load_full(), None);
        assert!(r.load().is_none());
    }

    /// One backend's state, and the registry that keeps it.
    fn backend(endpoints: usize, edit: impl FnOnce(&mut Backend)) -> (Registry, Arc<BackendState>) {
        let mut b = Backend::new(
            ObjectRef::new(Kind::Backend, "shop", "api"),
            UpstreamProtocol::Http1,
            (1..=endpoints)
                .map(|i| Endpoint::new(&format!("10.0.0.{i}:80")))
                .collect(),
        );
        edit(&mut b);
        let table = RoutingTable::new(Vec::new(), vec![b], Vec::new());
        let registry = Registry::new(UpstreamSettings::default());
        let state = registry.link(&table).remove(0);
        (registry, state)
    }

    fn ctx() -> PickContext {
        PickContext {
            client: "127.0.0.1".parse().unwrap(),
            hash: None,
        }
    }

    fn picks(state: &BackendState, n: usize) -> HashMap<Arc<str>, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            let e = state.pick(&ctx()).expect("an endpoint");
            *seen.entry(e.endpoint.address.clone()).or_default() += 1;
        }
        seen
    }

    /// A request's hash key is asked for only while the balancer hashes, and the flag follows
    /// a reconfiguration both ways.
    #[test]
    fn hashing_follows_the_balancer() {
        let (_registry, state) = backend(2, |_| {});
        assert_eq!(state.hashing(), None);
        let mut config = (*state.pool.load().config).clone();
        config.load_balancer = LoadBalancing::IpHash;
        state.configure(&config, &UpstreamSettings::default());
        assert_eq!(state.hashing(), Some(LoadBalancing::IpHash));
        config.load_balancer = LoadBalancing::LeastRequest;
        state.configure(&config, &UpstreamSettings::default());
        assert_eq!(state.hashing(), None);
    }

    /// The session's endpoint while it is there and available; else the balancer's pick.
    #[tokio::test(start_paused = true)]
    async fn a_session_sticks_to_its_endpoint_until_it_is_gone_or_unavailable() {
        use crate::proxy::upstream::balance::sticky::session_id;
        let (_registry, state) = backend(3, |b| {
            b.session_persistence = Some(Arc::new(crate::model::SessionCookie::new("s")));
            b.passive_health_check = Some(PassiveHealthCheck {
                consecutive_failures: 1,
                ejection_time: Duration::from_secs(10),
                max_ejection_percent: 100,
                failure_statuses: vec![(500, 599)],
            });
        });
        let id = session_id("10.0.0.2:80");
        for _ in 0..20 {
            let (e, stuck) = state.pick_session(&ctx(), Some(id)).unwrap();
            assert!(stuck && &*e.endpoint.address == "10.0.0.2:80");
        }
        // No cookie, or one no endpoint has: balanced as usual (round robin here).
        for unknown in [None, Some(session_id("10.0.0.9:80")), Some(7)] {
            let seen: std::collections::HashSet<_> = (0..6)
                .map(|_| state.pick_session(&ctx(), unknown).unwrap())
                .inspect(|(_, stuck)| assert!(!stuck))
                .map(|(e, _)| e.endpoint.address.clone())
                .collect();
            assert_eq!(seen.len(), 3, "{unknown:?}");
        }
        // Ejected: another endpoint, until it is back.
        let two = state.endpoint_states()[1].clone();
        state.record(&two, false);
        let (e, stuck) = state.pick_session(&ctx(), Some(id)).unwrap();
        assert!(!stuck && &*e.endpoint.address != "10.0.0.2:80");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(state.pick_session(&ctx(), Some(id)).unwrap().1);
        // Removed from the set: another endpoint.
        state.set_endpoints(vec![
            Endpoint::new("10.0.0.1:80"),
            Endpoint::new("10.0.0.3:80"),
        ]);
        let (e, stuck) = state.pick_session(&ctx(), Some(id)).unwrap();
        assert!(!stuck && &*e.endpoint.address != "10.0.0.2:80");
        let three = session_id("10.0.0.3:80");
        assert_eq!(
            &*state
                .pick_session(&ctx(), Some(three))
                .unwrap()
                .0
                .endpoint
                .address,
            "10.0.0.3:80"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_endpoint_gets_no_requests_until_its_ejection_ends() {
        let (_registry, state) = backend(2, |b| {
            b.passive_health_check = Some(PassiveHealthCheck {
                consecutive_failures: 3,
                ejection_time: Duration::from_secs(30),
                max_ejection_percent: 50,
                failure_statuses: vec![(500, 599)],
            })
        });
        let bad = state.endpoint_states()[0].clone();
        assert_eq!(state.record(&bad, false), None);
        assert_eq!(state.record(&bad, false), None);
        assert_eq!(state.record(&bad, false), Some(Duration::from_secs(30)));
        assert_eq!(state.counts(), (1, 2));
        assert!(!picks(&state, 50).contains_key(&bad.endpoint.address));

        // The budget (50% of 2) allows no second ejection.
        let other = state.endpoint_states()[1].clone();
        for _ in 0..3 {
            assert_eq!(state.record(&other, false), None);
        }
        assert_eq!(state.counts(), (1, 2));

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(state.counts(), (2, 2), "back after its ejection time");
        assert_eq!(picks(&state, 50).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_sheds_then_closes_after_a_good_trial() {
        let (_registry, state) = backend(1, |b| {
            b.circuit_breaker = Some(CircuitBreaker {
                failure_ratio: 0.5,
                min_requests: 4,
                window: Duration::from_secs(10),
                open_duration: Duration::from_secs(5),
                half_open_requests: 1,
            })
        });
        let breaker = state.breaker().expect("configured");
        for _ in 0..4 {
            let a = breaker.admit(state.clock()).expect("closed");
            breaker.record(state.clock(), a, false);
        }
        assert_eq!(breaker.state_name(state.clock()), "open");
        assert!(breaker.admit(state.clock()).is_err(), "sheds while open");

        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = breaker
            .admit(state.clock())
            .expect("a trial when half-open");
        assert_eq!(trial, Admission::Trial);
        assert!(breaker.admit(state.clock()).is_err(), "one trial at a time");
        assert_eq!(breaker.record(state.clock(), trial, true), Some(false));
        assert_eq!(breaker.state_name(state.clock()), "closed");
    }

    /// SRV priorities: the lowest tier takes every request while one of its endpoints is
    /// available; when all are ejected the next tier does, and it fails back after the ejection.
    #[tokio::test(start_paused = true)]
    async fn the_lowest_priority_tier_with_an_available_endpoint_takes_the_requests() {
        let (_registry, state) = backend(3, |b| {
            b.endpoints[2].priority = 1;
            b.endpoints[0].priority = 0;
            b.endpoints[1].priority = 0;
            b.passive_health_check = Some(PassiveHealthCheck {
                consecutive_failures: 1,
                ejection_time: Duration::from_secs(10),
                max_ejection_percent: 100,
                failure_statuses: vec![(500, 599)],
            });
        });
        let seen = picks(&state, 100);
        assert_eq!(seen.len(), 2, "only tier 0: {seen:?}");
        assert!(!seen.contains_key("10.0.0.3:80"));
        for e in &state.endpoint_states()[..2] {
            state.record(e, false);
        }
        let seen = picks(&state, 20);
        let only: Vec<&str> = seen.keys().map(|k| &**k).collect();
        assert_eq!(only, ["10.0.0.3:80"], "tier 1 takes over");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !picks(&state, 50).contains_key("10.0.0.3:80"),
            "back to tier 0"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_back_from_ejection_ramps_up_under_slow_start() {
        let (_registry, state) = backend(2, |b| {
            b.slow_start = Some(Duration::from_secs(10));
            b.passive_health_check = Some(PassiveHealthCheck {
                consecutive_failures: 1,
                ejection_time: Duration::from_secs(5),
                max_ejection_percent: 50,
                failure_statuses: vec![(500, 599)],
            });
        });
        let back = state.endpoint_states()[0].clone();
        state.record(&back, false);
        tokio::time::advance(Duration::from_secs(5)).await;
        // Just back: about a tenth of its share.
        let early = picks(&state, 2000)[&back.endpoint.address];
        assert!(
            (50..250).contains(&early),
            "{early} of 2000 just after the ejection"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let late = picks(&state, 2000)[&back.endpoint.address];
        assert!(
            (850..1150).contains(&late),
            "{late} of 2000 after the window"
        );
    }
}
