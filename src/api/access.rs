//! Access control a rule asks for besides authentication's JWT: CORS (a rule filter, Gateway
//! API's `HTTPCORSFilter`) and HTTP basic authentication (htpasswd in a Secret).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::{HEADER_NAME_PATTERN, MAX_LIST, MAX_NAME_LEN};
use super::route::LocalObjectRef;

/// Cross-origin resource sharing, as Gateway API's CORS filter: the gateway answers preflight
/// requests itself and adds the `Access-Control-*` headers to the answers of allowed origins.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed: `https://app.example.com`, `https://*.example.com` (one or more labels),
    /// `http://localhost:3000`, or `*` (every origin).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(length(max = MAX_NAME_LEN)))]
    pub allow_origins: Vec<String>,
    /// Whether credentialed requests (cookies, `Authorization`) may be read by the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Methods a preflight allows, e.g. `GET`, `PUT`, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(length(max = 32), pattern(r"^([A-Z]+|\*)$")))]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN)))]
    pub allow_headers: Vec<String>,
    /// Response headers the page may read besides the CORS-safelisted ones, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN)))]
    pub expose_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_age: Option<u32>,
}

/// HTTP basic authentication against htpasswd content (bcrypt `$2y$`, SHA-256/512 crypt `$5$`
/// / `$6$`, or `{SHA}` lines as `htpasswd -B`, `-2`, `-5`, `-s` write them).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthentication {
    /// A Secret in the Route's namespace whose `auth` key holds the htpasswd content (the key
    /// ingress-nginx uses).
    pub secret_ref: LocalObjectRef,
    /// The realm in `WWW-Authenticate` (default: the Route's namespace/name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(r#"^[^"\\\x00-\x1f\x7f]*$"#))]
    pub realm: Option<String>,
}
