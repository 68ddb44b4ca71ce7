//! An Ingress as Routes, Backends and RateLimitPolicies that behave the same (`tidegate
//! migrate`), from the same [`translate`] and [`plan`] that serve it.

use super::fields::Findings;
use super::ingress_translate::{Outcome, Translation, get, plan, translate};
use crate::api::{self, RouteRule};
use crate::controller::objects::{IngressBackendInfo, IngressInfo};
use crate::controller::snapshot::Obj;
use crate::model::{Diagnostic, ObjectRef};
use std::collections::BTreeMap;

/// An Ingress written as our objects (`tidegate migrate`).
#[derive(Clone, Debug, Default)]
pub struct Migrated {
    /// Routes by name, in the Ingress's namespace: one per host (with its aliases).
    pub routes: Vec<(String, api::RouteSpec)>,
    /// Backends by name, for Service ports named rather than numbered.
    pub backends: Vec<(String, api::BackendSpec)>,
    /// RateLimitPolicies by name (`limit-rps`, `limit-rpm`): one per Route.
    pub policies: Vec<(String, api::RateLimitPolicySpec)>,
    /// What became of each annotation read, by full key; then what else differs.
    pub outcomes: BTreeMap<String, Outcome>,
    /// What the objects do differently from the Ingress, besides the annotations.
    pub notes: Vec<String>,
    /// A canary Ingress: the main Ingresses whose Routes carry its backend (it has no objects
    /// of its own).
    pub canary_of: Option<Vec<String>>,
}

/// Ingress `obj` (one of `all`, the Ingresses migrated together: its canaries are among them)
/// as Routes (and Backends) that behave the same, or `None` when the compiler would reject it
/// (the findings say why; warnings too). The same [`translate`] and [`plan`] as serving the
/// Ingress.
pub fn migrate(
    obj: &Obj<IngressInfo>,
    all: &BTreeMap<ObjectRef, Obj<IngressInfo>>,
    out: &mut Vec<Diagnostic>,
) -> Option<Migrated> {
    let ing = &obj.spec;
    let id = &obj.meta.id;
    let mut f = Findings::new(id, out);
    super::ingress_annotations::check(&ing.annotations, &mut f);
    let t = translate(&ing.annotations, &mut f);
    let mut m = Migrated {
        outcomes: t.outcomes.clone(),
        ..Migrated::default()
    };
    super::ingress_annotations::tuning_outcomes(&ing.annotations, &mut m.outcomes);
    if t.canary.is_some() {
        super::ingress_canary::check_joins(obj, all, |_| true, &mut f);
        plan(ing, &t, &Default::default(), &mut f);
        let mains = all
            .values()
            .filter(|o| o.meta.id.namespace == id.namespace)
            .filter(|o| super::ingress_canary::shares_a_path(&o.spec, ing))
            .map(|o| o.meta.id.name.to_string())
            .collect();
        m.canary_of = Some(mains);
        return f.ok().then_some(m);
    }
    if t.passthrough {
        passthrough(obj, &mut m, &mut f);
        return f.ok().then_some(m);
    }
    let canaries = super::ingress_canary::index(&id.namespace, all, |_| true);
    let other_hosts = super::ingress_translate::hosts_of_others(id, all.values());
    let planned: Vec<_> = plan(ing, &t, &canaries, &mut f)
        .into_iter()
        .filter(|p| {
            p.at != super::ingress_translate::FROM_TO_WWW_AT
                || !p.hostnames.iter().any(|h| other_hosts.contains(h))
        })
        .collect();
    // Hosts in the order the Ingress names them; a Route each.
    let mut groups: Vec<(Vec<String>, Vec<RouteRule>)> = Vec::new();
    for p in planned {
        let backend_at = p.backend_at();
        let mut rule = p.rule;
        for b in &p.backends {
            let mut r = backend_ref(b.backend, &backend_at, &t, &mut m, &mut f)?;
            r.weight = b.weight;
            rule.backend_refs.push(r);
        }
        match groups.iter_mut().find(|(h, _)| *h == p.hostnames) {
            Some((_, rules)) => rules.push(rule),
            None => groups.push((p.hostnames, vec![rule])),
        }
    }
    for (hostnames, rules) in &groups {
        if rules.len() > crate::api::limits::MAX_RULES {
            f.invalid(
                "spec.rules",
                format!(
                    "hosts {hostnames:?} make {} Route rules, more than a Route holds ({}); \
                     canary header and cookie overrides are rules too: split the Ingress",
                    rules.len(),
                    crate::api::limits::MAX_RULES
                ),
            );
        }
    }
    if !f.ok() {
        return None;
    }
    let name = &obj.meta.id.name;
    let many = groups.len() > 1;
    for (k, (hostnames, rules)) in groups.into_iter().enumerate() {
        let tls = route_tls(ing, &t, &hostnames, &mut m);
        let route = api::RouteSpec {
            hostnames,
            tls: tls.map(Box::new),
            rules,
            ..api::RouteSpec::default()
        };
        let route_name = if many {
            format!("{name}-{k}")
        } else {
            name.to_string()
        };
        let policies = [
            (&t.rate_limit, "limits"),
            (&t.global_rate_limit, "global-limits"),
        ];
        for (spec, suffix) in policies {
            if let Some(spec) = spec {
                let policy = api::RateLimitPolicySpec {
                    target_ref: api::PolicyTargetRef {
                        kind: "Route".to_owned(),
                        name: route_name.clone(),
                        rule: None,
                    },
                    ..spec.clone()
                };
                m.policies.push((format!("{route_name}-{suffix}"), policy));
            }
        }
        m.routes.push((route_name, route));
    }
    Some(m)
}

/// `ssl-passthrough`: a TLS Route per backend (`NAME`, or `NAME-K` for several), to the Service
/// port by number, or to a TCP Backend of a named port (`SERVICE-PORT-tcp`).
fn passthrough(obj: &Obj<IngressInfo>, m: &mut Migrated, f: &mut Findings<'_>) {
    use crate::controller::objects::PortRef;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let planned = super::ingress_passthrough::plan(&obj.spec, f);
    let many = planned.len() > 1;
    for (k, p) in planned.iter().enumerate() {
        let IngressBackendInfo::Service { name, .. } = p.backend else {
            f.not_supported(format!("{}.resource", p.at), "resource backends");
            continue;
        };
        let mut route = match p.port() {
            Some(PortRef::Number(n)) => p.route(Some(*n)),
            _ => p.route(None),
        };
        if let (Some(r), Some(PortRef::Name(port))) = (&mut route, p.port()) {
            let backend = format!("{name}-{port}-tcp");
            if !m.backends.iter().any(|(n, _)| *n == backend) {
                m.backends.push((
                    backend.clone(),
                    api::BackendSpec {
                        service: Some(api::ServiceRef {
                            name: name.clone(),
                            port: IntOrString::String(port.clone()),
                        }),
                        protocol: api::BackendProtocol::Tcp,
                        ..api::BackendSpec::default()
                    },
                ));
            }
            r.backend_refs[0] = api::BackendRef {
                name: backend,
                kind: Some("Backend".to_owned()),
                ..api::BackendRef::default()
            };
        }
        if let Some(route) = route {
            let n = &obj.meta.id.name;
            let route_name = if many {
                format!("{n}-{k}")
            } else {
                n.to_string()
            };
            m.routes.push((route_name, route));
        }
    }
}

/// The suffix of the Backend written for the settings of `t` (`backend-protocol`,
/// `load-balance`, `upstream-hash-by`, `affinity`, `proxy-connect-timeout`), none for the
/// defaults.
fn settings_suffix(t: &Translation) -> Option<String> {
    let mut out = String::new();
    if t.h2c {
        out.push_str("-h2c");
    }
    if let Some(s) = t
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.session_persistence.as_ref())
    {
        out.push_str("-sticky-");
        let name = s.cookie_name.as_deref().unwrap_or("session");
        out.extend(name.chars().map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        }));
    } else if let Some(lb) = &t.load_balancer {
        let what = match &lb.hash_on {
            Some(h) => match (&h.header, &h.cookie, &h.query_param) {
                (Some(v), _, _) => format!("hash-header-{v}"),
                (_, Some(v), _) => format!("hash-cookie-{v}"),
                (_, _, Some(v)) => format!("hash-query-{v}"),
                _ => "hash-source-ip".to_owned(),
            },
            None => "least-request".to_owned(),
        };
        out.push('-');
        // An object name: lower-case letters, digits and dashes.
        out.extend(what.chars().map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        }));
    }
    if let Some(t) = t.connect_timeout {
        out.push_str(&format!("-connect-{}s", t.as_secs()));
    }
    if let Some(p) = &t.proxy_ssl {
        out.push_str(if p.http2 { "-grpcs" } else { "-https" });
    }
    (!out.is_empty()).then_some(out)
}

/// The backendRef of an Ingress backend: a Service port by number, or a Backend for a named
/// port (a Route's Service reference names ports by number only) or for settings other than
/// the defaults (`backend-protocol`, `load-balance`, `upstream-hash-by`: a Service reference
/// has default settings), named after them.
fn backend_ref(
    b: &IngressBackendInfo,
    at: &str,
    t: &Translation,
    m: &mut Migrated,
    f: &mut Findings<'_>,
) -> Option<api::BackendRef> {
    use crate::controller::objects::PortRef;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let IngressBackendInfo::Service { name, port } = b else {
        f.not_supported(format!("{at}.resource"), "resource backends");
        return None;
    };
    let settings = settings_suffix(t);
    let (port, suffix) = match (port, settings.is_some()) {
        (Some(PortRef::Number(n)), false) => {
            return Some(api::BackendRef {
                name: name.clone(),
                kind: Some("Service".to_owned()),
                port: Some(*n),
                ..api::BackendRef::default()
            });
        }
        (None, false) => {
            return Some(api::BackendRef {
                name: name.clone(),
                kind: Some("Service".to_owned()),
                ..api::BackendRef::default()
            });
        }
        (None, true) => {
            f.invalid(
                format!("{at}.service.port"),
                "name or number the port: the annotations are written as a Backend of one port",
            );
            return None;
        }
        (Some(PortRef::Number(n)), true) => (IntOrString::Int(i32::from(*n)), n.to_string()),
        (Some(PortRef::Name(p)), _) => (IntOrString::String(p.clone()), p.clone()),
    };
    let backend = format!("{name}-{suffix}{}", settings.unwrap_or_default());
    if !m.backends.iter().any(|(n, _)| *n == backend) {
        m.backends.push((
            backend.clone(),
            api::BackendSpec {
                service: Some(api::ServiceRef {
                    name: name.clone(),
                    port,
                }),
                protocol: match &t.proxy_ssl {
                    _ if t.h2c => api::BackendProtocol::H2c,
                    Some(p) => p.backend_protocol(),
                    None => api::BackendProtocol::default(),
                },
                tls: t.proxy_ssl.as_ref().map(|p| p.backend_tls()),
                load_balancer: t.load_balancer.clone(),
                connection: t.connect_timeout.map(|c| api::ConnectionSettings {
                    connect_timeout: Some(api::Duration(c)),
                    ..api::ConnectionSettings::default()
                }),
                ..api::BackendSpec::default()
            },
        ));
    }
    Some(api::BackendRef {
        name: backend,
        kind: Some("Backend".to_owned()),
        ..api::BackendRef::default()
    })
}

/// The `tls` of the Route for `hostnames`: the Ingress's `tls` entry that names its host.
fn route_tls(
    ing: &IngressInfo,
    t: &Translation,
    hostnames: &[String],
    m: &mut Migrated,
) -> Option<api::RouteTls> {
    let host = hostnames.first();
    let entry = ing.tls.iter().find(|e| match host {
        Some(h) => e.hosts.is_empty() || e.hosts.contains(h),
        None => false,
    });
    let Some(entry) = entry else {
        if t.force_ssl_redirect {
            let key = get(&ing.annotations, "force-ssl-redirect").map(|(k, _)| k);
            m.outcomes.insert(
                key.unwrap_or_default(),
                Outcome::NotCarried(format!(
                    "hosts {hostnames:?} have no tls entry, and a Route redirects to https only \
                     with spec.tls (add one, or redirect in front of the gateway)"
                )),
            );
        }
        return None;
    };
    let Some(secret) = &entry.secret_name else {
        m.notes.push(format!(
            "tls entry without secretName for {hostnames:?}: the Route needs spec.tls.secretName \
             (the --default-certificate still serves these hosts)"
        ));
        return None;
    };
    if (t.ssl_redirect || t.force_ssl_redirect) && !t.preserve_trailing_slash {
        m.notes.push(format!(
            "the https redirect of {hostnames:?} keeps a trailing slash (ingress-nginx drops one: \
             http://HOST/docs/ goes to https://HOST/docs); the Ingress served as it is drops it too"
        ));
    }
    Some(api::RouteTls {
        secret_name: secret.clone(),
        https_redirect: Some(t.ssl_redirect || t.force_ssl_redirect),
        client_validation: t.auth_tls.as_ref().map(|a| api::ClientValidation {
            ca_secret_ref: Some(api::LocalObjectRef {
                name: a.secret.clone(),
            }),
            ca_config_map_ref: None,
            ca_file: None,
            mode: if a.required {
                api::ClientValidationMode::Require
            } else {
                api::ClientValidationMode::Optional
            },
        }),
        ..api::RouteTls::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ObjectRef};

    const N: &str = "nginx.ingress.kubernetes.io/";

    /// An Ingress of two hosts, a named and a numbered Service port, and `annotations`.
    fn ingress(annotations: &[(&str, &str)]) -> Obj<IngressInfo> {
        use crate::controller::objects::{IngressPathInfo, IngressRuleInfo, PortRef};
        let path = |p: &str, port: PortRef| IngressPathInfo {
            path: Some(p.to_owned()),
            path_type: "Prefix".to_owned(),
            backend: IngressBackendInfo::Service {
                name: "web".to_owned(),
                port: Some(port),
            },
        };
        let spec = IngressInfo {
            rules: vec![
                IngressRuleInfo {
                    host: Some("a.example.com".to_owned()),
                    paths: vec![path("/x", PortRef::Name("http".to_owned()))],
                },
                IngressRuleInfo {
                    host: Some("b.example.com".to_owned()),
                    paths: vec![path("/y", PortRef::Number(80))],
                },
            ],
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..IngressInfo::default()
        };
        Obj {
            meta: crate::controller::snapshot::Meta::new(ObjectRef::new(
                Kind::Ingress,
                "shop",
                "web",
            )),
            spec: std::sync::Arc::new(spec),
        }
    }

    #[test]
    fn migrate_writes_a_route_per_host_and_a_backend_per_named_port() {
        let obj = ingress(&[
            (&format!("{N}server-alias"), "www.a.example.com"),
            (&format!("{N}app-root"), "/app"),
        ]);
        let mut d = Vec::new();
        let m = migrate(&obj, &BTreeMap::new(), &mut d).unwrap();
        assert!(d.is_empty(), "{d:?}");
        let names: Vec<&str> = m.routes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-0", "web-1"]);
        let a = &m.routes[0].1;
        assert_eq!(a.hostnames, ["a.example.com", "www.a.example.com"]);
        // The path, then app-root's `/` (a redirect, no backend).
        assert_eq!(a.rules.len(), 2);
        assert_eq!(a.rules[0].backend_refs[0].name, "web-http");
        assert!(a.rules[1].backend_refs.is_empty());
        assert!(a.rules[1].filters[0].request_redirect.is_some());
        assert_eq!(m.backends.len(), 1);
        let b = &m.routes[1].1.rules[0].backend_refs[0];
        assert_eq!((b.kind.as_deref(), b.port), (Some("Service"), Some(80)));
    }

    #[test]
    fn grpc_backends_are_written_as_h2c_backends_for_named_and_numbered_ports() {
        let obj = ingress(&[(&format!("{N}backend-protocol"), "grpc")]);
        let mut d = Vec::new();
        let m = migrate(&obj, &BTreeMap::new(), &mut d).unwrap();
        let names: Vec<&str> = m.backends.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-http-h2c", "web-80-h2c"]);
        assert!(
            m.backends
                .iter()
                .all(|(_, b)| b.protocol == api::BackendProtocol::H2c)
        );
        assert_eq!(m.routes[1].1.rules[0].backend_refs[0].name, "web-80-h2c");
        assert!(matches!(
            m.outcomes.get(&format!("{N}backend-protocol")),
            Some(Outcome::Approximated(_))
        ));
    }

    #[test]
    fn a_connect_timeout_is_written_as_a_backend_of_that_connect_timeout() {
        let obj = ingress(&[(&format!("{N}proxy-connect-timeout"), "2")]);
        let mut d = Vec::new();
        let m = migrate(&obj, &BTreeMap::new(), &mut d).unwrap();
        assert!(d.is_empty(), "{d:?}");
        let names: Vec<&str> = m.backends.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-http-connect-2s", "web-80-connect-2s"]);
        for (_, b) in &m.backends {
            let c = b.connection.as_ref().unwrap();
            assert_eq!(c.connect_timeout.as_ref().map(|d| d.0.as_secs()), Some(2));
        }
        assert_eq!(
            m.routes[1].1.rules[0].backend_refs[0].name,
            "web-80-connect-2s"
        );
    }

    #[test]
    fn hashing_is_written_as_a_backend_named_after_its_key() {
        let obj = ingress(&[
            (&format!("{N}upstream-hash-by"), "$cookie_Session_ID"),
            (&format!("{N}backend-protocol"), "H2C"),
        ]);
        let mut d = Vec::new();
        let m = migrate(&obj, &BTreeMap::new(), &mut d).unwrap();
        assert!(d.is_empty(), "{d:?}");
        let (name, spec) = &m.backends[1];
        assert_eq!(name, "web-80-h2c-hash-cookie-session-id");
        let lb = spec.load_balancer.as_ref().unwrap();
        assert_eq!(lb.algorithm, api::LbAlgorithm::ConsistentHash);
        assert_eq!(
            lb.hash_on.as_ref().unwrap().cookie.as_deref(),
            Some("Session_ID")
        );
    }

    #[test]
    fn affinity_is_written_as_a_backend_with_a_session_cookie() {
        let obj = ingress(&[
            (&format!("{N}affinity"), "cookie"),
            (&format!("{N}session-cookie-name"), "route"),
            (&format!("{N}session-cookie-max-age"), "172800"),
        ]);
        let mut d = Vec::new();
        let m = migrate(&obj, &BTreeMap::new(), &mut d).unwrap();
        assert!(d.is_empty(), "{d:?}");
        let names: Vec<&str> = m.backends.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-http-sticky-route", "web-80-sticky-route"]);
        let lb = m.backends[1].1.load_balancer.as_ref().unwrap();
        let s = lb.session_persistence.as_ref().unwrap();
        assert_eq!(s.cookie_name.as_deref(), Some("route"));
        assert_eq!(s.max_age.as_ref().map(|d| d.0.as_secs()), Some(172_800));
        // The cookie's Path is left to the data plane: each rule's own path, as ingress-nginx.
        assert!(s.path.is_none());
        assert_eq!(m.outcomes[&format!("{N}affinity")], Outcome::Carried);
    }

    #[test]
    fn a_host_with_more_rules_than_a_route_holds_is_not_migrated() {
        use crate::controller::objects::{IngressPathInfo, IngressRuleInfo};
        let mut obj = ingress(&[]);
        std::sync::Arc::make_mut(&mut obj.spec).rules = vec![IngressRuleInfo {
            host: Some("a.example.com".to_owned()),
            paths: (0..17)
                .map(|i| IngressPathInfo {
                    path: Some(format!("/p{i}")),
                    path_type: "Prefix".to_owned(),
                    backend: IngressBackendInfo::Service {
                        name: "web".to_owned(),
                        port: None,
                    },
                })
                .collect(),
        }];
        let mut d = Vec::new();
        assert!(migrate(&obj, &BTreeMap::new(), &mut d).is_none());
        assert!(d[0].message.contains("17 Route rules"), "{d:?}");
    }

    #[test]
    fn migrate_refuses_what_serving_refuses() {
        let obj = ingress(&[(&format!("{N}auth-cache-key"), "$remote_user")]);
        let mut d = Vec::new();
        assert!(migrate(&obj, &BTreeMap::new(), &mut d).is_none());
        assert!(d[0].message.contains("not supported yet"), "{d:?}");
    }
}
