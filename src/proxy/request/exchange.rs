//! The record of one request, finished (metrics, access log) when its response body is done or
//! when the request is abandoned; and [`ResponseBody`], the body that carries it there.

use std::cell::RefCell;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::reason;
use super::request_id::{RequestId, X_REQUEST_ID, value_of};
use super::trace::TraceId;
use crate::proxy::transport::h1::RawHeaders;
use crate::proxy::transport::recycle::{Recycled, Slot as Block};
use crate::proxy::transport::{ActivityGuard, BoxError, ProxyBody};
use crate::proxy::upstream::InFlight;
use crate::proxy::upstream::rate_limit::Slot;
use crate::telemetry::Telemetry;
use crate::telemetry::access_log::{Begun, Outcome, Request as LogRequest};
use crate::telemetry::metrics::{MethodLabel, RequestLabels, RequestSeries, RouteBackendLabels};

/// The label of requests that matched no route (or reached no backend).
static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// nginx's code for a request whose client went away before the answer.
pub const CLIENT_CLOSED: u16 = 499;

/// Buffers of finished access-log lines, for the lines of the thread's next requests: a line
/// is begun when its request arrives and finished when its response ends, and without these
/// each request allocated one (~250 instructions with its free, `bench/callgrind.sh`).
const SPARE_LINES: usize = crate::proxy::transport::recycle::KEPT_PER_THREAD;
/// A line buffer grown larger than this (a long path, a long host) is not kept.
const SPARE_LINE_ROOM: usize = 4096;

thread_local! {
    static LINES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// What only the access log needs; kept only when it is on.
struct LogFields {
    /// The line, begun with the request's fields.
    line: Begun,
    bytes_in: Option<Arc<AtomicU64>>,
}

/// One request in flight: its [`Record`], in a block the thread keeps for the next request's
/// (the record is moved with every response, through several layers: a pointer is copied
/// instead of ~250 bytes each time).
pub struct Exchange(Recycled<Record>);

impl std::ops::Deref for Exchange {
    type Target = Record;
    fn deref(&self) -> &Record {
        &self.0
    }
}

impl std::ops::DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut Record {
        &mut self.0
    }
}

/// What is recorded of one request, finished when it is dropped.
pub struct Record {
    telemetry: Arc<Telemetry>,
    started: Instant,
    method: MethodLabel,
    /// The rule's label, once a rule matched.
    pub route: Arc<str>,
    /// The backend's label, once one was picked.
    pub backend: Arc<str>,
    /// The route's series at that backend, once one was picked.
    pub series: Option<Arc<RequestSeries>>,
    /// The status sent (499 until there is one).
    pub status: u16,
    /// Why the gateway answered itself (see [`reason`]); empty when the upstream answered.
    pub reason: &'static str,
    /// The endpoint the request went to.
    pub upstream: Option<Arc<str>>,
    /// Time to the upstream's response headers.
    pub upstream_duration: Option<Duration>,
    /// Retried attempts.
    pub retries: u32,
    /// The W3C trace id (of a forwarded request).
    pub trace_id: Option<TraceId>,
    /// The id made for a request that came without one: also the trace id of the trace started
    /// for it when it is forwarded without a `traceparent` (see `trace::propagate`).
    made_id: Option<[u8; 32]>,
    /// Whether the made id is in the request's map; until it is, it is sent upstream beside
    /// the map (`headers::Added`): inserted into the map, its name was hashed and its value
    /// written from there, ~250 instructions per request.
    made_id_in_map: bool,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Inline: the record is in a block of its own, so they are not copied as it moves.
    log: Option<LogFields>,
    /// The connection-limit slot and the endpoint's in-flight count, held to the end.
    held: Option<(Option<OwnedSemaphorePermit>, InFlight)>,
    /// Places under concurrency limits, held to the end.
    slots: Vec<Slot>,
    /// The request id, when it goes beside the response's map (see
    /// `headers::set_request_id_or_beside`).
    request_id: Option<RequestId>,
    /// Keeps the connection counted busy (dropped after the record is finished).
    _guard: ActivityGuard,
}

impl Exchange {
    /// Starts the record of `req`; `guard` keeps its connection busy until the record ends.
    pub fn start<B>(
        telemetry: &Arc<Telemetry>,
        req: &Request<B>,
        client: IpAddr,
        request_id: &RequestId,
        guard: ActivityGuard,
    ) -> Self {
        // Nothing is read for the log when it is off.
        let log = if telemetry.access_log.enabled() {
            let buf = LINES
                .try_with(|lines| lines.borrow_mut().pop())
                .ok()
                .flatten()
                .unwrap_or_default();
            let line = telemetry.access_log.begin(
                &LogRequest {
                    time: SystemTime::now(),
                    request_id: request_id.as_str(),
                    client,
                    method: req.method(),
                    host: req.headers().get(http::header::HOST),
                    uri: req.uri(),
                    version: req.version(),
                },
                buf,
            );
            line.map(|line| LogFields {
                line,
                bytes_in: None,
            })
        } else {
            None
        };
        // The block first, so that the record is written into it rather than copied there.
        let block = Block::new();
        Self(block.write(Record {
            telemetry: telemetry.clone(),
            started: Instant::now(),
            method: MethodLabel::from(req.method()),
            route: NONE.clone(),
            backend: NONE.clone(),
            series: None,
            status: CLIENT_CLOSED,
            reason: reason::NONE,
            upstream: None,
            upstream_duration: None,
            retries: 0,
            trace_id: None,
            made_id: None,
            made_id_in_map: false,
            bytes_out: 0,
            log,
            held: None,
            slots: Vec::new(),
            request_id: None,
            _guard: guard,
        }))
    }
}

impl Record {
    /// When the request arrived (as the handler saw it).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether the request is written to the access log.
    pub fn logs(&self) -> bool {
        self.log.is_some()
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

    /// Puts the request id made for this request into `headers`, the request's, if it is not
    /// there yet: for the steps that read the request's headers whole.
    pub fn request_id_into(&mut self, headers: &mut HeaderMap) {
        if let Some(id) = self.unsent_request_id() {
            headers.insert(X_REQUEST_ID.clone(), value_of(&id));
            self.made_id_in_map = true;
        }
    }

    /// Notes the id made for the request (`in_map`: already put in the request's map).
    pub fn made_request_id(&mut self, digits: [u8; 32], in_map: bool) {
        self.made_id = Some(digits);
        self.made_id_in_map = in_map;
    }

    /// The id made for the request, if any.
    pub fn made_id(&self) -> Option<[u8; 32]> {
        self.made_id
    }

    /// The id made for the request while it is not in the request's map.
    pub fn unsent_request_id(&self) -> Option<[u8; 32]> {
        self.made_id.filter(|_| !self.made_id_in_map)
    }

    /// Keeps the request's places under concurrency limits until the record ends.
    pub fn hold_slots(&mut self, slots: Vec<Slot>) {
        self.slots = slots;
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        let m = &self.telemetry.metrics;
        let labels = || RequestLabels {
            route: self.route.clone(),
            backend: self.backend.clone(),
            method: self.method,
            code: self.status,
            reason: self.reason,
        };
        match &self.series {
            Some(series) => series.record(
                m,
                (self.method, self.status, self.reason),
                labels,
                duration.as_secs_f64(),
            ),
            None => {
                let labels = labels();
                m.requests.get_or_create(&labels).inc();
                m.request_duration
                    .get_or_create(&RouteBackendLabels {
                        route: labels.route,
                        backend: labels.backend,
                    })
                    .observe(duration.as_secs_f64());
            }
        }
        if let Some(log) = self.log.take() {
            let buf = self.telemetry.access_log.finish(
                log.line,
                &Outcome {
                    status: self.status,
                    reason: self.reason,
                    bytes_in: log.bytes_in.map_or(0, |b| b.load(Ordering::Relaxed)),
                    bytes_out: self.bytes_out,
                    duration,
                    upstream: self.upstream.as_deref(),
                    upstream_duration: self.upstream_duration,
                    route: &self.route,
                    backend: &self.backend,
                    retries: self.retries,
                    trace_id: self.trace_id.as_ref().map(TraceId::as_bytes),
                },
            );
            if buf.capacity() <= SPARE_LINE_ROOM {
                // A thread that is exiting frees it.
                let _ = LINES.try_with(|lines| {
                    let mut lines = lines.borrow_mut();
                    if lines.len() < SPARE_LINES {
                        lines.push(buf);
                    }
                });
            }
        }
    }
}

/// A response body that finishes the request's record, and keeps the connection counted busy,
/// until its last byte is sent or the client leaves.
pub struct ResponseBody {
    inner: ProxyBody,
    exchange: Exchange,
}

impl ResponseBody {
    /// `inner`, recorded in `exchange`; `request_id` is sent beside the response's map.
    pub fn new(inner: ProxyBody, mut exchange: Exchange, request_id: Option<RequestId>) -> Self {
        exchange.request_id = request_id;
        Self { inner, exchange }
    }

    /// The request id, when it goes beside the response's map.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.exchange.request_id.as_ref()
    }

    /// Takes the request id out, to put it in the response's map.
    pub fn take_request_id(&mut self) -> Option<RequestId> {
        self.exchange.request_id.take()
    }

    /// The upstream's header lines, when the native client kept them raw.
    pub fn raw_headers(&self) -> Option<&RawHeaders> {
        self.inner.raw_headers()
    }

    /// Takes the raw header lines out, to put them in the response's map.
    pub fn take_raw_headers(&mut self) -> Option<RawHeaders> {
        self.inner.take_raw_headers()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.exchange.bytes_out += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
