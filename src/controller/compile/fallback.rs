//! A rule's `fallbackBackendRef` and `errorResponses`: the other backend a rule sends a request
//! to when its own has no endpoint, and the error-page backend whose answer replaces an
//! upstream's error (ingress-nginx's `default-backend` and `custom-http-errors`).

use crate::api::{self, LocalBackendRef};
use crate::model::{BackendAt, ErrorResponses, L4Protocol, ObjectRef, UpstreamProtocol};

use super::fields::{self, Findings};
use super::route::{Env, backend_ref, warning};
use crate::model::WeightedBackend;

/// The most statuses one `errorResponses` lists (as its CRD schema).
const MAX_STATUSES: usize = 200;

/// `fallbackBackendRef`: its backend, or `None` (a finding says why; an unresolved one is a
/// warning, and the rule's requests get 503 as they would without it).
pub(super) fn fallback_backend(
    route: &ObjectRef,
    r: &LocalBackendRef,
    at: &str,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<BackendAt> {
    let at = format!("{at}.fallbackBackendRef");
    let consequence = "requests that find the rule's backend without endpoints get 503";
    local_backend(route, r, &at, consequence, env, f)
}

/// `errorResponses`: the statuses (400-599, sorted) and the backend asked, or `None` (a
/// finding says why; an unresolved backend is a warning, and the upstream's answers are sent
/// as they are).
pub(super) fn error_responses(
    route: &ObjectRef,
    e: &api::ErrorResponses,
    at: &str,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Box<ErrorResponses>> {
    let at = format!("{at}.errorResponses");
    let mut statuses = Vec::with_capacity(e.statuses.len());
    if e.statuses.is_empty() || e.statuses.len() > MAX_STATUSES {
        f.invalid(
            format!("{at}.statuses"),
            format!("list 1 to {MAX_STATUSES} statuses"),
        );
    }
    for (i, s) in e.statuses.iter().enumerate() {
        if !(400..=599).contains(s) {
            f.invalid(
                format!("{at}.statuses[{i}]"),
                format!("{s} is not an error status (400-599)"),
            );
        } else if statuses.contains(s) {
            f.invalid(
                format!("{at}.statuses[{i}]"),
                format!("{s} is listed twice"),
            );
        } else {
            statuses.push(*s);
        }
    }
    statuses.sort_unstable();
    let consequence = "the upstream's error answers are sent as they are";
    let backend = local_backend(
        route,
        &e.backend_ref,
        &format!("{at}.backendRef"),
        consequence,
        env,
        f,
    )?;
    Some(Box::new(ErrorResponses { statuses, backend }))
}

/// One backend in the Route's namespace, resolved as a backendRef is; an HTTP one only.
/// Unresolved: a warning that ends with `consequence`, and `None`.
fn local_backend(
    route: &ObjectRef,
    r: &LocalBackendRef,
    at: &str,
    consequence: &str,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<BackendAt> {
    let as_ref = api::BackendRef {
        name: r.name.clone(),
        kind: r.kind.clone(),
        port: r.port,
        ..api::BackendRef::default()
    };
    let unresolved = |field: String, reason, message: String, f: &mut Findings<'_>| {
        f.push(warning(
            route,
            field,
            reason,
            format!("{message}: {consequence}"),
        ));
        None
    };
    let index = match backend_ref(route, &as_ref, &at, L4Protocol::Tcp, env, f)? {
        Ok(WeightedBackend {
            backend: Some(index),
            ..
        }) => index,
        Ok(_) => return None,
        Err(u) => return unresolved(u.field, u.reason, u.message, f),
    };
    let targets = env.targets.borrow();
    let backend = targets.backend(index);
    if let UpstreamProtocol::Tcp | UpstreamProtocol::Udp = backend.protocol {
        let message = format!(
            "{} speaks {}; an HTTP rule sends only to a Backend with protocol HTTP1, H2C or HTTP2",
            backend.id,
            fields::wire_name(&backend.protocol)
        );
        return unresolved(
            format!("{at}.name"),
            crate::model::Reason::InvalidKind,
            message,
            f,
        );
    }
    Some(BackendAt {
        index,
        label: backend.label.clone(),
    })
}
