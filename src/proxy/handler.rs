//! One request: lookup, filters, then a direct answer, a redirect, or a forward to an upstream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::ProxyBody;
use super::conn::ConnCtx;
use super::error::ProxyError;
use super::request_id::{self, X_REQUEST_ID};
use super::router::Router;
use super::{Shared, balance::PickContext, headers, path};
use crate::model::{
    Action, DirectResponse, PathMatcher, Redirect, RequestFilter, RequestView, Timeouts,
    UpstreamProtocol,
};

/// Serves one request; never fails (errors become responses here, and only here).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let guard = conn.activity.begin();
    let id = request_id::ensure(req.headers_mut());
    let router = shared.router.load_full();
    let mut resp = match serve(&shared, &router, &conn, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "request answered by the proxy");
            e.into_response()
        }
    };
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    Ok(resp.map(|b| b.with_guard(guard)))
}

async fn serve(
    shared: &Shared,
    router: &Router,
    conn: &ConnCtx,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let started = Instant::now();
    let normalized = path::normalize(req.uri().path());
    let hit = {
        let (host, _) = headers::request_host(&req)
            .ok_or(ProxyError::BadRequest("missing or invalid Host header"))?;
        let view = RequestView {
            method: req.method(),
            path: normalized.as_deref().unwrap_or(req.uri().path()),
            query: req.uri().query(),
            headers: req.headers(),
        };
        router
            .table
            .lookup(&host, &view)
            .ok_or(ProxyError::NoRoute)?
    };
    let rule = hit.rule;
    let matched_prefix = match &hit.matched.path {
        PathMatcher::Prefix(p) => Some(p.as_str()),
        _ => None,
    };

    let mut resp = match &rule.action {
        Action::DirectResponse(d) => direct_response(d),
        Action::Redirect(r) => redirect(r, conn, &req, normalized.as_deref(), matched_prefix)?,
        Action::Forward { .. } => {
            let backend = router
                .pick_backend(hit.index, rule, req.headers())
                .ok_or(ProxyError::NoBackend)?;
            let cfg = &router.table.backends[backend];
            let endpoint = router.backends[backend]
                .pick(&PickContext {
                    client: conn.peer.ip(),
                })
                .ok_or_else(|| ProxyError::NoEndpoints {
                    backend: cfg.label.clone(),
                })?;
            let upgrade = headers::upgrade_protocol(&req);
            if upgrade.is_some() && cfg.protocol == UpstreamProtocol::H2c {
                return Err(ProxyError::UpgradeUnsupported(
                    "the backend speaks HTTP/2 (h2c)",
                ));
            }

            let original_host = headers::host_value(&req);
            let mut new_path = normalized;
            let mut new_host = None;
            for filter in &rule.request_filters {
                match filter {
                    RequestFilter::RequestHeaderModifier(m) => m.apply(req.headers_mut()),
                    RequestFilter::UrlRewrite(rw) => {
                        if let Some(h) = &rw.hostname {
                            new_host = Some(h.clone());
                        }
                        if let Some(p) = &rw.path {
                            let current = new_path.as_deref().unwrap_or(req.uri().path());
                            new_path = Some(p.apply(current, matched_prefix.unwrap_or("")));
                        }
                    }
                }
            }

            let uri = upstream_uri(&endpoint.address, req.uri(), new_path.as_deref())?;
            let h = req.headers_mut();
            headers::strip_hop_by_hop(h);
            headers::set_forwarded(h, conn.peer.ip(), conn.scheme, original_host.as_ref());
            match (new_host, original_host) {
                (Some(host), _) => {
                    h.insert(header::HOST, host);
                }
                (None, Some(host)) if !h.contains_key(header::HOST) => {
                    h.insert(header::HOST, host);
                }
                _ => {}
            }
            if let Some(proto) = &upgrade {
                headers::set_upgrade(h, proto.clone());
            }
            *req.uri_mut() = uri;
            *req.version_mut() = match cfg.protocol {
                UpstreamProtocol::Http1 => Version::HTTP_11,
                UpstreamProtocol::H2c => Version::HTTP_2,
            };
            let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

            let client = match cfg.protocol {
                UpstreamProtocol::Http1 => &shared.clients.http1,
                UpstreamProtocol::H2c => &shared.clients.h2c,
            };
            let budget = time_budget(
                &rule.timeouts,
                shared.config.default_request_timeout,
                started,
            );
            let sent = client.request(req);
            let result = match budget {
                Some(d) => tokio::time::timeout(d, sent)
                    .await
                    .map_err(|_| ProxyError::Timeout)?,
                None => sent.await,
            };
            let mut resp = result.map_err(|e| {
                if e.is_connect() {
                    ProxyError::UpstreamConnect(e)
                } else {
                    ProxyError::UpstreamFailed(e)
                }
            })?;

            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let upstream_proto = resp.headers().get(header::UPGRADE).cloned();
            headers::strip_hop_by_hop(resp.headers_mut());
            match (switching, client_upgrade, upstream_proto) {
                (true, Some(client_upgrade), Some(proto)) => {
                    headers::set_upgrade(resp.headers_mut(), proto);
                    super::tunnel::spawn(shared, client_upgrade, hyper::upgrade::on(&mut resp));
                }
                (true, _, _) => {
                    return Err(ProxyError::UpgradeUnsupported(
                        "the upstream switched protocols unasked",
                    ));
                }
                _ => {}
            }
            resp.map(ProxyBody::upstream)
        }
    };
    for m in &rule.response_filters {
        m.apply(resp.headers_mut());
    }
    Ok(resp)
}

/// How long the upstream may take to answer: the tighter of the rule's backendRequest and
/// what is left of its request timeout; the gateway default when the rule sets neither.
fn time_budget(t: &Timeouts, default: Option<Duration>, started: Instant) -> Option<Duration> {
    let left = t.request.map(|r| r.saturating_sub(started.elapsed()));
    match (left, t.backend_request) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b),
        (None, None) => default,
    }
}

fn upstream_uri(
    authority: &str,
    original: &Uri,
    new_path: Option<&str>,
) -> Result<Uri, ProxyError> {
    let pq = match (new_path, original.query()) {
        (None, _) => original
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        (Some(p), Some(q)) => format!("{p}?{q}"),
        (Some(p), None) => p.to_owned(),
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|_| ProxyError::BadRequest("the rewritten URL is invalid"))
}

fn direct_response(d: &DirectResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(d.body.clone()));
    *resp.status_mut() = d.status;
    if !d.body.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

fn redirect(
    r: &Redirect,
    conn: &ConnCtx,
    req: &Request<Incoming>,
    normalized: Option<&str>,
    matched_prefix: Option<&str>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (host, port) = headers::request_host(req)
        .ok_or(ProxyError::BadRequest("missing or invalid Host header"))?;
    let path = normalized.unwrap_or(req.uri().path());
    let location = r.location(
        conn.scheme,
        &host,
        port,
        path,
        matched_prefix,
        req.uri().query(),
    );
    let location = HeaderValue::try_from(location)
        .map_err(|_| ProxyError::BadRequest("cannot build a redirect"))?;
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeout_caps_backend_timeout_and_counts_elapsed_time() {
        let t = Timeouts {
            request: Some(Duration::from_secs(10)),
            backend_request: Some(Duration::from_secs(3)),
        };
        let b = time_budget(&t, None, Instant::now()).unwrap();
        assert!(b <= Duration::from_secs(3));
        let t = Timeouts {
            request: Some(Duration::from_secs(2)),
            backend_request: Some(Duration::from_secs(3)),
        };
        assert!(time_budget(&t, None, Instant::now()).unwrap() <= Duration::from_secs(2));
        let d = Some(Duration::from_secs(60));
        assert_eq!(time_budget(&Timeouts::default(), d, Instant::now()), d);
    }

    #[test]
    fn upstream_uri_keeps_the_query_and_takes_the_new_path() {
        let orig: Uri = "/api/x?q=1".parse().unwrap();
        assert_eq!(
            upstream_uri("127.0.0.1:1", &orig, None).unwrap(),
            "http://127.0.0.1:1/api/x?q=1"
        );
        assert_eq!(
            upstream_uri("127.0.0.1:1", &orig, Some("/x")).unwrap(),
            "http://127.0.0.1:1/x?q=1"
        );
    }
}
