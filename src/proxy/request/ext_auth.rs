//! External authorization of one request: a subrequest to the auth service with the
//! request's method, the URL's path followed by the request's path and query, the selected
//! headers, and `X-Original-Method`, `X-Original-URI`, `X-Forwarded-Host` (what ingress-nginx's
//! `auth-url` sends). A 2xx answer lets the request on with the allowed headers of the answer
//! set (the client's copies of them removed first, always); any other answer goes back to the
//! client with its status, body, and `Location`, `WWW-Authenticate`, `Set-Cookie`,
//! `Content-Type`. No answer (unreachable, timeout) is a failure: the rule's failure mode
//! decides.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Limited};

use super::service::Service;
use crate::model::ext_auth::{Decision, ExtAuth};
use crate::proxy::transport::{ClientBody, ProxyBody, RequestBody};

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
    /// Go on (the allowed headers are set).
    Allowed,
    /// The client gets this answer.
    Denied(Box<Response<ProxyBody>>),
    /// The auth service could not be asked: why.
    Failed(String),
    /// The request body is longer than `maxBodyBytes` (413).
    BodyTooLarge,
    /// The request body could not be read (the client's fault: 400).
    BodyUnreadable,
}

/// Asks `ext` about `req` (or its cache).
pub async fn check(service: &Service, ext: &ExtAuth, req: &mut Request<ClientBody>) -> Outcome {
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
        return apply(&d, req);
    }
    let body = match ext.max_body_bytes {
        None => Bytes::new(),
        Some(n) => match buffer(req, n as usize).await {
            Ok(b) => b,
            Err(outcome) => return outcome,
        },
    };
    let decision = match tokio::time::timeout(ext.timeout, ask(service, ext, req, body)).await {
        Ok(Ok(d)) => Arc::new(d),
        Ok(Err(why)) => return Outcome::Failed(why),
        Err(_) => return Outcome::Failed(format!("no answer within {:?}", ext.timeout)),
    };
    if let (Some(key), Some(c)) = (key, &ext.cache) {
        let now = Instant::now();
        ext.decisions.put(key, now + c.ttl, now, decision.clone());
    }
    apply(&decision, req)
}

/// Reads the request body, up to `max` bytes, and puts it back on the request (with its
/// trailers) for the upstream; the bytes to send to the auth service.
async fn buffer(req: &mut Request<ClientBody>, max: usize) -> Result<Bytes, Outcome> {
    let mut body = std::mem::replace(req.body_mut(), ClientBody::buffered(Bytes::new(), None));
    let mut data = bytes::BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Outcome::BodyUnreadable)?;
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

fn apply(d: &Decision, req: &mut Request<ClientBody>) -> Outcome {
    match d {
        Decision::Allow(headers) => {
            for (name, value) in headers {
                req.headers_mut().append(name, value.clone());
            }
            Outcome::Allowed
        }
        Decision::Deny {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(ProxyBody::full(body.clone()));
            *resp.status_mut() = *status;
            resp.headers_mut().extend(headers.clone());
            Outcome::Denied(Box::new(resp))
        }
    }
}

/// The subrequest and its answer.
async fn ask(
    service: &Service,
    ext: &ExtAuth,
    req: &Request<ClientBody>,
    body: Bytes,
) -> Result<Decision, String> {
    let original = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let base = ext.url.path().trim_end_matches('/');
    let uri = http::Uri::builder()
        .scheme(ext.url.scheme_str().unwrap_or("http"))
        .authority(ext.url.authority().map_or("", |a| a.as_str()))
        .path_and_query(format!("{base}{original}"))
        .build()
        .map_err(|e| format!("the subrequest's URI: {e}"))?;
    let mut sub = Request::builder().method(req.method().clone()).uri(uri);
    let h = sub.headers_mut().ok_or("the subrequest")?;
    for name in &ext.headers_to_auth {
        for v in req.headers().get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    if let Some(a) = ext.url.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        h.insert(header::HOST, v);
    }
    h.insert(
        HeaderName::from_static("x-original-method"),
        HeaderValue::from_str(req.method().as_str()).map_err(|e| e.to_string())?,
    );
    if let Ok(v) = HeaderValue::from_str(original) {
        h.insert(HeaderName::from_static("x-original-uri"), v);
    }
    let host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = host {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    // The body (`maxBodyBytes`) goes with what says how to read it.
    if ext.max_body_bytes.is_some()
        && let Some(t) = req.headers().get(header::CONTENT_TYPE)
    {
        h.insert(header::CONTENT_TYPE, t.clone());
    }
    let sub = sub
        .body(RequestBody::full(body))
        .map_err(|e| format!("the subrequest: {e}"))?;
    let resp = service.clients.send(ext.tls.as_ref(), sub).await?;
    let status = resp.status();
    if status.is_success() {
        let mut headers = HeaderMap::new();
        for name in &ext.allowed_upstream_headers {
            for v in resp.headers().get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        return Ok(Decision::Allow(headers));
    }
    let mut headers = HeaderMap::new();
    for name in &BACK_TO_CLIENT {
        for v in resp.headers().get_all(name) {
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
