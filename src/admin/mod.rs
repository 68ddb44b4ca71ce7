//! The admin server: `/healthz`, `/readyz`, `/metrics`, `/config`, `/backends`.
//!
//! It listens on its own (by default loopback-only) address, apart from user traffic.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::{Diagnostic, RoutingTable};
use crate::proxy::Proxy;
use crate::telemetry::Telemetry;
use crate::telemetry::sources::SyncedCondition;

/// The OpenMetrics content type Prometheus negotiates for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    /// The latest published table; `None` until the first one.
    pub tables: watch::Receiver<Option<Arc<RoutingTable>>>,
    /// Metrics for `/metrics`.
    pub telemetry: Arc<Telemetry>,
    /// Runtime backend state for `/backends`.
    pub proxy: Proxy,
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on, so that endpoints
    /// and load balancers stop sending traffic while it is still served.
    pub shutting_down: CancellationToken,
}

/// Serves the admin endpoints on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, stop: CancellationToken) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    let table = state.tables.borrow().clone();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
            state.proxy.refresh_metrics();
            let mut r = Response::new(Full::new(Bytes::from(state.telemetry.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            r
        }
        "/readyz" if state.shutting_down.is_cancelled() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        ),
        // Ready as long as a table serves, even while the sources fail: pulling every replica
        // out of its Service would turn a control-plane outage into a traffic outage. The
        // `Synced` condition of /config tells the staleness.
        "/readyz" => match table {
            Some(t) => {
                let synced = state.telemetry.sources.condition();
                let stale = match &synced.stale_since {
                    Some(since) => format!("; sources failing since {since}, serving it"),
                    None => String::new(),
                };
                text(
                    StatusCode::OK,
                    &format!("ready (configuration version {}{stale})\n", t.version),
                )
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no configuration published yet\n",
            ),
        },
        "/backends" => json(&state.proxy.registry().views()),
        "/config" => match table {
            Some(t) => json(&ConfigView::of(&t, state.telemetry.sources.condition())),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no configuration published yet\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics, /config or /backends\n",
        ),
    }
}

/// The `/config` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView<'a> {
    version: u64,
    /// `Synced`: whether every configuration source is current (else the table may be stale).
    conditions: [SyncedCondition; 1],
    /// The order access policies run in on a request (rules show theirs under `access`).
    access_order: &'static [&'static str],
    rules: &'a [std::sync::Arc<crate::model::Rule>],
    backends: &'a [crate::model::Backend],
    /// Rate-limit policies that apply to a rule (rules name them by index).
    #[serde(rename = "rateLimits", skip_serializing_if = "<[_]>::is_empty")]
    rate_limits: &'a [crate::model::RateLimitPolicy],
    /// What the HTTPS listener serves (certificates without their keys, hosts, default).
    #[serde(skip_serializing_if = "crate::model::TlsTable::is_empty")]
    tls: &'a crate::model::TlsTable,
    /// TCP Routes: the L4 port each listens on and its backends.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    l4: &'a [crate::model::L4Route],
    /// Objects with at least one error: rejected (or serving their last accepted version).
    rejected: Vec<String>,
    diagnostics: &'a [Diagnostic],
}

impl<'a> ConfigView<'a> {
    fn of(t: &'a RoutingTable, synced: SyncedCondition) -> Self {
        let mut rejected: Vec<String> = t
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| match (&d.object, &d.file) {
                (Some(o), _) => o.to_string(),
                (None, Some(f)) => format!("file {f}"),
                (None, None) => "unknown".to_owned(),
            })
            .collect();
        rejected.dedup();
        Self {
            version: t.version,
            conditions: [synced],
            access_order: crate::model::ACCESS_ORDER,
            rules: &t.rules,
            backends: &t.backends,
            rate_limits: &t.rate_limits,
            tls: &t.tls,
            l4: &t.l4,
            rejected,
            diagnostics: &t.diagnostics,
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render: {e}\n"),
        ),
    }
}
