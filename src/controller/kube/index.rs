//! The index: every watched object reduced to what the compiler and the status writer need.
//!
//! As in linkerd2's policy controller, each kind has synchronous `apply`/`delete`/`reset` that
//! never fail: an object that cannot be read becomes a problem on its identity (and its last
//! accepted version keeps serving). Kubernetes types stop here; what leaves is a [`Snapshot`].

// kube's DeserializeGuard hands over `Result<K, InvalidObject>`; see watch.rs.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::core::error_boundary::InvalidObject;

use super::referenced::{ByReference, Key, Refs};
use crate::api::annotations::{
    CANARY_COOKIE, CANARY_HEADER, CANARY_OF, CANARY_WEIGHT, INGRESS_ANNOTATION_PREFIXES,
    IS_DEFAULT_CLASS, LEGACY_INGRESS_CLASS,
};
use crate::api::{
    Backend, BackendSpec, EndpointCounts, RateLimitPolicy, RateLimitPolicySpec, Route, RouteSpec,
};
use crate::controller::objects::{
    CanaryAnnotations, ConfigMapInfo, IngressBackendInfo, IngressClassInfo, IngressInfo,
    IngressPathInfo, IngressRuleInfo, IngressTlsInfo, PortRef, SecretInfo, ServiceInfo,
    ServicePortInfo,
};
use crate::controller::snapshot::{Accepted, Meta, Obj, Snapshot, not_in};
use crate::model::{Diagnostic, Kind, ObjectRef, Reason};

/// What an index update means for the control loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Nothing the compiler or the status writer reads.
    None,
    /// Only an object's observed status changed: check whether status needs writing.
    Status,
    /// The compiler's input changed.
    Compile,
}

/// The watched kinds, for readiness (every one must finish its first list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watched {
    /// `Route` objects.
    Route,
    /// `Backend` objects.
    Backend,
    /// `RateLimitPolicy` objects.
    RateLimitPolicy,
    /// `Service` objects.
    Service,
    /// `EndpointSlice` objects.
    EndpointSlice,
    /// `Secret` objects (metadata; data of referenced ones).
    Secret,
    /// `ConfigMap` objects (metadata; data of referenced ones).
    ConfigMap,
    /// `Ingress` objects.
    Ingress,
    /// `IngressClass` objects.
    IngressClass,
}

impl Watched {
    /// The kind as a metrics label (`tidegate_controller_events_total{kind}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Watched::Route => "route",
            Watched::Backend => "backend",
            Watched::RateLimitPolicy => "ratelimitpolicy",
            Watched::Service => "service",
            Watched::EndpointSlice => "endpointslice",
            Watched::Secret => "secret",
            Watched::ConfigMap => "configmap",
            Watched::Ingress => "ingress",
            Watched::IngressClass => "ingressclass",
        }
    }

    /// Every kind, in a stable order.
    pub const ALL: [Watched; 9] = [
        Watched::Route,
        Watched::Backend,
        Watched::RateLimitPolicy,
        Watched::Service,
        Watched::EndpointSlice,
        Watched::Secret,
        Watched::ConfigMap,
        Watched::Ingress,
        Watched::IngressClass,
    ];
}

/// The status an object carries now (as last seen through the watch).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `status.observedGeneration`.
    pub generation: Option<i64>,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// `status.endpoints` (Backends).
    pub endpoints: Option<EndpointCounts>,
    /// `metadata.uid`, for Events.
    pub uid: Option<String>,
}

/// One address of a load balancer status.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LbAddress {
    /// An IP address.
    pub ip: Option<String>,
    /// A host name.
    pub hostname: Option<String>,
}

/// Every watched object, reduced.
#[derive(Default)]
pub struct Index {
    /// Shared with the snapshots taken of it: a snapshot of 10,000 Routes copies none (the map
    /// is copied only if a Route changes while a compile still holds a snapshot).
    routes: Arc<BTreeMap<ObjectRef, Obj<RouteSpec>>>,
    backends: BTreeMap<ObjectRef, Obj<BackendSpec>>,
    policies: BTreeMap<ObjectRef, Obj<RateLimitPolicySpec>>,
    services: BTreeMap<ObjectRef, Obj<ServiceInfo>>,
    ingresses: BTreeMap<ObjectRef, Obj<IngressInfo>>,
    ingress_classes: BTreeMap<String, IngressClassInfo>,
    /// Secrets: every one's resource version, the data of referenced ones (see referenced.rs).
    secrets: ByReference<SecretInfo>,
    /// ConfigMaps, the same way.
    config_maps: ByReference<ConfigMapInfo>,
    /// Secrets referenced by the options (`--default-certificate`).
    pinned_secrets: BTreeSet<Key>,
    /// Objects that could not be read, by identity.
    problems: BTreeMap<ObjectRef, Diagnostic>,
    /// One allocation per namespace name, shared by the identities of its objects.
    namespaces: BTreeSet<Arc<str>>,
    /// Status as seen on Route/Backend/RateLimitPolicy objects.
    observed: BTreeMap<ObjectRef, Observed>,
    /// `status.loadBalancer` as seen on Ingresses (and their uids).
    ingress_lb: BTreeMap<ObjectRef, (Vec<LbAddress>, Option<String>)>,
    /// The Service whose load balancer addresses are published to Ingresses.
    publish_service: Option<ObjectRef>,
    published: Vec<LbAddress>,
    synced: BTreeSet<Watched>,
}

/// One of our custom resources, as the index stores it.
pub trait Custom: kube::Resource<DynamicType = ()> + Sized {
    /// Its spec.
    type Spec: Clone + PartialEq;
    /// The compiler's name for it.
    const KIND: Kind;
    /// Which watch it comes from.
    const WATCHED: Watched;
    /// Its spec and its status as the index keeps it, moved out of the object (a copy of each
    /// Route's spec, then dropping the original, cost a second allocation of every field).
    fn into_parts(self) -> (Self::Spec, Observed);
    /// Where the index keeps it, to change.
    fn map(index: &mut Index) -> &mut BTreeMap<ObjectRef, Obj<Self::Spec>>;
    /// Where the index keeps it, to read.
    fn objects(index: &Index) -> &BTreeMap<ObjectRef, Obj<Self::Spec>>;
}

impl Custom for Route {
    type Spec = RouteSpec;
    const KIND: Kind = Kind::Route;
    const WATCHED: Watched = Watched::Route;
    fn into_parts(self) -> (RouteSpec, Observed) {
        let s = self.status.unwrap_or_default();
        let observed = Observed {
            generation: s.observed_generation,
            conditions: s.conditions,
            endpoints: None,
            uid: self.metadata.uid,
        };
        (self.spec, observed)
    }
    fn map(index: &mut Index) -> &mut BTreeMap<ObjectRef, Obj<RouteSpec>> {
        Arc::make_mut(&mut index.routes)
    }
    fn objects(index: &Index) -> &BTreeMap<ObjectRef, Obj<RouteSpec>> {
        &index.routes
    }
}

impl Custom for Backend {
    type Spec = BackendSpec;
    const KIND: Kind = Kind::Backend;
    const WATCHED: Watched = Watched::Backend;
    fn into_parts(self) -> (BackendSpec, Observed) {
        let s = self.status.unwrap_or_default();
        let observed = Observed {
            generation: s.observed_generation,
            conditions: s.conditions,
            endpoints: s.endpoints,
            uid: self.metadata.uid,
        };
        (self.spec, observed)
    }
    fn map(index: &mut Index) -> &mut BTreeMap<ObjectRef, Obj<BackendSpec>> {
        &mut index.backends
    }
    fn objects(index: &Index) -> &BTreeMap<ObjectRef, Obj<BackendSpec>> {
        &index.backends
    }
}

impl Custom for RateLimitPolicy {
    type Spec = RateLimitPolicySpec;
    const KIND: Kind = Kind::RateLimitPolicy;
    const WATCHED: Watched = Watched::RateLimitPolicy;
    fn into_parts(self) -> (RateLimitPolicySpec, Observed) {
        let s = self.status.unwrap_or_default();
        let observed = Observed {
            generation: s.observed_generation,
            conditions: s.conditions,
            endpoints: None,
            uid: self.metadata.uid,
        };
        (self.spec, observed)
    }
    fn map(index: &mut Index) -> &mut BTreeMap<ObjectRef, Obj<RateLimitPolicySpec>> {
        &mut index.policies
    }
    fn objects(index: &Index) -> &BTreeMap<ObjectRef, Obj<RateLimitPolicySpec>> {
        &index.policies
    }
}

fn id_of(kind: Kind, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Index {
    /// The metadata the compiler reads, its namespace shared with every object of that
    /// namespace seen before (so that comparing identities settles the namespace by address).
    fn meta_of(&mut self, kind: Kind, meta: &ObjectMeta) -> Meta {
        let mut id = id_of(kind, meta);
        id.share_namespace(&mut self.namespaces);
        Meta {
            id,
            file: None,
            created: meta.creation_timestamp.as_ref().map(|t| t.0.as_second()),
            generation: meta.generation,
        }
    }

    /// An index that records the load balancer addresses of `publish_service`.
    pub fn new(publish_service: Option<ObjectRef>) -> Self {
        Self {
            publish_service,
            ..Self::default()
        }
    }

    /// Adds or replaces one of our resources (or records why it cannot be read).
    pub fn apply_custom<K: Custom>(&mut self, obj: Result<K, InvalidObject>) -> Change {
        match obj {
            Ok(obj) => {
                let meta = self.meta_of(K::KIND, obj.meta());
                let id = meta.id.clone();
                let (spec, observed) = obj.into_parts();
                let status_changed = self.observed.get(&id) != Some(&observed);
                self.observed.insert(id.clone(), observed);
                let had_problem = self.problems.remove(&id).is_some();
                let new = Obj {
                    meta,
                    spec: Arc::new(spec),
                };
                // Read before written: most events (status, resyncs) change nothing here.
                if !had_problem && K::objects(self).get(&id) == Some(&new) {
                    return if status_changed {
                        Change::Status
                    } else {
                        Change::None
                    };
                }
                K::map(self).insert(id, new);
                Change::Compile
            }
            Err(invalid) => {
                let id = id_of(K::KIND, &invalid.metadata);
                tracing::warn!(object = %id, error = %invalid.error, "cannot read object; its last accepted version keeps serving");
                if K::objects(self).contains_key(&id) {
                    K::map(self).remove(&id);
                }
                self.observed.insert(
                    id.clone(),
                    Observed {
                        uid: invalid.metadata.uid.clone(),
                        ..self.observed.get(&id).cloned().unwrap_or_default()
                    },
                );
                self.problems.insert(
                    id.clone(),
                    Diagnostic::error(
                        &id,
                        "",
                        Reason::Malformed,
                        format!("cannot be read: {}", invalid.error),
                    ),
                );
                Change::Compile
            }
        }
    }

    /// Removes one of our resources.
    pub fn delete_custom<K: Custom>(&mut self, meta: &ObjectMeta) -> Change {
        let id = id_of(K::KIND, meta);
        self.observed.remove(&id);
        let a = K::objects(self).contains_key(&id) && K::map(self).remove(&id).is_some();
        let b = self.problems.remove(&id).is_some();
        if a || b {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// Forgets every object of `kind` (before a relist's objects are applied again).
    pub fn clear(&mut self, kind: Watched) {
        let of_kind = |k: Kind| match k {
            Kind::Route => Watched::Route,
            Kind::Backend => Watched::Backend,
            Kind::RateLimitPolicy => Watched::RateLimitPolicy,
            Kind::Service => Watched::Service,
            Kind::Ingress => Watched::Ingress,
            Kind::Secret => Watched::Secret,
            Kind::ConfigMap => Watched::ConfigMap,
        };
        self.problems.retain(|id, _| of_kind(id.kind) != kind);
        self.observed.retain(|id, _| of_kind(id.kind) != kind);
        match kind {
            Watched::Route => self.routes = Default::default(),
            Watched::Backend => self.backends.clear(),
            Watched::RateLimitPolicy => self.policies.clear(),
            Watched::Service => {
                self.services.clear();
                self.published.clear();
            }
            Watched::Ingress => {
                self.ingresses.clear();
                self.ingress_lb.clear();
            }
            Watched::IngressClass => self.ingress_classes.clear(),
            Watched::Secret => self.secrets.clear_versions(),
            Watched::ConfigMap => self.config_maps.clear_versions(),
            Watched::EndpointSlice => {}
        }
    }

    /// Marks `kind` as listed once; the table is published only when every kind is.
    pub fn mark_synced(&mut self, kind: Watched) {
        self.synced.insert(kind);
    }

    /// Whether every watched kind has been listed.
    pub fn synced(&self) -> bool {
        Watched::ALL.iter().all(|k| self.synced.contains(k))
    }

    /// The kinds not listed yet.
    pub fn pending(&self) -> Vec<Watched> {
        Watched::ALL
            .iter()
            .filter(|k| !self.synced.contains(k))
            .copied()
            .collect()
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) -> Change {
        let meta = self.meta_of(Kind::Service, &svc.metadata);
        let id = meta.id.clone();
        let mut change = Change::None;
        if self.publish_service.as_ref() == Some(&id) {
            let lb: Vec<LbAddress> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|list| {
                    list.iter()
                        .map(|i| LbAddress {
                            ip: i.ip.clone(),
                            hostname: i.hostname.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if lb != self.published {
                self.published = lb;
                change = Change::Status;
            }
        }
        let annotation = |name: &str| {
            svc.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .cloned()
        };
        let info = ServiceInfo {
            ports: svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| {
                            Some(ServicePortInfo {
                                name: p.name.clone().unwrap_or_default(),
                                port: u16::try_from(p.port).ok()?,
                                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            canary: CanaryAnnotations {
                of: annotation(CANARY_OF),
                weight: annotation(CANARY_WEIGHT),
                header: annotation(CANARY_HEADER),
                cookie: annotation(CANARY_COOKIE),
            },
        };
        let new = Obj {
            meta,
            spec: Arc::new(info),
        };
        // Services change often (status, resourceVersion); only what routing reads matters.
        let same = self
            .services
            .get(&id)
            .is_some_and(|old| old.spec == new.spec);
        self.observed.insert(
            id.clone(),
            Observed {
                uid: svc.metadata.uid.clone(),
                ..Observed::default()
            },
        );
        self.services.insert(id, new);
        if same { change } else { Change::Compile }
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, meta: &ObjectMeta) -> Change {
        let id = id_of(Kind::Service, meta);
        if self.publish_service.as_ref() == Some(&id) {
            self.published.clear();
        }
        self.observed.remove(&id);
        if self.services.remove(&id).is_some() {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// Adds or replaces an Ingress.
    pub fn apply_ingress(&mut self, ing: &Ingress) -> Change {
        let meta = self.meta_of(Kind::Ingress, &ing.metadata);
        let id = meta.id.clone();
        let spec = ing.spec.clone().unwrap_or_default();
        let info = IngressInfo {
            class_name: spec.ingress_class_name.clone(),
            class_annotation: ing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_INGRESS_CLASS))
                .cloned(),
            default_backend: spec.default_backend.as_ref().map(ingress_backend),
            rules: spec
                .rules
                .iter()
                .flatten()
                .map(|r| IngressRuleInfo {
                    host: r.host.clone().filter(|h| !h.is_empty()),
                    paths: r
                        .http
                        .iter()
                        .flat_map(|h| h.paths.iter())
                        .map(|p| IngressPathInfo {
                            path: p.path.clone().filter(|p| !p.is_empty()),
                            path_type: p.path_type.clone(),
                            backend: ingress_backend(&p.backend),
                        })
                        .collect(),
                })
                .collect(),
            tls: spec
                .tls
                .iter()
                .flatten()
                .map(|t| IngressTlsInfo {
                    hosts: t.hosts.clone().unwrap_or_default(),
                    secret_name: t.secret_name.clone(),
                })
                .collect(),
            annotations: ing
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| INGRESS_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let lb: Vec<LbAddress> = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|l| {
                l.iter()
                    .map(|i| LbAddress {
                        ip: i.ip.clone(),
                        hostname: i.hostname.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let lb = (lb, ing.metadata.uid.clone());
        let status_changed = self.ingress_lb.get(&id) != Some(&lb);
        self.ingress_lb.insert(id.clone(), lb);
        let new = Obj {
            meta,
            spec: Arc::new(info),
        };
        if self.ingresses.get(&id) == Some(&new) {
            return if status_changed {
                Change::Status
            } else {
                Change::None
            };
        }
        self.ingresses.insert(id, new);
        Change::Compile
    }

    /// Removes an Ingress.
    pub fn delete_ingress(&mut self, meta: &ObjectMeta) -> Change {
        let id = id_of(Kind::Ingress, meta);
        self.ingress_lb.remove(&id);
        if self.ingresses.remove(&id).is_some() {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// Adds or replaces an IngressClass.
    pub fn apply_ingress_class(&mut self, class: &IngressClass) -> Change {
        let name = class.metadata.name.clone().unwrap_or_default();
        let info = IngressClassInfo {
            controller: class
                .spec
                .as_ref()
                .and_then(|s| s.controller.clone())
                .unwrap_or_default(),
            is_default: class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IS_DEFAULT_CLASS))
                .is_some_and(|v| v.trim() == "true"),
        };
        if self.ingress_classes.get(&name) == Some(&info) {
            return Change::None;
        }
        self.ingress_classes.insert(name, info);
        Change::Compile
    }

    /// Removes an IngressClass.
    pub fn delete_ingress_class(&mut self, meta: &ObjectMeta) -> Change {
        match self
            .ingress_classes
            .remove(meta.name.as_deref().unwrap_or_default())
        {
            Some(_) => Change::Compile,
            None => Change::None,
        }
    }

    /// Adds or replaces a whole Secret, data included (a manifest file read offline; the
    /// cluster's Secrets come through [`Self::secret_seen`] and [`Self::store_secret`]).
    pub fn apply_secret(&mut self, secret: &Secret) -> Change {
        let key = key_of(&secret.metadata);
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        self.secrets.seen(key.clone(), version.clone());
        self.secrets
            .store(key, version, crate::controller::file::secret_info(secret));
        Change::Compile
    }

    /// Adds or replaces a whole ConfigMap (a manifest file read offline).
    pub fn apply_config_map(&mut self, map: &ConfigMap) -> Change {
        let key = key_of(&map.metadata);
        let version = map.metadata.resource_version.clone().unwrap_or_default();
        self.config_maps.seen(key.clone(), version.clone());
        self.config_maps
            .store(key, version, crate::controller::file::config_map_info(map));
        Change::Compile
    }

    /// The metadata watch saw a Secret: a new version of a referenced one is read again.
    pub fn secret_seen(&mut self, meta: &ObjectMeta) -> Change {
        let key = key_of(meta);
        let version = meta.resource_version.clone().unwrap_or_default();
        if self.secrets.seen(key.clone(), version) && self.references().secrets.contains(&key) {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// The metadata watch saw a ConfigMap.
    pub fn config_map_seen(&mut self, meta: &ObjectMeta) -> Change {
        let key = key_of(meta);
        let version = meta.resource_version.clone().unwrap_or_default();
        if self.config_maps.seen(key.clone(), version)
            && self.references().config_maps.contains(&key)
        {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// Forgets a Secret.
    pub fn delete_secret(&mut self, meta: &ObjectMeta) -> Change {
        let key = key_of(meta);
        if self.secrets.gone(&key) && self.secrets.holds(&key) {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// Forgets a ConfigMap.
    pub fn delete_config_map(&mut self, meta: &ObjectMeta) -> Change {
        let key = key_of(meta);
        if self.config_maps.gone(&key) && self.config_maps.holds(&key) {
            Change::Compile
        } else {
            Change::None
        }
    }

    /// Secrets the options reference (`--default-certificate`): held like referenced ones.
    pub fn pin_secret(&mut self, namespace: &str, name: &str) {
        self.pinned_secrets
            .insert((namespace.to_owned(), name.to_owned()));
    }

    /// The Secrets and ConfigMaps the indexed objects (and `accepted`, whose versions may
    /// serve instead) reference.
    fn references_with(&self, accepted: Option<&Accepted>) -> Refs {
        let mut refs = Refs::default();
        refs.routes(self.routes.values());
        refs.backends(self.backends.values());
        refs.ingresses(self.ingresses.values());
        if let Some(a) = accepted {
            // Nearly every accepted Route is the one the index holds: read only the others.
            refs.routes(not_in(&self.routes, &a.routes));
            refs.backends(a.backends.values());
            refs.ingresses(a.ingresses.values());
        }
        refs.secrets.extend(self.pinned_secrets.iter().cloned());
        refs
    }

    fn references(&self) -> Refs {
        self.references_with(None)
    }

    /// Drops the data of Secrets and ConfigMaps no longer referenced, and returns those whose
    /// data must be read (referenced, existing, not held at their current version).
    pub fn plan_reads(&mut self, accepted: &Accepted) -> (Vec<Key>, Vec<Key>) {
        let refs = self.references_with(Some(accepted));
        (
            self.secrets.plan(&refs.secrets),
            self.config_maps.plan(&refs.config_maps),
        )
    }

    /// Keeps the data of a referenced Secret, read at `version`; `None`: it was not found.
    pub fn store_secret(&mut self, key: Key, version: String, info: Option<SecretInfo>) {
        match info {
            Some(info) => self.secrets.store(key, version, info),
            None => self.secrets.drop_data(&key),
        }
    }

    /// Keeps the data of a referenced ConfigMap, read at `version`; `None`: not found.
    pub fn store_config_map(&mut self, key: Key, version: String, info: Option<ConfigMapInfo>) {
        match info {
            Some(info) => self.config_maps.store(key, version, info),
            None => self.config_maps.drop_data(&key),
        }
    }

    /// How many Secrets the index knows by metadata, and how many it holds the data of.
    pub fn secret_counts(&self) -> (usize, usize) {
        (self.secrets.known_len(), self.secrets.held_len())
    }

    /// What the compiler reads, with the accepted versions of the previous compile.
    pub fn snapshot(&self, accepted: Accepted) -> Snapshot {
        Snapshot {
            routes: self.routes.clone(),
            backends: self.backends.clone(),
            policies: self.policies.clone(),
            services: self.services.clone(),
            ingresses: self.ingresses.clone(),
            ingress_classes: self.ingress_classes.clone(),
            secrets: self.secrets.data(),
            config_maps: self.config_maps.data(),
            files: BTreeMap::new(),
            now: crate::controller::file::unix_now(),
            problems: self.problems.values().cloned().collect(),
            accepted,
        }
    }

    /// The status an object carries now.
    pub fn observed(&self, id: &ObjectRef) -> Option<&Observed> {
        self.observed.get(id)
    }

    /// Every Ingress's current load balancer status and uid.
    pub fn ingress_status(&self) -> &BTreeMap<ObjectRef, (Vec<LbAddress>, Option<String>)> {
        &self.ingress_lb
    }

    /// The ingress class Ingress `id` names (`spec.ingressClassName`, else the legacy
    /// annotation), if it is known and names one.
    pub fn ingress_class(&self, id: &ObjectRef) -> Option<&str> {
        let spec = &self.ingresses.get(id)?.spec;
        spec.class_name
            .as_deref()
            .or(spec.class_annotation.as_deref())
    }

    /// The load balancer addresses of the publish Service.
    pub fn published(&self) -> &[LbAddress] {
        &self.published
    }
}

fn ingress_backend(b: &IngressBackend) -> IngressBackendInfo {
    match &b.service {
        Some(s) => IngressBackendInfo::Service {
            name: s.name.clone(),
            port: s.port.as_ref().and_then(|p| match (&p.name, p.number) {
                (Some(name), _) if !name.is_empty() => Some(PortRef::Name(name.clone())),
                (_, Some(n)) => u16::try_from(n).ok().map(PortRef::Number),
                _ => None,
            }),
        },
        None => IngressBackendInfo::Resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{CompileOptions, compile};

    fn route(name: &str, backend: &str) -> Route {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": "shop", "generation": 1},
            "spec": {"rules": [{"backendRefs": [{"name": backend}]}]},
        }))
        .unwrap()
    }

    fn backend(name: &str) -> Backend {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"endpoints": ["127.0.0.1:1"]},
        }))
        .unwrap()
    }

    #[test]
    fn an_undecodable_object_is_a_problem_and_its_last_accepted_version_serves() {
        let mut idx = Index::default();
        idx.apply_custom::<Backend>(Ok(backend("api")));
        assert_eq!(
            idx.apply_custom::<Route>(Ok(route("web", "api"))),
            Change::Compile
        );
        let opts = CompileOptions::default();
        let first = compile(&idx.snapshot(Accepted::default()), &opts);
        assert_eq!(first.table.rules.len(), 1);

        let invalid = InvalidObject {
            error: "spec.rules: invalid type: string \"x\", expected a sequence".into(),
            metadata: route("web", "api").metadata,
        };
        assert_eq!(idx.apply_custom::<Route>(Err(invalid)), Change::Compile);
        let second = compile(&idx.snapshot(first.accepted), &opts);
        assert_eq!(
            second.table.rules.len(),
            1,
            "the last accepted version keeps serving"
        );
        assert!(
            second
                .table
                .diagnostics
                .iter()
                .any(|d| d.reason == Reason::Malformed && d.message.contains("cannot be read")),
            "{:?}",
            second.table.diagnostics
        );
    }

    #[test]
    fn a_status_only_change_does_not_recompile() {
        let mut idx = Index::default();
        idx.apply_custom::<Route>(Ok(route("web", "api")));
        let mut r = route("web", "api");
        r.status = Some(crate::api::RouteStatus {
            observed_generation: Some(1),
            conditions: Vec::new(),
        });
        assert_eq!(idx.apply_custom::<Route>(Ok(r.clone())), Change::Status);
        assert_eq!(idx.apply_custom::<Route>(Ok(r)), Change::None);
    }

    fn secret_meta(name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("shop".into()),
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_referenced_secrets_are_read_and_their_data_goes_with_the_last_reference() {
        let mut idx = Index::default();
        // The cluster has two Secrets; nothing references either: nothing is read or held.
        assert_eq!(idx.secret_seen(&secret_meta("users", "1")), Change::None);
        assert_eq!(idx.secret_seen(&secret_meta("other", "1")), Change::None);
        let accepted = Accepted::default();
        assert_eq!(idx.plan_reads(&accepted), (vec![], vec![]));
        // A Route's basic auth references one: that one is read, and held.
        let mut r = route("web", "api");
        r.spec.rules[0].authentication = Some(
            serde_json::from_value(serde_json::json!(
                {"basic": {"secretRef": {"name": "users"}}}
            ))
            .unwrap(),
        );
        idx.apply_custom::<Route>(Ok(r));
        let key = ("shop".to_owned(), "users".to_owned());
        assert_eq!(idx.plan_reads(&accepted), (vec![key.clone()], vec![]));
        idx.store_secret(key.clone(), "1".into(), Some(SecretInfo::default()));
        assert_eq!(idx.secret_counts(), (2, 1));
        assert!(idx.snapshot(Accepted::default()).secrets.contains_key(&key));
        // A new version of it recompiles (and is read again); of the other, nothing happens.
        assert_eq!(idx.secret_seen(&secret_meta("users", "2")), Change::Compile);
        assert_eq!(idx.secret_seen(&secret_meta("other", "2")), Change::None);
        assert_eq!(idx.plan_reads(&accepted), (vec![key.clone()], vec![]));
        // The Route gone: the data is dropped; the names stay known.
        idx.delete_custom::<Route>(&route("web", "api").metadata);
        assert_eq!(idx.plan_reads(&accepted), (vec![], vec![]));
        assert_eq!(idx.secret_counts(), (2, 0));
        assert!(idx.snapshot(Accepted::default()).secrets.is_empty());
    }

    #[test]
    fn readiness_waits_for_every_kind() {
        let mut idx = Index::default();
        for k in &Watched::ALL[..Watched::ALL.len() - 1] {
            idx.mark_synced(*k);
        }
        assert!(!idx.synced());
        idx.mark_synced(Watched::IngressClass);
        assert!(idx.synced());
    }
}
