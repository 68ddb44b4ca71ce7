//! What the compiler reads: every object reduced to its identity, origin and spec.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::objects::{ConfigMapInfo, IngressClasses, IngressInfo, SecretInfo, ServiceInfo};
use crate::api::{BackendSpec, RateLimitPolicySpec, RouteSpec};
use crate::model::{Diagnostic, ObjectRef};

/// Where an object came from and what orders it.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// Kind, namespace, name.
    pub id: ObjectRef,
    /// The file it was read from (standalone mode), shared by its documents.
    pub file: Option<Arc<str>>,
    /// `metadata.creationTimestamp` as Unix seconds, when known (precedence tie-break).
    pub created: Option<i64>,
    /// `metadata.generation`, when known (status `observedGeneration`).
    pub generation: Option<i64>,
}

impl Meta {
    /// Metadata with only an identity.
    pub fn new(id: ObjectRef) -> Self {
        Self {
            id,
            file: None,
            created: None,
            generation: None,
        }
    }
}

/// One object as the compiler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Obj<S> {
    /// Identity and origin.
    pub meta: Meta,
    /// The spec as written, shared: the index, each snapshot and the accepted versions hold
    /// the same one (a snapshot of 10,000 Routes copies no spec).
    pub spec: Arc<S>,
}

impl<S> Obj<S> {
    /// An object from its metadata and spec.
    pub fn new(meta: Meta, spec: S) -> Self {
        Self {
            meta,
            spec: Arc::new(spec),
        }
    }
}

impl<S: PartialEq> Obj<S> {
    /// Whether `other` has the same spec (the same shared one, or an equal one).
    pub fn same_spec(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.spec, &other.spec) || self.spec == other.spec
    }
}

/// The versions of objects that compiled cleanly last time: what keeps serving when a later
/// version of the same object is broken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accepted {
    /// Accepted Routes. Usually every current Route as it is: then this is the snapshot's own
    /// map, shared, not a copy of its 10,000 entries.
    pub routes: Arc<BTreeMap<ObjectRef, Obj<RouteSpec>>>,
    /// Accepted Backends.
    pub backends: BTreeMap<ObjectRef, Obj<BackendSpec>>,
    /// Accepted Ingresses (Kubernetes mode).
    pub ingresses: BTreeMap<ObjectRef, Obj<IngressInfo>>,
    /// Accepted RateLimitPolicies.
    pub policies: BTreeMap<ObjectRef, Obj<RateLimitPolicySpec>>,
    /// The last good certificate of every Secret in use, with the contents it came from:
    /// served while the Secret is broken or gone, and not parsed again while it stays the same.
    pub certificates: super::compile::AcceptedCertificates,
    /// The last good CA bundle of every file in use (`caFile`): served while the file is
    /// missing or broken.
    pub ca_files: super::compile::AcceptedCaFiles,
}

/// Everything the compiler reads. Built by the index; `compile` is a pure function of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Routes by identity; shared with the index they were taken from (Kubernetes mode), so
    /// taking a snapshot does not copy 10,000 identities. Change with `Arc::make_mut`.
    pub routes: Arc<BTreeMap<ObjectRef, Obj<RouteSpec>>>,
    /// Backends by identity.
    pub backends: BTreeMap<ObjectRef, Obj<BackendSpec>>,
    /// RateLimitPolicies by identity.
    pub policies: BTreeMap<ObjectRef, Obj<RateLimitPolicySpec>>,
    /// Services by identity (Kubernetes mode): ports for backend references, canary annotations.
    pub services: BTreeMap<ObjectRef, Obj<ServiceInfo>>,
    /// Ingresses by identity (Kubernetes mode).
    pub ingresses: BTreeMap<ObjectRef, Obj<IngressInfo>>,
    /// IngressClasses by name (Kubernetes mode).
    pub ingress_classes: IngressClasses,
    /// Secrets, by (namespace, name): the keys Tidegate reads (in Kubernetes mode only those
    /// of referenced Secrets are held).
    pub secrets: BTreeMap<(String, String), SecretInfo>,
    /// ConfigMaps, by (namespace, name): their CA bundle (referenced ones in Kubernetes mode).
    pub config_maps: BTreeMap<(String, String), ConfigMapInfo>,
    /// Files the options (`--default-certificate CERT,KEY`) and the objects (`caFile`,
    /// `clientCertificateFiles`) name: their bytes, or why they could not be read.
    pub files: BTreeMap<std::path::PathBuf, Result<bytes::Bytes, String>>,
    /// When the snapshot was taken (Unix seconds): certificate dates are checked against it.
    pub now: i64,
    /// Objects or files the sources could not read (each names the object when it could).
    pub problems: Vec<Diagnostic>,
    /// The last accepted versions, from the previous compile.
    pub accepted: Accepted,
}

/// The objects of `other` that `current` does not hold as they are (another spec, or none):
/// what a walk of `current` and `other` together must read besides `current`. Both maps are
/// walked side by side; a shared spec is recognised by address.
pub fn not_in<'a, S>(
    current: &'a BTreeMap<ObjectRef, Obj<S>>,
    other: &'a BTreeMap<ObjectRef, Obj<S>>,
) -> impl Iterator<Item = &'a Obj<S>> + 'a {
    let mut current = current.iter().peekable();
    other.iter().filter_map(move |(id, obj)| {
        while current.next_if(|(c, _)| *c < id).is_some() {}
        // Taken once matched: left at the head, it was compared with the next identity by
        // its name's bytes, where the two maps' shared identities compare by address.
        let same = current
            .next_if(|(c, _)| *c == id)
            .is_some_and(|(_, cur)| Arc::ptr_eq(&cur.spec, &obj.spec));
        (!same).then_some(obj)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Meta, Obj, not_in};
    use crate::model::{Kind, ObjectRef};

    fn obj(name: &str, spec: &str) -> Obj<String> {
        Obj::new(
            Meta::new(ObjectRef::new(Kind::Route, "default", name)),
            spec.to_owned(),
        )
    }

    /// Only what `current` does not hold as it is comes out: a shared spec is skipped; an equal
    /// spec in an allocation of its own is not (reading it again is harmless, comparing specs
    /// would cost more), nor is an object `current` lacks.
    #[test]
    fn not_in_yields_the_objects_current_does_not_hold_as_they_are() {
        let (a, b, c) = (obj("a", "1"), obj("b", "1"), obj("c", "1"));
        let current: BTreeMap<_, _> = [&a, &b, &c]
            .into_iter()
            .map(|o| (o.meta.id.clone(), o.clone()))
            .collect();
        let other: BTreeMap<_, _> = [
            obj("0", "gone from current"),
            a.clone(),
            obj("b", "1"),
            obj("bb", "only here"),
            c.clone(),
            obj("d", "after the last"),
        ]
        .into_iter()
        .map(|o| (o.meta.id.clone(), o))
        .collect();
        let names: Vec<&str> = not_in(&current, &other).map(|o| &*o.meta.id.name).collect();
        assert_eq!(names, ["0", "b", "bb", "d"]);
        assert_eq!(not_in(&current, &current).count(), 0);
    }
}
