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
    /// Request headers sent along.
    #[serde(serialize_with = "super::ser::header_names")]
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
    /// The decisions cached.
    #[serde(skip)]
    pub decisions: Decisions,
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
    /// 2xx: the headers to set upstream.
    Allow(HeaderMap),
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
    fn decisions_expire_and_a_full_cache_makes_room() {
        let d = Decisions::default();
        let t0 = Instant::now();
        let allow = Arc::new(Decision::Allow(HeaderMap::new()));
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
