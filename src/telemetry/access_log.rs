//! The access log: one line per request, rendered on the request's thread and appended to a
//! shared buffer that a writer thread empties, so the request path never waits for the output
//! (and drops the line, counting the drop, if the writer falls behind).

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
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

/// Bytes waiting for the writer at most (some 12,000 lines); more lines are dropped and counted.
const PENDING_MAX: usize = 4 << 20;

/// How long the writer lets lines gather after a write before it looks again: under load, lines
/// go out in large writes and the request path does not wake the writer for each one; a line
/// still reaches the output within a few milliseconds.
const LINGER: Duration = Duration::from_millis(5);

/// The request's side of a line, known when it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The `x-request-id` sent back, `None` when it is not visible ASCII text.
    pub request_id: Option<&'a str>,
    /// The peer address of the connection.
    pub client: IpAddr,
    /// The request method.
    pub method: &'a Method,
    /// The `Host` header, as received.
    pub host: Option<&'a HeaderValue>,
    /// The request target, as received.
    pub uri: &'a Uri,
    /// The HTTP version.
    pub version: Version,
}

/// How the request ended: the rest of its line.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
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
    pub upstream: Option<&'a str>,
    /// Time to the upstream's response headers, if it was asked.
    pub upstream_duration: Option<Duration>,
    /// The rule's label (empty: no route matched).
    pub route: &'a str,
    /// The backend's label (empty: none picked).
    pub backend: &'a str,
    /// Retried attempts.
    pub retries: u32,
    /// The W3C trace id of a forwarded request: 32 lower-case hex digits.
    pub trace_id: Option<&'a [u8; 32]>,
}

impl<'a> Outcome<'a> {
    fn trace_id(&self) -> Option<&'a str> {
        self.trace_id.and_then(|t| std::str::from_utf8(t).ok())
    }
}

/// A line begun when its request arrived, with the request's fields already written: the
/// request's header values are not kept (they would keep its read buffer from being reused)
/// and nothing is copied or moved for them at the end.
#[derive(Debug)]
pub struct Begun {
    text: Vec<u8>,
    /// In a text line, where the host and the request id (written after the rest) start.
    marks: [usize; 2],
}

/// The access log's sending half.
#[derive(Clone)]
pub struct AccessLog {
    sink: Option<Arc<Sink>>,
    dropped: Counter,
}

/// Where request threads leave lines; dropping the last one tells the writer to finish.
struct Sink {
    shared: Arc<Shared>,
    format: AccessLogFormat,
    include_query: bool,
}

/// The buffer between the request threads and the writer.
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the writer sleeps and a line comes, when the log closes, and when the
    /// writer stops.
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    /// Whole lines, newline-terminated, in the order they were logged.
    lines: Vec<u8>,
    /// The writer waits for [`Shared::wake`] (the next line must signal it).
    writer_waiting: bool,
    /// Every sender is gone: write what is left and stop.
    closed: bool,
    /// The writer has stopped.
    finished: bool,
    /// The output failed; lines are dropped from now on.
    broken: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding the lock; a poisoned buffer is still whole lines.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long closing the log waits for the writer to write what is left.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl Drop for Sink {
    /// Lets the writer write what is left (the process may exit right after), but does not
    /// wait long for an output that is stuck.
    fn drop(&mut self) {
        let mut p = self.shared.lock();
        p.closed = true;
        self.shared.wake.notify_all();
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while !p.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            p = self
                .shared
                .wake
                .wait_timeout(p, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

thread_local! {
    /// A text line being put together: outside the shared buffer's lock, reused line after line.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Starts the writer thread (unless off). Lines go to `out` (stdout in the binary).
    pub fn start(config: &AccessLogConfig, out: Box<dyn Write + Send>, dropped: Counter) -> Self {
        if config.format == AccessLogFormat::Off {
            return Self {
                sink: None,
                dropped,
            };
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("tidegate-access-log".into())
            .spawn(move || write_loop(&writer, out));
        match spawned {
            Ok(_) => Self {
                sink: Some(Arc::new(Sink {
                    shared,
                    format: config.format,
                    include_query: config.include_query,
                })),
                dropped,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access-log writer; access log off");
                Self {
                    sink: None,
                    dropped,
                }
            }
        }
    }

    /// Whether lines are written at all (the request path begins no line when not).
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Begins the line of `request` in `buf` (emptied first: a buffer an earlier line gave
    /// back, or a new one), or `None` when the log is off.
    pub fn begin(&self, request: &Request<'_>, mut buf: Vec<u8>) -> Option<Begun> {
        let sink = self.sink.as_ref()?;
        buf.clear();
        buf.reserve(512);
        let marks = begin(request, sink.format, sink.include_query, &mut buf);
        Some(Begun { text: buf, marks })
    }

    /// Finishes the line and hands it to the writer; never waits for the output. Gives the
    /// line's buffer back for a later line (its bytes are the line's: [`begin`](Self::begin)
    /// empties it).
    pub fn finish(&self, mut line: Begun, outcome: &Outcome<'_>) -> Vec<u8> {
        if let Some(sink) = &self.sink {
            LINE.with_borrow_mut(|scratch| {
                let text = complete(&mut line, outcome, sink.format, scratch);
                text.push(b'\n');
                self.hand_over(sink, text);
            });
        }
        line.text
    }

    fn hand_over(&self, sink: &Sink, line: &[u8]) {
        let mut p = sink.shared.lock();
        if p.broken || p.lines.len() + line.len() > PENDING_MAX {
            drop(p);
            self.dropped.inc();
            return;
        }
        p.lines.extend_from_slice(line);
        let wake = std::mem::take(&mut p.writer_waiting);
        drop(p);
        if wake {
            sink.shared.wake.notify_one();
        }
    }
}

/// Empties the shared buffer into `out` until the log closes or the output fails.
fn write_loop(shared: &Shared, out: Box<dyn Write + Send>) {
    write_batches(shared, out);
    shared.lock().finished = true;
    shared.wake.notify_all();
}

fn write_batches(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut p = shared.lock();
            while p.lines.is_empty() && !p.closed {
                p.writer_waiting = true;
                p = shared.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            p.writer_waiting = false;
            std::mem::swap(&mut p.lines, &mut batch);
            p.closed
        };
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            let mut p = shared.lock();
            p.broken = true;
            p.lines = Vec::new();
            return;
        }
        if closed {
            return;
        }
        batch.clear();
        // A burst's buffer is not kept for good.
        batch.shrink_to(64 * 1024);
        // Woken early only by the log closing.
        let p = shared.lock();
        if !p.closed {
            let _ = shared.wake.wait_timeout(p, LINGER);
        }
    }
}

/// RFC 3339 UTC with milliseconds, as jiff writes `{:.3}`: `2023-11-14T22:13:20.123Z`.
const TIME_LEN: usize = 24;

thread_local! {
    /// The date and time to the second of the last line (`2023-11-14T22:13:20`), by second:
    /// lines come many a second, and formatting a date is most of a line's cost.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `t` as the log writes it, in ASCII (empty if it cannot be written).
fn time_text(t: SystemTime, buf: &mut [u8; TIME_LEN]) -> &[u8] {
    let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return b"";
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
        return b"";
    };
    let millis = since.subsec_millis();
    buf[..19].copy_from_slice(&prefix);
    buf[19] = b'.';
    buf[20] = b'0' + (millis / 100) as u8;
    buf[21] = b'0' + (millis / 10 % 10) as u8;
    buf[22] = b'0' + (millis % 10) as u8;
    buf[23] = b'Z';
    buf
}

/// An address in its usual text form, kept on the stack (for the log's `client_ip` and the
/// `X-Forwarded-For` sent upstream).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpText {
    bytes: [u8; IpText::LONGEST],
    len: u8,
}

impl IpText {
    /// The longest text form (an IPv6 address with an embedded IPv4 one).
    const LONGEST: usize = 45;

    /// `ip`'s text. Requests come in runs from one address (a keep-alive connection, a load
    /// balancer in front), so the last address a thread wrote is kept with its text.
    pub(crate) fn new(ip: IpAddr) -> Self {
        thread_local! {
            static LAST: Cell<Option<(IpAddr, IpText)>> = const { Cell::new(None) };
        }
        if let Ok(Some((last, text))) = LAST.try_with(Cell::get)
            && last == ip
        {
            return text;
        }
        let text = Self::write(ip);
        let _ = LAST.try_with(|l| l.set(Some((ip, text))));
        text
    }

    /// IPv4 (nearly every client) is written without the formatting machinery, which costs
    /// more than the rest of the header work.
    fn write(ip: IpAddr) -> Self {
        let mut text = IpText {
            bytes: [0; Self::LONGEST],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                let mut push = |b: u8| {
                    text.bytes[usize::from(text.len)] = b;
                    text.len += 1;
                };
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        push(b'.');
                    }
                    let (h, t, o) = (octet / 100, octet / 10 % 10, octet % 10);
                    if h > 0 {
                        push(b'0' + h);
                    }
                    if h > 0 || t > 0 {
                        push(b'0' + t);
                    }
                    push(b'0' + o);
                }
            }
            IpAddr::V6(v6) => {
                let mut out = &mut text.bytes[..];
                // Never short: the longest text form fits.
                let _ = write!(out, "{v6}");
                text.len = (Self::LONGEST - out.len()) as u8;
            }
        }
        text
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends JSON fields to a line.
struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonWriter<'_> {
    // Inlined so that each key, a constant, is copied without a call.
    /// `key` (with its separator and colon) and `s` as a JSON string: copied as it is when
    /// nothing in it needs escaping (the usual case), escaped by serde_json otherwise.
    #[inline(always)]
    fn str_field(&mut self, key: &str, s: &str) {
        if needs_escape(s.as_bytes()) {
            self.out.extend_from_slice(key.as_bytes());
            let _ = serde_json::to_writer(&mut *self.out, s);
        } else {
            self.plain_field(key, s.as_bytes());
        }
    }

    /// `key` and `s`, ASCII with no character JSON escapes (the gateway wrote it, or it is an
    /// HTTP token such as a method).
    #[inline(always)]
    fn plain_field(&mut self, key: &str, s: &[u8]) {
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'"');
        self.out.extend_from_slice(s);
        self.out.push(b'"');
    }

    #[inline(always)]
    fn opt_str_field(&mut self, key: &str, s: Option<&str>) {
        match s {
            Some(s) => self.str_field(key, s),
            None => {
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"null");
            }
        }
    }

    #[inline(always)]
    fn int_field(&mut self, key: &str, n: u64) {
        self.out.extend_from_slice(key.as_bytes());
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `d` in milliseconds as serde_json writes the `f64` [`ms`] gives (`1.5`, `2.0`; `null`
    /// for none), but from the whole number of microseconds: float formatting was a tenth of
    /// a line's cost.
    #[inline(always)]
    fn ms_field(&mut self, key: &str, d: Option<Duration>) {
        self.out.extend_from_slice(key.as_bytes());
        let Some(d) = d else {
            self.out.extend_from_slice(b"null");
            return;
        };
        let micros = micros(d);
        // Below 10^12 µs (11 days) the shortest form of `micros / 1e3` is its three decimals
        // with the trailing zeros cut, in plain notation; past that serde_json writes it.
        if micros >= 1_000_000_000_000 {
            let _ = serde_json::to_writer(&mut *self.out, &ms(d));
            return;
        }
        let (whole, frac) = (micros / 1000, micros % 1000);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = match frac {
            0 => 2,
            f if f % 100 == 0 => 2,
            f if f % 10 == 0 => 3,
            _ => 4,
        };
        self.out.extend_from_slice(&digits[..len]);
    }
}

/// Whether `s` has a byte JSON escapes (a control character, `"` or `\`). Eight bytes at a
/// time: most strings in a line are 10-40 bytes, which a byte loop spent ~5 instructions each
/// on.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero exactly when some byte of `x` is below `n` (n <= 0x80).
    let any_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut chunks = s.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        found |= any_below(x, 0x20)
            | any_below(x ^ (ONES * u64::from(b'"')), 1)
            | any_below(x ^ (ONES * u64::from(b'\\')), 1);
    }
    found != 0
        || chunks
            .remainder()
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
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

/// `d` in whole microseconds, rounded half up (in integers: the float form's `round` was ~50
/// instructions a line); past `u64::MAX` µs (584,000 years) it stays there.
fn micros(d: Duration) -> u64 {
    let sub = (u64::from(d.subsec_nanos()) + 500) / 1000;
    d.as_secs().saturating_mul(1_000_000).saturating_add(sub)
}

fn ms(d: Duration) -> f64 {
    micros(d) as f64 / 1e3
}

/// The path (with the query if asked) and the host a line shows.
fn path_and_host<'a>(r: &Request<'a>, include_query: bool) -> (&'a str, Option<&'a str>) {
    let path = if include_query {
        r.uri.path_and_query().map_or("/", |p| p.as_str())
    } else {
        r.uri.path()
    };
    let host = r
        .host
        .and_then(|h| h.to_str().ok())
        .or_else(|| r.uri.authority().map(|a| a.as_str()));
    (path, host)
}

// JSON lines are written by hand, in the order and form serde_json gives the `JsonLine` the
// tests derive (they hold the two equal): deriving it spent ~4,000 instructions a line escaping
// strings that need no escaping.

/// Writes the request's side of a line into `out`; returns where a text line's host and request
/// id start.
fn begin(
    r: &Request<'_>,
    format: AccessLogFormat,
    include_query: bool,
    out: &mut Vec<u8>,
) -> [usize; 2] {
    let (path, host) = path_and_host(r, include_query);
    let mut time_buf = [0u8; TIME_LEN];
    let time = time_text(r.time, &mut time_buf);
    match format {
        AccessLogFormat::Json => {
            let mut j = JsonWriter { out };
            j.plain_field("{\"time\":", time);
            j.str_field(",\"request_id\":", r.request_id.unwrap_or(""));
            j.out.extend_from_slice(b",\"client_ip\":\"");
            j.out
                .extend_from_slice(IpText::new(r.client.to_canonical()).as_bytes());
            j.out.push(b'"');
            j.plain_field(",\"method\":", r.method.as_str().as_bytes());
            j.str_field(",\"host\":", host.unwrap_or(""));
            j.str_field(",\"path\":", path);
            j.plain_field(",\"protocol\":", protocol(r.version).as_bytes());
            [0, 0]
        }
        AccessLogFormat::Text | AccessLogFormat::Off => {
            let _ = write!(
                out,
                "{client} - [{time}] \"{method} {path} {proto}\"",
                time = std::str::from_utf8(time).unwrap_or_default(),
                client = r.client.to_canonical(),
                method = r.method,
                proto = protocol(r.version),
            );
            let host_at = out.len();
            out.extend_from_slice(host.unwrap_or("-").as_bytes());
            let request_id_at = out.len();
            out.extend_from_slice(r.request_id.unwrap_or("-").as_bytes());
            [host_at, request_id_at]
        }
    }
}

/// Appends the rest of a JSON line.
fn finish_json(o: &Outcome<'_>, out: &mut Vec<u8>) {
    let mut j = JsonWriter { out };
    j.int_field(",\"status\":", o.status.into());
    j.opt_str_field(",\"reason\":", (!o.reason.is_empty()).then_some(o.reason));
    j.int_field(",\"bytes_in\":", o.bytes_in);
    j.int_field(",\"bytes_out\":", o.bytes_out);
    j.ms_field(",\"duration_ms\":", Some(o.duration));
    j.opt_str_field(",\"upstream\":", o.upstream);
    j.ms_field(",\"upstream_duration_ms\":", o.upstream_duration);
    j.str_field(",\"route\":", o.route);
    j.str_field(",\"backend\":", o.backend);
    j.int_field(",\"retries\":", o.retries.into());
    // Hex by construction: checked as cheaply as that allows, then copied.
    match o.trace_id.filter(|t| t.is_ascii() && !needs_escape(*t)) {
        Some(t) => j.plain_field(",\"trace_id\":", t),
        None => j.opt_str_field(",\"trace_id\":", o.trace_id()),
    }
    j.out.push(b'}');
}

/// The whole line (without its newline): written on in `line` itself for JSON, put together in
/// `scratch` for text.
fn complete<'b>(
    line: &'b mut Begun,
    o: &Outcome<'_>,
    format: AccessLogFormat,
    scratch: &'b mut Vec<u8>,
) -> &'b mut Vec<u8> {
    match format {
        AccessLogFormat::Json => {
            finish_json(o, &mut line.text);
            &mut line.text
        }
        AccessLogFormat::Text | AccessLogFormat::Off => {
            scratch.clear();
            finish_text(line, o, scratch);
            scratch
        }
    }
}

/// Writes a whole text line from its begun part and the outcome.
fn finish_text(line: &Begun, o: &Outcome<'_>, out: &mut Vec<u8>) {
    let [host_at, request_id_at] = line.marks;
    let text = &line.text;
    // Both were written from `&str`s.
    let (head, host, request_id) = (
        &text[..host_at],
        std::str::from_utf8(&text[host_at..request_id_at]).unwrap_or("-"),
        std::str::from_utf8(&text[request_id_at..]).unwrap_or("-"),
    );
    out.extend_from_slice(head);
    let _ = write!(
        out,
        " {status} {bytes_out} {dur}ms host={host} route={route} backend={backend} reason={reason} upstream={upstream} upstream_ms={up_ms} bytes_in={bytes_in} retries={retries} request_id={request_id} trace_id={trace}",
        status = o.status,
        bytes_out = o.bytes_out,
        dur = ms(o.duration),
        route = if o.route.is_empty() { "-" } else { o.route },
        backend = if o.backend.is_empty() { "-" } else { o.backend },
        reason = if o.reason.is_empty() { "-" } else { o.reason },
        upstream = o.upstream.unwrap_or("-"),
        up_ms = o
            .upstream_duration
            .map(|d| ms(d).to_string())
            .unwrap_or_else(|| "-".into()),
        bytes_in = o.bytes_in,
        retries = o.retries,
        trace = o.trace_id().unwrap_or("-"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_print_as_std_does() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.255",
            "1.20.3.99",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
            // Again (the thread's last address), and after another.
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
            let other: IpAddr = "10.9.8.7".parse().unwrap();
            assert_eq!(IpText::new(other).as_bytes(), b"10.9.8.7");
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    /// A test value that lives as long as the test binary.
    fn leak<T>(value: T) -> &'static T {
        Box::leak(Box::new(value))
    }

    /// A whole line's fields, as the tests vary them.
    #[derive(Debug, Clone, Copy)]
    struct Entry<'a> {
        time: SystemTime,
        request_id: &'a HeaderValue,
        client: IpAddr,
        method: &'a Method,
        host: Option<&'a HeaderValue>,
        uri: &'a Uri,
        version: Version,
        status: u16,
        reason: &'static str,
        bytes_in: u64,
        bytes_out: u64,
        duration: Duration,
        upstream: Option<&'a str>,
        upstream_duration: Option<Duration>,
        route: &'a str,
        backend: &'a str,
        retries: u32,
        trace_id: Option<&'a [u8; 32]>,
    }

    impl<'a> Entry<'a> {
        fn request(&self) -> Request<'a> {
            Request {
                time: self.time,
                request_id: self.request_id.to_str().ok(),
                client: self.client,
                method: self.method,
                host: self.host,
                uri: self.uri,
                version: self.version,
            }
        }

        fn outcome(&self) -> Outcome<'a> {
            Outcome {
                status: self.status,
                reason: self.reason,
                bytes_in: self.bytes_in,
                bytes_out: self.bytes_out,
                duration: self.duration,
                upstream: self.upstream,
                upstream_duration: self.upstream_duration,
                route: self.route,
                backend: self.backend,
                retries: self.retries,
                trace_id: self.trace_id,
            }
        }
    }

    /// The line the log writes for `e` (without its newline), begun and completed as the request
    /// path does.
    fn render(e: &Entry<'_>, format: AccessLogFormat, include_query: bool, out: &mut Vec<u8>) {
        let mut text = Vec::new();
        let marks = begin(&e.request(), format, include_query, &mut text);
        let mut line = Begun { text, marks };
        let mut scratch = Vec::new();
        out.extend_from_slice(complete(&mut line, &e.outcome(), format, &mut scratch));
    }

    fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: leak(HeaderValue::from_static("abc")),
            client: "::ffff:127.0.0.1".parse().unwrap(),
            method: leak(Method::POST),
            host: Some(leak(HeaderValue::from_static("shop.test"))),
            uri: leak("/cart?token=secret".parse().unwrap()),
            version: Version::HTTP_11,
            status: 201,
            reason: "",
            bytes_in: 12,
            bytes_out: 34,
            duration: Duration::from_micros(1500),
            upstream: Some("127.0.0.1:9000"),
            upstream_duration: Some(Duration::from_micros(1200)),
            route: "default/shop",
            backend: "default/api",
            retries: 0,
            trace_id: Some(b"4bf92f3577b34da6a3ce929d0e0e4736"),
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
    fn derived(e: &Entry<'_>, include_query: bool) -> Vec<u8> {
        let (path, host) = path_and_host(&e.request(), include_query);
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
            upstream: e.upstream,
            upstream_duration_ms: e.upstream_duration.map(ms),
            route: e.route,
            backend: e.backend,
            retries: e.retries,
            trace_id: e.outcome().trace_id(),
        };
        serde_json::to_vec(&line).unwrap()
    }

    #[test]
    fn hand_written_json_is_what_serde_derived() {
        let base = entry();
        let odd = Entry {
            time: SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 999_999_999),
            host: Some(leak(HeaderValue::from_static("we\"ird\\host"))),
            uri: leak("/p%22?q=%22x%22".parse().unwrap()),
            reason: "breaker_open",
            upstream: None,
            upstream_duration: None,
            duration: Duration::from_secs(2),
            trace_id: None,
            route: "ns/r\"\\\u{e9}\t\u{1}",
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
        // Durations around where the decimals are cut and where serde_json takes over.
        for nanos in [
            0,
            499,
            500,
            1_000,
            9_999,
            10_000,
            100_000,
            999_499,
            999_500,
            1_000_000,
            1_001_000,
            1_010_000,
            1_100_000,
            123_456_789_012,
            999_999_999_999_499,
            999_999_999_999_500,
            1_000_000_000_000_000,
            u64::MAX,
        ] {
            let d = Duration::from_nanos(nanos);
            for e in [
                Entry {
                    duration: d,
                    upstream_duration: Some(d),
                    ..entry()
                },
                Entry {
                    duration: Duration::MAX,
                    ..entry()
                },
            ] {
                let mut out = Vec::new();
                render(&e, AccessLogFormat::Json, false, &mut out);
                assert_eq!(out, derived(&e, false), "{d:?}");
            }
        }
        // Trace ids that are not what a trace id should be.
        let mut quoted = *b"4bf92f3577b34da6a3ce929d0e0e4736";
        quoted[5] = b'"';
        let mut not_utf8 = quoted;
        not_utf8[7] = 0xff;
        let mut accented = [b'a'; 32];
        accented[..2].copy_from_slice("\u{e9}".as_bytes());
        for t in [&quoted, &not_utf8, &accented] {
            let e = Entry {
                trace_id: Some(t),
                ..entry()
            };
            let mut out = Vec::new();
            render(&e, AccessLogFormat::Json, false, &mut out);
            assert_eq!(out, derived(&e, false), "{t:?}");
        }
        // A byte to escape (or one that looks close) at every place of the eight-byte scan.
        for len in 1..=24 {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1f}', '\0', '\u{7f}', ' ', '\u{e9}'] {
                    let mut s: String = "a".repeat(len - 1);
                    s.insert(at, c);
                    let e = Entry {
                        route: &s,
                        ..entry()
                    };
                    let mut out = Vec::new();
                    render(&e, AccessLogFormat::Json, false, &mut out);
                    assert_eq!(out, derived(&e, false), "{s:?}");
                }
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

    /// An output the test reads back, which can be held (a writer that cannot keep up) or
    /// made to fail.
    #[derive(Clone, Default)]
    struct Output {
        written: Arc<Mutex<Vec<u8>>>,
        held: Arc<Mutex<()>>,
        fail: bool,
    }

    impl Write for Output {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _held = self.held.lock().unwrap();
            if self.fail {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Output {
        /// The lines' request ids, waiting (up to 5 s) until there are `n`.
        fn ids(&self, n: usize) -> Vec<String> {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let text = String::from_utf8(self.written.lock().unwrap().clone()).unwrap();
                assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
                let ids: Vec<String> = text
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["request_id"].as_str().unwrap().to_owned()
                    })
                    .collect();
                if ids.len() >= n || std::time::Instant::now() > deadline {
                    return ids;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn json() -> AccessLogConfig {
        AccessLogConfig {
            format: AccessLogFormat::Json,
            include_query: false,
        }
    }

    /// Logs lines with request ids `from..to`, each line in the buffer the one before gave
    /// back (as the request path does), so a line that kept an earlier one's bytes would show.
    fn log_ids(log: &AccessLog, ids: std::ops::Range<usize>) {
        let mut buf = Vec::new();
        for i in ids {
            let id = HeaderValue::from(i);
            let e = Entry {
                request_id: &id,
                ..entry()
            };
            let line = log.begin(&e.request(), buf).unwrap();
            buf = log.finish(line, &e.outcome());
        }
    }

    #[test]
    fn lines_reach_the_output_promptly_and_in_order() {
        let out = Output::default();
        let dropped = Counter::default();
        let log = AccessLog::start(&json(), Box::new(out.clone()), dropped.clone());
        log_ids(&log, 0..1);
        assert_eq!(
            out.ids(1),
            ["0"],
            "a lone line is written without more coming"
        );
        // From several threads at once: each thread's lines keep their order.
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || log_ids(log, (1 + t * 1000)..(1 + (t + 1) * 1000)));
            }
        });
        let ids: Vec<usize> = out.ids(4001).iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(ids.len(), 4001);
        for t in 0..4 {
            let mine: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&i| i > 0 && (i - 1) / 1000 == t)
                .collect();
            assert_eq!(
                mine,
                ((1 + t * 1000)..(1 + (t + 1) * 1000)).collect::<Vec<_>>()
            );
        }
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn a_writer_that_cannot_keep_up_costs_bounded_memory_and_counts_the_dropped_lines() {
        let out = Output::default();
        let dropped = Counter::default();
        let log = AccessLog::start(&json(), Box::new(out.clone()), dropped.clone());
        let held = out.held.lock().unwrap();
        // The writer takes the first line and blocks writing it; the rest wait in the buffer.
        log_ids(&log, 0..1);
        std::thread::sleep(Duration::from_millis(50));
        let line_len = {
            let mut line = Vec::new();
            render(&entry(), AccessLogFormat::Json, false, &mut line);
            line.len() + 1
        };
        // More than the bound even if the writer empties the buffer once more on the way.
        let n = 3 * PENDING_MAX / line_len;
        log_ids(&log, 1..n);
        let pending = log.sink.as_ref().unwrap().shared.lock().lines.len();
        assert!(pending <= PENDING_MAX, "{pending} bytes waiting");
        assert!(dropped.get() > 0, "lines past the bound are dropped");
        drop(held);
        let kept = n - dropped.get() as usize;
        let ids = out.ids(kept);
        assert_eq!(
            ids.len(),
            kept,
            "every line not counted as dropped is written"
        );
        let ids: Vec<usize> = ids.iter().map(|i| i.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order");
    }

    #[test]
    fn lines_after_the_output_failed_are_counted_as_dropped() {
        let out = Output {
            fail: true,
            ..Output::default()
        };
        let dropped = Counter::default();
        let log = AccessLog::start(&json(), Box::new(out), dropped.clone());
        log_ids(&log, 0..1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.sink.as_ref().unwrap().shared.lock().broken {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer saw the failure"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        log_ids(&log, 1..11);
        assert_eq!(dropped.get(), 10);
    }
}
