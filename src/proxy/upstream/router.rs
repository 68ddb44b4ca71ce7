//! A routing table linked to runtime state: what one request reads, swapped whole on reload.
//! The state it links to (backends, weighted-split positions, rate-limit buckets) lives in the [`Registry`] and
//! survives the swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderMap;

use super::backend::BackendState;
use super::rate_limit::{ConcurrencyState, LimitState};
use super::registry::Registry;
use crate::model::{Action, NoBackend, Picked, RoutingTable, Rule};

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
    /// `concurrency[p][c]` is the state of concurrency limit `c` of `table.rate_limits[p]`.
    pub concurrency: Box<[Box<[Arc<ConcurrencyState>]>]>,
}

impl Router {
    /// Links `table` to the registry's backend states.
    pub fn link(table: Arc<RoutingTable>, registry: &Registry) -> Self {
        let backends = registry.link(&table);
        let splits = registry.link_splits(&table);
        let rate_limits = registry.rate_limits().link(&table);
        let concurrency = registry.rate_limits().link_concurrency(&table);
        Self {
            table,
            backends,
            splits,
            rate_limits,
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
        let n = match schedule.len() {
            0 => 0,
            _ => self.splits[rule_index].fetch_add(1, Ordering::Relaxed),
        };
        crate::model::pick(backends, schedule, n, headers)
    }
}
