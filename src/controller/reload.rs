//! The standalone control loop: files → snapshot → compile → publish, again on every change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::compile::{CompileOptions, compile};
use super::file::{FileSource, FileSourceError, is_yaml};
use super::snapshot::Accepted;
use crate::model::{Kind, RoutingTable, Severity};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{KindLabels, ResultLabels, StateLabels};

/// Route objects by state: `accepted` (serving its current version), `stale` (serving its last
/// accepted version; the current one is rejected), `rejected` (not serving), `ignored` (another
/// ingress class).
pub fn route_states(table: &RoutingTable) -> [(&'static str, i64); 4] {
    use std::collections::BTreeSet;
    let serving: BTreeSet<_> = table.rules.iter().map(|r| &r.route).collect();
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
    let stale = errors.iter().filter(|o| serving.contains(*o)).count();
    let rejected = errors.len() - stale;
    let ignored = of_routes(Severity::Ignored).len();
    [
        ("accepted", (serving.len() - stale) as i64),
        ("stale", stale as i64),
        ("rejected", rejected as i64),
        ("ignored", ignored as i64),
    ]
}

/// Receives every table the controller publishes.
pub type Publish = Box<dyn Fn(Arc<RoutingTable>) + Send + Sync>;

/// Compiles the files of a [`FileSource`] and publishes the result.
pub struct FileController {
    source: FileSource,
    opts: CompileOptions,
    accepted: Accepted,
    version: u64,
    publish: Publish,
    telemetry: Arc<Telemetry>,
}

impl FileController {
    /// A controller for `source`; `publish` is called with each new table.
    pub fn new(
        source: FileSource,
        opts: CompileOptions,
        publish: Publish,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            source,
            opts,
            accepted: Accepted::default(),
            version: 0,
            publish,
            telemetry,
        }
    }

    /// Reads, compiles and publishes once. Fails only if the configuration path is unreadable,
    /// in which case the previous table keeps serving.
    pub fn reload(&mut self) -> Result<Arc<RoutingTable>, FileSourceError> {
        let result = self.reload_inner();
        let m = &self.telemetry.metrics;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        m.config_reloads
            .get_or_create(&ResultLabels { result: outcome })
            .inc();
        match &result {
            Ok(table) => {
                self.telemetry.sources.recovered("file");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                m.config_last_reload_success.set(now.as_secs_f64());
                for (state, n) in route_states(table) {
                    m.routes.get_or_create(&StateLabels { state }).set(n);
                }
            }
            Err(e) => {
                m.controller_errors
                    .get_or_create(&KindLabels { kind: "file" })
                    .inc();
                self.telemetry.sources.failed("file", &e.to_string());
            }
        }
        result
    }

    fn reload_inner(&mut self) -> Result<Arc<RoutingTable>, FileSourceError> {
        let started = std::time::Instant::now();
        let mut snap = self.source.load()?;
        snap.accepted = std::mem::take(&mut self.accepted);
        let compile_started = std::time::Instant::now();
        let compiled = compile(&snap, &self.opts);
        self.telemetry
            .metrics
            .compile_duration
            .observe(compile_started.elapsed().as_secs_f64());
        let mut table = compiled.table;
        if let Err(e) = table.validate() {
            // A compiler bug, never a user error: keep what serves.
            tracing::error!(error = %e, "compiled table failed validation; not publishing it");
            self.accepted = snap.accepted;
            return Err(FileSourceError::Invalid(e.to_string()));
        }
        self.accepted = compiled.accepted;
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
        tracing::info!(
            version = table.version,
            rules = table.rules.len(),
            backends = table.backends.len(),
            errors = table.diagnostics.iter().filter(|d| d.is_error()).count(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "configuration published"
        );
        Ok(table)
    }

    /// Reloads on every trigger, coalescing triggers that arrive within `debounce`.
    pub async fn run(mut self, mut triggers: mpsc::Receiver<()>, debounce: Duration) {
        while triggers.recv().await.is_some() {
            self.telemetry
                .metrics
                .controller_events
                .get_or_create(&KindLabels { kind: "file" })
                .inc();
            // Editors write a file in several steps; wait for the burst to end.
            loop {
                match tokio::time::timeout(debounce, triggers.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "reload failed; the previous configuration keeps serving");
            }
        }
    }
}

/// Watches `path` (a file or a directory) and sends a trigger on every change to YAML under it.
pub fn watch(path: &Path, triggers: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let target = path.to_path_buf();
    let is_dir = target.is_dir();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                let relevant = event.paths.iter().any(|p| {
                    if is_dir {
                        is_yaml(p) || p.is_dir()
                    } else {
                        p == &target
                    }
                });
                if relevant && !event.kind.is_access() {
                    let _ = triggers.try_send(());
                }
            }
            Err(e) => tracing::warn!(error = %e, "file watch error"),
        })?;
    // Watch the directory itself, or a single file's parent: editors replace files by rename.
    let (dir, mode) = if is_dir {
        (path.to_path_buf(), RecursiveMode::Recursive)
    } else {
        (
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            RecursiveMode::NonRecursive,
        )
    };
    watcher.watch(&dir, mode)?;
    Ok(watcher)
}
