//! Kubernetes objects the compiler reads besides ours, reduced to the few fields that matter.
//!
//! The Kubernetes source (`controller::kube::index`) produces these from Services, Ingresses and
//! IngressClasses; nothing here names a Kubernetes type, so the compiler stays a pure function of
//! plain data.

use std::collections::BTreeMap;

/// A Service port, as routing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// Port name (`""` when unnamed); EndpointSlice ports carry the same name.
    pub name: String,
    /// The Service port number.
    pub port: u16,
    /// Its protocol as the Service says: `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: String,
}

/// The canary annotations of a Service, as written (checked by the compiler).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CanaryAnnotations {
    /// `tidegate.dev/canary-of`.
    pub of: Option<String>,
    /// `tidegate.dev/canary-weight`.
    pub weight: Option<String>,
    /// `tidegate.dev/canary-header`.
    pub header: Option<String>,
    /// `tidegate.dev/canary-cookie`.
    pub cookie: Option<String>,
}

/// A Service: its ports and canary annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Its ports.
    pub ports: Vec<ServicePortInfo>,
    /// Its canary annotations.
    pub canary: CanaryAnnotations,
}

impl ServiceInfo {
    /// The port a reference means: by number (the one of `protocol`, `TCP` or `UDP`, when
    /// the Service has the number for both, as DNS Services do), or by name.
    pub fn port(&self, port: &PortRef, protocol: &str) -> Option<&ServicePortInfo> {
        match port {
            PortRef::Number(n) => {
                let mut same = self.ports.iter().filter(|p| p.port == *n);
                let first = same.clone().next();
                same.find(|p| p.protocol == protocol).or(first)
            }
            PortRef::Name(name) => self.ports.iter().find(|p| &p.name == name),
        }
    }
}

/// A Service port named by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortRef {
    /// `port: 8080`.
    Number(u16),
    /// `port: http`.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Where an Ingress path (or its default backend) sends traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngressBackendInfo {
    /// A Service port.
    Service {
        /// Service name, in the Ingress's namespace.
        name: String,
        /// `port.number` or `port.name`; `None` when neither is set.
        port: Option<PortRef>,
    },
    /// A `resource` backend (not supported).
    Resource,
}

/// One path of an Ingress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressPathInfo {
    /// The path (`None`: every path).
    pub path: Option<String>,
    /// `Prefix`, `Exact` or `ImplementationSpecific`.
    pub path_type: String,
    /// Where it goes.
    pub backend: IngressBackendInfo,
}

/// One rule of an Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressRuleInfo {
    /// The host (`None`: every host).
    pub host: Option<String>,
    /// Its paths.
    pub paths: Vec<IngressPathInfo>,
}

/// A TLS entry of an Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressTlsInfo {
    /// Host names the certificate is for (none: every host of the Ingress's rules).
    pub hosts: Vec<String>,
    /// The `kubernetes.io/tls` Secret holding it (none: the default certificate serves).
    pub secret_name: Option<String>,
}

/// An Ingress, reduced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressInfo {
    /// `spec.ingressClassName`.
    pub class_name: Option<String>,
    /// The legacy `kubernetes.io/ingress.class` annotation.
    pub class_annotation: Option<String>,
    /// `spec.defaultBackend`.
    pub default_backend: Option<IngressBackendInfo>,
    /// `spec.rules`.
    pub rules: Vec<IngressRuleInfo>,
    /// `spec.tls`.
    pub tls: Vec<IngressTlsInfo>,
    /// Its annotations under `nginx.ingress.kubernetes.io/` and `tidegate.dev/` (full keys).
    pub annotations: BTreeMap<String, String>,
}

/// An IngressClass, reduced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressClassInfo {
    /// `spec.controller`.
    pub controller: String,
    /// The `ingressclass.kubernetes.io/is-default-class: "true"` annotation.
    pub is_default: bool,
}

/// IngressClasses by name (cluster-scoped).
pub type IngressClasses = BTreeMap<String, IngressClassInfo>;

/// The Secret type that holds a certificate and its key.
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

/// A Secret, reduced to what TLS reads: its type and the keys `tls.crt`, `tls.key` and
/// `ca.crt` (decoded bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretInfo {
    /// The Secret's `type`.
    pub type_: Option<String>,
    /// `tls.crt`, when present.
    pub cert: Option<bytes::Bytes>,
    /// `tls.key`, when present.
    pub key: Option<bytes::Bytes>,
    /// `ca.crt` (a CA bundle that verifies backends), when present.
    pub ca: Option<bytes::Bytes>,
    /// `auth` (htpasswd content for basic authentication), when present.
    pub auth: Option<bytes::Bytes>,
    /// `jwks` (a JWKS document for JWT authentication), when present.
    pub jwks: Option<bytes::Bytes>,
    /// Whether it has `ca.crl` (a revocation list beside `ca.crt`, as ingress-nginx's
    /// `auth-tls-secret` may hold), which Tidegate does not apply yet.
    pub has_crl: bool,
}

/// What TLS reads of a ConfigMap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigMapInfo {
    /// `ca.crt` (a CA bundle), when present (`data`, else `binaryData`).
    pub ca: Option<bytes::Bytes>,
}
