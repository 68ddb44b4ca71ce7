//! Secrets (and ConfigMaps) read by reference: the watch sees metadata only, and the data of an
//! object is fetched (GET) only while a Route, Backend or Ingress references it.
//!
//! ```text
//!  metadata watch ──► versions (name → resourceVersion, every object of the kind)
//!  compile loop:  referenced by the specs ∩ versions, held version ≠ watched version ──► GET
//!                 held data no longer referenced (or gone) ──► dropped
//! ```
//!
//! So the controller holds the data of the Secrets it uses, whatever their type, and nothing
//! of the cluster's other Secrets but their name and resource version.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{BackendSpec, RouteSpec};
use crate::controller::objects::IngressInfo;
use crate::controller::snapshot::Obj;
use crate::model::ObjectRef;

/// `(namespace, name)` of a Secret or ConfigMap.
pub type Key = (String, String);

/// Objects of one kind known by their metadata, and the data of the referenced ones.
#[derive(Debug)]
pub struct ByReference<T> {
    /// The resource version of every object the watch has seen.
    versions: BTreeMap<Key, String>,
    /// The data of referenced objects, with the resource version it was read at.
    held: BTreeMap<Key, (String, T)>,
}

impl<T> Default for ByReference<T> {
    fn default() -> Self {
        Self {
            versions: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }
}

impl<T: Clone> ByReference<T> {
    /// The watch saw `key` at `version`; whether that differs from what was known.
    pub fn seen(&mut self, key: Key, version: String) -> bool {
        self.versions.insert(key, version.clone()) != Some(version)
    }

    /// The watch saw `key` deleted; whether it was known.
    pub fn gone(&mut self, key: &Key) -> bool {
        self.versions.remove(key).is_some()
    }

    /// Forgets every version (before a relist); held data stays until the next [`Self::plan`].
    pub fn clear_versions(&mut self) {
        self.versions.clear();
    }

    /// Whether the data of `key` is held.
    pub fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(key)
    }

    /// Drops the data of objects not in `wanted` (or gone), and returns the keys of `wanted`
    /// whose data must be (re)read: existing, and not held at their current version.
    pub fn plan(&mut self, wanted: &BTreeSet<Key>) -> Vec<Key> {
        let versions = &self.versions;
        self.held
            .retain(|k, _| wanted.contains(k) && versions.contains_key(k));
        wanted
            .iter()
            .filter(|k| match (self.versions.get(*k), self.held.get(*k)) {
                (Some(v), Some((held, _))) => v != held,
                (Some(_), None) => true,
                (None, _) => false,
            })
            .cloned()
            .collect()
    }

    /// Keeps `data`, read at `version`.
    pub fn store(&mut self, key: Key, version: String, data: T) {
        self.held.insert(key, (version, data));
    }

    /// Drops the data of `key` (it was not found when read).
    pub fn drop_data(&mut self, key: &Key) {
        self.held.remove(key);
    }

    /// The held data, for a snapshot.
    pub fn data(&self) -> BTreeMap<Key, T> {
        self.held
            .iter()
            .map(|(k, (_, d))| (k.clone(), d.clone()))
            .collect()
    }

    /// How many objects' data is held.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// How many objects the watch knows.
    pub fn known_len(&self) -> usize {
        self.versions.len()
    }
}

/// Collects the Secrets and ConfigMaps that specs reference (in their own namespace).
#[derive(Debug, Default)]
pub struct Refs {
    /// Secrets.
    pub secrets: BTreeSet<Key>,
    /// ConfigMaps.
    pub config_maps: BTreeSet<Key>,
}

impl Refs {
    fn secret(&mut self, id: &ObjectRef, name: &str) {
        self.secrets
            .insert((id.namespace.to_string(), name.to_owned()));
    }

    fn config_map(&mut self, id: &ObjectRef, name: &str) {
        self.config_maps
            .insert((id.namespace.to_string(), name.to_owned()));
    }

    /// What Routes reference: `spec.tls.secretName`, the client-validation CA, and each rule's
    /// basic-auth, JWKS, JWKS-issuer CA and external-authorization CA Secrets.
    pub fn routes<'a>(&mut self, routes: impl IntoIterator<Item = &'a Obj<RouteSpec>>) {
        for r in routes {
            let id = &r.meta.id;
            if let Some(tls) = &r.spec.tls {
                self.secret(id, &tls.secret_name);
                if let Some(v) = &tls.client_validation {
                    if let Some(s) = &v.ca_secret_ref {
                        self.secret(id, &s.name);
                    }
                    if let Some(c) = &v.ca_config_map_ref {
                        self.config_map(id, &c.name);
                    }
                }
            }
            for rule in &r.spec.rules {
                let Some(auth) = &rule.authentication else {
                    continue;
                };
                if let Some(b) = &auth.basic {
                    self.secret(id, &b.secret_ref.name);
                }
                let jwks = auth.jwt.as_ref().and_then(|j| j.jwks.as_ref());
                if let Some(j) = jwks {
                    for s in [&j.secret_ref, &j.ca_secret_ref].into_iter().flatten() {
                        self.secret(id, &s.name);
                    }
                }
                if let Some(s) = auth
                    .ext_auth
                    .as_ref()
                    .and_then(|e| e.ca_secret_ref.as_ref())
                {
                    self.secret(id, &s.name);
                }
            }
        }
    }

    /// What Backends reference: the CA and the client certificate of `spec.tls`.
    pub fn backends<'a>(&mut self, backends: impl IntoIterator<Item = &'a Obj<BackendSpec>>) {
        for b in backends {
            let id = &b.meta.id;
            let Some(tls) = &b.spec.tls else { continue };
            if let Some(s) = &tls.ca_secret_ref {
                self.secret(id, &s.name);
            }
            if let Some(c) = &tls.ca_config_map_ref {
                self.config_map(id, &c.name);
            }
            if let Some(s) = &tls.client_certificate_ref {
                self.secret(id, &s.name);
            }
        }
    }

    /// What Ingresses reference: `spec.tls[].secretName`, the `auth-secret`,
    /// `proxy-ssl-secret` and `auth-tls-secret` annotations.
    pub fn ingresses<'a>(&mut self, ingresses: impl IntoIterator<Item = &'a Obj<IngressInfo>>) {
        use crate::controller::compile::ingress_translate::auth_secret;
        for i in ingresses {
            for tls in &i.spec.tls {
                if let Some(s) = &tls.secret_name {
                    self.secret(&i.meta.id, s);
                }
            }
            if let Some(s) = auth_secret(&i.spec.annotations, &i.meta.id.namespace) {
                self.secret(&i.meta.id, s);
            }
            let proxy_ssl = crate::controller::compile::ingress_proxy_ssl::secret_name(
                &i.spec.annotations,
                &i.meta.id.namespace,
            );
            if let Some(s) = proxy_ssl {
                self.secret(&i.meta.id, s);
            }
            let auth_tls = crate::controller::compile::ingress_auth_tls::secret_name(
                &i.spec.annotations,
                &i.meta.id.namespace,
            );
            if let Some(s) = auth_tls {
                self.secret(&i.meta.id, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("shop".to_owned(), name.to_owned())
    }

    #[test]
    fn only_referenced_objects_are_read_and_held_and_a_new_version_is_read_again() {
        let mut s: ByReference<&'static str> = ByReference::default();
        s.seen(key("used"), "1".into());
        s.seen(key("unused"), "1".into());
        let wanted: BTreeSet<Key> = [key("used"), key("missing")].into();
        // Only the referenced Secret that exists is read.
        assert_eq!(s.plan(&wanted), vec![key("used")]);
        s.store(key("used"), "1".into(), "data-1");
        assert_eq!(s.plan(&wanted), Vec::<Key>::new());
        assert_eq!(s.held_len(), 1);
        assert_eq!(s.known_len(), 2);
        // A new version is read again.
        assert!(s.seen(key("used"), "2".into()));
        assert!(!s.seen(key("used"), "2".into()));
        assert_eq!(s.plan(&wanted), vec![key("used")]);
        s.store(key("used"), "2".into(), "data-2");
        assert_eq!(s.data()[&key("used")], "data-2");
        // No longer referenced: dropped.
        assert_eq!(s.plan(&BTreeSet::new()), Vec::<Key>::new());
        assert_eq!(s.held_len(), 0);
        // Deleted while referenced: dropped too.
        s.store(key("used"), "2".into(), "data-2");
        assert!(s.gone(&key("used")));
        assert_eq!(s.plan(&wanted), Vec::<Key>::new());
        assert_eq!(s.held_len(), 0);
    }
}
