//! `authentication.extAuth` → [`ExtAuth`]: the auth service's URL (and CA), the headers sent
//! and copied back, timeout, failure mode and decision cache.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::fields::Findings;
use super::jwks_uri::uri_and_tls;
use super::route::Env;
use crate::api;
use crate::model::ObjectRef;
use crate::model::ext_auth::{CacheSettings, Decisions, ExtAuth};

/// `timeout` when unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most `timeout` may be.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The most `cache.ttl` may be.
const MAX_TTL: Duration = Duration::from_secs(300);

/// Compiles `e`; problems are in the findings.
/// The most `maxBodyBytes` may be: each request being checked holds that much in memory.
const MAX_BODY_BYTES: u32 = 8 * 1024 * 1024;

pub fn compile(
    e: &api::ExtAuth,
    at: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Arc<ExtAuth>> {
    if e.backend_ref.is_some() {
        f.not_supported(
            format!("{at}.backendRef"),
            "a Backend as the auth service (use url)",
        );
    }
    if let Some(n) = e.max_body_bytes
        && !(1..=MAX_BODY_BYTES).contains(&n)
    {
        f.invalid(
            format!("{at}.maxBodyBytes"),
            format!("{n} must be from 1 to {MAX_BODY_BYTES} (the body is held in memory)"),
        );
    }
    let Some(raw) = e.url.as_deref() else {
        if e.backend_ref.is_none() {
            f.invalid(format!("{at}.url"), "set url: the auth service");
        }
        return None;
    };
    let url_and_tls = uri_and_tls(
        raw,
        e.ca_secret_ref.as_ref(),
        &format!("{at}.url"),
        &format!("{at}.caSecretRef"),
        route,
        env,
        f,
    );
    if let Some((url, _)) = &url_and_tls
        && url.query().is_some()
    {
        f.invalid(
            format!("{at}.url"),
            "no query: the request's path and query are appended to the URL's path",
        );
    }
    let default_headers = [
        http::header::AUTHORIZATION.as_str().to_owned(),
        http::header::COOKIE.as_str().to_owned(),
    ];
    let headers_to_auth = names(
        e.headers_to_auth.as_deref().unwrap_or(&default_headers),
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
    let (url, tls) = url_and_tls?;
    Some(Arc::new(ExtAuth {
        url,
        tls,
        headers_to_auth,
        allowed_upstream_headers,
        timeout,
        max_body_bytes: e.max_body_bytes,
        fail_open: e.failure_mode == Some(api::FailureMode::Open),
        cache,
        decisions: Decisions::default(),
    }))
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
