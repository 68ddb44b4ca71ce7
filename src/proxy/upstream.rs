//! Runtime state of backends (endpoint sets, balancer state) and the upstream HTTP clients.
//!
//! State is keyed by backend identity and outlives routing tables: a reload links the new table
//! to the same entries, so counters and (later) health survive it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::balance::{PickContext, RoundRobin, Selector};
use crate::model::{Backend, Discovery, Endpoint, EndpointSet, ObjectRef, RoutingTable};

/// One backend's live state.
pub struct BackendState {
    /// The backend's identity.
    pub id: ObjectRef,
    /// Its own fixed set, or a Service port's set shared with the discovery store.
    endpoints: ArcSwap<EndpointSet>,
    selector: Box<dyn Selector>,
}

impl BackendState {
    fn new(id: ObjectRef, endpoints: Arc<EndpointSet>) -> Self {
        Self {
            id,
            endpoints: ArcSwap::new(endpoints),
            selector: Box::new(RoundRobin::default()),
        }
    }

    /// The endpoint for a request, or `None` when the backend has none ready.
    pub fn pick(&self, ctx: &PickContext) -> Option<Endpoint> {
        let set = self.endpoints.load();
        let eps = set.ready();
        let i = self.selector.pick(&eps, ctx)?;
        eps.get(i).cloned()
    }

    /// Replaces a fixed endpoint set in place (no table rebuild).
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        let set = self.endpoints.load();
        if set.is_discovered() {
            self.endpoints
                .store(Arc::new(EndpointSet::fixed(endpoints)));
        } else {
            set.store(endpoints);
        }
    }

    /// The endpoints that take new requests now.
    pub fn endpoints(&self) -> Arc<Vec<Endpoint>> {
        self.endpoints.load().ready().clone()
    }

    /// Points this state at where `backend` says its endpoints come from.
    fn relink(&self, backend: &Backend, discovery: &Discovery) {
        match &backend.service {
            Some(key) => {
                let set = discovery.subscribe(key);
                if !Arc::ptr_eq(&self.endpoints.load(), &set) {
                    self.endpoints.store(set);
                }
            }
            None => self.set_endpoints(backend.endpoints.clone()),
        }
    }
}

/// Backend states by identity.
#[derive(Default)]
pub struct Registry {
    backends: Mutex<HashMap<ObjectRef, Arc<BackendState>>>,
    discovery: Arc<Discovery>,
}

impl Registry {
    /// A registry whose Service-backed backends read endpoints from `discovery`.
    pub fn with_discovery(discovery: Arc<Discovery>) -> Self {
        Self {
            backends: Mutex::default(),
            discovery,
        }
    }

    /// Where discovered endpoints are written (Kubernetes mode's EndpointSlice watcher).
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// The states for `table.backends`, in the same order: existing entries are reused (their
    /// endpoint source refreshed), new ones created, and entries no table uses are dropped.
    pub fn link(&self, table: &RoutingTable) -> Vec<Arc<BackendState>> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let linked: Vec<Arc<BackendState>> = table
            .backends
            .iter()
            .map(|b| {
                let state = map.entry(b.id.clone()).or_insert_with(|| {
                    Arc::new(BackendState::new(
                        b.id.clone(),
                        Arc::new(EndpointSet::fixed(Vec::new())),
                    ))
                });
                state.relink(b, &self.discovery);
                state.clone()
            })
            .collect();
        map.retain(|id, _| table.backends.iter().any(|b| &b.id == id));
        linked
    }

    /// The state of one backend, if a table uses it.
    pub fn get(&self, id: &ObjectRef) -> Option<Arc<BackendState>> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// Settings of the upstream clients.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Limit of one TCP connect.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
        }
    }
}

/// The pooled clients, one per upstream protocol.
pub struct Clients {
    /// HTTP/1.1 with keep-alive.
    pub http1: Client<HttpConnector, Incoming>,
    /// HTTP/2 cleartext, prior knowledge.
    pub h2c: Client<HttpConnector, Incoming>,
}

impl Clients {
    /// Builds both clients.
    pub fn new(s: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(s.connect_timeout));
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(s.pool_idle_timeout)
            .pool_max_idle_per_host(s.pool_max_idle_per_host);
        let http1 = builder.build(connector.clone());
        builder.http2_only(true);
        let h2c = builder.build(connector);
        Self { http1, h2c }
    }
}
