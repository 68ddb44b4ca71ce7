//! A rule's `errorResponses` and `fallbackBackendRef` (ingress-nginx's `custom-http-errors`
//! and `default-backend`) through the real binary, with real upstreams: an error answer with a
//! listed status is replaced by the error page's (its status, headers and body; the request it
//! got carries what ingress-nginx sends), others pass; a HEAD stays a HEAD; an error page that
//! cannot answer leaves the upstream's answer; a backend with no healthy endpoint hands its
//! requests to the fallback until it recovers.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::binary::Binary;
use common::{ConfigDir, HttpClient, Upstream, backend_yaml, backend_yaml_with, eventually};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the error page saw last: method, path and headers.
type Seen = Arc<Mutex<Option<(String, String, BTreeMap<String, String>)>>>;

/// An error-page service as ingress-nginx's examples write it: answers with the status in
/// `X-Code` and a body naming it, as JSON when `X-Format` asks for it.
async fn error_pages() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let headers: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                        .collect();
                    let code: u16 = headers
                        .get("x-code")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(404);
                    let json = headers.get("x-format").is_some_and(|f| f.contains("json"));
                    *s.lock().unwrap() =
                        Some((req.method().to_string(), req.uri().to_string(), headers));
                    let (body, kind) = if json {
                        (format!("{{\"error\":{code}}}"), "application/json")
                    } else {
                        (format!("<h1>custom {code}</h1>"), "text/html")
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = StatusCode::from_u16(code).unwrap();
                    r.headers_mut()
                        .insert("content-type", kind.parse().unwrap());
                    r.headers_mut()
                        .insert("x-error-page", "yes".parse().unwrap());
                    async { Ok::<_, Infallible>(r) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A Route `name` (host `name`) to Backend `up`, its 404 and 503 answers replaced by
/// Backend `pages`'.
fn route(name: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{name}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      errorResponses:\n        statuses: [503, 404]\n        backendRef: {{ name: pages }}\n---\n"
    )
}

async fn send(
    gw: &Binary,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> common::Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.http))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    HttpClient::http1()
        .send(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request completes")
}

#[tokio::test]
async fn listed_error_answers_are_replaced_by_the_error_page() {
    let up = Upstream::start("up").await;
    let (pages, seen) = error_pages().await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &backend_yaml("pages", &[pages]) + &route("shop")),
    );
    let gw = Binary::run(cfg.path()).start().ready().await;

    // A 404 of the upstream: the client gets the error page's status, headers and body.
    let r = send(
        &gw,
        "GET",
        "shop",
        "/orders/7?full=1",
        &[("x-status", "404"), ("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body, "{\"error\":404}");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-error-page"], "yes");
    assert!(r.headers.get("x-upstream").is_none(), "{:?}", r.headers);
    // What the error page was asked: GET / with what ingress-nginx sends.
    let (method, path, h) = seen
        .lock()
        .unwrap()
        .take()
        .expect("the error page was asked");
    assert_eq!((method.as_str(), path.as_str()), ("GET", "/?full=1"));
    assert_eq!(h["x-code"], "404");
    assert_eq!(h["x-format"], "application/json");
    assert_eq!(h["accept"], "application/json");
    assert_eq!(h["x-original-uri"], "/orders/7?full=1");
    assert_eq!(h["x-namespace"], "default");
    assert_eq!(h["x-ingress-name"], "shop");
    assert_eq!(h["x-service-name"], "up");
    assert_eq!(h["host"], "shop");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        h["x-request-id"],
        r.headers["x-request-id"].to_str().unwrap()
    );
    // The client's other headers too, as nginx passes them.
    assert_eq!(h["x-status"], "404");
    assert!(!h.contains_key("content-length"), "{h:?}");

    // 503 too; without Accept there is no X-Format, and the page answers HTML.
    let r = send(&gw, "GET", "shop", "/", &[("x-status", "503")]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (503, "<h1>custom 503</h1>")
    );
    let (_, _, h) = seen.lock().unwrap().take().unwrap();
    assert!(!h.contains_key("x-format"), "{h:?}");

    // Statuses not listed, and successes, are the upstream's own.
    for status in ["500", "200", "403"] {
        let r = send(&gw, "GET", "shop", "/a", &[("x-status", status)]).await;
        assert_eq!(r.status.as_str(), status);
        assert_eq!(r.echo().upstream, "up");
    }
    assert!(
        seen.lock().unwrap().is_none(),
        "the error page was not asked"
    );

    // A HEAD request asks the error page with HEAD: no body, its headers.
    let r = send(&gw, "HEAD", "shop", "/gone", &[("x-status", "404")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (404, ""));
    assert_eq!(r.headers["x-error-page"], "yes");
    let (method, _, _) = seen.lock().unwrap().take().unwrap();
    assert_eq!(method, "HEAD");

    // The upstream connection whose answer was dropped is not reused mid-body: the next
    // requests on the rule are answered normally.
    for _ in 0..3 {
        let r = send(&gw, "GET", "shop", "/again", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.echo().uri, "/again");
    }
    // Metrics tell a replaced answer apart.
    assert_eq!(gw.requests_with("reason=\"error_page\"").await, 3);
}

#[tokio::test]
async fn an_error_page_that_cannot_answer_leaves_the_upstream_answer() {
    let up = Upstream::start("up").await;
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &backend_yaml("pages", &[dead]) + &route("shop")),
    );
    let gw = Binary::run(cfg.path()).start().ready().await;
    let r = send(&gw, "GET", "shop", "/x", &[("x-status", "404")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.echo().upstream, "up", "the upstream's own body");
    assert_eq!(gw.requests_with("reason=\"error_page_failed\"").await, 1);
}

#[tokio::test]
async fn a_backend_without_a_healthy_endpoint_hands_its_requests_to_the_fallback() {
    let up = Upstream::start("up").await;
    let spare = Upstream::start("spare").await;
    let cfg = ConfigDir::new();
    let checked = "  healthCheck:\n    active: { http: { path: /healthz }, interval: 100ms, timeout: 100ms, unhealthyThreshold: 1, healthyThreshold: 1 }\n";
    cfg.write(
        "all.yaml",
        &(backend_yaml_with("up", &[up.addr.to_string()], checked)
            + &backend_yaml("spare", &[spare.addr])
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: shop }\nspec:\n  rules:\n    - backendRefs: [{ name: up }]\n      fallbackBackendRef: { name: spare }\n---\n"),
    );
    let gw = Binary::run(cfg.path()).start().ready().await;
    let who = |gw: &Binary| {
        let http = gw.http;
        async move {
            let r = HttpClient::http1().get(http, "shop", "/p?q=1", &[]).await;
            (r.status, r.echo())
        }
    };
    let (status, echo) = who(&gw).await;
    assert_eq!((status.as_u16(), echo.upstream.as_str()), (200, "up"));

    // Unhealthy: the fallback answers, as the request was (path, query, Host).
    up.faults.set_health(503);
    eventually(Duration::from_secs(10), "the fallback answers", || async {
        let (status, echo) = who(&gw).await;
        (status == 200 && echo.upstream == "spare").then_some(echo)
    })
    .await;
    let (_, echo) = who(&gw).await;
    assert_eq!(echo.uri, "/p?q=1");
    assert_eq!(echo.header("host"), Some("shop"));

    // Healthy again: back to its own backend.
    up.faults.set_health(200);
    eventually(
        Duration::from_secs(10),
        "the backend answers again",
        || async {
            let (_, echo) = who(&gw).await;
            (echo.upstream == "up").then_some(())
        },
    )
    .await;
}

/// Connections an upstream accepted and saw end.
#[derive(Default)]
struct Conns {
    accepted: std::sync::atomic::AtomicUsize,
    ended: std::sync::atomic::AtomicUsize,
}

/// An upstream whose `/big` answers 404 with a 1 MiB body, and every other path 200 `ok`.
async fn big_404s() -> (SocketAddr, Arc<Conns>) {
    use std::sync::atomic::Ordering::Relaxed;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            c.accepted.fetch_add(1, Relaxed);
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    if req.uri().path() == "/big" {
                        *r.body_mut() = Full::new(Bytes::from(vec![b'x'; 1 << 20]));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                c.ended.fetch_add(1, Relaxed);
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn a_replaced_long_body_closes_its_upstream_connection() {
    use std::sync::atomic::Ordering::Relaxed;
    let (up, conns) = big_404s().await;
    let (pages, _) = error_pages().await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up]) + &backend_yaml("pages", &[pages]) + &route("shop")),
    );
    let gw = Binary::run(cfg.path()).start().ready().await;
    let r = send(&gw, "GET", "shop", "/big", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (404, "<h1>custom 404</h1>")
    );
    // The megabyte nobody reads is not drained: its connection is closed, not pooled.
    eventually(
        Duration::from_secs(5),
        "the upstream connection ends",
        || async { (conns.ended.load(Relaxed) == 1).then_some(()) },
    )
    .await;
    // The next requests go on a new connection, answered whole.
    for _ in 0..3 {
        let r = send(&gw, "GET", "shop", "/small", &[]).await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
    }
    assert_eq!(conns.accepted.load(Relaxed), 2);
}
