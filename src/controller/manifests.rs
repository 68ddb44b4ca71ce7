//! Kubernetes objects read from files, for `tidegate validate --kubernetes`: the Services,
//! EndpointSlices, Ingresses, IngressClasses, Secrets and ConfigMaps of a manifest set (a Helm template's
//! output, say), so that it validates offline as the controller would judge it in a cluster.
//! Every other kind is ignored (reported, not an error).

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

use super::kube::endpoints::EndpointSlice;
use crate::model::{Diagnostic, Kind, ObjectRef, Reason, Severity};

/// The kinds read (besides Tidegate's own), as `(apiVersion, kind)`.
pub const READ: &[(&str, &str)] = &[
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("discovery.k8s.io/v1beta1", "EndpointSlice"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "IngressClass"),
];

/// One Kubernetes object read from a file.
#[derive(Clone, Debug)]
pub enum KubeDoc {
    /// A `v1` Service.
    Service(Box<Service>),
    /// A `networking.k8s.io/v1` Ingress.
    Ingress(Box<Ingress>),
    /// A `networking.k8s.io/v1` IngressClass.
    IngressClass(Box<IngressClass>),
    /// A Secret (of any type: what references it decides which keys are read).
    Secret(Box<Secret>),
    /// A ConfigMap (its `ca.crt` is read when a CA reference names it).
    ConfigMap(Box<ConfigMap>),
    /// Read and checked; endpoints are discovered at run time, not compiled.
    EndpointSlice(Box<ObjectMeta>),
}

impl KubeDoc {
    /// The kind, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            KubeDoc::Service(_) => "Service",
            KubeDoc::Ingress(_) => "Ingress",
            KubeDoc::IngressClass(_) => "IngressClass",
            KubeDoc::Secret(_) => "Secret",
            KubeDoc::ConfigMap(_) => "ConfigMap",
            KubeDoc::EndpointSlice(_) => "EndpointSlice",
        }
    }

    /// The identity the compiler knows it by (Services and Ingresses).
    pub fn id(&self) -> Option<ObjectRef> {
        let (kind, meta) = match self {
            KubeDoc::Service(s) => (Kind::Service, &s.metadata),
            KubeDoc::Ingress(i) => (Kind::Ingress, &i.metadata),
            _ => return None,
        };
        Some(ObjectRef::new(
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        ))
    }
}

/// Whether `kind` is one of the Kubernetes kinds read here (whatever its apiVersion).
pub fn is_kubernetes_kind(kind: &str) -> bool {
    READ.iter().any(|(_, k)| *k == kind)
}

/// Reads one document of a Kubernetes kind. An `Err` with severity `Ignored` is a kind Tidegate
/// does not read; any other `Err` says why the object cannot be read.
pub fn read(mut value: serde_yaml_ng::Value) -> Result<KubeDoc, Box<Diagnostic>> {
    let str_at = |v: &serde_yaml_ng::Value, key: &str| {
        v.get(key).and_then(|x| x.as_str()).map(str::to_owned)
    };
    let api_version = str_at(&value, "apiVersion").unwrap_or_default();
    let kind = str_at(&value, "kind").unwrap_or_default();
    let ignored = |message: String| {
        Box::new(Diagnostic {
            object: None,
            file: None,
            field: "kind".into(),
            severity: Severity::Ignored,
            reason: Reason::NotSupported,
            message,
        })
    };
    if !READ.contains(&(api_version.as_str(), kind.as_str())) {
        let why = if is_kubernetes_kind(&kind) {
            format!(
                "{kind} {api_version:?} is not read (Tidegate reads {kind} as {})",
                versions(&kind)
            )
        } else {
            format!("{kind:?} ({api_version}) is not read by Tidegate")
        };
        return Err(ignored(why));
    }
    let name = value
        .get("metadata")
        .and_then(|m| str_at(m, "name"))
        .filter(|n| !n.is_empty());
    let Some(name) = name else {
        return Err(Box::new(Diagnostic {
            object: None,
            file: None,
            field: "metadata.name".into(),
            severity: Severity::Error,
            reason: Reason::Malformed,
            message: format!("a {kind} needs metadata.name"),
        }));
    };
    // Namespaced kinds land in `default` when they name none, as `kubectl apply` would do.
    if kind != "IngressClass"
        && let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_mapping_mut())
    {
        meta.entry("namespace".into())
            .or_insert(super::file::DEFAULT_NAMESPACE.into());
    }
    let namespace = value
        .get("metadata")
        .and_then(|m| str_at(m, "namespace"))
        .unwrap_or_default();
    let bad = |(field, message): (String, String)| {
        let object = match kind.as_str() {
            "Service" => Some(ObjectRef::new(
                Kind::Service,
                namespace.clone(),
                name.clone(),
            )),
            "Ingress" => Some(ObjectRef::new(
                Kind::Ingress,
                namespace.clone(),
                name.clone(),
            )),
            _ => None,
        };
        let message = match &object {
            Some(_) => message,
            None => format!("{kind} {namespace}/{name}: {message}"),
        };
        Box::new(Diagnostic {
            object,
            file: None,
            field,
            severity: Severity::Error,
            reason: Reason::Malformed,
            message,
        })
    };
    Ok(match kind.as_str() {
        "Service" => KubeDoc::Service(Box::new(typed(value).map_err(bad)?)),
        "Ingress" => KubeDoc::Ingress(Box::new(typed(value).map_err(bad)?)),
        "IngressClass" => KubeDoc::IngressClass(Box::new(typed(value).map_err(bad)?)),
        "Secret" => KubeDoc::Secret(Box::new(typed(value).map_err(bad)?)),
        "ConfigMap" => KubeDoc::ConfigMap(Box::new(typed(value).map_err(bad)?)),
        _ => {
            let s: EndpointSlice = typed(value).map_err(bad)?;
            KubeDoc::EndpointSlice(Box::new(s.metadata))
        }
    })
}

fn versions(kind: &str) -> String {
    let v: Vec<&str> = READ
        .iter()
        .filter(|(_, k)| *k == kind)
        .map(|(v, _)| *v)
        .collect();
    v.join(" or ")
}

fn typed<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn reads_the_kinds_the_controller_watches_and_ignores_the_rest() {
        let svc = read(yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {ports: [{port: 80}]}",
        ))
        .unwrap();
        assert_eq!(svc.id().unwrap().to_string(), "Service default/api");
        let secret = read(yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: shop}\ntype: kubernetes.io/tls",
        ))
        .unwrap();
        assert!(
            matches!(secret, KubeDoc::Secret(ref s) if s.metadata.namespace.as_deref() == Some("shop"))
        );
        let slice = read(yaml(
            "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: []",
        ))
        .unwrap();
        assert_eq!(slice.kind(), "EndpointSlice");

        let deployment = read(yaml(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}",
        ))
        .unwrap_err();
        assert_eq!(deployment.severity, Severity::Ignored);
        let old = read(yaml(
            "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: i}",
        ))
        .unwrap_err();
        assert_eq!(old.severity, Severity::Ignored);
        assert!(
            old.message.contains("networking.k8s.io/v1"),
            "{}",
            old.message
        );
    }

    #[test]
    fn a_malformed_object_is_named_with_its_field() {
        let e = read(yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {ports: [{port: http}]}",
        ))
        .unwrap_err();
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.object.unwrap().to_string(), "Service default/api");
        assert_eq!(e.field, "spec.ports[0].port");
        let e = read(yaml("apiVersion: v1\nkind: Secret\nmetadata: {}")).unwrap_err();
        assert_eq!(e.field, "metadata.name");
    }
}
