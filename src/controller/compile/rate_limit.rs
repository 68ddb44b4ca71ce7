//! RateLimitPolicy → policies the proxy applies, attached to the rules they target.
//!
//! A policy is checked on its own first (a bad one keeps its last accepted version, like a
//! Route); then every accepted policy is attached to its target's rules, oldest first. A target
//! that is not served is a warning (`ResolvedRefs=False`), and policies that apply to the same
//! requests but disagree are reported as conflicts, each saying which side wins.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::api::{self, RateLimitPolicySpec};
use crate::controller::names;
use crate::controller::snapshot::{Obj, Snapshot};
use crate::model::{
    Algorithm, Cidr, ConcurrencyLimit, Diagnostic, FailureMode, KeyPart, Kind, Limit, LimitKey,
    MissingHeader, ObjectRef, RateLimitPolicy, Reason, Rule, Scope, Severity,
};

use super::CompileOptions;
use super::fields::{self, Findings};

/// Most limits in one policy.
pub const MAX_LIMITS: usize = 16;
/// Largest `rate` and `burst`.
pub const MAX_RATE: u32 = 1_000_000_000;
/// Fastest limit, in requests per second per key (the token bucket's interval is kept in
/// whole nanoseconds; at this speed that rounding costs at most 0.1%).
pub const MAX_RATE_PER_SECOND: u64 = 1_000_000;
/// Longest `per`.
pub const MAX_PER: Duration = Duration::from_secs(24 * 3600);
/// Default and largest `maxKeys` of a Local limit.
pub const DEFAULT_MAX_KEYS: u32 = 100_000;
/// Largest `maxKeys`.
pub const MAX_MAX_KEYS: u32 = 10_000_000;

/// Compiles one policy, or `None` if it is rejected (findings say why).
pub fn compile_policy(
    obj: &Obj<RateLimitPolicySpec>,
    opts: &CompileOptions,
    out: &mut Vec<Diagnostic>,
) -> Option<RateLimitPolicy> {
    let spec = &obj.spec;
    let id = &obj.meta.id;
    let mut f = Findings::new(id, out);
    target_ref(&spec.target_ref, &mut f);

    if spec.limits.is_empty() && spec.concurrency.is_empty() {
        f.invalid(
            "spec.limits",
            "a policy needs at least one limit (or concurrency limit)",
        );
    }
    if spec.limits.len() > MAX_LIMITS {
        f.invalid(
            "spec.limits",
            format!(
                "{} limits is more than the {MAX_LIMITS} allowed",
                spec.limits.len()
            ),
        );
    }
    let mut names = BTreeSet::new();
    let mut limits = Vec::new();
    for (i, l) in spec.limits.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        let name = match &l.name {
            Some(n) => n.clone(),
            None if spec.limits.len() == 1 => id.name.to_string(),
            None => format!("{}-{i}", id.name),
        };
        if let Err(e) = names::dns_label(&name) {
            f.invalid(format!("{at}.name"), e);
        } else if !names.insert(name.clone()) {
            f.invalid(
                format!("{at}.name"),
                format!("another limit is already named {name:?}"),
            );
        }
        if let Some(limit) = limit(l, name, &at, opts, &mut f) {
            limits.push(limit);
        }
    }

    let concurrency = concurrency_limits(spec, &mut names, &mut f);

    let failure_mode = match spec.failure_mode {
        None | Some(api::FailureMode::Open) => FailureMode::Open,
        Some(api::FailureMode::Closed) => FailureMode::Closed,
    };
    if spec.failure_mode.is_some() && !limits.iter().any(|l| l.scope == Scope::Global) {
        f.push(warning(
            id,
            "spec.failureMode",
            Reason::Invalid,
            "failureMode applies to Global limits only, and this policy has none",
        ));
    }
    let code = spec
        .response
        .as_ref()
        .and_then(|r| r.status_code)
        .unwrap_or(429);
    let status = match StatusCode::from_u16(code) {
        Ok(s) if (400..=599).contains(&code) => s,
        _ => {
            f.invalid(
                "spec.response.statusCode",
                format!("{code} must be an HTTP status from 400 to 599"),
            );
            StatusCode::TOO_MANY_REQUESTS
        }
    };
    f.ok().then(|| RateLimitPolicy {
        id: id.clone(),
        label: id.key().into(),
        limits,
        concurrency,
        failure_mode,
        status,
        created: obj.meta.created,
    })
}

/// Largest concurrency `max`.
pub const MAX_CONCURRENCY: u32 = 1_000_000;

/// `spec.concurrency`: names unique among the policy's limits, a key, `max`, exemptions.
fn concurrency_limits(
    spec: &RateLimitPolicySpec,
    names: &mut BTreeSet<String>,
    f: &mut Findings<'_>,
) -> Vec<ConcurrencyLimit> {
    let id_name = f.id().name.clone();
    let mut out = Vec::new();
    if spec.concurrency.len() > MAX_LIMITS {
        f.invalid(
            "spec.concurrency",
            format!(
                "{} concurrency limits is more than the {MAX_LIMITS} allowed",
                spec.concurrency.len()
            ),
        );
    }
    for (i, c) in spec.concurrency.iter().enumerate() {
        let at = format!("spec.concurrency[{i}]");
        let name = match &c.name {
            Some(n) => n.clone(),
            None if spec.concurrency.len() == 1 => format!("{id_name}-concurrency"),
            None => format!("{id_name}-concurrency-{i}"),
        };
        if let Err(e) = names::dns_label(&name) {
            f.invalid(format!("{at}.name"), e);
        } else if !names.insert(name.clone()) {
            f.invalid(
                format!("{at}.name"),
                format!("another limit is already named {name:?}"),
            );
        }
        if c.max == 0 || c.max > MAX_CONCURRENCY {
            f.invalid(
                format!("{at}.max"),
                format!("{} must be from 1 to {MAX_CONCURRENCY}", c.max),
            );
        }
        let key = match &c.key {
            Some(k) => key(k, &format!("{at}.key"), f),
            None => {
                f.invalid(
                    format!("{at}.key"),
                    "a limit needs a key: clientIP, header or none",
                );
                None
            }
        };
        let exempt = exempt_clients(&c.exempt_clients, &format!("{at}.exemptClients"), f);
        if let Some(key) = key {
            out.push(ConcurrencyLimit {
                name: Arc::from(name),
                key,
                max: c.max,
                exempt,
            });
        }
    }
    out
}

fn target_ref(t: &api::PolicyTargetRef, f: &mut Findings<'_>) {
    match t.kind.as_str() {
        "Route" => {}
        "Ingress" | "HTTPRoute" | "Backend" => f.not_supported(
            "spec.targetRef.kind",
            &format!("a policy on kind {} (only Route)", t.kind),
        ),
        other => f.invalid("spec.targetRef.kind", format!("{other:?} must be Route")),
    }
    if let Err(e) = names::dns_subdomain(&t.name) {
        f.invalid("spec.targetRef.name", e);
    }
    if let Some(rule) = &t.rule
        && let Err(e) = names::dns_label(rule)
    {
        f.invalid("spec.targetRef.rule", e);
    }
}

fn limit(
    l: &api::RateLimit,
    name: String,
    at: &str,
    opts: &CompileOptions,
    f: &mut Findings<'_>,
) -> Option<Limit> {
    let ok_before = f.ok();
    let key = match &l.key {
        Some(k) => key(k, &format!("{at}.key"), f),
        None => {
            f.invalid(
                format!("{at}.key"),
                "a limit needs a key: clientIP, header or none",
            );
            None
        }
    };
    if l.rate == 0 || l.rate > MAX_RATE {
        f.invalid(
            format!("{at}.rate"),
            format!("{} must be from 1 to {MAX_RATE}", l.rate),
        );
    }
    let per = l.per.0;
    if per < Duration::from_secs(1) || per > MAX_PER || per.subsec_nanos() != 0 {
        f.invalid(
            format!("{at}.per"),
            format!(
                "{} must be whole seconds from 1s to 24h (the RateLimit headers count in seconds)",
                l.per
            ),
        );
    } else if u64::from(l.rate) > MAX_RATE_PER_SECOND * per.as_secs() {
        f.invalid(
            format!("{at}.rate"),
            format!("more than {MAX_RATE_PER_SECOND} requests per second per key is not supported"),
        );
    }
    let algorithm = match l.algorithm.unwrap_or(api::RateLimitAlgorithm::TokenBucket) {
        api::RateLimitAlgorithm::TokenBucket => {
            let burst = l.burst.unwrap_or(l.rate);
            if burst == 0 || burst > MAX_RATE {
                f.invalid(
                    format!("{at}.burst"),
                    format!("{burst} must be from 1 to {MAX_RATE}"),
                );
            }
            Algorithm::TokenBucket { burst }
        }
        api::RateLimitAlgorithm::SlidingWindow => {
            if l.burst.is_some() {
                f.invalid(
                    format!("{at}.burst"),
                    "burst is for TokenBucket only (a SlidingWindow allows rate per window)",
                );
            }
            Algorithm::SlidingWindow
        }
    };
    let scope = match l.scope.unwrap_or(api::RateLimitScope::Local) {
        api::RateLimitScope::Local => Scope::Local,
        api::RateLimitScope::Global => {
            if !opts.global_rate_limits {
                f.invalid(
                    format!("{at}.scope"),
                    "a Global limit needs Redis: run the gateway with --redis-url",
                );
            }
            Scope::Global
        }
    };
    let max_keys = match (scope, l.max_keys) {
        (Scope::Global, Some(_)) => {
            f.invalid(
                format!("{at}.maxKeys"),
                "maxKeys is for Local limits only (Redis keys expire on their own)",
            );
            None
        }
        (Scope::Global, None) => None,
        (Scope::Local, Some(n)) if n == 0 || n > MAX_MAX_KEYS => {
            f.invalid(
                format!("{at}.maxKeys"),
                format!("{n} must be from 1 to {MAX_MAX_KEYS}"),
            );
            None
        }
        (Scope::Local, n) => Some(n.unwrap_or(DEFAULT_MAX_KEYS)),
    };
    let exempt = exempt_clients(&l.exempt_clients, &format!("{at}.exemptClients"), f);
    let key = key?;
    (ok_before && f.ok()).then(|| Limit {
        name: Arc::from(name),
        key,
        algorithm,
        rate: l.rate,
        per,
        scope,
        max_keys,
        exempt,
    })
}

/// `exemptClients`: CIDRs or addresses.
pub(super) fn exempt_clients(list: &[String], at: &str, f: &mut Findings<'_>) -> Vec<Cidr> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match s.parse::<Cidr>() {
            Ok(c) => out.push(c),
            Err(e) => f.invalid(format!("{at}[{i}]"), e.to_string()),
        }
    }
    out
}

fn key(k: &api::RateLimitKey, at: &str, f: &mut Findings<'_>) -> Option<LimitKey> {
    let mut parts = Vec::new();
    if k.client_ip.is_some() {
        parts.push(KeyPart::ClientIp);
    }
    if let Some(h) = &k.header {
        match fields::header_name(h) {
            Ok(name) => parts.push(KeyPart::Header(name)),
            Err(e) => {
                f.invalid(format!("{at}.header"), e);
                return None;
            }
        }
    }
    if let Some(c) = &k.jwt_claim {
        if c.is_empty() {
            f.invalid(format!("{at}.jwtClaim"), "name a claim, e.g. sub");
            return None;
        }
        parts.push(KeyPart::JwtClaim(Arc::from(c.as_str())));
    }
    if k.none.is_some() && !parts.is_empty() {
        f.invalid(
            at,
            "none (one bucket for everyone) cannot be combined with clientIP, header or jwtClaim",
        );
        return None;
    }
    if k.none.is_none() && parts.is_empty() {
        f.invalid(at, "set one of clientIP, header, jwtClaim or none");
        return None;
    }
    let keyed = k.header.is_some() || k.jwt_claim.is_some();
    let missing_header = match (keyed, k.missing_header) {
        (true, m) => Some(match m.unwrap_or(api::MissingHeader::SharedBucket) {
            api::MissingHeader::SharedBucket => MissingHeader::SharedBucket,
            api::MissingHeader::NoLimit => MissingHeader::NoLimit,
            api::MissingHeader::ClientIp if k.client_ip.is_some() => {
                f.invalid(
                    format!("{at}.missingHeader"),
                    "ClientIP: the key already has clientIP (use SharedBucket)",
                );
                return None;
            }
            api::MissingHeader::ClientIp => MissingHeader::ClientIp,
        }),
        (false, Some(_)) => {
            f.invalid(
                format!("{at}.missingHeader"),
                "missingHeader is for a header or jwtClaim key only",
            );
            return None;
        }
        (false, None) => None,
    };
    Some(LimitKey {
        parts,
        missing_header,
    })
}

/// Attaches every accepted policy to the rules it targets (oldest policy first) and returns the
/// policies that apply to at least one rule, in that order; rules name them by index.
pub fn attach(
    mut policies: Vec<(RateLimitPolicy, api::PolicyTargetRef)>,
    snap: &Snapshot,
    rules: &mut [Arc<Rule>],
    out: &mut Vec<Diagnostic>,
) -> Vec<RateLimitPolicy> {
    policies.sort_by(|(a, _), (b, _)| (a.created, &a.id).cmp(&(b.created, &b.id)));
    let mut attached = Vec::new();
    for (policy, target) in policies {
        // An Ingress's own limits (its limit-rps annotations) apply to the Ingress's rules.
        let kind = match policy.id.kind {
            Kind::Ingress => Kind::Ingress,
            _ => Kind::Route,
        };
        let route = ObjectRef::new(kind, policy.id.namespace.clone(), target.name.clone());
        let index = attached.len();
        let mut found = false;
        let claims: Vec<usize> = (policy.limits.iter().enumerate())
            .filter(|(_, l)| {
                l.key
                    .parts
                    .iter()
                    .any(|p| matches!(p, KeyPart::JwtClaim(_)))
            })
            .map(|(j, _)| j)
            .collect();
        for rule in rules.iter_mut().filter(|r| r.route == route) {
            if target.rule.is_none() || rule.name == target.rule {
                Arc::make_mut(rule).rate_limits.push(index);
                found = true;
                let verifies = rule.access.as_ref().is_some_and(|a| a.jwt.is_some());
                for &j in claims.iter().filter(|_| !verifies) {
                    out.push(warning(
                        &policy.id,
                        format!("spec.limits[{j}].key.jwtClaim"),
                        Reason::Invalid,
                        format!(
                            "{} has no JWT authentication, so its requests carry no verified claims: they follow missingHeader (default: one shared bucket)",
                            rule.label
                        ),
                    ));
                }
            }
        }
        if found {
            attached.push(policy);
            continue;
        }
        let served = rules.iter().any(|r| r.route == route);
        let (field, message) = match &target.rule {
            Some(name) if served => (
                "spec.targetRef.rule",
                format!("{route} has no rule named {name:?}"),
            ),
            _ if snap.routes.contains_key(&route) => (
                "spec.targetRef.name",
                format!(
                    "{route} is not served (see its own status); the policy applies to nothing"
                ),
            ),
            _ => (
                "spec.targetRef.name",
                format!("{route} not found; the policy applies to nothing"),
            ),
        };
        out.push(warning(&policy.id, field, Reason::TargetNotFound, message));
    }
    conflicts(&attached, rules, out);
    attached
}

/// Reports, on the newer policy, what two policies that apply to the same requests disagree on.
fn conflicts(policies: &[RateLimitPolicy], rules: &[Arc<Rule>], out: &mut Vec<Diagnostic>) {
    let mut pairs = BTreeSet::new();
    for rule in rules {
        for (i, &older) in rule.rate_limits.iter().enumerate() {
            for &newer in &rule.rate_limits[i + 1..] {
                pairs.insert((older, newer));
            }
        }
    }
    for (older, newer) in pairs {
        let (a, b) = (&policies[older], &policies[newer]);
        // An Ingress's own policies (limit-rps and global-rate-limit) differ on purpose.
        if a.id == b.id {
            continue;
        }
        for (j, limit) in b.limits.iter().enumerate() {
            if a.limits.iter().any(|l| l.name == limit.name) {
                out.push(warning(
                    &b.id,
                    format!("spec.limits[{j}].name"),
                    Reason::Conflicted,
                    format!(
                        "{} applies to the same requests with a limit of the same name; both apply, and the RateLimit headers name {:?} twice",
                        a.id, limit.name
                    ),
                ));
            }
        }
        if a.status != b.status {
            out.push(warning(
                &b.id,
                "spec.response.statusCode",
                Reason::Conflicted,
                format!(
                    "{} applies to the same requests with status {}; a request both refuse gets the older policy's",
                    a.id,
                    a.status.as_u16()
                ),
            ));
        }
        if a.has_global() && b.has_global() && a.failure_mode != b.failure_mode {
            out.push(warning(
                &b.id,
                "spec.failureMode",
                Reason::Conflicted,
                format!(
                    "{} applies to the same requests with failureMode {:?}; while Redis is down, Closed wins",
                    a.id, a.failure_mode
                ),
            ));
        }
    }
}

/// A finding that does not reject the policy.
fn warning(
    id: &ObjectRef,
    field: impl Into<String>,
    reason: Reason,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(id, field, reason, message)
    }
}
