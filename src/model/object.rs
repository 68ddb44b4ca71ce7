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

/// Kind, namespace and name: the stable identity of one object. Ordered by kind, then namespace,
/// then name; parts that share one allocation (a source hands every object of a namespace the
/// same one) compare equal without reading their bytes.
#[derive(Clone, Debug, Eq, Serialize)]
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

    /// Takes the allocation `namespaces` holds for its namespace's name (adding its own when
    /// there is none), so that identities in one namespace compare it by address.
    pub fn share_namespace(
        &mut self,
        namespaces: &mut std::collections::BTreeSet<std::sync::Arc<str>>,
    ) {
        match namespaces.get(&*self.namespace) {
            Some(n) => self.namespace = n.clone(),
            None => {
                namespaces.insert(self.namespace.clone());
            }
        }
    }

    /// [`Self::key`] as an `Arc<str>`, in one allocation: a `String` made into an `Arc<str>`
    /// is two (and a copy), once per Route a compile.
    pub fn key_arc(&self) -> std::sync::Arc<str> {
        const ON_STACK: usize = 320;
        let (ns, name) = (self.namespace.as_bytes(), self.name.as_bytes());
        let len = ns.len() + 1 + name.len();
        if len > ON_STACK {
            return self.key().into();
        }
        let mut buf = [0u8; ON_STACK];
        buf[..ns.len()].copy_from_slice(ns);
        buf[ns.len()] = b'/';
        buf[ns.len() + 1..len].copy_from_slice(name);
        // Two strings and an ASCII byte: valid UTF-8.
        std::str::from_utf8(&buf[..len]).map_or_else(|_| self.key().into(), std::sync::Arc::from)
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

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        // `Arc<str>`'s own `==` reads the bytes even of one allocation (std settles by address
        // only for sized types): two maps that share their identities, walked side by side,
        // compared every name byte by byte.
        fn part(a: &std::sync::Arc<str>, b: &std::sync::Arc<str>) -> bool {
            std::sync::Arc::ptr_eq(a, b) || **a == **b
        }
        self.kind == other.kind
            && part(&self.namespace, &other.namespace)
            && part(&self.name, &other.name)
    }
}

/// By value, as equality compares.
impl std::hash::Hash for ObjectRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Sorted maps of 10,000 objects compare identities on every step of every compile.
        fn part(a: &std::sync::Arc<str>, b: &std::sync::Arc<str>) -> std::cmp::Ordering {
            if std::sync::Arc::ptr_eq(a, b) {
                std::cmp::Ordering::Equal
            } else {
                a.cmp(b)
            }
        }
        self.kind
            .cmp(&other.kind)
            .then_with(|| part(&self.namespace, &other.namespace))
            .then_with(|| part(&self.name, &other.name))
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Kind, ObjectRef};

    /// Shared and separate allocations order alike: by kind, then namespace, then name.
    #[test]
    fn identities_order_by_kind_namespace_and_name_whether_or_not_they_share_allocations() {
        let shop: Arc<str> = Arc::from("shop");
        let shared = |kind, name: &str| ObjectRef::new(kind, shop.clone(), name);
        let separate = |kind, ns: &str, name: &str| ObjectRef::new(kind, ns, name);
        let mut ids = [
            shared(Kind::Backend, "a"),
            separate(Kind::Route, "shop", "b"),
            shared(Kind::Route, "b"),
            separate(Kind::Route, "apps", "z"),
            shared(Kind::Route, "a"),
            separate(Kind::Route, "shop", "a"),
        ];
        ids.sort();
        let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "Route apps/z",
                "Route shop/a",
                "Route shop/a",
                "Route shop/b",
                "Route shop/b",
                "Backend shop/a",
            ]
        );
        assert_eq!(shared(Kind::Route, "a"), separate(Kind::Route, "shop", "a"));
        // Equality settles shared parts by address and still reads every part.
        let a: Arc<str> = Arc::from("a");
        let one = ObjectRef::new(Kind::Route, shop.clone(), a.clone());
        assert_eq!(one, one.clone());
        assert_ne!(one, ObjectRef::new(Kind::Backend, shop.clone(), a.clone()));
        assert_ne!(one, ObjectRef::new(Kind::Route, "apps", a.clone()));
        assert_ne!(one, ObjectRef::new(Kind::Route, shop.clone(), "b"));
        assert_eq!(
            shared(Kind::Route, "a").cmp(&separate(Kind::Route, "shop", "a")),
            std::cmp::Ordering::Equal
        );
    }
}
