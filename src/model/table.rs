//! The routing table: immutable, versioned, swapped whole by the proxy.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use http::{HeaderMap, HeaderValue};

use super::canary::{Canary, Override, canary_override};
use super::filter::{BackendFilters, DirectResponse, HeaderModifier, Redirect, RequestFilter};
use super::host_index::{HostIndex, IndexBuilder};
use super::matching::{RequestMatch, RequestView};
use super::{Backend, Diagnostic, ObjectRef, RateLimitPolicy, TlsTable};

/// Index of a backend in [`RoutingTable::backends`].
pub type BackendIdx = usize;

/// One backendRef of a rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedBackend {
    /// Index in the table's backends; `None` when the reference does not resolve (a missing
    /// or rejected Backend or Service, an unknown kind): the requests the schedule gives it are
    /// answered 500 (Gateway API). Shown as `unresolved: true`.
    #[serde(
        rename = "unresolved",
        skip_serializing_if = "Option::is_some",
        serialize_with = "super::ser::unresolved"
    )]
    pub backend: Option<BackendIdx>,
    /// The backend's `namespace/name` (for an unresolved reference: the name it gives).
    pub name: Arc<str>,
    /// Its relative share.
    pub weight: u32,
    /// Canaries of this backend (Service annotations), each taking a percentage of its share.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<Canary>,
    /// Filters that run only for requests sent to this backendRef; `None` when it has none.
    /// Boxed: most backendRefs have none, and a table holds one of these per backendRef.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Box<BackendFilters>>,
}

impl WeightedBackend {
    /// Its filters (an empty set when it has none).
    pub fn filters(&self) -> &BackendFilters {
        static NONE: BackendFilters = BackendFilters::NONE;
        self.filters.as_deref().unwrap_or(&NONE)
    }

    /// Whether a canary header or cookie in `headers` decides between this backendRef's
    /// backend and its canaries.
    pub fn overridden(&self, headers: &HeaderMap) -> bool {
        !self.canaries.is_empty() && canary_override(&self.canaries, headers).is_some()
    }

    /// The backend a request goes to when the schedule chose `target` of this backendRef:
    /// a canary header or cookie overrides the weighted choice. `None`: the reference does not
    /// resolve.
    pub fn resolve(&self, target: Target, headers: &HeaderMap) -> Option<BackendIdx> {
        let primary = self.backend?;
        if !self.canaries.is_empty() {
            match canary_override(&self.canaries, headers) {
                Some(Override::Primary) => return Some(primary),
                Some(Override::Canary(i)) => return Some(self.canaries[i].backend),
                None => {}
            }
        }
        Some(match target.canary {
            0 => primary,
            n => self
                .canaries
                .get(n as usize - 1)
                .map_or(primary, |c| c.backend),
        })
    }
}

/// Why a forwarding rule sends a request to no backend; the proxy answers instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoBackend {
    /// Every backendRef has weight 0 (503).
    #[error("every backendRef of the rule has weight 0")]
    ZeroWeights,
    /// The rule has no backendRefs (500, as Gateway API asks).
    #[error("the rule has no backendRefs")]
    NoBackendRefs,
    /// The backendRef the request was given to does not resolve (500, as Gateway API asks).
    #[error("the chosen backendRef does not resolve")]
    Unresolved,
}

/// Where a forwarding rule sends one request.
#[derive(Clone, Copy, Debug)]
pub struct Picked<'a> {
    /// Index in the table's backends.
    pub backend: BackendIdx,
    /// The backendRef chosen (its filters apply).
    pub backend_ref: &'a WeightedBackend,
}

/// The backend for the `n`-th request of a rule that forwards to `backends` along `schedule`.
pub fn pick<'a>(
    backends: &'a [WeightedBackend],
    schedule: &[Target],
    n: usize,
    headers: &HeaderMap,
) -> Result<Picked<'a>, NoBackend> {
    if schedule.is_empty() {
        return Err(if backends.is_empty() {
            NoBackend::NoBackendRefs
        } else {
            NoBackend::ZeroWeights
        });
    }
    let target = schedule[n % schedule.len()];
    let backend_ref = &backends[target.backend_ref as usize];
    let backend = backend_ref
        .resolve(target, headers)
        .ok_or(NoBackend::Unresolved)?;
    Ok(Picked {
        backend,
        backend_ref,
    })
}

thread_local! {
    /// The last split [`Action::forward`] scheduled (its [`split`]) and its schedule: rules
    /// with the same split (a 90/10 canary on many Routes) share one schedule, rather than
    /// each computing its own (five allocations) in a compile.
    static LAST_SPLIT: std::cell::RefCell<Option<Scheduled>> =
        const { std::cell::RefCell::new(None) };
}

/// A split and its schedule.
type Scheduled = (Vec<(u64, Target)>, Arc<[Target]>);

/// A rule's split: each backendRef's own backend and then its canaries, with their weights in
/// hundredths (a canary takes its percentage of its backendRef's weight).
fn split(backends: &[WeightedBackend]) -> impl Iterator<Item = (u64, Target)> + '_ {
    backends.iter().zip(0u32..).flat_map(|(b, i)| {
        // Percentages over 100 in total are refused by the compiler; clamp anyway.
        let canary_total: u64 = b.canaries.iter().map(|c| u64::from(c.weight)).sum();
        let primary = 100u64.saturating_sub(canary_total);
        let w = u64::from(b.weight);
        let own = Target {
            backend_ref: i,
            canary: 0,
        };
        std::iter::once((w * primary, own)).chain(b.canaries.iter().zip(1u32..).map(
            move |(c, canary)| {
                let target = Target {
                    backend_ref: i,
                    canary,
                };
                (w * u64::from(c.weight), target)
            },
        ))
    })
}

/// One entry of a rule's weighted schedule: a backendRef, and which of its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Index in the rule's backendRefs.
    pub backend_ref: u32,
    /// 0 for the backendRef's own backend, `n` for its canary `n - 1`.
    pub canary: u32,
}

/// What a rule does with a request once filters ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Proxy to one of the backends, chosen by smooth weighted round robin.
    Forward {
        /// The weighted backends.
        backends: Vec<WeightedBackend>,
        /// One cycle of the weighted order (see `weighted`), canary shares included.
        #[serde(skip)]
        schedule: Arc<[Target]>,
    },
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

impl Action {
    /// A forward action whose schedule splits by backendRef weight, and within each backendRef
    /// between its backend and its canaries by their percentages.
    pub fn forward(backends: Vec<WeightedBackend>) -> Self {
        // One backend without canaries, the usual rule: its schedule is itself (or nothing at
        // weight 0), as `smooth_schedule_u64` would say, without the work.
        if let [b] = backends.as_slice()
            && b.canaries.is_empty()
        {
            let schedule: Arc<[Target]> = if b.weight > 0 {
                // Shared by every such rule: one allocation (and its free) fewer per rule.
                static ITSELF: std::sync::LazyLock<Arc<[Target]>> =
                    std::sync::LazyLock::new(|| {
                        Arc::new([Target {
                            backend_ref: 0,
                            canary: 0,
                        }])
                    });
                ITSELF.clone()
            } else {
                Arc::new([])
            };
            return Action::Forward { backends, schedule };
        }
        let schedule = LAST_SPLIT.with_borrow_mut(|last| match last {
            Some((entries, schedule)) if entries.iter().copied().eq(split(&backends)) => {
                schedule.clone()
            }
            _ => {
                let entries: Vec<(u64, Target)> = split(&backends).collect();
                let weights: Vec<u64> = entries.iter().map(|e| e.0).collect();
                let schedule: Arc<[Target]> = super::weighted::smooth_schedule_u64(&weights)
                    .into_iter()
                    .map(|i| entries[i as usize].1)
                    .collect();
                *last = Some((entries, schedule.clone()));
                schedule
            }
        });
        Action::Forward { backends, schedule }
    }
}

/// Time limits of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// From the request's arrival to the response headers.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub request: Option<Duration>,
    /// For one backend attempt, to its response headers.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub backend_request: Option<Duration>,
}

/// When a failed attempt may be tried again.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryOn {
    /// The TCP connect failed (nothing was sent).
    pub connect_failure: bool,
    /// The connection broke before response headers (also: the per-try timeout fired).
    pub reset: bool,
    /// The upstream answered 502, 503 or 504.
    pub gateway_error: bool,
    /// The upstream answered any 5xx.
    #[serde(rename = "5xx")]
    pub any_5xx: bool,
    /// The upstream answered one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether a response with this status may be retried.
    pub fn status(&self, code: u16) -> bool {
        (self.any_5xx && (500..600).contains(&code))
            || (self.gateway_error && matches!(code, 502..=504))
            || self.statuses.contains(&code)
    }
}

/// Retries of a rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts in all, the first included (at least 2).
    pub attempts: u32,
    /// Conditions.
    pub on: RetryOn,
    /// Limit of one attempt.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub per_try_timeout: Option<Duration>,
    /// No new attempt starts once this long has passed since the first began.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub max_duration: Option<Duration>,
    /// First backoff (full jitter: a random wait up to base × 2^n, capped at max).
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub backoff_base: Duration,
    /// Largest backoff.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub backoff_max: Duration,
    /// Whether non-idempotent methods (POST, PATCH, …) are retried too.
    pub non_idempotent: bool,
    /// Largest request body kept for replay; larger bodies are streamed and not retried.
    pub max_body_bytes: usize,
}

/// A compiled rule of a Route.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The Route it came from.
    pub route: ObjectRef,
    /// Its position in the Route's rules.
    pub index: usize,
    /// Its name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `namespace/name` or `namespace/name/rule`: the label for metrics and logs.
    pub label: Arc<str>,
    /// Host names, lower-case; empty means every host. Shared by the rules of one Route.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub hostnames: Arc<[String]>,
    /// Conditions; any one selects the rule. Never empty (no matches = prefix `/`).
    pub matches: Vec<RequestMatch>,
    /// Applied to the request, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_filters: Vec<RequestFilter>,
    /// Applied to the response, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_filters: Vec<HeaderModifier>,
    /// What happens to a matched request.
    pub action: Action,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Retries, if any. Boxed: few rules have them, and a table holds every rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<Retry>>,
    /// The rate-limit policies that apply, as indices into [`RoutingTable::rate_limits`],
    /// oldest policy first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<usize>,
    /// Plain-HTTP requests get a 308 to https (the Route's `spec.tls.httpsRedirect`, an
    /// Ingress's `tls` hosts).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// That redirect drops one trailing `/` of the path and query, as ingress-nginx's does
    /// (an Ingress's rules, unless its `preserve-trailing-slash` is `"true"`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect_strips_slash: bool,
    /// `Strict-Transport-Security` added to the rule's HTTPS responses (its Route's
    /// `spec.tls.hsts`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::opt_header_value"
    )]
    pub hsts: Option<HeaderValue>,
    /// Client certificates (mTLS) the rule's requests are checked against (its Route's
    /// `spec.tls.clientValidation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<Arc<super::ClientValidation>>,
    /// IP lists, CORS and authentication (`None`: none, and no cost on the request path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Box<super::Access>>,
    /// The longest request body accepted (`maxRequestBodyBytes`; `None`: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Where requests go when the picked backend has no available endpoint
    /// (`fallbackBackendRef`; `None`: they get 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_backend: Option<BackendAt>,
    /// Upstream answers replaced by an error-page backend's (`errorResponses`; `None`: no cost
    /// on the request path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_responses: Option<Box<ErrorResponses>>,
    /// Creation time of the Route, for precedence.
    #[serde(skip)]
    pub created: Option<i64>,
}

/// A rule's `errorResponses`: the upstream statuses whose answers are replaced, and the
/// backend asked for the replacement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponses {
    /// The statuses replaced, ascending.
    pub statuses: Vec<u16>,
    /// The error page's backend.
    pub backend: BackendAt,
}

/// A backend of the table a rule names besides its backendRefs; shown as its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendAt {
    /// Index into the table's backends.
    pub index: BackendIdx,
    /// Its label (`namespace/name`).
    pub label: Arc<str>,
}

impl Serialize for BackendAt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label)
    }
}

impl ErrorResponses {
    /// Whether an upstream answer with `status` is replaced.
    pub fn intercepts(&self, status: u16) -> bool {
        self.statuses.binary_search(&status).is_ok()
    }
}

/// The result of a lookup.
#[derive(Clone, Copy, Debug)]
pub struct Hit<'a> {
    /// Index of the rule in [`RoutingTable::rules`].
    pub index: usize,
    /// The winning rule.
    pub rule: &'a Rule,
    /// The match of that rule that selected the request.
    pub matched: &'a RequestMatch,
}

/// The whole compiled configuration the data plane serves from.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingTable {
    /// Increases with every published table.
    pub version: u64,
    /// Every accepted rule, in (namespace, name, rule index) order. Shared: a compile reuses
    /// the rules of Routes that did not change, and their tables hold the same ones.
    pub rules: Vec<Arc<Rule>>,
    /// Every accepted backend, in (namespace, name) order.
    pub backends: Vec<Backend>,
    /// Every accepted rate-limit policy that applies to a rule, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitPolicy>,
    /// What the HTTPS listener serves.
    #[serde(skip_serializing_if = "TlsTable::is_empty")]
    pub tls: TlsTable,
    /// TCP Routes, one per L4 port, in (namespace, name) order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4: Vec<super::L4Route>,
    /// What the compiler found wrong, rejected or ignored.
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip)]
    index: HostIndex,
}

/// Why a table is not fit to publish. Any of these is a compiler bug, never a user error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// A rule names a backend index the table does not have.
    #[error("rule {rule} refers to backend #{backend}, but the table has {len} backends")]
    DanglingBackend {
        /// The rule's label.
        rule: Arc<str>,
        /// The backend index it names.
        backend: usize,
        /// How many there are.
        len: usize,
    },
    /// A rule's weighted schedule names a backendRef it does not have.
    #[error("rule {rule} has a schedule entry {entry} beyond its {len} backendRefs")]
    BadSchedule {
        /// The rule's label.
        rule: Arc<str>,
        /// The schedule entry.
        entry: u32,
        /// How many there are.
        len: usize,
    },
    /// A rule names a rate-limit policy the table does not have.
    #[error("rule {rule} refers to rate-limit policy #{policy}, but the table has {len}")]
    DanglingRateLimit {
        /// The rule's label.
        rule: Arc<str>,
        /// The policy index it names.
        policy: usize,
        /// How many there are.
        len: usize,
    },
    /// A rule has no match to select it.
    #[error("rule {rule} has no matches")]
    NoMatches {
        /// The rule's label.
        rule: Arc<str>,
    },
}

impl RoutingTable {
    /// A table from compiled rules and backends; the host index is built here.
    pub fn new(rules: Vec<Rule>, backends: Vec<Backend>, diagnostics: Vec<Diagnostic>) -> Self {
        Self::shared(
            rules.into_iter().map(Arc::new).collect(),
            backends,
            diagnostics,
        )
    }

    /// [`Self::new`] with rules that may be shared with other tables.
    pub fn shared(
        rules: Vec<Arc<Rule>>,
        backends: Vec<Backend>,
        diagnostics: Vec<Diagnostic>,
    ) -> Self {
        let index = IndexBuilder::with_capacity(rules.len());
        Self::built(rules, index, backends, diagnostics)
    }

    /// [`Self::shared`] with the index of `rules` built as they were made.
    pub fn built(
        rules: Vec<Arc<Rule>>,
        index: IndexBuilder,
        backends: Vec<Backend>,
        diagnostics: Vec<Diagnostic>,
    ) -> Self {
        let index = index.finish(&rules);
        Self {
            version: 0,
            rules,
            backends,
            rate_limits: Vec::new(),
            tls: TlsTable::default(),
            l4: Vec::new(),
            diagnostics,
            index,
        }
    }

    /// Its host index (for tests that compare it with one built otherwise).
    #[cfg(test)]
    pub(crate) fn host_index(&self) -> &HostIndex {
        &self.index
    }

    /// The same table with these rate-limit policies (rules name them by index).
    pub fn with_rate_limits(mut self, rate_limits: Vec<RateLimitPolicy>) -> Self {
        self.rate_limits = rate_limits;
        self
    }

    /// The same table serving `tls` on the HTTPS listener.
    pub fn with_tls(mut self, tls: TlsTable) -> Self {
        self.tls = tls;
        self
    }

    /// The same table with these L4 Routes.
    pub fn with_l4(mut self, l4: Vec<super::L4Route>) -> Self {
        self.l4 = l4;
        self
    }

    /// The L4 Route listening on `port` over `protocol`, if any.
    pub fn l4_route(&self, protocol: super::L4Protocol, port: u16) -> Option<&super::L4Route> {
        self.l4
            .iter()
            .find(|r| r.port == port && r.protocol == protocol)
    }

    /// The TLS passthrough Route for server name `name` (lower-case): an exact host name
    /// first, then the longest wildcard that covers it.
    pub fn passthrough(&self, name: &str) -> Option<&super::L4Route> {
        passthrough(&self.l4, name)
    }

    /// Whether any Route passes TLS through (the HTTPS listener then reads server names
    /// itself).
    pub fn has_passthrough(&self) -> bool {
        self.l4.iter().any(|r| r.protocol == super::L4Protocol::Tls)
    }

    /// Checks the invariants the proxy relies on, before the table is published.
    pub fn validate(&self) -> Result<(), TableError> {
        for route in &self.l4 {
            let dangling = route
                .backends
                .iter()
                .filter_map(|b| b.backend)
                .find(|b| *b >= self.backends.len());
            if let Some(backend) = dangling {
                return Err(TableError::DanglingBackend {
                    rule: route.label.clone(),
                    backend,
                    len: self.backends.len(),
                });
            }
        }
        for rule in &self.rules {
            if rule.matches.is_empty() {
                return Err(TableError::NoMatches {
                    rule: rule.label.clone(),
                });
            }
            if let Some(&policy) = rule
                .rate_limits
                .iter()
                .find(|p| **p >= self.rate_limits.len())
            {
                return Err(TableError::DanglingRateLimit {
                    rule: rule.label.clone(),
                    policy,
                    len: self.rate_limits.len(),
                });
            }
            if let Some(super::ext_auth::AuthService::Backend { index, .. }) = rule
                .access
                .as_ref()
                .and_then(|a| a.ext_auth.as_ref())
                .map(|e| &e.service)
                && *index >= self.backends.len()
            {
                return Err(TableError::DanglingBackend {
                    rule: rule.label.clone(),
                    backend: *index,
                    len: self.backends.len(),
                });
            }
            if let Action::Forward { backends, schedule } = &rule.action {
                for b in backends {
                    let targets = b
                        .backend
                        .into_iter()
                        .chain(b.canaries.iter().map(|c| c.backend));
                    for backend in targets {
                        if backend >= self.backends.len() {
                            return Err(TableError::DanglingBackend {
                                rule: rule.label.clone(),
                                backend,
                                len: self.backends.len(),
                            });
                        }
                    }
                }
                if let Some(t) = schedule.iter().find(|t| {
                    backends
                        .get(t.backend_ref as usize)
                        .is_none_or(|b| t.canary as usize > b.canaries.len())
                }) {
                    return Err(TableError::BadSchedule {
                        rule: rule.label.clone(),
                        entry: t.backend_ref,
                        len: backends.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The rule and match that win for a request to `host` (lower-case, without port).
    pub fn lookup(&self, host: &str, req: &RequestView<'_>) -> Option<Hit<'_>> {
        self.index
            .candidates(&self.rules, host, req.path)
            .find_map(|c| {
                let rule = &self.rules[c.rule as usize];
                let matched = &rule.matches[c.match_index as usize];
                matched.matches(req).then_some(Hit {
                    index: c.rule as usize,
                    rule,
                    matched,
                })
            })
    }

    /// Whether any diagnostic rejects an object.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The TLS Route of `routes` that passes server name `name` through: an exact host name, else
/// the longest wildcard that covers it.
pub fn passthrough<'a>(routes: &'a [super::L4Route], name: &str) -> Option<&'a super::L4Route> {
    let tls = || {
        routes
            .iter()
            .filter(|r| r.protocol == super::L4Protocol::Tls)
    };
    if let Some(r) = tls().find(|r| r.hostnames.iter().any(|h| h == name)) {
        return Some(r);
    }
    tls()
        .flat_map(|r| r.hostnames.iter().map(move |h| (h, r)))
        .filter(|(h, _)| h.starts_with("*.") && super::name_covers(h, name))
        .max_by_key(|(h, _)| h.len())
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table holds one of each per rule and per backendRef (30,000 rules at 10,000 Routes of
    /// three): what few of them set is boxed.
    #[test]
    fn rules_and_backend_refs_stay_small() {
        let (rule, backend_ref) = (size_of::<Rule>(), size_of::<WeightedBackend>());
        eprintln!("Rule {rule} bytes, WeightedBackend {backend_ref} bytes");
        assert!(rule <= 480, "Rule is {rule} bytes");
        assert!(backend_ref <= 72, "WeightedBackend is {backend_ref} bytes");
    }

    /// Rules with the same split share its schedule; another split gets its own, and the one
    /// before it is not served to it.
    #[test]
    fn a_split_shares_the_schedule_of_the_same_split_only() {
        let split = |weights: &[u32], canary: Option<u32>| {
            let backends = weights
                .iter()
                .map(|&weight| WeightedBackend {
                    backend: Some(0),
                    name: "default/app".into(),
                    weight,
                    canaries: canary
                        .map(|weight| Canary {
                            backend: 1,
                            name: "default/canary".into(),
                            weight,
                            header: None,
                            cookie: None,
                        })
                        .into_iter()
                        .collect(),
                    filters: None,
                })
                .collect();
            let Action::Forward { schedule, .. } = Action::forward(backends) else {
                panic!("forward")
            };
            schedule
        };
        let share = |s: &[Target], backend_ref: u32, canary: u32| {
            let t = Target {
                backend_ref,
                canary,
            };
            s.iter().filter(|&&x| x == t).count()
        };
        let a = split(&[90, 10], None);
        assert!(Arc::ptr_eq(&a, &split(&[90, 10], None)));
        let b = split(&[80, 20], None);
        assert_eq!((b.len(), share(&b, 0, 0), share(&b, 1, 0)), (5, 4, 1));
        let c = split(&[90, 10], Some(50));
        assert_eq!((c.len(), share(&c, 0, 0), share(&c, 0, 1)), (20, 9, 9));
        let a2 = split(&[90, 10], None);
        assert_eq!(&a2[..], &a[..]);
        assert_eq!((a2.len(), share(&a2, 0, 0), share(&a2, 1, 0)), (10, 9, 1));
    }

    /// The one-backend shortcut of [`Action::forward`] gives the schedule the general path
    /// gives.
    #[test]
    fn one_backend_schedule_is_the_general_one() {
        for weight in [0, 1, 7, 1_000_000] {
            let backend = WeightedBackend {
                backend: Some(0),
                name: "default/app".into(),
                weight,
                canaries: Vec::new(),
                filters: None,
            };
            let Action::Forward { schedule, .. } = Action::forward(vec![backend]) else {
                panic!("forward")
            };
            let general: Vec<Target> =
                super::super::weighted::smooth_schedule_u64(&[u64::from(weight) * 100])
                    .into_iter()
                    .map(|i| {
                        assert_eq!(i, 0);
                        Target {
                            backend_ref: 0,
                            canary: 0,
                        }
                    })
                    .collect();
            assert_eq!(&schedule[..], &general[..], "weight {weight}");
        }
    }
}
