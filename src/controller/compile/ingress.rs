//! Ingress (`networking.k8s.io/v1`) → rules, for Ingresses of our class.

use crate::controller::objects::{IngressBackendInfo, IngressInfo};
use crate::controller::snapshot::{Obj, Snapshot};
use crate::model::{Diagnostic, Reason, Rule, Severity, WeightedBackend};

use super::fields::{self, Findings};
use super::route::Env;

/// Whether the Ingress belongs to us, and if not, why (for the `[ignored]` line).
fn ours(ing: &IngressInfo, snap: &Snapshot, env: &Env<'_>) -> Result<(), String> {
    let opts = env.opts;
    let mine = |class: &str| match snap.ingress_classes.get(class) {
        Some(c) => c.controller == opts.controller_name,
        // No IngressClass object: the name alone decides (clusters that predate IngressClass).
        None => class == opts.ingress_class,
    };
    match (&ing.class_name, &ing.class_annotation) {
        (Some(class), _) | (None, Some(class)) if mine(class) => Ok(()),
        (Some(class), _) | (None, Some(class)) => Err(format!(
            "belongs to ingress class {class:?}, whose controller is not {:?}",
            opts.controller_name
        )),
        (None, None) => {
            let default_is_ours = snap
                .ingress_classes
                .values()
                .any(|c| c.is_default && c.controller == opts.controller_name);
            if default_is_ours {
                Ok(())
            } else {
                Err("names no ingress class, and no IngressClass of ours is the default".into())
            }
        }
    }
}

/// Compiles one Ingress into its rules, or `None` if it is not ours or is rejected.
pub fn compile_ingress(
    obj: &Obj<IngressInfo>,
    snap: &Snapshot,
    env: &Env<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<Rule>> {
    let id = &obj.meta.id;
    let ing = &obj.spec;
    if let Err(why) = ours(ing, snap, env) {
        out.push(Diagnostic {
            severity: Severity::Ignored,
            ..Diagnostic::error(id, "spec.ingressClassName", Reason::OtherClass, why)
        });
        return None;
    }
    let mut f = Findings::new(id, out);
    // One Tidegate cannot honour rejects the Ingress; the ones it carries become Route values,
    // compiled by the Route compiler (as `tidegate migrate` writes them out).
    super::ingress_annotations::check(&ing.annotations, &mut f);
    let t = super::ingress_translate::translate(&ing.annotations, &mut f);
    // The Route compiler's view of the Ingress: its identity, no Route-level settings.
    let shell = Obj {
        meta: obj.meta.clone(),
        spec: crate::api::RouteSpec::default(),
    };
    let mut rules: Vec<Rule> = Vec::new();
    let mut make = |hostnames: &[String],
                    rule: crate::api::RouteRule,
                    backend: Option<&IngressBackendInfo>,
                    at: &str,
                    f: &mut Findings<'_>| {
        let resolved = match backend {
            Some(b) => vec![ingress_backend(id, b, &format!("{at}.backend"), env, f)?],
            None => Vec::new(),
        };
        let index = rules.len();
        let mut r = super::route::compile_rule(
            &shell,
            index,
            &rule,
            at,
            hostnames,
            env,
            f,
            Some(resolved),
        )?;
        r.https_redirect = t.force_ssl_redirect;
        rules.push(r);
        Some(())
    };

    let mut hosts_seen: Vec<Vec<String>> = Vec::new();
    for (ri, rule) in ing.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let hostnames = match &rule.host {
            None => Vec::new(),
            Some(h) => match fields::hostname(h, true) {
                // server-alias: the Ingress's hosts answer to the aliases too.
                Ok(h) => std::iter::once(h)
                    .chain(t.aliases.iter().cloned())
                    .collect(),
                Err(e) => {
                    f.invalid(format!("{at}.host"), e);
                    continue;
                }
            },
        };
        for (pi, p) in rule.paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{pi}]");
            let value = p.path.as_deref().unwrap_or("/");
            // A regex path is checked as a pattern by the Route compiler.
            if !(t.regex && p.path_type != "Exact")
                && let Err(e) = fields::plain_path(value)
            {
                f.invalid(format!("{pat}.path"), e);
                continue;
            }
            if !matches!(
                p.path_type.as_str(),
                "Exact" | "Prefix" | "ImplementationSpecific"
            ) {
                f.invalid(
                    format!("{pat}.pathType"),
                    format!(
                        "{:?} must be Prefix, Exact or ImplementationSpecific",
                        p.path_type
                    ),
                );
                continue;
            }
            // ImplementationSpecific: ours is a segment-aware prefix, like Prefix.
            let path = t.path(&p.path_type, value);
            make(&hostnames, t.rule(path), Some(&p.backend), &pat, &mut f);
        }
        if !hosts_seen.contains(&hostnames) {
            hosts_seen.push(hostnames);
        }
    }
    if let Some(b) = &ing.default_backend {
        let path = t.path("Prefix", "/");
        make(&[], t.rule(path), Some(b), "spec.defaultBackend", &mut f);
        if hosts_seen.is_empty() {
            hosts_seen.push(Vec::new());
        }
    }
    if let Some(rule) = t.app_root_rule() {
        for hostnames in &hosts_seen {
            make(
                hostnames,
                rule.clone(),
                None,
                "metadata.annotations",
                &mut f,
            );
        }
    }
    if ing.rules.is_empty() && ing.default_backend.is_none() {
        f.invalid("spec", "an Ingress needs rules or a defaultBackend");
    }
    f.ok().then_some(rules)
}

fn ingress_backend(
    id: &crate::model::ObjectRef,
    b: &IngressBackendInfo,
    at: &str,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<WeightedBackend> {
    let (name, port) = match b {
        IngressBackendInfo::Resource => {
            f.not_supported(format!("{at}.resource"), "resource backends");
            return None;
        }
        IngressBackendInfo::Service { name, port } => (name, port),
    };
    let resolved = env
        .targets
        .borrow()
        .resolve_port(&id.namespace, name, port.as_ref());
    match resolved {
        Ok(p) => {
            let mut targets = env.targets.borrow_mut();
            let idx = targets.service(&id.namespace, name, &p);
            Some(targets.weighted(idx, 1))
        }
        Err(u) => {
            let field = if u.reason == Reason::PortNotFound {
                format!("{at}.service.port")
            } else {
                format!("{at}.service.name")
            };
            f.push(Diagnostic::error(id, field, u.reason, u.message));
            None
        }
    }
}
