//! Request conditions: path, method, headers and query parameters.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use serde::{Serialize, Serializer};

/// The parts of a request that matching reads; borrowed, so matching never allocates.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Path, without the query string.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// A regular expression anchored to the whole input, remembered with its source.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source` so that it must match the whole input.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }

    /// The groups of the whole of `s`'s match, if it matches.
    pub fn captures<'s>(&self, s: &'s str) -> Option<regex::Captures<'s>> {
        self.regex.captures(s)
    }

    /// The number of capture groups, the whole match (group 0) included.
    pub fn groups(&self) -> usize {
        self.regex.captures_len()
    }

    /// The number of the group named `name`, if there is one.
    pub fn group_named(&self, name: &str) -> Option<usize> {
        self.regex.capture_names().position(|n| n == Some(name))
    }

    /// The pattern as the user wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A path condition.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatcher {
    /// Segment-aware prefix, stored without a trailing slash (`/` is stored as ``).
    Prefix(String),
    /// The whole path.
    Exact(String),
    /// A pattern over the whole path.
    RegularExpression(Pattern),
}

impl PathMatcher {
    /// A prefix condition; a trailing slash is ignored, as in Gateway API (`/api/` ≡ `/api`).
    pub fn prefix(value: &str) -> Self {
        PathMatcher::Prefix(value.trim_end_matches('/').to_owned())
    }

    /// Whether `path` meets the condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
            }
            PathMatcher::Exact(exact) => path == exact,
            PathMatcher::RegularExpression(p) => p.is_match(path),
        }
    }
}

/// A value condition, for headers and query parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueMatcher {
    /// Byte-for-byte equality.
    Exact(String),
    /// A pattern over the whole value.
    RegularExpression(Pattern),
}

impl ValueMatcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Exact(v) => v == value,
            ValueMatcher::RegularExpression(p) => p.is_match(value),
        }
    }
}

/// Shown as users write it: `{type: PathPrefix, value: /api}`.
impl Serialize for PathMatcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, value) = match self {
            PathMatcher::Prefix(p) if p.is_empty() => ("PathPrefix", "/"),
            PathMatcher::Prefix(p) => ("PathPrefix", p.as_str()),
            PathMatcher::Exact(p) => ("Exact", p.as_str()),
            PathMatcher::RegularExpression(p) => ("RegularExpression", p.source()),
        };
        TypedValue { kind, value }.serialize(s)
    }
}

/// Shown as users write it: `{type: Exact, value: v2}`.
impl Serialize for ValueMatcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, value) = match self {
            ValueMatcher::Exact(v) => ("Exact", v.as_str()),
            ValueMatcher::RegularExpression(p) => ("RegularExpression", p.source()),
        };
        TypedValue { kind, value }.serialize(s)
    }
}

#[derive(Serialize)]
struct TypedValue<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    value: &'a str,
}

/// A header condition: some value of the header meets it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatcher {
    /// Header name, lower-case.
    #[serde(serialize_with = "super::ser::header_name")]
    pub name: HeaderName,
    /// The condition on its value.
    #[serde(flatten)]
    pub value: ValueMatcher,
}

/// A query-parameter condition: some value of the parameter (percent-decoded) meets it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryMatcher {
    /// Parameter name, case-sensitive.
    pub name: String,
    /// The condition on its value.
    #[serde(flatten)]
    pub value: ValueMatcher,
}

/// Every condition of one `matches` entry; all must hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// Path condition.
    pub path: PathMatcher,
    /// Method condition.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::opt_method"
    )]
    pub method: Option<Method>,
    /// Header conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    /// Query conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatcher>,
}

impl Default for RequestMatch {
    /// Every request: prefix `/`.
    fn default() -> Self {
        Self {
            path: PathMatcher::prefix("/"),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }
}

impl RequestMatch {
    /// Whether the request meets every condition. Cheap conditions are checked first.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        if !self.path.matches(req.path) {
            return false;
        }
        for h in &self.headers {
            let found = req
                .headers
                .get_all(&h.name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| h.value.matches(v)));
            if !found {
                return false;
            }
        }
        for q in &self.query_params {
            let found = query_pairs(req.query.unwrap_or(""))
                .any(|(k, v)| k == q.name.as_str() && q.value.matches(&v));
            if !found {
                return false;
            }
        }
        true
    }
}

/// The `name=value` pairs of a query string, values percent-decoded (allocating only when needed).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_segment_aware() {
        let m = PathMatcher::prefix("/api");
        assert!(m.matches("/api"));
        assert!(m.matches("/api/"));
        assert!(m.matches("/api/x"));
        assert!(!m.matches("/apix"));
        assert!(!m.matches("/ap"));
    }

    #[test]
    fn prefix_ignores_trailing_slash_and_root_matches_all() {
        let m = PathMatcher::prefix("/api/");
        assert!(m.matches("/api"));
        assert!(m.matches("/api/v1"));
        assert!(!m.matches("/apiv1"));
        let root = PathMatcher::prefix("/");
        assert!(root.matches("/"));
        assert!(root.matches("/anything/at/all"));
    }

    #[test]
    fn regex_must_match_the_whole_value() {
        let p = Pattern::new("/v[0-9]+").unwrap();
        assert!(p.is_match("/v12"));
        assert!(!p.is_match("/v12/x"));
        assert!(!p.is_match("x/v1"));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let pairs: Vec<_> = query_pairs("a=1&b=x%20y&&c&d=%zz").collect();
        assert_eq!(pairs[0], ("a".into(), "1".into()));
        assert_eq!(pairs[1], ("b".into(), "x y".into()));
        assert_eq!(pairs[2], ("c".into(), "".into()));
        assert_eq!(pairs[3], ("d".into(), "%zz".into()));
    }
}
