//! Runtime state of backends (endpoint sets, balancer state) and the upstream HTTP clients.
//!
//! State is keyed by backend identity and outlives routing tables: a reload links the new table
//! to the same entries, so counters and (later) health survive it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::balance::{PickContext, RoundRobin, Selector};
use super::body::RequestBody;
use crate::model::{Endpoint, ObjectRef, RoutingTable};

/// One backend's live state.
pub struct BackendState {
    /// The backend's identity.
    pub id: ObjectRef,
    endpoints: ArcSwap<Vec<Endpoint>>,
    selector: Box<dyn Selector>,
}

impl BackendState {
    fn new(id: ObjectRef, endpoints: Vec<Endpoint>) -> Self {
        Self {
            id,
            endpoints: ArcSwap::from_pointee(endpoints),
            selector: Box::new(RoundRobin::default()),
        }
    }

    /// The endpoint for a request, or `None` when the backend has none.
    pub fn pick(&self, ctx: &PickContext) -> Option<Endpoint> {
        let eps = self.endpoints.load();
        let i = self.selector.pick(&eps, ctx)?;
        eps.get(i).cloned()
    }

    /// Replaces the endpoint set in place (discovery's fast path; no table rebuild).
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        if **self.endpoints.load() != endpoints {
            self.endpoints.store(Arc::new(endpoints));
        }
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> Arc<Vec<Endpoint>> {
        self.endpoints.load_full()
    }
}

/// Backend states by identity.
#[derive(Default)]
pub struct Registry {
    backends: Mutex<HashMap<ObjectRef, Arc<BackendState>>>,
}

impl Registry {
    /// The states for `table.backends`, in the same order: existing entries are reused (their
    /// static endpoints refreshed), new ones created, and entries no table uses are dropped.
    pub fn link(&self, table: &RoutingTable) -> Vec<Arc<BackendState>> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let linked: Vec<Arc<BackendState>> = table
            .backends
            .iter()
            .map(|b| {
                let state = map.entry(b.id.clone()).or_insert_with(|| {
                    Arc::new(BackendState::new(b.id.clone(), b.endpoints.clone()))
                });
                state.set_endpoints(b.endpoints.clone());
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
    pub http1: Client<HttpConnector, RequestBody>,
    /// HTTP/2 cleartext, prior knowledge.
    pub h2c: Client<HttpConnector, RequestBody>,
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
