//! `authentication.jwt.jwks.uri` → [`RemoteJwks`]: the URI (`https://`, or `http://`), the CA
//! bundle of an HTTPS issuer, the refresh bounds, the refetch cooldown and the stale bound.
//! The keys themselves are fetched by `proxy::jwks`, into the cell shared by every rule that
//! names the same URI.

use std::sync::Arc;
use std::time::Duration;

use super::fields::Findings;
use super::route::Env;
use super::tls::parse_ca_bundle;
use crate::api;
use crate::model::ObjectRef;
use crate::model::UpstreamTls;
use crate::model::jwt::{JwksCell, RemoteJwks, cell_key};

/// `refresh.min` when unset.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(30);
/// `refresh.max` when unset.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(3600);
/// `refetchCooldown` when unset.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// `maxStale` when unset.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// The least `refresh.min` and `refetchCooldown` may be.
const AT_LEAST: Duration = Duration::from_secs(1);

/// Compiles a `jwks` with `uri` set (and neither `secretRef` nor `inline`).
pub fn compile(
    src: &api::JwksSource,
    at: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<Arc<RemoteJwks>> {
    let raw = src.uri.as_deref()?;
    let (_, tls) = uri_and_tls(
        raw,
        src.ca_secret_ref.as_ref(),
        &format!("{at}.uri"),
        &format!("{at}.caSecretRef"),
        route,
        env,
        f,
    )?;
    let d = |v: Option<&api::Duration>, default| v.map_or(default, |d| d.0);
    let refresh = src.refresh.as_ref();
    let min_refresh = d(refresh.and_then(|r| r.min.as_ref()), DEFAULT_MIN_REFRESH);
    let max_refresh = d(refresh.and_then(|r| r.max.as_ref()), DEFAULT_MAX_REFRESH);
    let refetch_cooldown = d(src.refetch_cooldown.as_ref(), DEFAULT_COOLDOWN);
    let max_stale = d(src.max_stale.as_ref(), DEFAULT_MAX_STALE);
    let mut ok = true;
    if min_refresh < AT_LEAST {
        f.invalid(format!("{at}.refresh.min"), "at least 1s");
        ok = false;
    }
    if max_refresh < min_refresh {
        f.invalid(format!("{at}.refresh.max"), "at least refresh.min");
        ok = false;
    }
    if refetch_cooldown < AT_LEAST {
        f.invalid(
            format!("{at}.refetchCooldown"),
            "at least 1s: the cooldown is what keeps a flood of unknown kids off the issuer",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let cell = JwksCell::shared(&cell_key(raw, tls.as_deref()));
    Some(Arc::new(RemoteJwks {
        uri: raw.to_owned(),
        tls,
        min_refresh,
        max_refresh,
        refetch_cooldown,
        max_stale,
        cell,
    }))
}

/// The settings that only mean something with `uri`, set without it, are errors.
pub fn only_with_uri(src: &api::JwksSource, at: &str, f: &mut Findings<'_>) {
    if src.uri.is_some() {
        return;
    }
    let set = [
        ("caSecretRef", src.ca_secret_ref.is_some()),
        ("refresh", src.refresh.is_some()),
        ("refetchCooldown", src.refetch_cooldown.is_some()),
        ("maxStale", src.max_stale.is_some()),
    ];
    for (name, _) in set.iter().filter(|(_, s)| *s) {
        f.invalid(format!("{at}.{name}"), "only with uri");
    }
}

/// An `http` or `https` URI the gateway itself asks (a JWKS, an auth service), and the TLS
/// settings of an `https` one: the CA bundle of `ca` (a Secret's `ca.crt`), else the system's
/// trust store.
pub fn uri_and_tls(
    raw: &str,
    ca: Option<&api::LocalObjectRef>,
    at_uri: &str,
    at_ca: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<(http::Uri, Option<Arc<UpstreamTls>>)> {
    let field = at_uri;
    let uri = match raw.parse::<http::Uri>() {
        Ok(u) => u,
        Err(e) => {
            f.invalid(field, format!("not a URI: {e}"));
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            f.invalid(field, "the scheme must be https (or http)");
            return None;
        }
    };
    if uri.host().is_none_or(str::is_empty) {
        f.invalid(field, "names no host");
        return None;
    }
    let ca = match ca {
        None => None,
        Some(_) if !https => {
            f.invalid(at_ca, "a CA bundle verifies an https uri only");
            return None;
        }
        Some(r) => {
            let field = at_ca;
            let source = format!("Secret {}/{}", route.namespace, r.name);
            let Some(secret) = env
                .secrets
                .get(&(route.namespace.to_string(), r.name.clone()))
            else {
                super::access::secret_not_found(f, field.to_owned(), &source);
                return None;
            };
            let Some(pem) = &secret.ca else {
                f.invalid(field, format!("{source} has no `ca.crt` key"));
                return None;
            };
            match parse_ca_bundle(&source, pem) {
                Ok(ca) => Some(Arc::new(ca)),
                Err(e) => {
                    f.invalid(field, format!("{source}: {e}"));
                    return None;
                }
            }
        }
    };
    let tls = https.then(|| {
        Arc::new(UpstreamTls {
            server_name: None,
            ca,
            client_certificate: None,
            insecure_skip_verify: false,
        })
    });
    Some((uri, tls))
}
