//! The in-code source: Routes, Backends and RateLimitPolicies built in Rust, no YAML.
//!
//! The objects are the same typed CRDs the file and Kubernetes sources read
//! ([`Route`], [`Backend`], [`RateLimitPolicy`]), and they are compiled the same way: a bad
//! object becomes a diagnostic on that object, and its last accepted version keeps serving.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::file::{DEFAULT_NAMESPACE, FileSourceError};
use super::names;
use super::reload::Source;
use super::snapshot::{Meta, Obj, Snapshot};
use crate::api::{Backend, RateLimitPolicy, Route};
use crate::model::{Diagnostic, Kind, ObjectRef, Reason, Severity};

/// A set of objects built in code (see `Gateway::builder().objects(..)`).
///
/// ```
/// use tidegate::api::Backend;
/// use tidegate::controller::code::Objects;
///
/// let backend: Backend = serde_json::from_value(serde_json::json!({
///     "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
///     "metadata": {"name": "api"},
///     "spec": {"endpoints": ["127.0.0.1:3000"]}
/// })).unwrap();
/// let objects = Objects::new().backend(backend);
/// assert_eq!(objects.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Objects {
    routes: Vec<Route>,
    backends: Vec<Backend>,
    policies: Vec<RateLimitPolicy>,
}

impl Objects {
    /// No objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a Route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a Backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backends.push(backend);
        self
    }

    /// Adds a RateLimitPolicy.
    pub fn policy(mut self, policy: RateLimitPolicy) -> Self {
        self.policies.push(policy);
        self
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.routes.len() + self.backends.len() + self.policies.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects as the compiler reads them. An object without a valid name, or a second
    /// object with the same kind, namespace and name, is reported and left out.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for r in &self.routes {
            if let Some(meta) = meta(Kind::Route, &r.metadata, &mut snap.problems) {
                insert(
                    std::sync::Arc::make_mut(&mut snap.routes),
                    &mut snap.problems,
                    meta,
                    r.spec.clone(),
                );
            }
        }
        for b in &self.backends {
            if let Some(meta) = meta(Kind::Backend, &b.metadata, &mut snap.problems) {
                insert(&mut snap.backends, &mut snap.problems, meta, b.spec.clone());
            }
        }
        for p in &self.policies {
            if let Some(meta) = meta(Kind::RateLimitPolicy, &p.metadata, &mut snap.problems) {
                insert(&mut snap.policies, &mut snap.problems, meta, p.spec.clone());
            }
        }
        snap
    }
}

/// The identity of an object built in code, or a diagnostic on why it has none.
fn meta(kind: Kind, m: &ObjectMeta, problems: &mut Vec<Diagnostic>) -> Option<Meta> {
    let Some(name) = m.name.clone().filter(|n| !n.is_empty()) else {
        problems.push(Diagnostic {
            object: None,
            file: None,
            field: "metadata.name".into(),
            severity: Severity::Error,
            reason: Reason::Malformed,
            message: format!("a {kind} built in code needs metadata.name; it is left out"),
        });
        return None;
    };
    let namespace = m
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let id = ObjectRef::new(kind, namespace, name);
    let bad = names::dns_subdomain(&id.name)
        .map_err(|e| ("metadata.name", e))
        .and_then(|()| names::dns_label(&id.namespace).map_err(|e| ("metadata.namespace", e)));
    if let Err((field, e)) = bad {
        problems.push(Diagnostic::error(&id, field, Reason::Malformed, e));
        return None;
    }
    Some(Meta {
        id,
        file: None,
        created: m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        generation: m.generation,
    })
}

fn insert<S>(
    into: &mut BTreeMap<ObjectRef, Obj<S>>,
    problems: &mut Vec<Diagnostic>,
    meta: Meta,
    spec: S,
) {
    if into.contains_key(&meta.id) {
        problems.push(Diagnostic::error(
            &meta.id,
            "metadata.name",
            Reason::Duplicate,
            "defined more than once in code; the first definition is used".to_owned(),
        ));
        return;
    }
    into.insert(meta.id.clone(), Obj::new(meta, spec));
}

/// The objects a running gateway serves; replaced by `Gateway::apply`.
#[derive(Clone, Debug, Default)]
pub struct CodeSource {
    objects: Arc<Mutex<Objects>>,
}

impl CodeSource {
    /// A source serving `objects`.
    pub fn new(objects: Objects) -> Self {
        Self {
            objects: Arc::new(Mutex::new(objects)),
        }
    }

    /// Replaces the objects (the caller then triggers a reload).
    pub fn replace(&self, objects: Objects) {
        *self.objects.lock().unwrap_or_else(|e| e.into_inner()) = objects;
    }
}

impl Source for CodeSource {
    fn kind(&self) -> &'static str {
        "code"
    }

    fn load(&mut self) -> Result<Snapshot, FileSourceError> {
        Ok(self
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendSpec, RouteSpec};

    fn backend(ns: Option<&str>, name: &str) -> Backend {
        let mut b: Backend = serde_json::from_value(serde_json::json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
            "metadata": {"name": name},
            "spec": {"endpoints": ["127.0.0.1:3000"]}
        }))
        .unwrap();
        b.metadata.namespace = ns.map(str::to_owned);
        b
    }

    #[test]
    fn objects_get_the_default_namespace_and_keep_their_specs() {
        let b = backend(None, "api");
        let spec: BackendSpec = b.spec.clone();
        let snap = Objects::new().backend(b).snapshot();
        let id = ObjectRef::new(Kind::Backend, "default", "api");
        assert_eq!(*snap.backends[&id].spec, spec);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    }

    #[test]
    fn bad_names_and_duplicates_are_reported_and_left_out() {
        let nameless = Route::new("", RouteSpec::default());
        let snap = Objects::new()
            .backend(backend(Some("a"), "api"))
            .backend(backend(Some("a"), "api"))
            .backend(backend(Some("Bad_NS"), "api"))
            .backend(backend(None, "UPPER"))
            .route(nameless)
            .snapshot();
        assert_eq!(snap.backends.len(), 1);
        let fields: Vec<(Option<String>, &str, Reason)> = snap
            .problems
            .iter()
            .map(|d| {
                (
                    d.object.as_ref().map(|o| o.to_string()),
                    d.field.as_str(),
                    d.reason,
                )
            })
            .collect();
        assert_eq!(fields.len(), 4, "{fields:?}");
        assert!(
            fields.iter().any(|f| f.1 == "metadata.namespace"),
            "{fields:?}"
        );
        assert!(
            fields.iter().any(|f| f.2 == Reason::Duplicate),
            "{fields:?}"
        );
        assert!(
            fields
                .iter()
                .any(|f| f.0.is_none() && f.1 == "metadata.name"),
            "{fields:?}"
        );
    }
}
