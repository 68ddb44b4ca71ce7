//! Backend → the data plane's view of it.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{self, BackendProtocol, BackendSpec, LbAlgorithm};
use crate::controller::objects::{PortRef, ServicePortInfo};
use crate::controller::snapshot::Obj;
use crate::model::{
    ActiveHealthCheck, Backend, CaBundle, CircuitBreaker, ConnectionLimits, Diagnostic, DnsQuery,
    DnsRecordType, Endpoint, HashKey, LoadBalancing, PassiveHealthCheck, ProbeKind, Reason,
    ServiceKey, Severity, UpstreamProtocol, UpstreamTls,
};

use super::CompileOptions;
use super::fields::{self, Findings};
use super::limits;
use super::targets::Targets;
use super::tls::{CaResolved, TlsBuilder};

/// A compiled Backend and the Service port its endpoints come from, if any.
pub type CompiledBackend = (Backend, Option<(String, ServicePortInfo)>);

/// Compiles one Backend, or `None` if it is rejected (findings say why).
pub fn compile_backend(
    obj: &Obj<BackendSpec>,
    opts: &CompileOptions,
    targets: &Targets<'_>,
    certificates: &RefCell<TlsBuilder<'_>>,
    out: &mut Vec<Diagnostic>,
) -> Option<CompiledBackend> {
    let spec = &obj.spec;
    let mut f = Findings::new(&obj.meta.id, out);
    limits::backend(spec, &mut f);

    let protocol = match spec.protocol {
        BackendProtocol::Http1 => UpstreamProtocol::Http1,
        BackendProtocol::H2c => UpstreamProtocol::H2c,
        BackendProtocol::Http2 => UpstreamProtocol::Http2,
        BackendProtocol::Tcp => UpstreamProtocol::Tcp,
        BackendProtocol::Udp => UpstreamProtocol::Udp,
    };

    let mut endpoints = Vec::new();
    let mut service = None;
    let mut origin = None;
    let mut dns = None;
    match (&spec.service, spec.endpoints.is_empty()) {
        _ if spec.dns.is_some() => {
            let others = [
                spec.service.is_some().then_some("service"),
                (!spec.endpoints.is_empty()).then_some("endpoints"),
            ];
            for other in others.into_iter().flatten() {
                f.invalid(
                    "spec.dns",
                    format!("dns and {other} are mutually exclusive; set one"),
                );
            }
            dns = spec.dns.as_ref().and_then(|d| dns_query(d, &mut f));
        }
        (Some(_), false) => f.invalid("spec", "service and endpoints are mutually exclusive; set one"),
        (None, true) => f.invalid(
            "spec",
            "set service (Kubernetes), endpoints (a static list) or dns (records re-resolved)",
        ),
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
                // Digits are a number (as the CRD's CEL rule reads them), whatever their size.
                IntOrString::String(s) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
                    s.parse::<u16>().ok().filter(|n| *n > 0).map(PortRef::Number)
                }
                IntOrString::String(s) => Some(PortRef::Name(s.clone())),
            };
            match port {
                None => f.invalid("spec.service.port", "a port number must be 1-65535"),
                Some(port) => match targets.resolve_port(
                    ns,
                    &svc.name,
                    Some(&port),
                    if protocol == UpstreamProtocol::Udp { "UDP" } else { "TCP" },
                ) {
                    Ok(p) if (p.protocol == "UDP") != (protocol == UpstreamProtocol::Udp) => {
                        f.invalid(
                            "spec.service.port",
                            format!(
                                "port {} of Service {ns}/{} is {}; a Backend with protocol {} \
                                 needs a {} port",
                                p.port,
                                svc.name,
                                p.protocol,
                                fields::wire_name(&spec.protocol),
                                if protocol == UpstreamProtocol::Udp { "UDP" } else { "TCP" },
                            ),
                        );
                    }
                    Ok(p) => {
                        service = Some(ServiceKey::new(ns.to_string(), svc.name.to_string(), p.name.clone()));
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
                        service = Some(ServiceKey::new(ns.to_string(), svc.name.to_string(), port_name));
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

    let load_balancer = load_balancing(spec.load_balancer.as_ref(), &mut f);
    let session_persistence = session_persistence(spec.load_balancer.as_ref(), &mut f);
    if session_persistence.is_some()
        && matches!(protocol, UpstreamProtocol::Tcp | UpstreamProtocol::Udp)
    {
        f.invalid(
            "spec.loadBalancer.sessionPersistence",
            "a session cookie needs HTTP: it is for HTTP1, H2C and HTTP2 Backends",
        );
    }
    let active_health_check = spec
        .health_check
        .as_ref()
        .and_then(|h| h.active.as_ref())
        .and_then(|a| active_check(a, &mut f));
    let passive_health_check = spec
        .health_check
        .as_ref()
        .and_then(|h| h.passive.as_ref())
        .and_then(|p| passive_check(p, &mut f));
    let circuit_breaker = spec
        .circuit_breaker
        .as_ref()
        .and_then(|b| breaker(b, &mut f));
    let connection = connection_limits(spec.connection.as_ref(), &mut f);
    if matches!(protocol, UpstreamProtocol::Tcp | UpstreamProtocol::Udp) {
        l4_only(spec, protocol, &mut f);
    }
    let proxy_protocol = match (spec.proxy_protocol, spec.protocol) {
        (None, _) => None,
        (Some(v), BackendProtocol::Tcp) => Some(match v {
            crate::api::ProxyProtocolVersion::V1 => crate::model::ProxyProtocolVersion::V1,
            crate::api::ProxyProtocolVersion::V2 => crate::model::ProxyProtocolVersion::V2,
        }),
        // Every datagram starts with the header; v1 has no datagram form.
        (Some(crate::api::ProxyProtocolVersion::V2), BackendProtocol::Udp) => {
            Some(crate::model::ProxyProtocolVersion::V2)
        }
        (Some(crate::api::ProxyProtocolVersion::V1), BackendProtocol::Udp) => {
            f.invalid(
                "spec.proxyProtocol",
                "V1 is for TCP only (it has no datagram form): use V2 for a UDP Backend",
            );
            None
        }
        // HTTP connections are pooled and shared by many clients: a header naming one client
        // would be wrong for the others.
        (Some(_), BackendProtocol::Http1 | BackendProtocol::H2c | BackendProtocol::Http2) => {
            f.not_supported(
                "spec.proxyProtocol",
                "the PROXY protocol to an HTTP Backend (its pooled connections carry many clients); it is for protocol: TCP",
            );
            None
        }
    };
    let slow_start = spec.slow_start.as_ref().map(|s| s.window.0);
    if slow_start.is_some_and(|w| w.is_zero()) {
        f.invalid("spec.slowStart.window", "must be greater than zero");
    }
    // The name a TLS backend's certificate is checked against when `spec.tls.sni` is not set:
    // the Service's DNS name, or the name an A/AAAA Backend follows (else each endpoint's host).
    let default_sni = match (&service, &dns) {
        (Some(s), _) => Some(format!("{}.{}.svc", s.name, s.namespace)),
        (None, Some(q)) if q.record_type != DnsRecordType::Srv => {
            Some(q.name.trim_end_matches('.').to_owned())
        }
        _ => None,
    };
    let tls = upstream_tls(obj, protocol, default_sni, certificates, &mut f);
    if tls.as_ref().is_some_and(|t| t.server_name.is_none())
        && dns
            .as_ref()
            .is_some_and(|q| q.record_type == DnsRecordType::Srv)
    {
        f.invalid(
            "spec.tls.sni",
            "a TLS Backend that follows SRV records needs the name its certificates carry \
             (SRV answers give addresses, not one name to verify)",
        );
    }

    f.ok().then(|| {
        (
            Backend {
                load_balancer,
                session_persistence,
                active_health_check,
                passive_health_check,
                circuit_breaker,
                connection,
                slow_start,
                service,
                dns,
                tls,
                proxy_protocol,
                ..Backend::new(obj.meta.id.clone(), protocol, endpoints)
            },
            origin,
        )
    })
}

/// Refresh bounds and stale limit when the Backend sets none.
pub const DNS_REFRESH_MIN: Duration = Duration::from_secs(1);
/// See [`DNS_REFRESH_MIN`].
pub const DNS_REFRESH_MAX: Duration = Duration::from_secs(30);
/// See [`DNS_REFRESH_MIN`].
pub const DNS_MAX_STALE: Duration = Duration::from_secs(300);

/// `spec.dns` → the lookup the DNS source repeats (checked here, resolved only at run time).
fn dns_query(d: &api::DnsDiscovery, f: &mut Findings<'_>) -> Option<DnsQuery> {
    let at = "spec.dns";
    let mut ok = true;
    let name_ok = !d.name.is_empty()
        && d.name.len() <= crate::api::limits::MAX_HOSTNAME_LEN
        && d.name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !name_ok {
        f.invalid(
            format!("{at}.name"),
            format!(
                "{:?} is not a DNS name (labels of letters, digits, '-' and '_')",
                d.name
            ),
        );
        ok = false;
    }
    let record_type = match d.record_type {
        api::DnsRecordType::A => DnsRecordType::A,
        api::DnsRecordType::Aaaa => DnsRecordType::Aaaa,
        api::DnsRecordType::Srv => DnsRecordType::Srv,
    };
    let port = match (record_type, d.port) {
        (DnsRecordType::Srv, Some(_)) => {
            f.invalid(
                format!("{at}.port"),
                "SRV records carry their own port; leave port out",
            );
            ok = false;
            0
        }
        (DnsRecordType::Srv, None) => 0,
        (_, Some(p)) if p > 0 => p,
        (_, Some(_)) => {
            f.invalid(format!("{at}.port"), "a port number must be 1-65535");
            ok = false;
            0
        }
        (_, None) => {
            f.invalid(
                format!("{at}.port"),
                format!("{} records need a port", record_type.as_str()),
            );
            ok = false;
            0
        }
    };
    let refresh = d.refresh.clone().unwrap_or_default();
    let refresh_min = refresh.min.map_or(DNS_REFRESH_MIN, |d| d.0);
    let refresh_max = refresh.max.map_or(DNS_REFRESH_MAX, |d| d.0);
    for (field, value) in [("min", refresh_min), ("max", refresh_max)] {
        if value.is_zero() {
            f.invalid(format!("{at}.refresh.{field}"), "must be greater than zero");
            ok = false;
        }
    }
    if refresh_min > refresh_max {
        f.invalid(format!("{at}.refresh"), "min cannot be longer than max");
        ok = false;
    }
    let max_stale = d.max_stale.map_or(DNS_MAX_STALE, |d| d.0);
    if max_stale.is_zero() {
        f.invalid(format!("{at}.maxStale"), "must be greater than zero");
        ok = false;
    }
    ok.then(|| DnsQuery {
        name: d.name.clone(),
        record_type,
        port,
        refresh_min,
        refresh_max,
        max_stale,
    })
}

/// The TLS settings of a Backend: `spec.tls` (HTTP1 over TLS, or HTTP2's settings), and the
/// defaults for HTTP2 without it. The server name defaults to the Service's DNS name
/// (`NAME.NAMESPACE.svc`), else each static endpoint's host.
fn upstream_tls(
    obj: &Obj<BackendSpec>,
    protocol: UpstreamProtocol,
    default_sni: Option<String>,
    certificates: &RefCell<TlsBuilder<'_>>,
    f: &mut Findings<'_>,
) -> Option<Arc<UpstreamTls>> {
    let id = &obj.meta.id;
    let spec = match (&obj.spec.tls, protocol) {
        (None, UpstreamProtocol::Http2) => &api::BackendTls::default(),
        (None, _) => return None,
        (Some(_), UpstreamProtocol::H2c) => {
            f.invalid(
                "spec.tls",
                "H2C is HTTP/2 without TLS; for HTTP/2 over TLS set protocol: HTTP2",
            );
            return None;
        }
        (Some(_), UpstreamProtocol::Tcp) => {
            f.not_supported("spec.tls", "TLS to the endpoints of a TCP Backend");
            return None;
        }
        (Some(_), UpstreamProtocol::Udp) => {
            f.not_supported("spec.tls", "DTLS to the endpoints of a UDP Backend");
            return None;
        }
        (Some(t), _) => t,
    };
    let server_name = match &spec.sni {
        Some(raw) => match fields::hostname(raw, false) {
            Ok(h) => Some(h),
            Err(e) => {
                f.invalid("spec.tls.sni", e);
                None
            }
        },
        None => default_sni,
    };
    let ca = match certificates.borrow_mut().ca_from(
        &id.namespace,
        "spec.tls",
        spec.ca_secret_ref.as_ref(),
        spec.ca_config_map_ref.as_ref(),
        spec.ca_file.as_deref(),
    ) {
        Some(CaResolved { bundle, problem }) => match (problem, bundle) {
            (None, bundle) => bundle,
            // A file whose last good bundle still verifies: a warning.
            (Some((field, why)), Some(last)) => {
                f.push(Diagnostic {
                    severity: Severity::Warning,
                    ..Diagnostic::error(id, &field, Reason::InvalidCertificateRef, why)
                });
                Some(last)
            }
            // A CA that is set but unusable trusts nothing (never the system's roots).
            (Some((field, why)), None) => {
                f.push(Diagnostic::error(
                    id,
                    &field,
                    Reason::InvalidCertificateRef,
                    format!("{why}; until it is fixed no endpoint certificate is trusted"),
                ));
                let source = format!("unusable {field}");
                Some(Arc::new(CaBundle::trusting_nothing(&source)))
            }
        },
        None => None,
    };
    let mut found = Vec::new();
    let index = match (&spec.client_certificate_ref, &spec.client_certificate_files) {
        (Some(r), None) => certificates.borrow_mut().certificate_any_type(
            &id.namespace,
            &r.name,
            id,
            "spec.tls.clientCertificateRef",
            &mut found,
        ),
        (None, Some(files)) => certificates.borrow_mut().certificate_files(
            &files.cert_file,
            &files.key_file,
            id,
            "spec.tls.clientCertificateFiles",
            &mut found,
        ),
        (None, None) => None,
        (Some(_), Some(_)) => {
            f.invalid(
                "spec.tls",
                "set only one of clientCertificateRef or clientCertificateFiles",
            );
            None
        }
    };
    for d in found {
        // A broken Secret or file whose last good certificate still serves is a warning.
        let severity = if index.is_some() {
            Severity::Warning
        } else {
            d.severity
        };
        f.push(Diagnostic { severity, ..d });
    }
    let client_certificate = index.map(|i| certificates.borrow().get(i));
    let insecure_skip_verify = spec.insecure_skip_verify == Some(true);
    if insecure_skip_verify && ca.is_some() {
        f.invalid(
            "spec.tls.insecureSkipVerify",
            "verifies nothing: remove the CA, or insecureSkipVerify to verify with it",
        );
    }
    Some(Arc::new(UpstreamTls {
        server_name,
        ca,
        client_certificate,
        insecure_skip_verify,
    }))
}

/// A Backend's `loadBalancer` (problems name its fields).
pub(super) fn load_balancing(
    lb: Option<&api::LoadBalancer>,
    f: &mut Findings<'_>,
) -> LoadBalancing {
    let Some(lb) = lb else {
        return LoadBalancing::default();
    };
    let key = lb.hash_on.as_ref().and_then(|h| hash_key(h, f));
    match (lb.algorithm, key) {
        (LbAlgorithm::ConsistentHash, Some(k)) => LoadBalancing::ConsistentHash(k),
        (LbAlgorithm::ConsistentHash, None) => {
            if lb.hash_on.is_none() {
                f.invalid(
                    "spec.loadBalancer.hashOn",
                    "ConsistentHash needs hashOn (header, cookie, sourceIP or queryParam)",
                );
            }
            LoadBalancing::default()
        }
        (other, _) if lb.hash_on.is_some() => {
            f.invalid(
                "spec.loadBalancer.hashOn",
                format!(
                    "hashOn is only for ConsistentHash, not {}",
                    fields::wire_name(&other)
                ),
            );
            LoadBalancing::default()
        }
        (LbAlgorithm::RoundRobin, _) => LoadBalancing::RoundRobin,
        (LbAlgorithm::WeightedRoundRobin, _) => LoadBalancing::WeightedRoundRobin,
        (LbAlgorithm::LeastRequest, _) => LoadBalancing::LeastRequest,
        (LbAlgorithm::Random, _) => LoadBalancing::Random,
        (LbAlgorithm::IpHash, _) => LoadBalancing::IpHash,
    }
}

/// `loadBalancer.sessionPersistence` → the session cookie the data plane sets (checked as
/// the CRD schema checks it, for objects that did not come through the API server).
pub(super) fn session_persistence(
    lb: Option<&api::LoadBalancer>,
    f: &mut Findings<'_>,
) -> Option<Arc<crate::model::SessionCookie>> {
    use crate::model::{DEFAULT_SESSION_COOKIE, SameSite, SessionCookie};
    let s = lb?.session_persistence.as_ref()?;
    let at = "spec.loadBalancer.sessionPersistence";
    let mut ok = true;
    let name = s.cookie_name.as_deref().unwrap_or(DEFAULT_SESSION_COOKIE);
    if name.is_empty() || fields::header_name(name).is_err() {
        f.invalid(
            format!("{at}.cookieName"),
            format!("{name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
        );
        ok = false;
    }
    if let Some(p) = &s.path
        && !(p.starts_with('/') && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';'))
    {
        f.invalid(
            format!("{at}.path"),
            format!("{p:?} must be an absolute path of visible ASCII without ;"),
        );
        ok = false;
    }
    if let Some(d) = &s.domain
        && let Err(e) = fields::hostname(d.strip_prefix('.').unwrap_or(d), false)
    {
        f.invalid(format!("{at}.domain"), e);
        ok = false;
    }
    let max_age = s.max_age.as_ref().map(|d| d.0);
    if max_age.is_some_and(|d| d.as_secs() == 0) {
        f.invalid(format!("{at}.maxAge"), "must be at least 1s");
        ok = false;
    }
    ok.then(|| {
        Arc::new(SessionCookie {
            path: s.path.clone(),
            domain: s.domain.clone(),
            max_age,
            secure: s.secure,
            http_only: s.http_only.unwrap_or(true),
            same_site: s.same_site.map(|v| match v {
                api::SameSite::Strict => SameSite::Strict,
                api::SameSite::Lax => SameSite::Lax,
                api::SameSite::None => SameSite::None,
            }),
            conditional_same_site_none: s.conditional_same_site_none.unwrap_or(false),
            change_on_failure: s.change_on_failure.unwrap_or(false),
            ..SessionCookie::new(name)
        })
    })
}

fn hash_key(h: &api::HashOn, f: &mut Findings<'_>) -> Option<HashKey> {
    let at = "spec.loadBalancer.hashOn";
    let set = [
        h.header.is_some(),
        h.cookie.is_some(),
        h.source_ip.is_some(),
        h.query_param.is_some(),
    ];
    if set.iter().filter(|x| **x).count() != 1 {
        f.invalid(
            at,
            "set exactly one of header, cookie, sourceIP or queryParam",
        );
        return None;
    }
    if let Some(name) = &h.header {
        return match fields::header_name(name) {
            Ok(n) => Some(HashKey::Header(n)),
            Err(e) => {
                f.invalid(format!("{at}.header"), e);
                None
            }
        };
    }
    let non_empty = |v: &String, field: &str, f: &mut Findings<'_>| {
        if v.is_empty() {
            f.invalid(format!("{at}.{field}"), "cannot be empty");
            false
        } else {
            true
        }
    };
    if let Some(c) = &h.cookie {
        return non_empty(c, "cookie", f).then(|| HashKey::Cookie(c.clone()));
    }
    if let Some(q) = &h.query_param {
        return non_empty(q, "queryParam", f).then(|| HashKey::QueryParam(q.clone()));
    }
    Some(HashKey::SourceIp)
}

fn positive(
    d: Option<api::Duration>,
    default: Duration,
    field: &str,
    f: &mut Findings<'_>,
) -> Duration {
    match d {
        Some(d) if d.0.is_zero() => {
            f.invalid(field, "must be greater than zero");
            default
        }
        Some(d) => d.0,
        None => default,
    }
}

fn at_least_one(v: Option<u32>, default: u32, field: &str, f: &mut Findings<'_>) -> u32 {
    match v {
        Some(0) => {
            f.invalid(field, "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn active_check(a: &api::ActiveHealthCheck, f: &mut Findings<'_>) -> Option<ActiveHealthCheck> {
    let at = "spec.healthCheck.active";
    let probe = match (&a.http, &a.tcp) {
        (Some(http), None) => {
            if let Err(e) = fields::plain_path(&http.path) {
                f.invalid(format!("{at}.http.path"), e);
            }
            let statuses = if http.expected_statuses.is_empty() {
                vec!["200-399".to_owned()]
            } else {
                http.expected_statuses.clone()
            };
            let expected = status_ranges(&statuses, &format!("{at}.http.expectedStatuses"), f);
            if let Some(h) = &http.host
                && let Err(e) = fields::hostname(h, false)
            {
                f.invalid(format!("{at}.http.host"), e);
            }
            ProbeKind::Http {
                path: http.path.clone(),
                host: http.host.clone(),
                expected,
            }
        }
        (None, Some(_)) => ProbeKind::Tcp,
        _ => {
            f.invalid(at, "set exactly one of http or tcp");
            return None;
        }
    };
    let interval = positive(
        a.interval,
        Duration::from_secs(5),
        &format!("{at}.interval"),
        f,
    );
    let timeout = positive(
        a.timeout,
        Duration::from_secs(1),
        &format!("{at}.timeout"),
        f,
    );
    if timeout > interval {
        f.invalid(format!("{at}.timeout"), "cannot be longer than interval");
    }
    if a.port == Some(0) {
        f.invalid(format!("{at}.port"), "must be 1-65535");
    }
    Some(ActiveHealthCheck {
        probe,
        port: a.port,
        interval,
        timeout,
        healthy_threshold: at_least_one(
            a.healthy_threshold,
            2,
            &format!("{at}.healthyThreshold"),
            f,
        ),
        unhealthy_threshold: at_least_one(
            a.unhealthy_threshold,
            3,
            &format!("{at}.unhealthyThreshold"),
            f,
        ),
    })
}

fn passive_check(p: &api::PassiveHealthCheck, f: &mut Findings<'_>) -> Option<PassiveHealthCheck> {
    let at = "spec.healthCheck.passive";
    let max_ejection_percent = p.max_ejection_percent.unwrap_or(50);
    if max_ejection_percent > 100 {
        f.invalid(format!("{at}.maxEjectionPercent"), "must be 0-100");
    }
    let statuses = if p.failure_statuses.is_empty() {
        vec!["500-599".to_owned()]
    } else {
        p.failure_statuses.clone()
    };
    Some(PassiveHealthCheck {
        consecutive_failures: at_least_one(
            p.consecutive_failures,
            5,
            &format!("{at}.consecutiveFailures"),
            f,
        ),
        ejection_time: positive(
            p.ejection_time,
            Duration::from_secs(30),
            &format!("{at}.ejectionTime"),
            f,
        ),
        max_ejection_percent,
        failure_statuses: status_ranges(&statuses, &format!("{at}.failureStatuses"), f),
    })
}

fn breaker(b: &api::CircuitBreaker, f: &mut Findings<'_>) -> Option<CircuitBreaker> {
    let at = "spec.circuitBreaker";
    let failure_ratio = b.failure_ratio.unwrap_or(0.5);
    if !(failure_ratio > 0.0 && failure_ratio <= 1.0) {
        f.invalid(
            format!("{at}.failureRatio"),
            format!("{failure_ratio} must be above 0 and at most 1"),
        );
    }
    Some(CircuitBreaker {
        failure_ratio,
        min_requests: at_least_one(b.min_requests, 20, &format!("{at}.minRequests"), f),
        window: positive(
            b.window,
            Duration::from_secs(10),
            &format!("{at}.window"),
            f,
        ),
        open_duration: positive(
            b.open_duration,
            Duration::from_secs(30),
            &format!("{at}.openDuration"),
            f,
        ),
        half_open_requests: at_least_one(
            b.half_open_requests,
            5,
            &format!("{at}.halfOpenRequests"),
            f,
        ),
    })
}

/// What a TCP Backend does not do (yet): the settings that are about HTTP requests.
/// What a TCP or UDP Backend does not take (settings of HTTP exchanges, or of the Route).
fn l4_only(spec: &BackendSpec, protocol: UpstreamProtocol, f: &mut Findings<'_>) {
    let (wire, max) = match protocol {
        UpstreamProtocol::Udp => ("UDP", "udp.maxSessions"),
        _ => ("TCP", "tcp.maxConnections"),
    };
    let idle = match protocol {
        UpstreamProtocol::Udp => "udp.idleTimeout",
        _ => "tcp.idleTimeout",
    };
    if spec.circuit_breaker.is_some() {
        f.not_supported(
            "spec.circuitBreaker",
            &format!("a circuit breaker on a {wire} Backend"),
        );
    }
    if protocol == UpstreamProtocol::Udp
        && let Some(h) = spec
            .load_balancer
            .as_ref()
            .and_then(|lb| lb.hash_on.as_ref())
        && h.source_ip.is_none()
    {
        f.invalid(
            "spec.loadBalancer.hashOn",
            "a UDP Backend's sessions carry no headers, cookies or query: hash on sourceIP",
        );
    }
    let Some(c) = &spec.connection else { return };
    let limits = [
        (c.idle_timeout.is_some(), "idleTimeout", idle),
        (c.max_connections.is_some(), "maxConnections", max),
        (c.max_pending_requests.is_some(), "maxPendingRequests", max),
        (c.pending_timeout.is_some(), "pendingTimeout", max),
    ];
    for (set, field, instead) in limits {
        if set {
            f.not_supported(
                format!("spec.connection.{field}"),
                &format!("connection.{field} on a {wire} Backend (use a Route's {instead})"),
            );
        }
    }
    if protocol == UpstreamProtocol::Udp && c.connect_timeout.is_some() {
        f.invalid(
            "spec.connection.connectTimeout",
            "a UDP Backend makes no connections (a Route's udp.replyTimeout bounds a reply)",
        );
    }
}

fn connection_limits(
    c: Option<&api::ConnectionSettings>,
    f: &mut Findings<'_>,
) -> ConnectionLimits {
    let Some(c) = c else {
        return ConnectionLimits::default();
    };
    let at = "spec.connection";
    let dur = |d: Option<api::Duration>, name: &str, f: &mut Findings<'_>| {
        d.map(|d| positive(Some(d), Duration::ZERO, &format!("{at}.{name}"), f))
    };
    let limits = ConnectionLimits {
        connect_timeout: dur(c.connect_timeout, "connectTimeout", f),
        idle_timeout: dur(c.idle_timeout, "idleTimeout", f),
        max_connections: c
            .max_connections
            .map(|n| at_least_one(Some(n), 1, &format!("{at}.maxConnections"), f)),
        max_pending_requests: c.max_pending_requests,
        pending_timeout: dur(c.pending_timeout, "pendingTimeout", f),
    };
    if limits.max_connections.is_none()
        && (limits.max_pending_requests.is_some() || limits.pending_timeout.is_some())
    {
        f.invalid(
            at,
            "maxPendingRequests and pendingTimeout need maxConnections",
        );
    }
    limits
}

/// `"200"` or `"200-399"`, each within 100-599: three digits, as the CRD's pattern has it.
fn status_ranges(raw: &[String], at: &str, f: &mut Findings<'_>) -> Vec<(u16, u16)> {
    let status = |s: &str| {
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let parsed = match r.split_once('-') {
            Some((lo, hi)) => status(lo).zip(status(hi)),
            None => status(r).map(|c| (c, c)),
        };
        match parsed {
            Some((lo, hi))
                if (100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi =>
            {
                out.push((lo, hi))
            }
            _ => f.invalid(
                format!("{at}[{i}]"),
                format!("{r:?} must be a status (e.g. 503) or a range (e.g. 500-599)"),
            ),
        }
    }
    out
}

/// `host:port`, `ip:port` or `[ipv6]:port` (normalized into a URI authority), optionally
/// followed by ` weight=N`.
fn endpoint(raw: &str) -> Result<Endpoint, String> {
    let mut parts = raw.split_whitespace();
    let addr = parts.next().unwrap_or("");
    let weight = match parts.next() {
        None => 1,
        Some(w) => match w
            .strip_prefix("weight=")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(format!(
                    "{raw:?}: write the weight as weight=N with N from 1 to 10000"
                ));
            }
        },
    };
    if parts.next().is_some() {
        return Err(format!(
            "{raw:?}: expected host:port, optionally followed by weight=N"
        ));
    }
    address(addr).map(|address| Endpoint { weight, ..address })
}

fn address(raw: &str) -> Result<Endpoint, String> {
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
