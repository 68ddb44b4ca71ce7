//! Filters: what a rule does to a request or response besides routing it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

use super::matching::{PathMatcher, Pattern};

/// Header edits: `set` replaces, `add` appends, `remove` deletes (applied remove, set, add).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeaderModifier {
    /// Replaced or inserted.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::ser::header_pairs"
    )]
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::ser::header_pairs"
    )]
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Deleted.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::ser::header_names"
    )]
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the edits to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// How a path is replaced.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathRewrite {
    /// Replace the matched prefix with this.
    ReplacePrefixMatch(String),
    /// Replace the whole path with this.
    ReplaceFullPath(String),
    /// Replace the whole path with a template filled from the regular-expression match's groups.
    ReplaceRegexMatch(RegexTemplate),
}

impl PathRewrite {
    /// The new path for `path`, which the rule's path condition `matched` matched. Only
    /// `replaceRegexMatch` may set a query: then the result has a `?` and is the path and the
    /// whole query (the request's `query` merged in), sent as it is.
    pub fn apply(&self, path: &str, matched: &PathMatcher, query: Option<&str>) -> String {
        match self {
            PathRewrite::ReplaceFullPath(p) => p.clone(),
            PathRewrite::ReplaceRegexMatch(t) => match matched {
                PathMatcher::RegularExpression(p) => t.fill(path, p, query),
                // The compiler allows this rewrite only on regular-expression matches.
                _ => path.to_owned(),
            },
            PathRewrite::ReplacePrefixMatch(replacement) => {
                // The matcher is segment-aware, so `rest` is empty or starts with '/'.
                let matched = match matched {
                    PathMatcher::Prefix(p) => p.as_str(),
                    _ => "",
                };
                let rest = path.get(matched.len()..).unwrap_or("");
                let base = replacement.trim_end_matches('/');
                match (base.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_owned(),
                    (true, false) => rest.to_owned(),
                    (false, true) if replacement.ends_with('/') => format!("{base}/"),
                    (false, _) => format!("{base}{rest}"),
                }
            }
        }
    }
}

/// One piece of a [`RegexTemplate`].
#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePiece {
    /// Copied as written.
    Literal(String),
    /// The text of capture group N (empty when the group took no part in the match).
    Group(usize),
}

/// `replaceRegexMatch`: a path built from literal text and the groups of the regular expression
/// that matched the path (`$1`..`$9`, `${N}`, `${name}`), resolved to group numbers when
/// compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct RegexTemplate {
    /// As written.
    pub source: String,
    /// Literal text and group references, in order.
    pub pieces: Vec<TemplatePiece>,
}

impl RegexTemplate {
    /// The template filled from `pattern`'s match of `path` (`path` unchanged if it does not
    /// match, which only a path rewritten by an earlier filter can do). A template with a
    /// query gives `path?query`, the request's `query` after `&` unless the template ends with
    /// `?` (nginx's `rewrite`); a template ending with `?` and no request query: the path.
    pub fn fill(&self, path: &str, pattern: &Pattern, query: Option<&str>) -> String {
        let Some(caps) = pattern.captures(path) else {
            return path.to_owned();
        };
        let mut out = String::with_capacity(path.len() + self.source.len());
        for piece in &self.pieces {
            match piece {
                TemplatePiece::Literal(s) => out.push_str(s),
                TemplatePiece::Group(n) => {
                    out.push_str(caps.get(*n).map_or("", |m| m.as_str()));
                }
            }
        }
        if self.source.contains('?') {
            let keep = query.filter(|q| !q.is_empty() && !self.source.ends_with('?'));
            match keep {
                Some(q) if out.ends_with('?') => out.push_str(q),
                Some(q) => {
                    out.push('&');
                    out.push_str(q);
                }
                None if out.ends_with('?') => {
                    out.pop();
                }
                None => {}
            }
        }
        out
    }
}

impl Serialize for RegexTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Rewrites of the forwarded request.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UrlRewrite {
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// New host.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::opt_header_value"
    )]
    pub hostname: Option<HeaderValue>,
}

/// A filter applied to the request before it is forwarded, in the order written.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RequestFilter {
    /// Header edits.
    RequestHeaderModifier(HeaderModifier),
    /// Path/host rewrite.
    UrlRewrite(UrlRewrite),
}

/// A redirect answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// New scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// Redirect status.
    #[serde(serialize_with = "super::ser::status")]
    pub status: StatusCode,
}

impl Redirect {
    /// The `Location` for a request with this scheme, host (without port), path and query that
    /// reached a listener on `listener_port` (the port clients use, which may differ from the
    /// port the gateway binds, e.g. behind a Service).
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        listener_port: u16,
        path: &str,
        matched: Option<&PathMatcher>,
        query: Option<&str>,
    ) -> String {
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let new_host = self.hostname.as_deref().unwrap_or(host);
        // Gateway API (HTTPRequestRedirectFilter.port): an explicit port wins; a redirect that
        // names a scheme goes to that scheme's well-known port; otherwise to the listener's
        // port, whatever port the client wrote in its Host header.
        let new_port = match (self.port, &self.scheme) {
            (Some(p), _) => p,
            (None, Some(s)) => well_known_port(s),
            (None, None) => listener_port,
        };
        let new_path = match &self.path {
            Some(rewrite) => rewrite.apply(
                path,
                matched.unwrap_or(&PathMatcher::Prefix(String::new())),
                query,
            ),
            None => path.to_owned(),
        };
        // A rewrite that set a query (replaceRegexMatch with `?`) merged the request's in.
        let query = query.filter(|_| !new_path.contains('?'));
        let mut out = format!("{new_scheme}://{new_host}");
        if new_port != well_known_port(new_scheme) {
            out.push_str(&format!(":{new_port}"));
        }
        out.push_str(&new_path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// 443 for https, 80 for http (the only schemes a redirect may name).
fn well_known_port(scheme: &str) -> u16 {
    match scheme {
        "https" => 443,
        _ => 80,
    }
}

/// A fixed answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectResponse {
    /// Status code.
    #[serde(serialize_with = "super::ser::status")]
    pub status: StatusCode,
    /// Body, sent as text/plain.
    #[serde(serialize_with = "super::ser::bytes_str")]
    pub body: Bytes,
}

/// What a backendRef's `requestRedirect` or `directResponse` answers instead of forwarding.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    /// A redirect.
    Redirect(Redirect),
    /// A fixed response.
    DirectResponse(DirectResponse),
}

/// The filters of one backendRef: they run only for the requests the rule sends to it (its
/// canaries included), after the rule's own request filters and before its response filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendFilters {
    /// Applied to the request, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<RequestFilter>,
    /// Applied to the response, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response: Vec<HeaderModifier>,
    /// Answer instead of forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

impl BackendFilters {
    /// No filters.
    pub const NONE: BackendFilters = BackendFilters {
        request: Vec::new(),
        response: Vec::new(),
        answer: None,
    };

    /// Boxed, or `None` when there is nothing to do.
    pub fn boxed(self) -> Option<Box<Self>> {
        (!self.is_empty()).then(|| Box::new(self))
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty() && self.answer.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_keeps_the_rest_of_the_path() {
        let r = |repl: &str, path: &str, matched: &str| {
            PathRewrite::ReplacePrefixMatch(repl.into()).apply(
                path,
                &PathMatcher::prefix(matched),
                None,
            )
        };
        assert_eq!(r("/", "/api/x", "/api"), "/x");
        assert_eq!(r("/", "/api", "/api"), "/");
        assert_eq!(r("/v2", "/api/x/y", "/api"), "/v2/x/y");
        assert_eq!(r("/v2/", "/api/x", "/api"), "/v2/x");
        assert_eq!(r("/v2", "/api", "/api"), "/v2");
        assert_eq!(r("/v2/", "/api", "/api"), "/v2/");
        assert_eq!(r("/v2", "/api/", "/api"), "/v2/");
        assert_eq!(r("/v2", "/x/y", ""), "/v2/x/y");
    }

    #[test]
    fn redirect_changes_only_what_it_names() {
        let to_https = Redirect {
            scheme: Some("https".into()),
            hostname: None,
            port: None,
            path: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            to_https.location("http", "a.test", 8080, "/x", None, Some("q=1")),
            "https://a.test/x?q=1"
        );
        let host_only = Redirect {
            scheme: None,
            hostname: Some("b.test".into()),
            ..to_https.clone()
        };
        assert_eq!(
            host_only.location("http", "a.test", 8080, "/x", None, None),
            "http://b.test:8080/x"
        );
        let port = Redirect {
            port: Some(8443),
            ..to_https
        };
        assert_eq!(
            port.location("http", "a.test", 80, "/", None, None),
            "https://a.test:8443/"
        );
    }

    #[test]
    fn redirect_without_scheme_or_port_goes_to_the_listener_port() {
        let r = Redirect {
            scheme: None,
            hostname: None,
            port: None,
            path: None,
            status: StatusCode::FOUND,
        };
        assert_eq!(
            r.location("http", "a.test", 80, "/", None, None),
            "http://a.test/"
        );
        assert_eq!(
            r.location("http", "a.test", 8080, "/", None, None),
            "http://a.test:8080/"
        );
    }

    #[test]
    fn redirect_with_a_scheme_goes_to_its_well_known_port() {
        let r = |scheme: &str, port: Option<u16>| Redirect {
            scheme: Some(scheme.into()),
            hostname: None,
            port,
            path: None,
            status: StatusCode::FOUND,
        };
        assert_eq!(
            r("http", None).location("http", "a.test", 8080, "/", None, None),
            "http://a.test/"
        );
        assert_eq!(
            r("https", Some(443)).location("http", "a.test", 8080, "/", None, None),
            "https://a.test/"
        );
        assert_eq!(
            r("http", Some(443)).location("http", "a.test", 8080, "/", None, None),
            "http://a.test:443/"
        );
    }
}
