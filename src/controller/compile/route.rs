//! Route → rules.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::api::limits::{MAX_DIRECT_BODY, MAX_RETRY_BODY, MAX_WEIGHT, RETRY_ATTEMPTS};
use crate::api::{self, PathMatchType, RouteProtocol, RouteSpec, ValueMatchType};
use crate::model::{
    Action, Answer, BackendFilters, DirectResponse, HeaderMatcher, HeaderModifier, Kind, ObjectRef,
    PathMatcher, PathRewrite, Pattern, QueryMatcher, Reason, Redirect, RegexTemplate,
    RequestFilter, RequestMatch, Rule, Severity, TemplatePiece, Timeouts, UrlRewrite, ValueMatcher,
    WeightedBackend,
};
use crate::model::{Diagnostic, Retry, RetryOn};

use super::CompileOptions;
use super::fields::{self, Findings, Item};
use super::limits;
use super::targets::Targets;
use crate::controller::objects::PortRef;
use crate::controller::snapshot::Obj;

/// What a Route compiles against.
pub struct Env<'a> {
    pub opts: &'a CompileOptions,
    /// Accepted backends, and Service backends made as references need them.
    pub targets: RefCell<Targets<'a>>,
    /// Every Backend that exists, accepted or not (for precise messages).
    pub known_backends: &'a BTreeSet<&'a ObjectRef>,
    /// Secrets by (namespace, name), for basic authentication.
    pub secrets:
        &'a std::collections::BTreeMap<(String, String), crate::controller::objects::SecretInfo>,
    /// Certificates and CA bundles (an Ingress's `proxy-ssl-secret`).
    pub certificates: RefCell<super::tls::TlsBuilder<'a>>,
}

/// What a Route compiles to.
pub enum CompiledRoute {
    /// An HTTP Route's rules, each shared from here on (the table and the compile cache).
    Http(Vec<Arc<Rule>>),
    /// A TCP, UDP or TLS passthrough Route.
    L4(Box<crate::model::L4Route>),
}

/// Compiles one Route, or `None` if it is rejected (findings say why).
pub fn compile_route(
    obj: &Obj<RouteSpec>,
    env: &Env<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<CompiledRoute> {
    let spec = &obj.spec;
    let id = &obj.meta.id;
    let class = spec
        .ingress_class_name
        .as_deref()
        .unwrap_or(api::DEFAULT_INGRESS_CLASS);
    if class != env.opts.ingress_class {
        out.push(Diagnostic {
            severity: Severity::Ignored,
            ..Diagnostic::error(
                id,
                "spec.ingressClassName",
                Reason::OtherClass,
                format!(
                    "belongs to ingress class {class:?}, not {:?}",
                    env.opts.ingress_class
                ),
            )
        });
        return None;
    }
    let mut f = Findings::new(id, out);
    limits::route(spec, &mut f);

    match spec.protocol {
        RouteProtocol::Http => {}
        RouteProtocol::Tcp | RouteProtocol::Tls | RouteProtocol::Udp => {
            return super::l4::compile_l4_route(obj, env, &mut f)
                .map(|r| CompiledRoute::L4(Box::new(r)));
        }
    }
    if spec.protocol == RouteProtocol::Http && spec.port.is_some() {
        f.invalid(
            "spec.port",
            "port is for TCP and UDP Routes; an HTTP Route is served on the HTTP and HTTPS listeners",
        );
    }
    if spec.protocol == RouteProtocol::Http && !spec.backend_refs.is_empty() {
        f.invalid(
            "spec.backendRefs",
            "Route-level backendRefs are for TCP and UDP Routes; an HTTP Route lists them in its rules",
        );
    }
    if spec.udp.is_some() {
        f.invalid("spec.udp", "udp is for UDP Routes");
    }
    if spec.tcp.is_some() {
        f.invalid("spec.tcp", "tcp is for TCP Routes");
    }

    // One list and one label for all the Route's rules, not a copy of each per rule.
    let hostnames: Arc<[String]> = match spec.hostnames.as_slice() {
        // The usual Route: its list made in one allocation, not a `Vec` copied into an `Arc`.
        [h] => match fields::hostname(h, true) {
            Ok(h) => Arc::new([h]),
            Err(e) => {
                f.invalid("spec.hostnames[0]", e);
                Arc::new([])
            }
        },
        many => {
            let mut hostnames = Vec::with_capacity(many.len());
            for (i, h) in many.iter().enumerate() {
                match fields::hostname(h, true) {
                    Ok(h) if !hostnames.contains(&h) => hostnames.push(h),
                    Ok(_) => {}
                    Err(e) => f.invalid(format!("spec.hostnames[{i}]"), e),
                }
            }
            hostnames.into()
        }
    };
    let label = id.key_arc();

    if spec.rules.is_empty() && spec.protocol == RouteProtocol::Http {
        f.invalid("spec.rules", "a Route needs at least one rule");
    }
    let mut names = BTreeSet::new();
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = Item {
            parent: &"spec",
            field: "rules",
            index: i,
        };
        if let Some(name) = &rule.name {
            if let Err(e) = crate::controller::names::dns_label(name) {
                f.invalid(format!("{at}.name"), e);
            } else if !names.insert(name.as_str()) {
                f.invalid(
                    format!("{at}.name"),
                    format!("another rule is already named {name:?}"),
                );
            }
        }
        let compiled = compile_rule(obj, i, rule, &at, &hostnames, &label, env, &mut f, None);
        if let Some(r) = compiled {
            rules.push(Arc::new(r));
        }
    }
    f.ok().then_some(CompiledRoute::Http(rules))
}

/// Compiles one rule. `label`: the object's (`namespace/name`); `resolved`: its backends when
/// the caller resolved them itself (an Ingress's, whose ports may be named); then
/// `rule.backend_refs` is not read.
#[allow(clippy::too_many_arguments)] // a rule's context; a struct would only rename them
pub(super) fn compile_rule(
    obj: &Obj<RouteSpec>,
    index: usize,
    rule: &api::RouteRule,
    at: &dyn Display,
    hostnames: &Arc<[String]>,
    label: &Arc<str>,
    env: &Env<'_>,
    f: &mut Findings<'_>,
    resolved: Option<Vec<WeightedBackend>>,
) -> Option<Rule> {
    let id = &obj.meta.id;
    let mut matches = Vec::with_capacity(rule.matches.len().max(1));
    for (mi, m) in rule.matches.iter().enumerate() {
        let mat = Item {
            parent: at,
            field: "matches",
            index: mi,
        };
        if let Some(m) = compile_match(m, &mat, f) {
            matches.push(m);
        }
    }
    if rule.matches.is_empty() {
        matches.push(RequestMatch::default());
    }

    // Field paths are built only where they are needed: at 10,000 Routes, formatting them for
    // every empty list was a tenth of the compile.
    let rule_filters = if rule.filters.is_empty() {
        Filters::default()
    } else {
        filters(&rule.filters, &format!("{at}.filters"), "rule", &matches, f)
    };
    let terminal = rule_filters.redirect.is_some() || rule_filters.direct.is_some();
    if terminal && !rule.backend_refs.is_empty() {
        f.invalid(
            format!("{at}.backendRefs"),
            "a rule that answers itself (requestRedirect or directResponse) cannot have backendRefs",
        );
    }
    if !terminal && rule.backend_refs.is_empty() && resolved.is_none() {
        f.push(warning(
            id,
            format!("{at}.backendRefs"),
            Reason::Invalid,
            "the rule has no backendRefs: matching requests get 500",
        ));
    }
    let backends = match resolved {
        Some(b) if !terminal => b,
        Some(_) => Vec::new(),
        None => backend_refs(obj, rule, at, &matches, &rule_filters, env, f),
    };

    let timeouts = match &rule.timeouts {
        Some(t) => timeouts(Some(t), &format!("{at}.timeouts"), f),
        None => Timeouts::default(),
    };
    let retry = rule
        .retry
        .as_ref()
        .and_then(|r| retry(r, &format!("{at}.retry"), f))
        .map(Box::new);
    let cors = rule
        .filters
        .iter()
        .enumerate()
        .find_map(|(i, filter)| filter.cors.as_ref().map(|c| (i, c)));
    let access = super::access::access(rule, cors, at, id, hostnames, env, f);
    let (fallback_backend, error_responses) = fallbacks(rule, terminal, at, env, f);
    if !f.ok() {
        return None;
    }

    let Filters {
        request: request_filters,
        response: response_filters,
        redirect,
        direct,
        ..
    } = rule_filters;
    let action = match (redirect, direct) {
        (Some(r), _) => Action::Redirect(r),
        (None, Some(d)) => Action::DirectResponse(d),
        (None, None) => Action::forward(backends),
    };
    let label: Arc<str> = match &rule.name {
        Some(n) => {
            let mut named = String::with_capacity(label.len() + 1 + n.len());
            named.push_str(label);
            named.push('/');
            named.push_str(n);
            named.into()
        }
        None => label.clone(),
    };
    Some(Rule {
        route: id.clone(),
        index,
        name: rule.name.clone(),
        label,
        hostnames: hostnames.clone(),
        matches,
        request_filters,
        response_filters,
        action,
        timeouts,
        retry,
        rate_limits: Vec::new(),
        // Set with the certificates (compile/tls.rs), once one serves the Route's hosts.
        https_redirect: false,
        https_redirect_strips_slash: false,
        hsts: obj
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.hsts.as_ref())
            .and_then(|h| hsts(h, f)),
        // Set with the certificates (compile/tls.rs).
        client_validation: None,
        access,
        max_request_body_bytes: max_request_body_bytes(rule, at, f),
        fallback_backend,
        error_responses,
        created: obj.meta.created,
    })
}

/// `fallbackBackendRef` and `errorResponses` (a rule that answers itself may have neither).
fn fallbacks(
    rule: &api::RouteRule,
    terminal: bool,
    at: &dyn Display,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> (
    Option<crate::model::BackendAt>,
    Option<Box<crate::model::ErrorResponses>>,
) {
    if rule.fallback_backend_ref.is_none() && rule.error_responses.is_none() {
        return (None, None);
    }
    let at = &at.to_string();
    let id = f.id();
    if terminal {
        let field = if rule.fallback_backend_ref.is_some() {
            "fallbackBackendRef"
        } else {
            "errorResponses"
        };
        f.invalid(
            format!("{at}.{field}"),
            "a rule that answers itself (requestRedirect or directResponse) sends nothing to a backend",
        );
        return (None, None);
    }
    let fallback = rule
        .fallback_backend_ref
        .as_ref()
        .and_then(|r| super::fallback::fallback_backend(id, r, at, env, f));
    let errors = rule
        .error_responses
        .as_ref()
        .and_then(|e| super::fallback::error_responses(id, e, at, env, f));
    (fallback, errors)
}

/// `maxRequestBodyBytes`: at least 1 (unset: no limit).
fn max_request_body_bytes(
    rule: &api::RouteRule,
    at: &dyn Display,
    f: &mut Findings<'_>,
) -> Option<u64> {
    match rule.max_request_body_bytes {
        Some(0) => {
            f.invalid(
                format!("{at}.maxRequestBodyBytes"),
                "at least 1 (leave it unset for no limit)",
            );
            None
        }
        n => n,
    }
}

/// One list of filters (a rule's or a backendRef's), compiled; problems are in the findings.
#[derive(Default)]
struct Filters {
    request: Vec<RequestFilter>,
    response: Vec<HeaderModifier>,
    redirect: Option<Redirect>,
    direct: Option<DirectResponse>,
    /// Whether a urlRewrite replaces the path.
    rewrites_path: bool,
}

/// Compiles `list` (at `at`, e.g. `spec.rules[0].filters`); `scope` names its owner in messages.
fn filters(
    list: &[api::RouteFilter],
    at: &str,
    scope: &str,
    matches: &[RequestMatch],
    f: &mut Findings<'_>,
) -> Filters {
    let mut out = Filters::default();
    let mut seen = BTreeSet::new();
    for (fi, filter) in list.iter().enumerate() {
        let fat = format!("{at}[{fi}]");
        match filter_kinds(filter).as_slice() {
            [one] if !seen.insert(*one) => {
                f.invalid(&fat, format!("{one} may appear only once per {scope}"));
                continue;
            }
            [_] => {}
            [] => {
                f.invalid(
                    &fat,
                    "a filter entry must set exactly one filter, found none",
                );
                continue;
            }
            many => {
                f.invalid(
                    &fat,
                    format!(
                        "a filter entry must set exactly one filter, found {}",
                        many.join(", ")
                    ),
                );
                continue;
            }
        }
        if let Some(m) = &filter.request_header_modifier
            && let Some(m) = header_modifier(m, &format!("{fat}.requestHeaderModifier"), f)
        {
            out.request.push(RequestFilter::RequestHeaderModifier(m));
        }
        if let Some(m) = &filter.response_header_modifier
            && let Some(m) = header_modifier(m, &format!("{fat}.responseHeaderModifier"), f)
        {
            out.response.push(m);
        }
        if let Some(rw) = &filter.url_rewrite
            && let Some(rw) = url_rewrite(rw, &format!("{fat}.urlRewrite"), matches, f)
        {
            out.rewrites_path |= rw.path.is_some();
            out.request.push(RequestFilter::UrlRewrite(rw));
        }
        if let Some(r) = &filter.request_redirect {
            out.redirect = request_redirect(r, &format!("{fat}.requestRedirect"), matches, f);
        }
        if let Some(d) = &filter.direct_response {
            out.direct = direct_response(d, &format!("{fat}.directResponse"), f);
        }
        // A rule's cors is compiled with its access policies (compile/access.rs).
        if filter.cors.is_some() && scope != "rule" {
            f.invalid(
                format!("{fat}.cors"),
                "cors applies to a whole rule: put it in the rule's filters",
            );
        }
    }
    if seen.contains("requestRedirect") && seen.contains("directResponse") {
        f.invalid(
            at,
            "requestRedirect and directResponse cannot be used together",
        );
    }
    if seen.contains("requestRedirect") && seen.contains("urlRewrite") {
        f.invalid(at, "requestRedirect and urlRewrite cannot be used together");
    }
    out
}

/// The filters one entry sets (exactly one is valid).
fn filter_kinds(filter: &api::RouteFilter) -> Vec<&'static str> {
    [
        filter
            .request_header_modifier
            .as_ref()
            .map(|_| "requestHeaderModifier"),
        filter
            .response_header_modifier
            .as_ref()
            .map(|_| "responseHeaderModifier"),
        filter.url_rewrite.as_ref().map(|_| "urlRewrite"),
        filter.request_redirect.as_ref().map(|_| "requestRedirect"),
        filter.direct_response.as_ref().map(|_| "directResponse"),
        filter.cors.as_ref().map(|_| "cors"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The `Strict-Transport-Security` value of `spec.tls.hsts`.
fn hsts(h: &api::Hsts, f: &mut Findings<'_>) -> Option<http::HeaderValue> {
    let mut value = format!("max-age={}", h.max_age.0.as_secs());
    if h.include_sub_domains == Some(true) {
        value.push_str("; includeSubDomains");
    }
    if h.preload == Some(true) {
        if h.include_sub_domains != Some(true) {
            f.invalid(
                "spec.tls.hsts.preload",
                "preload needs includeSubDomains: true (browsers' preload lists require it)",
            );
            return None;
        }
        value.push_str("; preload");
    }
    http::HeaderValue::from_str(&value).ok()
}

/// A finding that does not reject the object.
pub(super) fn warning(
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

/// A backendRef that names nothing traffic can go to (a missing or rejected Backend or Service,
/// an unknown kind). As in Gateway API the Route stays accepted, with `ResolvedRefs=False`, and
/// the requests the weighted split gives this backendRef are answered 500.
pub(super) struct UnresolvedRef {
    /// The reference as written, `namespace/name`.
    pub(super) name: String,
    pub(super) field: String,
    pub(super) reason: Reason,
    pub(super) message: String,
}

/// The rule's backendRefs in order: resolved ones, and unresolved ones that keep their share of
/// the split (answered 500). Invalid ones (bad weight, another namespace…) reject the Route.
fn backend_refs(
    obj: &Obj<RouteSpec>,
    rule: &api::RouteRule,
    at: &dyn Display,
    matches: &[RequestMatch],
    rule_filters: &Filters,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Vec<WeightedBackend> {
    let id = &obj.meta.id;
    let mut backends = Vec::with_capacity(rule.backend_refs.len());
    let mut unresolved = Vec::new();
    for (bi, r) in rule.backend_refs.iter().enumerate() {
        let bat = Item {
            parent: at,
            field: "backendRefs",
            index: bi,
        };
        let filters = backend_filters(r, &bat, matches, rule_filters, f).boxed();
        match backend_ref(id, r, &bat, crate::model::L4Protocol::Tcp, env, f)
            .map(|b| b.and_then(|b| http_backend(b, &bat, env)))
        {
            None => {}
            Some(Ok(b)) => backends.push(WeightedBackend { filters, ..b }),
            Some(Err(u)) => {
                backends.push(WeightedBackend {
                    backend: None,
                    name: Arc::from(u.name.as_str()),
                    weight: r.weight.unwrap_or(1),
                    canaries: Vec::new(),
                    filters,
                });
                unresolved.push((backends.len() - 1, u));
            }
        }
    }
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let all = unresolved.len() == backends.len();
    for (i, u) in unresolved {
        let consequence = match backends[i].weight {
            0 => "its weight is 0, so no request is affected".to_owned(),
            _ if all => "the rule answers 500".to_owned(),
            w => format!("its share of the rule's requests ({w} of {total}) is answered 500"),
        };
        let message = format!("{}: {consequence}", u.message);
        f.push(warning(id, u.field, u.reason, message));
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        f.push(warning(
            id,
            format!("{at}.backendRefs"),
            Reason::Invalid,
            "every backendRef has weight 0: matching requests get 503",
        ));
    }
    backends
}

/// An HTTP rule cannot send to a TCP or UDP Backend.
fn http_backend(
    b: WeightedBackend,
    at: &dyn Display,
    env: &Env<'_>,
) -> Result<WeightedBackend, UnresolvedRef> {
    let Some(idx) = b.backend else { return Ok(b) };
    let targets = env.targets.borrow();
    let backend = targets.backend(idx);
    let wire = match backend.protocol {
        crate::model::UpstreamProtocol::Tcp => "TCP",
        crate::model::UpstreamProtocol::Udp => "UDP",
        _ => return Ok(b),
    };
    Err(UnresolvedRef {
        name: b.name.to_string(),
        field: format!("{at}.name"),
        reason: Reason::InvalidKind,
        message: format!(
            "{} speaks {wire}; only a {wire} Route can send to it",
            backend.id
        ),
    })
}

fn compile_match(
    m: &api::RouteMatch,
    at: &dyn Display,
    f: &mut Findings<'_>,
) -> Option<RequestMatch> {
    let ok_before = f.ok();
    let path = match &m.path {
        None => PathMatcher::prefix("/"),
        Some(p) => {
            let pat = || format!("{at}.path.value");
            match p.kind {
                PathMatchType::PathPrefix | PathMatchType::Exact => {
                    if let Err(e) = fields::plain_path(&p.value) {
                        f.invalid(pat(), e);
                    }
                    if p.kind == PathMatchType::Exact {
                        PathMatcher::Exact(p.value.clone())
                    } else {
                        PathMatcher::prefix(&p.value)
                    }
                }
                PathMatchType::RegularExpression => match Pattern::new(&p.value) {
                    Ok(re) => PathMatcher::RegularExpression(re),
                    Err(e) => {
                        f.invalid(pat(), fields::regex_error(&e));
                        PathMatcher::prefix("/")
                    }
                },
            }
        }
    };
    let method = m.method.as_deref().and_then(|raw| {
        let valid = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_uppercase());
        match Method::from_bytes(raw.as_bytes()) {
            Ok(method) if valid => Some(method),
            _ => {
                f.invalid(
                    format!("{at}.method"),
                    format!("{raw:?} is not an upper-case HTTP method such as GET"),
                );
                None
            }
        }
    });
    let mut headers: Vec<HeaderMatcher> = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let hat = || format!("{at}.headers[{i}]");
        let name = match fields::header_name(&h.name) {
            Ok(n) => n,
            Err(e) => {
                f.invalid(format!("{}.name", hat()), e);
                continue;
            }
        };
        if headers.iter().any(|x| x.name == name) {
            f.invalid(
                format!("{}.name", hat()),
                format!("header {name} is matched twice in one match"),
            );
            continue;
        }
        if let Some(value) = value_matcher(h.kind, &h.value, || format!("{}.value", hat()), f) {
            headers.push(HeaderMatcher { name, value });
        }
    }
    let mut query_params: Vec<QueryMatcher> = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        let qat = format!("{at}.queryParams[{i}]");
        if q.name.is_empty() {
            f.invalid(
                format!("{qat}.name"),
                "a query parameter name cannot be empty",
            );
            continue;
        }
        if query_params.iter().any(|x| x.name == q.name) {
            f.invalid(
                format!("{qat}.name"),
                format!("query parameter {:?} is matched twice in one match", q.name),
            );
            continue;
        }
        if let Some(value) = value_matcher(q.kind, &q.value, || format!("{qat}.value"), f) {
            query_params.push(QueryMatcher {
                name: q.name.clone(),
                value,
            });
        }
    }
    (ok_before && f.ok()).then_some(RequestMatch {
        path,
        method,
        headers,
        query_params,
    })
}

/// `at`: the field, built only for a finding.
fn value_matcher(
    kind: ValueMatchType,
    value: &str,
    at: impl FnOnce() -> String,
    f: &mut Findings<'_>,
) -> Option<ValueMatcher> {
    match kind {
        ValueMatchType::Exact => Some(ValueMatcher::Exact(value.to_owned())),
        ValueMatchType::RegularExpression => match Pattern::new(value) {
            Ok(p) => Some(ValueMatcher::RegularExpression(p)),
            Err(e) => {
                f.invalid(at(), fields::regex_error(&e));
                None
            }
        },
    }
}

fn header_modifier(
    m: &api::HeaderModifier,
    at: &str,
    f: &mut Findings<'_>,
) -> Option<HeaderModifier> {
    let mut out = HeaderModifier::default();
    let mut ok = true;
    for (list, target, name) in [(&m.set, &mut out.set, "set"), (&m.add, &mut out.add, "add")] {
        for (i, h) in list.iter().enumerate() {
            let hat = format!("{at}.{name}[{i}]");
            match (
                fields::modifiable_header(&h.name),
                fields::header_value(&h.value),
            ) {
                (Ok(n), Ok(v)) => {
                    if name == "set" && target.iter().any(|(x, _)| *x == n) {
                        f.invalid(format!("{hat}.name"), format!("header {n} is set twice"));
                        ok = false;
                    }
                    target.push((n, v));
                }
                (Err(e), _) => {
                    f.invalid(format!("{hat}.name"), e);
                    ok = false;
                }
                (_, Err(e)) => {
                    f.invalid(format!("{hat}.value"), e);
                    ok = false;
                }
            }
        }
    }
    for (i, raw) in m.remove.iter().enumerate() {
        match fields::modifiable_header(raw) {
            Ok(n) => out.remove.push(n),
            Err(e) => {
                f.invalid(format!("{at}.remove[{i}]"), e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn path_rewrite(
    p: &api::PathModifier,
    at: &str,
    matches: &[RequestMatch],
    f: &mut Findings<'_>,
) -> Option<PathRewrite> {
    let rewrite = match (
        &p.replace_prefix_match,
        &p.replace_full_path,
        &p.replace_regex_match,
    ) {
        (None, None, Some(v)) => {
            let at = format!("{at}.replaceRegexMatch");
            // A query may follow the path (nginx's rewrite): the same characters, and `?`.
            let (path, query) = v.split_once('?').unwrap_or((v, ""));
            let bad_query = query
                .chars()
                .find(|c| *c == '#' || c.is_whitespace() || c.is_control());
            if let Err(e) = fields::plain_path(path) {
                f.invalid(at, e);
                return None;
            }
            if let Some(c) = bad_query {
                f.invalid(at, format!("{v:?} must not contain {c:?}"));
                return None;
            }
            return match regex_template(v, matches) {
                Ok(t) => Some(PathRewrite::ReplaceRegexMatch(t)),
                Err(e) => {
                    f.invalid(at, e);
                    None
                }
            };
        }
        (Some(v), None, None) => {
            if matches
                .iter()
                .any(|m| !matches!(m.path, PathMatcher::Prefix(_)))
            {
                f.invalid(
                    format!("{at}.replacePrefixMatch"),
                    "replacePrefixMatch needs every match of the rule to be a PathPrefix",
                );
                return None;
            }
            (
                format!("{at}.replacePrefixMatch"),
                PathRewrite::ReplacePrefixMatch(v.clone()),
                v,
            )
        }
        (None, Some(v), None) => (
            format!("{at}.replaceFullPath"),
            PathRewrite::ReplaceFullPath(v.clone()),
            v,
        ),
        _ => {
            f.invalid(
                at,
                "set exactly one of replacePrefixMatch, replaceFullPath or replaceRegexMatch",
            );
            return None;
        }
    };
    match fields::plain_path(rewrite.2) {
        Ok(()) => Some(rewrite.1),
        Err(e) => {
            f.invalid(rewrite.0, e);
            None
        }
    }
}

/// `replaceRegexMatch`'s template, its group references resolved against every match's
/// regular expression (each must have the groups it names).
pub(super) fn regex_template(raw: &str, matches: &[RequestMatch]) -> Result<RegexTemplate, String> {
    let patterns: Vec<&Pattern> = matches
        .iter()
        .filter_map(|m| match &m.path {
            PathMatcher::RegularExpression(p) => Some(p),
            _ => None,
        })
        .collect();
    if patterns.is_empty() || patterns.len() != matches.len() {
        return Err(
            "replaceRegexMatch needs every match of the rule to have a RegularExpression path"
                .to_owned(),
        );
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.as_bytes().first() {
            Some(d @ b'1'..=b'9') => (char::from(*d).to_string(), 1),
            Some(b'{') => match after.find('}') {
                Some(end) if end > 1 => (after[1..end].to_owned(), end + 1),
                _ => return Err(format!("{raw:?}: ${{ needs a group name or number and }}")),
            },
            _ => {
                return Err(format!(
                    "{raw:?}: $ must be followed by a group number 1-9 or by {{name}}"
                ));
            }
        };
        let mut index = None;
        for p in &patterns {
            let found = match name.parse::<usize>() {
                Ok(n) if n >= 1 && n < p.groups() => Some(n),
                Ok(_) => None,
                Err(_) => p.group_named(&name),
            };
            let Some(found) = found else {
                return Err(format!(
                    "{raw:?}: the path pattern {:?} has no group {name}",
                    p.source()
                ));
            };
            if index.is_some_and(|i| i != found) {
                return Err(format!(
                    "{raw:?}: the group {name} has another number in each match's pattern"
                ));
            }
            index = Some(found);
        }
        if !literal.is_empty() {
            pieces.push(TemplatePiece::Literal(std::mem::take(&mut literal)));
        }
        pieces.extend(index.map(TemplatePiece::Group));
        rest = &after[len..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(TemplatePiece::Literal(literal));
    }
    Ok(RegexTemplate {
        source: raw.to_owned(),
        pieces,
    })
}

fn url_rewrite(
    rw: &api::UrlRewrite,
    at: &str,
    matches: &[RequestMatch],
    f: &mut Findings<'_>,
) -> Option<UrlRewrite> {
    let path = match &rw.path {
        Some(p) => Some(path_rewrite(p, &format!("{at}.path"), matches, f)?),
        None => None,
    };
    let hostname = match &rw.hostname {
        Some(h) => match fields::hostname(h, false).and_then(|h| fields::header_value(&h)) {
            Ok(v) => Some(v),
            Err(e) => {
                f.invalid(format!("{at}.hostname"), e);
                return None;
            }
        },
        None => None,
    };
    if path.is_none() && hostname.is_none() {
        f.invalid(at, "urlRewrite needs a path or a hostname");
        return None;
    }
    Some(UrlRewrite { path, hostname })
}

fn request_redirect(
    r: &api::RequestRedirect,
    at: &str,
    matches: &[RequestMatch],
    f: &mut Findings<'_>,
) -> Option<Redirect> {
    let mut ok = true;
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        f.invalid(
            format!("{at}.scheme"),
            format!("{s:?} must be http or https"),
        );
        ok = false;
    }
    let hostname = match &r.hostname {
        Some(h) => match fields::hostname(h, false) {
            Ok(h) => Some(h),
            Err(e) => {
                f.invalid(format!("{at}.hostname"), e);
                ok = false;
                None
            }
        },
        None => None,
    };
    if r.port == Some(0) {
        f.invalid(format!("{at}.port"), "port must be 1-65535");
        ok = false;
    }
    let code = r.status_code.unwrap_or(302);
    let status = match code {
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(code).ok(),
        _ => None,
    };
    if status.is_none() {
        f.invalid(
            format!("{at}.statusCode"),
            format!("{code} must be one of 301, 302, 303, 307, 308"),
        );
        ok = false;
    }
    let path = match &r.path {
        Some(p) => Some(path_rewrite(p, &format!("{at}.path"), matches, f)?),
        None => None,
    };
    let status = status?;
    ok.then(|| Redirect {
        scheme: r.scheme.clone(),
        hostname,
        port: r.port,
        path,
        status,
    })
}

fn direct_response(
    d: &api::DirectResponse,
    at: &str,
    f: &mut Findings<'_>,
) -> Option<DirectResponse> {
    let status = match StatusCode::from_u16(d.status) {
        Ok(s) if (200..=599).contains(&d.status) => s,
        _ => {
            f.invalid(
                format!("{at}.status"),
                format!("{} must be an HTTP status from 200 to 599", d.status),
            );
            return None;
        }
    };
    let body = d.body.clone().unwrap_or_default();
    if body.len() > MAX_DIRECT_BODY {
        f.invalid(
            format!("{at}.body"),
            format!(
                "{} bytes is more than the {MAX_DIRECT_BODY} allowed",
                body.len()
            ),
        );
        return None;
    }
    Some(DirectResponse {
        status,
        body: Bytes::from(body),
    })
}

/// The filters of one backendRef (at `at`), compiled like a rule's.
fn backend_filters(
    r: &api::BackendRef,
    at: &dyn Display,
    matches: &[RequestMatch],
    rule_filters: &Filters,
    f: &mut Findings<'_>,
) -> BackendFilters {
    let own = if r.filters.is_empty() {
        Filters::default()
    } else {
        filters(
            &r.filters,
            &format!("{at}.filters"),
            "backendRef",
            matches,
            f,
        )
    };
    if own.rewrites_path && rule_filters.rewrites_path {
        f.invalid(
            format!("{at}.filters"),
            "the rule already rewrites the path (urlRewrite.path); only one of them may",
        );
    }
    BackendFilters {
        request: own.request,
        response: own.response,
        answer: match (own.redirect, own.direct) {
            (Some(r), _) => Some(Answer::Redirect(r)),
            (None, Some(d)) => Some(Answer::DirectResponse(d)),
            (None, None) => None,
        },
    }
}

/// One backendRef: `None` when its spec is invalid (reported), else resolved or not.
pub(super) fn backend_ref(
    route: &ObjectRef,
    r: &api::BackendRef,
    at: &dyn Display,
    transport: crate::model::L4Protocol,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Result<WeightedBackend, UnresolvedRef>> {
    let weight = r.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        f.invalid(
            format!("{at}.weight"),
            format!("{weight} is more than {MAX_WEIGHT}"),
        );
        return None;
    }
    if r.port == Some(0) {
        f.invalid(format!("{at}.port"), "port must be 1-65535");
        return None;
    }
    if let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != &*route.namespace) {
        f.not_supported(
            format!("{at}.namespace"),
            &format!("a reference to another namespace ({ns})"),
        );
        return None;
    }
    let kind = r.kind.as_deref().unwrap_or("Backend");
    match kind {
        "Backend"
            if r.port.is_some()
                && (r.kind.is_some()
                    || !env.opts.discovery
                    || env.known_backends.contains(&ObjectRef::new(
                        Kind::Backend,
                        route.namespace.clone(),
                        r.name.clone(),
                    ))) =>
        {
            f.invalid(
                format!("{at}.port"),
                "port is only for kind: Service (a Backend names its own port)",
            );
            None
        }
        "Backend" => {
            let found = env
                .targets
                .borrow()
                .backend_named(&route.namespace, &r.name);
            if let Some(idx) = found {
                return Some(Ok(env.targets.borrow_mut().weighted(idx, weight)));
            }
            let target = ObjectRef::new(Kind::Backend, route.namespace.clone(), r.name.clone());
            // An unqualified name with no Backend of that name means the Service.
            if r.kind.is_none() && env.opts.discovery && !env.known_backends.contains(&target) {
                return Some(service_ref(route, r, weight, at, transport, env, true));
            }
            let why = if env.known_backends.contains(&target) {
                format!("{target} is rejected (see its own diagnostics)")
            } else if r.kind.is_none() {
                format!("{target} not found (and Service references are not supported yet)")
            } else {
                format!("{target} not found")
            };
            Some(Err(UnresolvedRef {
                name: target.key(),
                field: format!("{at}.name"),
                reason: Reason::RefNotFound,
                message: why,
            }))
        }
        "Service" if env.opts.discovery => {
            Some(service_ref(route, r, weight, at, transport, env, false))
        }
        "Service" => {
            f.not_supported(
                format!("{at}.kind"),
                "kind: Service (Kubernetes Service discovery)",
            );
            None
        }
        other => Some(Err(UnresolvedRef {
            name: format!("{}/{}", route.namespace, r.name),
            field: format!("{at}.kind"),
            reason: Reason::InvalidKind,
            message: format!("{other:?} is not a kind traffic can go to (Backend or Service)"),
        })),
    }
}

/// A backendRef to a Service port (of the `transport`'s protocol when a Service has the number
/// for TCP and UDP both). `implicit`: the ref named no kind and no Backend has the name, so a
/// missing Service is reported as "neither found".
fn service_ref(
    route: &ObjectRef,
    r: &api::BackendRef,
    weight: u32,
    at: &dyn Display,
    transport: crate::model::L4Protocol,
    env: &Env<'_>,
    implicit: bool,
) -> Result<WeightedBackend, UnresolvedRef> {
    let port = r.port.map(PortRef::Number);
    let resolved = env.targets.borrow().resolve_port(
        &route.namespace,
        &r.name,
        port.as_ref(),
        service_protocol(transport),
    );
    match resolved {
        Ok(p) => {
            let mut targets = env.targets.borrow_mut();
            let idx = targets.service(&route.namespace, &r.name, &p);
            Ok(targets.weighted(idx, weight))
        }
        Err(u) => {
            let (field, reason, message) = match u.reason {
                Reason::ServiceNotFound if implicit => (
                    format!("{at}.name"),
                    Reason::RefNotFound,
                    format!(
                        "neither Backend nor Service {}/{} found",
                        route.namespace, r.name
                    ),
                ),
                Reason::ServiceNotFound => (format!("{at}.name"), u.reason, u.message),
                _ => (format!("{at}.port"), u.reason, u.message),
            };
            Err(UnresolvedRef {
                name: format!("{}/{}", route.namespace, r.name),
                field,
                reason,
                message,
            })
        }
    }
}

fn timeouts(t: Option<&api::RouteTimeouts>, at: &str, f: &mut Findings<'_>) -> Timeouts {
    let Some(t) = t else {
        return Timeouts::default();
    };
    let request = t.request.map(std::time::Duration::from);
    let backend_request = t.backend_request.map(std::time::Duration::from);
    for (name, d) in [("request", request), ("backendRequest", backend_request)] {
        if d.is_some_and(|d| d.is_zero()) {
            f.invalid(
                format!("{at}.{name}"),
                "a timeout must be greater than zero",
            );
        }
    }
    if let (Some(r), Some(b)) = (request, backend_request)
        && b > r
    {
        f.invalid(
            format!("{at}.backendRequest"),
            "backendRequest cannot be longer than request",
        );
    }
    Timeouts {
        request,
        backend_request,
    }
}

fn retry(r: &api::RetryPolicy, at: &str, f: &mut Findings<'_>) -> Option<Retry> {
    let attempts = r.attempts.unwrap_or(2);
    let (min, max) = RETRY_ATTEMPTS;
    if !(min..=max).contains(&attempts) {
        f.invalid(
            format!("{at}.attempts"),
            format!("{attempts} must be {min}-{max} (attempts count the first try)"),
        );
    }
    let mut on = RetryOn::default();
    let conditions: Vec<String> = if r.on.is_empty() {
        vec![
            "connect-failure".into(),
            "reset".into(),
            "gateway-error".into(),
        ]
    } else {
        r.on.clone()
    };
    for (i, c) in conditions.iter().enumerate() {
        match c.as_str() {
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "gateway-error" => on.gateway_error = true,
            "5xx" => on.any_5xx = true,
            // Three digits, as the CRD's pattern has it (no sign, no leading zero).
            code => match code.parse::<u16>() {
                Ok(n) if code.len() == 3 && (400..=599).contains(&n) => on.statuses.push(n),
                _ => f.invalid(
                    format!("{at}.on[{i}]"),
                    format!("{c:?} must be connect-failure, reset, gateway-error, 5xx or a status code 400-599"),
                ),
            },
        }
    }
    let per_try_timeout = r.per_try_timeout.map(|d| d.0);
    if per_try_timeout.is_some_and(|d| d.is_zero()) {
        f.invalid(format!("{at}.perTryTimeout"), "must be greater than zero");
    }
    let max_duration = r.max_duration.map(|d| d.0);
    if max_duration.is_some_and(|d| d.is_zero()) {
        f.invalid(format!("{at}.maxDuration"), "must be greater than zero");
    }
    let backoff = r.backoff.clone().unwrap_or_default();
    let backoff_base = backoff
        .base
        .map_or(std::time::Duration::from_millis(25), |d| d.0);
    let backoff_max = backoff.max.map_or(
        std::time::Duration::from_millis(250).max(backoff_base),
        |d| d.0,
    );
    if backoff_base.is_zero() {
        f.invalid(format!("{at}.backoff.base"), "must be greater than zero");
    }
    if backoff_max < backoff_base {
        f.invalid(format!("{at}.backoff.max"), "cannot be shorter than base");
    }
    let max_body = r.max_body_bytes.unwrap_or(64 * 1024);
    if max_body > MAX_RETRY_BODY {
        f.invalid(
            format!("{at}.maxBodyBytes"),
            format!("{max_body} is more than {MAX_RETRY_BODY}"),
        );
    }
    Some(Retry {
        attempts,
        on,
        per_try_timeout,
        max_duration,
        backoff_base,
        backoff_max,
        non_idempotent: r.non_idempotent.unwrap_or(false),
        max_body_bytes: max_body as usize,
    })
}

/// The Service port protocol (`TCP` or `UDP`) a Route of `transport` sends to.
pub(super) fn service_protocol(transport: crate::model::L4Protocol) -> &'static str {
    match transport {
        crate::model::L4Protocol::Udp => "UDP",
        _ => "TCP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_match(source: &str) -> RequestMatch {
        RequestMatch {
            path: PathMatcher::RegularExpression(Pattern::new(source).unwrap()),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }

    fn filled(template: &str, source: &str, path: &str) -> String {
        let m = regex_match(source);
        let t = regex_template(template, std::slice::from_ref(&m)).unwrap();
        PathRewrite::ReplaceRegexMatch(t).apply(path, &m.path, None)
    }

    #[test]
    fn regex_rewrite_fills_numbered_and_named_groups() {
        let re = "(?i)(?:/something(/|$)(.*)).*";
        assert_eq!(filled("/$2", re, "/something/new/x"), "/new/x");
        assert_eq!(filled("/$2", re, "/something"), "/");
        assert_eq!(filled("/v1$1${2}x", re, "/SOMETHING/a"), "/v1/ax");
        assert_eq!(
            filled("/u/${id}/$10", "/users/(?P<id>[0-9]+)", "/users/42"),
            "/u/42/420"
        );
        // A group that took no part in the match is empty, as in nginx.
        assert_eq!(filled("/[$2]", "/a(x)?(y)?", "/ay"), "/[y]");
        assert_eq!(filled("/[$1]", "/a(x)?(y)?", "/ay"), "/[]");
    }

    #[test]
    fn a_query_in_the_template_comes_first_and_the_request_query_follows_unless_it_ends_with_a_question_mark()
     {
        let m = regex_match("/a/(.*)");
        let q = |template: &str, query: Option<&str>| {
            let t = regex_template(template, std::slice::from_ref(&m)).unwrap();
            PathRewrite::ReplaceRegexMatch(t).apply("/a/x", &m.path, query)
        };
        assert_eq!(q("/b/$1", Some("k=v")), "/b/x");
        assert_eq!(q("/b?id=$1", Some("k=v")), "/b?id=x&k=v");
        assert_eq!(q("/b?id=$1", None), "/b?id=x");
        assert_eq!(q("/b?id=$1?", Some("k=v")), "/b?id=x");
        assert_eq!(q("/b?", Some("k=v")), "/b");
        assert_eq!(q("/b?$1", Some("k=v")), "/b?x&k=v");
    }

    #[test]
    fn regex_rewrite_rejects_missing_groups_and_other_matches() {
        let m = regex_match("/a/(.*)");
        for (template, why) in [
            ("/$2", "has no group 2"),
            ("/${name}", "has no group name"),
            ("/$x", "must be followed by a group number"),
            ("/$0", "must be followed by a group number"),
            ("/${}", "needs a group name"),
        ] {
            let e = regex_template(template, std::slice::from_ref(&m)).unwrap_err();
            assert!(e.contains(why), "{template}: {e}");
        }
        let prefix = RequestMatch {
            path: PathMatcher::prefix("/a"),
            ..regex_match("/a")
        };
        let e = regex_template("/$1", &[m, prefix]).unwrap_err();
        assert!(e.contains("every match"), "{e}");
    }

    #[test]
    fn regex_rewrite_needs_the_same_group_numbers_in_every_match() {
        let a = regex_match("/a/(?P<id>.*)");
        let b = regex_match("/b/(x)/(?P<id>.*)");
        let e = regex_template("/${id}", &[a.clone(), b]).unwrap_err();
        assert!(e.contains("another number"), "{e}");
        let c = regex_match("/c/(?P<id>.*)");
        assert!(regex_template("/${id}", &[a, c]).is_ok());
    }
}
