//! Shared helpers for integration tests: echo upstreams, config directories, an HTTP client.
#![allow(dead_code)]

pub mod binary;
pub mod dnsmasq;
pub mod nginx;
pub mod tls;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpListener;

/// What an echo upstream saw, as it reports it in its JSON body.
#[derive(Debug, Deserialize)]
pub struct Echo {
    pub upstream: String,
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// Faults an [`Upstream`] injects on cue (tc netem does not work here).
#[derive(Debug)]
pub struct Faults {
    /// Answer every request with this status (0: answer normally).
    pub status: std::sync::atomic::AtomicU16,
    /// The status of `GET /healthz` (health probes; not counted as hits).
    pub health: std::sync::atomic::AtomicU16,
    /// 0: normal; 1: reset every new connection; 2: accept and never answer (a black hole).
    pub mode: std::sync::atomic::AtomicU8,
}

impl Faults {
    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::Relaxed);
    }
    pub fn set_health(&self, s: u16) {
        self.health.store(s, Ordering::Relaxed);
    }
    pub fn set_mode(&self, m: u8) {
        self.mode.store(m, Ordering::Relaxed);
    }
}

/// An HTTP/1.1 + h2c upstream that answers with what it saw. `x-delay-ms: N` delays the answer;
/// `x-status: N` sets the status; a request with `Upgrade: websocket` is upgraded and echoed;
/// [`Faults`] make it fail on cue.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub faults: Arc<Faults>,
    pub health_hits: Arc<AtomicUsize>,
}

/// A listening socket that never accepts, its accept queue full: a connect to it neither
/// succeeds nor fails (Linux drops the SYN), as to an address that drops packets.
pub struct Unaccepting {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: std::net::TcpStream,
}

impl Unaccepting {
    pub fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        // Backlog 0 holds one connection: this one fills it.
        let queued = std::net::TcpStream::connect(addr).unwrap();
        Self {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

impl Upstream {
    pub async fn start(name: &'static str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// An upstream listening on `addr` (another loopback address, or a port chosen elsewhere).
    pub async fn start_on(name: &'static str, addr: SocketAddr) -> Self {
        Self::serve(name, TcpListener::bind(addr).await.unwrap())
    }

    /// An upstream serving on a listener bound elsewhere (held, so that no one takes its port
    /// between choosing it and serving on it).
    pub fn start_with(name: &'static str, listener: std::net::TcpListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        Self::serve(name, TcpListener::from_std(listener).unwrap())
    }

    fn serve(name: &'static str, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let health_hits = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(Faults {
            status: 0.into(),
            health: 200.into(),
            mode: 0.into(),
        });
        let (counter, health_counter, f) = (hits.clone(), health_hits.clone(), faults.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                match f.mode.load(Ordering::Relaxed) {
                    1 => {
                        let _ = stream.set_zero_linger();
                        drop(stream);
                        continue;
                    }
                    2 => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            drop(stream);
                        });
                        continue;
                    }
                    _ => {}
                }
                let (counter, health_counter, f) =
                    (counter.clone(), health_counter.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let f = f.clone();
                        let health = req.uri().path() == "/healthz";
                        if health {
                            health_counter.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        async move {
                            let forced = if health {
                                f.health.load(Ordering::Relaxed)
                            } else {
                                f.status.load(Ordering::Relaxed)
                            };
                            if forced != 0 {
                                let mut r = Response::new(Full::new(Bytes::from(format!(
                                    "{name} forced {forced}"
                                ))));
                                *r.status_mut() = StatusCode::from_u16(forced).unwrap();
                                r.headers_mut().insert("x-upstream", name.parse().unwrap());
                                return Ok::<_, Infallible>(r);
                            }
                            echo(name, req).await
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            faults,
            health_hits,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

async fn echo(
    name: &'static str,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(ms) = header("x-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Ok(websocket_echo(&mut req));
    }
    let status = header("x-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(v.to_str().unwrap_or("?").to_owned());
    }
    let body = serde_json::json!({
        "upstream": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    resp.headers_mut().insert("server", "echo".parse().unwrap());
    resp.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(resp)
}

fn websocket_echo(req: &mut Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
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
        use futures::{SinkExt, StreamExt};
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_text() || msg.is_binary() {
                if tx.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
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

/// A temporary configuration directory.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file atomically (write + rename), as editors and config tools do.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// YAML for a Backend with static endpoints.
pub fn backend_yaml(name: &str, addrs: &[SocketAddr]) -> String {
    let eps: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    backend_yaml_with(name, &eps, "")
}

/// YAML for a Backend with these endpoints; `extra` adds lines to its spec.
pub fn backend_yaml_with(name: &str, endpoints: &[String], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  endpoints: [{}]\n{extra}---\n",
        eps.join(", ")
    )
}

/// YAML for a Route with one rule sending the `path` prefix to `backend`; `extra` adds lines
/// to the rule.
pub fn route_yaml(name: &str, path: &str, backend: &str, extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  rules:\n    - matches: [{{ path: {{ value: {path} }} }}]\n      backendRefs: [{{ name: {backend} }}]\n{extra}---\n"
    )
}

/// Starts a gateway on loopback ports picked by the OS.
pub async fn gateway(config: &Path) -> tidegate::Gateway {
    tidegate::Gateway::builder()
        .config_path(config)
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await
        .expect("gateway starts")
}

/// Polls `check` every 50 ms until it returns `Some`, and returns that; panics naming `what`
/// if it does not within `within`. The one way a test waits for something that happens on the
/// wall clock (never a bare fixed sleep).
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the gateway serves a table newer than `version`.
pub async fn wait_for_version(gw: &tidegate::Gateway, after: u64) -> u64 {
    let mut rx = gw.tables();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = rx
            .borrow()
            .as_ref()
            .map(|t| t.version)
            .filter(|v| *v > after)
        {
            return v;
        }
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .expect("a new table within 10s")
            .unwrap();
    }
}

/// A plain HTTP client (HTTP/1.1, or HTTP/2 prior knowledge).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub version: Version,
    pub body: String,
}

impl Reply {
    pub fn echo(&self) -> Echo {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {:?}", self.body))
    }
}

impl HttpClient {
    pub fn http1() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn h2c() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Reply, hyper_util::client::legacy::Error> {
        let resp = self.inner.request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            version: parts.version,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// GET `http://{addr}{path}` with a Host header and extra headers.
    pub async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::get(format!("http://{addr}{path}")).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("request completes")
    }
}
