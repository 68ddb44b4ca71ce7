//! Ingress (`networking.k8s.io/v1`) → rules, for Ingresses of our class.

use std::sync::Arc;

use crate::controller::objects::{IngressBackendInfo, IngressInfo};
use crate::controller::snapshot::{Obj, Snapshot};
use crate::model::{
    Action, Diagnostic, PathMatcher, Reason, RequestMatch, Rule, Severity, Timeouts,
    WeightedBackend,
};

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
    // One Tidegate cannot honour rejects the Ingress (ssl-redirect applies with the TLS hosts).
    super::ingress_annotations::check(&ing.annotations, &mut f);
    let mut rules = Vec::new();
    let mut make = |hostnames: Vec<String>,
                    path: PathMatcher,
                    backend: &IngressBackendInfo,
                    at: &str,
                    f: &mut Findings<'_>| {
        let wb = ingress_backend(id, backend, at, env, f)?;
        let index = rules.len();
        rules.push(Rule {
            route: id.clone(),
            index,
            name: None,
            label: Arc::from(id.key()),
            hostnames,
            matches: vec![RequestMatch {
                path,
                ..RequestMatch::default()
            }],
            request_filters: Vec::new(),
            response_filters: Vec::new(),
            action: Action::forward(vec![wb]),
            timeouts: Timeouts::default(),
            retry: None,
            rate_limits: Vec::new(),
            https_redirect: false,
            hsts: None,
            client_validation: None,
            access: None,
            created: obj.meta.created,
        });
        Some(())
    };

    for (ri, rule) in ing.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let hostnames = match &rule.host {
            None => Vec::new(),
            Some(h) => match fields::hostname(h, true) {
                Ok(h) => vec![h],
                Err(e) => {
                    f.invalid(format!("{at}.host"), e);
                    continue;
                }
            },
        };
        for (pi, p) in rule.paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{pi}]");
            let value = p.path.as_deref().unwrap_or("/");
            if let Err(e) = fields::plain_path(value) {
                f.invalid(format!("{pat}.path"), e);
                continue;
            }
            let path = match p.path_type.as_str() {
                "Exact" => PathMatcher::Exact(value.to_owned()),
                // ImplementationSpecific: ours is a segment-aware prefix, like Prefix.
                "Prefix" | "ImplementationSpecific" => PathMatcher::prefix(value),
                other => {
                    f.invalid(
                        format!("{pat}.pathType"),
                        format!("{other:?} must be Prefix, Exact or ImplementationSpecific"),
                    );
                    continue;
                }
            };
            make(
                hostnames.clone(),
                path,
                &p.backend,
                &format!("{pat}.backend"),
                &mut f,
            );
        }
    }
    if let Some(b) = &ing.default_backend {
        make(
            Vec::new(),
            PathMatcher::prefix("/"),
            b,
            "spec.defaultBackend",
            &mut f,
        );
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
        .resolve_port(&id.namespace, name, port.as_ref(), "TCP");
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
