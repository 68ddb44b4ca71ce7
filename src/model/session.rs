//! Sticky sessions: the cookie a backend's `loadBalancer.sessionPersistence` makes the gateway
//! set, and how its `Set-Cookie` header is written.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use serde::Serialize;

use super::PathMatcher;

/// A cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None`.
    None,
}

/// The session cookie of a backend: a request carrying it goes to the endpoint it names while
/// that endpoint is there and available; any other request is balanced as usual and its
/// response sets the cookie for the endpoint that answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCookie {
    /// The cookie's name (an RFC 6265 token).
    pub name: String,
    /// `Path`; `None`: the path of the rule's match that took the request (see
    /// [`SessionCookie::path_for`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Domain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Max-Age` (and `Expires`); `None`: a session cookie.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub max_age: Option<Duration>,
    /// `Secure`: always, never, or (`None`) when the request came over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// A retry after a failed attempt on the cookie's endpoint goes to another endpoint (and
    /// the cookie follows it); otherwise it stays on that endpoint while it is available.
    pub change_on_failure: bool,
}

/// The cookie name when the Backend names none.
pub const DEFAULT_SESSION_COOKIE: &str = "TIDEGATE_SESSION";

impl SessionCookie {
    /// A session cookie named `name` with the defaults: the rule's path, `HttpOnly`, `Secure`
    /// over TLS, no expiry.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: None,
            domain: None,
            max_age: None,
            secure: None,
            http_only: true,
            same_site: None,
            change_on_failure: false,
        }
    }

    /// The value of this cookie in request headers `headers`, if they carry it.
    pub fn value_in<'a>(&self, headers: &'a http::HeaderMap) -> Option<&'a str> {
        super::canary::cookie(headers, &self.name)
    }

    /// The `Path` for a request whose rule matched `matched`: the configured path, else a
    /// PathPrefix or Exact match's value, else `/`.
    pub fn path_for<'a>(&'a self, matched: &'a PathMatcher) -> &'a str {
        if let Some(p) = &self.path {
            return p;
        }
        let p = match matched {
            PathMatcher::Prefix(p) | PathMatcher::Exact(p) => p.as_str(),
            PathMatcher::RegularExpression(_) => "/",
        };
        // A path that would not survive as an attribute value (a `;`, a space) is not used.
        if p.starts_with('/') && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';') {
            p
        } else {
            "/"
        }
    }

    /// The `Set-Cookie` value naming endpoint `id` for a request whose rule matched `matched`,
    /// over TLS or not, at `now`.
    pub fn set_cookie(
        &self,
        id: &str,
        matched: &PathMatcher,
        tls: bool,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        // Attributes in the order ingress-nginx (lua-resty-cookie) writes them.
        let mut v = String::with_capacity(96);
        let _ = write!(v, "{}={id}", self.name);
        if let Some(age) = self.max_age {
            let _ = write!(
                v,
                "; Expires={}; Max-Age={}",
                httpdate::fmt_http_date(now + age),
                age.as_secs()
            );
        }
        if let Some(d) = &self.domain {
            let _ = write!(v, "; Domain={d}");
        }
        let _ = write!(v, "; Path={}", self.path_for(matched));
        if self.secure.unwrap_or(tls) {
            v.push_str("; Secure");
        }
        if self.http_only {
            v.push_str("; HttpOnly");
        }
        if let Some(s) = self.same_site {
            v.push_str(match s {
                SameSite::Strict => "; SameSite=Strict",
                SameSite::Lax => "; SameSite=Lax",
                SameSite::None => "; SameSite=None",
            });
        }
        HeaderValue::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_defaults_to_the_matched_prefix_or_exact_path() {
        let c = SessionCookie::new("s");
        assert_eq!(c.path_for(&PathMatcher::prefix("/app/")), "/app");
        assert_eq!(c.path_for(&PathMatcher::prefix("/")), "/");
        assert_eq!(c.path_for(&PathMatcher::Exact("/x".into())), "/x");
        let re = PathMatcher::RegularExpression(crate::model::Pattern::new("/a.*").unwrap());
        assert_eq!(c.path_for(&re), "/");
        assert_eq!(c.path_for(&PathMatcher::Exact("/a;b".into())), "/");
        let c = SessionCookie {
            path: Some("/set".into()),
            ..c
        };
        assert_eq!(c.path_for(&re), "/set");
    }

    #[test]
    fn set_cookie_writes_every_attribute_asked_for() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let root = PathMatcher::prefix("/");
        let c = SessionCookie::new("route");
        assert_eq!(
            c.set_cookie("00ff", &root, false, at).unwrap(),
            "route=00ff; Path=/; HttpOnly"
        );
        assert_eq!(
            c.set_cookie("00ff", &root, true, at).unwrap(),
            "route=00ff; Path=/; Secure; HttpOnly"
        );
        let c = SessionCookie {
            domain: Some("example.com".into()),
            max_age: Some(Duration::from_secs(172_800)),
            secure: Some(false),
            http_only: false,
            same_site: Some(SameSite::Strict),
            ..c
        };
        assert_eq!(
            c.set_cookie("1", &PathMatcher::prefix("/shop"), true, at)
                .unwrap(),
            "route=1; Expires=Thu, 16 Nov 2023 22:13:20 GMT; Max-Age=172800; \
             Domain=example.com; Path=/shop; SameSite=Strict"
        );
    }
}
