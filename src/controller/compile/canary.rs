//! Service canary annotations → which Services shadow which primary, and how.

use std::collections::BTreeMap;

use http::HeaderName;

use crate::api::annotations::{CANARY_COOKIE, CANARY_HEADER, CANARY_OF, CANARY_WEIGHT};
use crate::controller::objects::ServiceInfo;
use crate::controller::snapshot::Obj;
use crate::model::{Diagnostic, ObjectRef, Reason, Severity};

/// One canary Service of a primary, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryService {
    /// The canary Service's name (same namespace as the primary).
    pub service: String,
    /// Percent of the primary's traffic (0 when unset, invalid, or the total is over 100).
    pub weight: u32,
    /// Header override.
    pub header: Option<HeaderName>,
    /// Cookie override.
    pub cookie: Option<String>,
}

/// Canaries by primary Service (namespace, name), in canary-name order.
pub type CanaryIndex = BTreeMap<(String, String), Vec<CanaryService>>;

fn field(annotation: &str) -> String {
    format!("metadata.annotations[{annotation}]")
}

fn warning(id: &ObjectRef, annotation: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(id, field(annotation), Reason::Invalid, message)
    }
}

/// Reads every Service's canary annotations. Invalid values are ignored with a warning; weights
/// that add up to more than 100 for one primary are an error on each of its canaries, and that
/// primary's weights are all ignored (header and cookie overrides still work).
pub fn index(
    services: &BTreeMap<ObjectRef, Obj<ServiceInfo>>,
    out: &mut Vec<Diagnostic>,
) -> CanaryIndex {
    let mut index = CanaryIndex::new();
    for (id, svc) in services {
        let a = &svc.spec.canary;
        let Some(primary) = a.of.as_deref().map(str::trim) else {
            for (value, name) in [
                (&a.weight, CANARY_WEIGHT),
                (&a.header, CANARY_HEADER),
                (&a.cookie, CANARY_COOKIE),
            ] {
                if value.is_some() {
                    out.push(warning(
                        id,
                        name,
                        format!("ignored: the Service has no {CANARY_OF} annotation"),
                    ));
                }
            }
            continue;
        };
        if primary == &*id.name {
            out.push(warning(
                id,
                CANARY_OF,
                "ignored: a Service cannot be a canary of itself".into(),
            ));
            continue;
        }
        if let Err(e) = crate::controller::names::dns_label(primary) {
            out.push(warning(id, CANARY_OF, format!("ignored: {e}")));
            continue;
        }
        let primary_id = ObjectRef::new(id.kind, id.namespace.clone(), primary);
        if !services.contains_key(&primary_id) {
            out.push(warning(
                id,
                CANARY_OF,
                format!("the primary Service {primary_id} does not exist (yet)"),
            ));
        }
        let weight = match a.weight.as_deref().map(str::trim) {
            None => 0,
            Some(raw) => match raw.parse::<u32>() {
                Ok(w) if w <= 100 => w,
                Ok(w) => {
                    out.push(Diagnostic::error(
                        id,
                        field(CANARY_WEIGHT),
                        Reason::Invalid,
                        format!("{w} is more than 100 percent; the weight is ignored"),
                    ));
                    0
                }
                Err(_) => {
                    out.push(warning(
                        id,
                        CANARY_WEIGHT,
                        format!("ignored: {raw:?} is not a whole percentage from 0 to 100"),
                    ));
                    0
                }
            },
        };
        let header =
            a.header.as_deref().map(str::trim).and_then(|raw| {
                match HeaderName::from_bytes(raw.as_bytes()) {
                    Ok(h) if !raw.is_empty() => Some(h),
                    _ => {
                        out.push(warning(
                            id,
                            CANARY_HEADER,
                            format!("ignored: {raw:?} is not a valid header name"),
                        ));
                        None
                    }
                }
            });
        let cookie = a.cookie.as_deref().map(str::trim).and_then(|raw| {
            if is_cookie_name(raw) {
                Some(raw.to_owned())
            } else {
                out.push(warning(
                    id,
                    CANARY_COOKIE,
                    format!("ignored: {raw:?} is not a valid cookie name"),
                ));
                None
            }
        });
        index
            .entry((id.namespace.to_string(), primary.to_owned()))
            .or_default()
            .push(CanaryService {
                service: id.name.to_string(),
                weight,
                header,
                cookie,
            });
    }
    for ((ns, primary), canaries) in index.iter_mut() {
        let total: u32 = canaries.iter().map(|c| c.weight).sum();
        if total > 100 {
            for c in canaries.iter_mut() {
                out.push(Diagnostic::error(
                    &ObjectRef::new(crate::model::Kind::Service, ns.clone(), c.service.clone()),
                    field(CANARY_WEIGHT),
                    Reason::Invalid,
                    format!(
                        "the canary weights of Service {ns}/{primary} add up to {total}, more than 100; all of them are ignored"
                    ),
                ));
                c.weight = 0;
            }
        }
    }
    index
}

/// An RFC 6265 cookie name: a token.
pub(super) fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}
