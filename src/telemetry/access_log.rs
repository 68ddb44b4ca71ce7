//! The access log: one line per request, written by its own thread so the request path only
//! hands over a small record (and drops it, counting the drop, if the writer falls behind).

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// How access-log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// One human-readable line.
    Text,
    /// No access log.
    Off,
}

/// Access-log settings.
#[derive(Clone, Debug)]
pub struct AccessLogConfig {
    /// Line format, or off.
    pub format: AccessLogFormat,
    /// Whether the path includes the query string (off by default: queries often carry secrets).
    pub include_query: bool,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            format: AccessLogFormat::Json,
            include_query: false,
        }
    }
}

/// Lines waiting for the writer at most; more are dropped and counted.
const QUEUE: usize = 16 * 1024;

/// What one request leaves in the log. Cheap to build: the `http` values are reference-counted.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    /// The `x-request-id` sent back.
    pub request_id: HeaderValue,
    /// The peer address of the connection.
    pub client: IpAddr,
    /// The request method.
    pub method: Method,
    /// The `Host` header, as received.
    pub host: Option<HeaderValue>,
    /// The request target, as received.
    pub uri: Uri,
    /// The HTTP version.
    pub version: Version,
    /// The status sent (499: the client left first).
    pub status: u16,
    /// Why the gateway answered itself (`no_route`, `breaker_open`, ...); empty when the
    /// upstream answered.
    pub reason: &'static str,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    /// The endpoint the request went to, if any.
    pub upstream: Option<Arc<str>>,
    /// Time to the upstream's response headers, if it was asked.
    pub upstream_duration: Option<Duration>,
    /// The rule's label (empty: no route matched).
    pub route: Arc<str>,
    /// The backend's label (empty: none picked).
    pub backend: Arc<str>,
    /// Retried attempts.
    pub retries: u32,
    /// The W3C trace id of a forwarded request.
    pub trace_id: Option<Arc<str>>,
}

/// The access log's sending half.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Entry>>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread (unless off). Lines go to `out` (stdout in the binary).
    pub fn start(config: &AccessLogConfig, out: Box<dyn Write + Send>, dropped: Counter) -> Self {
        if config.format == AccessLogFormat::Off {
            return Self { tx: None, dropped };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (format, include_query) = (config.format, config.include_query);
        let spawned = std::thread::Builder::new()
            .name("tidegate-access-log".into())
            .spawn(move || write_loop(rx, out, format, include_query));
        match spawned {
            Ok(_) => Self {
                tx: Some(tx),
                dropped,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access-log writer; access log off");
                Self { tx: None, dropped }
            }
        }
    }

    /// Whether lines are written at all (the request path skips building entries when not).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line; never blocks.
    pub fn log(&self, entry: Entry) {
        if let Some(tx) = &self.tx {
            match tx.try_send(entry) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.inc();
                }
            }
        }
    }
}

fn write_loop(
    rx: Receiver<Entry>,
    out: Box<dyn Write + Send>,
    format: AccessLogFormat,
    include_query: bool,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(512);
    loop {
        // Write what is queued, and flush as soon as the queue is empty, so lines show up at once
        // under light load and in large writes under heavy load.
        let entry = match rx.try_recv() {
            Ok(e) => e,
            Err(_) => {
                let _ = out.flush();
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        line.clear();
        render(&entry, format, include_query, &mut line);
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            break;
        }
    }
    let _ = out.flush();
}

/// The JSON form of an entry (field names are documented in the README).
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: &'a str,
    client_ip: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    reason: Option<&'static str>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream: Option<&'a str>,
    upstream_duration_ms: Option<f64>,
    route: &'a str,
    backend: &'a str,
    retries: u32,
    trace_id: Option<&'a str>,
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Renders one line (without the newline).
pub fn render(e: &Entry, format: AccessLogFormat, include_query: bool, out: &mut Vec<u8>) {
    let path = if include_query {
        e.uri.path_and_query().map_or("/", |p| p.as_str())
    } else {
        e.uri.path()
    };
    let host = e
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .or_else(|| e.uri.authority().map(|a| a.as_str()));
    let time = jiff::Timestamp::try_from(e.time)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default();
    match format {
        AccessLogFormat::Json => {
            let line = JsonLine {
                time,
                request_id: e.request_id.to_str().unwrap_or(""),
                client_ip: e.client.to_canonical().to_string(),
                method: e.method.as_str(),
                host: host.unwrap_or(""),
                path,
                protocol: protocol(e.version),
                status: e.status,
                reason: (!e.reason.is_empty()).then_some(e.reason),
                bytes_in: e.bytes_in,
                bytes_out: e.bytes_out,
                duration_ms: ms(e.duration),
                upstream: e.upstream.as_deref(),
                upstream_duration_ms: e.upstream_duration.map(ms),
                route: &e.route,
                backend: &e.backend,
                retries: e.retries,
                trace_id: e.trace_id.as_deref(),
            };
            let _ = serde_json::to_writer(&mut *out, &line);
        }
        AccessLogFormat::Text | AccessLogFormat::Off => {
            let _ = write!(
                out,
                "{client} - [{time}] \"{method} {path} {proto}\" {status} {bytes_out} {dur}ms host={host} route={route} backend={backend} reason={reason} upstream={upstream} upstream_ms={up_ms} bytes_in={bytes_in} retries={retries} request_id={rid} trace_id={trace}",
                client = e.client.to_canonical(),
                method = e.method,
                proto = protocol(e.version),
                status = e.status,
                bytes_out = e.bytes_out,
                dur = ms(e.duration),
                host = host.unwrap_or("-"),
                route = if e.route.is_empty() { "-" } else { &e.route },
                backend = if e.backend.is_empty() {
                    "-"
                } else {
                    &e.backend
                },
                reason = if e.reason.is_empty() { "-" } else { e.reason },
                upstream = e.upstream.as_deref().unwrap_or("-"),
                up_ms = e
                    .upstream_duration
                    .map(|d| ms(d).to_string())
                    .unwrap_or_else(|| "-".into()),
                bytes_in = e.bytes_in,
                retries = e.retries,
                rid = e.request_id.to_str().unwrap_or("-"),
                trace = e.trace_id.as_deref().unwrap_or("-"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: HeaderValue::from_static("abc"),
            client: "::ffff:127.0.0.1".parse().unwrap(),
            method: Method::POST,
            host: Some(HeaderValue::from_static("shop.test")),
            uri: "/cart?token=secret".parse().unwrap(),
            version: Version::HTTP_11,
            status: 201,
            reason: "",
            bytes_in: 12,
            bytes_out: 34,
            duration: Duration::from_micros(1500),
            upstream: Some("127.0.0.1:9000".into()),
            upstream_duration: Some(Duration::from_micros(1200)),
            route: "default/shop".into(),
            backend: "default/api".into(),
            retries: 0,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        }
    }

    #[test]
    fn json_lines_have_every_field_and_no_query_by_default() {
        let mut out = Vec::new();
        render(&entry(), AccessLogFormat::Json, false, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["client_ip"], "127.0.0.1");
        assert_eq!(v["path"], "/cart");
        assert_eq!(v["status"], 201);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_duration_ms"], 1.2);
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(
            v["reason"],
            serde_json::Value::Null,
            "the upstream answered"
        );
        assert_eq!(v.as_object().unwrap().len(), 18);
        let mut out = Vec::new();
        render(&entry(), AccessLogFormat::Json, true, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/cart?token=secret");
    }

    #[test]
    fn text_lines_read_like_a_combined_log() {
        let mut out = Vec::new();
        render(&entry(), AccessLogFormat::Text, false, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with(
                "127.0.0.1 - [2023-11-14T22:13:20.123Z] \"POST /cart HTTP/1.1\" 201 34 1.5ms"
            ),
            "{line}"
        );
        assert!(line.contains(" reason=- "), "{line}");
        let mut out = Vec::new();
        let e = Entry {
            status: 503,
            reason: "breaker_open",
            ..entry()
        };
        render(&e, AccessLogFormat::Text, false, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.contains(" 503 ") && line.contains(" reason=breaker_open "),
            "{line}"
        );
    }
}
