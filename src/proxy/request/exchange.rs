//! The record of one request, finished (metrics, access log) when its response body is done or
//! when the request is abandoned.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Request, Uri, Version};

use tokio::sync::OwnedSemaphorePermit;

use super::upstream::InFlight;
use crate::telemetry::Telemetry;
use crate::telemetry::access_log::Entry;
use crate::telemetry::metrics::{MethodLabel, RequestLabels, RouteBackendLabels};

/// The label of requests that matched no route (or reached no backend).
static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// nginx's code for a request whose client went away before the answer.
pub const CLIENT_CLOSED: u16 = 499;

/// Fields only the access log needs; captured only when it is on.
struct LogFields {
    time: SystemTime,
    request_id: HeaderValue,
    client: IpAddr,
    method: Method,
    host: Option<HeaderValue>,
    uri: Uri,
    version: Version,
    bytes_in: Option<Arc<AtomicU64>>,
}

/// One request in flight.
pub struct Exchange {
    telemetry: Arc<Telemetry>,
    started: Instant,
    method: MethodLabel,
    /// The rule's label, once a rule matched.
    pub route: Arc<str>,
    /// The backend's label, once one was picked.
    pub backend: Arc<str>,
    /// The status sent (499 until there is one).
    pub status: u16,
    /// The endpoint the request went to.
    pub upstream: Option<Arc<str>>,
    /// Time to the upstream's response headers.
    pub upstream_duration: Option<Duration>,
    /// Retried attempts.
    pub retries: u32,
    /// The W3C trace id.
    pub trace_id: Option<Arc<str>>,
    /// Response body bytes sent.
    pub bytes_out: u64,
    log: Option<LogFields>,
    /// The connection-limit slot and the endpoint's in-flight count, held to the end.
    held: Option<(Option<OwnedSemaphorePermit>, InFlight)>,
}

impl Exchange {
    /// Starts the record of `req`.
    pub fn start<B>(
        telemetry: &Arc<Telemetry>,
        req: &Request<B>,
        client: IpAddr,
        request_id: &HeaderValue,
    ) -> Self {
        let log = telemetry.access_log.enabled().then(|| LogFields {
            time: SystemTime::now(),
            request_id: request_id.clone(),
            client,
            method: req.method().clone(),
            host: req.headers().get(http::header::HOST).cloned(),
            uri: req.uri().clone(),
            version: req.version(),
            bytes_in: None,
        });
        Self {
            telemetry: telemetry.clone(),
            started: Instant::now(),
            method: MethodLabel::from(req.method()),
            route: NONE.clone(),
            backend: NONE.clone(),
            status: CLIENT_CLOSED,
            upstream: None,
            upstream_duration: None,
            retries: 0,
            trace_id: None,
            bytes_out: 0,
            log,
            held: None,
        }
    }

    /// A counter for request body bytes, when the access log wants them.
    pub fn bytes_in_counter(&mut self) -> Option<Arc<AtomicU64>> {
        let log = self.log.as_mut()?;
        Some(log.bytes_in.get_or_insert_with(Default::default).clone())
    }

    /// Keeps the backend's slot and the endpoint's in-flight count until the response is done.
    pub fn hold(&mut self, permit: Option<OwnedSemaphorePermit>, in_flight: InFlight) {
        self.held = Some((permit, in_flight));
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        let m = &self.telemetry.metrics;
        let labels = RequestLabels {
            route: self.route.clone(),
            backend: self.backend.clone(),
            method: self.method,
            code: self.status,
        };
        m.requests.get_or_create(&labels).inc();
        m.request_duration
            .get_or_create(&RouteBackendLabels {
                route: labels.route,
                backend: labels.backend,
            })
            .observe(duration.as_secs_f64());
        if let Some(log) = self.log.take() {
            self.telemetry.access_log.log(Entry {
                time: log.time,
                request_id: log.request_id,
                client: log.client,
                method: log.method,
                host: log.host,
                uri: log.uri,
                version: log.version,
                status: self.status,
                bytes_in: log.bytes_in.map_or(0, |b| b.load(Ordering::Relaxed)),
                bytes_out: self.bytes_out,
                duration,
                upstream: self.upstream.take(),
                upstream_duration: self.upstream_duration,
                route: self.route.clone(),
                backend: self.backend.clone(),
                retries: self.retries,
                trace_id: self.trace_id.take(),
            });
        }
    }
}
