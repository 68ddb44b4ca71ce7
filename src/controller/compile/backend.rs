//! Backend → the data plane's view of it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{BackendProtocol, BackendSpec, LbAlgorithm};
use crate::controller::objects::{PortRef, ServicePortInfo};
use crate::controller::snapshot::Obj;
use crate::model::{Backend, Diagnostic, Endpoint, Reason, ServiceKey, Severity, UpstreamProtocol};

use super::CompileOptions;
use super::fields::{self, Findings};
use super::targets::Targets;

/// A compiled Backend and the Service port its endpoints come from, if any.
pub type CompiledBackend = (Backend, Option<(String, ServicePortInfo)>);

/// Compiles one Backend, or `None` if it is rejected (findings say why).
pub fn compile_backend(
    obj: &Obj<BackendSpec>,
    opts: &CompileOptions,
    targets: &Targets<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<CompiledBackend> {
    let spec = &obj.spec;
    let mut f = Findings::new(&obj.meta.id, out);

    let protocol = match spec.protocol {
        BackendProtocol::Http1 => UpstreamProtocol::Http1,
        BackendProtocol::H2c => UpstreamProtocol::H2c,
        other => {
            f.not_supported(
                "spec.protocol",
                &format!("protocol {}", fields::wire_name(&other)),
            );
            UpstreamProtocol::Http1
        }
    };

    let mut endpoints = Vec::new();
    let mut service = None;
    let mut origin = None;
    match (&spec.service, spec.endpoints.is_empty()) {
        (Some(_), false) => f.invalid("spec", "service and endpoints are mutually exclusive; set one"),
        (None, true) => f.invalid("spec", "set service (Kubernetes) or endpoints (a static list)"),
        (Some(_), true) if !opts.discovery => f.push(Diagnostic::error(
            &obj.meta.id,
            "spec.service",
            Reason::NotSupported,
            "not supported yet: Service discovery (needs Kubernetes mode); list spec.endpoints instead",
        )),
        (Some(svc), true) => {
            let ns = &obj.meta.id.namespace;
            let port = match &svc.port {
                IntOrString::Int(n) => u16::try_from(*n)
                    .ok()
                    .filter(|n| *n > 0)
                    .map(PortRef::Number),
                IntOrString::String(s) => match s.parse::<u16>() {
                    Ok(n) if n > 0 => Some(PortRef::Number(n)),
                    Ok(_) => None,
                    Err(_) => Some(PortRef::Name(s.clone())),
                },
            };
            match port {
                None => f.invalid("spec.service.port", "a port number must be 1-65535"),
                Some(port) => match targets.resolve_port(ns, &svc.name, Some(&port)) {
                    Ok(p) => {
                        service = Some(ServiceKey::new(ns.clone(), svc.name.clone(), p.name.clone()));
                        origin = Some((svc.name.clone(), p));
                    }
                    // Accepted all the same: the Service may come later, and then endpoints
                    // appear without a change here. Until then requests get 503.
                    Err(u) => {
                        let field = if u.reason == Reason::PortNotFound {
                            "spec.service.port"
                        } else {
                            "spec.service.name"
                        };
                        f.push(Diagnostic {
                            severity: Severity::Warning,
                            ..Diagnostic::error(
                                &obj.meta.id,
                                field,
                                u.reason,
                                format!("{}: the Backend has no endpoints until it is fixed", u.message),
                            )
                        });
                        let port_name = match port {
                            PortRef::Name(n) => n,
                            PortRef::Number(_) => String::new(),
                        };
                        service = Some(ServiceKey::new(ns.clone(), svc.name.clone(), port_name));
                    }
                },
            }
        }
        (None, false) => {
            let mut seen = BTreeSet::new();
            for (i, raw) in spec.endpoints.iter().enumerate() {
                match endpoint(raw) {
                    Ok(e) if seen.insert(e.address.clone()) => endpoints.push(e),
                    Ok(_) => f.invalid(format!("spec.endpoints[{i}]"), format!("{raw:?} is listed twice")),
                    Err(e) => f.invalid(format!("spec.endpoints[{i}]"), e),
                }
            }
        }
    }

    if let Some(lb) = &spec.load_balancer {
        if lb.algorithm != LbAlgorithm::RoundRobin {
            f.not_supported(
                "spec.loadBalancer.algorithm",
                &format!("algorithm {}", fields::wire_name(&lb.algorithm)),
            );
        }
        if lb.hash_on.is_some() {
            f.not_supported("spec.loadBalancer.hashOn", "hash keys (hashOn)");
        }
    }
    for (set, field, what) in [
        (
            spec.health_check.is_some(),
            "spec.healthCheck",
            "health checking",
        ),
        (
            spec.circuit_breaker.is_some(),
            "spec.circuitBreaker",
            "circuit breaking",
        ),
        (
            spec.connection.is_some(),
            "spec.connection",
            "connection limits and timeouts",
        ),
        (spec.slow_start.is_some(), "spec.slowStart", "slow start"),
        (spec.tls.is_some(), "spec.tls", "TLS to backends"),
    ] {
        if set {
            f.not_supported(field, what);
        }
    }

    f.ok().then(|| {
        (
            Backend {
                id: obj.meta.id.clone(),
                label: obj.meta.id.key().into(),
                protocol,
                endpoints,
                service,
            },
            origin,
        )
    })
}

/// `host:port`, `ip:port` or `[ipv6]:port`, normalized into a URI authority.
fn endpoint(raw: &str) -> Result<Endpoint, String> {
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("{raw:?}: port must be 1-65535"));
        }
        return Ok(Endpoint::new(&sa.to_string()));
    }
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?} must be host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{raw:?}: {port:?} is not a port number"))?;
    if port == 0 {
        return Err(format!("{raw:?}: port must be 1-65535"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{raw:?}: write IPv6 addresses in brackets, e.g. [::1]:8080"
        ));
    }
    let host = fields::hostname(host, false).map_err(|e| format!("{raw:?}: {e}"))?;
    Ok(Endpoint::new(&format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_accept_ips_names_and_bracketed_ipv6() {
        assert_eq!(
            &*endpoint("127.0.0.1:8080").unwrap().address,
            "127.0.0.1:8080"
        );
        assert_eq!(&*endpoint("[::1]:80").unwrap().address, "[::1]:80");
        assert_eq!(
            &*endpoint("API.internal:9000").unwrap().address,
            "api.internal:9000"
        );
    }

    #[test]
    fn endpoints_refuse_what_cannot_be_dialled() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "host:http",
            "::1:80",
            ":80",
            "bad_host:80",
            "x:70000",
        ] {
            assert!(endpoint(bad).is_err(), "{bad} should be refused");
        }
    }
}
