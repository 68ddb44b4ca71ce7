//! Size limits shared by the CRD schema (`maxItems`, `maxLength`) and the compiler, so that the
//! apiserver and `tidegate validate` refuse exactly the same objects.
//!
//! Every list and every string a CEL rule reads has a bound: the apiserver estimates a rule's
//! cost from them and refuses a CRD whose rules could cost too much.

/// `spec.hostnames` of a Route (as Gateway API).
pub const MAX_HOSTNAMES: usize = 16;
/// A host name, wildcard included (RFC 1123).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// `spec.rules` of a Route (as Gateway API: with backendRef filters, rules × backendRefs ×
/// filters × headers is the cardinality of the deepest CEL rule, which must stay within the
/// apiserver's cost budget).
pub const MAX_RULES: usize = 16;
/// `matches`, `filters`, `backendRefs` of one rule; a backendRef's `filters`; headers and query
/// parameters of one match; `set`, `add`, `remove` of a header modifier; `retry.on`; status
/// lists of health checks.
pub const MAX_LIST: usize = 16;
/// `ipAllow` and `ipDeny` of one rule (no CEL rule reads them).
pub const MAX_CIDRS: usize = 256;
/// `spec.endpoints` of a Backend.
pub const MAX_ENDPOINTS: usize = 1024;
/// A header or query parameter name.
pub const MAX_NAME_LEN: usize = 256;
/// A path, a path prefix, a path pattern or a rewrite.
pub const MAX_PATH_LEN: usize = 1024;
/// A header or query value (or pattern) matched, a header value set.
pub const MAX_VALUE_LEN: usize = 4096;
/// `directResponse.body`, in bytes (the schema counts characters: see the README).
pub const MAX_DIRECT_BODY: usize = 64 * 1024;
/// `weight` of a backendRef (as Gateway API).
pub const MAX_WEIGHT: u32 = 1_000_000;
/// `retry.maxBodyBytes`.
pub const MAX_RETRY_BODY: u32 = 16 * 1024 * 1024;
/// `retry.attempts`, the first try included.
pub const RETRY_ATTEMPTS: (u32, u32) = (2, 10);

/// A host name with an optional `*.` first label; letters of either case (the compiler
/// lower-cases them). The four-numbers form of an IPv4 address is refused by a CEL rule and the
/// compiler alike.
pub const HOSTNAME_PATTERN: &str = r"^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$";
/// A DNS name a Backend follows: labels of letters, digits, `-` and `_` (SRV names such as
/// `_http._tcp.api.service.consul`), an optional final dot.
pub const DNS_NAME_PATTERN: &str = r"^[a-zA-Z0-9_]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9_])?(\.[a-zA-Z0-9_]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9_])?)*\.?$";
/// The same without the wildcard.
pub const EXACT_HOSTNAME_PATTERN: &str = r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$";
/// What looks like an IPv4 address (and is therefore not a host name).
pub const IPV4_LIKE_PATTERN: &str = r"^(\*\.)?[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$";
/// An absolute path with no query, fragment, white space or control character.
pub const PLAIN_PATH_PATTERN: &str = r"^/[^?#\p{Z}\p{Cc}]*$";
/// An absolute path, maybe followed by `?` and a query; no fragment, white space or control
/// character (`replaceRegexMatch`).
pub const PATH_AND_QUERY_PATTERN: &str = r"^/[^#\p{Z}\p{Cc}]*$";
/// An HTTP header name (an RFC 9110 token).
pub const HEADER_NAME_PATTERN: &str = r"^[-A-Za-z0-9!#$%&'*+.^_`|~]+$";
/// What an HTTP header value may hold: no control character but tab.
pub const HEADER_VALUE_PATTERN: &str = r"^[^\x00-\x08\x0A-\x1F\x7F]*$";
/// A cookie name (an RFC 6265 token: the characters of a header name).
pub const COOKIE_NAME_PATTERN: &str = HEADER_NAME_PATTERN;
/// A cookie's `Path`: an absolute path of visible ASCII without `;`.
pub const COOKIE_PATH_PATTERN: &str = r"^/[\x21-\x3A\x3C-\x7E]*$";
/// A cookie's `Domain`: a host name, maybe with a leading dot.
pub const COOKIE_DOMAIN_PATTERN: &str = r"^\.?[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$";
/// An upper-case HTTP method.
pub const METHOD_PATTERN: &str = r"^[A-Z]+$";
/// A rule name (an RFC 1123 label).
pub const RULE_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A status (`503`) or an inclusive range (`500-599`), within 100-599.
pub const STATUS_RANGE_PATTERN: &str = r"^[1-5][0-9]{2}(-[1-5][0-9]{2})?$";
/// A `retry.on` condition.
pub const RETRY_ON_PATTERN: &str = r"^(connect-failure|reset|gateway-error|5xx|[45][0-9]{2})$";
/// Headers the proxy manages itself; filters may not touch them (lower case).
pub const MANAGED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "x-forwarded-client-cert",
];
