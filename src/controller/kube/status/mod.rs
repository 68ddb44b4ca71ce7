//! Status: what every Route, Backend and RateLimitPolicy is told about itself.
//!
//! [`desired`] is a pure function of a snapshot and what the compiler made of it; the
//! [`writer`] compares it with what objects carry and patches only the differences (server-side
//! apply, one field manager), and only on the leader.

pub mod conditions;
pub mod writer;

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::controller::Compiled;
use crate::controller::dns::{Standing, State};
use crate::controller::snapshot::{Accepted, Snapshot};
use crate::model::{Diagnostic, DnsQuery, Kind, ObjectRef, RoutingTable, ServiceKey, Severity};

use conditions::*;

/// One condition to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// `Accepted`, `ResolvedRefs` or `Programmed`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// One-word reason.
    pub reason: &'static str,
    /// For a person; names the field at fault. Borrowed for the fixed messages of a healthy
    /// object: at 10,000 Routes, three `String`s each were a third of the desired statuses.
    pub message: Cow<'static, str>,
}

/// The status one object should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The generation the conditions describe.
    pub generation: Option<i64>,
    /// The conditions.
    pub conditions: Vec<Cond>,
    /// A Backend's endpoints, as its status counts them (boxed: `None` for every other kind,
    /// which is most objects).
    pub backend: Option<Box<BackendEndpoints>>,
}

/// Where a Backend's `status.endpoints` is counted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendEndpoints {
    /// The Service whose EndpointSlices it follows (`None`: static endpoints or DNS).
    pub service: Option<ServiceKey>,
    /// The static endpoint count.
    pub static_endpoints: Option<u32>,
    /// The DNS query its endpoints follow (its standing adds the `DNSResolved` condition and
    /// the endpoint counts when the status is written).
    pub dns: Option<DnsQuery>,
}

impl Desired {
    /// A Backend's Service, if its endpoints come from one.
    pub fn service(&self) -> Option<&ServiceKey> {
        self.backend.as_ref()?.service.as_ref()
    }

    /// A Backend's static endpoint count.
    pub fn static_endpoints(&self) -> Option<u32> {
        self.backend.as_ref()?.static_endpoints
    }

    /// A Backend's DNS query, if its endpoints come from one.
    pub fn dns(&self) -> Option<&DnsQuery> {
        self.backend.as_ref()?.dns.as_ref()
    }
}

/// The status every object of ours in `snap` should carry after `compiled`.
pub fn desired(snap: &Snapshot, compiled: &Compiled) -> BTreeMap<ObjectRef, Desired> {
    desired_of(snap, &compiled.table, &compiled.accepted)
}

/// [`desired`] from a compile's parts: the table (published already, so that status is worked
/// out after traffic has the change) and the accepted versions.
pub fn desired_of(
    snap: &Snapshot,
    table: &RoutingTable,
    accepted: &Accepted,
) -> BTreeMap<ObjectRef, Desired> {
    let compiled = Parts { table, accepted };
    let compiled = &compiled;
    let mut by_object: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for d in &compiled.table.diagnostics {
        if let Some(o) = &d.object {
            by_object.entry(o).or_default().push(d);
        }
    }
    let mut ids: Vec<(&ObjectRef, Option<i64>, bool)> =
        Vec::with_capacity(snap.routes.len() + snap.backends.len() + snap.policies.len());
    // Walked beside the snapshot's Routes, whose identities it shares (compared by address):
    // a lookup per Route compared ~13 names by their bytes.
    let mut accepted_routes = compiled.accepted.routes.iter().peekable();
    for (id, o) in snap.routes.iter() {
        while accepted_routes.next_if(|(a, _)| *a < id).is_some() {}
        let programmed = accepted_routes
            .next_if(|(a, _)| *a == id)
            .is_some_and(|(_, a)| a.same_spec(o));
        ids.push((id, o.meta.generation, programmed));
    }
    for (id, o) in &snap.backends {
        let programmed = compiled
            .accepted
            .backends
            .get(id)
            .is_some_and(|a| a.same_spec(o));
        ids.push((id, o.meta.generation, programmed));
    }
    for (id, o) in &snap.policies {
        // Programmed: this version is accepted and applies to at least one rule.
        let programmed = compiled
            .accepted
            .policies
            .get(id)
            .is_some_and(|a| a.same_spec(o))
            && applies(compiled, id);
        ids.push((id, o.meta.generation, programmed));
    }
    // Objects that could not be read at all are ours too.
    for d in &snap.problems {
        if let Some(id) = &d.object
            && matches!(id.kind, Kind::Route | Kind::Backend | Kind::RateLimitPolicy)
            && !ids.iter().any(|(i, _, _)| *i == id)
        {
            ids.push((id, None, false));
        }
    }
    // Gathered, then built into the map at once: inserted one by one in order, a B-tree's
    // nodes are left half full.
    let mut out = Vec::with_capacity(ids.len());
    for (id, generation, programmed) in ids {
        let diags = by_object.get(id).map(Vec::as_slice).unwrap_or_default();
        if diags.iter().any(|d| d.severity == Severity::Ignored) {
            continue; // another ingress class: not ours to report on
        }
        let invalid: Vec<&Diagnostic> = diags
            .iter()
            .copied()
            .filter(|d| d.is_error() && !d.is_unresolved_ref())
            .collect();
        let unresolved: Vec<&Diagnostic> = diags
            .iter()
            .copied()
            .filter(|d| d.is_unresolved_ref())
            .collect();
        let mut conditions = Vec::with_capacity(3);
        conditions.push(condition(ACCEPTED, REASON_ACCEPTED, "accepted", &invalid));
        conditions.push(condition(
            RESOLVED_REFS,
            REASON_RESOLVED,
            "every reference resolves",
            &unresolved,
        ));
        // Read only when this version is not the one serving.
        let serving_older = !programmed
            && match id.kind {
                Kind::Route => compiled.accepted.routes.contains_key(id),
                Kind::Backend => compiled.accepted.backends.contains_key(id),
                Kind::RateLimitPolicy => {
                    compiled.accepted.policies.contains_key(id) && applies(compiled, id)
                }
                _ => false,
            };
        conditions.push(match (programmed, serving_older) {
            (true, _) => Cond {
                type_: PROGRAMMED,
                status: true,
                reason: REASON_PROGRAMMED,
                message: Cow::Borrowed("this version is serving"),
            },
            (false, true) => Cond {
                type_: PROGRAMMED,
                status: false,
                reason: REASON_LAST_ACCEPTED_SERVING,
                message: Cow::Borrowed(
                    "the last accepted version keeps serving until this one is fixed",
                ),
            },
            (false, false) => Cond {
                type_: PROGRAMMED,
                status: false,
                reason: REASON_NOT_PROGRAMMED,
                message: Cow::Borrowed("not in the routing table"),
            },
        });
        let backend = (id.kind == Kind::Backend)
            .then(|| compiled.table.backends.iter().find(|b| &b.id == id))
            .flatten();
        out.push((
            id.clone(),
            Desired {
                generation,
                conditions,
                backend: backend.map(|b| {
                    Box::new(BackendEndpoints {
                        service: b.service.clone(),
                        static_endpoints: (b.service.is_none() && b.dns.is_none())
                            .then_some(b.endpoints.len() as u32),
                        dns: b.dns.clone(),
                    })
                }),
            },
        ));
    }
    out.into_iter().collect()
}

/// `desired` with the `DNSResolved` condition of a Backend whose DNS query stands as `standing`.
pub fn with_dns(desired: &Desired, standing: &Standing) -> Desired {
    let mut d = desired.clone();
    d.conditions.push(dns_condition(standing));
    d
}

/// `DNSResolved`: True while lookups answer (with records, or with none: the DNS's own word),
/// False while they fail (a stale answer serving, or nothing left to serve).
fn dns_condition(standing: &Standing) -> Cond {
    let (status, reason) = match standing.state {
        State::Resolved => (true, REASON_DNS_ANSWERED),
        State::Empty => (true, REASON_DNS_NO_RECORDS),
        State::Stale(_) => (false, REASON_DNS_STALE),
        State::Failed(_) => (false, REASON_DNS_FAILED),
    };
    let message = match &standing.note {
        Some(note) => note.clone(),
        None => format!("{} endpoints from the last answer", standing.endpoints),
    };
    Cond {
        type_: DNS_RESOLVED,
        status,
        reason,
        message: Cow::Owned(message.chars().take(MAX_MESSAGE).collect()),
    }
}

/// Whether a version of policy `id` applies to a rule of the table.
/// What [`desired_of`] reads of a compile.
struct Parts<'a> {
    table: &'a RoutingTable,
    accepted: &'a Accepted,
}

fn applies(compiled: &Parts<'_>, id: &ObjectRef) -> bool {
    compiled.table.rate_limits.iter().any(|p| &p.id == id)
}

/// A condition that is True unless `problems` has something, then False with the first reason
/// and every problem's field and message.
fn condition(
    type_: &'static str,
    ok_reason: &'static str,
    ok: &'static str,
    problems: &[&Diagnostic],
) -> Cond {
    match problems.first() {
        None => Cond {
            type_,
            status: true,
            reason: ok_reason,
            message: Cow::Borrowed(ok),
        },
        Some(first) => {
            let mut message = String::new();
            for d in problems {
                let line = if d.field.is_empty() {
                    d.message.clone()
                } else {
                    format!("{}: {}", d.field, d.message)
                };
                if !message.is_empty() {
                    message.push_str("; ");
                }
                if message.len() + line.len() > MAX_MESSAGE {
                    message.push('…');
                    break;
                }
                message.push_str(&line);
            }
            Cond {
                type_,
                status: false,
                reason: first.reason.as_str(),
                message: Cow::Owned(message),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendRef, BackendSpec, RouteRule, RouteSpec};
    use crate::controller::snapshot::{Meta, Obj};
    use crate::controller::{CompileOptions, compile};

    fn route(name: &str, backend: &str, generation: i64) -> Obj<RouteSpec> {
        let mut meta = Meta::new(ObjectRef::new(Kind::Route, "shop", name));
        meta.generation = Some(generation);
        Obj {
            meta,
            spec: std::sync::Arc::new(RouteSpec {
                rules: vec![RouteRule {
                    backend_refs: vec![BackendRef {
                        name: backend.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn snap(routes: Vec<Obj<RouteSpec>>) -> Snapshot {
        let backend = Obj {
            meta: Meta::new(ObjectRef::new(Kind::Backend, "shop", "api")),
            spec: std::sync::Arc::new(BackendSpec {
                endpoints: vec!["127.0.0.1:1".into()],
                ..Default::default()
            }),
        };
        Snapshot {
            routes: std::sync::Arc::new(
                routes.into_iter().map(|r| (r.meta.id.clone(), r)).collect(),
            ),
            backends: [(backend.meta.id.clone(), backend)].into(),
            ..Default::default()
        }
    }

    fn cond<'a>(d: &'a Desired, t: &str) -> &'a Cond {
        d.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_good_route_is_accepted_resolved_and_programmed() {
        let s = snap(vec![route("web", "api", 3)]);
        let out = desired(&s, &compile(&s, &CompileOptions::default()));
        let d = &out[&ObjectRef::new(Kind::Route, "shop", "web")];
        assert_eq!(d.generation, Some(3));
        assert!(d.conditions.iter().all(|c| c.status), "{d:?}");
        let b = &out[&ObjectRef::new(Kind::Backend, "shop", "api")];
        assert_eq!(b.static_endpoints(), Some(1));
    }

    #[test]
    fn a_missing_backend_is_resolved_refs_false_naming_the_field() {
        let s = snap(vec![route("web", "nope", 1)]);
        let out = desired(&s, &compile(&s, &CompileOptions::default()));
        let d = &out[&ObjectRef::new(Kind::Route, "shop", "web")];
        assert!(cond(d, ACCEPTED).status);
        let r = cond(d, RESOLVED_REFS);
        assert!(!r.status);
        assert_eq!(r.reason, "BackendNotFound");
        assert!(
            r.message.starts_with("spec.rules[0].backendRefs[0].name: "),
            "{}",
            r.message
        );
        // The Route serves (its rule answers 500), so this generation is programmed.
        assert!(cond(d, PROGRAMMED).status, "{d:?}");
    }

    #[test]
    fn an_unknown_backend_kind_is_resolved_refs_false_invalid_kind() {
        let mut r = route("web", "api", 1);
        std::sync::Arc::make_mut(&mut r.spec).rules[0].backend_refs[0].kind =
            Some("ConfigMap".into());
        let s = snap(vec![r]);
        let out = desired(&s, &compile(&s, &CompileOptions::default()));
        let d = &out[&ObjectRef::new(Kind::Route, "shop", "web")];
        assert!(cond(d, ACCEPTED).status, "{d:?}");
        let r = cond(d, RESOLVED_REFS);
        assert_eq!((r.status, r.reason), (false, "InvalidKind"));
        assert!(
            r.message.starts_with("spec.rules[0].backendRefs[0].kind: "),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_rule_without_backend_refs_is_accepted_with_resolved_refs() {
        let mut r = route("web", "api", 1);
        std::sync::Arc::make_mut(&mut r.spec).rules[0]
            .backend_refs
            .clear();
        let s = snap(vec![r]);
        let out = desired(&s, &compile(&s, &CompileOptions::default()));
        let d = &out[&ObjectRef::new(Kind::Route, "shop", "web")];
        assert!(d.conditions.iter().all(|c| c.status), "{d:?}");
    }

    #[test]
    fn a_broken_update_says_the_last_accepted_version_serves() {
        let first = snap(vec![route("web", "api", 1)]);
        let accepted = compile(&first, &CompileOptions::default()).accepted;
        let mut bad = route("web", "api", 2);
        std::sync::Arc::make_mut(&mut bad.spec).rules[0].backend_refs[0].weight = Some(5_000_000);
        let mut second = snap(vec![bad]);
        second.accepted = accepted;
        let out = desired(&second, &compile(&second, &CompileOptions::default()));
        let d = &out[&ObjectRef::new(Kind::Route, "shop", "web")];
        assert_eq!(d.generation, Some(2));
        let a = cond(d, ACCEPTED);
        assert!(!a.status);
        assert_eq!(a.reason, "Invalid");
        assert!(a.message.contains("spec.rules[0].backendRefs[0].weight"));
        assert_eq!(cond(d, PROGRAMMED).reason, REASON_LAST_ACCEPTED_SERVING);
    }
}
