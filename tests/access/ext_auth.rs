//! External authorization through the real binary against a small real auth service
//! (`auth_server.py`, Python's http.server): allow with headers copied upstream, deny with the
//! service's status and body, a login redirect, timeout and an unreachable service under both
//! failure modes, and the decision cache.

use std::time::{Duration, Instant};

use crate::PyServer;
use crate::common::{ConfigDir, HttpClient, Reply, Upstream, backend_yaml};
use crate::support::{Gateway, metric};

/// A Route `name` (host `name`) whose rule asks the auth service at `url` (`extra`: more
/// lines under `extAuth:`).
fn route(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{name}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      authentication:\n        extAuth:\n          url: {url}\n          allowedUpstreamHeaders: [x-user]\n          timeout: 500ms\n{extra}---\n"
    )
}

async fn get(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    HttpClient::http1().get(gw.http, host, path, headers).await
}

fn last(auth: &PyServer) -> serde_json::Value {
    let text = std::fs::read_to_string(auth.dir.path().join("last.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn decisions(gw: &Gateway, route: &str, result: &str) -> Option<f64> {
    metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", route),
            ("mechanism", "ext_authz"),
            ("result", result),
        ],
    )
    .await
}

#[tokio::test]
async fn the_auth_service_allows_denies_and_redirects() {
    let up = Upstream::start("up").await;
    let auth = PyServer::start("auth_server.py", |_| Vec::new());
    let url = format!("http://127.0.0.1:{}/check", auth.port);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("h", &url, "")),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;

    // Allowed: the request goes on with the service's X-User (the client's copy gone), not
    // its other headers.
    let r = get(
        &gw,
        "h",
        "/orders/7?full=1",
        &[
            ("authorization", "Bearer good"),
            ("cookie", "s=1"),
            ("x-user", "mallory"),
            ("x-secret", "not for the auth service"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.echo();
    assert_eq!(echo.headers["x-user"], vec!["alice"]);
    assert_eq!(echo.header("x-other"), None);
    assert_eq!(echo.header("authorization"), Some("Bearer good"));
    // What the auth service saw: the method, the URL's path + the request's, the selected
    // headers, the original URI and host.
    let seen = last(&auth);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/check/orders/7?full=1");
    let h = &seen["headers"];
    assert_eq!(h["authorization"], "Bearer good");
    assert_eq!(h["cookie"], "s=1");
    assert_eq!(h["x-original-uri"], "/orders/7?full=1");
    assert_eq!(h["x-original-method"], "GET");
    assert_eq!(h["x-forwarded-host"], "h");
    assert!(
        h.get("x-secret").is_none() && h.get("x-user").is_none(),
        "{h}"
    );

    // Refused: the service's status and body, the headers passed back, no more.
    let r = get(&gw, "h", "/orders", &[("authorization", "Bearer bad")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "denied by policy\n");
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "text/plain",
        "Content-Type passed back"
    );
    assert!(r.headers.get("x-internal").is_none());

    // A login redirect (auth-signin flows): the status, Location and Set-Cookie.
    let r = get(&gw, "h", "/account?tab=1", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://login.test/start?rd=/account?tab=1"
    );
    assert_eq!(r.headers.get("set-cookie").unwrap(), "flow=1");

    assert_eq!(up.hits(), 1, "refused requests never reach the upstream");
    assert_eq!(decisions(&gw, "default/h", "allowed").await, Some(1.0));
    assert_eq!(decisions(&gw, "default/h", "denied").await, Some(2.0));
    let reason = metric(
        gw.admin,
        "tidegate_requests_total",
        &[
            ("route", "default/h"),
            ("code", "302"),
            ("reason", "ext_authz_denied"),
        ],
    )
    .await;
    assert_eq!(reason, Some(1.0));
}

/// No answer within the timeout, or no auth service at all: failureMode Closed answers 503,
/// Open lets the request on (without the allowed headers, the client's copies still removed).
#[tokio::test]
async fn timeouts_and_an_unreachable_service_follow_the_failure_mode() {
    let up = Upstream::start("up").await;
    let auth = PyServer::start("auth_server.py", |_| Vec::new());
    let url = format!("http://127.0.0.1:{}/check", auth.port);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/check", closed.local_addr().unwrap());
    drop(closed);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &route("closed", &url, "          failureMode: Closed\n")
            + &route("open", &url, "          failureMode: Open\n")
            + &route("down", &down, "")
            + &route("down-open", &down, "          failureMode: Open\n")),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let good = ("authorization", "Bearer good");

    let started = Instant::now();
    let r = get(&gw, "closed", "/slow", &[good]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the timeout (500ms) cut the wait: {:?}",
        started.elapsed()
    );
    let r = get(&gw, "open", "/slow", &[good, ("x-user", "mallory")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().header("x-user"), None, "the client's copy is gone");

    let r = get(&gw, "down", "/", &[good]).await;
    assert_eq!(r.status, 503);
    let r = get(&gw, "down-open", "/", &[good]).await;
    assert_eq!(r.status, 200);

    assert_eq!(
        decisions(&gw, "default/closed", "unavailable").await,
        Some(1.0)
    );
    assert_eq!(
        decisions(&gw, "default/down", "unavailable").await,
        Some(1.0)
    );
    assert_eq!(
        decisions(&gw, "default/open", "failed_open").await,
        Some(1.0)
    );
    assert_eq!(
        decisions(&gw, "default/down-open", "failed_open").await,
        Some(1.0)
    );
    let reason = metric(
        gw.admin,
        "tidegate_requests_total",
        &[
            ("route", "default/down"),
            ("reason", "ext_authz_unavailable"),
        ],
    )
    .await;
    assert_eq!(reason, Some(1.0));
}

/// With a cache, a second request with the same key headers is decided without asking; other
/// key values ask again.
#[tokio::test]
async fn a_cached_decision_saves_the_subrequest() {
    let up = Upstream::start("up").await;
    let auth = PyServer::start("auth_server.py", |_| Vec::new());
    let url = format!("http://127.0.0.1:{}/check", auth.port);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &route(
                "h",
                &url,
                "          cache: { keyHeaders: [authorization], ttl: 1m }\n",
            )),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    for _ in 0..3 {
        let r = get(&gw, "h", "/a", &[("authorization", "Bearer good")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.echo().headers["x-user"],
            vec!["alice"],
            "cached headers set"
        );
    }
    assert_eq!(auth.hits(), 1, "one subrequest for three requests");
    for _ in 0..2 {
        let r = get(&gw, "h", "/a", &[("authorization", "Bearer bad")]).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.body, "denied by policy\n");
    }
    assert_eq!(auth.hits(), 2, "another key asks once");
}

/// `maxBodyBytes`: the auth service gets the request body (and its Content-Type) and can
/// decide on it; the backend still gets the whole body; a longer body is refused with 413
/// before the service is asked.
#[tokio::test]
async fn the_body_is_sent_up_to_max_body_bytes() {
    let auth = PyServer::start("auth_server.py", |_| Vec::new());
    // The backend is a second copy of the same server: it records the body it got.
    let backend = PyServer::start("auth_server.py", |_| Vec::new());
    let url = format!("http://127.0.0.1:{}/check", auth.port);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(crate::common::backend_yaml_with("up", &[format!("127.0.0.1:{}", backend.port)], "")
            + &route(
                "h",
                &url,
                "          maxBodyBytes: 16\n          headersToAuth: [authorization]\n",
            )),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let post = |body: &'static str| {
        let addr = gw.http;
        async move {
            let req = http::Request::post(format!("http://{addr}/orders"))
                .header("host", "h")
                .header("authorization", "Bearer good")
                .header("content-type", "text/plain")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            HttpClient::http1().send(req).await.unwrap()
        }
    };

    // Allowed: both the service and the backend got the body, the service its type too.
    let r = post("order: 2 apples").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = last(&auth);
    assert_eq!(seen["body"], "order: 2 apples");
    assert_eq!(seen["headers"]["content-type"], "text/plain");
    assert_eq!(last(&backend)["body"], "order: 2 apples");
    assert_eq!(backend.hits(), 1);

    // The service decides on the body: refused, and the backend never sees it.
    let r = post("forbidden stuff").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "body refused\n");
    assert_eq!(backend.hits(), 1);

    // Exactly the limit passes; one byte more is 413 without asking anyone.
    assert_eq!(post("0123456789abcdef").await.status, 200);
    let asked = auth.hits();
    let r = post("0123456789abcdefg").await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body, "request body too large to authorize\n");
    assert_eq!(auth.hits(), asked);
    assert_eq!(backend.hits(), 2);

    // A request without a body is asked about with an empty one.
    let r = get(&gw, "h", "/orders", &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(last(&auth)["body"], "");
}
