//! Backend states by identity: linked to each new table, fed by discovery.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use super::backend::BackendState;
use super::custom::Custom;
use super::discovery::Discovery;
use super::endpoint::Clock;
use super::rate_limit::{RateLimitMetrics, RateLimits};
use super::settings::UpstreamSettings;
use super::view::BackendView;
use crate::model::{Action, Backend, DiscoveryKey, Endpoint, ObjectRef, RoutingTable};

type BackendMap = Arc<Mutex<HashMap<ObjectRef, Arc<BackendState>>>>;

/// The weighted-split positions of one Route's rules (by rule index), and the last link that
/// saw the Route.
#[derive(Default)]
struct RouteSplits {
    positions: Vec<Option<Arc<AtomicUsize>>>,
    linked: u64,
}

/// Backend states by identity.
pub struct Registry {
    backends: BackendMap,
    /// Each rule's position in its weighted schedule, so a reload does not restart every split
    /// at its first backend.
    /// Kept by Route, found by its identity without copying it: a relink copies only the
    /// identities of Routes that are new.
    splits: Mutex<(u64, HashMap<ObjectRef, RouteSplits>)>,
    clock: Clock,
    settings: UpstreamSettings,
    discovery: Arc<Discovery>,
    custom: Custom,
    rate_limits: RateLimits,
}

impl Registry {
    /// An empty registry; `settings` are the defaults for backends that set none.
    pub fn new(settings: UpstreamSettings) -> Self {
        Self::with_custom(settings, Custom::default())
    }

    /// An empty registry whose backends use the selectors and health checks in `custom`.
    pub fn with_custom(settings: UpstreamSettings, custom: Custom) -> Self {
        Self::with_metrics(settings, custom, RateLimitMetrics::default())
    }

    /// An empty registry with `custom` (see [`Registry::with_custom`]) whose rate limits count
    /// what they do in `rate_limits`.
    pub fn with_metrics(
        settings: UpstreamSettings,
        custom: Custom,
        rate_limits: RateLimitMetrics,
    ) -> Self {
        let backends: BackendMap = Arc::default();
        let discovery = Arc::new(Discovery::default());
        // Discovery's fast path: a Service port's new endpoint set goes straight to the
        // backends that use it (their pools are rebuilt in place, keeping endpoint state);
        // no table is recompiled.
        let weak = Arc::downgrade(&backends);
        discovery.listen(Box::new(move |key: &DiscoveryKey, ready: &[Endpoint]| {
            let Some(map) = weak.upgrade() else {
                return;
            };
            let states: Vec<Arc<BackendState>> = map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|s| s.discovery_key().as_ref() == Some(key))
                .cloned()
                .collect();
            for state in states {
                state.set_endpoints(ready.to_vec());
            }
        }));
        Self {
            backends,
            splits: Mutex::default(),
            clock: Clock::new(),
            settings,
            discovery,
            custom,
            rate_limits: RateLimits::new(rate_limits),
        }
    }

    /// Rate-limit state by policy and limit.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// Where discovered endpoints are written (Kubernetes mode's EndpointSlice watcher).
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// The states for `table.backends`, in the same order: existing entries are reused and
    /// updated where their configuration changed, new ones created, and entries no table uses
    /// are dropped (their probes stopped).
    pub fn link(&self, table: &RoutingTable) -> Vec<Arc<BackendState>> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let linked: Vec<Arc<BackendState>> = table
            .backends
            .iter()
            .map(|b| {
                // A Service- or DNS-backed backend's endpoints are the discovered ones now.
                let discovered;
                let b = match b.discovery_key() {
                    Some(key) => {
                        discovered = Backend {
                            endpoints: self.discovery.ready(&key),
                            ..b.clone()
                        };
                        &discovered
                    }
                    None => b,
                };
                let state = map
                    .entry(b.id.clone())
                    .or_insert_with(|| {
                        Arc::new(BackendState::new(
                            b,
                            self.clock,
                            self.custom.selector_for(&b.id),
                            self.custom.check_for(&b.id),
                            self.custom.tls_probes(),
                        ))
                    })
                    .clone();
                state.configure(b, &self.settings);
                state
            })
            .collect();
        let used: std::collections::HashSet<&ObjectRef> =
            table.backends.iter().map(|b| &b.id).collect();
        map.retain(|id, state| {
            let keep = used.contains(id);
            if !keep {
                state.stop_checks();
            }
            keep
        });
        linked
    }

    /// The weighted-split position of each rule of `table`, in order: a rule that was in the
    /// previous table keeps its position; the positions of Routes no table has are dropped.
    /// Rules whose schedule has one entry or none (most) share one position that is never
    /// advanced.
    pub fn link_splits(&self, table: &RoutingTable) -> Box<[Arc<AtomicUsize>]> {
        let mut guard = self.splits.lock().unwrap_or_else(|e| e.into_inner());
        let (links, splits) = &mut *guard;
        *links += 1;
        let link = *links;
        let unsplit = Arc::new(AtomicUsize::new(0));
        let linked = table
            .rules
            .iter()
            .map(|r| {
                let split =
                    matches!(&r.action, Action::Forward { schedule, .. } if schedule.len() > 1);
                if !split {
                    return unsplit.clone();
                }
                let route = match splits.get_mut(&r.route) {
                    Some(route) => route,
                    None => splits.entry(r.route.clone()).or_default(),
                };
                route.linked = link;
                if route.positions.len() <= r.index {
                    route.positions.resize(r.index + 1, None);
                }
                route.positions[r.index].get_or_insert_default().clone()
            })
            .collect();
        splits.retain(|_, route| route.linked == link);
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

    /// Every backend's state (a snapshot: the map is not held while they are used).
    pub fn states(&self) -> Vec<Arc<BackendState>> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every backend's `/backends` view, sorted by name.
    pub fn views(&self) -> Vec<BackendView> {
        let mut views: Vec<BackendView> = self
            .states()
            .iter()
            .map(|s| {
                let note = s.discovery_key().and_then(|k| self.discovery.note_of(&k));
                s.view().with_discovery_note(note)
            })
            .collect();
        views.sort_by(|a, b| a.backend.cmp(&b.backend));
        views
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for state in self
            .backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            state.stop_checks();
        }
    }
}

#[cfg(test)]
mod discovery_tests {
    use super::*;
    use crate::model::{Kind, ServiceKey, UpstreamProtocol};

    fn table_with(backend: Backend) -> RoutingTable {
        RoutingTable::new(Vec::new(), vec![backend], Vec::new())
    }

    /// Discovered endpoints reach a Service-backed backend in place, before and after linking.
    #[tokio::test]
    async fn discovered_endpoints_are_pushed_to_the_backends_that_use_them() {
        let registry = Registry::new(UpstreamSettings::default());
        let service = ServiceKey::new("shop", "api", "http");
        let key = DiscoveryKey::from(service.clone());
        registry
            .discovery()
            .set(&key, vec![Endpoint::new("10.0.0.1:80")]);
        let backend = Backend {
            service: Some(service),
            ..Backend::new(
                ObjectRef::new(Kind::Backend, "shop", "api"),
                UpstreamProtocol::Http1,
                Vec::new(),
            )
        };
        let linked = registry.link(&table_with(backend.clone()));
        assert_eq!(linked[0].endpoints(), vec![Endpoint::new("10.0.0.1:80")]);
        registry.discovery().set(
            &key,
            vec![Endpoint::new("10.0.0.1:80"), Endpoint::new("10.0.0.2:80")],
        );
        assert_eq!(linked[0].endpoints().len(), 2, "pushed without a new table");
        // A relink with the same table keeps the discovered set.
        let relinked = registry.link(&table_with(backend));
        assert!(Arc::ptr_eq(&linked[0], &relinked[0]));
        assert_eq!(relinked[0].endpoints().len(), 2);
        registry.discovery().set(&key, Vec::new());
        assert!(relinked[0].endpoints().is_empty());
    }
}
