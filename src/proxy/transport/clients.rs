//! The upstream clients: hyper's pooled clients (HTTP/1.1 when the native client is off, and
//! h2c), one set per distinct connection settings, and the native client's settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::RequestBody;
use super::h1::{ClientSettings, IdlePool};
use crate::proxy::upstream::{Registry, UpstreamSettings};

/// hyper's pooled clients for one set of connection settings, one per upstream protocol.
pub struct HyperClients {
    /// HTTP/1.1 with keep-alive.
    pub http1: Client<HttpConnector, RequestBody>,
    /// HTTP/2 cleartext, prior knowledge.
    pub h2c: Client<HttpConnector, RequestBody>,
}

impl HyperClients {
    fn new(s: &UpstreamSettings) -> Self {
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

/// Every upstream client of a proxy: the gateway's defaults, and those of backends with
/// connection settings of their own (shared by backends whose settings are equal).
pub struct Clients {
    defaults: UpstreamSettings,
    hyper: HyperClients,
    own: Mutex<HashMap<UpstreamSettings, Arc<HyperClients>>>,
}

impl Clients {
    /// Clients with the gateway's default settings.
    pub fn new(defaults: &UpstreamSettings) -> Self {
        Self {
            defaults: defaults.clone(),
            hyper: HyperClients::new(defaults),
            own: Mutex::default(),
        }
    }

    /// The native HTTP/1.1 client's settings for a backend (`own`: its settings, if any).
    pub fn native(&self, own: Option<&UpstreamSettings>) -> ClientSettings {
        let s = own.unwrap_or(&self.defaults);
        ClientSettings {
            connect_timeout: s.connect_timeout,
            idle_timeout: s.pool_idle_timeout,
            max_idle: s.pool_max_idle_per_host,
        }
    }

    /// hyper's clients for a backend (`own`: its settings, if any), made on first use.
    pub fn hyper(&self, own: Option<&UpstreamSettings>) -> HyperRef<'_> {
        match own {
            None => HyperRef::Default(&self.hyper),
            Some(s) => {
                let mut map = self.own.lock().unwrap_or_else(|e| e.into_inner());
                let clients = map
                    .entry(s.clone())
                    .or_insert_with(|| Arc::new(HyperClients::new(s)));
                HyperRef::Own(clients.clone())
            }
        }
    }

    /// Closes idle native connections of every backend that outlived their idle timeout or
    /// that the upstream closed (hyper's pools reap their own).
    pub fn reap_idle(&self, registry: &Registry) {
        for backend in registry.states() {
            let settings = backend.settings();
            let max_idle = self.native(settings.as_deref()).idle_timeout;
            for endpoint in backend.endpoint_states().iter() {
                if let Some(pool) = endpoint.attached.get::<IdlePool>() {
                    pool.reap(max_idle);
                }
            }
        }
    }
}

/// hyper's clients for one backend: the shared default set, or the backend's own.
pub enum HyperRef<'a> {
    /// The gateway's defaults.
    Default(&'a HyperClients),
    /// The backend's own settings.
    Own(Arc<HyperClients>),
}

impl std::ops::Deref for HyperRef<'_> {
    type Target = HyperClients;

    fn deref(&self) -> &HyperClients {
        match self {
            HyperRef::Default(c) => c,
            HyperRef::Own(c) => c,
        }
    }
}
