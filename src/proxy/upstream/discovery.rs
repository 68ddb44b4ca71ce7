//! The live store of endpoints found at run time (Kubernetes EndpointSlices).
//!
//! This is the discovery fast path (DESIGN.md): a compiled [`Backend`](crate::model::Backend)
//! names the Service port its endpoints come from; the source that watches EndpointSlices
//! writes the ready endpoints here (through [`EndpointSink`]), and the registry pushes them
//! into the backends that use them. Endpoint churn therefore never recompiles routes or swaps
//! the routing table.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::model::{DiscoveryKey, Endpoint, EndpointSink};

/// The endpoints that may take new requests, swapped whole when they change.
#[derive(Debug)]
pub struct EndpointSet {
    ready: ArcSwap<Vec<Endpoint>>,
    discovered: bool,
}

impl EndpointSet {
    /// A fixed set (static `endpoints:` of a Backend).
    pub fn fixed(endpoints: Vec<Endpoint>) -> Self {
        Self {
            ready: ArcSwap::from_pointee(endpoints),
            discovered: false,
        }
    }

    fn discovered() -> Self {
        Self {
            ready: ArcSwap::from_pointee(Vec::new()),
            discovered: true,
        }
    }

    /// The endpoints to pick from now. Requests already sent keep their endpoint.
    pub fn ready(&self) -> arc_swap::Guard<Arc<Vec<Endpoint>>> {
        self.ready.load()
    }

    /// Replaces the set if it differs (readers see either the old or the new set, never a mix).
    pub fn store(&self, endpoints: Vec<Endpoint>) {
        if **self.ready.load() != endpoints {
            self.ready.store(Arc::new(endpoints));
        }
    }

    /// Whether this set belongs to a [`Discovery`] store (rather than to one backend).
    pub fn is_discovered(&self) -> bool {
        self.discovered
    }
}

/// Told of a discovery key's new ready endpoints.
pub type Listener = Box<dyn Fn(&DiscoveryKey, &[Endpoint]) + Send + Sync>;

/// Ready endpoints per discovery key (a Service port, a DNS query). Written by discovery, read
/// by the proxy.
#[derive(Default)]
pub struct Discovery {
    sets: Mutex<HashMap<DiscoveryKey, Arc<EndpointSet>>>,
    /// What the source says about how current a key's endpoints are (DNS: stale, failing).
    notes: Mutex<HashMap<DiscoveryKey, String>>,
    listeners: Mutex<Vec<Listener>>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("sets", &self.sets)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Calls `listener` with every change of a key's ready endpoints.
    pub fn listen(&self, listener: Listener) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Sets the ready endpoints of `key` (sorted, so equal sets compare equal), and tells the
    /// listeners when they changed.
    pub fn set(&self, key: &DiscoveryKey, ready: Vec<Endpoint>) {
        EndpointSink::set(self, key, ready);
    }

    fn store(&self, key: &DiscoveryKey, mut ready: Vec<Endpoint>) {
        ready.sort();
        ready.dedup();
        let changed = {
            let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            match sets.get(key) {
                Some(set) => {
                    let changed = **set.ready() != ready;
                    set.store(ready.clone());
                    // Nobody reads it and there is nothing in it: forget it.
                    if set.ready().is_empty() && Arc::strong_count(set) == 1 {
                        sets.remove(key);
                    }
                    changed
                }
                None if ready.is_empty() => false,
                None => {
                    let set = EndpointSet::discovered();
                    set.store(ready.clone());
                    sets.insert(key.clone(), Arc::new(set));
                    true
                }
            }
        };
        // Outside the lock: listeners take their own.
        if changed {
            for l in self
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                l(key, &ready);
            }
        }
    }

    /// The live set of `key`, created empty if discovery has not seen it yet.
    pub fn subscribe(&self, key: &DiscoveryKey) -> Arc<EndpointSet> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.entry(key.clone())
            .or_insert_with(|| Arc::new(EndpointSet::discovered()))
            .clone()
    }

    /// The ready endpoints of `key` right now (empty when unknown).
    pub fn ready(&self, key: &DiscoveryKey) -> Vec<Endpoint> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.get(key)
            .map(|s| s.ready().as_ref().clone())
            .unwrap_or_default()
    }
}

impl EndpointSink for Discovery {
    fn set(&self, key: &DiscoveryKey, ready: Vec<Endpoint>) {
        self.store(key, ready);
    }

    fn note(&self, key: &DiscoveryKey, note: Option<String>) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        match note {
            Some(n) => notes.insert(key.clone(), n),
            None => notes.remove(key),
        };
    }
}

impl Discovery {
    /// What the source last said about `key` (see [`EndpointSink::note`]).
    pub fn note_of(&self, key: &DiscoveryKey) -> Option<String> {
        let notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceKey;

    #[test]
    fn a_subscriber_sees_later_updates_in_place() {
        let d = Discovery::default();
        let key = DiscoveryKey::from(ServiceKey::new("shop", "api", "http"));
        let set = d.subscribe(&key);
        assert!(set.ready().is_empty());
        d.set(
            &key,
            vec![Endpoint::new("10.0.0.2:80"), Endpoint::new("10.0.0.1:80")],
        );
        assert_eq!(set.ready().len(), 2);
        assert_eq!(&*set.ready()[0].address, "10.0.0.1:80");
        d.set(&key, vec![]);
        assert!(
            set.ready().is_empty(),
            "the subscriber's set is emptied, not dropped"
        );
        assert!(Arc::ptr_eq(&set, &d.subscribe(&key)));
    }

    #[test]
    fn listeners_hear_changes_only() {
        let d = Discovery::default();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        d.listen(Box::new(move |k: &DiscoveryKey, eps: &[Endpoint]| {
            h.lock().unwrap().push((k.to_string(), eps.len()));
        }));
        let key = DiscoveryKey::from(ServiceKey::new("shop", "api", "http"));
        d.set(&key, vec![Endpoint::new("10.0.0.1:80")]);
        d.set(&key, vec![Endpoint::new("10.0.0.1:80")]);
        d.set(&key, vec![]);
        assert_eq!(
            *heard.lock().unwrap(),
            [
                ("Service shop/api:http".to_owned(), 1),
                ("Service shop/api:http".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn unused_empty_sets_are_forgotten() {
        let d = Discovery::default();
        let key = DiscoveryKey::from(ServiceKey::new("shop", "api", ""));
        d.set(&key, vec![Endpoint::new("10.0.0.1:80")]);
        d.set(&key, vec![]);
        assert!(d.sets.lock().unwrap().is_empty());
    }
}
