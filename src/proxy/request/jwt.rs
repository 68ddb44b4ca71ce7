//! JWT authentication of one request: the token from its source, a key of the rule's set
//! chosen by `kid` and pinned algorithm (no `alg` confusion, never `none`), signature, `exp`
//! and `nbf` (with leeway; a claim of the wrong type is an error, jsonwebtoken >= 10.3), `iss`
//! and `aud` when configured, then the claim rules and the claim headers.

use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use crate::model::jwt::{JwtAuth, Keys, TokenSource};

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No token (401 with the bare challenge).
    Missing,
    /// A token that does not verify (401 `invalid_token`).
    Invalid,
    /// A valid token that fails a claim rule (403 `insufficient_scope`).
    Claims,
    /// The rule's JWKS URI has not been fetched (yet, or its keys went stale): 503.
    KeysUnavailable,
}

/// Verifies the request's token; on success sets the claim headers (after removing any copy
/// the client sent).
pub fn verify(jwt: &JwtAuth, headers: &mut HeaderMap) -> Result<VerifiedClaims, Refused> {
    for (_, h) in &jwt.claim_to_headers {
        headers.remove(h);
    }
    let token = token(&jwt.from, headers).ok_or(Refused::Missing)?;
    let claims = claims(jwt, &token)?;
    for rule in &jwt.required_claims {
        let ok = claims.get(&rule.name).is_some_and(|v| {
            rule.values.is_empty() || values(v).any(|x| rule.values.iter().any(|w| w == x))
        });
        if !ok {
            return Err(Refused::Claims);
        }
    }
    for (claim, h) in &jwt.claim_to_headers {
        let text = match claims.get(claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        // A value that cannot be a header (control characters) is left out, not forwarded.
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(h.clone(), v);
        }
    }
    Ok(VerifiedClaims(claims))
}

/// The claims of the token a request's rule verified, kept in the request's extensions for
/// the steps after authentication (a rate limit keyed by `jwtClaim`). Never the client's
/// word: only a verified token puts them there.
#[derive(Clone, Debug)]
pub struct VerifiedClaims(pub Map<String, Value>);

/// The strings a claim holds: a string's space-separated words, an array's strings.
fn values(v: &Value) -> Box<dyn Iterator<Item = &str> + '_> {
    match v {
        Value::String(s) => Box::new(s.split(' ').filter(|w| !w.is_empty())),
        Value::Array(a) => Box::new(a.iter().filter_map(Value::as_str)),
        _ => Box::new(std::iter::empty()),
    }
}

fn token(from: &TokenSource, headers: &HeaderMap) -> Option<String> {
    match from {
        TokenSource::Bearer => {
            let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, t) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| t.trim().to_owned())
        }
        TokenSource::Header(h) => Some(headers.get(h)?.to_str().ok()?.trim().to_owned()),
        TokenSource::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.to_owned())
            }),
    }
    .filter(|t| !t.is_empty())
}

/// The claims of a token that verifies against a key of the set. A token whose `kid` is not in
/// a fetched set asks for a refetch (the fetch task applies the cooldown) and is refused.
fn claims(jwt: &JwtAuth, token: &str) -> Result<Map<String, Value>, Refused> {
    // An unknown `alg` (`none` included) fails here.
    let head = jsonwebtoken::decode_header(token).map_err(|_| Refused::Invalid)?;
    let fetched;
    let keys = match &jwt.keys {
        Keys::Static(k) => &k.keys,
        Keys::Remote(r) => {
            fetched = r.cell.keys().ok_or(Refused::KeysUnavailable)?;
            if let Some(kid) = &head.kid
                && !fetched.keys.iter().any(|k| k.kid.as_ref() == Some(kid))
            {
                r.cell.ask_refetch();
                return Err(Refused::Invalid);
            }
            &fetched.keys
        }
    };
    let key = keys
        .iter()
        .find(|k| {
            k.alg == head.alg
                && match (&head.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })
        .ok_or(Refused::Invalid)?;
    let mut v = Validation::new(key.alg);
    v.leeway = jwt.leeway_seconds;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp"]);
    if let Some(iss) = &jwt.issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".into());
    }
    if jwt.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&jwt.audiences);
        v.required_spec_claims.insert("aud".into());
    }
    jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v)
        .map(|d| d.claims)
        .map_err(|_| Refused::Invalid)
}
