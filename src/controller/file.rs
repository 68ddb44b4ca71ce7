//! The standalone source: Route/Backend/RateLimitPolicy documents, and `kubernetes.io/tls`
//! Secrets (the same `kind: Secret` YAML as in a cluster), from YAML files.
//!
//! Each file is parsed on its own. A file that is not valid YAML keeps its previous documents
//! (the last good parse) and is reported; a document that is not a valid object is reported on
//! that object, whose last accepted version then keeps serving (see `compile`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::{
    self, Backend, BackendSpec, RateLimitPolicy, RateLimitPolicySpec, Route, RouteSpec,
};
use crate::model::{Diagnostic, Kind, ObjectRef, Reason, Severity};

use super::objects::SecretInfo;
use super::snapshot::{Meta, Obj, Snapshot};

/// Namespace of objects whose metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why the configuration path cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The path does not exist or cannot be listed.
    #[error("cannot read configuration at {path}: {source}")]
    Unreadable {
        /// The configuration path.
        path: PathBuf,
        #[source]
        /// The cause.
        source: std::io::Error,
    },
    /// The compiled table broke an invariant (a compiler bug); it was not published.
    #[error("internal error, configuration not published: {0}")]
    Invalid(String),
}

/// One object read from a file.
#[derive(Clone, Debug)]
enum Doc {
    Route(Box<Obj<RouteSpec>>),
    Backend(Box<Obj<BackendSpec>>),
    Policy(Box<Obj<RateLimitPolicySpec>>),
    Secret(Box<Obj<SecretInfo>>),
}

impl Doc {
    fn id(&self) -> &ObjectRef {
        match self {
            Doc::Route(o) => &o.meta.id,
            Doc::Backend(o) => &o.meta.id,
            Doc::Policy(o) => &o.meta.id,
            Doc::Secret(o) => &o.meta.id,
        }
    }
}

/// What one file yielded the last time it parsed as YAML.
#[derive(Clone, Debug, Default)]
struct Parsed {
    docs: Vec<Doc>,
    problems: Vec<Diagnostic>,
}

/// Reads a file or a directory (recursively) of `.yaml`/`.yml` files into snapshots.
#[derive(Debug)]
pub struct FileSource {
    root: PathBuf,
    last_good: BTreeMap<PathBuf, Parsed>,
}

impl FileSource {
    /// A source for `root`, a file or a directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            last_good: BTreeMap::new(),
        }
    }

    /// The path this source reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads every file again and returns the objects (without `accepted`, which the caller
    /// carries between compiles). Fails only when the root itself cannot be read.
    pub fn load(&mut self) -> Result<Snapshot, FileSourceError> {
        let files = list_files(&self.root).map_err(|source| FileSourceError::Unreadable {
            path: self.root.clone(),
            source,
        })?;
        let mut snap = Snapshot::default();
        let mut seen: BTreeMap<ObjectRef, String> = BTreeMap::new();
        let present: BTreeSet<&PathBuf> = files.iter().collect();
        self.last_good.retain(|p, _| present.contains(p));

        for path in &files {
            let shown = self.display_name(path);
            let parsed = match std::fs::read_to_string(path) {
                Err(e) => Err(format!("cannot read: {e}")),
                Ok(text) => parse_file(&text, &shown),
            };
            let parsed = match parsed {
                Ok(p) => {
                    self.last_good.insert(path.clone(), p.clone());
                    p
                }
                Err(message) => {
                    let kept = self.last_good.get(path).cloned();
                    let tail = if kept.is_some() {
                        "; its last good version keeps serving"
                    } else {
                        ""
                    };
                    snap.problems.push(Diagnostic {
                        object: None,
                        file: Some(shown.clone()),
                        field: String::new(),
                        severity: Severity::Error,
                        reason: Reason::Malformed,
                        message: format!("{message}{tail}"),
                    });
                    kept.unwrap_or_default()
                }
            };
            snap.problems.extend(parsed.problems);
            for doc in parsed.docs {
                if let Some(first) = seen.get(doc.id()) {
                    snap.problems.push(Diagnostic {
                        file: Some(shown.clone()),
                        ..Diagnostic::error(
                            doc.id(),
                            "metadata.name",
                            Reason::Duplicate,
                            format!("defined more than once; the definition in {first} is used"),
                        )
                    });
                    continue;
                }
                seen.insert(doc.id().clone(), shown.clone());
                match doc {
                    Doc::Route(o) => snap.routes.insert(o.meta.id.clone(), *o).map(|_| ()),
                    Doc::Backend(o) => snap.backends.insert(o.meta.id.clone(), *o).map(|_| ()),
                    Doc::Policy(o) => snap.policies.insert(o.meta.id.clone(), *o).map(|_| ()),
                    Doc::Secret(o) => {
                        let key = (o.meta.id.namespace.clone(), o.meta.id.name.clone());
                        snap.secrets.insert(key, o.spec).map(|_| ())
                    }
                };
            }
        }
        snap.now = unix_now();
        Ok(snap)
    }

    /// The path as shown in diagnostics: relative to the root directory when inside it.
    fn display_name(&self, path: &Path) -> String {
        let rel = if self.root.is_dir() {
            path.strip_prefix(&self.root).unwrap_or(path)
        } else {
            path
        };
        let name = rel.display().to_string();
        if name.is_empty() {
            path.display().to_string()
        } else {
            name
        }
    }
}

/// The YAML files under `root` (or `root` itself), sorted; hidden files and folders are skipped.
fn list_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if entry.file_type()?.is_dir() || (entry.file_type()?.is_symlink() && path.is_dir()) {
                stack.push(path);
            } else if is_yaml(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` names a YAML file this source reads.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) && !path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Parses a multi-document YAML file. `Err` means the file is not YAML at all.
fn parse_file(text: &str, file: &str) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(de).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        match read_doc(value) {
            Ok(mut doc) => {
                let meta = match &mut doc {
                    Doc::Route(o) => &mut o.meta,
                    Doc::Backend(o) => &mut o.meta,
                    Doc::Policy(o) => &mut o.meta,
                    Doc::Secret(o) => &mut o.meta,
                };
                meta.file = Some(file.to_owned());
                parsed.docs.push(doc);
            }
            Err(d) => {
                let d = Diagnostic {
                    file: Some(file.to_owned()),
                    ..*d
                };
                if d.object.is_none() {
                    let field = if d.field.is_empty() {
                        format!("documents[{i}]")
                    } else {
                        format!("documents[{i}].{}", d.field)
                    };
                    parsed.problems.push(Diagnostic { field, ..d });
                } else {
                    parsed.problems.push(d);
                }
            }
        }
    }
    Ok(parsed)
}

/// Turns one YAML document into an object, or a diagnostic naming as much as could be read.
fn read_doc(value: serde_yaml_ng::Value) -> Result<Doc, Box<Diagnostic>> {
    let unnamed = |field: &str, message: String| {
        Box::new(Diagnostic {
            object: None,
            file: None,
            field: field.to_owned(),
            severity: Severity::Error,
            reason: Reason::Malformed,
            message,
        })
    };
    let str_at = |v: &serde_yaml_ng::Value, key: &str| {
        v.get(key).and_then(|x| x.as_str()).map(str::to_owned)
    };
    let Some(kind_name) = str_at(&value, "kind") else {
        return Err(unnamed(
            "kind",
            "every document needs a kind (Route, Backend, RateLimitPolicy or Secret)".into(),
        ));
    };
    let kind = match kind_name.as_str() {
        "Route" => Kind::Route,
        "Backend" => Kind::Backend,
        "RateLimitPolicy" => Kind::RateLimitPolicy,
        "Secret" => Kind::Secret,
        other => {
            return Err(unnamed(
                "kind",
                format!(
                    "{other:?} is not a kind Tidegate reads (Route, Backend, RateLimitPolicy, Secret)"
                ),
            ));
        }
    };
    let meta = value.get("metadata");
    let name = meta.and_then(|m| str_at(m, "name"));
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(unnamed(
            "metadata.name",
            format!("a {kind} needs metadata.name"),
        ));
    };
    let namespace = meta
        .and_then(|m| str_at(m, "namespace"))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let id = ObjectRef::new(kind, namespace.clone(), name);
    let bad = |field: &str, message: String| {
        Box::new(Diagnostic::error(&id, field, Reason::Malformed, message))
    };

    let api_version = if kind == Kind::Secret {
        "v1"
    } else {
        api::API_VERSION
    };
    match str_at(&value, "apiVersion") {
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(bad("apiVersion", format!("{v:?} is not {api_version}")));
        }
        None => {
            return Err(bad("apiVersion", format!("missing; use {api_version}")));
        }
    }
    if let Err(e) = crate::controller::names::dns_subdomain(&id.name) {
        return Err(bad("metadata.name", e));
    }
    if let Err(e) = crate::controller::names::dns_label(&id.namespace) {
        return Err(bad("metadata.namespace", e));
    }

    fn typed<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            (
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })
    }
    let to_diag = |(field, message): (String, String)| bad(&field, message);
    let meta_of = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| Meta {
        id: id.clone(),
        file: None,
        created: m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        generation: m.generation,
    };
    Ok(match kind {
        Kind::Route => {
            let r: Route = typed(value).map_err(to_diag)?;
            Doc::Route(Box::new(Obj {
                meta: meta_of(&r.metadata),
                spec: r.spec,
            }))
        }
        Kind::Backend => {
            let b: Backend = typed(value).map_err(to_diag)?;
            Doc::Backend(Box::new(Obj {
                meta: meta_of(&b.metadata),
                spec: b.spec,
            }))
        }
        Kind::RateLimitPolicy => {
            let p: RateLimitPolicy = typed(value).map_err(to_diag)?;
            Doc::Policy(Box::new(Obj {
                meta: meta_of(&p.metadata),
                spec: p.spec,
            }))
        }
        Kind::Secret => {
            let s: k8s_openapi::api::core::v1::Secret = typed(value).map_err(to_diag)?;
            Doc::Secret(Box::new(Obj {
                meta: meta_of(&s.metadata),
                spec: secret_info(&s),
            }))
        }
        // Kubernetes objects come from the cluster, not from files (see the kind check above).
        Kind::Service | Kind::Ingress => {
            return Err(bad(
                "kind",
                format!("{kind} is read only in Kubernetes mode"),
            ));
        }
    })
}

/// What TLS reads of a Secret: its type, `tls.crt` and `tls.key` from `data` (base64, decoded
/// by the Secret type) or `stringData` (plain text, which wins as in the apiserver).
pub fn secret_info(s: &k8s_openapi::api::core::v1::Secret) -> SecretInfo {
    let get = |key: &str| {
        let plain = s.string_data.as_ref().and_then(|d| d.get(key));
        match plain {
            Some(v) => Some(bytes::Bytes::from(v.clone().into_bytes())),
            None => s
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| bytes::Bytes::from(v.0.clone())),
        }
    };
    SecretInfo {
        type_: s.type_.clone(),
        cert: get("tls.crt"),
        key: get("tls.key"),
    }
}

/// Now, in Unix seconds (certificate dates are checked against it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads the certificate files `opts` names (`--default-certificate CERT,KEY`) for a snapshot.
pub fn read_certificate_files(
    opts: &super::compile::CompileOptions,
) -> BTreeMap<PathBuf, Result<bytes::Bytes, String>> {
    opts.default_certificate
        .iter()
        .flat_map(|d| d.files())
        .map(|p| {
            let read = std::fs::read(p)
                .map(bytes::Bytes::from)
                .map_err(|e| format!("cannot read: {e}"));
            (p.to_path_buf(), read)
        })
        .collect()
}
