//! The table's backends while compiling: accepted Backends, plus backends made on demand for
//! Service references (Route `kind: Service`, Ingress backends) and for canaries.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::canary::CanaryIndex;
use crate::controller::objects::{PortRef, ServiceInfo, ServicePortInfo};
use crate::controller::snapshot::Obj;
use crate::model::{
    Backend, BackendIdx, Canary, Diagnostic, Kind, LoadBalancing, ObjectRef, Reason, ServiceKey,
    UpstreamProtocol, WeightedBackend,
};

/// A map by name, hashed with foldhash (names come from the configuration).
type NameMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

/// Why a Service reference cannot be resolved (becomes a diagnostic on the referrer).
pub struct Unresolved {
    pub reason: Reason,
    pub message: String,
}

/// Backends by index, and how to find or make them.
pub struct Targets<'a> {
    services: &'a BTreeMap<ObjectRef, Obj<ServiceInfo>>,
    canaries: &'a CanaryIndex,
    backends: Vec<Backend>,
    index: BTreeMap<ObjectRef, BackendIdx>,
    /// Backend objects by namespace and name: a backendRef finds its Backend without building
    /// an identity (two strings) per reference, by hash (a tree compared ~7 names a lookup,
    /// two lookups a rule).
    by_name: NameMap<NameMap<BackendIdx>>,
    /// Per backend: the Service port its endpoints come from, for canary port matching.
    origin: Vec<Option<(String, ServicePortInfo)>>,
    /// Canary findings about Services, reported once each.
    pub diagnostics: Vec<Diagnostic>,
    /// How many times a Service was read or a backend made on demand: what a referrer then
    /// gets depends on the referrers compiled before it (see [`Targets::service_reads`]).
    service_reads: std::cell::Cell<u64>,
}

impl<'a> Targets<'a> {
    pub fn new(
        services: &'a BTreeMap<ObjectRef, Obj<ServiceInfo>>,
        canaries: &'a CanaryIndex,
    ) -> Self {
        Self {
            services,
            canaries,
            backends: Vec::new(),
            index: BTreeMap::new(),
            by_name: NameMap::default(),
            origin: Vec::new(),
            diagnostics: Vec::new(),
            service_reads: std::cell::Cell::new(0),
        }
    }

    /// A count that moves whenever a Service is read, a backend is made on demand or canaries
    /// are attached: a Route whose compile left it alone got only Backend objects, whose
    /// indexes do not depend on the Routes compiled before it, so its rules can be reused.
    pub fn service_reads(&self) -> u64 {
        self.service_reads.get()
    }

    fn read_service(&self) {
        self.service_reads.set(self.service_reads.get() + 1);
    }

    /// Adds an accepted Backend; `origin` is its resolved Service port, if it has one.
    pub fn add(
        &mut self,
        backend: Backend,
        origin: Option<(String, ServicePortInfo)>,
    ) -> BackendIdx {
        let idx = self.backends.len();
        self.index.insert(backend.id.clone(), idx);
        if backend.id.kind == Kind::Backend {
            self.by_name
                .entry(backend.id.namespace.to_string())
                .or_default()
                .insert(backend.id.name.to_string(), idx);
        }
        self.backends.push(backend);
        self.origin.push(origin);
        idx
    }

    /// The index of an accepted Backend (or an already-made backend) by identity.
    pub fn get(&self, id: &ObjectRef) -> Option<BackendIdx> {
        self.index.get(id).copied()
    }

    /// The Backend object `namespace/name`, if it was added: [`Targets::get`] of its identity.
    pub fn backend_named(&self, namespace: &str, name: &str) -> Option<BackendIdx> {
        self.by_name.get(namespace)?.get(name).copied()
    }

    /// Resolves `name`'s port in `namespace`: the port by number or name; with no port, the
    /// Service's only port.
    pub fn resolve_port(
        &self,
        namespace: &str,
        name: &str,
        port: Option<&PortRef>,
        protocol: &str,
    ) -> Result<ServicePortInfo, Unresolved> {
        self.read_service();
        let id = ObjectRef::new(Kind::Service, namespace, name);
        let Some(svc) = self.services.get(&id) else {
            return Err(Unresolved {
                reason: Reason::ServiceNotFound,
                message: format!("{id} not found"),
            });
        };
        match port {
            Some(p) => svc
                .spec
                .port(p, protocol)
                .cloned()
                .ok_or_else(|| Unresolved {
                    reason: Reason::PortNotFound,
                    message: format!("{id} has no port {p}"),
                }),
            None => match svc.spec.ports.as_slice() {
                [only] => Ok(only.clone()),
                ports => Err(Unresolved {
                    reason: Reason::PortNotFound,
                    message: format!("{id} has {} ports; name one with port", ports.len()),
                }),
            },
        }
    }

    /// The number of the first port of Service `namespace/name`, if it exists and has one.
    pub fn first_port(&self, namespace: &str, name: &str) -> Option<u16> {
        self.read_service();
        let id = ObjectRef::new(Kind::Service, namespace, name);
        Some(self.services.get(&id)?.spec.ports.first()?.port)
    }

    /// The Service port backend `idx` takes its endpoints from, if any.
    pub fn origin(&self, idx: BackendIdx) -> Option<(&str, &ServicePortInfo)> {
        self.read_service();
        self.origin[idx]
            .as_ref()
            .map(|(service, port)| (service.as_str(), port))
    }

    /// Backend `idx`.
    pub fn backend(&self, idx: BackendIdx) -> &Backend {
        &self.backends[idx]
    }

    /// The backend for a Service port with default settings (made once, shared by referrers).
    pub fn service(&mut self, namespace: &str, name: &str, port: &ServicePortInfo) -> BackendIdx {
        self.service_with(namespace, name, port, &ServiceSettings::default())
    }

    /// [`Self::service`] with `settings` (an Ingress's `backend-protocol`, `load-balance`,
    /// `upstream-hash-by`, `proxy-connect-timeout`): a backend of its own, `name:port` followed
    /// by what differs from the defaults (`/h2c`, `/lb=…`, `/connect=5s`).
    pub fn service_with(
        &mut self,
        namespace: &str,
        name: &str,
        port: &ServicePortInfo,
        settings: &ServiceSettings,
    ) -> BackendIdx {
        self.read_service();
        // A Service's TCP and UDP ports may share a number (DNS): the UDP one is `name:53/udp`.
        let mut id = match port.protocol.as_str() {
            "UDP" => format!("{name}:{}/udp", port.port),
            _ => format!("{name}:{}", port.port),
        };
        let udp = port.protocol == "UDP";
        if !udp {
            if settings.h2c {
                id.push_str("/h2c");
            }
            if let Some(lb) = settings.label() {
                id.push_str("/lb=");
                id.push_str(&lb);
            }
            if let Some(t) = settings.connect_timeout {
                id.push_str(&format!("/connect={}s", t.as_secs()));
            }
            if let Some(tls) = &settings.tls {
                id.push_str(&tls_label(tls, settings.http2));
            }
            if let Some(s) = &settings.session_persistence {
                id.push_str(&session_label(s));
            }
        }
        let id = ObjectRef::new(Kind::Service, namespace, id);
        let protocol = match port.protocol.as_str() {
            "UDP" => UpstreamProtocol::Udp,
            _ if settings.h2c => UpstreamProtocol::H2c,
            _ if settings.http2 && settings.tls.is_some() => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::Http1,
        };
        if let Some(idx) = self.get(&id) {
            return idx;
        }
        let backend = Backend {
            service: Some(ServiceKey::new(namespace, name, port.name.clone())),
            load_balancer: if udp {
                LoadBalancing::default()
            } else {
                settings.load_balancing.clone()
            },
            session_persistence: settings.session_persistence.clone().filter(|_| !udp),
            connection: crate::model::ConnectionLimits {
                connect_timeout: settings.connect_timeout.filter(|_| !udp),
                ..Default::default()
            },
            tls: settings.tls.clone().filter(|_| !udp),
            ..Backend::new(id, protocol, Vec::new())
        };
        self.add(backend, Some((name.to_owned(), port.clone())))
    }

    /// A backendRef to backend `idx` with `weight`, with the canaries of its Service attached.
    pub fn weighted(&mut self, idx: BackendIdx, weight: u32) -> WeightedBackend {
        let mut canaries = Vec::new();
        if let Some((service, port)) = self.origin[idx].clone() {
            self.read_service();
            let ns = self.backends[idx].id.namespace.to_string();
            let list = self
                .canaries
                .get(&(ns.clone(), service.clone()))
                .cloned()
                .unwrap_or_default();
            // A canary with no weight, header or cookie would never get a request.
            for c in list
                .into_iter()
                .filter(|c| c.weight > 0 || c.header.is_some() || c.cookie.is_some())
            {
                let Some(canary_port) = self.canary_port(&ns, &c.service, &port) else {
                    self.diagnostics.push(Diagnostic {
                        severity: crate::model::Severity::Warning,
                        ..Diagnostic::error(
                            &ObjectRef::new(Kind::Service, ns.clone(), c.service.clone()),
                            "spec.ports",
                            Reason::PortNotFound,
                            format!(
                                "no port matches port {} of the primary Service {ns}/{service} (by name, then number); this canary gets no traffic",
                                port.port
                            ),
                        )
                    });
                    continue;
                };
                let backend = self.canary_backend(idx, &ns, &c.service, &canary_port);
                canaries.push(Canary {
                    backend,
                    name: self.backends[backend].label.clone(),
                    weight: c.weight,
                    header: c.header.clone(),
                    cookie: c.cookie.clone(),
                });
            }
        }
        WeightedBackend {
            backend: Some(idx),
            name: self.backends[idx].label.clone(),
            weight,
            canaries,
            filters: Default::default(),
        }
    }

    /// The canary's port for the primary's `port`: same name, else same number, else its only port.
    fn canary_port(
        &self,
        ns: &str,
        canary: &str,
        port: &ServicePortInfo,
    ) -> Option<ServicePortInfo> {
        let svc = self
            .services
            .get(&ObjectRef::new(Kind::Service, ns, canary))?;
        let ports = &svc.spec.ports;
        ports
            .iter()
            .find(|p| !port.name.is_empty() && p.name == port.name)
            .or_else(|| ports.iter().find(|p| p.port == port.port))
            .or(if ports.len() == 1 {
                ports.first()
            } else {
                None
            })
            .cloned()
    }

    /// The backend a canary of `primary` sends to: a Service backend when the primary is one;
    /// for a Backend object, a copy of its settings pointed at the canary Service.
    fn canary_backend(
        &mut self,
        primary: BackendIdx,
        ns: &str,
        canary: &str,
        port: &ServicePortInfo,
    ) -> BackendIdx {
        let p = &self.backends[primary];
        if p.id.kind == Kind::Service {
            let settings = ServiceSettings {
                h2c: p.protocol == UpstreamProtocol::H2c,
                load_balancing: p.load_balancer.clone(),
                connect_timeout: p.connection.connect_timeout,
                http2: p.protocol == UpstreamProtocol::Http2,
                tls: p.tls.clone(),
                session_persistence: p.session_persistence.clone(),
            };
            return self.service_with(ns, canary, port, &settings);
        }
        // `/` cannot appear in object names, so this identity never collides with a real one.
        let id = ObjectRef::new(p.id.kind, ns, format!("{}/canary/{canary}", p.id.name));
        if let Some(idx) = self.get(&id) {
            return idx;
        }
        let label: Arc<str> = format!("{ns}/{}/canary/{canary}", p.id.name).into();
        // The canary is treated like its primary: same protocol, balancing, health, limits.
        let backend = Backend {
            id,
            label,
            endpoints: Vec::new(),
            service: Some(ServiceKey::new(ns, canary, port.name.clone())),
            ..p.clone()
        };
        self.add(backend, None)
    }

    /// The finished list of backends.
    pub fn into_backends(self) -> (Vec<Backend>, Vec<Diagnostic>) {
        (self.backends, self.diagnostics)
    }
}

/// How a Service port is spoken to when it is not the defaults (an Ingress's annotations).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSettings {
    /// HTTP/2 cleartext (`backend-protocol: GRPC` or `H2C`).
    pub h2c: bool,
    /// `load-balance`, `upstream-hash-by`.
    pub load_balancing: LoadBalancing,
    /// `proxy-connect-timeout` (whole seconds).
    pub connect_timeout: Option<std::time::Duration>,
    /// HTTP/2 over TLS (`backend-protocol: GRPCS`), with `tls`.
    pub http2: bool,
    /// TLS to the endpoints (`backend-protocol: HTTPS` or `GRPCS`, `proxy-ssl-*`).
    pub tls: Option<Arc<crate::model::UpstreamTls>>,
    /// `affinity: cookie` and `session-cookie-*`.
    pub session_persistence: Option<Arc<crate::model::SessionCookie>>,
}

/// The TLS settings in a Service backend's id: `/https` (or `/grpcs`), then `/insecure` or
/// the CA, the client certificate and the server name.
fn tls_label(tls: &crate::model::UpstreamTls, http2: bool) -> String {
    let mut out = String::from(if http2 { "/grpcs" } else { "/https" });
    match &tls.ca {
        _ if tls.insecure_skip_verify => out.push_str("/insecure"),
        Some(ca) => out.push_str(&format!("/ca={}", ca.source)),
        None => out.push_str("/ca=system"),
    }
    if let Some(c) = &tls.client_certificate {
        out.push_str(&format!("/cert={}", c.source));
    }
    if let Some(sni) = &tls.server_name {
        out.push_str(&format!("/sni={sni}"));
    }
    out
}

/// The part of a Service backend's id that says it keeps sessions: `/sticky=NAME`, then the
/// cookie settings that are not the defaults (two Ingresses that set the cookie differently get
/// backends of their own).
fn session_label(s: &crate::model::SessionCookie) -> String {
    use std::fmt::Write;
    let mut label = format!("/sticky={}", s.name);
    if let Some(p) = &s.path {
        let _ = write!(label, ",path={p}");
    }
    if let Some(d) = &s.domain {
        let _ = write!(label, ",domain={d}");
    }
    if let Some(a) = s.max_age {
        let _ = write!(label, ",max-age={}s", a.as_secs());
    }
    if let Some(secure) = s.secure {
        let _ = write!(label, ",secure={secure}");
    }
    if !s.http_only {
        label.push_str(",http-only=false");
    }
    if let Some(v) = s.same_site {
        let _ = write!(label, ",same-site={v:?}");
    }
    if s.conditional_same_site_none {
        label.push_str(",conditional-same-site-none");
    }
    if s.change_on_failure {
        label.push_str(",change-on-failure");
    }
    label
}

impl ServiceSettings {
    /// The load balancing in the backend's id, when not the default.
    fn label(&self) -> Option<String> {
        use crate::model::HashKey;
        Some(match &self.load_balancing {
            LoadBalancing::RoundRobin => return None,
            LoadBalancing::ConsistentHash(HashKey::Header(h)) => format!("hash-header-{h}"),
            LoadBalancing::ConsistentHash(HashKey::Cookie(c)) => format!("hash-cookie-{c}"),
            LoadBalancing::ConsistentHash(HashKey::QueryParam(q)) => format!("hash-query-{q}"),
            LoadBalancing::ConsistentHash(HashKey::SourceIp) => "hash-source-ip".to_owned(),
            other => format!("{other:?}"),
        })
    }
}
