//! ingress-nginx's `ssl-passthrough: "true"` → TLS passthrough Routes (`protocol: TLS`) made
//! from the Ingress: TLS connections whose server name (SNI) is one of its hosts go, still
//! encrypted, to the Service of that host's `/` path (else the Ingress's `defaultBackend`), as
//! ingress-nginx's passthrough proxy sends them. Its other paths are not used (ingress-nginx
//! logs that it ignores them; here each is a warning), and neither are its other annotations
//! (the gateway never sees the requests). The compiler compiles the Routes made here through
//! the TLS Route compiler, and `tidegate migrate` writes them out.

use std::collections::BTreeMap;

use super::fields::{self, Findings};
use super::ingress_translate::{Outcome, boolean, get};
use crate::api::{self, RouteProtocol, RouteSpec};
use crate::controller::objects::{IngressBackendInfo, IngressInfo, PortRef};
use crate::model::{Diagnostic, Reason, Severity};

/// The annotation read here (short name).
pub const NAMES: &[&str] = &["ssl-passthrough"];

/// The field of annotation `key`, for messages.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// A finding that does not reject the Ingress.
fn warn(f: &mut Findings<'_>, at: String, message: String) {
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(f.id(), at, Reason::Invalid, message)
    });
}

/// Whether `ssl-passthrough` is `"true"`, for an Ingress already checked.
pub fn on(a: &BTreeMap<String, String>) -> bool {
    get(a, "ssl-passthrough").is_some_and(|(_, v)| boolean(v) == Some(true))
}

/// Reads `ssl-passthrough`: whether it is on (its outcome to `outcomes`); with it on, every
/// other annotation is a warning that it has no effect.
pub fn read(
    a: &BTreeMap<String, String>,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) -> bool {
    let Some((key, v)) = get(a, "ssl-passthrough") else {
        return false;
    };
    let Some(on) = boolean(v) else {
        f.invalid(field(&key), format!("{v:?} must be \"true\" or \"false\""));
        return false;
    };
    if !on {
        outcomes.insert(key, Outcome::Carried);
        return false;
    }
    outcomes.insert(
        key.clone(),
        Outcome::Approximated(
            "a Route with protocol: TLS on the HTTPS listener for the Ingress's hosts, to the \
             Service of each host's / path (else defaultBackend); plain HTTP for those hosts is \
             not served by this Ingress (ingress-nginx serves its paths there too)"
                .to_owned(),
        ),
    );
    let prefixes = crate::api::annotations::INGRESS_ANNOTATION_PREFIXES;
    for other in a.keys() {
        let short = prefixes.iter().find_map(|p| other.strip_prefix(p));
        if short.is_some_and(|s| s != "ssl-passthrough") {
            warn(
                f,
                field(other),
                format!(
                    "it has no effect with {key}: the connections are passed through \
                     undecrypted (as in ingress-nginx)"
                ),
            );
        }
    }
    true
}

/// One TLS passthrough Route of an Ingress: host names to one Service port.
#[derive(Clone, Debug, PartialEq)]
pub struct Passthrough<'a> {
    /// The hosts whose `/` (or the default) goes to the backend.
    pub hostnames: Vec<String>,
    /// The Ingress backend.
    pub backend: &'a IngressBackendInfo,
    /// Its field, for messages.
    pub at: String,
}

/// The passthrough Routes of Ingress `ing` (hosts grouped by backend, in the Ingress's
/// order); problems go to `f`.
pub fn plan<'a>(ing: &'a IngressInfo, f: &mut Findings<'_>) -> Vec<Passthrough<'a>> {
    let mut out: Vec<Passthrough<'a>> = Vec::new();
    if !ing.tls.is_empty() {
        warn(
            f,
            "spec.tls".to_owned(),
            "it has no effect with ssl-passthrough: the backends terminate TLS with their own \
             certificates"
                .to_owned(),
        );
    }
    for (ri, rule) in ing.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let Some(raw) = &rule.host else {
            warn(
                f,
                format!("{at}.host"),
                "a rule without a host is not passed through: TLS passthrough goes by server \
                 name"
                    .to_owned(),
            );
            continue;
        };
        let host = match fields::hostname(raw, true) {
            Ok(h) => h,
            Err(e) => {
                f.invalid(format!("{at}.host"), e);
                continue;
            }
        };
        let mut root = None;
        for (pi, p) in rule.paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{pi}]");
            if p.path.as_deref().unwrap_or("/") == "/" && root.is_none() {
                root = Some((&p.backend, format!("{pat}.backend")));
            } else {
                warn(
                    f,
                    format!("{pat}.path"),
                    "ignored with ssl-passthrough: the connection goes to the backend of / \
                     (as in ingress-nginx)"
                        .to_owned(),
                );
            }
        }
        let chosen = root.or_else(|| {
            ing.default_backend
                .as_ref()
                .map(|b| (b, "spec.defaultBackend".to_owned()))
        });
        let Some((backend, at)) = chosen else {
            warn(
                f,
                format!("{at}.http.paths"),
                format!(
                    "{host} is not passed through: ssl-passthrough sends a host to the backend \
                     of its path / (or spec.defaultBackend), and it has neither"
                ),
            );
            continue;
        };
        match out.iter_mut().find(|p| p.backend == backend) {
            Some(p) if !p.hostnames.contains(&host) => p.hostnames.push(host),
            Some(_) => {}
            None => out.push(Passthrough {
                hostnames: vec![host],
                backend,
                at,
            }),
        }
    }
    if out.is_empty() && f.ok() {
        f.invalid(
            "spec.rules",
            "ssl-passthrough needs a rule with a host whose path / (or spec.defaultBackend) \
             names a Service",
        );
    }
    out
}

impl Passthrough<'_> {
    /// The Route: `protocol: TLS`, the hosts, the Service port numbered `port` (the
    /// compiler's, resolved), else as the Ingress names it (`None`: named; the caller writes a
    /// Backend).
    pub fn route(&self, port: Option<u16>) -> Option<RouteSpec> {
        let IngressBackendInfo::Service { name, .. } = self.backend else {
            return None;
        };
        Some(RouteSpec {
            protocol: RouteProtocol::Tls,
            hostnames: self.hostnames.clone(),
            backend_refs: vec![api::BackendRef {
                name: name.clone(),
                kind: Some("Service".to_owned()),
                port,
                ..api::BackendRef::default()
            }],
            ..RouteSpec::default()
        })
    }

    /// The Service port as the Ingress names it.
    pub fn port(&self) -> Option<&PortRef> {
        match self.backend {
            IngressBackendInfo::Service { port, .. } => port.as_ref(),
            IngressBackendInfo::Resource => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::objects::{IngressPathInfo, IngressRuleInfo};
    use crate::model::{Kind, ObjectRef};

    fn backend(name: &str) -> IngressBackendInfo {
        IngressBackendInfo::Service {
            name: name.to_owned(),
            port: Some(PortRef::Number(443)),
        }
    }

    fn rule(host: &str, paths: &[(&str, &str)]) -> IngressRuleInfo {
        IngressRuleInfo {
            host: Some(host.to_owned()),
            paths: paths
                .iter()
                .map(|(p, svc)| IngressPathInfo {
                    path: Some((*p).to_owned()),
                    path_type: "Prefix".to_owned(),
                    backend: backend(svc),
                })
                .collect(),
        }
    }

    #[test]
    fn hosts_go_to_the_backend_of_their_root_path_grouped_by_backend() {
        let ing = IngressInfo {
            rules: vec![
                rule("a.example.com", &[("/api", "api"), ("/", "tls-app")]),
                rule("b.example.com", &[("/", "tls-app")]),
                rule("c.example.com", &[("/x", "x")]),
            ],
            default_backend: Some(backend("fallback")),
            ..IngressInfo::default()
        };
        let id = ObjectRef::new(Kind::Ingress, "shop", "pt");
        let mut d = Vec::new();
        let plan = plan(&ing, &mut Findings::new(&id, &mut d));
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].hostnames, ["a.example.com", "b.example.com"]);
        assert_eq!(plan[0].backend, &backend("tls-app"));
        assert_eq!(plan[1].hostnames, ["c.example.com"]);
        assert_eq!(plan[1].backend, &backend("fallback"));
        // /api and /x are ignored, each with a warning.
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.severity == Severity::Warning));
        let r = plan[0].route(Some(443)).unwrap();
        assert_eq!(r.protocol, RouteProtocol::Tls);
        assert_eq!(r.backend_refs[0].port, Some(443));
    }

    #[test]
    fn other_annotations_have_no_effect_with_it() {
        let a: BTreeMap<String, String> = [
            ("nginx.ingress.kubernetes.io/ssl-passthrough", "true"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let id = ObjectRef::new(Kind::Ingress, "shop", "pt");
        let mut d = Vec::new();
        let mut outcomes = BTreeMap::new();
        assert!(read(&a, &mut outcomes, &mut Findings::new(&id, &mut d)));
        assert!(on(&a));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].field.contains("rewrite-target"), "{d:?}");
    }
}
