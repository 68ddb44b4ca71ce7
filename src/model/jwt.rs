//! JWT authentication of a rule, compiled: where the token is, the keys (each pinned to one
//! algorithm), and the claim rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::str::FromStr;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};

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
    pub keys: Keys,
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

/// Where a rule's keys are: a fixed set (inline, a Secret, a file), or a JWKS URI whose keys
/// a background task fetches (`proxy::jwks`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Keys {
    /// Read when the configuration was compiled.
    Static(Arc<JwtKeys>),
    /// Fetched from a URI.
    Remote(Arc<RemoteJwks>),
}

/// A JWKS fetched from a URI: where, how often, and the cell its current keys are in.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwks {
    /// `https://…` (or `http://…`).
    pub uri: String,
    /// The TLS settings of an `https` URI (CA bundle or the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Arc<super::UpstreamTls>>,
    /// The least time between fetches.
    #[serde(serialize_with = "super::ser::duration_str")]
    pub min_refresh: Duration,
    /// The most time between fetches.
    #[serde(serialize_with = "super::ser::duration_str")]
    pub max_refresh: Duration,
    /// The least time between fetches caused by unknown `kid`s.
    #[serde(serialize_with = "super::ser::duration_str")]
    pub refetch_cooldown: Duration,
    /// How long keys serve past their refresh while fetches fail.
    #[serde(serialize_with = "super::ser::duration_str")]
    pub max_stale: Duration,
    /// The current keys, shared by every rule (and every table) naming the same URI and TLS
    /// settings.
    #[serde(skip)]
    pub cell: Arc<JwksCell>,
}

impl PartialEq for RemoteJwks {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
            && self.tls == other.tls
            && self.min_refresh == other.min_refresh
            && self.max_refresh == other.max_refresh
            && self.refetch_cooldown == other.refetch_cooldown
            && self.max_stale == other.max_stale
    }
}

impl RemoteJwks {
    /// What tells two fetch tasks apart: every setting (two rules that name the same URI with
    /// different settings run one task each, into the same cell).
    pub fn task_key(&self) -> String {
        format!(
            "{} {:?} {:?} {:?} {:?}",
            self.cell_key_text(),
            self.min_refresh,
            self.max_refresh,
            self.refetch_cooldown,
            self.max_stale
        )
    }

    fn cell_key_text(&self) -> String {
        cell_key(&self.uri, self.tls.as_deref())
    }
}

/// The identity of a [`JwksCell`]: the URI and the CA bundle that verifies it.
pub fn cell_key(uri: &str, tls: Option<&super::UpstreamTls>) -> String {
    let ca = tls
        .and_then(|t| t.ca.as_deref())
        .map_or("system", |c| c.fingerprint.as_str());
    format!("{uri} ca={ca}")
}

/// The keys of one JWKS URI as last fetched (`None` before the first good fetch, or after
/// they went stale), and the request path's way to ask for a refetch (a token with an
/// unknown `kid`). The fetch task decides when to act on it.
#[derive(Default)]
pub struct JwksCell {
    keys: ArcSwapOption<JwtKeys>,
    refetch: tokio::sync::Notify,
}

impl std::fmt::Debug for JwksCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCell")
            .field("keys", &self.keys.load())
            .finish()
    }
}

impl JwksCell {
    /// The cell for `key` ([`cell_key`]) shared by every table that holds it: a recompiled
    /// table finds the keys the previous one fetched (a reload fetches nothing).
    pub fn shared(key: &str) -> Arc<JwksCell> {
        static CELLS: Mutex<Option<HashMap<String, Weak<JwksCell>>>> = Mutex::new(None);
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        let cells = cells.get_or_insert_with(HashMap::new);
        if let Some(cell) = cells.get(key).and_then(Weak::upgrade) {
            return cell;
        }
        cells.retain(|_, c| c.strong_count() > 0);
        let cell = Arc::new(JwksCell::default());
        cells.insert(key.to_owned(), Arc::downgrade(&cell));
        cell
    }

    /// The current keys.
    pub fn keys(&self) -> Option<Arc<JwtKeys>> {
        self.keys.load_full()
    }

    /// Replaces the keys.
    pub fn set(&self, keys: Option<Arc<JwtKeys>>) {
        self.keys.store(keys);
    }

    /// Asks the fetch task for a refetch (it applies the cooldown; many asks are one).
    pub fn ask_refetch(&self) {
        self.refetch.notify_one();
    }

    /// Resolves when a refetch was asked for.
    pub async fn refetch_asked(&self) {
        self.refetch.notified().await;
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
