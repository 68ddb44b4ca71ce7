//! The native HTTP/1.1 path (`Http1Codec::Native`) through real sockets: a differential run
//! against hyper (`Http1Codec::Hyper`) over a corpus of raw requests, the request-smuggling
//! shapes the native codec must refuse, and edge cases of response framing, connection pooling
//! and the hand-off to hyper (h2c, upgrades).
//!
//! Upstreams are raw TCP servers ([`Recorder`]) that parse requests themselves, record exactly
//! what reached them, and answer with the bytes each test chooses. Clients are raw sockets
//! ([`Wire`]) too, so every byte on both sides is the test's.

mod common;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ConfigDir, HttpClient, Upstream};
use futures::{SinkExt, StreamExt};
use tidegate::proxy::{Http1Codec, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// The longest a client read waits for the gateway.
const WAIT: Duration = Duration::from_secs(5);

/// What the recording upstream answers by default.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A request hidden where a correct parser sees body bytes (or nothing at all).
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Wire: one end of a TCP connection, reading HTTP/1.1 messages by hand.
// ---------------------------------------------------------------------------------------------

type Headers = Vec<(String, String)>;

/// Body bytes that print short (a 1 MiB body in an assertion message helps no one).
#[derive(Clone, Default, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 96 {
            write!(f, "{:?}", String::from_utf8_lossy(&self.0))
        } else {
            let sum = self.0.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            write!(
                f,
                "<{} bytes, fnv1a {sum:016x}, starting {:?}>",
                self.0.len(),
                String::from_utf8_lossy(&self.0[..48])
            )
        }
    }
}

/// Why reading a message stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    /// The peer closed (or reset) the connection before a message started.
    Closed,
    /// The peer closed the connection inside a message.
    Truncated(String),
    /// Nothing arrived in time.
    Stalled,
    /// Not a message this harness understands.
    Garbled(String),
}

/// One end of a TCP connection, with what was read and not yet consumed.
struct Wire {
    io: TcpStream,
    buf: Vec<u8>,
    /// How long one read may wait (`None`: for ever, as an idle keep-alive server does).
    wait: Option<Duration>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            io: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
            wait: Some(WAIT),
        }
    }

    /// Writes `bytes`; a gateway that already closed is the next read's business.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
    }

    /// Reads once more; `Ok(0)` at the end of the stream (a reset counts as one).
    async fn fill(&mut self) -> Result<usize, Cut> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.io.read(&mut chunk);
        let r = match self.wait {
            Some(d) => tokio::time::timeout(d, read)
                .await
                .map_err(|_| Cut::Stalled)?,
            None => read.await,
        };
        let n = r.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn more(&mut self, what: &str) -> Result<(), Cut> {
        if self.fill().await? == 0 {
            return Err(Cut::Truncated(format!(
                "closed in {what}, unread: {:?}",
                Blob(self.buf.clone())
            )));
        }
        Ok(())
    }

    /// The start line and header fields of the next message (names lower-cased, values
    /// trimmed); `None` when the peer closed first.
    async fn head(&mut self) -> Result<Option<(String, Headers)>, Cut> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Cut::Truncated(format!(
                    "closed in a head: {:?}",
                    Blob(self.buf.clone())
                )));
            }
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (
                    n.to_ascii_lowercase(),
                    v.trim_matches([' ', '\t']).to_owned(),
                ),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        Ok(Some((start, headers)))
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, Cut> {
        while self.buf.len() < n {
            self.more("a body").await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Result<String, Cut> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.more("a chunked body").await?;
        }
    }

    /// A chunked body: the data, and the trailer fields.
    async fn chunked(&mut self) -> Result<(Vec<u8>, Headers), Cut> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| Cut::Garbled(format!("chunk size line {line:?}")))?;
            if size == 0 {
                break;
            }
            body.extend(self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return Err(Cut::Garbled("no CRLF after chunk data".into()));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok((body, trailers));
            }
            let (n, v) = line.split_once(':').unwrap_or((&line, ""));
            trailers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
    }

    /// Everything until the peer closes.
    async fn rest(&mut self) -> Result<Vec<u8>, Cut> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The next response (1xx other than 101 collected on the way). `head_request`: the request
    /// was HEAD, so no body follows.
    async fn reply(&mut self, head_request: bool) -> Result<Reply, Cut> {
        let mut interim = Vec::new();
        loop {
            let Some((start, headers)) = self.head().await? else {
                return Err(if interim.is_empty() {
                    Cut::Closed
                } else {
                    Cut::Truncated(format!("closed after interim responses {interim:?}"))
                });
            };
            let mut parts = start.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_owned();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Cut::Garbled(format!("status line {start:?}")))?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let chunked = header(&headers, "transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let length = header(&headers, "content-length");
            let (framing, body) = if head_request || matches!(status, 101..=199 | 204 | 304) {
                ("none", Vec::new())
            } else if chunked {
                ("chunked", self.chunked().await?.0)
            } else if let Some(n) = length {
                let n = n
                    .parse()
                    .map_err(|_| Cut::Garbled(format!("content-length {n:?}")))?;
                ("length", self.take(n).await?)
            } else {
                ("close", self.rest().await?)
            };
            return Ok(Reply {
                version,
                status,
                interim,
                headers,
                framing,
                body: Blob(body),
            });
        }
    }

    /// Whether the peer closes the connection (within the wait) with nothing more to say.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.fill().await, Ok(0))
    }
}

/// A response as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    version: String,
    status: u16,
    /// 1xx responses received before this one.
    interim: Vec<u16>,
    headers: Headers,
    /// How the body was delimited: `none`, `length`, `chunked` or `close`.
    framing: &'static str,
    body: Blob,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Sends `raw` on a fresh connection and reads one response.
async fn once(addr: SocketAddr, raw: &[u8]) -> Result<Reply, Cut> {
    let mut c = Wire::connect(addr).await;
    c.send(raw).await;
    c.reply(raw.starts_with(b"HEAD ")).await
}

// ---------------------------------------------------------------------------------------------
// Recorder: an upstream that records what reached it.
// ---------------------------------------------------------------------------------------------

/// A request as an upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    version: String,
    /// Lower-case names, in the order received.
    headers: Headers,
    body: Blob,
    trailers: Headers,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// What a [`Recorder`] does with a request.
enum Answer {
    /// Writes these bytes and waits for the next request.
    Keep(Vec<u8>),
    /// Writes these bytes and closes.
    Close(Vec<u8>),
    /// Writes these bytes, then closes the connection after it sat idle this long.
    CloseIdle(Vec<u8>, Duration),
    /// Closes without answering, as if the connection had been closed just before the request
    /// arrived (the keep-alive race); the request is not recorded.
    Hangup,
}

/// Decides the answer from the request and its index on its connection (0 for the first).
type Responder = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

/// A raw HTTP/1.1 upstream: parses each request itself (`Content-Length` or chunked body),
/// records it once it is complete, and answers as its responder says, with keep-alive.
struct Recorder {
    addr: SocketAddr,
    seen: Log,
    /// Requests received whole and met with [`Answer::Hangup`].
    hung_up: Log,
    connections: Arc<AtomicUsize>,
}

impl Recorder {
    /// Answers every request with [`OK`].
    async fn start() -> Self {
        Self::answering(|s, _| Answer::Keep(ok_for(s))).await
    }

    async fn answering(respond: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hung_up = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let respond: Arc<Responder> = Arc::new(respond);
        let logs = (seen.clone(), hung_up.clone());
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let wire = Wire {
                    io,
                    buf: Vec::new(),
                    wait: None,
                };
                tokio::spawn(record(wire, logs.clone(), respond.clone()));
            }
        });
        Self {
            addr,
            seen,
            hung_up,
            connections,
        }
    }

    /// What was recorded since the last call.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// [`OK`], without its body for a HEAD request.
fn ok_for(seen: &Seen) -> Vec<u8> {
    if seen.method == "HEAD" {
        OK[..OK.len() - 2].to_vec()
    } else {
        OK.to_vec()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(mut w: Wire, (log, hung_up): (Log, Log), respond: Arc<Responder>) {
    for n in 0.. {
        // An incomplete request (the proxy gave up mid-body) is never recorded.
        let Ok(Some(seen)) = read_request(&mut w).await else {
            return;
        };
        let answer = respond(&seen, n);
        match answer {
            Answer::Hangup => hung_up.lock().unwrap().push(seen),
            _ => log.lock().unwrap().push(seen),
        }
        let (bytes, close_after) = match answer {
            Answer::Keep(b) => (b, None),
            Answer::Close(b) => (b, Some(Duration::ZERO)),
            Answer::CloseIdle(b, d) => (b, Some(d)),
            Answer::Hangup => return,
        };
        if w.io.write_all(&bytes).await.is_err() {
            return;
        }
        if let Some(d) = close_after {
            tokio::time::sleep(d).await;
            let _ = w.io.shutdown().await;
            return;
        }
    }
}

async fn read_request(w: &mut Wire) -> Result<Option<Seen>, Cut> {
    let Some((start, headers)) = w.head().await? else {
        return Ok(None);
    };
    let mut parts = start.splitn(3, ' ');
    let mut part = || parts.next().unwrap_or_default().to_owned();
    let (method, target, version) = (part(), part(), part());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let (body, trailers) = if chunked {
        w.chunked().await?
    } else if let Some(n) = header(&headers, "content-length") {
        let n = n.parse().map_err(|_| Cut::Garbled(n.to_owned()))?;
        (w.take(n).await?, Vec::new())
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Some(Seen {
        method,
        target,
        version,
        headers,
        body: Blob(body),
        trailers,
    }))
}

// ---------------------------------------------------------------------------------------------
// Gateways.
// ---------------------------------------------------------------------------------------------

/// A gateway routing everything to one upstream (the configuration directory lives with it).
struct Gw {
    gw: tidegate::Gateway,
    _cfg: ConfigDir,
}

impl Gw {
    fn addr(&self) -> SocketAddr {
        self.gw.http_addr()
    }
}

/// YAML routing every request to a backend `up` with this endpoint; `backend_extra` adds
/// lines to the Backend's spec.
fn config_yaml(upstream: SocketAddr, backend_extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: up }}\nspec:\n  endpoints: [\"{upstream}\"]\n{backend_extra}---\n\
apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  rules:\n    - backendRefs: [{{ name: up }}]\n"
    )
}

async fn gateway_with(yaml: &str, config: ProxyConfig) -> Gw {
    let cfg = ConfigDir::new();
    cfg.write("all.yaml", yaml);
    let gw = tidegate::Gateway::builder()
        .config_path(cfg.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .proxy_config(config)
        .start()
        .await
        .expect("gateway starts");
    Gw { gw, _cfg: cfg }
}

async fn gateway(upstream: SocketAddr, codec: Http1Codec) -> Gw {
    let config = ProxyConfig {
        http1_codec: codec,
        ..Default::default()
    };
    gateway_with(&config_yaml(upstream, ""), config).await
}

/// `n` bytes of a repeating, non-text pattern.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// `data` as a chunked body in chunks of `size` bytes.
fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(size) {
        out.extend(format!("{:x}\r\n", c.len()).bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------------
// The differential run.
// ---------------------------------------------------------------------------------------------

/// One step of a conversation on one client connection.
enum Step {
    /// Write these bytes in one write.
    Send(Vec<u8>),
    /// Write these bytes a few at a time, pausing between writes.
    Trickle(Vec<u8>),
    /// Read a response.
    Recv,
    /// Read the response to a HEAD request.
    RecvHead,
    /// Expect the gateway to close the connection.
    Eof,
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
}

/// A single request on its own connection, read as one response.
fn single(name: &'static str, raw: impl Into<Vec<u8>>) -> Case {
    let raw = raw.into();
    let recv = if raw.starts_with(b"HEAD ") {
        Step::RecvHead
    } else {
        Step::Recv
    };
    Case {
        name,
        steps: vec![Step::Send(raw), recv],
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn corpus() -> Vec<Case> {
    use Step::{Eof, Recv, RecvHead, Send, Trickle};
    let mib = pattern(1 << 20);
    let many: String = (0..90)
        .map(|i| format!("X-Many-{i}: value {i}\r\n"))
        .collect();
    let long_path = format!("/long/{}", "a".repeat(6000));
    vec![
        single(
            "GET with a query",
            "GET /search?q=a+b&x=%41&empty=&flag HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nUser-Agent: corpus/1\r\n\r\n",
        ),
        single("HEAD", "HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n"),
        single(
            "POST with Content-Length",
            "POST /post HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
        ),
        single(
            "POST chunked with extensions and trailers",
            "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5;name=value\r\nhello\r\n6;flag;q=\"a b\"\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n",
        ),
        single("PUT with no body", "PUT /empty HTTP/1.1\r\nHost: h\r\n\r\n"),
        single(
            "PUT with Content-Length: 0",
            "PUT /empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        ),
        single(
            "POST with an empty chunked body",
            "POST /empty-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        single("DELETE", "DELETE /items/1 HTTP/1.1\r\nHost: h\r\n\r\n"),
        single("OPTIONS on a path", "OPTIONS /opt HTTP/1.1\r\nHost: h\r\n\r\n"),
        single(
            "PATCH with a JSON body",
            "PATCH /items/1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
        ),
        single(
            "GET with a body",
            "GET /get-body HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
        ),
        single(
            "90 headers",
            format!("GET /many HTTP/1.1\r\nHost: h\r\n{many}\r\n"),
        ),
        single(
            "repeated non-framing headers",
            "GET /repeat HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: b\r\nX-A: 2\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: text/html\r\nAccept: */*\r\n\r\n",
        ),
        single(
            "mixed-case names and odd whitespace",
            "GET /case HTTP/1.1\r\nhOsT: h\r\nX-MiXeD-CaSe:   padded value  \r\nCONTENT-TYPE:text/plain\r\nx-tab:\tv\t\r\nX-Empty:\r\n\r\n",
        ),
        single(
            "percent-encoded path",
            "GET /a%20b/%2F/%7e/caf%C3%A9;p=1?x=%00&y=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "dot segments",
            "GET /public/../admin/./x HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "a 6 KB target",
            format!("GET {long_path}?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
        ),
        single(
            "obs-text in a header value",
            b"GET /obs-text HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n\r\n".to_vec(),
        ),
        Case {
            name: "Connection: close",
            steps: vec![
                Send(b"POST /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
                Recv,
                Eof,
            ],
        },
        single(
            "hop-by-hop headers and ones Connection names",
            "GET /hop HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
        ),
        single(
            "TE other than trailers",
            "GET /te HTTP/1.1\r\nHost: h\r\nTE: gzip\r\n\r\n",
        ),
        single(
            "client x-request-id and traceparent",
            format!(
                "GET /ids HTTP/1.1\r\nHost: h\r\nX-Request-Id: client-chosen-id\r\ntraceparent: 00-{TRACE}-00f067aa0ba902b7-01\r\ntracestate: a=b\r\n\r\n"
            ),
        ),
        single(
            "forwarding headers from the client",
            "GET /fwd HTTP/1.1\r\nHost: H.Example:8080\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n",
        ),
        Case {
            name: "HTTP/1.0",
            steps: vec![
                Send(b"GET /ten HTTP/1.0\r\nHost: h\r\n\r\n".to_vec()),
                Recv,
                Eof,
            ],
        },
        Case {
            name: "HTTP/1.0 keep-alive",
            steps: vec![
                Send(b"GET /ten-a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n".to_vec()),
                Recv,
                Send(b"POST /ten-b HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
                Recv,
                Eof,
            ],
        },
        single(
            "Expect: 100-continue",
            "POST /expect HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        ),
        single(
            "absolute-form target",
            "GET http://h/abs?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "1 MiB body with Content-Length",
            cat(&[
                b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n",
                &mib,
            ]),
        ),
        single(
            "1 MiB body chunked",
            cat(&[
                b"POST /big-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                &chunked(&mib, 50_000),
            ]),
        ),
        Case {
            name: "keep-alive sequence with a hand-off to hyper in the middle",
            steps: vec![
                Send(b"GET /ka/1 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
                Recv,
                Send(b"POST /ka/2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec()),
                Recv,
                Send(b"HEAD /ka/3 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
                RecvHead,
                Send(b"POST /ka/4 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
                Recv,
                Send(b"GET /ka/5 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
                Recv,
            ],
        },
        Case {
            name: "pipelined requests in one write",
            steps: vec![
                Send(
                    b"GET /pipe/1 HTTP/1.1\r\nHost: h\r\n\r\n\
POST /pipe/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nfirst\
POST /pipe/3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n\
HEAD /pipe/4 HTTP/1.1\r\nHost: h\r\n\r\n\
GET /pipe/5 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                ),
                Recv,
                Recv,
                Recv,
                RecvHead,
                Recv,
                Eof,
            ],
        },
        Case {
            name: "pipelined requests with a hand-off to hyper in the middle",
            steps: vec![
                Send(
                    b"GET /handoff/1 HTTP/1.1\r\nHost: h\r\n\r\n\
GET http://h/handoff/2 HTTP/1.1\r\nHost: h\r\n\r\n\
GET /handoff/3 HTTP/1.1\r\nHost: h\r\n\r\n"
                        .to_vec(),
                ),
                Recv,
                Recv,
                Recv,
            ],
        },
        Case {
            name: "a request trickled a few bytes at a time",
            steps: vec![
                Trickle(b"POST /trickle HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n4\r\nwiki\r\n5;e=1\r\npedia\r\n0\r\n\r\n".to_vec()),
                Recv,
            ],
        },
        Case {
            name: "30 pipelined requests in one write",
            steps: std::iter::once(Send(
                (0..30)
                    .map(|i| {
                        if i % 3 == 1 {
                            format!("POST /many/{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{:02}", i)
                        } else {
                            format!("GET /many/{i} HTTP/1.1\r\nHost: h\r\n\r\n")
                        }
                    })
                    .collect::<String>()
                    .into_bytes(),
            ))
            .chain((0..30).map(|_| Recv))
            .collect(),
        },
        single(
            "a chunked response from the upstream",
            "GET /resp/chunked HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "a close-delimited response from the upstream",
            "GET /resp/close HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "103 Early Hints before the response",
            "GET /resp/early HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
    ]
}

/// The corpus upstream: [`OK`], except for `/resp/...` targets that exercise response framing.
fn corpus_answer(seen: &Seen, _: usize) -> Answer {
    match seen.target.as_str() {
        "/resp/chunked" => Answer::Keep(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nx-t: 1\r\n\r\n"
                .to_vec(),
        ),
        "/resp/close" => Answer::Close(cat(&[
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n",
            &pattern(100_000),
        ])),
        "/resp/early" => Answer::Keep(
            b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints"
                .to_vec(),
        ),
        _ => Answer::Keep(ok_for(seen)),
    }
}

/// What one side saw of a case.
#[derive(Debug, PartialEq)]
struct Outcome {
    client: Vec<Event>,
    upstream: Vec<Seen>,
}

#[derive(Debug, PartialEq)]
enum Event {
    Reply(Result<Reply, Cut>),
    Closed(bool),
}

async fn run(addr: SocketAddr, up: &Recorder, steps: &[Step]) -> Outcome {
    let mut c = Wire::connect(addr).await;
    let mut client = Vec::new();
    for step in steps {
        match step {
            Step::Send(b) => c.send(b).await,
            Step::Trickle(b) => {
                for piece in b.chunks(5) {
                    c.send(piece).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Step::Recv => client.push(Event::Reply(c.reply(false).await.map(client_view))),
            Step::RecvHead => client.push(Event::Reply(c.reply(true).await.map(client_view))),
            Step::Eof => client.push(Event::Closed(c.closed().await)),
        }
    }
    Outcome {
        client,
        upstream: up.take().into_iter().map(upstream_view).collect(),
    }
}

/// Response headers that legitimately differ between two runs: `date` (the clock) and
/// `x-request-id` (generated per request).
fn client_view(mut r: Reply) -> Reply {
    r.headers
        .retain(|(n, _)| n != "date" && n != "x-request-id");
    r.headers.sort_by(|a, b| a.0.cmp(&b.0));
    r
}

/// What reached the upstream, with the values that legitimately differ between two runs
/// masked: a generated `x-request-id` (32 random hex digits; a client's own id is kept and
/// compared) and the `traceparent` span id (new per hop) and trace id (new when the client
/// sent none). Names are sorted, keeping the order of a repeated name's values: the order of
/// distinct fields carries no meaning (RFC 9110 §5.3).
fn upstream_view(mut s: Seen) -> Seen {
    for (name, value) in &mut s.headers {
        match name.as_str() {
            "x-request-id" if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
                *value = "<generated>".into();
            }
            "traceparent" => {
                let parts: Vec<&str> = value.split('-').collect();
                assert_eq!(parts.len(), 4, "traceparent {value:?}");
                let trace = if parts[1] == TRACE { TRACE } else { "<new>" };
                *value = format!("{}-{trace}-<span>-{}", parts[0], parts[3]);
            }
            _ => {}
        }
    }
    s.headers.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

/// The two paths agree on a corpus of ordinary requests: the client gets the same responses
/// (status, 1xx, headers, framing, body) and the same closes, and the upstream receives the same
/// requests (method, target, version, headers, body, trailers). Only values that legitimately
/// differ between runs are masked (see `client_view` and `upstream_view`); hop-by-hop and
/// framing headers (`content-length`, `transfer-encoding`, `connection`) are compared as sent,
/// and the one place they differ is asserted in `legitimate_differences`. Request trailers are
/// compared too: both paths drop them.
#[tokio::test]
async fn native_and_hyper_agree_on_a_corpus_of_requests() {
    let up = Recorder::answering(corpus_answer).await;
    let native = gateway(up.addr, Http1Codec::Native).await;
    let hyper = gateway(up.addr, Http1Codec::Hyper).await;
    let mut mismatches = Vec::new();
    for case in corpus() {
        let n = run(native.addr(), &up, &case.steps).await;
        let mut h = run(hyper.addr(), &up, &case.steps).await;

        // Every corpus request is valid: the native path must serve each one, exactly once.
        let replies = n
            .client
            .iter()
            .filter(|e| matches!(e, Event::Reply(_)))
            .count();
        for e in &n.client {
            match e {
                Event::Reply(Ok(r)) if r.status == 200 => {}
                Event::Closed(true) => {}
                other => mismatches.push(format!("{}: native: {other:?}", case.name)),
            }
        }
        if n.upstream.len() != replies {
            mismatches.push(format!(
                "{}: the upstream saw {} requests for {replies} responses: {:#?}",
                case.name,
                n.upstream.len(),
                n.upstream
            ));
        }

        legitimate_differences(case.name, &n, &mut h);
        if n != h {
            mismatches.push(format!(
                "{}:\n--- native\n{n:#?}\n--- hyper\n{h:#?}",
                case.name
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// Asserts the differences between the paths that are expected, and aligns `hyper` on `native`
/// for them so the rest is compared strictly.
fn legitimate_differences(case: &str, native: &Outcome, hyper: &mut Outcome) {
    // A body-carrying method without a body: the native client states `content-length: 0`
    // (RFC 9110 §8.6: a user agent SHOULD send it for POST/PUT/PATCH), hyper's client sends
    // no framing header at all. Both mean "no body".
    if case == "PUT with no body" {
        assert_eq!(native.upstream[0].header("content-length"), Some("0"));
        assert_eq!(hyper.upstream[0].header("content-length"), None);
        hyper.upstream[0] = native.upstream[0].clone();
    }
}

// ---------------------------------------------------------------------------------------------
// Smuggling: shapes the native codec refuses.
// ---------------------------------------------------------------------------------------------

/// Sends `raw` (a refused head, often with a request hidden after it) and checks the refusal:
/// `status`, the connection closed, nothing else answered, nothing reached the upstream.
async fn assert_refused(gw: &Gw, up: &Recorder, name: &str, raw: &str, status: u16) {
    let mut c = Wire::connect(gw.addr()).await;
    c.send(raw.as_bytes()).await;
    let r = c.reply(false).await;
    let r = r.unwrap_or_else(|e| panic!("{name}: no response: {e:?}"));
    assert_eq!(r.status, status, "{name}: {r:#?}");
    assert!(
        c.closed().await,
        "{name}: the connection stays open after a refusal"
    );
    assert_eq!(up.take(), [], "{name}: reached the upstream");
}

async fn native_gateway() -> (Gw, Recorder) {
    let up = Recorder::start().await;
    (gateway(up.addr, Http1Codec::Native).await, up)
}

/// `Content-Length` together with `Transfer-Encoding: chunked`, in both orders, is refused:
/// the classic CL.TE / TE.CL desync never reaches the upstream.
#[tokio::test]
async fn a_request_with_both_lengths_is_refused() {
    let (gw, up) = native_gateway().await;
    let hidden = format!("0\r\n\r\n{SMUGGLED}");
    let cases = [
        (
            "CL then TE",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "TE then CL",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{hidden}"
            ),
        ),
        (
            "CL then TE in odd case",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\nTRANSFER-ENCODING: Chunked\r\n\r\n{hidden}"
            ),
        ),
    ];
    for (name, raw) in cases {
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// A repeated `Content-Length` (even with the same value), a list, a sign, hex, an empty or an
/// overflowing value are all refused.
#[tokio::test]
async fn a_repeated_or_malformed_content_length_is_refused() {
    let (gw, up) = native_gateway().await;
    let body = format!("hello{SMUGGLED}");
    for (name, lengths) in [
        (
            "the same length twice",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        ("two lengths", "Content-Length: 5\r\nContent-Length: 41\r\n"),
        ("a plus sign", "Content-Length: +5\r\n"),
        ("a list", "Content-Length: 5, 5\r\n"),
        ("a negative length", "Content-Length: -5\r\n"),
        ("hex", "Content-Length: 0x5\r\n"),
        ("an empty value", "Content-Length: \r\n"),
        ("an overflow", "Content-Length: 18446744073709551621\r\n"),
        ("a space inside", "Content-Length: 1 5\r\n"),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{lengths}\r\n{body}");
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// A transfer coding other than exactly one `chunked` is refused: 501 for a coding the proxy
/// does not implement, 400 for `chunked` twice or an empty value.
#[tokio::test]
async fn a_transfer_coding_other_than_one_chunked_is_refused() {
    let (gw, up) = native_gateway().await;
    let body = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    for (name, te, status) in [
        ("gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", 501),
        ("identity", "Transfer-Encoding: identity\r\n", 501),
        ("chunked, gzip", "Transfer-Encoding: chunked, gzip\r\n", 501),
        (
            "chunked then gzip lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            501,
        ),
        ("a lookalike", "Transfer-Encoding: xchunked\r\n", 501),
        (
            "chunked, chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
            400,
        ),
        (
            "chunked on two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("an empty value", "Transfer-Encoding: \r\n", 400),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{te}\r\n{body}");
        assert_refused(&gw, &up, name, &raw, status).await;
    }
}

/// obs-fold (a header line continued with a space or tab) and whitespace between a field name
/// and its colon are refused: parsers disagree on both, which is how `Transfer-Encoding` gets
/// hidden from one of them.
#[tokio::test]
async fn obs_fold_and_space_before_a_colon_are_refused() {
    let (gw, up) = native_gateway().await;
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (name, lines) in [
        (
            "obs-fold with a space",
            format!("{cl}X-A: 1\r\n Transfer-Encoding: chunked\r\n"),
        ),
        (
            "obs-fold with a tab",
            format!("{cl}X-A: 1\r\n\tTransfer-Encoding: chunked\r\n"),
        ),
        (
            "a folded Transfer-Encoding",
            format!("{cl}Transfer-Encoding:\r\n chunked\r\n"),
        ),
        (
            "a space before the colon",
            format!("{cl}Transfer-Encoding : chunked\r\n"),
        ),
        (
            "a tab before the colon",
            format!("{cl}Transfer-Encoding\t: chunked\r\n"),
        ),
        (
            "a space before the colon of Content-Length",
            "Content-Length : 5\r\nTransfer-Encoding: chunked\r\n".to_owned(),
        ),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{lines}\r\n{body}");
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// Two `Host` headers (which one routes?) and an HTTP/1.1 request without one are refused.
#[tokio::test]
async fn a_repeated_or_missing_host_is_refused() {
    let (gw, up) = native_gateway().await;
    let cases = [
        (
            "two Host headers",
            format!("GET / HTTP/1.1\r\nHost: h\r\nHost: admin.internal\r\n\r\n{SMUGGLED}"),
        ),
        (
            "no Host",
            format!("GET / HTTP/1.1\r\nX-A: 1\r\n\r\n{SMUGGLED}"),
        ),
        (
            "Host with a space before the colon",
            format!("GET / HTTP/1.1\r\nHost : h\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, raw) in cases {
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// A head with more than 100 fields gets 431.
#[tokio::test]
async fn a_head_with_more_than_100_fields_gets_431() {
    let (gw, up) = native_gateway().await;
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n{SMUGGLED}");
    assert_refused(&gw, &up, "101 header fields", &raw, 431).await;
}

/// A head larger than `max_header_bytes` (64 KiB by default) gets 431, however the reads that
/// bring it in happen to be split.
#[tokio::test]
async fn a_head_larger_than_max_header_bytes_gets_431() {
    let (gw, up) = native_gateway().await;
    for kib in [65, 70, 100, 127, 200] {
        let big = "x".repeat(kib * 1024);
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n{SMUGGLED}");
        assert_refused(&gw, &up, &format!("a {kib} KiB head"), &raw, 431).await;
    }
}

/// A malformed chunk line comes after a valid head, so the request may already be on its way;
/// still, no request hidden after it is answered 2xx or reaches the upstream, the connection
/// closes, and the upstream never receives the broken request as a complete one.
#[tokio::test]
async fn a_malformed_chunk_never_lets_a_smuggled_request_through() {
    let (gw, up) = native_gateway().await;
    let head = "POST /first HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (name, body) in [
        ("a negative size", format!("-1\r\nx\r\n0\r\n\r\n{SMUGGLED}")),
        (
            "a hex prefix",
            format!("0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a size that overflows",
            format!("fffffffffffffffff\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        ("no CRLF after the data", format!("5\r\nhello{SMUGGLED}")),
        (
            "junk after the data",
            format!("5\r\nhelloXX0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a bare LF after the size",
            format!("5\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a bare LF after the data",
            format!("5\r\nhello\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a bare LF ending the body",
            format!("5\r\nhello\r\n0\n\n{SMUGGLED}"),
        ),
        (
            "a space inside the size",
            format!("5 5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ] {
        let mut c = Wire::connect(gw.addr()).await;
        c.send(format!("{head}{body}").as_bytes()).await;
        let mut answers = Vec::new();
        loop {
            match c.reply(false).await {
                Ok(r) => answers.push(r.status),
                Err(Cut::Closed) => break,
                Err(e) => panic!("{name}: {e:?} after {answers:?}"),
            }
        }
        assert!(
            answers.len() <= 1 && answers.iter().all(|s| !(200..300).contains(s)),
            "{name}: the client got {answers:?}"
        );
        assert_eq!(up.take(), [], "{name}: reached the upstream");
    }
}

/// The native codec is stricter than hyper on purpose: the framing shapes hyper tolerates
/// (serving the chunked reading, or the first `Host`) are refused by the native path and never
/// reach the upstream. Shapes both refuse are listed too; their statuses may differ (the native
/// codec answers 501 for a coding it does not implement, hyper 400).
#[tokio::test]
async fn the_native_codec_refuses_shapes_hyper_tolerates() {
    let up = Recorder::start().await;
    let native = gateway(up.addr, Http1Codec::Native).await;
    let hyper = gateway(up.addr, Http1Codec::Hyper).await;
    // (name, request, native status, hyper status)
    let cases = [
        (
            "Content-Length and chunked",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            200,
        ),
        (
            "the same Content-Length twice",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
            400,
            200,
        ),
        (
            "gzip, chunked",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            200,
        ),
        (
            "chunked, chunked",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            400,
            200,
        ),
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: h\r\nHost: other\r\n\r\n",
            400,
            200,
        ),
        // Refused by both.
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
            400,
            400,
        ),
        (
            "identity",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
            501,
            400,
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
            400,
            400,
        ),
        (
            "a space before the colon",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            400,
            400,
        ),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", 400, 400),
    ];
    let mut wrong = Vec::new();
    for (name, raw, native_status, hyper_status) in cases {
        let n = once(native.addr(), raw.as_bytes()).await.map(|r| r.status);
        let native_seen = up.take();
        let h = once(hyper.addr(), raw.as_bytes()).await.map(|r| r.status);
        up.take();
        if n != Ok(native_status) || !native_seen.is_empty() || h != Ok(hyper_status) {
            wrong.push(format!(
                "{name}: native {n:?} (upstream saw {native_seen:?}), hyper {h:?}; expected native {native_status}, hyper {hyper_status}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Edge cases on the native path.
// ---------------------------------------------------------------------------------------------

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";

/// A chunked upstream response (with extensions and trailers) reaches the client with the same
/// data, and the upstream connection is reused after its last chunk.
#[tokio::test]
async fn a_chunked_upstream_response_reaches_the_client_intact() {
    let up = Recorder::answering(|_, _| {
        Answer::Keep(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for _ in 0..3 {
        c.send(GET).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(
            (r.status, &r.body.0[..]),
            (200, &b"hello world"[..]),
            "{r:#?}"
        );
    }
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection was not reused"
    );
}

/// A response delimited by the upstream closing (no length, no chunking) reaches the client
/// whole, re-framed as chunked so the client connection stays usable.
#[tokio::test]
async fn a_close_delimited_upstream_response_reaches_the_client_completely() {
    let body = pattern(300_000);
    let answer = cat(&[
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n",
        &body,
    ]);
    let up = Recorder::answering(move |s, _| {
        if s.target == "/close" {
            Answer::Close(answer.clone())
        } else {
            Answer::Keep(ok_for(s))
        }
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"GET /close HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, "chunked", "{:?}", r.headers);
    assert_eq!(r.body, Blob(body));
    c.send(GET).await;
    assert_eq!(c.reply(false).await.unwrap().body.0, b"ok");
}

/// A HEAD response carries the upstream's `Content-Length` and no body: the next response on
/// the same client connection (and the same upstream connection) parses cleanly.
#[tokio::test]
async fn a_head_response_keeps_its_length_and_has_no_body() {
    let up = Recorder::answering(|s, _| {
        if s.method == "HEAD" {
            Answer::Keep(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1234\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Answer::Keep(ok_for(s))
        }
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for _ in 0..2 {
        c.send(b"HEAD /doc HTTP/1.1\r\nHost: h\r\n\r\n").await;
        let r = c.reply(true).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("1234"), "{r:#?}");
        assert_eq!(r.header("transfer-encoding"), None, "{r:#?}");
        c.send(GET).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", Blob(c.buf.clone()));
    assert_eq!(up.connections(), 1);
}

/// 204 and 304 responses reach the client without a body (and a 204 without
/// `Content-Length`, RFC 9110 §8.6), and both connections stay in step.
#[tokio::test]
async fn no_content_and_not_modified_have_no_body() {
    let up = Recorder::answering(|s, _| match s.target.as_str() {
        "/204" => {
            Answer::Keep(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-k: 1\r\n\r\n".to_vec())
        }
        "/304" => Answer::Keep(b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".to_vec()),
        _ => Answer::Keep(ok_for(s)),
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for _ in 0..2 {
        c.send(b"DELETE /204 HTTP/1.1\r\nHost: h\r\n\r\n").await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(r.header("x-k"), Some("1"));
        assert_eq!(r.header("content-length"), None, "{r:#?}");
        assert_eq!(r.header("transfer-encoding"), None, "{r:#?}");
        c.send(b"GET /304 HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1\"\r\n\r\n")
            .await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(r.status, 304);
        assert_eq!(r.header("etag"), Some("\"v1\""));
        assert_eq!(r.header("transfer-encoding"), None, "{r:#?}");
        c.send(GET).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", Blob(c.buf.clone()));
    assert_eq!(up.connections(), 1);
}

/// An upstream that closes a keep-alive connection while it sits idle in the pool (after a
/// response without `connection: close`) does not fail the next request.
#[tokio::test]
async fn an_upstream_closing_an_idle_pooled_connection_does_not_fail_the_next_request() {
    let up =
        Recorder::answering(|s, _| Answer::CloseIdle(ok_for(s), Duration::from_millis(30))).await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    // A 100 KB body cannot be re-sent (it is not kept): only noticing the close at checkout
    // saves it.
    let big = pattern(100_000);
    for i in 0..3 {
        let raw = cat(&[
            format!("POST /{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
            &big,
        ]);
        c.send(&raw).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(
            (r.status, &r.body.0[..]),
            (200, &b"ok"[..]),
            "request {i}: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(up.take().len(), 3);
    assert_eq!(up.connections(), 3);
}

/// A recorder for the keep-alive race: the first request on a connection is answered, a
/// later one is read whole and met by a close, as when the upstream closed the idle connection
/// just as the request was written to it.
async fn racing_upstream() -> Recorder {
    Recorder::answering(|s, n| {
        if n == 0 {
            Answer::Keep(ok_for(s))
        } else {
            Answer::Hangup
        }
    })
    .await
}

/// The keep-alive race on an idempotent request: it is re-sent on a fresh connection and
/// succeeds.
#[tokio::test]
async fn an_idempotent_request_on_a_pooled_connection_the_upstream_just_closed_is_retried() {
    let up = racing_upstream().await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    let requests: [&[u8]; 4] = [
        GET,
        b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PUT /put HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
        b"DELETE /del HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ];
    for (i, raw) in requests.iter().enumerate() {
        c.send(raw).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(
            (r.status, &r.body.0[..]),
            (200, &b"ok"[..]),
            "request {i}: {r:#?}"
        );
    }
    let seen: Vec<(String, Blob)> = up.take().into_iter().map(|s| (s.target, s.body)).collect();
    assert_eq!(
        seen,
        [
            ("/".to_owned(), Blob::default()),
            ("/again".to_owned(), Blob::default()),
            ("/put".to_owned(), Blob(b"body".to_vec())),
            ("/del".to_owned(), Blob(b"abc".to_vec())),
        ]
    );
    // One connection per request, plus the one each retried request found closed.
    assert_eq!(up.connections(), 4);
}

/// The keep-alive race on a POST the upstream received whole: the proxy cannot know whether it
/// was applied, so it must not send it again (RFC 9112 §9.3.1.1: "A proxy MUST NOT
/// automatically retry non-idempotent requests"; the route's own retry policy also leaves POST
/// alone unless `nonIdempotent` is set). The client gets an error instead.
#[tokio::test]
async fn a_non_idempotent_request_is_never_delivered_twice() {
    let up = racing_upstream().await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(GET).await;
    assert_eq!(c.reply(false).await.unwrap().status, 200);
    c.send(b"POST /charge HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n100EUR")
        .await;
    let r = c.reply(false).await;
    let mut delivered: Vec<String> = up
        .hung_up
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    delivered.extend(up.take().into_iter().skip(1).map(|s| s.target));
    assert_eq!(
        delivered,
        ["/charge"],
        "the upstream received the POST {} times; the client got {r:?}",
        delivered.len()
    );
}

/// An upstream that dies in the middle of a response body: the client sees the message cut
/// short (the connection closes before the announced length or the last chunk), never a
/// complete message with the wrong content.
#[tokio::test]
async fn an_upstream_dying_mid_body_truncates_the_response() {
    let up = Recorder::answering(|s, _| match s.target.as_str() {
        "/cut-length" => {
            Answer::Close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
        }
        "/cut-chunked" => Answer::Close(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n".to_vec(),
        ),
        "/cut-big" => {
            let mut b = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
            b.extend(pattern(300_000));
            Answer::Close(b)
        }
        _ => Answer::Keep(ok_for(s)),
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    for target in ["/cut-length", "/cut-chunked", "/cut-big"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        match once(gw.addr(), raw.as_bytes()).await {
            Err(Cut::Truncated(_)) => {}
            other => panic!("{target}: {other:#?}"),
        }
    }
    assert_eq!(once(gw.addr(), GET).await.unwrap().status, 200);
}

/// A 1 MiB response body (with a length, and chunked) streams through intact.
#[tokio::test]
async fn a_one_mebibyte_response_streams_through_intact() {
    let body = pattern(1 << 20);
    let (with_length, with_chunks) = (
        cat(&[b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n", &body]),
        cat(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            &chunked(&body, 40_000),
        ]),
    );
    let up = Recorder::answering(move |s, _| {
        Answer::Keep(if s.target == "/chunked" {
            with_chunks.clone()
        } else {
            with_length.clone()
        })
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(GET).await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.header("content-length"), Some("1048576"));
    assert_eq!(r.body, Blob(body.clone()));
    c.send(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.framing, "chunked");
    assert_eq!(r.body, Blob(body));
}

/// An h2c client (prior knowledge) is handed to hyper by the native gateway and still reaches
/// the HTTP/1.1 upstream, body included.
#[tokio::test]
async fn an_h2c_client_still_works_on_the_native_gateway() {
    let up = Recorder::start().await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let h2 = HttpClient::h2c();
    let r = h2
        .get(gw.addr(), "h", "/over-h2?x=1", &[("x-a", "1")])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.version, r.body.as_str()),
        (200, http::Version::HTTP_2, "ok")
    );
    let post = http::Request::post(format!("http://{}/upload", gw.addr()))
        .header("host", "h")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"h2 body",
        )))
        .unwrap();
    let r = h2.send(post).await.unwrap();
    assert_eq!(r.status.as_u16(), 200);
    let seen = up.take();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].target.as_str(),
            seen[0].version.as_str()
        ),
        ("GET", "/over-h2?x=1", "HTTP/1.1")
    );
    assert_eq!(
        (seen[0].header("host"), seen[0].header("x-a")),
        (Some("h"), Some("1"))
    );
    assert_eq!(
        (seen[1].method.as_str(), &seen[1].body.0[..]),
        ("POST", &b"h2 body"[..])
    );
}

/// A WebSocket upgrade is still proxied by the native gateway (hyper serves upgrades).
#[tokio::test]
async fn a_websocket_upgrade_is_still_proxied() {
    let up = Upstream::start("ws").await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr()))
        .await
        .expect("websocket through the gateway");
    assert_eq!(resp.status().as_u16(), 101);
    for msg in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    }
    ws.close(None).await.unwrap();
}

/// A connection that starts with requests served natively and then asks for an upgrade is
/// handed to hyper mid-connection, and the tunnel works.
#[tokio::test]
async fn an_upgrade_after_native_requests_on_the_same_connection_is_proxied() {
    let up = Upstream::start("ws").await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"POST /plain HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 200, "{r:#?}");
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 101, "{r:#?}");
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // A masked text frame "ping"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 4];
    frame.extend_from_slice(&mask);
    frame.extend(b"ping".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    c.send(&frame).await;
    let echo = c.take(6).await.unwrap();
    assert_eq!(echo, [0x81, 4, b'p', b'i', b'n', b'g']);
}

/// Requests pipelined after one that says `Connection: close` are not served: the connection
/// closes after the first response and only the first request reaches the upstream.
#[tokio::test]
async fn requests_pipelined_after_connection_close_are_not_served() {
    let (gw, up) = native_gateway().await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(
        b"GET /first HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n\
GET /second HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    let r = c.reply(false).await.unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed().await, "a second response or an open connection");
    let seen: Vec<String> = up.take().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, ["/first"]);
}

/// A client that goes away in the middle of its request body never makes the upstream see a
/// complete request: the proxy neither pads a `Content-Length` body nor ends a chunked one.
#[tokio::test]
async fn a_client_leaving_mid_body_never_completes_the_upstream_request() {
    let (gw, up) = native_gateway().await;
    for (name, partial) in [
        (
            "Content-Length",
            &b"POST /cut HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789"[..],
        ),
        (
            "chunked",
            b"POST /cut HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        ),
        (
            "chunked, cut inside a chunk",
            b"POST /cut HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789",
        ),
    ] {
        let mut c = Wire::connect(gw.addr()).await;
        c.send(partial).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.io.shutdown().await.unwrap();
        if let Ok(r) = c.reply(false).await {
            assert!(!(200..300).contains(&r.status), "{name}: {r:#?}");
        }
        // The upstream side of the exchange ends when the proxy drops its connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(up.take(), [], "{name}: the upstream got a complete request");
    }
}

/// A client that half-closes its side right after a request (as `nc -q` or HTTP/1.0-style
/// clients do) still gets the response.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_response() {
    let (gw, up) = native_gateway().await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"POST /half HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    c.io.shutdown().await.unwrap();
    let r = c.reply(false).await.unwrap();
    assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
    assert!(c.closed().await);
    assert_eq!(up.take().len(), 1);
}

/// A client that sends `Expect: 100-continue` and waits for the interim response before its
/// body gets the `100 Continue`, and the body reaches the upstream.
#[tokio::test]
async fn an_expect_100_continue_client_that_waits_gets_its_interim_response() {
    let (gw, up) = native_gateway().await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"PUT /wait HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    let (start, _) = c.head().await.unwrap().expect("an interim response");
    assert!(start.starts_with("HTTP/1.1 100"), "{start:?}");
    c.send(b"hello").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 200, "{r:#?}");
    let seen = up.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.0, b"hello");
}

/// An upstream connection whose response says `connection: close` (HTTP/1.1) or lacks
/// keep-alive (HTTP/1.0) is never reused, even if the upstream leaves the socket open.
#[tokio::test]
async fn an_upstream_connection_marked_close_is_never_reused() {
    let up = Recorder::answering(|s, _| {
        Answer::Keep(if s.target == "/ten" {
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec()
        })
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for (i, target) in ["/", "/", "/ten", "/ten"].iter().enumerate() {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
        assert_eq!(r.header("connection"), None, "hop-by-hop, not forwarded");
        assert_eq!(
            up.connections(),
            i + 1,
            "request {i} reused a closing connection"
        );
    }
}

/// An upstream response with both `Content-Length` and `Transfer-Encoding: chunked` is read as
/// chunked and forwarded without the conflicting length (RFC 9112 §6.3), so the client frames
/// the same body the proxy read and the next response is not poisoned.
#[tokio::test]
async fn an_upstream_response_with_both_lengths_is_forwarded_as_chunked() {
    let up = Recorder::answering(|s, _| {
        Answer::Keep(if s.target == "/both" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        } else {
            ok_for(s)
        })
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"GET /both HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.body.0, b"hello", "{r:#?}");
    assert_ne!(r.header("content-length"), Some("3"), "{r:#?}");
    c.send(GET).await;
    assert_eq!(c.reply(false).await.unwrap().body.0, b"ok");
}

/// An upstream that answers a large upload before reading it (a 413, as Go's net/http or an
/// upload limit does) and closes: the client gets that answer, as it does through hyper, not a
/// 502 made up by the proxy.
#[tokio::test]
async fn an_early_upstream_answer_to_a_large_upload_reaches_the_client() {
    // Reads the head only, answers, and closes with the body unread (the kernel resets).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut w = Wire {
                    io,
                    buf: Vec::new(),
                    wait: None,
                };
                let _ = w.head().await;
                let _ = w
                    .io
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let upload = cat(&[
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 8388608\r\n\r\n",
        &pattern(8 << 20),
    ]);
    let mut got = Vec::new();
    for codec in [Http1Codec::Hyper, Http1Codec::Native] {
        let gw = gateway(addr, codec).await;
        let (mut rd, mut wr) = TcpStream::connect(gw.addr()).await.unwrap().into_split();
        let body = upload.clone();
        // The client keeps sending while it reads, as a real one would.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&body).await;
            wr
        });
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while find(&buf, b"\r\n\r\n").is_none() {
            let n = tokio::time::timeout(WAIT, rd.read(&mut chunk))
                .await
                .expect("a response in time")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        writer.abort();
        let status = String::from_utf8_lossy(&buf)
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        got.push((codec, status));
    }
    assert_eq!(
        got,
        [
            (Http1Codec::Hyper, Some(413)),
            (Http1Codec::Native, Some(413))
        ]
    );
}

/// A client whose request body is malformed or cut short is the client's failure, not the
/// upstream's: with passive health checking on, such requests do not eject a healthy endpoint
/// (which would let any client take a backend out of service).
#[tokio::test]
async fn a_client_with_a_broken_body_does_not_eject_a_healthy_upstream() {
    let up = Recorder::start().await;
    let passive = "  healthCheck: { passive: { consecutiveFailures: 3, ejectionTime: 30s } }\n";
    let gw = gateway_with(&config_yaml(up.addr, passive), ProxyConfig::default()).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let bad = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        answers.push(once(gw.addr(), bad).await.map(|r| r.status));
    }
    let r = once(gw.addr(), GET).await.unwrap();
    assert_eq!(
        (r.status, &r.body),
        (200, &Blob(b"ok".to_vec())),
        "after three malformed bodies (answered {answers:?})"
    );
    assert_eq!(up.take().len(), 1);
}
