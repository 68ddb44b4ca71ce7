//! External authorization of a rule, compiled: where the auth service is, what it is sent,
//! what of its answer reaches the backend, its timeout and failure mode, and the decision
//! cache (runtime state held by the rule: a recompiled table starts with an empty one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use serde::Serialize;

use super::{BackendIdx, UpstreamTls};

/// The most decisions a rule's cache holds (then expired ones go, or all of them).
pub const MAX_CACHED: usize = 10_000;

/// External authorization of a rule.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuth {
    /// Where the auth service is: a URL, or a backend of the table.
    #[serde(flatten)]
    pub service: AuthService,
    /// Request headers sent along (none listed with `forward_all_headers`).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::ser::header_names"
    )]
    pub headers_to_auth: Vec<HeaderName>,
    /// Headers of an allowing answer copied upstream (the client's copies always removed).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::ser::header_names"
    )]
    pub allowed_upstream_headers: Vec<HeaderName>,
    /// How long the auth service may take.
    #[serde(serialize_with = "super::ser::duration_str")]
    pub timeout: Duration,
    /// Send the request body too, buffered up to this many bytes (a longer body: 413).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
    /// Whether a request passes when the auth service cannot be asked.
    pub fail_open: bool,
    /// The decision cache's settings, if the rule caches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
    /// The method of every subrequest (`None`: the request's own).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::opt_method"
    )]
    pub method: Option<http::Method>,
    /// Whether the request's path and query follow the service's path (else the URL as
    /// written, [`ExtAuth::target`]).
    #[serde(skip_serializing_if = "is_true")]
    pub append_path: bool,
    /// Send every request header (hop-by-hop ones, `Host` and `Content-Length` aside)
    /// instead of [`ExtAuth::headers_to_auth`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forward_all_headers: bool,
    /// The non-2xx statuses passed back (empty: all); any other non-2xx answer is a 500.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "statuses")]
    pub deny_statuses: Vec<StatusCode>,
    /// With `append_path: false` and a URL that has variables: the URL, expanded per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Template>,
    /// A 401 becomes a 302 to this URL, expanded per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signin: Option<Template>,
    /// The `Set-Cookie` of an allowing answer reaches the client: on any response (`true`) or
    /// on a 2xx or 3xx one (`false`); `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_cookie_always: Option<bool>,
    /// The decisions cached.
    #[serde(skip)]
    pub decisions: Decisions,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn statuses<S: serde::Serializer>(v: &[StatusCode], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(StatusCode::as_u16))
}

/// A request value an auth URL may hold as an nginx variable (`$host` or `${host}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// `$host`: the request's host name, lower case, without its port.
    Host,
    /// `$http_host`, `$best_http_host`: the `Host` header (or `:authority`) as sent.
    HttpHost,
    /// `$scheme`, `$pass_access_scheme`: `http` or `https` as the client spoke.
    Scheme,
    /// `$request_uri`: the path and query as the client sent them.
    RequestUri,
    /// `$escaped_request_uri`: the same, percent-encoded as a query value.
    EscapedRequestUri,
    /// `$uri`: the path (no query).
    Uri,
    /// `$args`, `$query_string`: the query (without `?`).
    Args,
    /// `$request_method`.
    RequestMethod,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
}

impl Var {
    /// The names understood, as written after `$`.
    pub const NAMES: [(&'static str, Var); 12] = [
        ("host", Var::Host),
        ("http_host", Var::HttpHost),
        ("best_http_host", Var::HttpHost),
        ("scheme", Var::Scheme),
        ("pass_access_scheme", Var::Scheme),
        ("request_uri", Var::RequestUri),
        ("escaped_request_uri", Var::EscapedRequestUri),
        ("uri", Var::Uri),
        ("args", Var::Args),
        ("query_string", Var::Args),
        ("request_method", Var::RequestMethod),
        ("remote_addr", Var::RemoteAddr),
    ];
}

/// One piece of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text as written.
    Literal(Box<str>),
    /// A request value.
    Var(Var),
}

/// A URL with nginx variables (`https://$host/oauth2/start?rd=$escaped_request_uri`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// As written.
    pub raw: Box<str>,
    /// Literal text and variables, in order.
    pub pieces: Vec<Piece>,
}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl Template {
    /// Reads `$name` and `${name}`; an unknown variable, or a `$` starting none, is an error
    /// naming it.
    pub fn parse(raw: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = raw;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, next) = match after.strip_prefix('{') {
                Some(braced) => {
                    let end = braced
                        .find('}')
                        .ok_or_else(|| format!("{raw:?}: ${{ without a closing }}"))?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            if name.is_empty() {
                return Err(format!("{raw:?}: a $ must start a variable"));
            }
            let var = Var::NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let known: Vec<String> =
                        Var::NAMES.iter().map(|(n, _)| format!("${n}")).collect();
                    format!("unknown variable ${name} (known: {})", known.join(", "))
                })?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
            }
            pieces.push(Piece::Var(var));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Ok(Template {
            raw: raw.into(),
            pieces,
        })
    }

    /// Whether it holds no variable.
    pub fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Literal(_)))
    }

    /// The variables in its scheme and authority (before the path), in order.
    pub fn vars_before_path(&self) -> Vec<Var> {
        let mut out = Vec::new();
        // "scheme://" holds two slashes; the path starts at the third.
        let mut slashes = 0;
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => {
                    for c in s.chars() {
                        if c == '/' {
                            slashes += 1;
                        }
                        if slashes >= 3 || c == '?' || c == '#' {
                            return out;
                        }
                    }
                }
                Piece::Var(v) => out.push(*v),
            }
        }
        out
    }

    /// Expanded with `value` for each variable.
    pub fn expand(&self, mut value: impl FnMut(Var, &mut String)) -> String {
        let mut out = String::with_capacity(self.raw.len() + 64);
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Var(v) => value(*v, &mut out),
            }
        }
        out
    }
}

impl PartialEq for ExtAuth {
    fn eq(&self, o: &Self) -> bool {
        self.service == o.service
            && self.headers_to_auth == o.headers_to_auth
            && self.allowed_upstream_headers == o.allowed_upstream_headers
            && self.timeout == o.timeout
            && self.max_body_bytes == o.max_body_bytes
            && self.fail_open == o.fail_open
            && self.cache == o.cache
            && self.method == o.method
            && self.append_path == o.append_path
            && self.forward_all_headers == o.forward_all_headers
            && self.deny_statuses == o.deny_statuses
            && self.target == o.target
            && self.signin == o.signin
            && self.set_cookie_always == o.set_cookie_always
    }
}

/// Where an auth service is (`/config` shows `url` or `backend`).
#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AuthService {
    /// A URL, asked with the gateway's default client settings; the request's path and query
    /// are appended to its path.
    Url {
        /// `http://…` or `https://…`.
        #[serde(serialize_with = "super::ser::display")]
        url: http::Uri,
        /// The TLS settings of an `https` URL.
        #[serde(skip_serializing_if = "Option::is_none")]
        tls: Option<Arc<UpstreamTls>>,
    },
    /// A backend of the table, asked as the requests sent to it are: an endpoint its load
    /// balancer picks among the available ones, over its protocol and TLS, its breaker,
    /// connection limit and passive health in the loop.
    #[serde(rename_all = "camelCase")]
    Backend {
        /// The backend's label.
        backend: Arc<str>,
        /// Its index in [`RoutingTable::backends`](super::RoutingTable::backends).
        #[serde(skip)]
        index: BackendIdx,
        /// Put before the request's path (empty: the request's path as is).
        #[serde(skip_serializing_if = "str::is_empty")]
        path_prefix: String,
    },
}

impl AuthService {
    /// The path the request's path and query are appended to (no trailing `/`).
    pub fn base_path(&self) -> &str {
        match self {
            AuthService::Url { url, .. } => url.path(),
            AuthService::Backend { path_prefix, .. } => path_prefix,
        }
        .trim_end_matches('/')
    }
}

/// What a cached decision is keyed by and how long it lives.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSettings {
    /// The request headers whose values make the key.
    #[serde(serialize_with = "super::ser::header_names")]
    pub key_headers: Vec<HeaderName>,
    /// How long a decision is kept.
    #[serde(serialize_with = "super::ser::duration_str")]
    pub ttl: Duration,
}

/// What the auth service decided.
#[derive(Clone, Debug)]
pub enum Decision {
    /// 2xx: the headers to set upstream, and the `Set-Cookie` values for the client.
    Allow(HeaderMap, Vec<http::HeaderValue>),
    /// Anything else: the answer the client gets.
    Deny {
        /// Its status.
        status: StatusCode,
        /// Its headers (those passed back).
        headers: HeaderMap,
        /// Its body.
        body: Bytes,
    },
}

/// A cached decision and when it expires.
type Entry = (Instant, Arc<Decision>);

/// Cached decisions by key, each with its expiry.
#[derive(Debug, Default)]
pub struct Decisions {
    map: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl Decisions {
    /// The decision cached for `key`, if still fresh at `now`.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Arc<Decision>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(until, _)| *until > now)
            .map(|(_, d)| d.clone())
    }

    /// Keeps `decision` for `key` until `until`; a full cache drops its expired entries first,
    /// and everything if none has expired.
    pub fn put(&self, key: Vec<u8>, until: Instant, now: Instant, decision: Arc<Decision>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED && !map.contains_key(&key) {
            map.retain(|_, (u, _)| *u > now);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(key, (until, decision));
    }

    /// How many decisions are held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_read_nginx_variables_and_name_unknown_ones() {
        let t = Template::parse("https://$host/oauth2/start?rd=${escaped_request_uri}&x").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Literal("https://".into()),
                Piece::Var(Var::Host),
                Piece::Literal("/oauth2/start?rd=".into()),
                Piece::Var(Var::EscapedRequestUri),
                Piece::Literal("&x".into()),
            ]
        );
        assert_eq!(t.vars_before_path(), vec![Var::Host]);
        let out = t.expand(|v, out| out.push_str(if v == Var::Host { "h" } else { "%2F" }));
        assert_eq!(out, "https://h/oauth2/start?rd=%2F&x");
        assert!(Template::parse("http://a/b").unwrap().is_literal());
        let e = Template::parse("http://a/$cookie_x").unwrap_err();
        assert!(e.contains("unknown variable $cookie_x"), "{e}");
        assert!(Template::parse("http://a/$").is_err());
        assert!(Template::parse("http://a/${host").is_err());
        let t = Template::parse("http://a$host/p").unwrap();
        assert_eq!(t.vars_before_path(), vec![Var::Host]);
        let t = Template::parse("http://a/p$host").unwrap();
        assert!(t.vars_before_path().is_empty());
    }

    #[test]
    fn decisions_expire_and_a_full_cache_makes_room() {
        let d = Decisions::default();
        let t0 = Instant::now();
        let allow = Arc::new(Decision::Allow(HeaderMap::new(), Vec::new()));
        d.put(
            b"a".to_vec(),
            t0 + Duration::from_secs(10),
            t0,
            allow.clone(),
        );
        assert!(d.get(b"a", t0 + Duration::from_secs(9)).is_some());
        assert!(d.get(b"a", t0 + Duration::from_secs(10)).is_none());
        assert!(d.get(b"b", t0).is_none());
        let d = Decisions::default();
        for i in 0..MAX_CACHED {
            let until = t0 + Duration::from_secs(if i % 2 == 0 { 1 } else { 100 });
            d.put(i.to_string().into_bytes(), until, t0, allow.clone());
        }
        assert_eq!(d.len(), MAX_CACHED);
        // Full: the expired half goes.
        let later = t0 + Duration::from_secs(2);
        d.put(
            b"new".to_vec(),
            later + Duration::from_secs(5),
            later,
            allow.clone(),
        );
        assert_eq!(d.len(), MAX_CACHED / 2 + 1);
        assert!(d.get(b"new", later).is_some());
        assert!(d.get(b"1", later).is_some());
        // Full of fresh ones: all go.
        let d = Decisions::default();
        for i in 0..MAX_CACHED {
            d.put(i.to_string().into_bytes(), later, t0, allow.clone());
        }
        d.put(b"new".to_vec(), later, t0, allow);
        assert_eq!(d.len(), 1);
    }
}
