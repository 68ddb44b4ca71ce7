//! Canaries: a slice of a backend's traffic moved to another backend, by weight, or always
//! (or never) for requests that carry a header or cookie.
//!
//! The weight part is folded into the rule's weighted schedule at compile time; the header and
//! cookie part is a request-time decision made here, so the proxy stays a thin caller.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, header};
use serde::Serialize;

use super::BackendIdx;

/// A header or cookie value that sends a request to the canary.
pub const CANARY_ALWAYS: &str = "always";
/// A header or cookie value that keeps a request on the primary.
pub const CANARY_NEVER: &str = "never";

/// One canary of a backendRef's backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Canary {
    /// Index of the canary backend in the table.
    #[serde(skip)]
    pub backend: BackendIdx,
    /// The canary backend's label.
    pub name: Arc<str>,
    /// Percent (0-100) of the primary's share that goes to the canary.
    pub weight: u32,
    /// A request header whose value `always`/`never` overrides the weight.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::opt_header_name"
    )]
    pub header: Option<HeaderName>,
    /// A cookie whose value `always`/`never` overrides the weight (after the header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// What the headers and cookies of a request decide, given the canaries of one primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Override {
    /// Send to this canary (index in the canary list).
    Canary(usize),
    /// Keep the request on the primary.
    Primary,
}

/// Header first (over every canary), then cookie, as API.md specifies. `None`: let the weight
/// decide.
pub fn canary_override(canaries: &[Canary], headers: &HeaderMap) -> Option<Override> {
    for (i, c) in canaries.iter().enumerate() {
        if let Some(name) = &c.header
            && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
            && let Some(o) = decide(v.trim(), i)
        {
            return Some(o);
        }
    }
    for (i, c) in canaries.iter().enumerate() {
        if let Some(name) = &c.cookie
            && let Some(v) = cookie(headers, name)
            && let Some(o) = decide(v, i)
        {
            return Some(o);
        }
    }
    None
}

fn decide(value: &str, canary: usize) -> Option<Override> {
    if value.eq_ignore_ascii_case(CANARY_ALWAYS) {
        Some(Override::Canary(canary))
    } else if value.eq_ignore_ascii_case(CANARY_NEVER) {
        Some(Override::Primary)
    } else {
        None
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, without allocating.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn canary(header: Option<&'static str>, cookie: Option<&str>) -> Canary {
        Canary {
            backend: 1,
            name: "default/api-v2".into(),
            weight: 0,
            header: header.map(HeaderName::from_static),
            cookie: cookie.map(str::to_owned),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn header_beats_cookie_beats_weight() {
        let c = [canary(Some("x-canary"), Some("canary"))];
        let both = headers(&[("x-canary", "never"), ("cookie", "a=1; canary=always")]);
        assert_eq!(canary_override(&c, &both), Some(Override::Primary));
        let cookie_only = headers(&[("cookie", "a=1; canary=always")]);
        assert_eq!(canary_override(&c, &cookie_only), Some(Override::Canary(0)));
        let other_value = headers(&[("x-canary", "maybe")]);
        assert_eq!(canary_override(&c, &other_value), None);
        assert_eq!(canary_override(&c, &HeaderMap::new()), None);
    }

    #[test]
    fn any_canary_header_is_checked_before_any_cookie() {
        let c = [canary(None, Some("c1")), canary(Some("x-two"), None)];
        let h = headers(&[("cookie", "c1=always"), ("x-two", "always")]);
        assert_eq!(canary_override(&c, &h), Some(Override::Canary(1)));
    }
}
