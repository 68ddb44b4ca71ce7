//! A rule's access control: `ipAllow`/`ipDeny`, its `cors` filter and `authentication` →
//! [`Access`] (or `None` when the rule asks for none, so that it costs nothing per request).

use http::HeaderValue;

use super::fields::Findings;
use super::route::Env;
use crate::api;
use crate::model::{Access, Cidr, Cors, Diagnostic, NameList, OriginPattern, Reason, Severity};

/// The rule's access policies; problems are in the findings.
pub fn access(
    rule: &api::RouteRule,
    cors: Option<(usize, &api::Cors)>,
    at: &dyn std::fmt::Display,
    route: &crate::model::ObjectRef,
    hostnames: &[String],
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Box<Access>> {
    // Most rules have none: they skip building (and comparing, and dropping) an empty one.
    if rule.ip_deny.is_empty()
        && rule.ip_allow.is_empty()
        && cors.is_none()
        && rule.authentication.is_none()
    {
        return None;
    }
    let mut access = Access::default();
    // Paths are written only for the lists a rule has: most have none.
    if !rule.ip_deny.is_empty() {
        access.ip_deny = cidrs(&rule.ip_deny, &format!("{at}.ipDeny"), f);
    }
    if !rule.ip_allow.is_empty() {
        access.ip_allow = cidrs(&rule.ip_allow, &format!("{at}.ipAllow"), f);
    }
    if let Some((i, c)) = cors {
        access.cors = compile_cors(c, &format!("{at}.filters[{i}].cors"), f);
    }
    if let Some(auth) = &rule.authentication {
        let at = format!("{at}.authentication");
        if let Some(j) = &auth.jwt {
            access.jwt = super::jwt::compile(j, &format!("{at}.jwt"), route, env, f);
        }
        if auth.jwt.is_some() && auth.basic.is_some() {
            f.invalid(
                &at,
                "set one of jwt and basic: a request carries one Authorization",
            );
        }
        if let Some(e) = &auth.ext_auth {
            access.ext_auth =
                super::ext_auth::compile(e, &format!("{at}.extAuth"), route, hostnames, env, f);
        }
        if let Some(b) = &auth.basic {
            access.basic = super::basic_auth::compile(b, &format!("{at}.basic"), route, env, f);
        }
        // Configured but not compiled, with nothing rejecting the Route: a Secret it needs is
        // missing (see `secret_not_found`). The rule fails closed with 500.
        let missing = (auth.jwt.is_some() && access.jwt.is_none())
            || (auth.basic.is_some() && access.basic.is_none())
            || (auth.ext_auth.is_some() && access.ext_auth.is_none());
        if missing && f.ok() {
            access.unresolved = Some(at.into());
        }
    }
    (access != Access::default()).then(|| Box::new(access))
}

/// A Secret the rule's authentication names does not exist: as in Gateway API for unresolved
/// references, the Route stays accepted (`ResolvedRefs=False` naming the field) and the rule
/// answers 500 until the Secret exists, instead of serving without authentication.
pub fn secret_not_found(f: &mut Findings<'_>, field: String, source: &str) {
    let id = f.id();
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(
            id,
            field,
            Reason::SecretNotFound,
            format!("{source} not found: the rule answers 500 until it exists"),
        )
    });
}

fn cidrs(list: &[String], at: &str, f: &mut Findings<'_>) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse::<Cidr>()
                .map_err(|e| f.invalid(format!("{at}[{i}]"), e.to_string()))
                .ok()
        })
        .collect()
}

/// Gateway API's CORS filter: origins `*`, `scheme://host[:port]` or `scheme://*.domain[:port]`.
fn compile_cors(c: &api::Cors, at: &str, f: &mut Findings<'_>) -> Option<Cors> {
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match origin(o) {
            Ok(p) => origins.push(p),
            Err(e) => f.invalid(format!("{at}.allowOrigins[{i}]"), e),
        }
    }
    if origins.is_empty() && c.allow_origins.is_empty() {
        f.invalid(
            format!("{at}.allowOrigins"),
            "list at least one origin (or \"*\"); a CORS filter without origins allows nothing",
        );
    }
    let methods = names(&c.allow_methods, &format!("{at}.allowMethods"), f);
    let headers = names(&c.allow_headers, &format!("{at}.allowHeaders"), f);
    let expose = names(&c.expose_headers, &format!("{at}.exposeHeaders"), f);
    let credentials = c.allow_credentials == Some(true);
    if credentials && matches!(expose, Some(NameList::Any)) {
        f.invalid(
            format!("{at}.exposeHeaders"),
            "\"*\" exposes nothing to credentialed requests (browsers read it as a header name); list the headers",
        );
    }
    Some(Cors {
        allow_origins: origins,
        allow_credentials: credentials,
        allow_methods: methods,
        allow_headers: headers,
        expose_headers: expose,
        max_age: c.max_age.unwrap_or(5),
    })
}

fn origin(o: &str) -> Result<OriginPattern, String> {
    if o == "*" {
        return Ok(OriginPattern::Any);
    }
    let o = o.to_ascii_lowercase();
    let (scheme, rest) = match o.split_once("://") {
        Some((s, r))
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (s, r)
        }
        _ => {
            return Err(format!(
                "{o:?} is not an origin: expected scheme://host[:port], e.g. https://app.example.com, https://*.example.com or \"*\""
            ));
        }
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{o:?} is not an origin: only scheme://host[:port], no path, query or user"
        ));
    }
    let (host, port) = crate::model::access::split_port(rest);
    if !port.is_empty() && port[1..].parse::<u16>().is_err() {
        return Err(format!("{o:?}: the port is not a number"));
    }
    match host.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') => {
            Ok(OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: suffix.to_owned(),
                port: port.to_owned(),
            })
        }
        _ if host.contains('*') => Err(format!(
            "{o:?}: a wildcard may only be the whole first label (https://*.example.com)"
        )),
        _ => Ok(OriginPattern::Exact(o)),
    }
}

/// Methods or header names as one header value, or `*`.
fn names(list: &[String], at: &str, f: &mut Findings<'_>) -> Option<NameList> {
    if list.is_empty() {
        return None;
    }
    if list.iter().any(|n| n == "*") {
        if list.len() > 1 {
            f.invalid(at, "\"*\" stands alone: it already allows everything");
        }
        return Some(NameList::Any);
    }
    match HeaderValue::from_str(&list.join(", ")) {
        Ok(v) => Some(NameList::Listed(v)),
        Err(_) => {
            f.invalid(at, "not valid header names or methods");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_into_exact_wildcard_and_any() {
        assert_eq!(origin("*").unwrap(), OriginPattern::Any);
        assert_eq!(
            origin("HTTPS://App.Example.com").unwrap(),
            OriginPattern::Exact("https://app.example.com".into())
        );
        assert_eq!(
            origin("https://*.example.com:8443").unwrap(),
            OriginPattern::Subdomains {
                scheme: "https://".into(),
                suffix: ".example.com".into(),
                port: ":8443".into()
            }
        );
        for bad in [
            "example.com",
            "https://example.com/",
            "https://a.*.example.com",
            "https://*example.com",
            "https://x:port",
            "https://",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
