//! The compiler: a pure function from a [`Snapshot`] to a [`RoutingTable`] plus diagnostics.
//!
//! Rules: no I/O; deterministic order (objects are kept sorted by identity); one bad object never
//! breaks another. An object whose current version is rejected keeps serving its last accepted
//! version, if it had one.

mod access;
mod backend;
mod basic_auth;
mod cache;
mod canary;
mod ext_auth;
mod fallback;
mod fields;
mod ingress;
pub mod ingress_affinity;
mod ingress_annotations;
pub mod ingress_auth_tls;
pub mod ingress_canary;
pub mod ingress_migrate;
pub mod ingress_passthrough;
pub mod ingress_proxy_ssl;
pub mod ingress_translate;
mod jwks_uri;
mod jwt;
mod l4;
mod limits;
mod rate_limit;
mod route;
mod targets;
#[cfg(test)]
mod tests;
mod tls;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{Diagnostic, ObjectRef, Reason, RoutingTable, Severity};

use super::snapshot::{Accepted, Obj, Snapshot};
pub use cache::CompileCache;
pub use tls::{AcceptedCaFiles, AcceptedCertificates, parse_certificate};

/// Settings that shape compilation but are not objects.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    /// Routes naming another ingress class are left alone.
    pub ingress_class: String,
    /// IngressClasses with this `spec.controller` are ours (Kubernetes mode).
    pub controller_name: String,
    /// Whether endpoints can be discovered from Services (Kubernetes mode); without it a
    /// Backend must list static endpoints.
    pub discovery: bool,
    /// Whether Global rate limits can be counted (the gateway has a Redis server); without it
    /// a policy with a Global limit is rejected.
    pub global_rate_limits: bool,
    /// The certificate served to TLS clients whose server name no Route or Ingress claims.
    pub default_certificate: Option<DefaultCertificate>,
    /// The L4 ports TCP and UDP Routes may name (`--l4-ports`).
    pub l4_ports: Vec<crate::model::L4Listener>,
    /// Ingress classes served too, whoever their controller is, without writing their
    /// Ingresses' status (`--watch-ingress-class`: side by side with ingress-nginx).
    pub watch_ingress_classes: Vec<String>,
    /// The HTTPS listener TLS Routes are served on.
    pub https: HttpsListener,
}

/// The gateway's HTTPS listener, where TLS Routes are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpsListener {
    /// Not known (`tidegate validate`): TLS Routes are accepted and show port 0.
    #[default]
    Unknown,
    /// There is none (`--https-addr off`): TLS Routes are refused.
    Off,
    /// Bound on this port (TLS Routes show it in `/config`).
    Port(u16),
}

/// Where the default certificate comes from (`--default-certificate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultCertificate {
    /// A `kubernetes.io/tls` Secret: `NAMESPACE/NAME`.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// PEM files: `CERT_FILE,KEY_FILE` (read into [`Snapshot::files`] by the source).
    Files {
        /// The certificate chain, leaf first.
        cert: std::path::PathBuf,
        /// Its private key.
        key: std::path::PathBuf,
    },
}

impl DefaultCertificate {
    /// The files the source must read for it.
    pub fn files(&self) -> Vec<&std::path::Path> {
        match self {
            DefaultCertificate::Secret { .. } => Vec::new(),
            DefaultCertificate::Files { cert, key } => vec![cert, key],
        }
    }
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            ingress_class: crate::api::DEFAULT_INGRESS_CLASS.to_owned(),
            controller_name: crate::api::DEFAULT_CONTROLLER_NAME.to_owned(),
            discovery: false,
            global_rate_limits: false,
            default_certificate: None,
            l4_ports: Vec::new(),
            watch_ingress_classes: Vec::new(),
            https: HttpsListener::Unknown,
        }
    }
}

/// The compiler's output.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The table to publish (its `diagnostics` hold every finding).
    pub table: RoutingTable,
    /// The versions that compiled, for the next snapshot's fallback.
    pub accepted: Accepted,
}

/// Compiles a snapshot. Never fails: every problem becomes a diagnostic on its object.
pub fn compile(snap: &Snapshot, opts: &CompileOptions) -> Compiled {
    compile_with(snap, opts, None)
}

/// [`compile`], reusing from `cache` the Routes that did not change since the compile that
/// filled it (and filling it for the next). The result is the same as [`compile`]'s.
pub fn compile_cached(
    snap: &Snapshot,
    opts: &CompileOptions,
    cache: &mut CompileCache,
) -> Compiled {
    compile_with(snap, opts, Some(cache))
}

/// The compile, with a cache to reuse and fill or (a one-off compile) none: filling one that
/// is dropped at once copied every Route's rules and the snapshot's inputs for nothing.
fn compile_with(
    snap: &Snapshot,
    opts: &CompileOptions,
    mut cache: Option<&mut CompileCache>,
) -> Compiled {
    let mut diags: Vec<Diagnostic> = snap.problems.clone();
    let unreadable: BTreeSet<&ObjectRef> = snap
        .problems
        .iter()
        .filter(|d| d.is_error())
        .filter_map(|d| d.object.as_ref())
        .collect();
    let mut accepted = Accepted::default();

    let canaries = canary::index(&snap.services, &mut diags);
    // Services read from files (`validate --kubernetes`) name their file.
    for d in &mut diags {
        if let Some(svc) = d.object.as_ref().and_then(|id| snap.services.get(id)) {
            d.file = d
                .file
                .take()
                .or_else(|| svc.meta.file.as_deref().map(str::to_owned));
        }
    }
    let mut targets = targets::Targets::new(&snap.services, &canaries);
    let certificates = RefCell::new(tls::TlsBuilder::new(snap));
    for (id, current, fallback) in candidates(&snap.backends, &snap.accepted.backends, &unreadable)
    {
        let chosen = with_fallback(current, fallback, &mut diags, |obj, d| {
            backend::compile_backend(obj, opts, &targets, &certificates, d)
        });
        if let Some(((backend, origin), obj)) = chosen {
            targets.add(backend, origin);
            accepted.backends.insert(id.clone(), obj.clone());
        }
    }

    if let Some(cache) = cache.as_deref_mut() {
        cache.begin(snap, opts, &accepted.backends);
    }
    let known_backends: BTreeSet<&ObjectRef> = snap.backends.keys().collect();
    let env = route::Env {
        opts,
        targets: RefCell::new(targets),
        known_backends: &known_backends,
        secrets: &snap.secrets,
        certificates,
    };
    // At least a rule a Route (counting them read every Route's spec: 10,000 cache misses).
    let mut rules = Vec::with_capacity(snap.routes.len());
    // Fed each Route's rules as they are made, while they are in the caches.
    let mut index = crate::model::IndexBuilder::with_capacity(snap.routes.len());
    let mut l4_routes = Vec::new();
    let mut accepted_routes = AcceptedRoutes::new(&snap.routes);
    for (id, current, fallback) in candidates(&*snap.routes, &*snap.accepted.routes, &unreadable) {
        if let Some(reused) = cache
            .as_deref_mut()
            .and_then(|c| c.get(id, current, fallback))
        {
            diags.extend_from_slice(reused.found);
            if let Some((compiled, from_fallback)) = reused.rules {
                rules.extend(compiled.iter().cloned());
                index.add(&rules);
                let obj = if from_fallback { fallback } else { current };
                accepted_routes.push(id, current, obj);
            } else {
                accepted_routes.push(id, current, None);
            }
            continue;
        }
        let (found_from, reads) = (diags.len(), env.targets.borrow().service_reads());
        let chosen = with_fallback(current, fallback, &mut diags, |obj, d| {
            route::compile_route(obj, &env, d)
        });
        let mut reusable = env.targets.borrow().service_reads() == reads;
        let mut made = None;
        if let Some((compiled, obj)) = chosen {
            match compiled {
                route::CompiledRoute::Http(compiled) => {
                    let from = rules.len();
                    rules.extend(compiled);
                    index.add(&rules);
                    if cache.is_some() {
                        let from_fallback = current.is_none_or(|c| !std::ptr::eq(c, obj));
                        made = Some((rules[from..].to_vec(), from_fallback));
                    }
                }
                route::CompiledRoute::L4(compiled) => {
                    // Its port is checked against every other L4 Route: compiled each time.
                    reusable = false;
                    l4_routes.push(*compiled);
                }
            }
            accepted_routes.push(id, current, Some(obj));
        } else {
            accepted_routes.push(id, current, None);
        }
        match cache.as_deref_mut() {
            Some(cache) if reusable => {
                cache.put(id, current, fallback, diags[found_from..].to_vec(), made);
            }
            Some(cache) => cache.forget(id),
            None => {}
        }
    }
    if let Some(cache) = cache {
        cache.end();
    }
    accepted.routes = accepted_routes.into_map();
    // The rules before here are the Routes'; the Ingresses' follow.
    let route_rules = rules.len();
    let mut ingress_policies = Vec::new();
    for (id, current, fallback) in
        candidates(&snap.ingresses, &snap.accepted.ingresses, &unreadable)
    {
        let chosen = with_fallback(current, fallback, &mut diags, |obj, d| {
            ingress::compile_ingress(obj, snap, &env, d)
        });
        if let Some(((compiled, policy, passthrough), obj)) = chosen {
            rules.extend(compiled.into_iter().map(Arc::new));
            l4_routes.extend(passthrough);
            ingress_policies.extend(policy);
            accepted.ingresses.insert(id.clone(), obj.clone());
        }
    }
    let mut port_diags = Vec::new();
    l4::one_per_port(&mut l4_routes, &mut port_diags);
    // A Route that lost its port is not served: not accepted either.
    for d in &port_diags {
        if let Some(id) = &d.object {
            Arc::make_mut(&mut accepted.routes).remove(id);
        }
    }
    diags.extend(port_diags.into_iter().map(|d| {
        let file = d
            .object
            .as_ref()
            .and_then(|id| snap.routes.get(id))
            .and_then(|r| r.meta.file.clone());
        d.in_file(file.as_deref())
    }));
    let (backends, target_diags) = env.targets.into_inner().into_backends();
    diags.extend(target_diags);

    let mut policies = Vec::new();
    for (id, current, fallback) in candidates(&snap.policies, &snap.accepted.policies, &unreadable)
    {
        let chosen = with_fallback(current, fallback, &mut diags, |obj, d| {
            rate_limit::compile_policy(obj, opts, d)
        });
        if let Some((policy, obj)) = chosen {
            policies.push((policy, obj.spec.target_ref.clone()));
            accepted.policies.insert(id.clone(), obj.clone());
        }
    }
    policies.extend(ingress_policies);
    let mut policy_diags = Vec::new();
    let policies = rate_limit::attach(policies, snap, &mut rules, &mut policy_diags);
    diags.extend(policy_diags.into_iter().map(|d| {
        let file = d
            .object
            .as_ref()
            .and_then(|id| snap.policies.get(id))
            .and_then(|p| p.meta.file.clone());
        d.in_file(file.as_deref())
    }));

    let (tls, certificates, ca_files) = tls::build(
        env.certificates.into_inner(),
        opts,
        &accepted,
        &mut rules,
        route_rules,
        &mut diags,
    );
    accepted.certificates = certificates;
    accepted.ca_files = ca_files;
    let mut shadowed = Vec::new();
    l4::shadowed_certificates(&l4_routes, &tls, &mut shadowed);
    diags.extend(shadowed.into_iter().map(|d| {
        let file = d.object.as_ref().and_then(|id| match id.kind {
            crate::model::Kind::Ingress => snap.ingresses.get(id).and_then(|o| o.meta.file.clone()),
            _ => snap.routes.get(id).and_then(|o| o.meta.file.clone()),
        });
        d.in_file(file.as_deref())
    }));

    diags.sort();
    diags.dedup();
    Compiled {
        table: RoutingTable::built(rules, index, backends, diags)
            .with_rate_limits(policies)
            .with_tls(tls)
            .with_l4(l4_routes),
        accepted,
    }
}

/// The objects to compile, in identity order, each with its current version and its last
/// accepted one: every current object, plus the last accepted version of an object whose current
/// version could not even be read. The two sorted maps are walked side by side: one comparison a
/// step, where a lookup of each object in both maps cost ~3,000 instructions at 2,000 Routes.
fn candidates<'a, S>(
    current: &'a BTreeMap<ObjectRef, Obj<S>>,
    accepted: &'a BTreeMap<ObjectRef, Obj<S>>,
    unreadable: &BTreeSet<&ObjectRef>,
) -> Vec<Candidate<'a, S>> {
    let mut out = Vec::with_capacity(current.len());
    let mut accepted = accepted.iter().peekable();
    let only_accepted = |out: &mut Vec<Candidate<'a, S>>, id: &'a ObjectRef, obj| {
        if unreadable.contains(id) {
            out.push((id, None, Some(obj)));
        }
    };
    for (id, obj) in current {
        let mut fallback = None;
        while let Some(&(old, kept)) = accepted.peek() {
            match old.cmp(id) {
                std::cmp::Ordering::Less => only_accepted(&mut out, old, kept),
                std::cmp::Ordering::Equal => fallback = Some(kept),
                std::cmp::Ordering::Greater => break,
            }
            accepted.next();
            if fallback.is_some() {
                break;
            }
        }
        out.push((id, Some(obj), fallback));
    }
    for (old, kept) in accepted {
        only_accepted(&mut out, old, kept);
    }
    out
}

/// The Routes a compile accepts, gathered in identity order. Nearly always each serves its
/// current version: then the map is the snapshot's, shared (not a copy of its nodes, and no
/// identity compared), not built from a list (a sort and a dedup that compared 10,000 names,
/// ~3 ms a compile at 10,000 Routes).
struct AcceptedRoutes<'s> {
    routes: &'s Arc<BTreeMap<ObjectRef, Obj<crate::api::RouteSpec>>>,
    /// Every accepted Route so far, from the first one that is not a current version as it is
    /// (another version, or a current one not accepted) on; `None` before.
    list: Option<Vec<(ObjectRef, Obj<crate::api::RouteSpec>)>>,
}

impl<'s> AcceptedRoutes<'s> {
    fn new(routes: &'s Arc<BTreeMap<ObjectRef, Obj<crate::api::RouteSpec>>>) -> Self {
        Self { routes, list: None }
    }

    /// Route `id` (current version `current`) is accepted as `accepted` (`None`: not at all).
    /// Called for every candidate, in identity order.
    fn push(
        &mut self,
        id: &ObjectRef,
        current: Option<&Obj<crate::api::RouteSpec>>,
        accepted: Option<&Obj<crate::api::RouteSpec>>,
    ) {
        let as_current = match (current, accepted) {
            (Some(c), Some(a)) => std::ptr::eq(c, a),
            (None, None) => true,
            _ => false,
        };
        let list = match &mut self.list {
            None if as_current => return,
            None => {
                // Every current Route before `id` was accepted as it is.
                let mut list = Vec::with_capacity(self.routes.len());
                list.extend(self.routes.range(..id).map(|(k, v)| (k.clone(), v.clone())));
                self.list.insert(list)
            }
            Some(list) => list,
        };
        list.extend(accepted.map(|a| (id.clone(), a.clone())));
    }

    fn into_map(self) -> Arc<BTreeMap<ObjectRef, Obj<crate::api::RouteSpec>>> {
        match self.list {
            None => Arc::clone(self.routes),
            Some(list) => Arc::new(list.into_iter().collect()),
        }
    }
}

/// An identity to compile, its current version and its last accepted one.
type Candidate<'a, S> = (&'a ObjectRef, Option<&'a Obj<S>>, Option<&'a Obj<S>>);

/// Compiles the current version; if it is rejected (or unreadable), the last accepted one.
fn with_fallback<'a, S: PartialEq, T>(
    current: Option<&'a Obj<S>>,
    fallback: Option<&'a Obj<S>>,
    diags: &mut Vec<Diagnostic>,
    mut compile_one: impl FnMut(&Obj<S>, &mut Vec<Diagnostic>) -> Option<T>,
) -> Option<(T, &'a Obj<S>)> {
    if let Some(obj) = current {
        let mut found = Vec::new();
        let out = compile_one(obj, &mut found);
        // Moved to another ingress class: not ours any more, so no older version serves either.
        let not_ours = found.iter().any(|d| d.severity == Severity::Ignored);
        diags.extend(
            found
                .into_iter()
                .map(|d| d.in_file(obj.meta.file.as_deref())),
        );
        if let Some(out) = out {
            return Some((out, obj));
        }
        if not_ours {
            return None;
        }
    }
    let fallback = fallback.filter(|f| current.is_none_or(|c| !c.same_spec(f)))?;
    let out = compile_one(fallback, &mut Vec::new())?;
    diags.push(Diagnostic {
        object: Some(fallback.meta.id.clone()),
        file: fallback.meta.file.as_deref().map(str::to_owned),
        field: String::new(),
        severity: Severity::Warning,
        reason: Reason::Invalid,
        message: "the last accepted version of this object keeps serving until it is fixed".into(),
    });
    Some((out, fallback))
}
