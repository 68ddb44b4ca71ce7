//! One request: lookup, filters, then a direct answer, a redirect, or a forward to an upstream.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, header};
use tokio::time::Instant;

use super::body::{ClientBody, ProxyBody};
use super::conn::ConnCtx;
use super::error::ProxyError;
use super::exchange::Exchange;
use super::request_id::{self, X_REQUEST_ID};
use super::router::Router;
use super::{Shared, forward, headers, path};
use crate::model::{Action, Answer, DirectResponse, PathMatcher, Redirect, RequestView};

/// Serves one request; never fails (errors become responses here, and only here).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    mut req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let guard = conn.activity.begin();
    let id = request_id::ensure(req.headers_mut());
    let mut exchange = Exchange::start(&shared.telemetry, &req, conn.peer.ip(), &id);
    let router = shared.router.load_full();
    let mut resp = match serve(&shared, &router, &conn, req, &mut exchange).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "request answered by the proxy");
            e.into_response()
        }
    };
    exchange.status = resp.status().as_u16();
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    Ok(resp.map(|b| b.finish_with(exchange, guard)))
}

async fn serve(
    shared: &Shared,
    router: &Router,
    conn: &ConnCtx,
    req: Request<ClientBody>,
    ex: &mut Exchange,
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
    ex.route = rule.label.clone();
    let matched_prefix = match &hit.matched.path {
        PathMatcher::Prefix(p) => Some(p.as_str()),
        _ => None,
    };

    let mut resp = match &rule.action {
        Action::DirectResponse(d) => direct_response(d),
        Action::Redirect(r) => {
            redirect(r, shared, conn, &req, normalized.as_deref(), matched_prefix)?
        }
        Action::Forward { .. } => {
            let picked = router.pick_backend(hit.index, rule, req.headers())?;
            let filters = &picked.backend_ref.filters;
            match &filters.answer {
                Some(answer) => {
                    let mut resp = match answer {
                        Answer::DirectResponse(d) => direct_response(d),
                        Answer::Redirect(r) => {
                            redirect(r, shared, conn, &req, normalized.as_deref(), matched_prefix)?
                        }
                    };
                    for m in &filters.response {
                        m.apply(resp.headers_mut());
                    }
                    resp
                }
                None => {
                    let target = forward::Target {
                        shared,
                        router,
                        conn,
                        rule,
                        picked,
                        matched_prefix,
                        started,
                    };
                    forward::forward(target, req, normalized, ex).await?
                }
            }
        }
    };
    for m in &rule.response_filters {
        m.apply(resp.headers_mut());
    }
    Ok(resp)
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
    shared: &Shared,
    conn: &ConnCtx,
    req: &Request<ClientBody>,
    normalized: Option<&str>,
    matched_prefix: Option<&str>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (host, _) = headers::request_host(req)
        .ok_or(ProxyError::BadRequest("missing or invalid Host header"))?;
    let path = normalized.unwrap_or(req.uri().path());
    // The port clients reached the listener on (Gateway API), not the one in their Host header.
    let listener_port = shared.config.http_port.unwrap_or(80);
    let location = r.location(
        conn.scheme,
        &host,
        listener_port,
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
