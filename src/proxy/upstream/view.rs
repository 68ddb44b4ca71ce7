//! The `/backends` view of the live state (served by the admin server).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::backend::BackendState;
use crate::model::LoadBalancing;

impl BackendState {
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
            protocol: pool.config.protocol,
            discovery: None,
            algorithm: match &pool.config.load_balancer {
                LoadBalancing::RoundRobin => "RoundRobin",
                LoadBalancing::WeightedRoundRobin => "WeightedRoundRobin",
                LoadBalancing::LeastRequest => "LeastRequest",
                LoadBalancing::Random => "Random",
                LoadBalancing::ConsistentHash(_) => "ConsistentHash",
                LoadBalancing::IpHash => "IPHash",
            },
            session_cookie: pool
                .config
                .session_persistence
                .as_ref()
                .map(|s| s.name.clone()),
            circuit_breaker: self.breaker().map(|b| b.state_name(&self.clock)),
            requests_in_flight: in_flight,
            requests_pending: pending,
            endpoints: pool
                .endpoints
                .iter()
                .map(|e| EndpointView {
                    address: e.endpoint.address.clone(),
                    weight: e.endpoint.weight,
                    priority: e.endpoint.priority,
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

impl BackendView {
    /// This view with discovery's note on the endpoints.
    pub(super) fn with_discovery_note(self, note: Option<String>) -> Self {
        Self {
            discovery: note,
            ..self
        }
    }
}

/// `/backends`: one backend.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendView {
    pub(super) backend: Arc<str>,
    /// `HTTP1`, `H2C`, `HTTP2`, `TCP` or `UDP`.
    protocol: crate::model::UpstreamProtocol,
    /// What discovery says about how current the endpoints are (DNS: a stale answer, a failing
    /// or empty lookup); absent when there is nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery: Option<String>,
    algorithm: &'static str,
    /// The session cookie's name (`loadBalancer.sessionPersistence`); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_cookie: Option<String>,
    /// `closed`, `open`, `half-open`; absent without a breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<&'static str>,
    /// With connection limits: requests holding a slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_in_flight: Option<u32>,
    /// With connection limits: requests waiting for a slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_pending: Option<u32>,
    endpoints: Vec<EndpointView>,
}

/// `/backends`: one endpoint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView {
    address: Arc<str>,
    weight: u32,
    /// SRV priority tier (absent: 0).
    #[serde(skip_serializing_if = "is_zero")]
    priority: u16,
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

fn is_zero(n: &u16) -> bool {
    *n == 0
}
