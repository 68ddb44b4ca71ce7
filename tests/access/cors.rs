//! CORS, judged the way the fetch standard tells a browser to judge the answers: the "CORS
//! check" (Access-Control-Allow-Origin / -Credentials) and, for preflights, the method and
//! header lists (`*` is a wildcard only for requests without credentials).

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;

use crate::common::{ConfigDir, HttpClient, Reply, Upstream, backend_yaml};
use crate::support::{Gateway, metric};

/// Three routes: `strict` (listed origins, credentials), `open` (`*` everything, no
/// credentials), `echo` (`*` everything, with credentials).
fn cors_config(up: &Upstream) -> ConfigDir {
    let route = |name: &str, cors: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{name}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      filters:\n        - cors: {cors}\n---\n"
        )
    };
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &route(
                "strict",
                "{ allowOrigins: [\"https://app.example.com\", \"https://*.example.org\"], allowMethods: [GET, PUT], allowHeaders: [x-api-key, content-type], exposeHeaders: [x-request-id], allowCredentials: true, maxAge: 600 }",
            )
            + &route("open", "{ allowOrigins: [\"*\"], allowMethods: [\"*\"], allowHeaders: [\"*\"] }")
            + &route(
                "echo",
                "{ allowOrigins: [\"*\"], allowMethods: [\"*\"], allowHeaders: [\"*\"], allowCredentials: true }",
            )),
    );
    cfg
}

async fn send(gw: &Gateway, method: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{}/x", gw.http))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    HttpClient::http1()
        .send(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The fetch standard's CORS check.
fn cors_check(h: &HeaderMap, origin: &str, credentials: bool) -> bool {
    match get(h, "access-control-allow-origin") {
        None => false,
        Some("*") if !credentials => true,
        Some("*") => false,
        Some(o) if o != origin => false,
        Some(_) => !credentials || get(h, "access-control-allow-credentials") == Some("true"),
    }
}

/// Whether a browser would go on with the actual request after this preflight answer.
fn preflight_passes(
    r: &Reply,
    origin: &str,
    method: &str,
    headers: &[&str],
    credentials: bool,
) -> bool {
    let list = |name| -> Vec<String> {
        get(&r.headers, name)
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let methods = list("access-control-allow-methods");
    let allowed_headers = list("access-control-allow-headers");
    let star = |l: &[String]| !credentials && l.iter().any(|m| m == "*");
    let method_ok = ["GET", "HEAD", "POST"].contains(&method)
        || methods.iter().any(|m| m == &method.to_ascii_lowercase())
        || star(&methods);
    let headers_ok = headers
        .iter()
        .all(|h| allowed_headers.contains(&h.to_ascii_lowercase()) || star(&allowed_headers));
    r.status.is_success() && cors_check(&r.headers, origin, credentials) && method_ok && headers_ok
}

async fn preflight(gw: &Gateway, host: &str, origin: &str, method: &str, headers: &str) -> Reply {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if !headers.is_empty() {
        h.push(("access-control-request-headers", headers));
    }
    send(gw, "OPTIONS", host, &h).await
}

/// Listed origins (exact and wildcard), methods and headers with credentials: the gateway
/// answers preflights itself, and only what is listed passes a browser's checks.
#[tokio::test]
async fn preflights_are_answered_by_the_gateway_and_pass_only_for_what_is_listed() {
    let up = Upstream::start("up").await;
    let cfg = cors_config(&up);
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let app = "https://app.example.com";

    let r = preflight(&gw, "strict", app, "PUT", "x-api-key,content-type").await;
    assert_eq!(r.status, 204);
    assert!(
        preflight_passes(&r, app, "PUT", &["x-api-key", "content-type"], true),
        "{:?}",
        r.headers
    );
    assert_eq!(get(&r.headers, "access-control-max-age"), Some("600"));
    assert!(get(&r.headers, "vary").unwrap().contains("Origin"));

    let r = preflight(&gw, "strict", app, "DELETE", "").await;
    assert!(
        !preflight_passes(&r, app, "DELETE", &[], true),
        "DELETE is not listed"
    );
    let r = preflight(&gw, "strict", app, "PUT", "x-other").await;
    assert!(
        !preflight_passes(&r, app, "PUT", &["x-other"], true),
        "x-other is not listed"
    );

    let sub = "https://a.b.example.org";
    let r = preflight(&gw, "strict", sub, "GET", "x-api-key").await;
    assert!(
        preflight_passes(&r, sub, "GET", &["x-api-key"], true),
        "wildcard subdomains"
    );
    for evil in [
        "https://example.org",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        let r = preflight(&gw, "strict", evil, "GET", "").await;
        assert_eq!(r.status, 204);
        assert!(!preflight_passes(&r, evil, "GET", &[], true), "{evil}");
        assert!(
            get(&r.headers, "access-control-allow-origin").is_none(),
            "{evil}"
        );
    }
    assert_eq!(up.hits(), 0, "preflights never reach the upstream");
    let preflights = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/strict"),
            ("mechanism", "cors"),
            ("result", "preflight"),
        ],
    )
    .await;
    assert_eq!(preflights, Some(4.0));
    let unknown = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/strict"),
            ("mechanism", "cors"),
            ("result", "unknown_origin"),
        ],
    )
    .await;
    assert_eq!(unknown, Some(4.0));
}

/// Actual requests reach the upstream; the answer carries the CORS headers for an allowed
/// origin only, and `Vary: Origin` either way (a cache must not mix them up).
#[tokio::test]
async fn actual_requests_get_cors_headers_for_allowed_origins_only() {
    let up = Upstream::start("up").await;
    let cfg = cors_config(&up);
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let app = "https://app.example.com";

    let r = send(&gw, "GET", "strict", &[("origin", app)]).await;
    assert_eq!(r.status, 200);
    assert!(cors_check(&r.headers, app, true), "{:?}", r.headers);
    assert_eq!(
        get(&r.headers, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));

    let r = send(&gw, "GET", "strict", &[("origin", "https://evil.test")]).await;
    assert_eq!(
        r.status, 200,
        "CORS does not refuse: the browser hides the answer"
    );
    assert!(!cors_check(&r.headers, "https://evil.test", false));
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));

    let r = send(&gw, "GET", "strict", &[]).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    // OPTIONS without Access-Control-Request-Method is not a preflight: the upstream answers.
    let before = up.hits();
    let r = send(&gw, "OPTIONS", "strict", &[("origin", app)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), before + 1);
}

/// `*` without credentials is answered as `*`; with credentials `*` cannot be a wildcard, so
/// the gateway echoes the origin, the method and the headers asked for.
#[tokio::test]
async fn wildcards_follow_the_credentials_rules_of_the_fetch_standard() {
    let up = Upstream::start("up").await;
    let cfg = cors_config(&up);
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let o = "https://anyone.test";

    let r = preflight(&gw, "open", o, "PATCH", "x-custom").await;
    assert_eq!(get(&r.headers, "access-control-allow-origin"), Some("*"));
    assert!(preflight_passes(&r, o, "PATCH", &["x-custom"], false));
    assert!(
        !preflight_passes(&r, o, "PATCH", &["x-custom"], true),
        "* is not for credentials"
    );

    let r = preflight(&gw, "echo", o, "PATCH", "x-custom").await;
    assert_eq!(get(&r.headers, "access-control-allow-origin"), Some(o));
    assert_eq!(
        get(&r.headers, "access-control-allow-methods"),
        Some("PATCH")
    );
    assert_eq!(
        get(&r.headers, "access-control-allow-headers"),
        Some("x-custom")
    );
    assert!(
        preflight_passes(&r, o, "PATCH", &["x-custom"], true),
        "{:?}",
        r.headers
    );

    let r = send(&gw, "GET", "open", &[("origin", o)]).await;
    assert!(cors_check(&r.headers, o, false));
    let r = send(&gw, "GET", "echo", &[("origin", o)]).await;
    assert!(cors_check(&r.headers, o, true));
}
