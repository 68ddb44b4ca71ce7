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
use crate::model::{ActiveHealthCheck, ProbeKind, UpstreamProtocol, UpstreamTls};

/// The status of one probe request; `None` when it got no answer.
pub type StatusFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<http::StatusCode>> + Send + 'a>>;

/// A client for HTTP probes over TLS to one endpoint.
pub trait TlsProbeClient: Send + Sync {
    /// Sends `req` (a GET); the answer's status.
    fn get(&self, req: Request<()>) -> StatusFuture<'_>;
}

/// Makes the clients of HTTP probes over TLS. TLS clients live in the transport layer, above
/// this one: the proxy's face hands its maker to the registry.
pub trait TlsProbes: Send + Sync + 'static {
    /// A client to `endpoint` with a backend's TLS settings and protocol; `Err`: why none.
    fn client(
        &self,
        protocol: UpstreamProtocol,
        tls: &UpstreamTls,
        endpoint: &str,
        connect_timeout: Duration,
    ) -> Result<Box<dyn TlsProbeClient>, String>;
}

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
    /// `activeHealthCheck.probe` of a TLS backend: HTTP probes go over TLS with the backend's
    /// settings (the TLS settings and protocol; the client is made for each endpoint by the
    /// maker, when there is one).
    Tls(
        Arc<UpstreamTls>,
        UpstreamProtocol,
        Option<Arc<dyn TlsProbes>>,
    ),
    /// A [`HealthCheck`] from code.
    Custom(Arc<dyn HealthCheck>),
}

impl Prober {
    /// `custom` when given, else the built-in probe (over TLS for a backend with `tls`).
    pub fn new(
        custom: Option<Arc<dyn HealthCheck>>,
        tls: Option<(Arc<UpstreamTls>, UpstreamProtocol)>,
        tls_probes: Option<Arc<dyn TlsProbes>>,
    ) -> Self {
        match (custom, tls) {
            (Some(c), _) => Prober::Custom(c),
            (None, Some((tls, protocol))) => Prober::Tls(tls, protocol, tls_probes),
            (None, None) => Prober::Builtin(Box::new(probe_client())),
        }
    }
}

/// The client a probe task uses.
enum ProbeClient {
    Plain(Box<Client<HttpConnector, Empty<Bytes>>>),
    /// `Err`: why no TLS client could be made (every probe fails). The flag: HTTP/2.
    Tls(Box<Result<Box<dyn TlsProbeClient>, String>>, bool),
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
    let client = match &prober {
        Prober::Builtin(c) => Some(ProbeClient::Plain(c.clone())),
        Prober::Tls(tls, protocol, probes) => {
            let made = match probes {
                Some(p) => p.client(
                    *protocol,
                    tls,
                    &probe_address(&endpoint.endpoint.address, check.port),
                    check.timeout,
                ),
                None => Err("this gateway makes no TLS clients for health probes".to_owned()),
            };
            if let Err(e) = &made {
                tracing::warn!(backend = %label, endpoint = %endpoint.endpoint.address, error = %e, "cannot make the TLS client of health probes");
            }
            Some(ProbeClient::Tls(
                Box::new(made),
                *protocol == UpstreamProtocol::Http2,
            ))
        }
        Prober::Custom(_) => None,
    };
    let (mut successes, mut failures) = (0u32, 0u32);
    // The first probe soon (spread a little so many endpoints do not probe in lockstep).
    let mut wait = jitter(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let ok = match (&prober, &client) {
            (Prober::Custom(custom), _) => {
                tokio::time::timeout(check.timeout, custom.check(&endpoint.endpoint))
                    .await
                    .unwrap_or(false)
            }
            (_, Some(client)) => probe(&endpoint, &check, client).await,
            (_, None) => false,
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

/// Where an endpoint is probed: its `host:port`, or its host at `port`.
fn probe_address(address: &str, port: Option<u16>) -> std::borrow::Cow<'_, str> {
    match (port, address.rsplit_once(':')) {
        (Some(port), Some((host, _))) => format!("{host}:{port}").into(),
        _ => address.into(),
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

async fn probe(endpoint: &EndpointState, check: &ActiveHealthCheck, client: &ProbeClient) -> bool {
    let address = &*probe_address(&endpoint.endpoint.address, check.port);
    let attempt = async {
        match &check.probe {
            // A TCP probe checks that the port accepts connections, TLS backend or not.
            ProbeKind::Tcp => tokio::net::TcpStream::connect(address).await.is_ok(),
            ProbeKind::Http {
                path,
                host,
                expected,
            } => {
                let authority = host.as_deref().unwrap_or(address);
                let (uri, http2) = match client {
                    ProbeClient::Plain(_) => (format!("http://{address}{path}"), false),
                    // Over TLS the URI carries the host (HTTP/2's `:authority`); the
                    // connection goes to the endpoint whatever the URI names.
                    ProbeClient::Tls(_, http2) => (format!("https://{authority}{path}"), *http2),
                };
                let mut req =
                    Request::get(uri).header(http::header::USER_AGENT, "tidegate-health-check");
                // HTTP/2 sends the host as `:authority`, never as a Host header too.
                if !http2 {
                    req = req.header(http::header::HOST, authority);
                }
                let status = match client {
                    ProbeClient::Plain(c) => {
                        let Ok(req) = req.body(Empty::new()) else {
                            return false;
                        };
                        c.request(req).await.ok().map(|r| r.status())
                    }
                    ProbeClient::Tls(made, _) => {
                        let Ok(c) = &**made else { return false };
                        let Ok(req) = req.body(()) else {
                            return false;
                        };
                        c.get(req).await
                    }
                };
                status.is_some_and(|code| {
                    let code = code.as_u16();
                    expected.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
                })
            }
        }
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::probe_address;

    #[test]
    fn a_probe_port_replaces_the_endpoints_port() {
        assert_eq!(probe_address("10.0.0.1:53", None), "10.0.0.1:53");
        assert_eq!(probe_address("10.0.0.1:53", Some(8080)), "10.0.0.1:8080");
        assert_eq!(probe_address("[::1]:53", Some(8080)), "[::1]:8080");
        assert_eq!(probe_address("dns.local:53", Some(9153)), "dns.local:9153");
    }
}
