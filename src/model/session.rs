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
    /// `SameSite=None` is left out for clients that reject or mishandle it (see
    /// [`same_site_none_compatible`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conditional_same_site_none: bool,
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
            conditional_same_site_none: false,
            change_on_failure: false,
        }
    }

    /// Whether `SameSite=None` is to be left out for a request with these headers (the
    /// setting is on and its User-Agent is one that mishandles it).
    pub fn omit_same_site_none(&self, headers: &http::HeaderMap) -> bool {
        self.conditional_same_site_none
            && self.same_site == Some(SameSite::None)
            && !same_site_none_compatible(
                headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            )
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
        omit_same_site_none: bool,
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
        match self.same_site {
            Some(SameSite::Strict) => v.push_str("; SameSite=Strict"),
            Some(SameSite::Lax) => v.push_str("; SameSite=Lax"),
            Some(SameSite::None) if !omit_same_site_none => v.push_str("; SameSite=None"),
            Some(SameSite::None) | None => {}
        }
        HeaderValue::try_from(v).ok()
    }
}

/// Whether a client with this User-Agent takes `SameSite=None` (ingress-nginx's list, after
/// <https://www.chromium.org/updates/same-site/incompatible-clients>): Chrome 40–69, iOS 12
/// and Safari on macOS 10.14 do not.
pub fn same_site_none_compatible(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent else {
        return true;
    };
    let old_chrome = ["Chrome/4", "Chrome/5", "Chrome/6"]
        .iter()
        .any(|c| ua.contains(c));
    let ios_12 = ua.contains("CPU iPhone OS 12") || ua.contains("iPad; CPU OS 12");
    let mojave_safari = ua.contains("Macintosh")
        && ua.contains("Intel Mac OS X 10_14")
        && ua.contains("Safari")
        && !ua.contains("Chrome");
    !(old_chrome || ios_12 || mojave_safari)
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
            c.set_cookie("00ff", &root, false, false, at).unwrap(),
            "route=00ff; Path=/; HttpOnly"
        );
        assert_eq!(
            c.set_cookie("00ff", &root, true, false, at).unwrap(),
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
            c.set_cookie("1", &PathMatcher::prefix("/shop"), true, false, at)
                .unwrap(),
            "route=1; Expires=Thu, 16 Nov 2023 22:13:20 GMT; Max-Age=172800; \
             Domain=example.com; Path=/shop; SameSite=Strict"
        );
    }

    #[test]
    fn samesite_none_is_left_out_for_the_clients_that_mishandle_it() {
        let old = [
            "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/59.0.3071.115 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15",
        ];
        let new = [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0 Safari/537.36",
            "curl/8.5.0",
        ];
        assert!(old.iter().all(|ua| !same_site_none_compatible(Some(ua))));
        assert!(new.iter().all(|ua| same_site_none_compatible(Some(ua))));
        assert!(same_site_none_compatible(None));
        let c = SessionCookie {
            same_site: Some(SameSite::None),
            conditional_same_site_none: true,
            ..SessionCookie::new("s")
        };
        let mut h = http::HeaderMap::new();
        assert!(!c.omit_same_site_none(&h));
        h.insert(http::header::USER_AGENT, old[0].parse().unwrap());
        assert!(c.omit_same_site_none(&h));
        let at = SystemTime::UNIX_EPOCH;
        let root = PathMatcher::prefix("/");
        assert_eq!(
            c.set_cookie("1", &root, true, true, at).unwrap(),
            "s=1; Path=/; Secure; HttpOnly"
        );
        assert_eq!(
            c.set_cookie("1", &root, true, false, at).unwrap(),
            "s=1; Path=/; Secure; HttpOnly; SameSite=None"
        );
    }
}
