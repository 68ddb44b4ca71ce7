//! Forwarding a request to a backend: endpoint pick, breaker and limits, attempts with retries,
//! passive health, and the upgrade hand-off.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::balance::{PickContext, random::random_u64, stable_hash};
use super::body::{BoxError, ClientBody, ClientBodyError, ProxyBody, RequestBody};
use super::conn::ConnCtx;
use super::error::ProxyError;
use super::exchange::Exchange;
use super::router::Router;
use super::upstream::{Admission, NoEndpoint};
use super::{Http1Codec, Shared, h1, headers, trace};
use crate::model::{
    HashKey, LoadBalancing, Picked, RequestFilter, Retry, Timeouts, UpstreamProtocol, query_pairs,
};
use crate::telemetry::metrics::{BackendLabels, RouteLabels};

/// Where a request goes: the rule that matched and the backendRef and backend it picked.
pub(crate) struct Target<'a> {
    pub shared: &'a Shared,
    pub router: &'a Router,
    pub conn: &'a ConnCtx,
    pub rule: &'a crate::model::Rule,
    /// The backend, and the backendRef whose filters run (after the rule's request filters,
    /// before its response filters).
    pub picked: Picked<'a>,
    pub matched_prefix: Option<&'a str>,
    pub started: Instant,
}

/// What came back from one attempt. (Short-lived on the stack; boxing the response would cost
/// an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Outcome {
    /// A response, and the upstream side of an upgrade when it switched protocols.
    Response(Response<ProxyBody>, Option<OnUpgrade>),
    ConnectFailed(BoxError),
    Broken(BoxError),
    /// The client's request body failed: says nothing about the upstream.
    ClientBody(BoxError),
    TimedOut,
}

/// A request body that may be sent more than once.
enum Payload {
    /// Small enough to keep: replayable.
    Buffered(Bytes),
    /// Streamed through: one attempt only.
    Streamed(RequestBody),
}

pub(crate) async fn forward(
    t: Target<'_>,
    mut req: Request<ClientBody>,
    normalized: Option<String>,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cfg = &t.router.table.backends[t.picked.backend];
    let state = &t.router.backends[t.picked.backend];
    ex.backend = cfg.label.clone();
    let upgrade = headers::upgrade_protocol(&req);
    if upgrade.is_some() && cfg.protocol == UpstreamProtocol::H2c {
        return Err(ProxyError::UpgradeUnsupported(
            "the backend speaks HTTP/2 (h2c)",
        ));
    }

    // Request filters: header edits in place, rewrites into the path and host sent upstream.
    let original_host = headers::host_value(&req);
    let mut new_path = normalized;
    let mut new_host = None;
    let filters = &t.picked.backend_ref.filters;
    for filter in t.rule.request_filters.iter().chain(&filters.request) {
        match filter {
            RequestFilter::RequestHeaderModifier(m) => m.apply(req.headers_mut()),
            RequestFilter::UrlRewrite(rw) => {
                if let Some(h) = &rw.hostname {
                    new_host = Some(h.clone());
                }
                if let Some(p) = &rw.path {
                    let current = new_path.as_deref().unwrap_or(req.uri().path());
                    new_path = Some(p.apply(current, t.matched_prefix.unwrap_or("")));
                }
            }
        }
    }
    let path_and_query = path_and_query(req.uri(), new_path.as_deref())?;
    let hash = request_hash(&state.load_balancing(), &req, t.conn);

    let h = req.headers_mut();
    headers::strip_hop_by_hop(h);
    headers::set_forwarded(h, t.conn.peer.ip(), t.conn.scheme, original_host.as_ref());
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
    ex.trace_id = Some(trace::propagate(h));
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

    let (parts, body) = req.into_parts();
    let retry = t
        .rule
        .retry
        .as_ref()
        .filter(|r| upgrade.is_none() && (r.non_idempotent || idempotent(&parts.method)));
    let counter = ex.bytes_in_counter();
    let mut payload = match retry {
        Some(r) => buffer(body, r.max_body_bytes, counter).await,
        None => Payload::Streamed(RequestBody::new(body, counter)),
    };
    let attempts = match (&payload, retry) {
        (Payload::Buffered(_), Some(r)) => r.attempts,
        _ => 1,
    };
    let version = match cfg.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };
    let mut head = Some(parts.headers);
    let ctx = PickContext {
        client: t.conn.peer.ip(),
        hash,
    };
    state.budget.deposit();

    let mut attempt = 1;
    let (mut resp, upstream_upgrade) = loop {
        let admission = match state.breaker() {
            Some(b) => match b.admit(state.clock()) {
                Ok(a) => Some((b, a)),
                Err(_) => {
                    return Err(ProxyError::CircuitOpen {
                        backend: cfg.label.clone(),
                    });
                }
            },
            None => None,
        };
        let permit = match state.limiter() {
            Some(l) => Some(l.acquire().await.map_err(|_| ProxyError::Overloaded {
                backend: cfg.label.clone(),
            })?),
            None => None,
        };
        let endpoint = state.pick(&ctx).map_err(|e| match e {
            NoEndpoint::Empty => ProxyError::NoEndpoints {
                backend: cfg.label.clone(),
            },
            NoEndpoint::NoneHealthy => ProxyError::NoHealthyEndpoints {
                backend: cfg.label.clone(),
            },
        })?;
        ex.upstream = Some(endpoint.endpoint.address.clone());
        let in_flight = endpoint.begin();

        let last = attempt >= attempts;
        let headers = if last {
            head.take().unwrap_or_default()
        } else {
            head.clone().unwrap_or_default()
        };
        let body = match &mut payload {
            Payload::Buffered(b) => RequestBody::full(b.clone()),
            Payload::Streamed(_) => {
                match std::mem::replace(&mut payload, Payload::Buffered(Bytes::new())) {
                    Payload::Streamed(s) => s,
                    Payload::Buffered(_) => unreachable!("just matched Streamed"),
                }
            }
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(&*endpoint.endpoint.address)
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|_| ProxyError::BadRequest("the upstream URL is invalid"))?;
        let upstream_req = build_request(parts.method.clone(), uri, version, headers, body);

        let budget = attempt_budget(
            &t.rule.timeouts,
            retry,
            t.shared.config.default_request_timeout,
            t.started,
        );
        let own = state.clients();
        let clients = own.as_deref().unwrap_or(&t.shared.clients);
        let native = cfg.protocol == UpstreamProtocol::Http1
            && upgrade.is_none()
            && t.shared.config.http1_codec == Http1Codec::Native;
        let sent_at = Instant::now();
        let exchange = async {
            if native {
                classify_native(h1::send(&endpoint, &clients.native, upstream_req).await)
            } else {
                let client = match cfg.protocol {
                    UpstreamProtocol::Http1 => &clients.http1,
                    UpstreamProtocol::H2c => &clients.h2c,
                };
                classify(client.request(upstream_req).await)
            }
        };
        let outcome = match budget {
            Some(d) if d.is_zero() => Outcome::TimedOut,
            Some(d) => tokio::time::timeout(d, exchange)
                .await
                .unwrap_or(Outcome::TimedOut),
            None => exchange.await,
        };
        ex.upstream_duration = Some(sent_at.elapsed());

        let (success, retryable) = match &outcome {
            Outcome::Response(r, _) => {
                let code = r.status().as_u16();
                (
                    !state.is_failure_status(code),
                    retry.is_some_and(|r| r.on.status(code)),
                )
            }
            Outcome::ConnectFailed(_) => {
                let labels = BackendLabels {
                    backend: cfg.label.clone(),
                };
                t.shared
                    .telemetry
                    .metrics
                    .upstream_connect_errors
                    .get_or_create(&labels)
                    .inc();
                (false, retry.is_some_and(|r| r.on.connect_failure))
            }
            Outcome::Broken(_) => (false, retry.is_some_and(|r| r.on.reset)),
            Outcome::TimedOut => (
                false,
                retry.is_some_and(|r| r.on.reset || r.on.gateway_error || r.on.any_5xx),
            ),
            Outcome::ClientBody(e) => {
                // Not the upstream's doing: no health or breaker outcome, no retry.
                if let Some((breaker, admission)) = admission {
                    breaker.release(admission);
                }
                tracing::debug!(error = %e, "the client's request body failed");
                return Err(ProxyError::ClientBody);
            }
        };
        state.record(&endpoint, success);
        if let Some((breaker, admission)) = admission {
            let trial = admission == Admission::Trial;
            if let Some(open) = breaker.record(state.clock(), admission, success) {
                let gauge = &t.shared.telemetry.metrics.circuit_breaker_open;
                gauge
                    .get_or_create(&BackendLabels {
                        backend: cfg.label.clone(),
                    })
                    .set(i64::from(open));
                let what = if open { "opened" } else { "closed" };
                tracing::warn!(backend = %cfg.label, trial, "circuit breaker {what}");
            }
        }

        let time_left = t
            .rule
            .timeouts
            .request
            .is_none_or(|r| t.started.elapsed() < r);
        if retryable && !last && time_left && state.budget.withdraw() {
            let backoff = retry.map_or(Duration::ZERO, |r| backoff(r, attempt));
            t.shared
                .telemetry
                .metrics
                .upstream_retries
                .get_or_create(&RouteLabels {
                    route: t.rule.label.clone(),
                })
                .inc();
            ex.retries += 1;
            tracing::debug!(route = %t.rule.label, endpoint = %endpoint.endpoint.address, attempt, "retrying");
            drop((outcome, in_flight, permit));
            tokio::time::sleep(backoff).await;
            attempt += 1;
            continue;
        }
        match outcome {
            Outcome::Response(r, up) => {
                ex.hold(permit, in_flight);
                break (r, up);
            }
            Outcome::ConnectFailed(e) => return Err(ProxyError::UpstreamConnect(e)),
            Outcome::Broken(e) => return Err(ProxyError::UpstreamFailed(e)),
            Outcome::ClientBody(_) => unreachable!("returned above"),
            Outcome::TimedOut => return Err(ProxyError::Timeout),
        }
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_proto = resp.headers().get(header::UPGRADE).cloned();
    headers::strip_hop_by_hop(resp.headers_mut());
    match (switching, client_upgrade, upstream_proto, upstream_upgrade) {
        (true, Some(client_upgrade), Some(proto), Some(upstream_upgrade)) => {
            headers::set_upgrade(resp.headers_mut(), proto);
            super::tunnel::spawn(t.shared, client_upgrade, upstream_upgrade);
        }
        (true, ..) => {
            return Err(ProxyError::UpgradeUnsupported(
                "the upstream switched protocols unasked",
            ));
        }
        _ => {}
    }
    for m in &filters.response {
        m.apply(resp.headers_mut());
    }
    Ok(resp)
}

fn classify(r: Result<Response<Incoming>, hyper_util::client::legacy::Error>) -> Outcome {
    match r {
        Ok(mut resp) => {
            let upgrade = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| hyper::upgrade::on(&mut resp));
            Outcome::Response(resp.map(ProxyBody::upstream), upgrade)
        }
        Err(e) if e.is_connect() => Outcome::ConnectFailed(e.into()),
        Err(e) if ClientBodyError::is_cause_of(&e) => Outcome::ClientBody(e.into()),
        Err(e) => Outcome::Broken(e.into()),
    }
}

fn classify_native(r: Result<Response<h1::UpstreamBody>, h1::SendError>) -> Outcome {
    match r {
        Ok(resp) => Outcome::Response(resp.map(ProxyBody::native), None),
        Err(e @ h1::SendError::Connect { .. }) => Outcome::ConnectFailed(e.into()),
        Err(h1::SendError::Broken(e)) if ClientBodyError::is_cause_of(&*e) => {
            Outcome::ClientBody(e)
        }
        Err(h1::SendError::Broken(e)) => Outcome::Broken(e),
    }
}

fn build_request(
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    req
}

/// RFC 9110 §9.2.2: safe to repeat.
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Reads the body into memory if it fits in `limit`; otherwise streams it (what was read so far
/// first), and the request gets a single attempt.
async fn buffer(
    mut body: ClientBody,
    limit: usize,
    counter: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> Payload {
    use http_body::Body;
    if body.size_hint().lower() as usize > limit {
        return Payload::Streamed(RequestBody::new(body, counter));
    }
    let mut kept = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                if let Some(c) = &counter {
                    c.fetch_add(kept.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                return Payload::Buffered(kept.freeze());
            }
            Some(Ok(frame)) => {
                // Trailers on requests are rare; a kept body drops them.
                if let Ok(data) = frame.into_data() {
                    kept.extend_from_slice(&data);
                    if kept.len() > limit {
                        return Payload::Streamed(RequestBody::chained(
                            kept.freeze(),
                            body,
                            counter,
                        ));
                    }
                }
            }
            // The client broke off its body: send what came, once.
            Some(Err(_)) => {
                return Payload::Streamed(RequestBody::chained(kept.freeze(), body, counter));
            }
        }
    }
}

/// The key a hash-based balancer uses for this request.
fn request_hash<B>(lb: &LoadBalancing, req: &Request<B>, conn: &ConnCtx) -> Option<u64> {
    let ip_hash = || match conn.peer.ip().to_canonical() {
        std::net::IpAddr::V4(a) => stable_hash(&a.octets()),
        std::net::IpAddr::V6(a) => stable_hash(&a.octets()),
    };
    let key = match lb {
        LoadBalancing::IpHash => return Some(ip_hash()),
        LoadBalancing::ConsistentHash(k) => k,
        _ => return None,
    };
    let found = match key {
        HashKey::SourceIp => None,
        HashKey::Header(name) => req.headers().get(name).map(|v| stable_hash(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| stable_hash(v.as_bytes())),
        HashKey::QueryParam(name) => req.uri().query().and_then(|q| {
            query_pairs(q)
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| stable_hash(v.as_bytes()))
        }),
    };
    Some(found.unwrap_or_else(ip_hash))
}

/// How long one attempt may take: the tightest of the per-try timeout, the rule's backendRequest
/// and what is left of its request timeout; the gateway default when the rule sets none.
fn attempt_budget(
    t: &Timeouts,
    retry: Option<&Retry>,
    default: Option<Duration>,
    started: Instant,
) -> Option<Duration> {
    let left = t.request.map(|r| r.saturating_sub(started.elapsed()));
    let per_try = retry.and_then(|r| r.per_try_timeout);
    [left, t.backend_request, per_try]
        .into_iter()
        .flatten()
        .min()
        .or(default)
}

/// Full jitter: a random wait up to base × 2^(attempt−1), capped at max.
fn backoff(r: &Retry, attempt: u32) -> Duration {
    let cap = r
        .backoff_base
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(r.backoff_max);
    let ms = cap.as_millis() as u64;
    if ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(random_u64() % (ms + 1))
    }
}

fn path_and_query(original: &Uri, new_path: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let bad = |_| ProxyError::BadRequest("the rewritten URL is invalid");
    match (new_path, original.query()) {
        (None, _) => Ok(original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))),
        (Some(p), Some(q)) => PathAndQuery::try_from(format!("{p}?{q}")).map_err(bad),
        (Some(p), None) => PathAndQuery::try_from(p).map_err(bad),
    }
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
        assert!(attempt_budget(&t, None, None, Instant::now()).unwrap() <= Duration::from_secs(3));
        let t = Timeouts {
            request: Some(Duration::from_secs(2)),
            backend_request: Some(Duration::from_secs(3)),
        };
        assert!(attempt_budget(&t, None, None, Instant::now()).unwrap() <= Duration::from_secs(2));
        let d = Some(Duration::from_secs(60));
        assert_eq!(
            attempt_budget(&Timeouts::default(), None, d, Instant::now()),
            d
        );
    }

    #[test]
    fn the_rewritten_path_keeps_the_query() {
        let orig: Uri = "/api/x?q=1".parse().unwrap();
        assert_eq!(path_and_query(&orig, None).unwrap(), "/api/x?q=1");
        assert_eq!(path_and_query(&orig, Some("/x")).unwrap(), "/x?q=1");
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let r = Retry {
            attempts: 5,
            on: Default::default(),
            per_try_timeout: None,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            non_idempotent: false,
            max_body_bytes: 1024,
        };
        for attempt in 1..6 {
            let cap = Duration::from_millis((100u64 << (attempt - 1)).min(300));
            for _ in 0..50 {
                assert!(backoff(&r, attempt) <= cap);
            }
        }
    }
}
