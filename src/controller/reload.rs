//! The standalone control loop: a source (files, or objects built in code) → snapshot →
//! compile → publish, again on every change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::compile::CompileOptions;
use super::dirwatch::{DirWatch, Seen};
use super::file::{FileSource, FileSourceError, is_yaml};
pub use super::pace::Change;
use super::pace::Pace;
use super::publish::Publisher;
pub use super::publish::{Publish, route_states};
use super::snapshot::Accepted;
use crate::model::RoutingTable;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::KindLabels;

/// Where a standalone gateway's objects come from: files ([`FileSource`]) or code
/// ([`CodeSource`](super::code::CodeSource)).
pub trait Source: Send + 'static {
    /// A short name for logs and metric labels (`file`, `code`).
    fn kind(&self) -> &'static str;
    /// Reads every object again (without `accepted`, which the controller carries between
    /// compiles). Fails only when nothing at all can be read.
    fn load(&mut self) -> Result<super::snapshot::Snapshot, FileSourceError>;
}

impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn load(&mut self) -> Result<super::snapshot::Snapshot, FileSourceError> {
        FileSource::load(self)
    }
}

/// Compiles the files of a [`FileSource`] and publishes the result.
pub type FileController = SourceController<FileSource>;

/// Compiles the objects of a [`Source`] and publishes the result.
pub struct SourceController<S> {
    source: S,
    opts: CompileOptions,
    accepted: Accepted,
    publisher: Publisher,
    telemetry: Arc<Telemetry>,
    file_watch: Option<super::files::FileWatch>,
}

impl<S: Source> SourceController<S> {
    /// A controller for `source`; `publish` is called with each new table.
    pub fn new(
        source: S,
        opts: CompileOptions,
        publish: Publish,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            source,
            opts,
            accepted: Accepted::default(),
            publisher: Publisher::new(publish, telemetry.clone()),
            telemetry,
            file_watch: None,
        }
    }

    /// Also reload when a file the options or the objects name changes (see
    /// [`super::files::FileWatch`]).
    pub fn with_file_watch(mut self, watch: super::files::FileWatch) -> Self {
        self.file_watch = Some(watch);
        self
    }

    /// Reads, compiles and publishes once. Fails only if the source cannot be read at all (an
    /// unreadable configuration path), in which case the previous table keeps serving.
    pub fn reload(&mut self) -> Result<Arc<RoutingTable>, FileSourceError> {
        let started = std::time::Instant::now();
        let snap = self.source.load().inspect_err(|_| self.publisher.failed());
        let result = snap.and_then(|mut snap| {
            let files = super::files::fill(&self.opts, &mut snap);
            if let Some(w) = &mut self.file_watch {
                w.follow(&files);
            }
            snap.accepted = std::mem::take(&mut self.accepted);
            let compiled = self.publisher.compile(&snap, &self.opts);
            match self
                .publisher
                .publish(compiled.table, started, self.source.kind())
            {
                Ok(table) => {
                    self.accepted = compiled.accepted;
                    Ok(table)
                }
                Err(e) => {
                    self.accepted = snap.accepted;
                    Err(FileSourceError::Invalid(e.to_string()))
                }
            }
        });
        let kind = self.source.kind();
        match &result {
            Ok(_) => {
                self.telemetry.sources.recovered(kind);
            }
            Err(e) => {
                self.telemetry
                    .metrics
                    .controller_errors
                    .get_or_create(&KindLabels { kind })
                    .inc();
                self.telemetry.sources.failed(kind, &e.to_string());
            }
        }
        result
    }

    /// Reloads on every trigger. A complete change ([`Change::Complete`]) after a quiet period
    /// is applied at once; a bare data write waits for its writer to close the file or for
    /// `debounce` of quiet (a file written in several `write()`s must not be read half-written);
    /// changes within `debounce` of the last reload are applied together at the end of that
    /// window, so a burst costs one reload per window.
    pub async fn run(mut self, mut triggers: mpsc::Receiver<Change>, debounce: Duration) {
        let mut pace = Pace::new(debounce);
        while let Some(change) = triggers.recv().await {
            self.telemetry
                .metrics
                .controller_events
                .get_or_create(&KindLabels {
                    kind: self.source.kind(),
                })
                .inc();
            if !settle(change, &mut triggers, debounce, pace.next()).await {
                return;
            }
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "reload failed; the previous configuration keeps serving");
            }
            pace.applied();
        }
    }
}

/// Waits until the changes that began with `first` can be applied: at `not_before` once the last
/// change is complete, else after `debounce` with no further change. Returns `false` when the
/// trigger channel closed.
async fn settle(
    first: Change,
    triggers: &mut mpsc::Receiver<Change>,
    debounce: Duration,
    not_before: Instant,
) -> bool {
    let mut complete = first == Change::Complete;
    let mut quiet = Instant::now() + debounce;
    loop {
        let deadline = if complete {
            not_before
        } else {
            quiet.max(not_before)
        };
        // `timeout_at` polls the channel first: triggers already queued join this reload.
        match tokio::time::timeout_at(deadline, triggers.recv()).await {
            Ok(Some(Change::Complete)) => complete = true,
            Ok(Some(Change::Partial)) => {
                complete = false;
                quiet = Instant::now() + debounce;
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Watches `path` (a file or a directory) and sends a trigger on every change to YAML under it,
/// saying whether the change is complete.
pub fn watch(path: &Path, triggers: mpsc::Sender<Change>) -> std::io::Result<DirWatch> {
    let is_dir = path.is_dir();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watch = DirWatch::new(move |seen: Seen<'_>| {
        // A file is watched through its directory: only its own name counts.
        let relevant = seen.path.is_none_or(|p| {
            if is_dir {
                is_yaml(p) || p.is_dir()
            } else {
                p.file_name() == name.as_deref()
            }
        });
        if relevant {
            let _ = triggers.try_send(seen.change);
        }
    })?;
    // Watch the directory itself, or a single file's parent: editors replace files by rename.
    let dir = if is_dir {
        path
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    watch.watch(dir, is_dir)?;
    Ok(watch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written aside and renamed into place (how editors, `kubectl cp` and config tools
    /// replace a file) is one trigger: the temporary file is not YAML, and the rename's `Both`
    /// event repeats its `To`.
    #[tokio::test]
    async fn a_file_renamed_into_place_is_one_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let _watcher = watch(dir.path(), tx).unwrap();
        let tmp = dir.path().join(".routes.yaml.tmp");
        std::fs::write(&tmp, "kind: Route\n").unwrap();
        std::fs::rename(&tmp, dir.path().join("routes.yaml")).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(first.unwrap(), Some(Change::Complete));
        let more = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(more.is_err(), "a second trigger: {more:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_change_waits_for_the_close_not_the_debounce() {
        let (tx, mut rx) = mpsc::channel(4);
        let debounce = Duration::from_secs(1);
        let started = Instant::now();
        let settled = tokio::spawn(async move {
            settle(Change::Partial, &mut rx, debounce, Instant::now()).await
        });
        tokio::time::advance(Duration::from_millis(100)).await;
        tx.send(Change::Complete).await.unwrap();
        assert!(settled.await.unwrap());
        assert!(started.elapsed() < debounce, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_change_left_open_is_applied_after_the_debounce() {
        let (_tx, mut rx) = mpsc::channel(4);
        let debounce = Duration::from_millis(50);
        let started = Instant::now();
        assert!(settle(Change::Partial, &mut rx, debounce, Instant::now()).await);
        assert_eq!(started.elapsed(), debounce);
    }
}
