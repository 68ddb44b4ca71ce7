//! The one way a compiled table reaches the proxy, in file and Kubernetes mode alike:
//! compile → validate → log → publish → metrics.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::compile::{CompileCache, CompileOptions, Compiled, compile_cached};
use super::snapshot::Snapshot;
use crate::model::{Kind, RoutingTable, Severity, TableError};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{ResultLabels, StateLabels};

/// Receives every table the controller publishes.
pub type Publish = Box<dyn Fn(Arc<RoutingTable>) + Send + Sync>;

/// Numbers, logs and publishes compiled tables.
pub struct Publisher {
    publish: Publish,
    telemetry: Arc<Telemetry>,
    version: u64,
    /// The Routes of the last compile, reused by the next where nothing they read changed.
    cache: CompileCache,
}

impl Publisher {
    /// A publisher handing tables to `publish`.
    pub fn new(publish: Publish, telemetry: Arc<Telemetry>) -> Self {
        Self {
            publish,
            telemetry,
            version: 0,
            cache: CompileCache::default(),
        }
    }

    /// Compiles `snap` (timed into `tidegate_config_compile_duration_seconds`).
    pub fn compile(&mut self, snap: &Snapshot, opts: &CompileOptions) -> Compiled {
        let started = Instant::now();
        let compiled = compile_cached(snap, opts, &mut self.cache);
        self.telemetry
            .metrics
            .compile_duration
            .observe(started.elapsed().as_secs_f64());
        compiled
    }

    /// Validates `table`, gives it the next version, logs its diagnostics, publishes it and
    /// updates the reload metrics. A table that fails validation (a compiler bug, never a user
    /// error) is not published: what serves keeps serving, and the reload counts as failed.
    /// `started`: when this reload began and `triggered_by`: what changed (both for the log
    /// line).
    pub fn publish(
        &mut self,
        mut table: RoutingTable,
        started: Instant,
        triggered_by: &str,
    ) -> Result<Arc<RoutingTable>, TableError> {
        if let Err(e) = table.validate() {
            tracing::error!(error = %e, "compiled table failed validation; not publishing it");
            self.failed();
            return Err(e);
        }
        self.version += 1;
        table.version = self.version;
        for d in &table.diagnostics {
            match d.severity {
                Severity::Error => tracing::warn!(diagnostic = %d, "configuration rejected"),
                Severity::Warning => tracing::warn!(diagnostic = %d, "configuration warning"),
                Severity::Ignored => tracing::debug!(diagnostic = %d, "configuration ignored"),
            }
        }
        let table = Arc::new(table);
        (self.publish)(table.clone());
        let m = &self.telemetry.metrics;
        m.config_reloads
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        m.config_last_reload_success.set(now.as_secs_f64());
        for (state, n) in route_states(&table) {
            m.routes.get_or_create(&StateLabels { state }).set(n);
        }
        tracing::info!(
            version = table.version,
            rules = table.rules.len(),
            backends = table.backends.len(),
            errors = table.diagnostics.iter().filter(|d| d.is_error()).count(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            triggered_by,
            "configuration published"
        );
        Ok(table)
    }

    /// Counts a reload that published nothing (the configuration could not be read).
    pub fn failed(&self) {
        self.telemetry
            .metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
    }
}

/// Route objects by state: `accepted` (serving its current version), `stale` (serving its last
/// accepted version; the current one is rejected), `rejected` (not serving), `ignored` (another
/// ingress class).
pub fn route_states(table: &RoutingTable) -> [(&'static str, i64); 4] {
    use std::collections::BTreeSet;
    // Rules come grouped by object: sorting them is a pass, not a tree of every object.
    let mut serving: Vec<_> = table.rules.iter().map(|r| &r.route).collect();
    serving.sort_unstable();
    serving.dedup();
    let of_routes = |sev: Severity| -> BTreeSet<_> {
        table
            .diagnostics
            .iter()
            .filter(|d| d.severity == sev)
            .filter_map(|d| d.object.as_ref())
            .filter(|o| o.kind == Kind::Route)
            .collect()
    };
    let errors = of_routes(Severity::Error);
    let stale = errors
        .iter()
        .filter(|o| serving.binary_search(o).is_ok())
        .count();
    let rejected = errors.len() - stale;
    let ignored = of_routes(Severity::Ignored).len();
    [
        ("accepted", (serving.len() - stale) as i64),
        ("stale", stale as i64),
        ("rejected", rejected as i64),
        ("ignored", ignored as i64),
    ]
}
