//! An upstream that answers like the Gateway API conformance suite's echo server (echo-basic):
//! a JSON description of the request it received (repeated headers kept, in order), the
//! namespace and pod that answered, response headers set from `X-Echo-Set-Header`, a `delay`
//! query parameter, the `/retry/` simulation, and a WebSocket echo on `/ws`. HTTP/1.1 and h2c
//! on one port, as the suite's backends for `appProtocol: kubernetes.io/h2c` and `ws`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// What the echo server reports (the suite's `RequestAssertions`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Captured {
    /// The request target as received: path and query.
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    /// Lower-case names; every value in arrival order (the suite joins them with `,`).
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub pod: String,
}

/// A running echo upstream.
pub struct Echo {
    pub addr: SocketAddr,
}

/// Failed `/retry/` attempts so far, per `uuid` (the suite's `retrySimulation`).
type Attempts = Arc<Mutex<HashMap<String, u32>>>;

/// Why the service gives up on a request: hyper then drops the connection without an answer,
/// which is what the suite's echo does when it simulates a connection error.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection error")
    }
}

impl std::error::Error for Hangup {}

impl Echo {
    /// Serves as pod `<name>-0` of `namespace` on a free loopback port.
    pub async fn start(namespace: &str, name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let who: Arc<(String, String)> = Arc::new((namespace.to_owned(), format!("{name}-0")));
        let attempts: Attempts = Arc::default();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (who, attempts) = (who.clone(), attempts.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, who.clone(), attempts.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr }
    }
}

async fn handle(
    mut req: Request<Incoming>,
    who: Arc<(String, String)>,
    attempts: Attempts,
) -> Result<Response<Full<Bytes>>, Hangup> {
    let query = query(&req);
    if req.uri().path() == "/ws" {
        return Ok(websocket(&mut req));
    }
    if req.uri().path().starts_with("/retry/") {
        let uuid = query.get("uuid").cloned().unwrap_or_default();
        let succeed_after: u32 = query
            .get("succeedAfter")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Held across the delay, as the suite's echo holds its mutex.
        let failed = {
            let mut seen = attempts.lock().unwrap();
            let n = seen.entry(uuid).or_default();
            let fail = *n < succeed_after;
            if fail {
                *n += 1;
            }
            fail
        };
        if failed {
            if let Some(d) = query.get("delayRetry").and_then(|d| go_duration(d)) {
                tokio::time::sleep(d).await;
            }
            return match query.get("responseCode").and_then(|c| c.parse().ok()) {
                Some(code) => Ok(status(code)),
                None => Err(Hangup),
            };
        }
    }
    if let Some(d) = query.get("delay").and_then(|d| go_duration(d)) {
        tokio::time::sleep(d).await;
    }
    Ok(echo(&req, &who))
}

fn echo(req: &Request<Incoming>, who: &(String, String)) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        if k == http::header::HOST {
            continue; // Go moves it to `host`
        }
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let captured = Captured {
        path: req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |pq| pq.to_string()),
        host,
        method: req.method().to_string(),
        proto: match req.version() {
            http::Version::HTTP_2 => "HTTP/2.0".into(),
            v => format!("{v:?}"),
        },
        headers,
        namespace: who.0.clone(),
        pod: who.1.clone(),
    };
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&captured).unwrap(),
    )));
    set_echo_headers(&mut resp, req);
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `X-Echo-Set-Header: name:value,name2:value2` (repeatable): each named header is set on the
/// response; a name given twice gets its values joined with `,` (the suite's
/// `writeEchoResponseHeaders`).
fn set_echo_headers(resp: &mut Response<Full<Bytes>>, req: &Request<Incoming>) {
    let mut set: Vec<(HeaderName, String)> = Vec::new();
    for list in req.headers().get_all("x-echo-set-header") {
        for kv in String::from_utf8_lossy(list.as_bytes()).split(',') {
            let (name, value) = kv.trim().split_once(':').unwrap_or((kv.trim(), ""));
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            match set.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(value.trim());
                }
                None => set.push((name, value.to_owned())),
            }
        }
    }
    for (name, value) in set {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The Go durations the suite uses: `300ms`, `1s`.
fn go_duration(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

/// Upgrades and echoes every text and binary message back.
fn websocket(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()))
        .unwrap()
}
