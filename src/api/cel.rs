//! The CEL rules (`x-kubernetes-validations`) of the CRD schemas: the one-of and cross-field
//! checks OpenAPI cannot express, and the few single-field ones it cannot either (a duration
//! above zero, a host name that is not an IP address).
//!
//! Each rule mirrors a check of the compiler, and its message says what the compiler's does, so
//! a cluster with CEL (Kubernetes ≥ 1.25) refuses at `kubectl apply` what `tidegate validate`
//! and the controller would reject anyway. `tests/admission.rs` evaluates every rule with a CEL
//! interpreter against good and bad objects and compares the verdict with the compiler's.
//!
//! Rules use only what Kubernetes 1.25 offers (standard CEL, `matches`, the `strings` library)
//! and no `fieldPath`/`reason` (Kubernetes ≥ 1.28), so the CRDs install on every CEL-capable
//! version. They are attached to the schema by `#[schemars(transform = ...)]`.

use schemars::Schema;
use serde_json::{Value, json};

use super::limits::*;

fn add(schema: &mut Schema, rules: &[(String, &str)]) {
    let list = schema
        .ensure_object()
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        for (rule, message) in rules {
            list.push(json!({"rule": rule, "message": message}));
        }
    }
}

/// A CEL raw string literal of a regular expression.
fn re(pattern: &str) -> String {
    format!("r'{pattern}'")
}

/// `(has(self.a) ? 1 : 0) + …`: how many of `fields` are set.
fn count_set(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("(has(self.{f}) ? 1 : 0)"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The CEL list of the headers filters may not touch.
fn managed_headers() -> String {
    let quoted: Vec<String> = MANAGED_HEADERS.iter().map(|h| format!("'{h}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Durations: above zero. Every duration field of the API is a positive time span.
pub fn duration(s: &mut Schema) {
    add(
        s,
        &[(
            "duration(self) > duration('0s')".into(),
            "a duration must be greater than zero",
        )],
    );
}

/// `spec.hostnames`: none is an IP address.
pub fn hostnames(s: &mut Schema) {
    add(
        s,
        &[(
            format!("self.all(h, !h.matches({}))", re(IPV4_LIKE_PATTERN)),
            "IP addresses are not host names: use a Route without hostnames",
        )],
    );
}

/// One host name (no wildcard): not an IP address.
pub fn hostname(s: &mut Schema) {
    add(
        s,
        &[(
            format!("!self.matches({})", re(IPV4_LIKE_PATTERN)),
            "IP addresses are not host names",
        )],
    );
}

const FILTERS: [&str; 6] = [
    "requestHeaderModifier",
    "responseHeaderModifier",
    "urlRewrite",
    "requestRedirect",
    "directResponse",
    "cors",
];

/// The rules of one filter list (a rule's or a backendRef's, named by `scope`): each kind at most
/// once; requestRedirect with neither directResponse nor urlRewrite.
fn filter_list(scope: &str) -> Vec<(String, String)> {
    let once = FILTERS
        .iter()
        .map(|f| format!("self.filters.filter(f, has(f.{f})).size() <= 1"))
        .collect::<Vec<_>>()
        .join(" && ");
    let has = |f: &str| format!("(has(self.filters) && self.filters.exists(f, has(f.{f})))");
    vec![
        (
            format!("!has(self.filters) || ({once})"),
            format!("filters: each filter kind may appear only once per {scope}"),
        ),
        (
            format!("!({} && {})", has("requestRedirect"), has("directResponse")),
            "filters: requestRedirect and directResponse cannot be used together".into(),
        ),
        (
            format!("!({} && {})", has("requestRedirect"), has("urlRewrite")),
            "filters: requestRedirect and urlRewrite cannot be used together".into(),
        ),
    ]
}

/// CEL that tells whether filter `f` replaces a path prefix.
const REPLACES_PREFIX: &str = "(has(f.urlRewrite) && has(f.urlRewrite.path) && has(f.urlRewrite.path.replacePrefixMatch)) || \
     (has(f.requestRedirect) && has(f.requestRedirect.path) && has(f.requestRedirect.path.replacePrefixMatch))";

/// A Route rule: its filter list; which filters and backendRefs go together; one path rewrite
/// between the rule and its backendRefs; `replacePrefixMatch` (the rule's or a backendRef's)
/// only with PathPrefix matches.
pub fn route_rule(s: &mut Schema) {
    let lists: Vec<(String, String)> = filter_list("rule");
    let lists: Vec<(String, &str)> = lists.iter().map(|(r, m)| (r.clone(), m.as_str())).collect();
    add(s, &lists);
    let has = |f: &str| format!("(has(self.filters) && self.filters.exists(f, has(f.{f})))");
    // Two rules, one for the rule's filters and one for its backendRefs' (`!(A || B) || C` is
    // `(!A || C) && (!B || C)`): each stays inside the apiserver's per-rule cost budget, which
    // the combined one could exceed (1.65M estimated against 1M).
    let rule_replaces_prefix =
        format!("(has(self.filters) && self.filters.exists(f, {REPLACES_PREFIX}))");
    let ref_replaces_prefix = format!(
        "(has(self.backendRefs) && self.backendRefs.exists(b, has(b.filters) && b.filters.exists(f, {REPLACES_PREFIX})))"
    );
    let all_prefix = "!has(self.matches) || \
         self.matches.all(m, !has(m.path) || !has(m.path.type) || m.path.type == 'PathPrefix')";
    let rewrites_path = "(has(f.urlRewrite) && has(f.urlRewrite.path))";
    add(
        s,
        &[
            (
                format!(
                    "!(has(self.filters) && self.filters.exists(f, {rewrites_path})) || !has(self.backendRefs) || \
                     self.backendRefs.all(b, !has(b.filters) || !b.filters.exists(f, {rewrites_path}))"
                ),
                "backendRefs: the rule already rewrites the path (urlRewrite.path); a backendRef's filters may not too",
            ),
            (
                format!(
                    "!(has(self.backendRefs) && size(self.backendRefs) > 0 && ({} || {}))",
                    has("requestRedirect"),
                    has("directResponse")
                ),
                "backendRefs: a rule that answers itself (requestRedirect or directResponse) cannot have backendRefs",
            ),
            (
                format!("!{rule_replaces_prefix} || {all_prefix}"),
                "replacePrefixMatch needs every match of the rule to be a PathPrefix",
            ),
            (
                format!("!{ref_replaces_prefix} || {all_prefix}"),
                "replacePrefixMatch needs every match of the rule to be a PathPrefix",
            ),
        ],
    );
}

/// A path match: Exact and PathPrefix values are plain absolute paths.
pub fn path_match(s: &mut Schema) {
    add(
        s,
        &[(
            format!(
                "(has(self.type) && self.type == 'RegularExpression') || self.value.matches({})",
                re(PLAIN_PATH_PATTERN)
            ),
            "value: an Exact or PathPrefix path starts with '/' and has no '?', '#', white space or control character",
        )],
    );
}

/// A filter entry sets exactly one filter.
pub fn route_filter(s: &mut Schema) {
    add(
        s,
        &[(
            format!("{} == 1", count_set(&FILTERS)),
            "a filter entry must set exactly one filter",
        )],
    );
}

/// A header set or added: not one the proxy manages.
pub fn header_value_spec(s: &mut Schema) {
    add(
        s,
        &[(
            format!("!(self.name.lowerAscii() in {})", managed_headers()),
            "name: this header is managed by the proxy and cannot be modified here",
        )],
    );
}

/// Header names removed: not ones the proxy manages.
pub fn removed_headers(s: &mut Schema) {
    add(
        s,
        &[(
            format!("self.all(n, !(n.lowerAscii() in {}))", managed_headers()),
            "remove: a header managed by the proxy cannot be modified here",
        )],
    );
}

/// A URL rewrite changes something.
pub fn url_rewrite(s: &mut Schema) {
    add(
        s,
        &[(
            "has(self.path) || has(self.hostname)".into(),
            "urlRewrite needs a path or a hostname",
        )],
    );
}

/// A path modifier sets exactly one way.
pub fn path_modifier(s: &mut Schema) {
    add(
        s,
        &[(
            "(has(self.replacePrefixMatch) ? 1 : 0) + (has(self.replaceFullPath) ? 1 : 0) \
             + (has(self.replaceRegexMatch) ? 1 : 0) == 1"
                .into(),
            "set exactly one of replacePrefixMatch, replaceFullPath or replaceRegexMatch",
        )],
    );
}

/// A backendRef: `port` is for Services; its filter list.
pub fn backend_ref(s: &mut Schema) {
    add(
        s,
        &[(
            "!(has(self.port) && has(self.kind) && self.kind == 'Backend')".into(),
            "port is only for kind: Service (a Backend names its own port)",
        )],
    );
    let lists = filter_list("backendRef");
    let lists: Vec<(String, &str)> = lists.iter().map(|(r, m)| (r.clone(), m.as_str())).collect();
    add(s, &lists);
}

/// `backendRequest` fits in `request`.
pub fn route_timeouts(s: &mut Schema) {
    add(
        s,
        &[(
            "!(has(self.request) && has(self.backendRequest)) || \
             duration(self.backendRequest) <= duration(self.request)"
                .into(),
            "backendRequest cannot be longer than request",
        )],
    );
}

/// Backoff: `max` is not shorter than `base` (25ms when unset).
pub fn backoff(s: &mut Schema) {
    add(
        s,
        &[(
            "!has(self.max) || duration(self.max) >= duration(has(self.base) ? self.base : '25ms')"
                .into(),
            "max cannot be shorter than base (25ms when unset)",
        )],
    );
}

/// A status list: each range runs upwards. (The pattern makes a range seven characters, two
/// three-digit numbers, which compare as strings as they do as numbers.)
pub fn status_ranges(s: &mut Schema) {
    add(
        s,
        &[(
            "self.all(r, size(r) != 7 || r.substring(0, 3) <= r.substring(4))".into(),
            "a range is written low-high, e.g. 500-599",
        )],
    );
}

/// A Backend: a Service or static endpoints, not both.
pub fn backend_spec(s: &mut Schema) {
    add(
        s,
        &[(
            "(has(self.service) ? 1 : 0) + ((has(self.endpoints) && size(self.endpoints) > 0) ? 1 : 0) + (has(self.dns) ? 1 : 0) == 1".into(),
            "set exactly one of service (Kubernetes), endpoints (a static list) or dns",
        )],
    );
}

/// A and AAAA records need the Backend's port; SRV records carry their own.
pub fn dns_discovery(s: &mut Schema) {
    add(
        s,
        &[(
            "self.type == 'SRV' ? !has(self.port) : has(self.port)".into(),
            "port: A and AAAA records need a port; SRV records carry their own (leave port out)",
        )],
    );
}

/// `min` cannot be above `max` (defaults 1s and 30s).
pub fn dns_refresh(s: &mut Schema) {
    add(
        s,
        &[(
            "duration(has(self.min) ? self.min : '1s') <= duration(has(self.max) ? self.max : '30s')"
                .into(),
            "min cannot be longer than max",
        )],
    );
}

/// A Service port given as a number (or as a string of digits) is a port number. `port` is an
/// int-or-string, hence `string()` first.
pub fn service_ref(s: &mut Schema) {
    add(
        s,
        &[(
            "!string(self.port).matches('^[0-9]+$') || \
             (int(string(self.port)) >= 1 && int(string(self.port)) <= 65535)"
                .into(),
            "port: a port number must be 1-65535",
        )],
    );
}

/// `hashOn` goes with ConsistentHash, and only with it.
pub fn load_balancer(s: &mut Schema) {
    add(
        s,
        &[
            (
                "!(has(self.algorithm) && self.algorithm == 'ConsistentHash') || has(self.hashOn)"
                    .into(),
                "ConsistentHash needs hashOn (header, cookie, sourceIP or queryParam)",
            ),
            (
                "!has(self.hashOn) || (has(self.algorithm) && self.algorithm == 'ConsistentHash')"
                    .into(),
                "hashOn is only for ConsistentHash",
            ),
        ],
    );
}

/// `hashOn` names one attribute.
pub fn hash_on(s: &mut Schema) {
    add(
        s,
        &[(
            format!(
                "{} == 1",
                count_set(&["header", "cookie", "sourceIP", "queryParam"])
            ),
            "set exactly one of header, cookie, sourceIP or queryParam",
        )],
    );
}

/// An active check is an HTTP or a TCP probe, and its timeout fits in its interval.
pub fn active_health_check(s: &mut Schema) {
    add(
        s,
        &[
            (
                "has(self.http) != has(self.tcp)".into(),
                "set exactly one of http or tcp",
            ),
            (
                "duration(has(self.timeout) ? self.timeout : '1s') <= \
                 duration(has(self.interval) ? self.interval : '5s')"
                    .into(),
                "timeout cannot be longer than interval (1s and 5s when unset)",
            ),
        ],
    );
}

/// A connection queue needs a connection limit.
pub fn connection_settings(s: &mut Schema) {
    add(
        s,
        &[(
            "has(self.maxConnections) || !(has(self.maxPendingRequests) || has(self.pendingTimeout))"
                .into(),
            "maxPendingRequests and pendingTimeout need maxConnections",
        )],
    );
}

/// A rate-limit key names one attribute.
pub fn rate_limit_key(s: &mut Schema) {
    add(
        s,
        &[(
            format!(
                "{} == 1",
                count_set(&["clientIP", "header", "jwtClaim", "none"])
            ),
            "set exactly one of clientIP, header, jwtClaim or none",
        )],
    );
}

/// A client-validation CA comes from one Secret or one ConfigMap.
pub fn client_validation(s: &mut Schema) {
    add(
        s,
        &[(
            format!(
                "{} == 1",
                count_set(&["caSecretRef", "caConfigMapRef", "caFile"])
            ),
            "set exactly one of caSecretRef, caConfigMapRef or caFile",
        )],
    );
}

/// A Backend's CA comes from one place, and so does its client certificate.
pub fn backend_tls(s: &mut Schema) {
    add(
        s,
        &[
            (
                format!(
                    "{} <= 1",
                    count_set(&["caSecretRef", "caConfigMapRef", "caFile"])
                ),
                "set at most one of caSecretRef, caConfigMapRef or caFile",
            ),
            (
                format!(
                    "{} <= 1",
                    count_set(&["clientCertificateRef", "clientCertificateFiles"])
                ),
                "set at most one of clientCertificateRef or clientCertificateFiles",
            ),
            (
                format!(
                    "!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || {} == 0",
                    count_set(&["caSecretRef", "caConfigMapRef", "caFile"])
                ),
                "insecureSkipVerify verifies nothing: remove the CA, or insecureSkipVerify to verify with it",
            ),
        ],
    );
}

/// An auth service is a URL or a Backend.
pub fn ext_auth(s: &mut Schema) {
    add(
        s,
        &[
            (
                format!("{} == 1", count_set(&["url", "backendRef"])),
                "set exactly one of url or backendRef",
            ),
            (
                "!has(self.pathPrefix) || has(self.backendRef)".into(),
                "pathPrefix is for backendRef (a url carries its path)",
            ),
            (
                "!has(self.caSecretRef) || has(self.url)".into(),
                "caSecretRef is for url (a Backend's own tls settings verify it)",
            ),
            (
                "!has(self.forwardAllHeaders) || !self.forwardAllHeaders || !has(self.headersToAuth)"
                    .into(),
                "set one of headersToAuth or forwardAllHeaders",
            ),
        ],
    );
}

/// A JWKS comes from one place.
pub fn jwks_source(s: &mut Schema) {
    add(
        s,
        &[(
            format!("{} == 1", count_set(&["uri", "secretRef", "inline"])),
            "set exactly one of uri, secretRef or inline",
        )],
    );
}
