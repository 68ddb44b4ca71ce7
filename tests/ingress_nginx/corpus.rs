//! The ingress-nginx corpus (`corpus.yaml`): cases and the runner that sends their requests
//! and compares the answers. Used by tests/kube/ingress_nginx.rs (Ingresses and migrated
//! objects on a real apiserver) and tests/ingress_nginx_vs_nginx.rs (nginx configured as
//! ingress-nginx renders the same annotations).
// Each test binary reads the parts it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;

use crate::common::HttpClient;

const CORPUS: &str = include_str!("corpus.yaml");

/// One annotated Ingress and what ingress-nginx answers.
#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub rules: Vec<CaseRule>,
    pub requests: Vec<Req>,
    /// An annotation `tidegate migrate` reports as not carried (its requests are not sent to
    /// the migrated objects).
    #[serde(rename = "notCarriedByMigrate")]
    pub not_carried_by_migrate: Option<String>,
    /// A canary Ingress `NAME-canary` with the same rules, to the Service `canary`.
    pub canary: Option<CanaryIngress>,
    /// The Service every path goes to (default `web`).
    pub service: Option<String>,
    /// The annotations (short names) the Ingress gets a warning for, one each (default none).
    #[serde(default)]
    pub warns: Vec<String>,
}

/// The canary Ingress of a case: its annotations (`canary: "true"` among them).
#[derive(Deserialize)]
pub struct CanaryIngress {
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub struct CaseRule {
    pub host: String,
    pub paths: Vec<CasePath>,
}

#[derive(Deserialize)]
pub struct CasePath {
    pub path: String,
    #[serde(rename = "pathType")]
    pub path_type: String,
}

#[derive(Deserialize)]
pub struct Req {
    pub path: String,
    /// Default: the first rule's host.
    pub host: Option<String>,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub status: u16,
    /// Path and query the backend got.
    pub uri: Option<String>,
    /// Headers the backend got.
    #[serde(default)]
    pub sent: BTreeMap<String, String>,
    /// The HTTP version the backend got (`HTTP/2.0`).
    pub version: Option<String>,
    /// The same endpoint (answer header `x-upstream`) answered as for request N of the case.
    #[serde(rename = "sameAs")]
    pub same_as: Option<usize>,
    /// Headers of the answer.
    #[serde(default)]
    pub got: BTreeMap<String, String>,
    /// A request body of this many bytes (with its Content-Length).
    #[serde(rename = "bodyBytes")]
    pub body_bytes: Option<usize>,
    /// The answer's Set-Cookie, its value and any Expires date written `*` (see
    /// [`cookie_shape`]); empty: no Set-Cookie.
    #[serde(rename = "setCookie")]
    pub set_cookie: Option<String>,
    /// Send the cookie the answer to request N set (its `name=value`).
    #[serde(rename = "cookieFrom")]
    pub cookie_from: Option<usize>,
}

/// A Set-Cookie header with what changes from answer to answer (the value, the Expires date)
/// written `*`, and its `name=value`.
pub fn cookie_shape(set_cookie: &str) -> (String, String) {
    let mut parts = set_cookie.split("; ");
    let pair = parts.next().unwrap_or_default();
    let name = pair.split('=').next().unwrap_or_default();
    let mut shape = format!("{name}=*");
    for attr in parts {
        shape.push_str("; ");
        match attr.split_once('=') {
            Some(("Expires", _)) => shape.push_str("Expires=*"),
            _ => shape.push_str(attr),
        }
    }
    (shape, pair.to_owned())
}

pub fn corpus() -> Vec<Case> {
    serde_yaml_ng::from_str(CORPUS).expect("the corpus parses")
}

/// The corpus with its auth service's address (`AUTH_ADDR` in annotation values) filled in.
pub fn corpus_with_auth(auth: SocketAddr) -> Vec<Case> {
    let mut corpus = corpus();
    for case in &mut corpus {
        for v in case.annotations.values_mut() {
            *v = v.replace("AUTH_ADDR", &auth.to_string());
        }
    }
    corpus
}

/// Sends every request of the corpus to `addr`; the mismatches, one line each.
pub async fn mismatches(addr: SocketAddr, corpus: &[Case]) -> Vec<String> {
    let http = HttpClient::http1();
    let mut out = Vec::new();
    for case in corpus {
        let mut answered_by: Vec<Option<String>> = Vec::new();
        let mut cookies: Vec<Option<String>> = Vec::new();
        for (i, r) in case.requests.iter().enumerate() {
            let host = r.host.as_deref().unwrap_or(&case.rules[0].host);
            let mut b = http::Request::builder()
                .method(r.method.as_deref().unwrap_or("GET"))
                .uri(format!("http://{addr}{}", r.path))
                .header("host", host);
            for (k, v) in &r.headers {
                b = b.header(k, v);
            }
            if let Some(n) = r.cookie_from {
                match cookies.get(n).cloned().flatten() {
                    Some(c) => b = b.header("cookie", c),
                    None => out.push(format!("{}[{i}]: request {n} got no cookie", case.name)),
                }
            }
            let body = Bytes::from(vec![b'x'; r.body_bytes.unwrap_or(0)]);
            let reply = http
                .send(b.body(Full::new(body)).unwrap())
                .await
                .expect("request completes");
            let at = format!("{}[{i}] {host}{}", case.name, r.path);
            let by = reply
                .headers
                .get("x-upstream")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned);
            if let Some(n) = r.same_as
                && answered_by.get(n) != Some(&by)
            {
                out.push(format!(
                    "{at}: answered by {by:?}, request {n} by {:?}",
                    answered_by.get(n).cloned().flatten()
                ));
            }
            answered_by.push(by);
            let set_cookie = reply
                .headers
                .get("set-cookie")
                .and_then(|h| h.to_str().ok())
                .map(cookie_shape);
            if let Some(want) = &r.set_cookie {
                let have = set_cookie.as_ref().map_or("", |(shape, _)| shape.as_str());
                if have != want {
                    out.push(format!("{at}: Set-Cookie {have:?} (want {want:?})"));
                }
            }
            cookies.push(set_cookie.map(|(_, pair)| pair));
            if reply.status != r.status {
                out.push(format!(
                    "{at}: status {} (want {}): {}",
                    reply.status, r.status, reply.body
                ));
                continue;
            }
            for (k, v) in &r.got {
                let have = reply.headers.get(k).and_then(|h| h.to_str().ok());
                if have != Some(v.as_str()) {
                    out.push(format!("{at}: answer header {k} {have:?} (want {v:?})"));
                }
            }
            if r.uri.is_none() && r.sent.is_empty() && r.version.is_none() {
                continue;
            }
            let echo = reply.echo();
            if let Some(v) = &r.version
                && &echo.version != v
            {
                out.push(format!("{at}: backend got {} (want {v})", echo.version));
            }
            if let Some(uri) = &r.uri
                && &echo.uri != uri
            {
                out.push(format!("{at}: backend got {} (want {uri})", echo.uri));
            }
            for (k, v) in &r.sent {
                if echo.header(k) != Some(v.as_str()) {
                    out.push(format!(
                        "{at}: backend header {k} {:?} (want {v:?})",
                        echo.header(k)
                    ));
                }
            }
        }
    }
    out
}
