//! Access control of a rule, as the proxy applies it: IP lists, CORS, basic and JWT
//! authentication, external authorization.
//! A rule without any has `Rule::access == None` (one branch on the request path).
//!
//! Evaluation order (the README's and `/config`'s [`ORDER`]): IP lists (deny, then allow) →
//! CORS preflight → authentication → authorization → rate limits → the route's filters.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use serde::Serialize;

use super::Cidr;

/// The order access policies run in, as `/config` shows it.
pub const ORDER: &[&str] = &[
    "ipDeny",
    "ipAllow",
    "corsPreflight",
    "authentication",
    "authorization",
    "rateLimits",
    "filters",
];

/// The access policies of one rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Clients refused (403) when their address is in one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_deny: Vec<Cidr>,
    /// When not empty, only clients in one of these are served (others: 403).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<Cidr>,
    /// Cross-origin resource sharing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// HTTP basic authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// JWT authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<super::jwt::JwtAuth>,
    /// External authorization (after authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<Arc<super::ext_auth::ExtAuth>>,
    /// Set when authentication is configured but an object it needs (an htpasswd, JWKS or CA
    /// Secret, the auth service's Backend) does not resolve: the rule answers 500 after the IP lists and CORS preflight
    /// (fails closed; Gateway API's rule for unresolved references). The field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<Arc<str>>,
}

impl Access {
    /// Whether the IP lists let `ip` through.
    pub fn ip_allowed(&self, ip: std::net::IpAddr) -> bool {
        if self.ip_deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.ip_allow.is_empty() || self.ip_allow.iter().any(|c| c.contains(ip))
    }

    /// Whether the client address is needed (an IP list is set).
    pub fn has_ip_lists(&self) -> bool {
        !self.ip_deny.is_empty() || !self.ip_allow.is_empty()
    }
}

/// An allowed origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// One origin, `scheme://host[:port]`, lower case.
    Exact(String),
    /// `scheme://*.suffix[:port]`: any host with one or more labels before `.suffix`.
    Subdomains {
        /// `https://`.
        scheme: String,
        /// `.example.com`.
        suffix: String,
        /// `:8443` or empty.
        port: String,
    },
}

impl OriginPattern {
    /// Whether `origin` (an `Origin` header's value) matches.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                let Some(rest) = strip_prefix_ignore_case(origin, scheme) else {
                    return false;
                };
                let (host, p) = split_port(rest);
                if !p.eq_ignore_ascii_case(port) || host.len() <= suffix.len() {
                    return false;
                }
                let (label, tail) = host.split_at(host.len() - suffix.len());
                tail.eq_ignore_ascii_case(suffix)
                    && !label.is_empty()
                    && !label.starts_with('.')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host:port` → (`host`, `:port`); IPv6 brackets kept with the host.
pub fn split_port(hostport: &str) -> (&str, &str) {
    match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => hostport.split_at(i),
        _ => (hostport, ""),
    }
}

impl Serialize for OriginPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OriginPattern::Any => s.serialize_str("*"),
            OriginPattern::Exact(o) => s.serialize_str(o),
            OriginPattern::Subdomains {
                scheme,
                suffix,
                port,
            } => s.collect_str(&format_args!("{scheme}*{suffix}{port}")),
        }
    }
}

/// A list of methods or header names, or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameList {
    /// `*`: whatever the preflight asked for.
    Any,
    /// These, joined for the header value.
    Listed(HeaderValue),
}

impl Serialize for NameList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NameList::Any => s.serialize_str("*"),
            NameList::Listed(v) => super::ser::header_value(v, s),
        }
    }
}

/// Cross-origin resource sharing of a rule (Gateway API's CORS filter).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Origins that get CORS headers; others get none (the browser then refuses).
    pub allow_origins: Vec<OriginPattern>,
    /// `Access-Control-Allow-Credentials: true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// `Access-Control-Allow-Methods` of a preflight answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<NameList>,
    /// `Access-Control-Allow-Headers` of a preflight answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<NameList>,
    /// `Access-Control-Expose-Headers` of other answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<NameList>,
    /// `Access-Control-Max-Age` of a preflight answer, seconds.
    pub max_age: u32,
}

impl Cors {
    /// Whether the origin is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|p| p.matches(origin))
    }

    /// Whether `*` is answered rather than the origin itself (any origin, no credentials).
    pub fn answers_star(&self) -> bool {
        !self.allow_credentials && self.allow_origins.contains(&OriginPattern::Any)
    }
}

/// How a password is checked: the hash forms `htpasswd` writes that are still sound.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2y$`/`$2b$`/`$2a$` bcrypt (`htpasswd -B`).
    Bcrypt(String),
    /// `$5$` SHA-256 crypt (`htpasswd -2`).
    Sha256Crypt(String),
    /// `$6$` SHA-512 crypt (`htpasswd -5`).
    Sha512Crypt(String),
    /// `{SHA}` unsalted SHA-1 (`htpasswd -s`; weak, but what Envoy and nginx accept).
    Sha1([u8; 20]),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordHash::Bcrypt(_) => "bcrypt",
            PasswordHash::Sha256Crypt(_) => "sha256-crypt",
            PasswordHash::Sha512Crypt(_) => "sha512-crypt",
            PasswordHash::Sha1(_) => "sha1",
        })
    }
}

/// HTTP basic authentication of a rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// Where the users came from (`Secret namespace/name`).
    pub source: String,
    /// `WWW-Authenticate` of a 401.
    #[serde(serialize_with = "super::ser::header_value")]
    pub challenge: HeaderValue,
    /// Users and their password hashes (never shown).
    #[serde(rename = "users", serialize_with = "user_count")]
    pub users: Arc<HashMap<String, PasswordHash>>,
}

fn user_count<S: serde::Serializer>(
    u: &Arc<HashMap<String, PasswordHash>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(scheme: &str, suffix: &str, port: &str) -> OriginPattern {
        OriginPattern::Subdomains {
            scheme: scheme.into(),
            suffix: suffix.into(),
            port: port.into(),
        }
    }

    #[test]
    fn wildcard_origins_match_subdomains_of_the_same_scheme_and_port_only() {
        let p = sub("https://", ".example.com", "");
        assert!(p.matches("https://app.example.com"));
        assert!(p.matches("https://a.b.example.com"));
        assert!(p.matches("HTTPS://App.Example.COM"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("http://app.example.com"));
        assert!(!p.matches("https://app.example.com:8443"));
        assert!(!p.matches("https://evilexample.com"));
        assert!(!p.matches("https://app.example.com.evil.org"));
        assert!(!p.matches("null"));
        let p = sub("http://", ".local", ":3000");
        assert!(p.matches("http://dev.local:3000"));
        assert!(!p.matches("http://dev.local"));
    }

    #[test]
    fn exact_origins_match_whole_origins() {
        let p = OriginPattern::Exact("https://app.example.com".into());
        assert!(p.matches("https://app.example.com"));
        assert!(!p.matches("https://app.example.com:444"));
        assert!(!p.matches("https://app.example.co"));
    }

    #[test]
    fn deny_wins_over_allow_and_empty_allow_means_everyone() {
        let a = Access {
            ip_deny: vec!["10.0.0.7".parse().unwrap()],
            ip_allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..Access::default()
        };
        assert!(a.ip_allowed("10.1.2.3".parse().unwrap()));
        assert!(!a.ip_allowed("10.0.0.7".parse().unwrap()));
        assert!(!a.ip_allowed("192.0.2.1".parse().unwrap()));
        let open = Access {
            ip_deny: vec!["2001:db8::/32".parse().unwrap()],
            ..Access::default()
        };
        assert!(open.ip_allowed("192.0.2.1".parse().unwrap()));
        assert!(!open.ip_allowed("2001:db8::5".parse().unwrap()));
    }
}
