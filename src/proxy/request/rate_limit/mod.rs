//! The rate-limit step of a request: every limit of every policy on the matched rule must
//! allow it. Local limits are decided first, in this replica (no I/O); if they all allow, one
//! Redis call decides the Global ones. A request refused anywhere is counted nowhere: the
//! Local limits that had let it through take it back, and the script writes nothing unless
//! every Global limit allows.
//!
//! Concurrency limits are asked before all of them: a request takes a place under each (a
//! `Slot`, held by its response body) or is refused.
//!
//! The answer carries the IETF draft's headers (`RateLimit-Policy`, `RateLimit`), on allowed
//! and refused responses alike, and `Retry-After` when refused.

mod global;
mod key;

use std::fmt::Write;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use global::SCRIPT;

use super::error::ProxyError;
use super::service::Service;
use crate::model::{FailureMode, Rule, Scope};
use crate::proxy::transport::ConnCtx;
use crate::proxy::upstream::Router;
use crate::proxy::upstream::rate_limit::{LimitState, Slot, Verdict, result};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// What the limits said about a request they let through: headers for its response, and its
/// places under concurrency limits.
pub struct Admitted {
    /// `RateLimit-Policy` and `RateLimit` (none when only concurrency limits applied).
    headers: Option<(HeaderValue, HeaderValue)>,
    slots: Vec<Slot>,
}

impl Admitted {
    /// Adds `RateLimit-Policy` and `RateLimit` to a response; returns the places the request
    /// holds, to be kept until its response body ends.
    pub fn apply(self, headers: &mut HeaderMap) -> Vec<Slot> {
        if let Some((policy, limits)) = self.headers {
            headers.insert(RATELIMIT_POLICY.clone(), policy);
            headers.insert(RATELIMIT.clone(), limits);
        }
        self.slots
    }
}

/// A refused request: its status, headers and the limits that refused it.
#[derive(Debug)]
pub struct Limited {
    /// The status of the (oldest) policy that refused it.
    pub status: StatusCode,
    /// `RateLimit-Policy`, `RateLimit`, `Retry-After`.
    pub headers: HeaderMap,
    /// The names of the limits that refused it.
    pub violated: Vec<Arc<str>>,
}

/// One limit decided for this request.
struct Decided<'a> {
    state: &'a LimitState,
    policy: usize,
    /// The local key hash (Local limits).
    key: u64,
    verdict: Option<Verdict>,
}

/// Applies the rule's rate limits to a request. `Ok(None)`: the rule has none.
pub async fn check(
    service: &Service,
    router: &Router,
    rule: &Rule,
    conn: &ConnCtx,
    req: &http::Request<impl Sized>,
) -> Result<Option<Admitted>, ProxyError> {
    if rule.rate_limits.is_empty() {
        return Ok(None);
    }
    let headers = req.headers();
    // What the JWT step verified (a `jwtClaim` key), if the rule has one.
    let claims = req.extensions().get::<super::jwt::VerifiedClaims>();
    let mut client: Option<IpAddr> = None;
    let mut client_ip =
        || *client.get_or_insert_with(|| service.client_ip.resolve(conn.peer.ip(), headers));
    // Concurrency first (as ingress-nginx applies limit-connections before limit-rps): a
    // request refused there is counted by no rate limit; one a rate limit refuses gives its
    // places back as `slots` drops.
    let slots = concurrency(router, rule, &mut client_ip, headers, claims)?;
    let mut decided: Vec<Decided<'_>> = Vec::new();
    let mut global: Vec<(usize, String)> = Vec::new();
    for &p in &rule.rate_limits {
        let policy = &router.table.rate_limits[p];
        for state in router.rate_limits[p].iter() {
            let limit = &state.limit;
            if !limit.exempt.is_empty() && limit.exempts(client_ip()) {
                continue;
            }
            match limit.scope {
                Scope::Local => {
                    let mut hasher = state.hasher.build_hasher();
                    if !key::feed(&limit.key, &mut client_ip, headers, claims, &mut hasher) {
                        continue;
                    }
                    let key = std::hash::Hasher::finish(&hasher);
                    let verdict = state.decide_local(key, state.now());
                    let refused = verdict.is_some_and(|v| !v.allowed);
                    decided.push(Decided {
                        state,
                        policy: p,
                        key,
                        verdict,
                    });
                    if refused {
                        return Err(refuse(router, rule, &decided));
                    }
                }
                Scope::Global => {
                    let mut digest = key::Sha256::new();
                    if !key::feed(&limit.key, &mut client_ip, headers, claims, &mut digest) {
                        continue;
                    }
                    // One shared bucket (`none`): nothing to digest.
                    let digest = if limit.key.parts.is_empty() {
                        String::new()
                    } else {
                        digest.hex()
                    };
                    let redis_key = global::redis_key(&policy.label, limit, &digest);
                    global.push((decided.len(), redis_key));
                    decided.push(Decided {
                        state,
                        policy: p,
                        key: 0,
                        verdict: None,
                    });
                }
            }
        }
    }
    if !global.is_empty() {
        decide_global(service, router, &mut decided, &global).await?;
        if decided
            .iter()
            .any(|d| d.verdict.is_some_and(|v| !v.allowed))
        {
            return Err(refuse(router, rule, &decided));
        }
    }
    for d in &decided {
        if d.verdict.is_some() {
            d.state.decisions.count(result::ALLOWED);
        }
    }
    if decided.is_empty() && slots.is_empty() {
        return Ok(None);
    }
    let headers = (!decided.is_empty()).then(|| (policy_header(&decided), limits_header(&decided)));
    Ok(Some(Admitted { headers, slots }))
}

/// A place under every concurrency limit of the rule's policies, or the refusal of the first
/// that has none left.
fn concurrency(
    router: &Router,
    rule: &Rule,
    client_ip: &mut impl FnMut() -> IpAddr,
    headers: &HeaderMap,
    claims: Option<&super::jwt::VerifiedClaims>,
) -> Result<Vec<Slot>, ProxyError> {
    let mut slots = Vec::new();
    for &p in &rule.rate_limits {
        for state in router.concurrency[p].iter() {
            let limit = &state.limit;
            if !limit.exempt.is_empty() && limit.exempts(client_ip()) {
                continue;
            }
            let mut hasher = state.hasher.build_hasher();
            if !key::feed(&limit.key, &mut *client_ip, headers, claims, &mut hasher) {
                continue;
            }
            match state.acquire(std::hash::Hasher::finish(&hasher)) {
                Some(slot) => {
                    state.decisions.count(result::ALLOWED);
                    slots.push(slot);
                }
                None => {
                    state.decisions.count(result::LIMITED);
                    return Err(too_many_in_flight(router, rule, p, &limit.name));
                }
            }
        }
    }
    Ok(slots)
}

/// The error for a request over concurrency limit `name` of policy `p`.
fn too_many_in_flight(router: &Router, rule: &Rule, p: usize, name: &Arc<str>) -> ProxyError {
    tracing::debug!(route = %rule.label, limit = %name, "too many requests in flight");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    ProxyError::RateLimited(Box::new(Limited {
        status: router.table.rate_limits[p].status,
        headers,
        violated: vec![name.clone()],
    }))
}

/// The Global limits of `decided` (at the indices `global` names), in one Redis call; while
/// Redis cannot answer, each follows its policy's failureMode.
async fn decide_global(
    service: &Service,
    router: &Router,
    decided: &mut [Decided<'_>],
    global: &[(usize, String)],
) -> Result<(), ProxyError> {
    let outcome = match &service.redis {
        Some(redis) => {
            let calls: Vec<_> = global
                .iter()
                .map(|(i, key)| (&decided[*i].state.limit, key.clone()))
                .collect();
            global::decide(redis, &calls).await
        }
        // The compiler refuses Global limits without Redis; a library user may still link one.
        None => Err(crate::proxy::transport::Unavailable::Disconnected),
    };
    match outcome {
        Ok(verdicts) => {
            for ((i, _), v) in global.iter().zip(verdicts) {
                decided[*i].verdict = Some(v);
            }
            Ok(())
        }
        Err(e) => {
            let closed = global.iter().any(|(i, _)| {
                router.table.rate_limits[decided[*i].policy].failure_mode == FailureMode::Closed
            });
            for (i, _) in global {
                let d = &decided[*i];
                let mode = router.table.rate_limits[d.policy].failure_mode;
                d.state.decisions.count(match mode {
                    FailureMode::Open => result::UNAVAILABLE_ALLOWED,
                    FailureMode::Closed => result::UNAVAILABLE_DENIED,
                });
            }
            if closed {
                refund_local(decided);
                tracing::debug!(error = %e, "Redis unavailable: failureMode Closed refuses");
                return Err(ProxyError::RateLimitUnavailable);
            }
            tracing::debug!(error = %e, "Redis unavailable: failureMode Open lets the request through");
            Ok(())
        }
    }
}

/// Takes the request back from every Local limit that counted it.
fn refund_local(decided: &[Decided<'_>]) {
    for d in decided {
        if d.verdict.is_some_and(|v| v.allowed) && d.state.local.is_some() {
            d.state.refund_local(d.key, d.state.now());
        }
    }
}

/// The error for a request some limit refused; Local limits that let it through take it back.
fn refuse(router: &Router, rule: &Rule, decided: &[Decided<'_>]) -> ProxyError {
    refund_local(decided);
    let mut violated = Vec::new();
    let mut status = None;
    let mut retry_after = Duration::ZERO;
    for d in decided {
        match d.verdict {
            Some(v) if !v.allowed => {
                d.state.decisions.count(result::LIMITED);
                violated.push(d.state.limit.name.clone());
                status.get_or_insert(router.table.rate_limits[d.policy].status);
                retry_after = retry_after.max(Duration::from_nanos(v.retry_after_ns));
            }
            _ => {}
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(RATELIMIT_POLICY.clone(), policy_header(decided));
    headers.insert(RATELIMIT.clone(), limits_header(decided));
    headers.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(seconds_up(retry_after.as_nanos() as u64).max(1)),
    );
    tracing::debug!(route = %rule.label, limits = ?violated, "rate limited");
    ProxyError::RateLimited(Box::new(Limited {
        status: status.unwrap_or(StatusCode::TOO_MANY_REQUESTS),
        headers,
        violated,
    }))
}

/// Whole seconds, rounded up.
fn seconds_up(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// `RateLimit-Policy`: every limit that applied to the request.
fn policy_header(decided: &[Decided<'_>]) -> HeaderValue {
    let items: Vec<&str> = decided.iter().map(|d| &*d.state.policy_item).collect();
    HeaderValue::from_str(&items.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

/// `RateLimit`: per limit that decided, what is left (`r`) and for how long (`t`: until the
/// allowance is whole again; for a refused limit, until one request passes).
fn limits_header(decided: &[Decided<'_>]) -> HeaderValue {
    let mut out = String::new();
    for d in decided {
        let Some(v) = d.verdict else { continue };
        let t = if v.allowed {
            seconds_up(v.reset_ns)
        } else {
            seconds_up(v.retry_after_ns).max(1)
        };
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{}\";r={};t={t}", d.state.limit.name, v.remaining);
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static(""))
}
