//! `tidegate migrate`: Ingress YAML in, the Routes and Backends that behave the same out, with
//! a report of what became of every annotation. The objects come from the same translation the
//! compiler serves an Ingress with
//! ([`ingress_translate`](crate::controller::compile::ingress_translate)), so the two cannot
//! drift.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::api::networking::v1::Ingress;
use serde::Deserialize;
use serde_json::json;

use super::compile::ingress_migrate::{self, Migrated};
use super::compile::ingress_translate::Outcome;
use super::kube::index::Index;
use super::manifests::{self, KubeDoc};
use super::snapshot::Accepted;
use crate::model::Diagnostic;

/// What `tidegate migrate` prints.
#[derive(Debug, Default)]
pub struct Migration {
    /// The objects, as a multi-document YAML stream.
    pub yaml: String,
    /// One block per Ingress: migrated (each annotation carried or approximated, and how) or
    /// not (the findings that stop it).
    pub report: String,
    /// How many Ingresses could not be migrated.
    pub failed: usize,
}

/// Migrates every Ingress in `inputs` (`(name, YAML text)`; `kind: List` is read as its
/// items); other kinds are left out and said so.
pub fn migrate(inputs: &[(String, String)]) -> Migration {
    let mut out = Migration::default();
    let mut index = Index::new(None);
    for (file, text) in inputs {
        for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = match serde_yaml_ng::Value::deserialize(de) {
                Ok(v) if v.is_null() => continue,
                Ok(v) => v,
                Err(e) => {
                    let _ = writeln!(out.report, "{file}: documents[{i}]: not YAML: {e}");
                    out.failed += 1;
                    break;
                }
            };
            for (at, doc) in items(value, i) {
                let kind = doc.get("kind").and_then(|k| k.as_str()).map(str::to_owned);
                match manifests::read(doc) {
                    Ok(KubeDoc::Ingress(ing)) => {
                        let _ = index.apply_ingress(&ing);
                    }
                    Ok(_) | Err(_) if kind.as_deref() != Some("Ingress") => {
                        let kind = kind.unwrap_or_default();
                        let _ = writeln!(
                            out.report,
                            "{file}: {at}: {kind:?} left out (only Ingresses are migrated)"
                        );
                    }
                    Ok(_) => {}
                    Err(d) => {
                        let _ = writeln!(out.report, "{file}: {at}: {}", d.message);
                        out.failed += 1;
                    }
                }
            }
        }
    }
    finish(&index, &mut out);
    out
}

/// Migrates Ingresses read from a cluster; `left_out` lines go first in the report.
pub fn migrate_ingresses(ingresses: &[Ingress], left_out: &[String]) -> Migration {
    let mut out = Migration::default();
    let mut index = Index::new(None);
    for line in left_out {
        let _ = writeln!(out.report, "{line}");
    }
    for ing in ingresses {
        let _ = index.apply_ingress(ing);
    }
    finish(&index, &mut out);
    out
}

/// The objects and report of the Ingresses in `index`.
fn finish(index: &Index, out: &mut Migration) {
    // Backends already written, by namespace and name (Ingresses share Service ports).
    let mut written = BTreeSet::new();
    let all = index.snapshot(Accepted::default()).ingresses;
    for obj in all.values() {
        let id = &obj.meta.id;
        let mut diags = Vec::new();
        match ingress_migrate::migrate(obj, &all, &mut diags) {
            Some(mut m) => {
                m.backends
                    .retain(|(name, _)| written.insert((id.namespace.clone(), name.clone())));
                render(&mut out.yaml, &id.namespace, &id.key(), &m);
                report(&mut out.report, &id.to_string(), &m, &diags);
            }
            None => {
                out.failed += 1;
                let _ = writeln!(out.report, "{id}: not migrated");
                for d in diags {
                    let _ = writeln!(out.report, "  {}", line(&d));
                }
            }
        }
    }
}

/// The Ingresses `tidegate migrate --from-cluster` reads: those of `namespace` (all if none)
/// whose class is one of `classes` (an Ingress without a class: when the cluster's default
/// IngressClass is one of them, as its controller serves it), and a report line for each one
/// left out.
#[cfg(feature = "kubernetes")]
pub async fn from_cluster(
    namespace: Option<&str>,
    classes: &[String],
) -> Result<(Vec<Ingress>, Vec<String>), super::kube::KubeError> {
    use super::kube::KubeError;
    use crate::api::annotations::{IS_DEFAULT_CLASS, LEGACY_INGRESS_CLASS};
    use k8s_openapi::api::networking::v1::IngressClass;
    use kube::api::{Api, ListParams};

    let client = super::kube::client().await?;
    let ingresses: Api<Ingress> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = ingresses
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::ListFailed("Ingresses", e))?;
    let default_class = Api::<IngressClass>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::ListFailed("IngressClasses", e))?
        .items
        .into_iter()
        .find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IS_DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .and_then(|c| c.metadata.name);
    let mut taken = Vec::new();
    let mut left_out = Vec::new();
    for ing in list.items {
        let class = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.clone())
            .or_else(|| {
                ing.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_INGRESS_CLASS).cloned())
            });
        let id = format!(
            "Ingress {}/{}",
            ing.metadata.namespace.as_deref().unwrap_or_default(),
            ing.metadata.name.as_deref().unwrap_or_default()
        );
        match (&class, &default_class) {
            (Some(c), _) | (None, Some(c)) if classes.contains(c) => taken.push(ing),
            (Some(c), _) => left_out.push(format!("{id}: left out (class {c:?})")),
            (None, _) => left_out.push(format!(
                "{id}: left out (no class, and the default IngressClass is not one of those migrated)"
            )),
        }
    }
    Ok((taken, left_out))
}

/// A `kind: List`'s items, or the document itself (document `i`), each with where it is.
fn items(value: serde_yaml_ng::Value, i: usize) -> Vec<(String, serde_yaml_ng::Value)> {
    let is_list = value.get("kind").and_then(|k| k.as_str()) == Some("List");
    match value.get("items").and_then(|v| v.as_sequence()) {
        Some(items) if is_list => items
            .iter()
            .enumerate()
            .map(|(j, item)| (format!("documents[{i}].items[{j}]"), item.clone()))
            .collect(),
        _ => vec![(format!("documents[{i}]"), value)],
    }
}

fn line(d: &Diagnostic) -> String {
    let mut s = format!("{}: {}", d.field, d.message);
    if !d.is_error() {
        s.push_str(" [warning]");
    }
    s
}

/// Appends the objects of one Ingress to `yaml`.
fn render(yaml: &mut String, namespace: &str, from: &str, m: &Migrated) {
    let docs = m
        .backends
        .iter()
        .map(|(name, spec)| ("Backend", name, serde_json::to_value(spec)))
        .chain(
            m.routes
                .iter()
                .map(|(name, spec)| ("Route", name, serde_json::to_value(spec))),
        )
        .chain(
            m.policies
                .iter()
                .map(|(name, spec)| ("RateLimitPolicy", name, serde_json::to_value(spec))),
        );
    for (kind, name, spec) in docs {
        let doc = json!({
            "apiVersion": "tidegate.dev/v1alpha1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {"tidegate.dev/migrated-from": format!("Ingress {from}")},
            },
            "spec": spec.unwrap_or_default(),
        });
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml_ng::to_string(&doc).unwrap_or_default());
    }
}

/// Appends the report of one migrated Ingress.
fn report(out: &mut String, id: &str, m: &Migrated, diags: &[Diagnostic]) {
    let names: Vec<String> = m
        .routes
        .iter()
        .map(|(n, _)| format!("Route {n}"))
        .chain(m.backends.iter().map(|(n, _)| format!("Backend {n}")))
        .chain(
            m.policies
                .iter()
                .map(|(n, _)| format!("RateLimitPolicy {n}")),
        )
        .collect();
    match &m.canary_of {
        Some(mains) if mains.is_empty() => {
            let _ = writeln!(
                out,
                "{id}: a canary of no Ingress given: nothing written (it serves nothing)"
            );
        }
        Some(mains) => {
            let _ = writeln!(
                out,
                "{id}: a canary: its backend is in the Routes written for Ingress {}",
                mains.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "{id}: migrated to {}", names.join(", "));
        }
    }
    for (key, outcome) in &m.outcomes {
        let _ = match outcome {
            Outcome::Carried => writeln!(out, "  {key}: carried"),
            Outcome::Approximated(how) => writeln!(out, "  {key}: approximated: {how}"),
            Outcome::NotCarried(why) => writeln!(out, "  {key}: not carried: {why}"),
        };
    }
    for note in &m.notes {
        let _ = writeln!(out, "  not carried: {note}");
    }
    for d in diags {
        let _ = writeln!(out, "  {}", line(d));
    }
}
