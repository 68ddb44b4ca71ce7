//! External authorization of one request: a subrequest to the auth service with the
//! request's method (or the rule's `method`), the URL's path (or a Backend's `pathPrefix`)
//! followed by the request's path and query (or, with `appendPath: false`, the URL as written,
//! its variables expanded), the selected headers (or all of them), and `X-Original-Method`,
//! `X-Original-URI`, `X-Original-URL`, `X-Auth-Request-Redirect`, `X-Real-IP`,
//! `X-Forwarded-Host` (what ingress-nginx's `auth-url` sends). A URL is asked with the
//! gateway's own client and its `Host`; a Backend as forwarded requests are
//! ([`forward::subrequest`]: its balancer, health, protocol and TLS), with the client's `Host`. A 2xx answer lets the request on with the allowed headers of the answer
//! set (the client's copies of them removed first, always); any other answer goes back to the
//! client with its status, body, and `Location`, `WWW-Authenticate`, `Set-Cookie`,
//! `Content-Type`. No answer (unreachable, timeout) is a failure: the rule's failure mode
//! decides.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use super::forward::{self, request_hash};
use super::headers;
use super::service::Service;
use crate::model::ext_auth::{AuthService, Decision, ExtAuth, Template, Var};
use crate::proxy::transport::{ClientBody, ConnCtx, ProxyBody, RequestBody};
use crate::proxy::upstream::Router;
use crate::proxy::upstream::balance::PickContext;

/// The largest body of a denying answer passed back (a longer one is a failure).
pub const MAX_DENY_BODY: usize = 64 * 1024;

/// Headers of a denying answer passed back to the client.
const BACK_TO_CLIENT: [HeaderName; 4] = [
    header::LOCATION,
    header::WWW_AUTHENTICATE,
    header::SET_COOKIE,
    header::CONTENT_TYPE,
];

/// What the auth service decided about a request.
pub enum Outcome {
    /// Go on (the allowed headers are set), with the `Set-Cookie` values for the client
    /// (`passSetCookie`; empty otherwise).
    Allowed(Vec<HeaderValue>),
    /// The client gets this answer.
    Denied(Box<Response<ProxyBody>>),
    /// The auth service could not be asked: why.
    Failed(String),
    /// The request body is longer than `maxBodyBytes` (413).
    BodyTooLarge,
    /// The request body could not be read (the client's fault: 400).
    BodyUnreadable,
}

/// Where a subrequest goes: the gateway's client for a URL, or a backend of this router.
pub struct Via<'a> {
    pub service: &'a Service,
    pub router: &'a Router,
    pub conn: &'a ConnCtx,
}

/// Asks `ext` about `req` (or its cache).
pub async fn check(via: Via<'_>, ext: &ExtAuth, req: &mut Request<ClientBody>) -> Outcome {
    for h in &ext.allowed_upstream_headers {
        req.headers_mut().remove(h);
    }
    let key = ext.cache.as_ref().map(|c| {
        let mut key = Vec::new();
        for h in &c.key_headers {
            for v in req.headers().get_all(h) {
                key.extend_from_slice(v.as_bytes());
                key.push(b'\n');
            }
            key.push(0);
        }
        key
    });
    if let Some(key) = &key
        && let Some(d) = ext.decisions.get(key, Instant::now())
    {
        return apply(&d, ext, req, via.conn);
    }
    let body = match ext.max_body_bytes {
        None => Bytes::new(),
        Some(n) => match buffer(req, n as usize).await {
            Ok(b) => b,
            Err(outcome) => return outcome,
        },
    };
    let deadline = tokio::time::Instant::now() + ext.timeout;
    let decision =
        match tokio::time::timeout_at(deadline, ask(&via, ext, req, body, deadline)).await {
            Ok(Ok(d)) => Arc::new(d),
            Ok(Err(why)) => return Outcome::Failed(why),
            Err(_) => return Outcome::Failed(format!("no answer within {:?}", ext.timeout)),
        };
    if let (Some(key), Some(c)) = (key, &ext.cache) {
        let now = Instant::now();
        ext.decisions.put(key, now + c.ttl, now, decision.clone());
    }
    apply(&decision, ext, req, via.conn)
}

/// Reads the request body, up to `max` bytes, and puts it back on the request (with its
/// trailers) for the upstream; the bytes to send to the auth service.
async fn buffer(req: &mut Request<ClientBody>, max: usize) -> Result<Bytes, Outcome> {
    let mut body = std::mem::replace(req.body_mut(), ClientBody::buffered(Bytes::new(), None));
    let mut data = bytes::BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<crate::proxy::transport::error::BodyTooLarge>() {
                Outcome::BodyTooLarge
            } else {
                Outcome::BodyUnreadable
            }
        })?;
        match frame.into_data() {
            Ok(chunk) if data.len() + chunk.len() > max => return Err(Outcome::BodyTooLarge),
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let data = data.freeze();
    *req.body_mut() = ClientBody::buffered(data.clone(), trailers);
    Ok(data)
}

fn apply(d: &Decision, ext: &ExtAuth, req: &mut Request<ClientBody>, conn: &ConnCtx) -> Outcome {
    match d {
        Decision::Allow(headers, cookies) => {
            for (name, value) in headers {
                req.headers_mut().append(name, value.clone());
            }
            Outcome::Allowed(cookies.clone())
        }
        // `signinUrl`: the client is sent to sign in, with the answer's cookies.
        Decision::Deny {
            status, headers, ..
        } if *status == StatusCode::UNAUTHORIZED && ext.signin.is_some() => {
            let mut resp = Response::new(ProxyBody::full(Bytes::new()));
            *resp.status_mut() = StatusCode::FOUND;
            for v in headers.get_all(header::SET_COOKIE) {
                headers::response_headers(&mut resp).append(header::SET_COOKIE, v.clone());
            }
            if let Some(t) = &ext.signin
                && let Ok(v) = HeaderValue::try_from(expand(t, req, conn))
            {
                headers::response_headers(&mut resp).insert(header::LOCATION, v);
            }
            Outcome::Denied(Box::new(resp))
        }
        Decision::Deny {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(ProxyBody::full(body.clone()));
            *resp.status_mut() = *status;
            headers::response_headers(&mut resp).extend(headers.clone());
            Outcome::Denied(Box::new(resp))
        }
    }
}

/// `t` with the request's values.
fn expand<B>(t: &Template, req: &Request<B>, conn: &ConnCtx) -> String {
    let uri = req.uri();
    let http_host = || {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
    };
    let request_uri = || uri.path_and_query().map_or("/", |p| p.as_str());
    t.expand(|v, out| match v {
        Var::Host => {
            let raw = http_host();
            let lower = |h: &str, out: &mut String| {
                out.extend(h.chars().map(|c| c.to_ascii_lowercase()));
            };
            match raw.parse::<http::uri::Authority>() {
                Ok(a) => lower(a.host(), out),
                Err(_) => lower(raw, out),
            }
        }
        Var::HttpHost => out.push_str(http_host()),
        Var::Scheme => out.push_str(conn.scheme),
        Var::RequestUri => out.push_str(request_uri()),
        Var::EscapedRequestUri => escape_component(request_uri(), out),
        Var::Uri => out.push_str(uri.path()),
        Var::Args => out.push_str(uri.query().unwrap_or("")),
        Var::RequestMethod => out.push_str(req.method().as_str()),
        Var::RemoteAddr => {
            use std::fmt::Write;
            let _ = write!(out, "{}", conn.peer.ip());
        }
    })
}

/// Percent-encodes all but the unreserved characters (as ngx_set_misc's `set_escape_uri`).
fn escape_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The subrequest and its answer.
async fn ask(
    via: &Via<'_>,
    ext: &ExtAuth,
    req: &Request<ClientBody>,
    body: Bytes,
    deadline: tokio::time::Instant,
) -> Result<Decision, String> {
    let original = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let path_and_query = if ext.append_path {
        PathAndQuery::try_from(format!("{}{original}", ext.service.base_path()))
            .map_err(|e| format!("the subrequest's path: {e}"))?
    } else {
        match &ext.service {
            AuthService::Url { url, .. } => url
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            AuthService::Backend { path_prefix, .. } if path_prefix.is_empty() => {
                PathAndQuery::from_static("/")
            }
            AuthService::Backend { path_prefix, .. } => {
                PathAndQuery::try_from(path_prefix.as_str())
                    .map_err(|e| format!("the subrequest's path: {e}"))?
            }
        }
    };
    let method = ext.method.clone().unwrap_or_else(|| req.method().clone());
    let (headers, host) = headers(ext, req, via.conn, original)?;
    // A backend's answer holds its connection slot until it is read, in `decide`.
    let (resp, _held) = match &ext.service {
        AuthService::Url { url, tls } => {
            let uri = match &ext.target {
                // `appendPath: false` with variables: the URL expanded for this request.
                Some(t) => http::Uri::try_from(expand(t, req, via.conn))
                    .map_err(|e| format!("the auth URL expanded: {e}"))?,
                None => http::Uri::builder()
                    .scheme(url.scheme_str().unwrap_or("http"))
                    .authority(url.authority().map_or("", |a| a.as_str()))
                    .path_and_query(path_and_query)
                    .build()
                    .map_err(|e| format!("the subrequest's URI: {e}"))?,
            };
            let mut sub = Request::new(RequestBody::full(body));
            *sub.method_mut() = method;
            *sub.headers_mut() = headers;
            if let Some(a) = uri.authority()
                && let Ok(v) = HeaderValue::from_str(a.as_str())
            {
                sub.headers_mut().insert(header::HOST, v);
            }
            *sub.uri_mut() = uri;
            let resp = via.service.clients.send(tls.as_ref(), sub).await?;
            (resp.map(ProxyBody::upstream), None)
        }
        AuthService::Backend { index, .. } => {
            let mut headers = headers;
            // What the proxy sends this backend: the client's Host.
            if let Some(host) = host {
                headers.insert(header::HOST, host);
            }
            let state = &via.router.backends[*index];
            let sub = forward::Subrequest {
                service: via.service,
                router: via.router,
                backend: *index,
                ctx: PickContext {
                    client: via.conn.peer.ip(),
                    hash: request_hash(&state.load_balancing(), req, via.conn),
                },
                method,
                path_and_query,
                headers,
                body,
                deadline,
            };
            let (resp, held) = forward::subrequest(sub).await.map_err(|e| e.to_string())?;
            (resp, Some(held))
        }
    };
    decide(ext, resp).await
}

/// Request headers never sent to the auth service with `forwardAllHeaders`: hop-by-hop ones,
/// and those that describe the request's own body or address.
const NOT_FORWARDED: [HeaderName; 10] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::EXPECT,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

/// The subrequest's headers (those named, or all; `X-Original-*`, `X-Auth-Request-Redirect`,
/// `X-Real-IP`, `X-Forwarded-Host`, the body's `Content-Type`), and the request's host.
fn headers(
    ext: &ExtAuth,
    req: &Request<ClientBody>,
    conn: &ConnCtx,
    original: &str,
) -> Result<(HeaderMap, Option<HeaderValue>), String> {
    let mut h = HeaderMap::new();
    if ext.forward_all_headers {
        for (name, v) in req.headers() {
            if !NOT_FORWARDED.contains(name) {
                h.append(name.clone(), v.clone());
            }
        }
    } else {
        for name in &ext.headers_to_auth {
            for v in req.headers().get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
    }
    h.insert(
        HeaderName::from_static("x-original-method"),
        HeaderValue::from_str(req.method().as_str()).map_err(|e| e.to_string())?,
    );
    if let Ok(v) = HeaderValue::from_str(original) {
        h.insert(HeaderName::from_static("x-original-uri"), v.clone());
        h.insert(HeaderName::from_static("x-auth-request-redirect"), v);
    }
    let host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = &host {
        h.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        let url = format!(
            "{}://{}{original}",
            conn.scheme,
            host.to_str().unwrap_or_default()
        );
        if let Ok(v) = HeaderValue::try_from(url) {
            h.insert(HeaderName::from_static("x-original-url"), v);
        }
    }
    if let Ok(v) = HeaderValue::try_from(conn.peer.ip().to_string()) {
        // As ingress-nginx's auth location: the client's address, not the client's list.
        if ext.forward_all_headers {
            h.insert(HeaderName::from_static("x-forwarded-for"), v.clone());
        }
        h.insert(HeaderName::from_static("x-real-ip"), v);
    }
    // The body (`maxBodyBytes`) goes with what says how to read it.
    if ext.max_body_bytes.is_some()
        && let Some(t) = req.headers().get(header::CONTENT_TYPE)
    {
        h.insert(header::CONTENT_TYPE, t.clone());
    }
    Ok((h, host))
}

/// The decision an answer makes: 2xx allows with the allowed headers, anything else denies
/// with what is passed back.
async fn decide(ext: &ExtAuth, mut resp: Response<ProxyBody>) -> Result<Decision, String> {
    let status = resp.status();
    if status.is_success() {
        let mut headers = HeaderMap::new();
        for name in &ext.allowed_upstream_headers {
            for v in headers::response_headers(&mut resp).get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let cookies = match ext.set_cookie_always {
            Some(_) => headers::response_headers(&mut resp)
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        return Ok(Decision::Allow(headers, cookies));
    }
    // Not one the rule passes back (nor a 401 sent to sign in): ingress-nginx's 500.
    let passed = ext.deny_statuses.is_empty()
        || ext.deny_statuses.contains(&status)
        || (status == StatusCode::UNAUTHORIZED && ext.signin.is_some());
    if !passed {
        return Ok(Decision::Deny {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        });
    }
    let mut headers = HeaderMap::new();
    for name in &BACK_TO_CLIENT {
        for v in headers::response_headers(&mut resp).get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let body = Limited::new(resp.into_body(), MAX_DENY_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Decision::Deny {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_request_uri_keeps_only_unreserved_characters() {
        let mut out = String::new();
        escape_component("/a b/ü?x=1&y=-._~", &mut out);
        assert_eq!(out, "%2Fa%20b%2F%C3%BC%3Fx%3D1%26y%3D-._~");
    }
}
