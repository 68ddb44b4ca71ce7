//! `authentication.extAuth` → [`ExtAuth`]: the auth service (a URL and its CA, or a Backend
//! resolved like a rule's backendRefs), the headers sent and copied back, timeout, failure
//! mode and decision cache.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use http::uri::PathAndQuery;

use super::fields::{self, Findings};
use super::jwks_uri::uri_and_tls;
use super::route::{Env, backend_ref, warning};
use crate::api;
use crate::model::ext_auth::{AuthService, CacheSettings, Decisions, ExtAuth, Template, Var};
use crate::model::{L4Protocol, ObjectRef, Reason, UpstreamProtocol, WeightedBackend};

/// `timeout` when unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most `timeout` may be.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The most `cache.ttl` may be.
const MAX_TTL: Duration = Duration::from_secs(300);

/// The most `maxBodyBytes` may be: each request being checked holds that much in memory.
const MAX_BODY_BYTES: u32 = 8 * 1024 * 1024;

/// Compiles `e`; problems are in the findings.
pub fn compile(
    e: &api::ExtAuth,
    at: &str,
    route: &ObjectRef,
    hostnames: &[String],
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Arc<ExtAuth>> {
    if let Some(n) = e.max_body_bytes
        && !(1..=MAX_BODY_BYTES).contains(&n)
    {
        f.invalid(
            format!("{at}.maxBodyBytes"),
            format!("{n} must be from 1 to {MAX_BODY_BYTES} (the body is held in memory)"),
        );
    }
    let append_path = e.append_path.unwrap_or(true);
    let (service, target) = match auth_service(e, at, route, hostnames, env, f) {
        Some((s, t)) => (Some(s), t),
        None => (None, None),
    };
    let forward_all_headers = e.forward_all_headers == Some(true);
    if forward_all_headers && e.headers_to_auth.is_some() {
        f.invalid(
            format!("{at}.headersToAuth"),
            "set one of headersToAuth or forwardAllHeaders",
        );
    }
    let method = e.method.as_ref().and_then(|m| method(m, at, f));
    let deny_statuses = deny_statuses(&e.deny_statuses, at, f);
    let signin = e
        .signin_url
        .as_ref()
        .and_then(|raw| signin(raw, &format!("{at}.signinUrl"), f));
    let default_headers = [
        http::header::AUTHORIZATION.as_str().to_owned(),
        http::header::COOKIE.as_str().to_owned(),
    ];
    let headers_to_auth = names(
        match (forward_all_headers, e.headers_to_auth.as_deref()) {
            (true, _) => &[],
            (false, Some(listed)) => listed,
            (false, None) => &default_headers,
        },
        &format!("{at}.headersToAuth"),
        false,
        f,
    );
    let allowed_upstream_headers = names(
        &e.allowed_upstream_headers,
        &format!("{at}.allowedUpstreamHeaders"),
        true,
        f,
    );
    let timeout = e.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        f.invalid(format!("{at}.timeout"), "more than 0s and at most 60s");
    }
    let cache = e.cache.as_ref().map(|c| {
        if c.ttl.0.is_zero() || c.ttl.0 > MAX_TTL {
            f.invalid(
                format!("{at}.cache.ttl"),
                "more than 0s and at most 5m: a decision outlives a revoked session this long",
            );
        }
        if c.key_headers.is_empty() {
            f.invalid(format!("{at}.cache.keyHeaders"), "name at least one header");
        }
        CacheSettings {
            key_headers: names(&c.key_headers, &format!("{at}.cache.keyHeaders"), false, f),
            ttl: c.ttl.0,
        }
    });
    Some(Arc::new(ExtAuth {
        service: service?,
        method,
        append_path,
        forward_all_headers,
        deny_statuses,
        target,
        signin,
        set_cookie_always: e.pass_set_cookie.map(|p| p == api::PassSetCookie::Always),
        headers_to_auth,
        allowed_upstream_headers,
        timeout,
        max_body_bytes: e.max_body_bytes,
        fail_open: e.failure_mode == Some(api::FailureMode::Open),
        cache,
        decisions: Decisions::default(),
    }))
}

/// Where the auth service is: `url` (with its CA; with `appendPath: false` its expanded
/// form when it has variables), or `backendRef` (with `pathPrefix`). `None` when invalid
/// (reported) or when the backendRef does not resolve (a warning: the rule then answers 500,
/// see `access::access`).
fn auth_service(
    e: &api::ExtAuth,
    at: &str,
    route: &ObjectRef,
    hostnames: &[String],
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<(AuthService, Option<Template>)> {
    match (&e.url, &e.backend_ref) {
        (Some(raw), None) => {
            if e.path_prefix.is_some() {
                f.invalid(
                    format!("{at}.pathPrefix"),
                    "pathPrefix is for backendRef (a url carries its path)",
                );
            }
            let append_path = e.append_path.unwrap_or(true);
            let template = if append_path {
                if raw.contains('$') {
                    f.invalid(
                        format!("{at}.url"),
                        "variables ($…) only with appendPath: false",
                    );
                    return None;
                }
                None
            } else {
                Some(url_template(raw, &format!("{at}.url"), hostnames, f)?)
            };
            // Checked (scheme, host, TLS) in a form with the variables filled in.
            let sample = template.as_ref().map(|t| sample(t, hostnames));
            let (url, tls) = uri_and_tls(
                sample.as_deref().unwrap_or(raw),
                e.ca_secret_ref.as_ref(),
                &format!("{at}.url"),
                &format!("{at}.caSecretRef"),
                route,
                env,
                f,
            )?;
            if append_path && url.query().is_some() {
                f.invalid(
                    format!("{at}.url"),
                    "no query: the request's path and query are appended to the URL's path \
                     (unless appendPath is false)",
                );
            }
            Some((
                AuthService::Url { url, tls },
                template.filter(|t| !t.is_literal()),
            ))
        }
        (None, Some(r)) => backend(r, e, at, route, env, f).map(|b| (b, None)),
        (Some(_), Some(_)) | (None, None) => {
            f.invalid(at, "set exactly one of url or backendRef");
            None
        }
    }
}

/// `url` with variables: `$host` is the only one allowed in its host (and only when the
/// Route's hostnames are all exact, so that the client cannot pick where the subrequest goes).
fn url_template(
    raw: &str,
    at: &str,
    hostnames: &[String],
    f: &mut Findings<'_>,
) -> Option<Template> {
    let t = Template::parse(raw).map_err(|e| f.invalid(at, e)).ok()?;
    for v in t.vars_before_path() {
        let name = Var::NAMES
            .iter()
            .find(|(_, x)| *x == v)
            .map_or("", |(n, _)| n);
        if v != Var::Host {
            f.invalid(
                at,
                format!(
                    "${name} in the URL's scheme or host: where the auth request goes would come \
                     from the client (only $host may be there)"
                ),
            );
            return None;
        }
        if hostnames.is_empty() || hostnames.iter().any(|h| h.starts_with('*')) {
            f.invalid(
                at,
                "$host in the URL's host needs hostnames, none a wildcard: else the client picks \
                 where the auth request goes",
            );
            return None;
        }
    }
    Some(t)
}

/// `t` with example values (the first hostname for `$host`), to check its form.
fn sample(t: &Template, hostnames: &[String]) -> String {
    t.expand(|v, out| match v {
        Var::Host => out.push_str(hostnames.first().map_or("host.invalid", |h| h.as_str())),
        Var::Scheme => out.push_str("http"),
        Var::RequestUri | Var::Uri => out.push_str("/p"),
        _ => out.push('x'),
    })
}

/// `method`: an upper-case method name.
fn method(m: &str, at: &str, f: &mut Findings<'_>) -> Option<http::Method> {
    http::Method::from_bytes(m.as_bytes())
        .ok()
        .filter(|m| m.as_str().bytes().all(|b| b.is_ascii_uppercase()))
        .or_else(|| {
            f.invalid(format!("{at}.method"), format!("{m:?} is not a method"));
            None
        })
}

/// `denyStatuses`: non-2xx statuses.
fn deny_statuses(raw: &[u16], at: &str, f: &mut Findings<'_>) -> Vec<http::StatusCode> {
    let mut out = Vec::new();
    for (i, &code) in raw.iter().enumerate() {
        match http::StatusCode::from_u16(code) {
            Ok(c) if (300..600).contains(&code) => out.push(c),
            _ => f.invalid(
                format!("{at}.denyStatuses[{i}]"),
                format!("{code} is not a non-2xx status (300 to 599)"),
            ),
        }
    }
    out
}

/// `signinUrl`: an absolute http(s) URL or a path, with variables.
fn signin(raw: &str, at: &str, f: &mut Findings<'_>) -> Option<Template> {
    let t = Template::parse(raw).map_err(|e| f.invalid(at, e)).ok()?;
    let example = sample(&t, &[]);
    let form_ok = (example.starts_with("https://")
        || example.starts_with("http://")
        || example.starts_with('/'))
        && http::HeaderValue::from_str(&example).is_ok();
    if !form_ok {
        f.invalid(at, "an http(s) URL or a path starting with /");
        return None;
    }
    Some(t)
}

/// `backendRef`, resolved as a rule's backendRefs are (a Backend; in Kubernetes mode, else
/// the Service of that name); an HTTP Backend only.
fn backend(
    r: &api::LocalObjectRef,
    e: &api::ExtAuth,
    at: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<AuthService> {
    if e.ca_secret_ref.is_some() {
        f.invalid(
            format!("{at}.caSecretRef"),
            "caSecretRef is for url; a Backend's own tls settings verify it",
        );
    }
    let path_prefix = e.path_prefix.clone().unwrap_or_default();
    if !path_prefix.is_empty()
        && let Err(why) = fields::plain_path(&path_prefix)
            .and_then(|()| PathAndQuery::try_from(path_prefix.as_str()).map_err(|e| e.to_string()))
    {
        f.invalid(format!("{at}.pathPrefix"), why);
    }
    let as_ref = api::BackendRef {
        name: r.name.clone(),
        ..api::BackendRef::default()
    };
    let at = format!("{at}.backendRef");
    let unresolved = |field: String, reason, message: String, f: &mut Findings<'_>| {
        f.push(warning(
            route,
            field,
            reason,
            format!("{message}: the rule answers 500"),
        ));
        None
    };
    let index = match backend_ref(route, &as_ref, &at, L4Protocol::Tcp, env, f)? {
        Ok(WeightedBackend {
            backend: Some(index),
            ..
        }) => index,
        Ok(_) => return None,
        // The ref has no port: a Service with several needs a Backend that names one.
        Err(u) if u.reason == Reason::PortNotFound => {
            let message = format!(
                "{}; to ask one of its ports, name a Backend whose service names it",
                u.message.trim_end_matches("; name one with port")
            );
            return unresolved(format!("{at}.name"), u.reason, message, f);
        }
        Err(u) => return unresolved(u.field, u.reason, u.message, f),
    };
    let targets = env.targets.borrow();
    let backend = targets.backend(index);
    if let UpstreamProtocol::Tcp | UpstreamProtocol::Udp = backend.protocol {
        let message = format!(
            "{} speaks {}; an auth service is asked over HTTP (a Backend with protocol HTTP1, H2C or HTTP2)",
            backend.id,
            fields::wire_name(&backend.protocol)
        );
        return unresolved(format!("{at}.name"), Reason::InvalidKind, message, f);
    }
    Some(AuthService::Backend {
        backend: backend.label.clone(),
        index,
        path_prefix,
    })
}

/// Header names; `upstream`: names an auth answer may set on the request (not the ones the
/// proxy manages, nor `Host`).
fn names(raw: &[String], at: &str, upstream: bool, f: &mut Findings<'_>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, n) in raw.iter().enumerate() {
        match HeaderName::from_str(n) {
            Ok(h)
                if upstream
                    && (crate::api::limits::MANAGED_HEADERS.contains(&h.as_str())
                        || h == http::header::HOST) =>
            {
                f.invalid(
                    format!("{at}[{i}]"),
                    "a header the proxy manages cannot come from the auth service",
                );
            }
            Ok(h) => out.push(h),
            Err(_) => f.invalid(format!("{at}[{i}]"), "not a header name"),
        }
    }
    out
}
