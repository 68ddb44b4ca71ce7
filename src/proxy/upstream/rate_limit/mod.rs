//! Rate-limit state, keyed by stable ids (policy and limit name) so that a reload keeps every
//! bucket: like backends, a new table is linked to the entries it still uses, and an entry is
//! made anew only when its limit's settings changed.
//!
//! Local limits count here, in a bounded [`Store`] per limit; Global limits count in Redis (the
//! request layer calls it) and keep only their metrics here.

mod algorithm;
mod concurrency;
mod store;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

pub use algorithm::{Algorithm, State, Verdict};
pub use concurrency::{ConcurrencyState, Slot};
pub use store::{Store, WAYS, nonzero};

use crate::model::{Limit, ObjectRef, RateLimitPolicy, RoutingTable, Scope};
use crate::telemetry::metrics::{LimitLabels, RateLimitLabels};

/// Where rate-limit state counts what it does.
#[derive(Clone, Default)]
pub struct RateLimitMetrics {
    /// Decisions, by policy, limit and result.
    pub decisions: Family<RateLimitLabels, Counter>,
    /// Evictions of active keys from Local stores, by policy and limit.
    pub evictions: Family<LimitLabels, Counter>,
}

/// The `result` label of `tidegate_rate_limit_decisions`.
pub mod result {
    /// The limit let the request through.
    pub const ALLOWED: &str = "allowed";
    /// The limit refused the request.
    pub const LIMITED: &str = "limited";
    /// Redis could not answer; failureMode Open let the request through.
    pub const UNAVAILABLE_ALLOWED: &str = "unavailable_allowed";
    /// Redis could not answer; failureMode Closed refused the request.
    pub const UNAVAILABLE_DENIED: &str = "unavailable_denied";
    /// Every result, for documentation and tests.
    pub const ALL: [&str; 4] = [ALLOWED, LIMITED, UNAVAILABLE_ALLOWED, UNAVAILABLE_DENIED];
}

/// Counters of one limit's decisions, one per result (resolved once, so that counting costs an
/// atomic add).
pub struct Decisions {
    counters: [Counter; 4],
}

impl Decisions {
    /// Counts one decision with `result` (one of [`result::ALL`]).
    pub fn count(&self, result: &str) {
        if let Some(i) = result::ALL.iter().position(|r| *r == result) {
            self.counters[i].inc();
        }
    }
}

/// The decision counters of limit `limit` of policy `policy`.
fn decisions(metrics: &RateLimitMetrics, policy: &Arc<str>, limit: &Arc<str>) -> Decisions {
    let counters = result::ALL.map(|result| {
        metrics
            .decisions
            .get_or_create(&RateLimitLabels {
                policy: policy.clone(),
                limit: limit.clone(),
                result,
            })
            .clone()
    });
    Decisions { counters }
}

/// Nanoseconds on a monotonic clock (tokio's, so that tests can pause it), at least 1.
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

    /// Nanoseconds since the clock started, plus one.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One limit's live state.
pub struct LimitState {
    /// The policy's `namespace/name`.
    pub policy: Arc<str>,
    /// The limit as compiled.
    pub limit: Limit,
    /// Its counting rule.
    pub algorithm: Algorithm,
    /// Local limits: the keys' states.
    pub local: Option<Store>,
    /// Hashes request keys for the local store (random per state: keys cannot be chosen to
    /// collide).
    pub hasher: RandomState,
    /// Decisions, by result.
    pub decisions: Decisions,
    /// `"name";q=<rate>;w=<per>`, this limit's item of the `RateLimit-Policy` header.
    pub policy_item: Box<str>,
    clock: Clock,
}

impl LimitState {
    /// A state for `limit` of policy `policy` (`namespace/name`), counting in `metrics`.
    pub fn new(policy: &Arc<str>, limit: &Limit, metrics: &RateLimitMetrics) -> Self {
        let algorithm = Algorithm::of(limit);
        let labels = LimitLabels {
            policy: policy.clone(),
            limit: limit.name.clone(),
        };
        let local = (limit.scope == Scope::Local).then(|| {
            let evictions = metrics.evictions.get_or_create(&labels).clone();
            Store::new(algorithm, limit.max_keys.unwrap_or(1) as usize, evictions)
        });
        Self {
            policy: policy.clone(),
            limit: limit.clone(),
            algorithm,
            local,
            hasher: RandomState::new(),
            decisions: decisions(metrics, policy, &limit.name),
            policy_item: format!(
                "\"{}\";q={};w={}",
                limit.name,
                limit.rate,
                limit.per.as_secs()
            )
            .into(),
            clock: Clock::new(),
        }
    }

    /// The time local decisions are made at (ns).
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Decides one request of a Local limit for the key hashed to `key`; `None` for a Global
    /// limit.
    pub fn decide_local(&self, key: u64, now: u64) -> Option<Verdict> {
        Some(self.local.as_ref()?.decide(nonzero(key), now))
    }

    /// Takes back a request [`LimitState::decide_local`] let through.
    pub fn refund_local(&self, key: u64, now: u64) {
        if let Some(store) = &self.local {
            store.refund(nonzero(key), now);
        }
    }
}

type LimitId = (ObjectRef, Arc<str>);

/// States policy by policy, limit by limit (what a router holds).
type Linked<S> = Box<[Box<[Arc<S>]>]>;

/// Every limit's state, by policy and limit name.
pub struct RateLimits {
    states: Mutex<HashMap<LimitId, Arc<LimitState>>>,
    concurrency: Mutex<HashMap<LimitId, Arc<ConcurrencyState>>>,
    metrics: RateLimitMetrics,
}

impl RateLimits {
    /// No state yet; what limits do is counted in `metrics`.
    pub fn new(metrics: RateLimitMetrics) -> Self {
        Self {
            states: Mutex::default(),
            concurrency: Mutex::default(),
            metrics,
        }
    }

    /// Every linked limit's state, by policy label (for gauges read at scrape time).
    pub fn states(&self) -> Vec<Arc<LimitState>> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The concurrency states of `table.rate_limits`, policy by policy: an entry whose limit
    /// is unchanged is kept with its counts (requests in flight across a reload still count);
    /// others are made, and dropped ones lose their metric series.
    pub fn link_concurrency(&self, table: &RoutingTable) -> Linked<ConcurrencyState> {
        let (linked, dropped) = relink(
            &self.concurrency,
            table,
            |p| &p.concurrency,
            |l| &l.name,
            |s, l| s.limit == *l,
            |p, l| ConcurrencyState::new(&p.label, l, &self.metrics),
        );
        for (policy, limit) in dropped {
            self.forget_decisions(policy.key().into(), limit);
        }
        linked
    }

    /// The states of `table.rate_limits`, policy by policy and limit by limit: an entry whose
    /// limit is unchanged is kept (with its buckets), others are made; entries no table uses
    /// are dropped with their metric series.
    pub fn link(&self, table: &RoutingTable) -> Linked<LimitState> {
        let (linked, dropped) = relink(
            &self.states,
            table,
            |p| &p.limits,
            |l| &l.name,
            |s, l| s.limit == *l,
            |p, l| LimitState::new(&p.label, l, &self.metrics),
        );
        for (policy, limit) in dropped {
            let policy: Arc<str> = policy.key().into();
            self.forget_decisions(policy.clone(), limit.clone());
            self.metrics
                .evictions
                .remove(&LimitLabels { policy, limit });
        }
        linked
    }

    /// Drops the decision series of one limit no table uses any more.
    fn forget_decisions(&self, policy: Arc<str>, limit: Arc<str>) {
        for result in result::ALL {
            self.metrics.decisions.remove(&RateLimitLabels {
                policy: policy.clone(),
                limit: limit.clone(),
                result,
            });
        }
    }
}

/// Links the states in `states` to the limits `limits_of` each policy of `table` has: a state
/// whose limit is unchanged (`same`) is kept, others are made (`make`). Returns them policy by
/// policy, and the ids of the states no limit uses any more (now dropped).
fn relink<L, S>(
    states: &Mutex<HashMap<LimitId, Arc<S>>>,
    table: &RoutingTable,
    limits_of: impl Fn(&RateLimitPolicy) -> &[L],
    name: impl Fn(&L) -> &Arc<str>,
    same: impl Fn(&S, &L) -> bool,
    make: impl Fn(&RateLimitPolicy, &L) -> S,
) -> (Linked<S>, Vec<LimitId>) {
    let mut states = states.lock().unwrap_or_else(|e| e.into_inner());
    let mut kept: HashMap<LimitId, Arc<S>> = HashMap::new();
    let linked = table
        .rate_limits
        .iter()
        .map(|policy| {
            limits_of(policy)
                .iter()
                .map(|limit| {
                    let id = (policy.id.clone(), name(limit).clone());
                    let state = match states.remove(&id) {
                        Some(s) if same(&s, limit) => s,
                        _ => Arc::new(make(policy, limit)),
                    };
                    kept.insert(id, state.clone());
                    state
                })
                .collect()
        })
        .collect();
    let dropped = states
        .drain()
        .map(|(id, _)| id)
        .filter(|id| !kept.contains_key(id))
        .collect();
    *states = kept;
    (linked, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FailureMode, Kind, LimitKey, RateLimitPolicy};
    use http::StatusCode;
    use std::time::Duration;

    fn table(rate: u32) -> RoutingTable {
        let id = ObjectRef::new(Kind::RateLimitPolicy, "shop", "p");
        RoutingTable::default().with_rate_limits(vec![RateLimitPolicy {
            label: id.key().into(),
            id,
            limits: vec![Limit {
                name: "per-client".into(),
                key: LimitKey::default(),
                algorithm: crate::model::Algorithm::TokenBucket { burst: 1 },
                rate,
                per: Duration::from_secs(1),
                scope: Scope::Local,
                max_keys: Some(10),
                exempt: Vec::new(),
            }],
            concurrency: Vec::new(),
            failure_mode: FailureMode::Open,
            status: StatusCode::TOO_MANY_REQUESTS,
            created: None,
        }])
    }

    #[test]
    fn a_reload_keeps_the_buckets_of_unchanged_limits() {
        let limits = RateLimits::new(RateLimitMetrics::default());
        let first = limits.link(&table(1));
        let s = &first[0][0];
        let now = s.now();
        assert!(s.decide_local(7, now).unwrap().allowed);
        let again = limits.link(&table(1));
        assert!(Arc::ptr_eq(&first[0][0], &again[0][0]));
        assert!(!again[0][0].decide_local(7, now).unwrap().allowed);
        // A changed rate starts afresh.
        let changed = limits.link(&table(2));
        assert!(!Arc::ptr_eq(&first[0][0], &changed[0][0]));
        assert!(changed[0][0].decide_local(7, now).unwrap().allowed);
    }

    #[test]
    fn dropped_limits_lose_their_metric_series() {
        let metrics = RateLimitMetrics::default();
        let family = metrics.decisions.clone();
        let limits = RateLimits::new(metrics);
        let linked = limits.link(&table(1));
        linked[0][0].decisions.count(result::ALLOWED);
        let labels = RateLimitLabels {
            policy: "shop/p".into(),
            limit: "per-client".into(),
            result: result::ALLOWED,
        };
        assert_eq!(family.get_or_create(&labels).get(), 1);
        drop(linked);
        limits.link(&RoutingTable::default());
        assert_eq!(family.get_or_create(&labels).get(), 0, "a new series");
    }
}
