//! `authentication.jwt` → [`JwtAuth`]: the key set (inline, or a Secret's `jwks` key), each key
//! pinned to one algorithm; the token source; claim rules and claim headers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};

use super::fields::Findings;
use super::route::Env;
use crate::api;
use crate::model::ObjectRef;
use crate::model::jwt::{ClaimRule, JwtAuth, JwtKey, JwtKeys, TokenSource};

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
    let keys = keys(j.jwks.as_ref(), &format!("{at}.jwks"), route, env, f);
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
        keys: Arc::new(keys?),
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
        f.invalid(at, "set jwks: inline or secretRef");
        return None;
    };
    let (source, text) = match (&src.inline, &src.secret_ref, &src.uri) {
        (Some(text), None, None) => ("inline".to_owned(), text.clone()),
        (None, Some(r), None) => {
            let source = format!("Secret {}/{}", route.namespace, r.name);
            let field = format!("{at}.secretRef");
            let Some(secret) = env.secrets.get(&(route.namespace.clone(), r.name.clone())) else {
                f.invalid(field, format!("{source} not found"));
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
        (None, None, Some(_)) => {
            f.not_supported(
                format!("{at}.uri"),
                "JWKS fetched from a URI (use inline or secretRef)",
            );
            return None;
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

/// The usable keys of a JWKS document, each pinned to its algorithm.
pub fn parse_jwks(text: &str) -> Result<Vec<JwtKey>, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = pinned_alg(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("keys[{i}]: not a usable key: {e}"))?;
        keys.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err("the JWKS has no keys".into());
    }
    Ok(keys)
}

/// The one algorithm a key verifies: its `alg`, or the only one its type allows. Symmetric
/// (`oct`) keys must name theirs.
fn pinned_alg(jwk: &Jwk) -> Result<Algorithm, String> {
    if let Some(ka) = &jwk.common.key_algorithm {
        let alg = Algorithm::from_str(&ka.to_string())
            .map_err(|_| format!("alg {ka} is not a signature algorithm"))?;
        let fits = matches!(
            (&jwk.algorithm, alg),
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (
                AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
                | (
                    AlgorithmParameters::OctetKey(_),
                    Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                )
        );
        return if fits {
            Ok(alg)
        } else {
            Err(format!("alg {ka} does not fit the key type"))
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => {
            Err("a symmetric (oct) key must name its alg (HS256, HS384 or HS512)".into())
        }
    }
}
