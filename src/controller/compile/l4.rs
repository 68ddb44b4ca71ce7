//! TCP and UDP Routes → [`L4Route`]s: a port of `--l4-ports` and the backends its connections
//! (or UDP sessions) go to; TLS passthrough Routes → the server names they take.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, RouteProtocol, RouteSpec};
use crate::controller::snapshot::Obj;
use crate::model::{
    Diagnostic, Kind, L4Protocol, L4Route, Reason, Severity, TlsTable, UdpSessions,
    UpstreamProtocol, WeightedBackend,
};

use super::HttpsListener;
use super::fields::{self, Findings};
use super::route::{Env, UnresolvedRef, backend_ref, warning};

/// Compiles a TCP Route (`spec.protocol: TCP`), a UDP Route (`UDP`) or a TLS passthrough Route
/// (`TLS`), or `None` if it is rejected.
pub fn compile_l4_route(
    obj: &Obj<RouteSpec>,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<L4Route> {
    let spec = &obj.spec;
    let id = &obj.meta.id;
    let (protocol, kind) = match spec.protocol {
        RouteProtocol::Tls => (L4Protocol::Tls, "a TLS Route"),
        RouteProtocol::Udp => (L4Protocol::Udp, "a UDP Route"),
        _ => (L4Protocol::Tcp, "a TCP Route"),
    };
    let ports = &env.opts.l4_ports;
    let own_ports = || {
        let list: Vec<String> = ports
            .iter()
            .filter(|p| p.protocol == protocol)
            .map(|p| p.addr.port().to_string())
            .collect();
        match list.is_empty() {
            true => format!(
                "the gateway has none: start it with --l4-ports PORT/{}",
                protocol.as_str()
            ),
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
                    "{kind} needs the gateway port it listens on ({})",
                    own_ports()
                ),
            );
            None
        }
        (_, Some(p))
            if !ports
                .iter()
                .any(|l| l.protocol == protocol && l.addr.port() == p) =>
        {
            f.invalid(
                "spec.port",
                format!(
                    "{p} is not one of the gateway's {} ports ({})",
                    protocol.as_str().to_uppercase(),
                    own_ports()
                ),
            );
            None
        }
        (_, Some(p)) => Some(p),
    };
    if protocol != L4Protocol::Tls && !spec.hostnames.is_empty() {
        f.invalid(
            "spec.hostnames",
            format!(
                "{kind} has no host names (plain {} carries none); remove them",
                protocol.as_str().to_uppercase()
            ),
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
    if protocol != L4Protocol::Udp && spec.udp.is_some() {
        f.invalid("spec.udp", "udp is for UDP Routes");
    }
    if protocol == L4Protocol::Udp && spec.tcp.is_some() {
        f.invalid(
            "spec.tcp",
            "tcp is for TCP and TLS Routes; a UDP Route has udp",
        );
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
            f.invalid(format!("spec.{name}"), "must be greater than zero");
        }
        d
    };
    let (idle_timeout, udp) = match protocol {
        L4Protocol::Udp => {
            let u = spec.udp.clone().unwrap_or_default();
            let idle = positive(u.idle_timeout, "udp.idleTimeout", f);
            let reply_timeout = positive(u.reply_timeout, "udp.replyTimeout", f);
            if u.max_sessions == Some(0) {
                f.invalid("spec.udp.maxSessions", "must be at least 1");
            }
            let max_datagram_size = match u.max_datagram_size {
                None => UdpSessions::MAX_DATAGRAM,
                Some(n) if n == 0 || n as usize > UdpSessions::MAX_DATAGRAM => {
                    f.invalid(
                        "spec.udp.maxDatagramSize",
                        format!("must be 1-{} bytes", UdpSessions::MAX_DATAGRAM),
                    );
                    UdpSessions::MAX_DATAGRAM
                }
                Some(n) => n as usize,
            };
            let sessions = UdpSessions {
                max_sessions: u.max_sessions,
                max_datagram_size,
                reply_timeout,
            };
            (
                Some(idle.unwrap_or(UdpSessions::DEFAULT_IDLE_TIMEOUT)),
                Some(sessions),
            )
        }
        _ => (positive(tcp.idle_timeout, "tcp.idleTimeout", f), None),
    };
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
        match backend_ref(id, r, &at, protocol, env, f) {
            None => {}
            Some(Ok(b)) => match l4_backend(&b, protocol, &at, env) {
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
        let message = match protocol {
            L4Protocol::Udp => format!("{}: datagrams given to it are dropped", u.message),
            _ => format!("{}: connections given to it are closed", u.message),
        };
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
            match protocol {
                L4Protocol::Udp => "every backendRef has weight 0: datagrams are dropped",
                _ => "every backendRef has weight 0: connections are closed",
            },
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
        udp,
        created: obj.meta.created,
    };
    f.ok().then(|| route.with_backends(backends))
}

/// A TCP or TLS Route sends to Backends with `protocol: TCP`, or to TCP ports of Services; a
/// UDP Route to Backends with `protocol: UDP`, or to UDP ports of Services.
fn l4_backend(
    b: &WeightedBackend,
    protocol: L4Protocol,
    at: &str,
    env: &Env<'_>,
) -> Result<(), UnresolvedRef> {
    let Some(idx) = b.backend else { return Ok(()) };
    let targets = env.targets.borrow();
    let backend = targets.backend(idx);
    let (wire, upstream, routes) = match protocol {
        L4Protocol::Udp => ("UDP", UpstreamProtocol::Udp, "a UDP Route"),
        _ => ("TCP", UpstreamProtocol::Tcp, "a TCP or TLS Route"),
    };
    if let Some((service, port)) = targets.origin(idx)
        && port.protocol != wire
    {
        return Err(UnresolvedRef {
            name: b.name.to_string(),
            field: format!("{at}.name"),
            reason: Reason::InvalidKind,
            message: format!(
                "port {} of Service {}/{} is {}; {routes} needs a {wire} port",
                port.port, backend.id.namespace, service, port.protocol
            ),
        });
    }
    if backend.id.kind == Kind::Service || backend.protocol == upstream {
        return Ok(());
    }
    Err(UnresolvedRef {
        name: b.name.to_string(),
        field: format!("{at}.name"),
        reason: Reason::InvalidKind,
        message: format!(
            "{} speaks {}; {routes} needs a Backend with protocol: {wire}",
            backend.id,
            fields::wire_name(&backend.protocol)
        ),
    })
}

/// Keeps one TCP (or UDP) Route per port: the oldest (then the first by namespace/name); the others
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
