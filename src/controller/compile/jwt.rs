//! `authentication.jwt` → [`JwtAuth`]: the key set (inline, or a Secret's `jwks` key), each key
//! pinned to one algorithm; the token source; claim rules and claim headers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::fields::Findings;
use super::jwks_uri as remote;
use super::route::Env;
use crate::api;
use crate::model::ObjectRef;
use crate::model::jwt::{ClaimRule, JwtAuth, JwtKeys, Keys, TokenSource, parse_jwks};

/// The most `leeway` may be.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// `leeway` when unset.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Compiles `j`; problems are in the findings.
pub fn compile(
    j: &api::JwtAuthentication,
    at: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<JwtAuth> {
    let keys = match j.jwks.as_ref() {
        Some(
            src @ api::JwksSource {
                uri: Some(_),
                secret_ref: None,
                inline: None,
                ..
            },
        ) => remote::compile(src, &format!("{at}.jwks"), route, env, f).map(Keys::Remote),
        src => {
            let at = format!("{at}.jwks");
            if let Some(src) = src {
                remote::only_with_uri(src, &at, f);
            }
            keys(src, &at, route, env, f).map(|k| Keys::Static(Arc::new(k)))
        }
    };
    let from = match (&j.from_header, &j.from_cookie) {
        (Some(_), Some(_)) => {
            f.invalid(at, "set at most one of fromHeader and fromCookie");
            TokenSource::Bearer
        }
        (Some(h), None) => match HeaderName::from_str(h) {
            Ok(h) if h == http::header::AUTHORIZATION => TokenSource::Bearer,
            Ok(h) => TokenSource::Header(h),
            Err(_) => {
                f.invalid(format!("{at}.fromHeader"), "not a header name");
                TokenSource::Bearer
            }
        },
        (None, Some(c)) => TokenSource::Cookie(c.clone()),
        (None, None) => TokenSource::Bearer,
    };
    let leeway = j.leeway.as_ref().map_or(DEFAULT_LEEWAY, |d| d.0);
    if leeway > MAX_LEEWAY {
        f.invalid(
            format!("{at}.leeway"),
            "at most 5m: a larger skew keeps expired tokens alive",
        );
    }
    let mut claim_to_headers = Vec::new();
    for (i, c) in j.claim_to_headers.iter().enumerate() {
        match HeaderName::from_str(&c.header) {
            Ok(h)
                if !crate::api::limits::MANAGED_HEADERS.contains(&h.as_str())
                    && h != http::header::AUTHORIZATION =>
            {
                claim_to_headers.push((c.claim.clone(), h));
            }
            _ => f.invalid(
                format!("{at}.claimToHeaders[{i}].header"),
                "not a header name the gateway lets a claim set",
            ),
        }
    }
    let realm = format!("{}/{}", route.namespace, route.name);
    let challenge = HeaderValue::try_from(format!("Bearer realm=\"{realm}\"")).ok()?;
    Some(JwtAuth {
        from,
        keys: keys?,
        issuer: j.issuer.clone(),
        audiences: j.audiences.clone(),
        leeway_seconds: leeway.as_secs(),
        required_claims: j
            .required_claims
            .iter()
            .map(|c| ClaimRule {
                name: c.name.clone(),
                values: c.values.clone(),
            })
            .collect(),
        claim_to_headers,
        challenge,
    })
}

fn keys(
    src: Option<&api::JwksSource>,
    at: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<JwtKeys> {
    let Some(src) = src else {
        f.invalid(at, "set jwks: uri, inline or secretRef");
        return None;
    };
    let (source, text) = match (&src.inline, &src.secret_ref, &src.uri) {
        (Some(text), None, None) => ("inline".to_owned(), text.clone()),
        (None, Some(r), None) => {
            let source = format!("Secret {}/{}", route.namespace, r.name);
            let field = format!("{at}.secretRef");
            let Some(secret) = env
                .secrets
                .get(&(route.namespace.to_string(), r.name.clone()))
            else {
                super::access::secret_not_found(f, field, &source);
                return None;
            };
            let Some(jwks) = &secret.jwks else {
                f.invalid(field, format!("{source} has no `jwks` key"));
                return None;
            };
            match std::str::from_utf8(jwks) {
                Ok(t) => (source, t.to_owned()),
                Err(_) => {
                    f.invalid(field, format!("{source}: `jwks` is not UTF-8"));
                    return None;
                }
            }
        }
        _ => {
            f.invalid(at, "set exactly one of uri, secretRef or inline");
            return None;
        }
    };
    match parse_jwks(&text) {
        Ok(keys) => Some(JwtKeys {
            source,
            jwks: text,
            keys,
        }),
        Err(e) => {
            f.invalid(at, format!("{source}: {e}"));
            None
        }
    }
}
