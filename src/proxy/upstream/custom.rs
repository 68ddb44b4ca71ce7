//! What a library user plugs into the upstream layer in code: a load-balancing [`Selector`]
//! or an active [`HealthCheck`] of their own, for named backends.
//!
//! Both are looked up once per backend when its state is built or its endpoint set changes,
//! never on the request path; a gateway without them pays nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::balance::Selector;
use crate::model::{Endpoint, ObjectRef};

/// Builds a [`Selector`] for a backend's endpoint set (called again whenever it changes).
pub trait SelectorFactory: Send + Sync + 'static {
    /// The selector for `endpoints`.
    fn build(&self, endpoints: &[Endpoint]) -> Box<dyn Selector>;
}

impl<F> SelectorFactory for F
where
    F: Fn(&[Endpoint]) -> Box<dyn Selector> + Send + Sync + 'static,
{
    fn build(&self, endpoints: &[Endpoint]) -> Box<dyn Selector> {
        self(endpoints)
    }
}

/// The future a [`HealthCheck`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// An active health check of one endpoint, replacing the HTTP or TCP probe of a backend's
/// `activeHealthCheck` (whose interval, timeout and thresholds still apply).
pub trait HealthCheck: Send + Sync + 'static {
    /// Whether `endpoint` is healthy now. A check that outlives the timeout counts as failed.
    fn check<'a>(&'a self, endpoint: &'a Endpoint) -> CheckFuture<'a>;
}

impl<F, Fut> HealthCheck for F
where
    F: Fn(Endpoint) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    fn check<'a>(&'a self, endpoint: &'a Endpoint) -> CheckFuture<'a> {
        Box::pin(self(endpoint.clone()))
    }
}

/// Custom selectors and health checks by backend identity (kind Backend, namespace, name).
#[derive(Clone, Default)]
pub struct Custom {
    selectors: HashMap<ObjectRef, Arc<dyn SelectorFactory>>,
    checks: HashMap<ObjectRef, Arc<dyn HealthCheck>>,
    /// The maker of TLS clients for HTTP probes (the proxy sets it; not a user's plug-in).
    tls_probes: Option<Arc<dyn super::health::TlsProbes>>,
}

impl Custom {
    /// Picks endpoints of `backend` with selectors `factory` builds, whatever its
    /// `loadBalancer` says.
    pub fn selector(mut self, backend: ObjectRef, factory: impl SelectorFactory) -> Self {
        self.selectors.insert(backend, Arc::new(factory));
        self
    }

    /// Probes endpoints of `backend` with `check` instead of its `activeHealthCheck` probe.
    pub fn health_check(mut self, backend: ObjectRef, check: impl HealthCheck) -> Self {
        self.checks.insert(backend, Arc::new(check));
        self
    }

    /// Whether nothing is plugged in.
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty() && self.checks.is_empty()
    }

    /// HTTP probes of TLS backends go through clients `probes` makes.
    pub(crate) fn with_tls_probes(mut self, probes: Arc<dyn super::health::TlsProbes>) -> Self {
        self.tls_probes = Some(probes);
        self
    }

    pub(super) fn tls_probes(&self) -> Option<Arc<dyn super::health::TlsProbes>> {
        self.tls_probes.clone()
    }

    pub(super) fn selector_for(&self, backend: &ObjectRef) -> Option<Arc<dyn SelectorFactory>> {
        self.selectors.get(backend).cloned()
    }

    pub(super) fn check_for(&self, backend: &ObjectRef) -> Option<Arc<dyn HealthCheck>> {
        self.checks.get(backend).cloned()
    }
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custom")
            .field("selectors", &self.selectors.keys().collect::<Vec<_>>())
            .field("health_checks", &self.checks.keys().collect::<Vec<_>>())
            .finish()
    }
}
