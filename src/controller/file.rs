//! The standalone source: Route/Backend/RateLimitPolicy documents, and `kubernetes.io/tls`
//! Secrets (the same `kind: Secret` YAML as in a cluster), from YAML files.
//!
//! Each file is parsed on its own. A file that is not valid YAML keeps its previous documents
//! (the last good parse) and is reported; a document that is not a valid object is reported on
//! that object, whose last accepted version then keeps serving (see `compile`).
//!
//! In [`Mode::Kubernetes`] (`tidegate validate --kubernetes`) the same files may also hold the
//! Kubernetes objects the controller watches (see `manifests.rs`); other kinds are ignored.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::{
    self, Backend, BackendSpec, RateLimitPolicy, RateLimitPolicySpec, Route, RouteSpec,
};
use crate::model::{Diagnostic, Kind, ObjectRef, Reason, Severity};

use super::kube::index::Index;
use super::manifests::{self, KubeDoc};
use super::objects::{ConfigMapInfo, SecretInfo};
use super::snapshot::{Accepted, Meta, Obj, Snapshot};

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

/// What a source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Tidegate's kinds only (`tidegate run --config`): anything else is an error.
    #[default]
    Standalone,
    /// Also the Kubernetes objects the controller watches; other kinds are ignored.
    Kubernetes,
}

/// One object read from a file.
#[derive(Clone, Debug)]
enum Doc {
    Route(Box<Obj<RouteSpec>>),
    Backend(Box<Obj<BackendSpec>>),
    Policy(Box<Obj<RateLimitPolicySpec>>),
    Secret(Box<Obj<SecretInfo>>),
    ConfigMap(Box<Obj<ConfigMapInfo>>),
    Kube(Box<KubeDoc>),
}

impl Doc {
    fn id(&self) -> Option<Cow<'_, ObjectRef>> {
        match self {
            Doc::Route(o) => Some(Cow::Borrowed(&o.meta.id)),
            Doc::Backend(o) => Some(Cow::Borrowed(&o.meta.id)),
            Doc::Policy(o) => Some(Cow::Borrowed(&o.meta.id)),
            Doc::Secret(o) => Some(Cow::Borrowed(&o.meta.id)),
            Doc::ConfigMap(o) => Some(Cow::Borrowed(&o.meta.id)),
            Doc::Kube(k) => k.id().map(Cow::Owned),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Doc::Route(_) => "Route",
            Doc::Backend(_) => "Backend",
            Doc::Policy(_) => "RateLimitPolicy",
            Doc::Secret(_) => "Secret",
            Doc::ConfigMap(_) => "ConfigMap",
            Doc::Kube(k) => k.kind(),
        }
    }
}

/// What one file yielded the last time it parsed as YAML.
#[derive(Clone, Debug, Default)]
struct Parsed {
    docs: Vec<Doc>,
    problems: Vec<Diagnostic>,
    /// Documents of Kubernetes kinds seen in standalone mode (refused there).
    kubernetes_kinds: usize,
}

/// A file's text when last read, and what it made: a file whose text is unchanged is not parsed
/// again (with 2,000 Routes, parsing them all again took ~180 ms of every change). What it made
/// is shared with `last_good` and each load, not copied.
#[derive(Debug)]
struct Read {
    text: String,
    parsed: Result<Arc<Parsed>, String>,
}

/// Reads a file or a directory (recursively) of `.yaml`/`.yml` files into snapshots.
#[derive(Debug)]
pub struct FileSource {
    root: PathBuf,
    mode: Mode,
    last_good: BTreeMap<PathBuf, Arc<Parsed>>,
    last_read: BTreeMap<PathBuf, Read>,
}

impl FileSource {
    /// A source for `root`, a file or a directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_mode(root, Mode::Standalone)
    }

    /// A source for `root` that reads in `mode`.
    pub fn with_mode(root: impl Into<PathBuf>, mode: Mode) -> Self {
        Self {
            root: root.into(),
            mode,
            last_good: BTreeMap::new(),
            last_read: BTreeMap::new(),
        }
    }

    /// Whether the last load met Kubernetes objects it did not read (standalone mode): the
    /// files are probably a manifest set for [`Mode::Kubernetes`].
    pub fn saw_kubernetes_kinds(&self) -> bool {
        self.last_good.values().any(|p| p.kubernetes_kinds > 0)
    }

    /// How many documents of each kind the last load read.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for doc in self.last_good.values().flat_map(|p| &p.docs) {
            *counts.entry(doc.kind()).or_default() += 1;
        }
        counts
    }

    /// The path this source reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads every file again and returns the objects (without `accepted`, which the caller
    /// carries between compiles); only files whose text changed are parsed again. Fails only
    /// when the root itself cannot be read.
    pub fn load(&mut self) -> Result<Snapshot, FileSourceError> {
        let files = list_files(&self.root).map_err(|source| FileSourceError::Unreadable {
            path: self.root.clone(),
            source,
        })?;
        let present: BTreeSet<&PathBuf> = files.iter().collect();
        self.last_good.retain(|p, _| present.contains(p));
        self.last_read.retain(|p, _| present.contains(p));

        // Each file's name as shown, what it yields now (its last good parse while it is
        // broken), and why it is broken.
        let mut read = Vec::with_capacity(files.len());
        for path in &files {
            let shown = self.display_name(path);
            let parsed = match std::fs::read_to_string(path) {
                Err(e) => {
                    self.last_read.remove(path);
                    Err(format!("cannot read: {e}"))
                }
                Ok(text) => match self.last_read.get(path) {
                    Some(read) if read.text == text => read.parsed.clone(),
                    _ => {
                        let parsed = parse_file(&text, &shown, self.mode).map(Arc::new);
                        let read = Read {
                            text,
                            parsed: parsed.clone(),
                        };
                        self.last_read.insert(path.clone(), read);
                        parsed
                    }
                },
            };
            let (parsed, broken) = match parsed {
                Ok(p) => {
                    self.last_good.insert(path.clone(), p.clone());
                    (p, None)
                }
                Err(message) => {
                    let kept = self.last_good.get(path).cloned();
                    let tail = if kept.is_some() {
                        "; its last good version keeps serving"
                    } else {
                        ""
                    };
                    (kept.unwrap_or_default(), Some(format!("{message}{tail}")))
                }
            };
            read.push((shown, parsed, broken));
        }
        let documents = read.iter().map(|(_, parsed, _)| parsed.docs.len()).sum();
        let mut collect = Collector::new(self.mode, documents);
        for (shown, parsed, broken) in &read {
            if let Some(message) = broken {
                collect.unreadable(shown, message.clone());
            }
            collect.add(parsed, shown);
        }
        Ok(collect.finish())
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

/// The objects of one text (as if it were the file `name`), without touching the file system:
/// what `load` makes of a directory holding only that file. For tests and fuzzing.
pub fn read_str(text: &str, name: &str, mode: Mode) -> Snapshot {
    let parsed = parse_file(text, name, mode);
    let mut collect = Collector::new(mode, parsed.as_ref().map_or(0, |p| p.docs.len()));
    match &parsed {
        Ok(parsed) => collect.add(parsed, name),
        Err(message) => collect.unreadable(name, message.clone()),
    }
    collect.finish()
}

/// Gathers the documents of every file into one snapshot: duplicates are reported, Kubernetes
/// objects go through the index.
struct Collector<'a> {
    mode: Mode,
    snap: Snapshot,
    index: Index,
    /// The file each identity was first read from (into `files`): hashed, as a sorted map's
    /// string comparisons cost ~1,900 instructions an insert at 2,000 objects; sized for every
    /// document up front and with a fast hash (names from the configuration, not from clients).
    seen: HashMap<Cow<'a, ObjectRef>, usize, foldhash::fast::RandomState>,
    files: Vec<String>,
    /// Our kinds, made into the snapshot's maps at once in `finish` (a sorted build).
    routes: Vec<(ObjectRef, Obj<RouteSpec>)>,
    backends: Vec<(ObjectRef, Obj<BackendSpec>)>,
    policies: Vec<(ObjectRef, Obj<RateLimitPolicySpec>)>,
}

impl<'a> Collector<'a> {
    /// A collector for `documents` documents in all.
    fn new(mode: Mode, documents: usize) -> Self {
        Self {
            mode,
            snap: Snapshot::default(),
            index: Index::new(None),
            seen: HashMap::with_capacity_and_hasher(documents, Default::default()),
            files: Vec::new(),
            // Most documents are Routes.
            routes: Vec::with_capacity(documents),
            backends: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// A file that is not YAML at all.
    fn unreadable(&mut self, file: &str, message: String) {
        self.snap.problems.push(Diagnostic {
            object: None,
            file: Some(file.to_owned()),
            field: String::new(),
            severity: Severity::Error,
            reason: Reason::Malformed,
            message,
        });
    }

    fn add(&mut self, parsed: &'a Parsed, file: &str) {
        let snap = &mut self.snap;
        snap.problems.extend_from_slice(&parsed.problems);
        let this = self.files.len();
        self.files.push(file.to_owned());
        for doc in &parsed.docs {
            if let Some(id) = doc.id() {
                match self.seen.entry(id) {
                    Entry::Occupied(seen) => {
                        let first = &self.files[*seen.get()];
                        snap.problems.push(Diagnostic {
                            file: Some(file.to_owned()),
                            ..Diagnostic::error(
                                seen.key(),
                                "metadata.name",
                                Reason::Duplicate,
                                format!(
                                    "defined more than once; the definition in {first} is used"
                                ),
                            )
                        });
                        continue;
                    }
                    Entry::Vacant(new) => {
                        new.insert(this);
                    }
                }
            }
            match doc {
                Doc::Route(o) => {
                    self.routes.push((o.meta.id.clone(), (**o).clone()));
                    None
                }
                Doc::Backend(o) => {
                    self.backends.push((o.meta.id.clone(), (**o).clone()));
                    None
                }
                Doc::Policy(o) => {
                    self.policies.push((o.meta.id.clone(), (**o).clone()));
                    None
                }
                Doc::Secret(o) => {
                    let key = (o.meta.id.namespace.to_string(), o.meta.id.name.to_string());
                    snap.secrets.insert(key, (*o.spec).clone()).map(|_| ())
                }
                Doc::ConfigMap(o) => {
                    let key = (o.meta.id.namespace.to_string(), o.meta.id.name.to_string());
                    snap.config_maps.insert(key, (*o.spec).clone()).map(|_| ())
                }
                Doc::Kube(k) => {
                    index_kube(&mut self.index, k);
                    None
                }
            };
        }
    }

    fn finish(mut self) -> Snapshot {
        // Identities are unique (duplicates were left out above).
        self.snap.routes = std::sync::Arc::new(self.routes.into_iter().collect());
        self.snap.backends = self.backends.into_iter().collect();
        self.snap.policies = self.policies.into_iter().collect();
        self.snap.now = unix_now();
        if self.mode == Mode::Kubernetes {
            // The cluster's objects, reduced as the controller reduces them, named by file.
            let kube = self.index.snapshot(Accepted::default());
            let snap = &mut self.snap;
            snap.services = kube.services;
            snap.ingresses = kube.ingresses;
            snap.ingress_classes = kube.ingress_classes;
            snap.secrets.extend(kube.secrets);
            snap.config_maps.extend(kube.config_maps);
            let file = |id: &ObjectRef| self.seen.get(id).map(|&i| Arc::from(&*self.files[i]));
            for (id, obj) in snap.ingresses.iter_mut() {
                obj.meta.file = file(id);
            }
            for (id, obj) in snap.services.iter_mut() {
                obj.meta.file = file(id);
            }
        }
        self.snap
    }
}

/// Feeds one Kubernetes object to the index, as its watch would.
fn index_kube(index: &mut Index, doc: &KubeDoc) {
    let _ = match doc {
        KubeDoc::Service(s) => index.apply_service(s),
        KubeDoc::Ingress(i) => index.apply_ingress(i),
        KubeDoc::IngressClass(c) => index.apply_ingress_class(c),
        KubeDoc::Secret(secret) => index.apply_secret(secret),
        KubeDoc::ConfigMap(map) => index.apply_config_map(map),
        KubeDoc::EndpointSlice(_) => crate::controller::kube::index::Change::None,
    };
}

/// Parses a multi-document YAML file. `Err` means the file is not YAML at all. A `kind: List`
/// (as `kubectl get -o yaml` writes) counts as its items.
fn parse_file(text: &str, file: &str, mode: Mode) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut documents = Vec::new();
    let shared: Arc<str> = Arc::from(file);
    let mut namespaces = BTreeSet::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(de).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        let is_list = value.get("kind").and_then(|k| k.as_str()) == Some("List");
        match value.get("items").and_then(|v| v.as_sequence()) {
            Some(items) if is_list => documents.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(j, item)| (format!("documents[{i}].items[{j}]"), item.clone())),
            ),
            _ => documents.push((format!("documents[{i}]"), value)),
        }
    }
    for (at, value) in documents {
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let ours = matches!(kind, "Route" | "Backend" | "RateLimitPolicy");
        let read = match mode {
            Mode::Kubernetes if !ours => manifests::read(value).map(|k| Doc::Kube(Box::new(k))),
            _ => {
                // A standalone configuration holds its TLS Secrets itself.
                if !matches!(kind, "Secret" | "ConfigMap") && manifests::is_kubernetes_kind(kind) {
                    parsed.kubernetes_kinds += 1;
                }
                read_doc(value)
            }
        };
        match read {
            Ok(mut doc) => {
                let meta = match &mut doc {
                    Doc::Route(o) => Some(&mut o.meta),
                    Doc::Backend(o) => Some(&mut o.meta),
                    Doc::Policy(o) => Some(&mut o.meta),
                    Doc::Secret(o) => Some(&mut o.meta),
                    Doc::ConfigMap(o) => Some(&mut o.meta),
                    Doc::Kube(_) => None,
                };
                if let Some(meta) = meta {
                    meta.file = Some(shared.clone());
                    meta.id.share_namespace(&mut namespaces);
                }
                parsed.docs.push(doc);
            }
            Err(d) => {
                let d = Diagnostic {
                    file: Some(file.to_owned()),
                    ..*d
                };
                if d.object.is_none() {
                    let field = if d.field.is_empty() {
                        at
                    } else {
                        format!("{at}.{}", d.field)
                    };
                    parsed.problems.push(Diagnostic { field, ..d });
                } else {
                    parsed.problems.push(d);
                }
            }
        }
    }
    // In identity order (a stable sort: of two definitions of one object, the first stays
    // first), so that a load's sorted maps are built by merging each file's run rather than by
    // sorting every object again.
    parsed
        .docs
        .sort_by_cached_key(|d| d.id().map(Cow::into_owned));
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
            "every document needs a kind (Route, Backend, RateLimitPolicy, Secret or ConfigMap)"
                .into(),
        ));
    };
    let kind = match kind_name.as_str() {
        "Route" => Kind::Route,
        "Backend" => Kind::Backend,
        "RateLimitPolicy" => Kind::RateLimitPolicy,
        "Secret" => Kind::Secret,
        "ConfigMap" => Kind::ConfigMap,
        other if manifests::is_kubernetes_kind(other) => {
            return Err(unnamed(
                "kind",
                format!(
                    "{other:?} is read only in Kubernetes mode (use tidegate validate --kubernetes for a manifest set)"
                ),
            ));
        }
        other => {
            return Err(unnamed(
                "kind",
                format!(
                    "{other:?} is not a kind Tidegate reads (Route, Backend, RateLimitPolicy, Secret, ConfigMap)"
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

    let api_version = if matches!(kind, Kind::Secret | Kind::ConfigMap) {
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
                spec: std::sync::Arc::new(r.spec),
            }))
        }
        Kind::Backend => {
            let b: Backend = typed(value).map_err(to_diag)?;
            Doc::Backend(Box::new(Obj {
                meta: meta_of(&b.metadata),
                spec: std::sync::Arc::new(b.spec),
            }))
        }
        Kind::RateLimitPolicy => {
            let p: RateLimitPolicy = typed(value).map_err(to_diag)?;
            Doc::Policy(Box::new(Obj {
                meta: meta_of(&p.metadata),
                spec: std::sync::Arc::new(p.spec),
            }))
        }
        Kind::Secret => {
            let s: k8s_openapi::api::core::v1::Secret = typed(value).map_err(to_diag)?;
            Doc::Secret(Box::new(Obj {
                meta: meta_of(&s.metadata),
                spec: std::sync::Arc::new(secret_info(&s)),
            }))
        }
        Kind::ConfigMap => {
            let m: k8s_openapi::api::core::v1::ConfigMap = typed(value).map_err(to_diag)?;
            Doc::ConfigMap(Box::new(Obj {
                meta: meta_of(&m.metadata),
                spec: std::sync::Arc::new(config_map_info(&m)),
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

/// What TLS reads of a Secret: its type, `tls.crt`, `tls.key` and `ca.crt` from `data` (base64, decoded
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
        ca: get("ca.crt"),
        auth: get("auth"),
        jwks: get("jwks"),
        has_crl: get("ca.crl").is_some(),
    }
}

/// What TLS reads of a ConfigMap: `ca.crt` from `data` (text), else `binaryData`.
pub fn config_map_info(m: &k8s_openapi::api::core::v1::ConfigMap) -> ConfigMapInfo {
    let text = m.data.as_ref().and_then(|d| d.get("ca.crt"));
    ConfigMapInfo {
        ca: match text {
            Some(t) => Some(bytes::Bytes::from(t.clone().into_bytes())),
            None => m
                .binary_data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(|v| bytes::Bytes::from(v.0.clone())),
        },
    }
}

/// Now, in Unix seconds (certificate dates are checked against it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn route(host: &str) -> String {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\n\
             spec:\n  hostnames: [{host}]\n  rules:\n    - filters: [{{ directResponse: {{ status: 200 }} }}]\n"
        )
    }

    fn hostnames(snap: &Snapshot) -> Vec<String> {
        snap.routes
            .values()
            .flat_map(|r| r.spec.hostnames.iter().map(|h| h.to_string()))
            .collect()
    }

    /// A file's objects are kept in identity order, whatever order it lists them in; of two
    /// definitions of one object the first in the file is used and the second reported, and
    /// the objects of one namespace share its name.
    #[test]
    fn a_files_objects_are_ordered_by_identity_and_the_first_of_two_definitions_wins() {
        let named = |name: &str, host: &str| {
            route(host).replace("name: r }", &format!("name: {name}, namespace: shop }}"))
        };
        let text = [
            named("b", "first-b.test"),
            named("a", "a.test"),
            named("b", "second-b.test"),
            named("c", "c.test"),
        ]
        .join("---\n");
        let snap = read_str(&text, "routes.yaml", Mode::Standalone);
        let names: Vec<&str> = snap.routes.keys().map(|id| &*id.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(hostnames(&snap), ["a.test", "first-b.test", "c.test"]);
        let duplicates: Vec<_> = snap
            .problems
            .iter()
            .filter(|d| d.reason == Reason::Duplicate)
            .collect();
        assert_eq!(duplicates.len(), 1, "{:?}", snap.problems);
        assert_eq!(duplicates[0].object.as_ref().map(|id| &*id.name), Some("b"));
        let ids: Vec<_> = snap.routes.keys().collect();
        assert!(Arc::ptr_eq(&ids[0].namespace, &ids[2].namespace));
    }

    /// Only a file whose text changed is parsed again; any change of text is seen, even one
    /// that keeps the file's size and lands within the file system's timestamp granularity.
    #[test]
    fn unchanged_files_are_not_parsed_again_and_every_change_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, route("a.test")).unwrap();
        std::fs::write(&b, route("b.test").replace("name: r", "name: s")).unwrap();
        let mut source = FileSource::new(dir.path());
        let first = source.load().unwrap();
        let spec_of = |snap: &Snapshot, name: &str| {
            let (_, obj) = snap
                .routes
                .iter()
                .find(|(id, _)| &*id.name == name)
                .unwrap();
            obj.spec.clone()
        };

        // Same size, other text, written at once: seen.
        std::fs::write(&a, route("c.test")).unwrap();
        let second = source.load().unwrap();
        assert_eq!(hostnames(&second), ["c.test", "b.test"]);
        // b.yaml did not change: its Route is the one parsed before, not a new parse.
        assert!(Arc::ptr_eq(&spec_of(&first, "s"), &spec_of(&second, "s")));
        assert!(!Arc::ptr_eq(&spec_of(&first, "r"), &spec_of(&second, "r")));

        // A broken file keeps its last good version, and stays reported while it is broken.
        std::fs::write(&a, "kind: [").unwrap();
        for _ in 0..2 {
            let broken = source.load().unwrap();
            assert_eq!(hostnames(&broken), ["c.test", "b.test"]);
            assert!(
                broken
                    .problems
                    .iter()
                    .any(|p| p.file.as_deref() == Some("a.yaml"))
            );
        }
        // A removed file's objects go.
        std::fs::remove_file(&a).unwrap();
        assert_eq!(hostnames(&source.load().unwrap()), ["b.test"]);
        // And one put back with the text it had is read again.
        std::fs::write(&a, route("c.test")).unwrap();
        assert_eq!(hostnames(&source.load().unwrap()), ["c.test", "b.test"]);
    }
}
