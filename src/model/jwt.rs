//! JWT authentication of a rule, compiled: where the token is, the keys (each pinned to one
//! algorithm), and the claim rules.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Serialize;

/// Where a request carries its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The whole value of this header.
    Header(#[serde(serialize_with = "super::ser::header_name")] HeaderName),
    /// This cookie.
    Cookie(String),
}

/// One verification key, pinned to one algorithm (a token signed with another is refused,
/// whatever its header says).
#[derive(Clone)]
pub struct JwtKey {
    /// `kid`, if the JWK has one.
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: jsonwebtoken::Algorithm,
    /// The key.
    pub key: jsonwebtoken::DecodingKey,
}

/// A key set, and the JWKS text it was read from (for equality and `/config`).
#[derive(Clone)]
pub struct JwtKeys {
    /// `inline` or `Secret namespace/name`.
    pub source: String,
    /// The JWKS document.
    pub jwks: String,
    /// Its usable keys.
    pub keys: Vec<JwtKey>,
}

impl PartialEq for JwtKeys {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.jwks == other.jwks
    }
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("source", &self.source)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Serialize for JwtKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}:{:?}", k.kid.as_deref().unwrap_or("-"), k.alg))
            .collect();
        let mut st = s.serialize_struct("JwtKeys", 2)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("keys", &keys)?;
        st.end()
    }
}

/// A claim rule: present, or with one of `values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRule {
    /// Claim name.
    pub name: String,
    /// Accepted values; empty: presence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// JWT authentication of a rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuth {
    /// Where the token is.
    pub from: TokenSource,
    /// The signing keys.
    pub keys: Arc<JwtKeys>,
    /// Accepted `iss` (checked when set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must be in the token when set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_seconds: u64,
    /// Claims a valid token must satisfy (else 403).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<ClaimRule>,
    /// Claims copied into request headers (client-sent copies removed first).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "claim_headers"
    )]
    pub claim_to_headers: Vec<(String, HeaderName)>,
    /// `WWW-Authenticate` of a 401 without a token.
    #[serde(serialize_with = "super::ser::header_value")]
    pub challenge: HeaderValue,
}

fn claim_headers<S: serde::Serializer>(
    v: &[(String, HeaderName)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for (claim, header) in v {
        seq.serialize_element(&format!("{claim} -> {header}"))?;
    }
    seq.end()
}
