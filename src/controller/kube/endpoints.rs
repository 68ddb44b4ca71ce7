//! EndpointSlices → ready endpoints per Service port, written straight to the discovery store.
//!
//! This is the fast path: nothing here triggers a recompile. `discovery.k8s.io/v1` and
//! `v1beta1` (Kubernetes ≤ 1.20) share every field read here, so one reduced type serves both.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::{ApiResource, DynamicResourceScope, GroupVersionKind};
use serde::Deserialize;

use crate::api::annotations::SERVICE_NAME_LABEL;
use crate::model::{DiscoveryKey, Endpoint, EndpointSink, ServiceKey};

/// The EndpointSlice fields discovery reads (identical in `v1` and `v1beta1`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Object metadata (the Service is named by a label).
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// The ports every endpoint serves, named after the Service's ports.
    #[serde(default)]
    pub ports: Option<Vec<SlicePort>>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Deserialize)]
pub struct SliceEndpoint {
    /// Addresses of the endpoint (all of the slice's address type).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Readiness.
    #[serde(default)]
    pub conditions: Option<SliceConditions>,
}

/// Endpoint conditions.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SliceConditions {
    /// Ready for new traffic (unset means ready, per the API).
    pub ready: Option<bool>,
    /// Terminating: no new traffic, whatever `ready` says.
    pub terminating: Option<bool>,
}

/// One port of a slice.
#[derive(Clone, Debug, Deserialize)]
pub struct SlicePort {
    /// The Service port's name (`""` or unset for a single unnamed port).
    pub name: Option<String>,
    /// The endpoint port number.
    pub port: Option<i32>,
}

impl Resource for EndpointSlice {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The EndpointSlice resource at `version` (`v1` or `v1beta1`).
pub fn api_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice"),
        "endpointslices",
    )
}

/// One slice, reduced: its Service, and per port name the endpoints with their readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reduced {
    service: String,
    /// Port name → (address `host:port`, ready).
    ports: BTreeMap<String, Vec<(String, bool)>>,
}

fn reduce(slice: &EndpointSlice) -> Option<Reduced> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let mut ports = BTreeMap::new();
    for p in slice.ports.iter().flatten() {
        let Some(port) = p
            .port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        else {
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        let mut eps = Vec::new();
        for e in &slice.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready != Some(false) && c.terminating != Some(true);
            // Every address of one endpoint is the same endpoint; the first one is enough.
            let Some(addr) = e.addresses.first() else {
                continue;
            };
            let authority = match (slice.address_type.as_str(), addr.parse::<IpAddr>()) {
                ("IPv4" | "IPv6", Ok(ip)) => std::net::SocketAddr::new(ip, port).to_string(),
                ("FQDN", Err(_)) => format!("{}:{port}", addr.trim_end_matches('.')),
                _ => {
                    tracing::debug!(address = %addr, "endpoint address of an unexpected type; skipped");
                    continue;
                }
            };
            eps.push((authority, ready));
        }
        ports.insert(name, eps);
    }
    Some(Reduced { service, ports })
}

/// Ready and total endpoints of one Service port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Endpoints that get new requests.
    pub ready: u32,
    /// Every endpoint.
    pub total: u32,
}

/// Every EndpointSlice by (namespace, name), and what it wrote to the discovery store.
pub struct EndpointIndex {
    slices: BTreeMap<(String, String), Reduced>,
    discovery: Arc<dyn EndpointSink>,
    counts: BTreeMap<ServiceKey, Counts>,
}

impl EndpointIndex {
    /// An empty index writing to `discovery`.
    pub fn new(discovery: Arc<dyn EndpointSink>) -> Self {
        Self {
            slices: BTreeMap::new(),
            discovery,
            counts: BTreeMap::new(),
        }
    }

    /// Adds or replaces a slice. Returns whether any endpoint set changed.
    pub fn apply(&mut self, slice: &EndpointSlice) -> bool {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        let reduced = reduce(slice);
        let key = (ns.clone(), name);
        let old = self.slices.get(&key).cloned();
        if old == reduced {
            return false;
        }
        match reduced {
            Some(r) => self.slices.insert(key, r),
            None => self.slices.remove(&key),
        };
        let mut touched = BTreeSet::new();
        touched.extend(old.map(|r| r.service));
        touched.extend(
            self.slices
                .get(&(ns.clone(), key_name(slice)))
                .map(|r| r.service.clone()),
        );
        for svc in touched {
            self.recompute(&ns, &svc);
        }
        true
    }

    /// Removes a slice. Returns whether any endpoint set changed.
    pub fn delete(&mut self, namespace: &str, name: &str) -> bool {
        match self.slices.remove(&(namespace.to_owned(), name.to_owned())) {
            Some(r) => {
                self.recompute(namespace, &r.service);
                true
            }
            None => false,
        }
    }

    /// Replaces every slice (after a (re)list): Services that lost all their slices are emptied.
    pub fn reset(&mut self, slices: &[EndpointSlice]) {
        let before: BTreeSet<(String, String)> = self
            .slices
            .iter()
            .map(|((ns, _), r)| (ns.clone(), r.service.clone()))
            .collect();
        self.slices.clear();
        for s in slices {
            if let Some(r) = reduce(s) {
                let ns = s.metadata.namespace.clone().unwrap_or_default();
                self.slices.insert((ns, key_name(s)), r);
            }
        }
        let mut services = before;
        services.extend(
            self.slices
                .iter()
                .map(|((ns, _), r)| (ns.clone(), r.service.clone())),
        );
        for (ns, svc) in services {
            self.recompute(&ns, &svc);
        }
    }

    /// Ready and total endpoints of a Service port.
    pub fn counts(&self, key: &ServiceKey) -> Counts {
        self.counts.get(key).copied().unwrap_or_default()
    }

    /// Rebuilds the endpoint sets of one Service from all of its slices.
    fn recompute(&mut self, ns: &str, service: &str) {
        let mut by_port: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for ((slice_ns, _), r) in &self.slices {
            if slice_ns == ns && r.service == service {
                for (port, eps) in &r.ports {
                    by_port
                        .entry(port.clone())
                        .or_default()
                        .extend(eps.iter().cloned());
                }
            }
        }
        // Ports that no slice names any more are emptied.
        let stale: Vec<ServiceKey> = self
            .counts
            .keys()
            .filter(|k| k.namespace == ns && k.name == service && !by_port.contains_key(&k.port))
            .cloned()
            .collect();
        for key in stale {
            self.counts.remove(&key);
            self.discovery.set(&DiscoveryKey::Service(key), Vec::new());
        }
        for (port, mut eps) in by_port {
            eps.sort();
            eps.dedup();
            let key = ServiceKey::new(ns, service, port);
            let ready: Vec<Endpoint> = eps
                .iter()
                .filter(|(_, ready)| *ready)
                .map(|(a, _)| Endpoint::new(a))
                .collect();
            self.counts.insert(
                key.clone(),
                Counts {
                    ready: ready.len() as u32,
                    total: eps.len() as u32,
                },
            );
            self.discovery.set(&DiscoveryKey::Service(key), ready);
        }
    }
}

fn key_name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// What the index wrote, per Service port.
    #[derive(Default)]
    struct Written(Mutex<HashMap<DiscoveryKey, Vec<Endpoint>>>);

    impl EndpointSink for Written {
        fn set(&self, key: &DiscoveryKey, mut ready: Vec<Endpoint>) {
            ready.sort();
            self.0.lock().unwrap().insert(key.clone(), ready);
        }
    }

    impl Written {
        fn ready(&self, key: &ServiceKey) -> Vec<Endpoint> {
            let key = DiscoveryKey::Service(key.clone());
            self.0
                .lock()
                .unwrap()
                .get(&key)
                .cloned()
                .unwrap_or_default()
        }
    }

    fn slice(name: &str, eps: &[(&str, Option<bool>, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {SERVICE_NAME_LABEL: "api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": eps.iter().map(|(a, ready, terminating)| serde_json::json!({
                "addresses": [a],
                "conditions": {"ready": ready, "terminating": terminating},
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn only_ready_not_terminating_endpoints_take_traffic() {
        let d = Arc::new(Written::default());
        let mut idx = EndpointIndex::new(d.clone());
        let key = ServiceKey::new("shop", "api", "http");
        idx.apply(&slice(
            "api-1",
            &[
                ("10.0.0.1", Some(true), None),
                ("10.0.0.2", None, None),
                ("10.0.0.3", Some(false), None),
                ("10.0.0.4", Some(true), Some(true)),
            ],
        ));
        let ready: Vec<_> = d
            .ready(&key)
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(ready, ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert_eq!(idx.counts(&key), Counts { ready: 2, total: 4 });
    }

    #[test]
    fn slices_of_one_service_add_up_and_deletes_remove() {
        let d = Arc::new(Written::default());
        let mut idx = EndpointIndex::new(d.clone());
        let key = ServiceKey::new("shop", "api", "http");
        idx.apply(&slice("api-1", &[("10.0.0.1", Some(true), None)]));
        idx.apply(&slice("api-2", &[("10.0.0.2", Some(true), None)]));
        assert_eq!(d.ready(&key).len(), 2);
        assert!(idx.delete("shop", "api-1"));
        assert_eq!(d.ready(&key).len(), 1);
        idx.reset(&[]);
        assert!(d.ready(&key).is_empty());
        assert_eq!(idx.counts(&key), Counts::default());
    }
}
