//! Active health checks: one probe task per endpoint of a backend that asks for them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::balance::random::random_u64;
use super::custom::HealthCheck;
use super::endpoint::{Clock, EndpointState};
use crate::model::{ActiveHealthCheck, ProbeKind};

/// The client probes use (no pooling: a probe should see what a new connection sees).
pub fn probe_client() -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// How endpoints are probed: the backend's HTTP or TCP probe, or a check plugged in from code.
pub enum Prober {
    /// `activeHealthCheck.probe`, with this client.
    Builtin(Box<Client<HttpConnector, Empty<Bytes>>>),
    /// A [`HealthCheck`] from code.
    Custom(Arc<dyn HealthCheck>),
}

impl Prober {
    /// `custom` when given, else the built-in probe.
    pub fn new(custom: Option<Arc<dyn HealthCheck>>) -> Self {
        match custom {
            Some(c) => Prober::Custom(c),
            None => Prober::Builtin(Box::new(probe_client())),
        }
    }
}

/// Probes `endpoint` until `stop`, updating its health.
pub async fn run(
    endpoint: Arc<EndpointState>,
    check: ActiveHealthCheck,
    clock: Clock,
    prober: Prober,
    stop: CancellationToken,
    label: Arc<str>,
) {
    let (mut successes, mut failures) = (0u32, 0u32);
    // The first probe soon (spread a little so many endpoints do not probe in lockstep).
    let mut wait = jitter(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let ok = match &prober {
            Prober::Builtin(client) => probe(&endpoint, &check, client).await,
            Prober::Custom(custom) => {
                tokio::time::timeout(check.timeout, custom.check(&endpoint.endpoint))
                    .await
                    .unwrap_or(false)
            }
        };
        if ok {
            successes += 1;
            failures = 0;
            if !endpoint.active_healthy() && successes >= check.healthy_threshold {
                endpoint.set_active_healthy(true, clock.now_ms());
                tracing::info!(backend = %label, endpoint = %endpoint.endpoint.address, "endpoint healthy again");
            }
        } else {
            failures += 1;
            successes = 0;
            if endpoint.active_healthy() && failures >= check.unhealthy_threshold {
                endpoint.set_active_healthy(false, clock.now_ms());
                tracing::warn!(backend = %label, endpoint = %endpoint.endpoint.address, "endpoint failed its health check");
            }
        }
        wait = check.interval - jitter(check.interval / 10);
    }
}

/// A random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis() as u64;
    if ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(random_u64() % ms)
    }
}

async fn probe(
    endpoint: &EndpointState,
    check: &ActiveHealthCheck,
    client: &Client<HttpConnector, Empty<Bytes>>,
) -> bool {
    let address = &*endpoint.endpoint.address;
    let attempt = async {
        match &check.probe {
            ProbeKind::Tcp => tokio::net::TcpStream::connect(address).await.is_ok(),
            ProbeKind::Http {
                path,
                host,
                expected,
            } => {
                let Ok(req) = Request::get(format!("http://{address}{path}"))
                    .header(http::header::HOST, host.as_deref().unwrap_or(address))
                    .header(http::header::USER_AGENT, "tidegate-health-check")
                    .body(Empty::new())
                else {
                    return false;
                };
                match client.request(req).await {
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        expected.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
                    }
                    Err(_) => false,
                }
            }
        }
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or(false)
}
