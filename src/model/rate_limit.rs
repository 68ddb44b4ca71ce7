//! Rate-limit policies as the proxy applies them: compiled from RateLimitPolicy objects and
//! attached to the rules they target (`Rule::rate_limits` indexes [`RoutingTable::rate_limits`]).
//!
//! [`RoutingTable::rate_limits`]: super::RoutingTable::rate_limits

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use serde::Serialize;

use super::{Cidr, ObjectRef};

/// One RateLimitPolicy: its limits (all must allow a request) and what a refusal looks like.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicy {
    /// The policy object.
    pub id: ObjectRef,
    /// `namespace/name`, the `policy` label of metrics.
    pub label: Arc<str>,
    /// Every limit; a request passes only if each allows it.
    pub limits: Vec<Limit>,
    /// Limits on requests in flight at once (per replica), asked before `limits`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencyLimit>,
    /// What a Global limit does while Redis cannot answer.
    pub failure_mode: FailureMode,
    /// The status of a limited request.
    #[serde(serialize_with = "super::ser::status")]
    pub status: StatusCode,
    /// Creation time of the object (the oldest policy wins a conflict).
    #[serde(skip)]
    pub created: Option<i64>,
}

impl RateLimitPolicy {
    /// Whether any limit is counted in Redis.
    pub fn has_global(&self) -> bool {
        self.limits.iter().any(|l| l.scope == Scope::Global)
    }
}

/// One limit of a policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    /// The name in `RateLimit` headers and the `limit` label of metrics.
    pub name: Arc<str>,
    /// What a bucket is kept per.
    pub key: LimitKey,
    /// How requests are counted.
    pub algorithm: Algorithm,
    /// Requests allowed per `per`.
    pub rate: u32,
    /// The window `rate` is counted over (whole seconds).
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub per: Duration,
    /// Per replica or in Redis.
    pub scope: Scope,
    /// Local only: the most keys kept per replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
    /// Clients the limit does not apply to (`exemptClients`); empty for most limits, which then
    /// pay one branch.
    #[serde(rename = "exemptClients", skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<Cidr>,
}

impl Limit {
    /// Whether a request from `client` is exempt from this limit.
    pub fn exempts(&self, client: IpAddr) -> bool {
        self.exempt.iter().any(|c| c.contains(client))
    }
}

/// A limit on the requests in flight at once per key, in each replica.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyLimit {
    /// The name in metrics and the refusal's body.
    pub name: Arc<str>,
    /// What requests are counted per.
    pub key: LimitKey,
    /// Requests in flight at once per key.
    pub max: u32,
    /// Clients the limit does not apply to.
    #[serde(rename = "exemptClients", skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<Cidr>,
}

impl ConcurrencyLimit {
    /// Whether a request from `client` is exempt from this limit.
    pub fn exempts(&self, client: IpAddr) -> bool {
        self.exempt.iter().any(|c| c.contains(client))
    }
}

/// How requests are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    /// GCRA: `burst` requests at once, then `rate` per `per`.
    TokenBucket {
        /// Requests allowed at once after a quiet spell.
        burst: u32,
    },
    /// Two fixed windows, the previous one weighted by how much of it the sliding window still
    /// covers (see the README for the error bound).
    SlidingWindow,
}

/// Where a limit is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Scope {
    /// In each replica.
    Local,
    /// In Redis, shared by every replica.
    Global,
}

/// What a Global limit does while Redis cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum FailureMode {
    /// Let the request through.
    #[default]
    Open,
    /// Refuse it (503).
    Closed,
}

/// One part of a bucket key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyPart {
    /// The client address (after trusted proxies).
    #[serde(rename = "clientIP")]
    ClientIp,
    /// A request header's value.
    Header(#[serde(serialize_with = "super::ser::header_name")] HeaderName),
    /// A claim of the JWT the rule's authentication verified.
    JwtClaim(Arc<str>),
}

/// What a request without the key's header gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum MissingHeader {
    /// Every such request shares one bucket.
    #[default]
    SharedBucket,
    /// The limit does not apply to it.
    NoLimit,
    /// It is keyed by its client address instead.
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// A bucket key: the parts, combined (none: one bucket for every request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitKey {
    /// The parts; empty means one shared bucket.
    pub parts: Vec<KeyPart>,
    /// When a header or claim part is missing (set when a part is a header or a claim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_header: Option<MissingHeader>,
}

impl LimitKey {
    /// Whether a part is the client address.
    pub fn uses_client_ip(&self) -> bool {
        self.parts.contains(&KeyPart::ClientIp)
    }
}
