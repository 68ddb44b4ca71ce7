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

/// A Route `name` (host `name`) whose rule asks Backend `backend` (`extra`: more lines under
/// `extAuth:`).
fn backend_route(name: &str, backend: &str, extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{name}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      authentication:\n        extAuth:\n          backendRef: {{ name: {backend} }}\n          allowedUpstreamHeaders: [x-user]\n          timeout: 2s\n{extra}---\n"
    )
}

/// The endpoints of backend `name` in `/backends`: (address, ejected).
async fn endpoints(gw: &Gateway, name: &str) -> Vec<(String, bool)> {
    let view: serde_json::Value = serde_json::from_str(&gw.admin("/backends").await).unwrap();
    view.as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["backend"] == format!("default/{name}"))
        .flat_map(|b| b["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["address"].as_str().unwrap_or_default().to_owned(),
                e.get("ejectedUntil").is_some(),
            )
        })
        .collect()
}

/// `extAuth.backendRef`: the subrequests go to the Backend's endpoints as its load balancer
/// picks them (round robin over two auth servers), with the client's Host and `pathPrefix`;
/// each server's answer decides. One server killed: the connection refused is tried on the
/// other endpoint (no client sees it) and passive health ejects the dead one. Both killed:
/// the failure mode decides.
#[tokio::test]
async fn a_backend_as_the_auth_service_spreads_the_subrequests_and_survives_an_endpoint() {
    let up = Upstream::start("up").await;
    let mut one = PyServer::start("auth_server.py", |_| Vec::new());
    let mut two = PyServer::start("auth_server.py", |_| Vec::new());
    let endpoints_yaml = [
        format!("127.0.0.1:{}", one.port),
        format!("127.0.0.1:{}", two.port),
    ];
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &crate::common::backend_yaml_with(
                "auth",
                &endpoints_yaml,
                "  healthCheck: { passive: { consecutiveFailures: 1, ejectionTime: 1m } }\n",
            )
            + &backend_route("h", "auth", "          pathPrefix: /check\n")
            + &backend_route("open", "auth", "          failureMode: Open\n")),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let config: serde_json::Value =
        serde_json::from_str(&gw.admin("/config").await).expect("/config is JSON");
    let ext = config["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == "default/h")
        .map(|r| r["access"]["extAuth"].clone())
        .unwrap();
    assert_eq!(
        ext["backend"], "default/auth",
        "/config names the Backend: {ext}"
    );
    assert_eq!(ext["pathPrefix"], "/check");
    assert!(ext.get("url").is_none(), "{ext}");

    // Spread over both, each allowing as it answers, with the prefix and the client's Host.
    for _ in 0..4 {
        let r = get(
            &gw,
            "h",
            "/orders/7?full=1",
            &[("authorization", "Bearer good")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.echo().headers["x-user"], vec!["alice"]);
    }
    assert_eq!((one.hits(), two.hits()), (2, 2), "round robin over both");
    for seen in [last(&one), last(&two)] {
        assert_eq!(seen["path"], "/check/orders/7?full=1");
        assert_eq!(seen["headers"]["host"], "h", "the client's Host");
        assert_eq!(seen["headers"]["x-original-uri"], "/orders/7?full=1");
        assert_eq!(seen["headers"]["x-forwarded-host"], "h");
    }
    // Refusals and redirects come back from whichever endpoint answered.
    for _ in 0..2 {
        let r = get(&gw, "h", "/orders", &[("authorization", "Bearer bad")]).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.body, "denied by policy\n");
    }
    assert_eq!((one.hits(), two.hits()), (3, 3));
    let r = get(&gw, "open", "/x", &[]).await;
    assert_eq!(r.status, 302, "no Authorization: the login redirect");

    // One endpoint dies: every request still gets its decision (the refused connection is
    // tried on the other endpoint), and passive health ejects the dead one.
    one.stop();
    let before = two.hits();
    for _ in 0..6 {
        let r = get(&gw, "h", "/a", &[("authorization", "Bearer good")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.echo().headers["x-user"], vec!["alice"]);
    }
    assert_eq!(
        two.hits(),
        before + 6,
        "the live endpoint answered all of them"
    );
    let dead = format!("127.0.0.1:{}", one.port);
    let eps = endpoints(&gw, "auth").await;
    assert!(
        eps.iter().any(|(a, ejected)| *a == dead && *ejected),
        "the dead endpoint is ejected: {eps:?}"
    );
    assert!(
        eps.iter().any(|(a, ejected)| *a != dead && !*ejected),
        "{eps:?}"
    );

    // Both dead: the service cannot be asked; Closed answers 503, Open lets the request on.
    two.stop();
    let r = get(&gw, "h", "/a", &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let r = get(
        &gw,
        "open",
        "/a",
        &[("authorization", "Bearer good"), ("x-user", "mallory")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().header("x-user"), None, "the client's copy is gone");
    assert_eq!(decisions(&gw, "default/h", "unavailable").await, Some(1.0));
    assert_eq!(
        decisions(&gw, "default/open", "failed_open").await,
        Some(1.0)
    );
    assert_eq!(up.hits(), 4 + 6 + 1);
}

/// A backendRef that does not resolve (no such Backend) or names a TCP Backend: the Route is
/// accepted, the diagnostic names the field (in `/config` and `tidegate validate`), that rule
/// answers 500, and the Route's other rules serve.
#[tokio::test]
async fn an_unresolved_auth_backend_answers_500_on_its_rule_only() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &crate::common::backend_yaml_with(
                "tcp",
                &["127.0.0.1:9".to_owned()],
                "  protocol: TCP\n",
            )
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: r }\nspec:\n  hostnames: [h]\n  rules:\n"
            + "    - matches: [{ path: { value: /missing } }]\n      backendRefs: [{ name: up }]\n      authentication: { extAuth: { backendRef: { name: nope } } }\n"
            + "    - matches: [{ path: { value: /tcp } }]\n      backendRefs: [{ name: up }]\n      authentication: { extAuth: { backendRef: { name: tcp } } }\n"
            + "    - backendRefs: [{ name: up }]\n---\n"),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let r = get(&gw, "h", "/missing", &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(get(&gw, "h", "/tcp", &[]).await.status, 500);
    assert_eq!(get(&gw, "h", "/other", &[]).await.status, 200);
    assert_eq!(up.hits(), 1);

    let config: serde_json::Value =
        serde_json::from_str(&gw.admin("/config").await).expect("/config is JSON");
    let diags = config["diagnostics"].as_array().unwrap();
    let find = |field: &str| {
        diags
            .iter()
            .find(|d| d["field"] == field)
            .unwrap_or_else(|| panic!("no diagnostic on {field}: {diags:?}"))
            .clone()
    };
    let missing = find("spec.rules[0].authentication.extAuth.backendRef.name");
    assert_eq!(missing["severity"], "warning");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("Backend default/nope not found"),
        "{missing}"
    );
    let tcp = find("spec.rules[1].authentication.extAuth.backendRef.name");
    assert!(
        tcp["message"].as_str().unwrap().contains("speaks TCP"),
        "{tcp}"
    );
    assert!(
        config["rejected"].as_array().is_none_or(|r| r.is_empty()),
        "the Route is accepted: {}",
        config["rejected"]
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "warnings only");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Route default/r: spec.rules[0].authentication.extAuth.backendRef.name: Backend default/nope not found (and Service references are not supported yet): the rule answers 500 [warning]"),
        "{stdout}"
    );
}

/// A Backend with `tls` as the auth service: the subrequest goes over HTTPS, verified with the
/// Backend's CA and server name, with its client certificate.
#[tokio::test]
async fn a_tls_backend_as_the_auth_service_is_asked_over_https() {
    use crate::common::tls::{Ca, secret_yaml};
    let ca = Ca::new();
    let server = ca.leaf("auth", &["auth.test"]);
    let client = ca.leaf("gateway", &[]);
    let up = Upstream::start("up").await;
    let auth = PyServer::start("auth_server.py", |dir| {
        std::fs::write(dir.join("cert.pem"), &server.cert).unwrap();
        std::fs::write(dir.join("key.pem"), &server.key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        ["tls", "cert.pem", "key.pem", "ca.pem"]
            .iter()
            .map(|f| match *f {
                "tls" => "tls".to_owned(),
                f => dir.join(f).display().to_string(),
            })
            .collect()
    });
    let indent: String = ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{ name: auth-ca }}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indent}---\n"
            )
            + &secret_yaml("gateway-client", &client, false)
            + &crate::common::backend_yaml_with(
                "auth",
                &[format!("127.0.0.1:{}", auth.port)],
                "  tls: { sni: auth.test, caSecretRef: { name: auth-ca }, clientCertificateRef: { name: gateway-client } }\n",
            )
            + &crate::common::backend_yaml_with(
                "auth-wrong-name",
                &[format!("127.0.0.1:{}", auth.port)],
                "  tls: { sni: other.test, caSecretRef: { name: auth-ca }, clientCertificateRef: { name: gateway-client } }\n",
            )
            + &backend_route("h", "auth", "")
            + &backend_route("wrong", "auth-wrong-name", "")),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;

    let r = get(&gw, "h", "/orders", &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo().headers["x-user"], vec!["alice"]);
    let seen = last(&auth);
    assert_eq!(seen["path"], "/orders");
    assert_eq!(
        seen["client"], "commonName=gateway",
        "the client certificate"
    );
    let r = get(&gw, "h", "/orders", &[("authorization", "Bearer bad")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(auth.hits(), 2);

    // A server name the certificate does not cover: verification fails, Closed answers 503.
    let r = get(&gw, "wrong", "/orders", &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(auth.hits(), 2);
    assert_eq!(up.hits(), 1);
}

/// An `H2C` Backend as the auth service is asked over HTTP/2 (the echo upstream's refusal,
/// passed back, says which version it got); a reload that moves the Backend to another
/// endpoint moves the subrequests with it.
#[tokio::test]
async fn an_h2c_auth_backend_is_asked_over_http2_and_follows_its_endpoints() {
    let up = Upstream::start("up").await;
    let first = Upstream::start("auth-1").await;
    let second = Upstream::start("auth-2").await;
    let config = |auth: &Upstream| {
        backend_yaml("up", &[up.addr])
            + &crate::common::backend_yaml_with(
                "auth",
                &[auth.addr.to_string()],
                "  protocol: H2C\n",
            )
            + &backend_route(
                "h",
                "auth",
                "          pathPrefix: /check\n          headersToAuth: [x-status]\n",
            )
    };
    let cfg = ConfigDir::new();
    cfg.write("all.yaml", &config(&first));
    let gw = Gateway::start(cfg.path(), &[], &[]).await;

    // The echo answers with the status asked for: 401 is a refusal, its body passed back.
    let r = get(&gw, "h", "/a?x=1", &[("x-status", "401")]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    assert!(
        seen["uri"].as_str().unwrap().ends_with("/check/a?x=1"),
        "{seen}"
    );
    assert_eq!(seen["upstream"], "auth-1");
    let r = get(&gw, "h", "/a", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((first.hits(), second.hits(), up.hits()), (2, 0, 1));

    cfg.write("all.yaml", &config(&second));
    crate::common::eventually(Duration::from_secs(10), "the new endpoint", || async {
        let r = get(&gw, "h", "/b", &[("x-status", "403")]).await;
        (r.status == 403 && r.body.contains("auth-2")).then_some(())
    })
    .await;
    let asked = first.hits();
    assert_eq!(get(&gw, "h", "/b", &[]).await.status, 200);
    assert_eq!(
        first.hits(),
        asked,
        "the old endpoint is not asked any more"
    );
}

/// ingress-nginx's `auth-url` form (oauth2-proxy's documented setup): the URL as written with
/// `$host`, GET whatever the request's method, every request header and no body, 401 sent to
/// sign in with where to come back, 403 passed back, any other non-2xx a 500, and the
/// response headers named copied upstream.
#[tokio::test]
async fn an_nginx_style_auth_url_asks_as_auth_request_does() {
    let up = Upstream::start("up").await;
    let auth = PyServer::start("auth_server.py", |_| Vec::new());
    let p = auth.port;
    let cfg = ConfigDir::new();
    let route = format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: o }}\nspec:\n  hostnames: [localhost]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      authentication:\n        extAuth:\n          url: http://$host:{p}/oauth2/auth\n          appendPath: false\n          method: GET\n          forwardAllHeaders: true\n          denyStatuses: [401, 403]\n          signinUrl: http://$host:{p}/oauth2/start?rd=$scheme://$http_host$escaped_request_uri\n          allowedUpstreamHeaders: [x-auth-request-user]\n          passSetCookie: Success\n          timeout: 2s\n---\n"
    );
    cfg.write("all.yaml", &(backend_yaml("up", &[up.addr]) + &route));
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let client = HttpClient::http1();

    // Allowed: a POST's subrequest is a GET of the URL as written, with every header.
    let req = http::Request::post(format!("http://{}/orders/7?a=1", gw.http))
        .header("host", "localhost")
        .header("cookie", "_oauth2_proxy=ok")
        .header("x-custom", "seen")
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-auth-request-user", "mallory")
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"the body",
        )))
        .unwrap();
    let r = client.send(req).await.expect("request completes");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("set-cookie").unwrap(),
        "_oauth2_proxy=refreshed",
        "the allowing answer's cookie reaches the client"
    );
    let echo = r.echo();
    assert_eq!(echo.headers["x-auth-request-user"], vec!["alice"]);
    assert_eq!(echo.header("x-auth-request-email"), None);
    let seen = last(&auth);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/oauth2/auth");
    assert_eq!(seen["body"], "");
    let h = &seen["headers"];
    assert_eq!(h["host"], format!("localhost:{p}"));
    assert_eq!(h["x-custom"], "seen");
    assert_eq!(h["cookie"], "_oauth2_proxy=ok");
    assert_eq!(h["x-original-method"], "POST");
    assert_eq!(h["x-original-url"], "http://localhost/orders/7?a=1");
    assert_eq!(h["x-auth-request-redirect"], "/orders/7?a=1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h.get("content-length").is_none_or(|v| v == "0"), "{h}");

    // passSetCookie: Success: not on the backend's 5xx.
    let r = get(
        &gw,
        "localhost",
        "/",
        &[("cookie", "_oauth2_proxy=ok"), ("x-status", "500")],
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.headers.get("set-cookie").is_none(), "{:?}", r.headers);

    // No session: 302 to sign in, back to the escaped request URI, with the 401's cookie.
    let r = get(&gw, "localhost", "/orders/7?a=1&b=2", &[]).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.headers.get("location").unwrap(),
        &format!(
            "http://localhost:{p}/oauth2/start?rd=http://localhost%2Forders%2F7%3Fa%3D1%26b%3D2"
        )
    );
    assert_eq!(r.headers.get("set-cookie").unwrap(), "_oauth2_proxy_csrf=x");

    // 403 is passed back; 502 is not one of denyStatuses: 500.
    let r = get(
        &gw,
        "localhost",
        "/",
        &[("cookie", "_oauth2_proxy=forbidden")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = get(&gw, "localhost", "/", &[("cookie", "_oauth2_proxy=broken")]).await;
    assert_eq!(r.status, 500);
    assert!(!r.body.contains("upstream gone"), "{}", r.body);
    assert_eq!(
        up.hits(),
        2,
        "only the allowed requests reached the upstream"
    );
}

/// Variables are checked when the Route is read: an unknown one is named, and one that would
/// let the client pick where the subrequest goes is refused.
#[tokio::test]
async fn auth_url_variables_are_checked() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    let one = |name: &str, host: &str, url: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{host}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      authentication:\n        extAuth:\n          url: {url}\n          appendPath: false\n---\n"
        )
    };
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &one("unknown", "a", "http://127.0.0.1:9/$cookie_x")
            + &one("wild", "'*.a'", "http://$host/auth")
            + &one("port", "b", "http://a:$http_host/auth")),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let config: serde_json::Value =
        serde_json::from_str(&gw.admin("/config").await).expect("/config is JSON");
    let diags = config["diagnostics"].as_array().unwrap();
    for (route, needle) in [
        ("unknown", "unknown variable $cookie_x"),
        ("wild", "none a wildcard"),
        ("port", "$http_host in the URL's scheme or host"),
    ] {
        let d = diags
            .iter()
            .find(|d| d["object"].to_string().contains(route))
            .unwrap_or_else(|| panic!("no diagnostic for {route}: {diags:?}"));
        assert_eq!(
            d["field"], "spec.rules[0].authentication.extAuth.url",
            "{d}"
        );
        assert!(d["message"].as_str().unwrap().contains(needle), "{d}");
    }
}

/// The nginx form with a Backend as the service: `pathPrefix` as written (`appendPath:
/// false`), the fixed method, every header; 401 without `signinUrl` is passed back.
#[tokio::test]
async fn a_backend_auth_service_is_asked_at_its_path_prefix_as_written() {
    let up = Upstream::start("up").await;
    let auth = PyServer::start("auth_server.py", |_| Vec::new());
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &crate::common::backend_yaml_with(
                "auth",
                &[format!("127.0.0.1:{}", auth.port)],
                "",
            )
            + &backend_route(
                "b",
                "auth",
                "          pathPrefix: /oauth2/auth\n          appendPath: false\n          method: GET\n          forwardAllHeaders: true\n          denyStatuses: [401, 403]\n",
            )),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let req = http::Request::put("http://gw/orders/7?a=1".replace("gw", &gw.http.to_string()))
        .header("host", "b")
        .header("cookie", "_oauth2_proxy=ok")
        .header("x-custom", "seen")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
        .unwrap();
    let r = HttpClient::http1().send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = last(&auth);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/oauth2/auth");
    assert_eq!(seen["headers"]["x-custom"], "seen");
    assert_eq!(seen["headers"]["x-original-method"], "PUT");
    let r = get(&gw, "b", "/", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer");
}
