//! Step 3: attempts. Each one is admit (breaker, connection limit) → pick an endpoint → send →
//! record the outcome (passive health, breaker); the retry decider says whether another
//! follows.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::super::headers;
use super::payload::Payload;
use super::retry::{self, Verdict};
use super::target::Target;
use super::timer;
use crate::model::{Backend, BackendIdx, Retry, SessionCookie, Timeouts, UpstreamProtocol};
use crate::proxy::request::error::ProxyError;
use crate::proxy::request::exchange::Exchange;
use crate::proxy::request::headers::Added;
use crate::proxy::request::service::Service;
use crate::proxy::transport::{ClientBody, ErrorKind, ProxyBody, RequestBody, UpstreamError, h1};
use crate::proxy::upstream::balance::{PickContext, sticky};
use crate::proxy::upstream::{
    Admission, BackendState, Breaker, EndpointState, InFlight, NoEndpoint, Outcomes, Router,
};
use crate::telemetry::metrics::{BackendLabels, Metrics, RouteLabels};

/// What every attempt of one request shares.
pub(super) struct Plan<'a> {
    pub t: &'a Target<'a>,
    pub method: &'a Method,
    /// The request's headers (the last attempt takes them, any before it sends a copy).
    pub headers: Option<HeaderMap>,
    /// Headers sent after `headers` (forwarding, trace context).
    pub added: &'a Added,
    pub path_and_query: &'a PathAndQuery,
    pub hash: Option<u64>,
    /// Whether the native HTTP/1.1 client may carry it (not for upgrades: hyper hands those
    /// over).
    pub native: bool,
    /// Whether `headers` holds a `Host`.
    pub has_host: bool,
    pub policy: Option<&'a Retry>,
}

/// An upstream's answer (where it was written), and the upstream side of an upgrade when it
/// switched protocols.
type Answer<'o> = (&'o mut Response<ProxyBody>, Option<OnUpgrade>);

/// A request let through the backend's breaker and connection limit.
struct Admitted {
    breaker: Option<(Arc<Breaker>, Admission)>,
    permit: Option<OwnedSemaphorePermit>,
}

/// Attempts until one answers, the policy stops, or a failure is final. The answer is written
/// into `out` by the attempt that receives it, and stays there: a response returned through
/// each step above is copied at each (160 to 256 bytes, twice per `?`). Returns the upstream
/// side of an upgrade when it switched protocols.
pub(super) async fn run(
    plan: &mut Plan<'_>,
    body: ClientBody,
    ex: &mut Exchange,
    out: &mut Option<Response<ProxyBody>>,
) -> Result<Option<OnUpgrade>, ProxyError> {
    // A body that is over already has no bytes to count (and the counter is an allocation).
    let counter = if http_body::Body::is_end_stream(&body) {
        None
    } else {
        ex.bytes_in_counter()
    };
    let mut payload = Payload::read(body, plan.policy, counter).await;
    let t = plan.t;
    let cfg = &t.router.table.backends[t.picked.backend];
    let state = &t.router.backends[t.picked.backend];
    let attempts = payload.attempts(plan.policy);
    let mut head = plan.headers.take();
    let ctx = PickContext {
        client: t.conn.peer.ip(),
        hash: plan.hash,
    };
    state.budget.deposit();
    // Sticky sessions: the endpoint the request's cookie names, if it is a session id.
    // (One branch for backends without: nothing else runs for them.)
    let session = cfg.session_persistence.as_deref();
    let (cookie_id, omit_same_site_none) = match (session, &head) {
        (Some(s), Some(h)) => (
            s.value_in(h).and_then(sticky::parse_cookie),
            s.omit_same_site_none(h),
        ),
        _ => (None, false),
    };
    let mut follow = cookie_id;
    let native = native_http1(t.service, cfg, plan.native);

    // retry.maxDuration: no attempt starts after this (one under way is never cut by it).
    let last_start = plan
        .policy
        .and_then(|r| r.max_duration)
        .map(|d| Instant::now() + d);
    // Filled by each attempt where it is (a request built and returned would be copied).
    let mut req = Request::new(RequestBody::empty());
    let mut attempt = 1;
    loop {
        let last = attempt >= attempts;
        let admitted = admit(state, cfg).await?;
        let endpoint = match session {
            None => pick(state, &ctx, cfg)?,
            Some(_) => pick_session(state, &ctx, follow, cfg)?,
        };
        ex.upstream = Some(endpoint.endpoint.address.clone());
        let in_flight = endpoint.begin();
        let headers = if last {
            head.take().unwrap_or_default()
        } else {
            head.clone().unwrap_or_default()
        };
        fill(&mut req, plan.method, headers, payload.next());
        if !native {
            for_hyper(
                &mut req,
                plan.path_and_query,
                cfg,
                &endpoint,
                Some(plan.added),
            )?;
        }

        let sent_at = Instant::now();
        let budget = Budget {
            from: sent_at,
            left: attempt_budget(
                &t.rule.timeouts,
                plan.policy,
                t.service.settings.default_request_timeout,
                t.started,
            ),
        };
        let native = native.then(|| h1::Head {
            target: plan.path_and_query.as_str(),
            extra: Some(plan.added),
            has_host: plan.has_host,
        });
        let outcome = send(
            t.service, cfg, state, &endpoint, &mut req, native, budget, out,
        )
        .await;
        // Read only by the access log (a clock read per request otherwise).
        if ex.logs() {
            ex.upstream_duration = Some(sent_at.elapsed());
        }

        let status = outcome.as_ref().map(|(r, _)| r.status().as_u16());
        let outcomes = state.outcomes();
        let Some(verdict) = retry::judge(plan.policy, status, |c| outcomes.is_failure_status(c))
        else {
            // The client's body failed: not the upstream's doing.
            if let Some((breaker, admission)) = admitted.breaker {
                breaker.release(admission);
            }
            let e = outcome.err();
            tracing::debug!(error = ?e, "the client's request body failed");
            return Err(e.map_or(
                ProxyError::BadRequest("the request body failed"),
                Into::into,
            ));
        };
        record(
            &t.service.telemetry.metrics,
            cfg,
            outcomes,
            &endpoint,
            admitted.breaker,
            outcome.as_ref().err(),
            verdict,
        );

        let time_left = t
            .rule
            .timeouts
            .request
            .is_none_or(|r| t.started.elapsed() < r);
        let backoff = (verdict.retry && !last && time_left).then(|| {
            plan.policy
                .map_or(Duration::ZERO, |r| retry::backoff(r, attempt))
        });
        if let Some(backoff) = backoff
            && last_start.is_none_or(|at| Instant::now() + backoff < at)
            && state.budget.withdraw()
        {
            let labels = RouteLabels {
                route: t.rule.label.clone(),
            };
            t.service
                .telemetry
                .metrics
                .upstream_retries
                .get_or_create(&labels)
                .inc();
            ex.retries += 1;
            tracing::debug!(route = %t.rule.label, endpoint = %endpoint.endpoint.address, attempt, "retrying");
            drop(outcome);
            *out = None;
            drop((in_flight, admitted.permit));
            if let Some(s) = session
                && s.change_on_failure
            {
                follow = None;
            }
            tokio::time::sleep(backoff).await;
            attempt += 1;
            continue;
        }
        let (resp, upgrade) = outcome?;
        if let Some(s) = session {
            let cookie = (cookie_id, omit_same_site_none);
            set_session_cookie(s, &endpoint, cookie, t, resp);
        }
        ex.hold(admitted.permit, in_flight);
        h1::discard_request(req, RequestBody::empty());
        return Ok(upgrade);
    }
}

/// Through the breaker, then the connection limit (waiting in its queue if need be).
async fn admit(state: &BackendState, cfg: &Backend) -> Result<Admitted, ProxyError> {
    let breaker = match state.breaker() {
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
    Ok(Admitted { breaker, permit })
}

fn pick(
    state: &BackendState,
    ctx: &PickContext,
    cfg: &Backend,
) -> Result<Arc<EndpointState>, ProxyError> {
    state.pick(ctx).map_err(|e| match e {
        NoEndpoint::Empty => ProxyError::NoEndpoints {
            backend: cfg.label.clone(),
        },
        NoEndpoint::NoneHealthy => ProxyError::NoHealthyEndpoints {
            backend: cfg.label.clone(),
        },
    })
}

/// [`pick`] for a backend with a session cookie: the endpoint session id `id` names while it
/// is available, else the balancer's pick.
fn pick_session(
    state: &BackendState,
    ctx: &PickContext,
    id: Option<u64>,
    cfg: &Backend,
) -> Result<Arc<EndpointState>, ProxyError> {
    match state.pick_session(ctx, id) {
        Ok((e, _)) => Ok(e),
        Err(NoEndpoint::Empty) => Err(ProxyError::NoEndpoints {
            backend: cfg.label.clone(),
        }),
        Err(NoEndpoint::NoneHealthy) => Err(ProxyError::NoHealthyEndpoints {
            backend: cfg.label.clone(),
        }),
    }
}

/// Sets the session cookie on `resp` for the endpoint that answered, unless the request's
/// cookie (its id, and whether its client gets no `SameSite=None`) already names it.
fn set_session_cookie(
    s: &SessionCookie,
    endpoint: &EndpointState,
    (cookie_id, omit_same_site_none): (Option<u64>, bool),
    t: &Target<'_>,
    resp: &mut Response<ProxyBody>,
) {
    let id = sticky::session_id(&endpoint.endpoint.address);
    if cookie_id == Some(id) {
        return;
    }
    let value = sticky::CookieValue::of(id);
    let tls = t.conn.scheme == "https";
    let now = SystemTime::now();
    if let Some(v) = s.set_cookie(value.as_str(), t.matched, tls, omit_same_site_none, now) {
        headers::response_headers(resp).append(http::header::SET_COOKIE, v);
    }
}

/// Fills `req` for an attempt: its method, headers and body. That is all the native HTTP/1.1
/// client reads (it writes the request target it is given, [`h1::Head`], and the endpoint's
/// address as the Host when the request has none), so no URI is built for it; hyper's clients
/// also need [`for_hyper`].
fn fill(
    req: &mut Request<RequestBody>,
    method: &Method,
    headers: http::HeaderMap,
    body: RequestBody,
) {
    *req.method_mut() = method.clone();
    h1::put_map(req.headers_mut(), headers);
    *req.body_mut() = body;
}

/// Makes a [`fill`]ed request one for hyper's clients (and the TLS client): the URI names the
/// endpoint, the version is the backend's protocol's, and `added` headers go into the map.
fn for_hyper(
    req: &mut Request<RequestBody>,
    path_and_query: &PathAndQuery,
    cfg: &Backend,
    endpoint: &EndpointState,
    added: Option<&Added>,
) -> Result<(), ProxyError> {
    let headers = req.headers_mut();
    if let Some(added) = added {
        added.insert_into(headers);
    }
    let address = || match &endpoint.authority {
        Some(a) => Uri::builder().authority(a.clone()),
        None => Uri::builder().authority(&*endpoint.endpoint.address),
    };
    let uri = match &cfg.tls {
        None => address().scheme("http"),
        // A TLS client is bound to its endpoint (it connects there whatever the URI says), so
        // the URI carries the Host: HTTP/2 sends it as `:authority`, and a Host header beside
        // it would be a second one (servers refuse that).
        Some(_) => {
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
            if cfg.protocol == UpstreamProtocol::Http2 && host.is_some() {
                headers.remove(http::header::HOST);
            }
            match host {
                Some(host) => Uri::builder().scheme("https").authority(host),
                None => address().scheme("https"),
            }
        }
    };
    let uri = uri
        .path_and_query(path_and_query.clone())
        .build()
        .map_err(|_| ProxyError::BadRequest("the upstream URL is invalid"))?;
    *req.uri_mut() = uri;
    *req.version_mut() = match cfg.protocol {
        // The compiler never gives an HTTP rule a TCP Backend.
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp | UpstreamProtocol::Udp => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::Http2 => Version::HTTP_2,
    };
    Ok(())
}

/// Whether requests to `cfg` go through the native HTTP/1.1 client: a plain HTTP/1.1 backend,
/// a request it may carry (`allowed`: not an upgrade, which hyper hands over), and the gateway
/// using it (`--http1-codec`).
fn native_http1(service: &Service, cfg: &Backend, allowed: bool) -> bool {
    cfg.protocol == UpstreamProtocol::Http1
        && cfg.tls.is_none()
        && allowed
        && service.settings.native_http1
}

/// The request out of `req` (for a client that takes it whole), `req` left empty.
fn taken(req: &mut Request<RequestBody>) -> Request<RequestBody> {
    std::mem::replace(req, Request::new(RequestBody::empty()))
}

/// When an attempt was sent (the clock read its timer and the native client's pool count
/// from), and how long it may take (`None`: no limit).
#[derive(Clone, Copy)]
struct Budget {
    from: Instant,
    left: Option<Duration>,
}

/// One exchange with `endpoint` over the backend's protocol and TLS (the TLS client, hyper's
/// clients, or the native HTTP/1.1 client when `native` is given: [`native_http1`]), within
/// `budget`. `req` is borrowed: hyper's clients take it (what is left is empty), the native
/// one reads it where it is (a 344-byte request moved into each step was copied each time).
/// The response is written into `out` (see [`run`]).
#[allow(clippy::too_many_arguments)]
async fn send<'o>(
    service: &Service,
    cfg: &Backend,
    state: &BackendState,
    endpoint: &Arc<EndpointState>,
    req: &mut Request<RequestBody>,
    native: Option<h1::Head<'_, Option<&Added>>>,
    budget: Budget,
    out: &'o mut Option<Response<ProxyBody>>,
) -> Result<Answer<'o>, UpstreamError> {
    let own = state.settings();
    let exchange = async {
        if let Some(tls) = &cfg.tls {
            let client = service
                .clients
                .tls(
                    own.as_deref(),
                    cfg.protocol,
                    tls,
                    &endpoint.endpoint.address,
                )
                .map_err(|e| UpstreamError::new(ErrorKind::Tls, e))?;
            let resp = client
                .request(taken(req))
                .await
                .map_err(UpstreamError::from_hyper)?;
            Ok(hyper_answer(resp, out))
        } else if let Some(n) = native {
            let settings = service.clients.native(own.as_deref());
            let resend = retry::resend_if_stale(req.method());
            let resp = h1::send(endpoint, &settings, req, n, resend, budget.from, out).await?;
            Ok((resp, None))
        } else {
            let clients = service.clients.hyper(own.as_deref());
            let client = match cfg.protocol {
                UpstreamProtocol::Http1 | UpstreamProtocol::Tcp | UpstreamProtocol::Udp => {
                    &clients.http1
                }
                UpstreamProtocol::H2c | UpstreamProtocol::Http2 => &clients.h2c,
            };
            let resp = client
                .request(taken(req))
                .await
                .map_err(UpstreamError::from_hyper)?;
            Ok(hyper_answer(resp, out))
        }
    };
    // Pinned where it is, and raced with a timer beside it: `tokio::time::timeout` would move
    // the exchange (~2 KiB) into itself and then into this future, two copies per request.
    let exchange = std::pin::pin!(exchange);
    match budget.left {
        Some(left) if left.is_zero() => Err(UpstreamError::timeout()),
        Some(left) => {
            // From the clock read the caller made when it sent (`sleep` would read it again).
            let deadline = budget.from + left;
            let timed_out = || Err(UpstreamError::timeout());
            match timer::take(deadline) {
                Some(mut kept) => timer::race(exchange, kept.sleep(), deadline, timed_out).await,
                None => {
                    let own = std::pin::pin!(tokio::time::sleep_until(deadline));
                    timer::race(exchange, own, deadline, timed_out).await
                }
            }
        }
        None => exchange.await,
    }
}

/// A response from one of hyper's clients, written into `out`, and the upstream side of the
/// upgrade when it switched protocols.
fn hyper_answer(
    resp: Response<hyper::body::Incoming>,
    out: &mut Option<Response<ProxyBody>>,
) -> Answer<'_> {
    let resp = out.insert(resp.map(ProxyBody::upstream));
    let upgrade =
        (resp.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut *resp));
    (resp, upgrade)
}

/// A request the gateway makes itself to a backend (an auth service's subrequest): no rule,
/// no retry policy, a deadline instead of timeouts.
pub(crate) struct Subrequest<'a> {
    pub service: &'a Service,
    pub router: &'a Router,
    /// Index into the table's backends.
    pub backend: BackendIdx,
    /// The client, and the hash of the request it is made for (ConsistentHash/IPHash).
    pub ctx: PickContext,
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub deadline: Instant,
}

/// The backend's connection slot and the endpoint's in-flight count a subrequest's answer
/// holds: keep it until the body is read.
pub(crate) struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight,
}

/// Sends a [`Subrequest`] the way a rule's requests to that backend go: admit (breaker,
/// connection limit) → pick (its balancer, available endpoints only) → send (its protocol and
/// TLS, within the deadline) → record (passive health, breaker). A connection that failed
/// (nothing was sent) is tried once more on the next pick, if the backend's retry budget
/// allows: one dead endpoint does not decide for the others.
pub(crate) async fn subrequest(
    s: Subrequest<'_>,
) -> Result<(Response<ProxyBody>, Held), ProxyError> {
    let cfg = &s.router.table.backends[s.backend];
    let state = &s.router.backends[s.backend];
    state.budget.deposit();
    let mut retried = false;
    loop {
        let admitted = admit(state, cfg).await?;
        let endpoint = pick(state, &s.ctx, cfg)?;
        let in_flight = endpoint.begin();
        let native = native_http1(s.service, cfg, true);
        let mut req = Request::new(RequestBody::empty());
        let body = RequestBody::full(s.body.clone());
        fill(&mut req, &s.method, s.headers.clone(), body);
        if !native {
            for_hyper(&mut req, &s.path_and_query, cfg, &endpoint, None)?;
        }
        let from = Instant::now();
        let left = s.deadline.saturating_duration_since(from);
        let native = native.then(|| h1::Head {
            target: s.path_and_query.as_str(),
            extra: None,
            has_host: req.headers().contains_key(http::header::HOST),
        });
        let mut out = None;
        let outcome = send(
            s.service,
            cfg,
            state,
            &endpoint,
            &mut req,
            native,
            Budget {
                from,
                left: Some(left),
            },
            &mut out,
        )
        .await;
        let status = outcome.as_ref().map(|(r, _)| r.status().as_u16());
        let outcomes = state.outcomes();
        let verdict =
            retry::judge(None, status, |c| outcomes.is_failure_status(c)).unwrap_or(Verdict {
                success: false,
                retry: false,
            });
        let error = outcome.as_ref().err();
        let again = error.is_some_and(|e| e.kind() == ErrorKind::Connect && e.retry_safe());
        record(
            &s.service.telemetry.metrics,
            cfg,
            outcomes,
            &endpoint,
            admitted.breaker,
            error,
            verdict,
        );
        if again && !retried && state.budget.withdraw() {
            tracing::debug!(backend = %cfg.label, endpoint = %endpoint.endpoint.address, "the auth service's endpoint refused the connection; trying another");
            retried = true;
            continue;
        }
        outcome?;
        let Some(resp) = out else {
            unreachable!("a send that succeeded wrote its response");
        };
        let held = Held {
            _permit: admitted.permit,
            _in_flight: in_flight,
        };
        return Ok((resp, held));
    }
}

/// Passive health, the breaker, and the connect-error metric learn the attempt's outcome.
fn record(
    metrics: &Metrics,
    cfg: &Backend,
    outcomes: Outcomes<'_>,
    endpoint: &EndpointState,
    breaker: Option<(Arc<Breaker>, Admission)>,
    error: Option<&UpstreamError>,
    verdict: Verdict,
) {
    let labels = || BackendLabels {
        backend: cfg.label.clone(),
    };
    if let Some(e) = error
        && e.kind() == crate::proxy::transport::ErrorKind::Connect
    {
        metrics
            .upstream_connect_errors
            .get_or_create(&labels())
            .inc();
    }
    outcomes.record(endpoint, verdict.success);
    if let Some((breaker, admission)) = breaker {
        let trial = admission == Admission::Trial;
        if let Some(open) = breaker.record(outcomes.clock(), admission, verdict.success) {
            metrics
                .circuit_breaker_open
                .get_or_create(&labels())
                .set(i64::from(open));
            let what = if open { "opened" } else { "closed" };
            tracing::warn!(backend = %cfg.label, trial, "circuit breaker {what}");
        }
    }
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
}
