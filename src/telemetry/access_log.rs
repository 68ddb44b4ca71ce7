//! The access log: one line per request, written by its own thread so the request path only
//! hands over a small record (and drops it, counting the drop, if the writer falls behind).

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use prometheus_client::metrics::counter::Counter;

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
    /// The W3C trace id of a forwarded request: 32 lower-case hex digits.
    pub trace_id: Option<[u8; 32]>,
}

impl Entry {
    fn trace_id(&self) -> Option<&str> {
        self.trace_id
            .as_ref()
            .and_then(|t| std::str::from_utf8(t).ok())
    }
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

/// RFC 3339 UTC with milliseconds, as jiff writes `{:.3}`: `2023-11-14T22:13:20.123Z`.
const TIME_LEN: usize = 24;

thread_local! {
    /// The date and time to the second of the last line (`2023-11-14T22:13:20`), by second:
    /// lines come many a second, and formatting a date is most of a line's cost.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `t` as the log writes it (empty if it cannot be written).
fn time_text(t: SystemTime, buf: &mut [u8; TIME_LEN]) -> &str {
    let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return "";
    };
    let second = since.as_secs();
    let cached = SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            let ts = jiff::Timestamp::from_second(second as i64).ok()?;
            let text = format!("{ts:.0}");
            // `2023-11-14T22:13:20Z`: the last byte is the zone.
            c.1 = text.as_bytes().get(..19)?.try_into().ok()?;
            c.0 = second;
        }
        Some(c.1)
    });
    let Some(prefix) = cached else {
        return "";
    };
    let millis = since.subsec_millis();
    buf[..19].copy_from_slice(&prefix);
    buf[19] = b'.';
    buf[20] = b'0' + (millis / 100) as u8;
    buf[21] = b'0' + (millis / 10 % 10) as u8;
    buf[22] = b'0' + (millis % 10) as u8;
    buf[23] = b'Z';
    std::str::from_utf8(buf).unwrap_or_default()
}

/// An address in its usual text form; IPv4 (nearly every client) without the formatting
/// machinery.
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends JSON fields to a line.
struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonWriter<'_> {
    /// `key` (with its separator and colon) and `s` as a JSON string: copied as it is when
    /// nothing in it needs escaping (the usual case), escaped by serde_json otherwise.
    fn str_field(&mut self, key: &str, s: &str) {
        self.out.extend_from_slice(key.as_bytes());
        // Every byte looked at (no early exit), which the compiler turns into a vector loop.
        let needs_escape = s.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if !needs_escape {
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut *self.out, s);
        }
    }

    fn opt_str_field(&mut self, key: &str, s: Option<&str>) {
        match s {
            Some(s) => self.str_field(key, s),
            None => {
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"null");
            }
        }
    }

    fn int_field(&mut self, key: &str, n: u64) {
        self.out.extend_from_slice(key.as_bytes());
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// A number as serde_json writes an `f64` (`1.5`, `2.0`; `null` when not finite).
    fn float_field(&mut self, key: &str, n: Option<f64>) {
        self.out.extend_from_slice(key.as_bytes());
        let _ = serde_json::to_writer(&mut *self.out, &n);
    }
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

/// The path (with the query if asked) and the host a line shows.
fn path_and_host(e: &Entry, include_query: bool) -> (&str, Option<&str>) {
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
    (path, host)
}

/// Renders one line (without the newline).
pub fn render(e: &Entry, format: AccessLogFormat, include_query: bool, out: &mut Vec<u8>) {
    let (path, host) = path_and_host(e, include_query);
    let mut time_buf = [0u8; TIME_LEN];
    let time = time_text(e.time, &mut time_buf);
    match format {
        AccessLogFormat::Json => {
            // Written by hand, in the order and form serde_json gives `JsonLine` (a test holds
            // the two equal): deriving it spent ~4,000 instructions a line escaping strings
            // that need no escaping.
            let mut j = JsonWriter { out };
            j.str_field("{\"time\":", time);
            j.str_field(",\"request_id\":", e.request_id.to_str().unwrap_or(""));
            j.out.extend_from_slice(b",\"client_ip\":\"");
            put_ip(j.out, e.client.to_canonical());
            j.out.push(b'"');
            j.str_field(",\"method\":", e.method.as_str());
            j.str_field(",\"host\":", host.unwrap_or(""));
            j.str_field(",\"path\":", path);
            j.str_field(",\"protocol\":", protocol(e.version));
            j.int_field(",\"status\":", e.status.into());
            j.opt_str_field(",\"reason\":", (!e.reason.is_empty()).then_some(e.reason));
            j.int_field(",\"bytes_in\":", e.bytes_in);
            j.int_field(",\"bytes_out\":", e.bytes_out);
            j.float_field(",\"duration_ms\":", Some(ms(e.duration)));
            j.opt_str_field(",\"upstream\":", e.upstream.as_deref());
            j.float_field(",\"upstream_duration_ms\":", e.upstream_duration.map(ms));
            j.str_field(",\"route\":", &e.route);
            j.str_field(",\"backend\":", &e.backend);
            j.int_field(",\"retries\":", e.retries.into());
            j.opt_str_field(",\"trace_id\":", e.trace_id());
            j.out.push(b'}');
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
                trace = e.trace_id().unwrap_or("-"),
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
            trace_id: Some(*b"4bf92f3577b34da6a3ce929d0e0e4736"),
        }
    }

    /// The JSON form of an entry as serde derives it: the reference for the hand-written one.
    #[derive(serde::Serialize)]
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

    /// `render`'s JSON, field for field as `JsonLine` was written before it was done by hand.
    fn derived(e: &Entry, include_query: bool) -> Vec<u8> {
        let (path, host) = path_and_host(e, include_query);
        let line = JsonLine {
            time: jiff::Timestamp::try_from(e.time)
                .map(|t| format!("{t:.3}"))
                .unwrap_or_default(),
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
            trace_id: e.trace_id(),
        };
        serde_json::to_vec(&line).unwrap()
    }

    #[test]
    fn hand_written_json_is_what_serde_derived() {
        let base = entry();
        let odd = Entry {
            time: SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 999_999_999),
            host: Some(HeaderValue::from_static("we\"ird\\host")),
            uri: "/p%22?q=%22x%22".parse().unwrap(),
            reason: "breaker_open",
            upstream: None,
            upstream_duration: None,
            duration: Duration::from_secs(2),
            trace_id: None,
            route: "ns/r\"\\\u{e9}\t\u{1}".into(),
            client: "2001:db8::1".parse().unwrap(),
            version: Version::HTTP_2,
            ..entry()
        };
        for e in [&base, &odd] {
            for q in [false, true] {
                let mut out = Vec::new();
                render(e, AccessLogFormat::Json, q, &mut out);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&derived(e, q))
                );
            }
        }
        // The cached second carries across lines and changes with the second.
        for nanos in [0, 1_000_000, 999_000_000] {
            for secs in [1_700_000_000, 1_700_000_001, 1_700_086_400] {
                let e = Entry {
                    time: SystemTime::UNIX_EPOCH + Duration::new(secs, nanos),
                    ..entry()
                };
                let mut out = Vec::new();
                render(&e, AccessLogFormat::Json, false, &mut out);
                assert_eq!(out, derived(&e, false));
            }
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
