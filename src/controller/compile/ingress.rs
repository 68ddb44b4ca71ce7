//! Ingress (`networking.k8s.io/v1`) → rules, for Ingresses of our class.

use crate::api::PolicyTargetRef;
use crate::controller::objects::{IngressBackendInfo, IngressInfo};
use crate::controller::snapshot::{Obj, Snapshot};
use crate::model::{Diagnostic, RateLimitPolicy, Reason, Rule, Severity, WeightedBackend};

use super::fields::Findings;
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
        // --watch-ingress-class: served, another controller's status left alone.
        (Some(class), _) | (None, Some(class)) if opts.watch_ingress_classes.contains(class) => {
            Ok(())
        }
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

/// What an Ingress compiles to: its rules, the rate limits its annotations set on them, and
/// its TLS passthrough Routes (`ssl-passthrough`).
pub type CompiledIngress = (
    Vec<Rule>,
    Vec<(RateLimitPolicy, PolicyTargetRef)>,
    Vec<crate::model::L4Route>,
);

/// Compiles one Ingress into its rules, or `None` if it is not ours or is rejected.
pub fn compile_ingress(
    obj: &Obj<IngressInfo>,
    snap: &Snapshot,
    env: &Env<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<CompiledIngress> {
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
    let is_ours = |i: &IngressInfo| ours(i, snap, env).is_ok();
    if t.canary.is_some() {
        // A canary serves through its main Ingress's rules: checked here, compiled there.
        super::ingress_canary::check_joins(obj, &snap.ingresses, is_ours, &mut f);
        // Its backends are checked; the main Ingress makes them, with its settings.
        let planned = super::ingress_translate::plan(ing, &t, &Default::default(), &mut f);
        for p in planned {
            for b in &p.backends {
                service_port(id, b.backend, &p.backend_at(), env, &mut f);
            }
        }
        return f.ok().then_some((Vec::new(), Vec::new(), Vec::new()));
    }
    if t.passthrough {
        let routes = passthrough(obj, env, &mut f);
        return f.ok().then_some((Vec::new(), Vec::new(), routes));
    }
    let canaries = super::ingress_canary::index(&id.namespace, &snap.ingresses, is_ours);
    let settings = super::targets::ServiceSettings {
        h2c: t.h2c,
        load_balancing: super::backend::load_balancing(t.load_balancer.as_ref(), &mut f),
        connect_timeout: t.connect_timeout,
        http2: t.proxy_ssl.as_ref().is_some_and(|p| p.http2),
        tls: t
            .proxy_ssl
            .as_ref()
            .map(|p| p.upstream_tls(&ing.annotations, &id.namespace, env, &mut f)),
        session_persistence: super::backend::session_persistence(t.load_balancer.as_ref(), &mut f),
    };
    // The Route compiler's view of the Ingress: its identity, no Route-level settings.
    let shell = Obj {
        meta: obj.meta.clone(),
        spec: std::sync::Arc::new(crate::api::RouteSpec::default()),
    };
    let mut rules: Vec<Rule> = Vec::new();
    let label: std::sync::Arc<str> = id.key().into();
    let default_port = default_backend_port(id, ing, &t, env, &mut f);
    let other_hosts = super::ingress_translate::hosts_of_others(
        id,
        snap.ingresses.values().filter(|o| is_ours(&o.spec)),
    );
    for mut p in super::ingress_translate::plan(ing, &t, &canaries, &mut f) {
        if p.at == super::ingress_translate::FROM_TO_WWW_AT
            && p.hostnames.iter().any(|h| other_hosts.contains(h))
        {
            continue;
        }
        let Some(resolved) = resolve(id, &p, &settings, env, &mut f) else {
            continue;
        };
        if let Some(r) = &mut p.rule.fallback_backend_ref {
            r.port = default_port;
        }
        if let Some(e) = &mut p.rule.error_responses {
            e.backend_ref.port = default_port;
        }
        if default_port.is_none() {
            p.rule.fallback_backend_ref = None;
            p.rule.error_responses = None;
        }
        let index = rules.len();
        let hostnames: std::sync::Arc<[String]> = std::mem::take(&mut p.hostnames).into();
        let compiled = super::route::compile_rule(
            &shell,
            index,
            &p.rule,
            &p.at,
            &hostnames,
            &label,
            env,
            &mut f,
            Some(resolved),
        );
        if let Some(mut r) = compiled {
            r.https_redirect = t.force_ssl_redirect;
            r.https_redirect_strips_slash = !t.preserve_trailing_slash;
            rules.push(r);
        }
    }
    if ing.rules.is_empty() && ing.default_backend.is_none() {
        f.invalid("spec", "an Ingress needs rules or a defaultBackend");
    }
    // limit-rps/limit-rpm, global-rate-limit: policies of the Ingress's own (one per answer
    // status), compiled as a RateLimitPolicy is.
    let mut policies = Vec::new();
    for mut spec in [t.rate_limit, t.global_rate_limit].into_iter().flatten() {
        spec.target_ref = PolicyTargetRef {
            kind: "Route".to_owned(),
            name: id.name.to_string(),
            rule: None,
        };
        let target = spec.target_ref.clone();
        let p = Obj {
            meta: obj.meta.clone(),
            spec: std::sync::Arc::new(spec),
        };
        let mut found = Vec::new();
        let compiled = super::rate_limit::compile_policy(&p, env.opts, &mut found);
        for d in found {
            f.push(d);
        }
        policies.push((compiled?, target));
    }
    f.ok().then_some((rules, policies, Vec::new()))
}

/// `ssl-passthrough`: the Ingress's TLS passthrough Routes, compiled as TLS Routes are.
fn passthrough(
    obj: &Obj<IngressInfo>,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Vec<crate::model::L4Route> {
    let id = &obj.meta.id;
    let mut out = Vec::new();
    for p in super::ingress_passthrough::plan(&obj.spec, f) {
        let Some((_, port)) = service_port(id, p.backend, &p.at, env, f) else {
            continue;
        };
        let Some(spec) = p.route(Some(port.port)) else {
            continue;
        };
        let route = Obj {
            meta: obj.meta.clone(),
            spec: std::sync::Arc::new(spec),
        };
        if let Some(r) = super::l4::compile_l4_route(&route, env, f) {
            out.push(r);
        }
    }
    out
}

/// `default-backend`: the Service's first port, as ingress-nginx takes it; a Service that does
/// not exist (or has no port) is a warning naming the annotation, and the rules are served
/// without it.
fn default_backend_port(
    id: &crate::model::ObjectRef,
    ing: &IngressInfo,
    t: &super::ingress_translate::Translation,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<u16> {
    let name = t.default_backend.as_deref()?;
    let port = env.targets.borrow().first_port(&id.namespace, name);
    if port.is_none()
        && let Some((key, _)) = super::ingress_translate::get(&ing.annotations, "default-backend")
    {
        let message = format!(
            "Service {}/{name} not found (or it has no port): requests whose Service has no \
             ready endpoint get 503{}",
            id.namespace,
            if t.custom_errors.is_empty() {
                ""
            } else {
                ", and custom-http-errors sends the upstream's answers as they are"
            }
        );
        f.push(Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(
                id,
                format!("metadata.annotations[{key}]"),
                Reason::ServiceNotFound,
                message,
            )
        });
    }
    port
}

/// The backends of planned rule `p`: `None` when its own backend does not resolve (an error)
/// or when it forwards only to a canary whose backend does not (the canary Ingress has the
/// error; the main Ingress's other rules serve).
fn resolve(
    id: &crate::model::ObjectRef,
    p: &super::ingress_translate::Planned<'_>,
    settings: &super::targets::ServiceSettings,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Vec<WeightedBackend>> {
    let mut out = Vec::new();
    for b in &p.backends {
        let resolved = match b.canary {
            None => ingress_backend(id, b.backend, &p.backend_at(), settings, env, f)?,
            Some(canary) => {
                let mut sink = Vec::new();
                let mut quiet = Findings::new(canary, &mut sink);
                match ingress_backend(canary, b.backend, "", settings, env, &mut quiet) {
                    Some(wb) => wb,
                    None => continue,
                }
            }
        };
        out.push(WeightedBackend {
            weight: b.weight.unwrap_or(1),
            ..resolved
        });
    }
    (!out.is_empty() || p.backends.is_empty()).then_some(out)
}

/// The backend of Ingress backend `b`, with the `settings` of the Ingress's annotations.
fn ingress_backend(
    id: &crate::model::ObjectRef,
    b: &IngressBackendInfo,
    at: &str,
    settings: &super::targets::ServiceSettings,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<WeightedBackend> {
    let (name, port) = service_port(id, b, at, env, f)?;
    // TLS without proxy-ssl-name: the Service's DNS name is sent and verified, as a Backend's.
    let own;
    let settings = match &settings.tls {
        Some(tls) if tls.server_name.is_none() => {
            own = super::targets::ServiceSettings {
                tls: Some(std::sync::Arc::new(crate::model::UpstreamTls {
                    server_name: Some(format!("{name}.{}.svc", id.namespace)),
                    ..(**tls).clone()
                })),
                ..settings.clone()
            };
            &own
        }
        _ => settings,
    };
    let mut targets = env.targets.borrow_mut();
    let idx = targets.service_with(&id.namespace, name, &port, settings);
    Some(targets.weighted(idx, 1))
}

/// The Service and port of Ingress backend `b`, or `None` (a finding says why).
fn service_port<'b>(
    id: &crate::model::ObjectRef,
    b: &'b IngressBackendInfo,
    at: &str,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<(&'b str, crate::controller::objects::ServicePortInfo)> {
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
        Ok(p) => Some((name, p)),
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
