//! Why the gateway answered a request itself: one machine-readable word per cause, in the
//! access log (`reason`) and as the `reason` label of `tidegate_requests`. A response the
//! upstream sent has no reason (the empty string: no label value, no log field).

/// The upstream answered; nothing to explain.
pub const NONE: &str = "";
/// No rule matches the host and path (404).
pub const NO_ROUTE: &str = "no_route";
/// The request cannot be routed as sent: no valid Host, an invalid rewrite (400).
pub const BAD_REQUEST: &str = "bad_request";
/// The client's request body was malformed or cut off (400).
pub const CLIENT_BODY: &str = "client_body";
/// The client's request body stopped arriving for longer than `--body-read-timeout` (408).
pub const CLIENT_BODY_TIMEOUT: &str = "client_body_timeout";
/// The request body is longer than the rule's `maxRequestBodyBytes` (413).
pub const BODY_TOO_LARGE: &str = "body_too_large";
/// Every backendRef of the matched rule has weight 0 (503).
pub const NO_BACKEND: &str = "no_backend";
/// The rule has no backendRefs (500, as Gateway API asks).
pub const NO_BACKEND_REFS: &str = "no_backend_refs";
/// The picked backendRef does not resolve to a backend (500, as Gateway API asks).
pub const UNRESOLVED_BACKEND: &str = "unresolved_backend";
/// The picked backend has no endpoints (503).
pub const NO_ENDPOINTS: &str = "no_endpoints";
/// Every endpoint of the picked backend is unhealthy or ejected (503).
pub const NO_HEALTHY_ENDPOINTS: &str = "no_healthy_endpoints";
/// The backend's circuit breaker is open (503).
pub const BREAKER_OPEN: &str = "breaker_open";
/// The backend's connection limit and its queue are full (503).
pub const OVERLOADED: &str = "overloaded";
/// No connection to the endpoint could be made (502).
pub const CONNECT_FAILED: &str = "connect_failed";
/// The TLS handshake with the endpoint failed: its certificate did not verify (wrong CA,
/// wrong name, expired), or the upstream refused the handshake (502).
pub const UPSTREAM_TLS: &str = "upstream_tls";
/// The upstream connection broke or the upstream spoke invalid HTTP (502).
pub const UPSTREAM_RESET: &str = "upstream_reset";
/// The upstream did not answer in time (504).
pub const TIMEOUT: &str = "timeout";
/// A protocol upgrade that cannot be proxied (502).
pub const UPGRADE_FAILED: &str = "upgrade_failed";
/// A rate limit refused the request (429, or the policy's status).
pub const RATE_LIMITED: &str = "rate_limited";
/// A Global rate limit with failureMode Closed could not reach Redis (503).
pub const RATE_LIMIT_UNAVAILABLE: &str = "rate_limit_unavailable";
/// The client address is in the rule's `ipDeny` or not in its `ipAllow` (403).
pub const IP_DENIED: &str = "ip_denied";
/// A CORS preflight the gateway answered itself (204).
pub const CORS_PREFLIGHT: &str = "cors_preflight";
/// Authentication missing or wrong (401 with `WWW-Authenticate`).
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// A valid token that fails a claim rule of the rule's JWT authentication (403).
pub const FORBIDDEN_CLAIMS: &str = "forbidden_claims";
/// The rule's JWKS URI has no keys to verify with: not fetched yet, or stale past `maxStale`
/// (503).
pub const JWKS_UNAVAILABLE: &str = "jwks_unavailable";
/// The rule's auth service refused the request (its status and body).
pub const EXT_AUTHZ_DENIED: &str = "ext_authz_denied";
/// The request body is longer than the rule's `extAuth.maxBodyBytes` (413).
pub const EXT_AUTHZ_BODY_TOO_LARGE: &str = "ext_authz_body_too_large";
/// The rule's auth service could not be asked and its failure mode is Closed (503).
pub const EXT_AUTHZ_UNAVAILABLE: &str = "ext_authz_unavailable";
/// The rule's authentication needs an object that does not resolve (a missing htpasswd,
/// JWKS or CA Secret, an auth service's Backend): it fails closed (500).
pub const UNRESOLVED_AUTHENTICATION: &str = "unresolved_authentication";
/// The rule answers with a configured direct response.
pub const DIRECT_RESPONSE: &str = "direct_response";
/// The rule answers with a configured redirect.
pub const REDIRECT: &str = "redirect";
/// A plain-HTTP request for a host served over HTTPS that asks for the redirect (308).
pub const HTTPS_REDIRECT: &str = "https_redirect";
/// The embedding program's middleware answered.
pub const MIDDLEWARE: &str = "middleware";
/// The upstream's error answer was replaced by the rule's error page (`errorResponses`; the
/// error-page backend's status).
pub const ERROR_PAGE: &str = "error_page";
/// The rule's error page could not answer; the upstream's error answer was sent as it was.
pub const ERROR_PAGE_FAILED: &str = "error_page_failed";

/// The rule requires a client certificate (Route `spec.tls.clientValidation`, mode
/// `Require`) and the connection has no valid one for it (403).
pub const CLIENT_CERTIFICATE_REQUIRED: &str = "client_certificate_required";

/// Every reason, for documentation and tests.
pub const ALL: &[&str] = &[
    NO_ROUTE,
    BAD_REQUEST,
    CLIENT_BODY,
    CLIENT_BODY_TIMEOUT,
    BODY_TOO_LARGE,
    NO_BACKEND,
    NO_BACKEND_REFS,
    UNRESOLVED_BACKEND,
    NO_ENDPOINTS,
    NO_HEALTHY_ENDPOINTS,
    BREAKER_OPEN,
    OVERLOADED,
    CONNECT_FAILED,
    UPSTREAM_TLS,
    UPSTREAM_RESET,
    TIMEOUT,
    UPGRADE_FAILED,
    RATE_LIMITED,
    RATE_LIMIT_UNAVAILABLE,
    IP_DENIED,
    CORS_PREFLIGHT,
    UNAUTHENTICATED,
    FORBIDDEN_CLAIMS,
    JWKS_UNAVAILABLE,
    EXT_AUTHZ_DENIED,
    EXT_AUTHZ_UNAVAILABLE,
    EXT_AUTHZ_BODY_TOO_LARGE,
    UNRESOLVED_AUTHENTICATION,
    DIRECT_RESPONSE,
    REDIRECT,
    HTTPS_REDIRECT,
    MIDDLEWARE,
    CLIENT_CERTIFICATE_REQUIRED,
    ERROR_PAGE,
    ERROR_PAGE_FAILED,
];
