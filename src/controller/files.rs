//! Files the options and the objects name (`--default-certificate CERT,KEY`, `caFile`,
//! `clientCertificateFiles`): read into [`Snapshot::files`] before every compile, in every
//! mode, and watched so that a change to one (an edit, a rename, a Kubernetes volume's
//! `..data` symlink swap) triggers a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::compile::CompileOptions;
use super::dirwatch::DirWatch;
use super::snapshot::Snapshot;

/// The bytes of each file, or why it could not be read.
pub type Files = BTreeMap<PathBuf, Result<bytes::Bytes, String>>;

/// The files `opts` and the objects of `snap` (current and last accepted versions) name.
pub fn named(opts: &CompileOptions, snap: &Snapshot) -> BTreeSet<PathBuf> {
    let mut paths: BTreeSet<PathBuf> = opts
        .default_certificate
        .iter()
        .flat_map(|d| d.files())
        .map(Path::to_path_buf)
        .collect();
    // The accepted versions that are not the current ones (nearly all are).
    let accepted = super::snapshot::not_in(&snap.routes, &snap.accepted.routes);
    let routes = snap.routes.values().chain(accepted);
    for r in routes {
        let validation = r
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.client_validation.as_ref());
        paths.extend(
            validation
                .and_then(|v| v.ca_file.as_ref())
                .map(PathBuf::from),
        );
    }
    let backends = snap
        .backends
        .values()
        .chain(snap.accepted.backends.values());
    for b in backends {
        let Some(tls) = &b.spec.tls else { continue };
        paths.extend(tls.ca_file.as_ref().map(PathBuf::from));
        if let Some(f) = &tls.client_certificate_files {
            paths.insert(PathBuf::from(&f.cert_file));
            paths.insert(PathBuf::from(&f.key_file));
        }
    }
    paths
}

/// Reads `paths` (relative ones are not read: the compiler refuses them for objects).
pub fn read(paths: &BTreeSet<PathBuf>) -> Files {
    paths
        .iter()
        .map(|p| {
            let read = std::fs::read(p)
                .map(bytes::Bytes::from)
                .map_err(|e| format!("cannot read: {e}"));
            (p.clone(), read)
        })
        .collect()
}

/// Reads the files `opts` and `snap` name into `snap.files`.
pub fn fill(opts: &CompileOptions, snap: &mut Snapshot) -> BTreeSet<PathBuf> {
    let paths = named(opts, snap);
    snap.files = read(&paths);
    paths
}

/// Watches the directories of the files in use: a change in one sends a trigger. A directory
/// is watched rather than the file, because a mounted Secret or ConfigMap volume swaps a
/// `..data` symlink and editors replace files by rename.
pub struct FileWatch {
    triggers: mpsc::Sender<super::pace::Change>,
    watcher: Option<DirWatch>,
    dirs: BTreeSet<PathBuf>,
}

impl FileWatch {
    /// A watch that sends on `triggers`; it watches nothing until [`Self::follow`].
    pub fn new(triggers: mpsc::Sender<super::pace::Change>) -> Self {
        Self {
            triggers,
            watcher: None,
            dirs: BTreeSet::new(),
        }
    }

    /// Watches the directories of `paths`, and only those. A directory that cannot be watched
    /// (it does not exist yet) is tried again on the next call.
    pub fn follow(&mut self, paths: &BTreeSet<PathBuf>) {
        let wanted: BTreeSet<PathBuf> = paths
            .iter()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            })
            .collect();
        if wanted == self.dirs {
            return;
        }
        if self.watcher.is_none() {
            let triggers = self.triggers.clone();
            match DirWatch::new(move |seen| {
                let _ = triggers.try_send(seen.change);
            }) {
                Ok(w) => self.watcher = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch files; changes need a reload");
                    return;
                }
            }
        }
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.dirs.difference(&wanted) {
            watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                watched.insert(dir);
                continue;
            }
            match watcher.watch(&dir, false) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a directory of referenced files")
                }
            }
        }
        self.dirs = watched;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendSpec, BackendTls, CertificateFiles, ClientValidation, RouteSpec};
    use crate::api::{ClientValidationMode, RouteTls};
    use crate::controller::snapshot::{Meta, Obj};
    use crate::model::{Kind, ObjectRef};

    #[test]
    fn the_files_of_routes_backends_and_their_accepted_versions_are_named() {
        let mut snap = Snapshot::default();
        let route = |ca: &str| Obj {
            meta: Meta::new(ObjectRef::new(Kind::Route, "default", "r")),
            spec: std::sync::Arc::new(RouteSpec {
                tls: Some(Box::new(RouteTls {
                    secret_name: "s".into(),
                    client_validation: Some(ClientValidation {
                        ca_secret_ref: None,
                        ca_config_map_ref: None,
                        ca_file: Some(ca.into()),
                        mode: ClientValidationMode::Require,
                    }),
                    ..RouteTls::default()
                })),
                ..RouteSpec::default()
            }),
        };
        let id = ObjectRef::new(Kind::Route, "default", "r");
        std::sync::Arc::make_mut(&mut snap.routes).insert(id.clone(), route("/ca/now.pem"));
        std::sync::Arc::make_mut(&mut snap.accepted.routes).insert(id, route("/ca/before.pem"));
        let b = ObjectRef::new(Kind::Backend, "default", "b");
        snap.backends.insert(
            b.clone(),
            Obj {
                meta: Meta::new(b),
                spec: std::sync::Arc::new(BackendSpec {
                    tls: Some(BackendTls {
                        ca_file: Some("/b/ca.pem".into()),
                        client_certificate_files: Some(CertificateFiles {
                            cert_file: "/b/tls.crt".into(),
                            key_file: "/b/tls.key".into(),
                        }),
                        ..BackendTls::default()
                    }),
                    ..BackendSpec::default()
                }),
            },
        );
        let named: Vec<String> = named(&CompileOptions::default(), &snap)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            named,
            [
                "/b/ca.pem",
                "/b/tls.crt",
                "/b/tls.key",
                "/ca/before.pem",
                "/ca/now.pem"
            ]
        );
    }
}
