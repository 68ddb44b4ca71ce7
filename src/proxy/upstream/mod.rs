//! Runtime state of backends: endpoint sets and their health, balancers, circuit breakers,
//! connection limits, retry budgets, and the upstream HTTP clients.
//!
//! State is keyed by backend identity and outlives routing tables: a reload links the new table
//! to the same entries, so health, ejections, breaker state and counters survive it. An entry is
//! updated in place only where its configuration changed.

mod breaker;
mod budget;
mod endpoint;
mod health;
mod limits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use breaker::{Admission, Breaker, Rejected};
pub use budget::RetryBudget;
pub use endpoint::{Clock, EndpointState, InFlight};
pub use limits::{Limiter, Overloaded};

use super::balance::{self, PickContext, Selector};
use super::body::RequestBody;
use crate::model::{
    ActiveHealthCheck, Backend, Discovery, Endpoint, LoadBalancing, ObjectRef, RoutingTable,
    ServiceKey,
};

/// One endpoint set with the selector built for it and the policy it runs under.
struct Pool {
    endpoints: Vec<Arc<EndpointState>>,
    selector: Arc<dyn Selector>,
    config: Arc<Backend>,
}

/// Active probes running for a backend: the settings, and a stop switch per endpoint.
#[derive(Default)]
struct Checks {
    config: Option<ActiveHealthCheck>,
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

/// One backend's live state.
pub struct BackendState {
    /// The backend's identity.
    pub id: ObjectRef,
    clock: Clock,
    pool: ArcSwap<Pool>,
    breaker: ArcSwapOption<Breaker>,
    limiter: ArcSwapOption<Limiter>,
    clients: ArcSwapOption<Clients>,
    /// Retries towards this backend draw on this budget.
    pub budget: RetryBudget,
    checks: Mutex<Checks>,
}

impl BackendState {
    fn new(config: &Backend, clock: Clock) -> Self {
        let pool = Pool {
            endpoints: config
                .endpoints
                .iter()
                .cloned()
                .map(EndpointState::new)
                .map(Arc::new)
                .collect(),
            selector: balance::build(&config.load_balancer, &config.endpoints).into(),
            config: Arc::new(config.clone()),
        };
        Self {
            id: config.id.clone(),
            clock,
            pool: ArcSwap::from_pointee(pool),
            breaker: ArcSwapOption::empty(),
            limiter: ArcSwapOption::empty(),
            clients: ArcSwapOption::empty(),
            budget: RetryBudget::default(),
            checks: Mutex::new(Checks::default()),
        }
    }

    /// The clock outcomes are timed with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Applies a (possibly) changed configuration, keeping whatever it does not change.
    fn configure(&self, config: &Backend, settings: &UpstreamSettings) {
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
        let own_clients =
            config.connection.connect_timeout.is_some() || config.connection.idle_timeout.is_some();
        let clients = self.clients.load();
        let wanted = own_clients.then(|| UpstreamSettings {
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
        if clients.as_ref().map(|c| &c.settings) != wanted.as_ref() {
            self.clients
                .store(wanted.map(|s| Arc::new(Clients::new(&s))));
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
        } else {
            balance::build(&config.load_balancer, &endpoints).into()
        };
        self.pool.store(Arc::new(Pool {
            endpoints: states,
            selector,
            config: Arc::new(config),
        }));
    }

    /// Starts and stops probe tasks so that exactly the current endpoints are probed with the
    /// current settings.
    fn reconcile_checks(&self) {
        let pool = self.pool.load();
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = pool.config.active_health_check.clone();
        if checks.config != wanted {
            for (_, stop) in checks.running.drain() {
                stop.cancel();
            }
            checks.config = wanted.clone();
        }
        let Some(check) = wanted else { return };
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
                health::probe_client(),
                stop,
                pool.config.label.clone(),
            ));
        }
    }

    fn stop_checks(&self) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        for (_, stop) in checks.running.drain() {
            stop.cancel();
        }
    }

    /// The endpoint for a request: a usable one (healthy, not ejected, admitted by slow start).
    pub fn pick(&self, ctx: &PickContext) -> Result<Arc<EndpointState>, NoEndpoint> {
        let pool = self.pool.load();
        if pool.endpoints.is_empty() {
            return Err(NoEndpoint::Empty);
        }
        let now = self.clock.now_ms();
        let slow_start = pool.config.slow_start;
        let admitted = |i: usize| {
            let e = &pool.endpoints[i];
            e.available(now)
                && slow_start.is_none_or(|w| {
                    let share = e.slow_start_share(now, w);
                    share >= 1.0 || (balance::random::random_u64() % 1000) < (share * 1000.0) as u64
                })
        };
        let available = |i: usize| pool.endpoints[i].available(now);
        // If slow start happened to turn every candidate away, fall back to availability alone.
        let i = pool
            .selector
            .pick(&pool.endpoints, ctx, &admitted)
            .or_else(|| pool.selector.pick(&pool.endpoints, ctx, &available))
            .ok_or(NoEndpoint::NoneHealthy)?;
        Ok(pool.endpoints[i].clone())
    }

    /// The balancing policy (for computing a request's hash key).
    pub fn load_balancing(&self) -> LoadBalancing {
        self.pool.load().config.load_balancer.clone()
    }

    /// Whether an upstream status counts as a failure for passive health and the breaker.
    pub fn is_failure_status(&self, code: u16) -> bool {
        match &self.pool.load().config.passive_health_check {
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
        let pool = self.pool.load();
        let policy = pool.config.passive_health_check.as_ref();
        let now = self.clock.now_ms();
        if success {
            endpoint.record_success(now, policy);
            return None;
        }
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

    /// The circuit breaker, if configured.
    pub fn breaker(&self) -> Option<Arc<Breaker>> {
        self.breaker.load_full()
    }

    /// The connection limiter, if configured.
    pub fn limiter(&self) -> Option<Arc<Limiter>> {
        self.limiter.load_full()
    }

    /// This backend's own clients, when its connection settings differ from the gateway's.
    pub fn clients(&self) -> Option<Arc<Clients>> {
        self.clients.load_full()
    }

    /// Closes idle upstream connections that outlived their idle timeout or that the upstream
    /// closed.
    fn reap_idle(&self, default: Duration) {
        let max_idle = self.clients().map_or(default, |c| c.native.idle_timeout);
        for e in &self.pool.load().endpoints {
            e.idle.reap(max_idle);
        }
    }

    /// The Service port this backend's endpoints are discovered from, if any.
    fn service(&self) -> Option<ServiceKey> {
        self.pool.load().config.service.clone()
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

    /// Endpoints that take new requests now, and all of them.
    pub fn counts(&self) -> (usize, usize) {
        let pool = self.pool.load();
        let now = self.clock.now_ms();
        (
            pool.endpoints.iter().filter(|e| e.available(now)).count(),
            pool.endpoints.len(),
        )
    }

    /// The `/backends` view of this backend.
    pub fn view(&self) -> BackendView {
        let pool = self.pool.load();
        let now = self.clock.now_ms();
        let wall = |ms: u64| {
            let at = SystemTime::now() + Duration::from_millis(ms.saturating_sub(now));
            jiff::Timestamp::try_from(at)
                .map(|t| format!("{t:.0}"))
                .unwrap_or_default()
        };
        let (in_flight, pending) = self.limiter().map_or((None, None), |l| {
            let (a, b) = l.usage();
            (Some(a), Some(b))
        });
        BackendView {
            backend: pool.config.label.clone(),
            algorithm: match &pool.config.load_balancer {
                LoadBalancing::RoundRobin => "RoundRobin",
                LoadBalancing::WeightedRoundRobin => "WeightedRoundRobin",
                LoadBalancing::LeastRequest => "LeastRequest",
                LoadBalancing::Random => "Random",
                LoadBalancing::ConsistentHash(_) => "ConsistentHash",
                LoadBalancing::IpHash => "IPHash",
            },
            circuit_breaker: self.breaker().map(|b| b.state_name(&self.clock)),
            requests_in_flight: in_flight,
            requests_pending: pending,
            endpoints: pool
                .endpoints
                .iter()
                .map(|e| EndpointView_ {
                    address: e.endpoint.address.clone(),
                    weight: e.endpoint.weight,
                    ready: e.available(now),
                    active_healthy: pool
                        .config
                        .active_health_check
                        .as_ref()
                        .map(|_| e.active_healthy()),
                    ejected_until: e.ejected(now).then(|| wall(e.ejected_until())),
                    consecutive_failures: e.consecutive_failures(),
                    in_flight: e.in_flight(),
                    slow_start_share: pool.config.slow_start.map(|w| e.slow_start_share(now, w)),
                })
                .collect(),
        }
    }
}

/// `/backends`: one backend.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendView {
    backend: Arc<str>,
    algorithm: &'static str,
    /// `closed`, `open`, `half-open`; absent without a breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<&'static str>,
    /// With connection limits: requests holding a slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_in_flight: Option<u32>,
    /// With connection limits: requests waiting for a slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_pending: Option<u32>,
    endpoints: Vec<EndpointView_>,
}

/// `/backends`: one endpoint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView_ {
    address: Arc<str>,
    weight: u32,
    /// Takes new requests now.
    ready: bool,
    /// The active checks' verdict; absent without active checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    active_healthy: Option<bool>,
    /// End of the current passive ejection (RFC 3339); absent when not ejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    ejected_until: Option<String>,
    consecutive_failures: u32,
    in_flight: u32,
    /// With slow start: the share it currently gets (0.1 to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_start_share: Option<f64>,
}

type BackendMap = Arc<Mutex<HashMap<ObjectRef, Arc<BackendState>>>>;

/// Backend states by identity.
pub struct Registry {
    backends: BackendMap,
    clock: Clock,
    settings: UpstreamSettings,
    discovery: Arc<Discovery>,
}

impl Registry {
    /// An empty registry; `settings` are the defaults for backends that set none.
    pub fn new(settings: UpstreamSettings) -> Self {
        let backends: BackendMap = Arc::default();
        let discovery = Arc::new(Discovery::default());
        // Discovery's fast path: a Service port's new endpoint set goes straight to the
        // backends that use it (their pools are rebuilt in place, keeping endpoint state);
        // no table is recompiled.
        let weak = Arc::downgrade(&backends);
        discovery.listen(Box::new(move |key: &ServiceKey, ready: &[Endpoint]| {
            let Some(map) = weak.upgrade() else {
                return;
            };
            let states: Vec<Arc<BackendState>> = map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|s| s.service().as_ref() == Some(key))
                .cloned()
                .collect();
            for state in states {
                state.set_endpoints(ready.to_vec());
            }
        }));
        Self {
            backends,
            clock: Clock::new(),
            settings,
            discovery,
        }
    }

    /// Where discovered endpoints are written (Kubernetes mode's EndpointSlice watcher).
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// The states for `table.backends`, in the same order: existing entries are reused and
    /// updated where their configuration changed, new ones created, and entries no table uses
    /// are dropped (their probes stopped).
    pub fn link(&self, table: &RoutingTable) -> Vec<Arc<BackendState>> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let linked: Vec<Arc<BackendState>> = table
            .backends
            .iter()
            .map(|b| {
                // A Service-backed backend's endpoints are the discovered ones right now.
                let discovered;
                let b = match &b.service {
                    Some(key) => {
                        discovered = Backend {
                            endpoints: self.discovery.ready(key),
                            ..b.clone()
                        };
                        &discovered
                    }
                    None => b,
                };
                let state = map
                    .entry(b.id.clone())
                    .or_insert_with(|| Arc::new(BackendState::new(b, self.clock)))
                    .clone();
                state.configure(b, &self.settings);
                state
            })
            .collect();
        map.retain(|id, state| {
            let keep = table.backends.iter().any(|b| &b.id == id);
            if !keep {
                state.stop_checks();
            }
            keep
        });
        linked
    }

    /// The state of one backend, if a table uses it.
    pub fn get(&self, id: &ObjectRef) -> Option<Arc<BackendState>> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every backend's state (a snapshot: the map is not held while they are used).
    fn states(&self) -> Vec<Arc<BackendState>> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Closes expired and dead idle upstream connections of every backend.
    pub fn reap_idle(&self) {
        for s in self.states() {
            s.reap_idle(self.settings.pool_idle_timeout);
        }
    }

    /// Every backend's `/backends` view, sorted by name.
    pub fn views(&self) -> Vec<BackendView> {
        let mut views: Vec<BackendView> = self.states().iter().map(|s| s.view()).collect();
        views.sort_by(|a, b| a.backend.cmp(&b.backend));
        views
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for state in self
            .backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            state.stop_checks();
        }
    }
}

/// Settings of the upstream clients.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSettings {
    /// Limit of one TCP connect.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
        }
    }
}

/// The pooled clients, one per upstream protocol.
pub struct Clients {
    settings: UpstreamSettings,
    /// HTTP/1.1 with keep-alive.
    pub http1: Client<HttpConnector, RequestBody>,
    /// HTTP/2 cleartext, prior knowledge.
    pub h2c: Client<HttpConnector, RequestBody>,
    /// The native HTTP/1.1 client's settings (its pools live on the endpoints).
    pub native: crate::proxy::h1::ClientSettings,
}

impl Clients {
    /// Builds both clients.
    pub fn new(s: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(s.connect_timeout));
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(s.pool_idle_timeout)
            .pool_max_idle_per_host(s.pool_max_idle_per_host);
        let http1 = builder.build(connector.clone());
        builder.http2_only(true);
        let h2c = builder.build(connector);
        Self {
            settings: s.clone(),
            http1,
            h2c,
            native: crate::proxy::h1::ClientSettings {
                connect_timeout: s.connect_timeout,
                idle_timeout: s.pool_idle_timeout,
                max_idle: s.pool_max_idle_per_host,
            },
        }
    }
}

#[cfg(test)]
mod discovery_tests {
    use super::*;
    use crate::model::{Kind, UpstreamProtocol};

    fn table_with(backend: Backend) -> RoutingTable {
        RoutingTable::new(Vec::new(), vec![backend], Vec::new())
    }

    /// Discovered endpoints reach a Service-backed backend in place, before and after linking.
    #[tokio::test]
    async fn discovered_endpoints_are_pushed_to_the_backends_that_use_them() {
        let registry = Registry::new(UpstreamSettings::default());
        let key = ServiceKey::new("shop", "api", "http");
        registry
            .discovery()
            .set(&key, vec![Endpoint::new("10.0.0.1:80")]);
        let backend = Backend {
            service: Some(key.clone()),
            ..Backend::new(
                ObjectRef::new(Kind::Backend, "shop", "api"),
                UpstreamProtocol::Http1,
                Vec::new(),
            )
        };
        let linked = registry.link(&table_with(backend.clone()));
        assert_eq!(linked[0].endpoints(), vec![Endpoint::new("10.0.0.1:80")]);
        registry.discovery().set(
            &key,
            vec![Endpoint::new("10.0.0.1:80"), Endpoint::new("10.0.0.2:80")],
        );
        assert_eq!(linked[0].endpoints().len(), 2, "pushed without a new table");
        // A relink with the same table keeps the discovered set.
        let relinked = registry.link(&table_with(backend));
        assert!(Arc::ptr_eq(&linked[0], &relinked[0]));
        assert_eq!(relinked[0].endpoints().len(), 2);
        registry.discovery().set(&key, Vec::new());
        assert!(relinked[0].endpoints().is_empty());
    }
}
