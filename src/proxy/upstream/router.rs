//! A routing table linked to runtime state: what one request reads, swapped whole on reload.
//! The state it links to (backends, weighted-split positions, rate-limit buckets) lives in the [`Registry`] and
//! survives the swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderMap;

use super::backend::BackendState;
use super::rate_limit::{ConcurrencyState, LimitState};
use super::registry::Registry;
use crate::model::{Action, NoBackend, Picked, RoutingTable, Rule, WeightedBackend};

/// The table plus the live state its rules point into.
pub struct Router {
    /// The compiled table.
    pub table: Arc<RoutingTable>,
    /// `backends[i]` is the state of `table.backends[i]`.
    pub backends: Vec<Arc<BackendState>>,
    /// Per rule: position in its weighted schedule (kept by the registry across reloads).
    splits: Box<[Arc<AtomicUsize>]>,
    /// `rate_limits[p][l]` is the state of limit `l` of `table.rate_limits[p]`.
    pub rate_limits: Box<[Box<[Arc<LimitState>]>]>,
    /// Per rule: whether it splits between backends of which one keeps sessions (a request
    /// whose session cookie one of them holds goes there, whatever the split says).
    sticky_splits: Box<[bool]>,
    /// `concurrency[p][c]` is the state of concurrency limit `c` of `table.rate_limits[p]`.
    pub concurrency: Box<[Box<[Arc<ConcurrencyState>]>]>,
}

impl Router {
    /// Links `table` to the registry's backend states.
    pub fn link(table: Arc<RoutingTable>, registry: &Registry) -> Self {
        let backends = registry.link(&table);
        let splits = registry.link_splits(&table);
        let rate_limits = registry.rate_limits().link(&table);
        let sticky_splits = table
            .rules
            .iter()
            .map(|r| sticky_split(&table, r))
            .collect();
        let concurrency = registry.rate_limits().link_concurrency(&table);
        Self {
            table,
            backends,
            splits,
            rate_limits,
            sticky_splits,
            concurrency,
        }
    }

    /// Where rule number `rule_index` sends its next request: the backend (index into
    /// `table.backends`) and the backendRef; `headers` may override a canary split (see
    /// `model::Canary`).
    pub fn pick_backend<'r>(
        &self,
        rule_index: usize,
        rule: &'r Rule,
        headers: &HeaderMap,
    ) -> Result<Picked<'r>, NoBackend> {
        let Action::Forward { backends, schedule } = &rule.action else {
            return Err(NoBackend::NoBackendRefs);
        };
        // A schedule of one entry needs no position (see `Registry::link_splits`).
        let n = match schedule.len() {
            0 | 1 => 0,
            _ => self.splits[rule_index].fetch_add(1, Ordering::Relaxed),
        };
        let picked = crate::model::pick(backends, schedule, n, headers)?;
        if self.sticky_splits[rule_index]
            && !picked.backend_ref.overridden(headers)
            && let Some(p) = self.session_holder(backends, headers)
        {
            return Ok(p);
        }
        Ok(picked)
    }

    /// The backend (and its backendRef) among `backends` and their canaries that holds the
    /// request's session, if one does (ingress-nginx's sticky canary behavior: a client served
    /// by the canary stays on it, one served by the main backend stays there). A backend the
    /// split gives no share (weight 0) keeps none: a canary rolled back to 0 takes no more
    /// requests.
    fn session_holder<'r>(
        &self,
        backends: &'r [WeightedBackend],
        headers: &HeaderMap,
    ) -> Option<Picked<'r>> {
        backends.iter().find_map(|r| {
            std::iter::once(r.backend?)
                .filter(|_| r.weight > 0)
                .chain(
                    r.canaries
                        .iter()
                        .filter(|c| c.weight > 0)
                        .map(|c| c.backend),
                )
                .find(|&b| self.backends[b].holds_session(headers))
                .map(|backend| Picked {
                    backend,
                    backend_ref: r,
                })
        })
    }
}

/// Whether `rule` splits between more than one backend, one of which keeps sessions.
fn sticky_split(table: &RoutingTable, rule: &Rule) -> bool {
    let Action::Forward { backends, .. } = &rule.action else {
        return false;
    };
    // Per rule of every published table: counted without collecting them.
    let all = || {
        backends
            .iter()
            .filter_map(|r| r.backend.filter(|_| r.weight > 0).map(|b| (b, r)))
            .flat_map(|(b, r)| {
                std::iter::once(b).chain(
                    r.canaries
                        .iter()
                        .filter(|c| c.weight > 0)
                        .map(|c| c.backend),
                )
            })
    };
    let first = all().next();
    let distinct = all().any(|b| Some(b) != first);
    distinct && all().any(|b| table.backends[b].session_persistence.is_some())
}
