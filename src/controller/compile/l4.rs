//! TCP Routes → [`L4Route`]s: a port of `--l4-ports` and the backends its connections go to.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, RouteProtocol, RouteSpec};
use crate::controller::snapshot::Obj;
use crate::model::{
    Diagnostic, Kind, L4Protocol, L4Route, Reason, Severity, TlsTable, UpstreamProtocol,
    WeightedBackend,
};

use super::HttpsListener;
use super::fields::{self, Findings};
use super::route::{Env, UnresolvedRef, backend_ref, warning};

/// Compiles a TCP Route (`spec.protocol: TCP`) or a TLS passthrough Route (`TLS`), or `None`
/// if it is rejected.
pub fn compile_l4_route(
    obj: &Obj<RouteSpec>,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<L4Route> {
    let spec = &obj.spec;
    let id = &obj.meta.id;
    let (protocol, kind) = match spec.protocol {
        RouteProtocol::Tls => (L4Protocol::Tls, "a TLS Route"),
        _ => (L4Protocol::Tcp, "a TCP Route"),
    };
    let ports = &env.opts.l4_ports;
    let tcp_ports = || {
        let list: Vec<String> = ports
            .iter()
            .filter(|p| p.protocol == L4Protocol::Tcp)
            .map(|p| p.addr.port().to_string())
            .collect();
        match list.is_empty() {
            true => "the gateway has none: start it with --l4-ports PORT/tcp".to_owned(),
            false => format!("--l4-ports: {}", list.join(", ")),
        }
    };
    let mut hostnames = Vec::new();
    let port = match (protocol, spec.port) {
        (L4Protocol::Tls, Some(_)) => {
            f.invalid(
                "spec.port",
                "a TLS Route is served on the HTTPS listener (--https-addr); remove port",
            );
            None
        }
        (L4Protocol::Tls, None) => {
            if spec.hostnames.is_empty() {
                f.invalid(
                    "spec.hostnames",
                    "a TLS Route needs the server names (SNI) it takes",
                );
            }
            for (i, h) in spec.hostnames.iter().enumerate() {
                match fields::hostname(h, true) {
                    Ok(h) if !hostnames.contains(&h) => hostnames.push(h),
                    Ok(_) => {}
                    Err(e) => f.invalid(format!("spec.hostnames[{i}]"), e),
                }
            }
            match env.opts.https {
                HttpsListener::Port(p) => Some(p),
                HttpsListener::Unknown => Some(0),
                HttpsListener::Off => {
                    f.invalid(
                        "spec.protocol",
                        "a TLS Route is served on the HTTPS listener, and the gateway has none \
                         (--https-addr off); this Route is not served",
                    );
                    None
                }
            }
        }
        (_, None) => {
            f.invalid(
                "spec.port",
                format!(
                    "a TCP Route needs the gateway port it listens on ({})",
                    tcp_ports()
                ),
            );
            None
        }
        (_, Some(p))
            if !ports
                .iter()
                .any(|l| l.protocol == L4Protocol::Tcp && l.addr.port() == p) =>
        {
            f.invalid(
                "spec.port",
                format!(
                    "{p} is not one of the gateway's TCP ports ({})",
                    tcp_ports()
                ),
            );
            None
        }
        (_, Some(p)) => Some(p),
    };
    if protocol == L4Protocol::Tcp && !spec.hostnames.is_empty() {
        f.invalid(
            "spec.hostnames",
            "a TCP Route has no host names (plain TCP carries none); remove them",
        );
    }
    if spec.tls.is_some() {
        f.invalid(
            "spec.tls",
            "tls is for HTTP Routes (TLS termination); a TLS Route passes TLS through",
        );
    }
    if !spec.rules.is_empty() {
        f.invalid(
            "spec.rules",
            format!("{kind} has no rules; list its backends in spec.backendRefs"),
        );
    }
    if spec.udp.is_some() {
        f.invalid("spec.udp", "udp is for UDP Routes");
    }
    if spec.backend_refs.is_empty() {
        f.invalid(
            "spec.backendRefs",
            format!("{kind} needs at least one backendRef"),
        );
    }

    let tcp = spec.tcp.clone().unwrap_or_default();
    let positive = |d: Option<api::Duration>, name: &str, f: &mut Findings<'_>| {
        let d = d.map(Duration::from);
        if d.is_some_and(|d| d.is_zero()) {
            f.invalid(format!("spec.tcp.{name}"), "must be greater than zero");
        }
        d
    };
    let idle_timeout = positive(tcp.idle_timeout, "idleTimeout", f);
    let drain_timeout = tcp.drain_timeout.map(Duration::from);
    if tcp.max_connections == Some(0) {
        f.invalid("spec.tcp.maxConnections", "must be at least 1");
    }

    let mut backends = Vec::new();
    let mut unresolved = Vec::new();
    for (i, r) in spec.backend_refs.iter().enumerate() {
        let at = format!("spec.backendRefs[{i}]");
        if !r.filters.is_empty() {
            f.invalid(
                format!("{at}.filters"),
                format!("filters are for HTTP; {kind} copies bytes as they are"),
            );
        }
        match backend_ref(id, r, &at, env, f) {
            None => {}
            Some(Ok(b)) => match tcp_backend(&b, &at, env) {
                Ok(()) => backends.push(b),
                Err(u) => {
                    unresolved.push(u);
                    backends.push(WeightedBackend { backend: None, ..b });
                }
            },
            Some(Err(u)) => {
                backends.push(WeightedBackend {
                    backend: None,
                    name: Arc::from(u.name.as_str()),
                    weight: r.weight.unwrap_or(1),
                    canaries: Vec::new(),
                    filters: Default::default(),
                });
                unresolved.push(u);
            }
        }
    }
    for u in unresolved {
        let message = format!("{}: connections given to it are closed", u.message);
        f.push(warning(id, u.field, u.reason, message));
    }
    // Canaries split HTTP requests by header or cookie; a connection has neither.
    for b in &mut backends {
        b.canaries.clear();
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        f.push(warning(
            id,
            "spec.backendRefs",
            Reason::Invalid,
            "every backendRef has weight 0: connections are closed",
        ));
    }

    let route = L4Route {
        route: id.clone(),
        label: id.key().into(),
        protocol,
        port: port?,
        hostnames,
        backends: Vec::new(),
        schedule: Arc::from([]),
        idle_timeout: idle_timeout.unwrap_or(L4Route::DEFAULT_IDLE_TIMEOUT),
        max_connections: tcp.max_connections,
        drain_timeout: drain_timeout.unwrap_or(L4Route::DEFAULT_DRAIN_TIMEOUT),
        created: obj.meta.created,
    };
    f.ok().then(|| route.with_backends(backends))
}

/// A TCP or TLS Route sends to Backends with `protocol: TCP`, or to Services.
fn tcp_backend(b: &WeightedBackend, at: &str, env: &Env<'_>) -> Result<(), UnresolvedRef> {
    let Some(idx) = b.backend else { return Ok(()) };
    let targets = env.targets.borrow();
    let backend = targets.backend(idx);
    if let Some((service, port)) = targets.origin(idx)
        && port.protocol != "TCP"
    {
        return Err(UnresolvedRef {
            name: b.name.to_string(),
            field: format!("{at}.name"),
            reason: Reason::InvalidKind,
            message: format!(
                "port {} of Service {}/{} is {}; a TCP or TLS Route needs a TCP port",
                port.port, backend.id.namespace, service, port.protocol
            ),
        });
    }
    if backend.id.kind == Kind::Service || backend.protocol == UpstreamProtocol::Tcp {
        return Ok(());
    }
    Err(UnresolvedRef {
        name: b.name.to_string(),
        field: format!("{at}.name"),
        reason: Reason::InvalidKind,
        message: format!(
            "{} speaks {}; a TCP or TLS Route needs a Backend with protocol: TCP",
            backend.id,
            fields::wire_name(&backend.protocol)
        ),
    })
}

/// Keeps one TCP Route per port: the oldest (then the first by namespace/name); the others
/// are reported and not served.
pub fn one_per_port(routes: &mut Vec<L4Route>, out: &mut Vec<Diagnostic>) {
    routes.sort_by(|a, b| {
        (a.protocol, a.port, a.created.is_none(), a.created, &a.route).cmp(&(
            b.protocol,
            b.port,
            b.created.is_none(),
            b.created,
            &b.route,
        ))
    });
    let mut kept: Vec<L4Route> = Vec::with_capacity(routes.len());
    for r in routes.drain(..) {
        let taken = |k: &&L4Route| match r.protocol {
            L4Protocol::Tls => {
                k.protocol == L4Protocol::Tls && k.hostnames.iter().any(|h| r.hostnames.contains(h))
            }
            _ => k.port == r.port && k.protocol == r.protocol,
        };
        if r.protocol == L4Protocol::Tls
            && let Some(winner) = kept.iter().find(taken)
        {
            let shared: Vec<&str> = r
                .hostnames
                .iter()
                .filter(|h| winner.hostnames.contains(h))
                .map(String::as_str)
                .collect();
            out.push(Diagnostic::error(
                &r.route,
                "spec.hostnames",
                Reason::Conflicted,
                format!(
                    "{} passed through by {} (the older Route); this Route is not served",
                    shared.join(", "),
                    winner.route
                ),
            ));
            continue;
        }
        match kept.iter().find(taken) {
            Some(winner) => out.push(Diagnostic::error(
                &r.route,
                "spec.port",
                Reason::Conflicted,
                format!(
                    "{} port {} is taken by {} (the older Route); this Route is not served",
                    r.protocol.as_str().to_uppercase(),
                    r.port,
                    winner.route
                ),
            )),
            None => kept.push(r),
        }
    }
    kept.sort_by(|a, b| a.route.cmp(&b.route));
    *routes = kept;
}

/// A host name that a Route or Ingress terminates (it has a certificate for it) and a TLS Route
/// passes through is passed through: the server name is read before any certificate is chosen.
/// The terminating object is told (a warning: its other hosts and its plain HTTP serve).
pub fn shadowed_certificates(routes: &[L4Route], tls: &TlsTable, out: &mut Vec<Diagnostic>) {
    for host in &tls.hosts {
        if let Some(by) = crate::model::passthrough(routes, &host.hostname) {
            out.push(Diagnostic {
                severity: Severity::Warning,
                ..Diagnostic::error(
                    &host.owner,
                    "spec.tls",
                    Reason::Conflicted,
                    format!(
                        "{} is passed through by {} (protocol TLS): its HTTPS connections go \
                         there, and this certificate is never served for it",
                        host.hostname, by.route
                    ),
                )
            });
        }
    }
}
