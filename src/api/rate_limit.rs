//! The `RateLimitPolicy` custom resource: who may send how much.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::limits::{MAX_CIDRS, MAX_LIST};
use super::{Duration, Empty};

/// Limits on the requests a Route (or one of its rules) accepts.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tidegate.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    namespaced,
    status = "RateLimitPolicyStatus",
    shortname = "tgrl",
    category = "tidegate",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// The Route (and optionally rule) limited.
    pub target_ref: PolicyTargetRef,
    /// The limits; a request must pass all of them.
    #[serde(default)]
    #[schemars(length(max = MAX_LIST))]
    pub limits: Vec<RateLimit>,
    /// Limits on requests in flight at once (per replica); asked before `limits`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub concurrency: Vec<ConcurrencyLimit>,
    /// Global limits only: when Redis cannot answer in time, Open (default) lets the request
    /// through, Closed answers 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<FailureMode>,
    /// The answer to a limited request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RateLimitResponse>,
}

/// The object a policy applies to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetRef {
    /// `Route`.
    pub kind: String,
    /// Name, in the policy's namespace.
    pub name: String,
    /// A rule name; unset: the whole Route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// One limit.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Name, for the `RateLimit` headers and metrics (an RFC 1123 label); default: the
    /// policy's name, or `<policy>-<index>` when it has several limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a bucket is kept per.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// TokenBucket (default) or SlidingWindow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<RateLimitAlgorithm>,
    /// Requests allowed per `per`.
    pub rate: u32,
    /// The window `rate` is counted over: whole seconds, 1s to 24h (`1s`, `1m`, `1h`).
    pub per: Duration,
    /// TokenBucket only: how many requests may come at once after a quiet spell; default
    /// `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Local (per replica, the default) or Global (Redis, exact across replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RateLimitScope>,
    /// Local only: the most keys (clients) kept per replica; default 100000. Beyond it the
    /// least active key of a set is evicted (see the README for the bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
    /// Clients this limit does not apply to: CIDRs or addresses (`10.0.0.0/8`, `192.0.2.7`),
    /// matched against the client address `--trusted-proxies` resolves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CIDRS), inner(length(max = 64)))]
    pub exempt_clients: Vec<String>,
}

/// A limit on the requests in flight at once per key, in each replica: a request is counted
/// from when it is admitted until its response body ends (or the client leaves).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// Name, for metrics and the refusal's body (an RFC 1123 label); default: the policy's
    /// name with `-concurrency` (and `-<index>` when it has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What requests are counted per (as a rate limit's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// Requests in flight at once per key, 1 to 10^6.
    pub max: u32,
    /// Clients this limit does not apply to: CIDRs or addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CIDRS), inner(length(max = 64)))]
    pub exempt_clients: Vec<String>,
}

/// The bucket key: `none`, or one or more of `clientIP`, `header` and `jwtClaim` (combined:
/// one bucket per combination).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::rate_limit_key)]
pub struct RateLimitKey {
    /// The client address (see `--trusted-proxies`).
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<Empty>,
    /// A request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `header` and `jwtClaim` only: what a request without the header (or without the claim
    /// in a verified token) gets; default SharedBucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_header: Option<MissingHeader>,
    /// A claim of the JWT the targeted rule's `authentication.jwt` verified (e.g. `sub`): a
    /// string claim's value, any other claim's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_claim: Option<String>,
    /// One bucket for everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none: Option<Empty>,
}

/// What a request without the key's header gets.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MissingHeader {
    /// Every such request shares one bucket.
    SharedBucket,
    /// This limit does not apply to it.
    NoLimit,
    /// It is keyed by its client address instead (a key without `clientIP` only).
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// Rate-limit algorithms.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitAlgorithm {
    /// Refilling bucket with burst.
    TokenBucket,
    /// Sliding window counter.
    SlidingWindow,
}

/// Where a limit is counted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitScope {
    /// In each replica.
    Local,
    /// Across replicas, in Redis.
    Global,
}

/// Behaviour when Redis is unreachable.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailureMode {
    /// Allow the request.
    Open,
    /// Deny the request.
    Closed,
}

/// The answer to a limited request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitResponse {
    /// Status code of a limited request, 400-599; default 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// What the controller reports about a RateLimitPolicy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicyStatus {
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, ResolvedRefs, Programmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
