//! Identities of configuration objects, shared by diagnostics, statuses and runtime state.

use std::fmt;

use serde::Serialize;

/// The kinds of object the compiler reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// `tidegate.dev` Route.
    Route,
    /// `tidegate.dev` Backend.
    Backend,
    /// `tidegate.dev` RateLimitPolicy.
    RateLimitPolicy,
    /// A core Service (a backendRef of kind Service, a canary, an Ingress backend).
    Service,
    /// A `networking.k8s.io` Ingress.
    Ingress,
    /// A core Secret (a certificate and its key, a CA bundle, htpasswd, a JWKS).
    Secret,
    /// A core ConfigMap (a CA bundle).
    ConfigMap,
}

impl Kind {
    /// The kind as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Route => "Route",
            Kind::Backend => "Backend",
            Kind::RateLimitPolicy => "RateLimitPolicy",
            Kind::Service => "Service",
            Kind::Ingress => "Ingress",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind, namespace and name: the stable identity of one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// Its namespace (`default` when a file names none).
    pub namespace: std::sync::Arc<str>,
    /// Its name.
    pub name: std::sync::Arc<str>,
}

impl ObjectRef {
    /// An identity from its parts.
    pub fn new(
        kind: Kind,
        namespace: impl Into<std::sync::Arc<str>>,
        name: impl Into<std::sync::Arc<str>>,
    ) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `namespace/name`, the form used in metrics labels and logs.
    pub fn key(&self) -> String {
        // Sized up front: `format!` grows the string piece by piece.
        let mut key = String::with_capacity(self.namespace.len() + 1 + self.name.len());
        key.push_str(&self.namespace);
        key.push('/');
        key.push_str(&self.name);
        key
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}
