//! Routing through real sockets: a gateway from the library API, echo upstreams, a real client.

mod common;

use common::{ConfigDir, HttpClient, Upstream, backend_yaml, gateway, route_yaml};
use http::StatusCode;

const ROUTES: &str = r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: shop }
spec:
  hostnames: ["shop.example.com"]
  rules:
    - name: api
      matches: [{ path: { type: PathPrefix, value: /api } }]
      backendRefs: [{ name: api }]
    - name: exact
      matches: [{ path: { type: Exact, value: /api/special } }]
      backendRefs: [{ name: web }]
    - name: post
      matches: [{ path: { value: /orders }, method: POST }]
      backendRefs: [{ name: api }]
    - name: header
      matches: [{ headers: [{ name: x-version, value: v2 }] }]
      backendRefs: [{ name: api }]
    - name: query
      matches: [{ queryParams: [{ name: debug, value: "on now" }] }]
      backendRefs: [{ name: api }]
    - name: public
      matches: [{ path: { value: /public } }]
      backendRefs: [{ name: api }]
    - backendRefs: [{ name: web }]
---
# Prefix beats regex (API.md precedence), so a regex rule only wins where no prefix rule, not
# even a catch-all "/", matches: here, on a host of its own.
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: regex }
spec:
  hostnames: ["regex.test"]
  rules:
    - matches: [{ path: { type: RegularExpression, value: "/v[0-9]+/items" } }]
      backendRefs: [{ name: api }]
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: wildcard }
spec:
  hostnames: ["*.example.com"]
  rules:
    - backendRefs: [{ name: api }]
"#;

#[tokio::test]
async fn routes_by_host_path_method_header_and_query() {
    let (web, api) = (Upstream::start("web").await, Upstream::start("api").await);
    let cfg = ConfigDir::new();
    cfg.write(
        "backends.yaml",
        &(backend_yaml("web", &[web.addr]) + &backend_yaml("api", &[api.addr])),
    );
    cfg.write("routes.yaml", ROUTES);
    let gw = gateway(cfg.path()).await;
    let c = HttpClient::http1();
    let at = gw.http_addr();
    let upstream = |r: common::Reply| {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.echo().upstream
    };

    // (host, path, headers, the upstream that answers, why)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("shop.example.com",      "/",                &[],                    "web", "prefix /"),
        ("shop.example.com",      "/api",             &[],                    "api", "prefix /api"),
        ("shop.example.com",      "/api/users",       &[],                    "api", "under /api"),
        ("shop.example.com",      "/apix",            &[],                    "web", "prefix is segment-aware"),
        ("shop.example.com",      "/api/special",     &[],                    "web", "exact beats prefix"),
        ("regex.test",            "/v2/items",        &[],                    "api", "regex"),
        ("shop.example.com",      "/orders",          &[],                    "web", "GET is not POST"),
        ("shop.example.com",      "/",                &[("x-version", "v2")], "api", "header match"),
        ("shop.example.com",      "/",                &[("x-version", "v3")], "web", "header mismatch"),
        ("shop.example.com",      "/?debug=on%20now", &[],                    "api", "query match"),
        ("SHOP.example.com:8080", "/api",             &[],                    "api", "host is case- and port-blind"),
        ("blog.example.com",      "/",                &[],                    "api", "wildcard host"),
    ];
    for &(host, path, headers, want, why) in cases {
        let r = c.get(at, host, path, headers).await;
        assert_eq!(r.status, StatusCode::OK, "{host}{path}: {}", r.body);
        assert_eq!(r.echo().upstream, want, "{host}{path}: {why}");
    }
    assert_eq!(
        c.get(at, "regex.test", "/v2/items/x", &[]).await.status,
        StatusCode::NOT_FOUND,
        "regex is anchored"
    );
    let post = http::Request::post(format!("http://{at}/orders"))
        .header("host", "shop.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(upstream(c.send(post).await.unwrap()), "api");

    let unknown = c.get(at, "unknown.test", "/", &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("no route"), "{}", unknown.body);

    // Dot segments are resolved before matching, and the upstream sees the resolved path.
    let r = c.get(at, "shop.example.com", "/public/../api/x", &[]).await;
    assert_eq!(r.echo().upstream, "api");
    assert_eq!(r.echo().uri, "/api/x");
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn rewrites_redirects_and_direct_responses() {
    let web = Upstream::start("web").await;
    let cfg = ConfigDir::new();
    cfg.write("backends.yaml", &backend_yaml("web", &[web.addr]));
    cfg.write(
        "routes.yaml",
        r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: r }
spec:
  rules:
    - matches: [{ path: { value: /api } }]
      filters:
        - urlRewrite: { path: { replacePrefixMatch: /v2 }, hostname: internal.example.com }
        - requestHeaderModifier: { set: [{ name: x-env, value: prod }], add: [{ name: x-tag, value: b }], remove: [x-debug] }
        - responseHeaderModifier: { remove: [server], set: [{ name: x-served-by, value: tidegate }] }
      backendRefs: [{ name: web }]
    - matches: [{ path: { value: /strip } }]
      filters: [{ urlRewrite: { path: { replacePrefixMatch: / } } }]
      backendRefs: [{ name: web }]
    - matches: [{ path: { type: Exact, value: /login } }]
      filters: [{ urlRewrite: { path: { replaceFullPath: /auth/login } } }]
      backendRefs: [{ name: web }]
    - matches:
        - path: { type: RegularExpression, value: "/shop/(?P<item>[a-z]+)/([0-9]+)(/.*)?" }
        - path: { type: RegularExpression, value: "/store/(?P<item>[a-z]+)/([0-9]+)(/.*)?" }
      filters: [{ urlRewrite: { path: { replaceRegexMatch: "/items/${item}/v$2$3" } } }]
      backendRefs: [{ name: web }]
    - matches: [{ path: { type: RegularExpression, value: "/find/(.*)" } }]
      filters: [{ urlRewrite: { path: { replaceRegexMatch: "/search?q=$1" } } }]
      backendRefs: [{ name: web }]
    - matches: [{ path: { type: RegularExpression, value: "/only/(.*)" } }]
      filters: [{ urlRewrite: { path: { replaceRegexMatch: "/search?q=$1?" } } }]
      backendRefs: [{ name: web }]
    - matches: [{ path: { type: RegularExpression, value: "/archive/([0-9]{4})/(.*)" } }]
      filters: [{ requestRedirect: { path: { replaceRegexMatch: "/years/$1/$2" }, statusCode: 301 } }]
    - matches: [{ path: { value: /old } }]
      filters: [{ requestRedirect: { scheme: https, hostname: new.example.com, path: { replacePrefixMatch: /new }, statusCode: 301 } }]
    - matches: [{ path: { type: Exact, value: /moved } }]
      filters: [{ requestRedirect: { port: 8443 } }]
    - matches: [{ path: { type: Exact, value: /elsewhere } }]
      filters: [{ requestRedirect: { hostname: other.example.com } }]
    - matches: [{ path: { type: Exact, value: /secure } }]
      filters: [{ requestRedirect: { scheme: https } }]
    - matches: [{ path: { type: Exact, value: /maintenance } }]
      filters:
        - directResponse: { status: 503, body: "down for maintenance" }
        - responseHeaderModifier: { set: [{ name: retry-after, value: "120" }] }
"#,
    );
    let gw = gateway(cfg.path()).await;
    let c = HttpClient::http1();
    let at = gw.http_addr();

    let r = c
        .get(
            at,
            "shop.test",
            "/api/users?page=2",
            &[("x-debug", "1"), ("x-tag", "a")],
        )
        .await;
    let e = r.echo();
    assert_eq!(e.uri, "/v2/users?page=2");
    assert_eq!(e.header("host"), Some("internal.example.com"));
    assert_eq!(e.header("x-forwarded-host"), Some("shop.test"));
    assert_eq!(e.header("x-env"), Some("prod"));
    assert_eq!(e.headers["x-tag"], vec!["a", "b"]);
    assert_eq!(e.header("x-debug"), None);
    assert_eq!(r.headers.get("server"), None);
    assert_eq!(r.headers["x-served-by"], "tidegate");

    assert_eq!(c.get(at, "h", "/strip/a/b", &[]).await.echo().uri, "/a/b");
    assert_eq!(c.get(at, "h", "/strip", &[]).await.echo().uri, "/");
    assert_eq!(
        c.get(at, "h", "/login?next=/x", &[]).await.echo().uri,
        "/auth/login?next=/x"
    );

    // replaceRegexMatch: the matching pattern's groups (an unmatched group is empty); the
    // query is kept.
    for (path, sent) in [
        ("/shop/hat/42/red?x=1", "/items/hat/v42/red?x=1"),
        ("/store/cap/7", "/items/cap/v7"),
        // A query in the template, then the request's (nginx's rewrite), unless it ends with ?.
        ("/find/hat?page=2", "/search?q=hat&page=2"),
        ("/find/hat", "/search?q=hat"),
        ("/only/hat?page=2", "/search?q=hat"),
    ] {
        assert_eq!(c.get(at, "h", path, &[]).await.echo().uri, sent);
    }
    let r = c.get(at, "h", "/archive/2024/a/b?q=1", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.headers["location"],
        format!("http://h:{}/years/2024/a/b?q=1", at.port()).as_str()
    );

    let r = c.get(at, "shop.test:8080", "/old/page?q=1", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.headers["location"],
        "https://new.example.com/new/page?q=1"
    );
    let r = c.get(at, "shop.test:8080", "/moved", &[]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "http://shop.test:8443/moved");
    // Neither scheme nor port: the port clients reached the listener on, whatever the Host
    // header says (Gateway API); with a scheme, its well-known port.
    let listener = at.port();
    for host in ["shop.test", "shop.test:8080"] {
        let r = c.get(at, host, "/elsewhere", &[]).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            r.headers["location"],
            format!("http://other.example.com:{listener}/elsewhere").as_str()
        );
        let r = c.get(at, host, "/secure", &[]).await;
        assert_eq!(r.headers["location"], "https://shop.test/secure");
    }

    let r = c.get(at, "h", "/maintenance", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, "down for maintenance");
    assert_eq!(r.headers["retry-after"], "120");
    assert_eq!(
        web.hits(),
        9,
        "redirects and direct responses never reach the upstream"
    );
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn weighted_split_is_within_three_percent_over_2000_requests() {
    let (a, b, c3) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("a", &[a.addr])
            + &backend_yaml("b", &[b.addr])
            + &backend_yaml("c", &[c3.addr])
            + r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: split }
spec:
  rules:
    - backendRefs: [{ name: a, weight: 90 }, { name: b, weight: 10 }]
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: three }
spec:
  hostnames: [three.test]
  rules:
    - backendRefs: [{ name: a, weight: 50 }, { name: b, weight: 30 }, { name: c, weight: 20 }]
"#),
    );
    let gw = gateway(cfg.path()).await;
    let client = HttpClient::http1();
    let at = gw.http_addr();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let r = client.get(at, "split.test", "/", &[]).await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let share_a = a.hits() as f64 / 2000.0;
    assert!((share_a - 0.90).abs() <= 0.03, "a got {share_a}");
    assert_eq!(a.hits() + b.hits(), 2000);

    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..2000 {
        client.get(at, "three.test", "/", &[]).await;
    }
    let shares = [(a.hits() - a0), (b.hits() - b0), c3.hits()].map(|n| n as f64 / 2000.0);
    for (got, want) in shares.iter().zip([0.5, 0.3, 0.2]) {
        assert!((got - want).abs() <= 0.03, "shares {shares:?}");
    }
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn forwarding_headers_request_ids_and_hop_by_hop() {
    let web = Upstream::start("web").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("web", &[web.addr])
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: r }\nspec:\n  rules:\n    - backendRefs: [{ name: web }]\n"),
    );
    let gw = gateway(cfg.path()).await;
    let c = HttpClient::http1();
    let at = gw.http_addr();

    // The upstream gets the client's Host even when `Connection` lists it (header filters
    // cannot touch it: the compiler refuses them).
    let r = c
        .get(at, "shop.test", "/", &[("connection", "host, x-a")])
        .await;
    assert_eq!(r.echo().header("host"), Some("shop.test"));

    let r = c
        .get(
            at,
            "shop.test",
            "/",
            &[
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-port", "1"),
            ],
        )
        .await;
    let e = r.echo();
    assert_eq!(e.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(e.header("x-forwarded-proto"), Some("http"));
    // The port the client reached (the bound port here), never what the client sent.
    let port = at.port().to_string();
    assert_eq!(e.header("x-forwarded-port"), Some(port.as_str()));
    assert_eq!(e.header("x-forwarded-host"), Some("shop.test"));
    assert_eq!(e.header("host"), Some("shop.test"));
    assert_eq!(
        e.header("x-secret"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    let id = e
        .header("x-request-id")
        .expect("a request id is generated")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(
        r.headers["x-request-id"],
        id.as_str(),
        "and returned to the client"
    );
    assert!(
        r.headers.get("keep-alive").is_none(),
        "hop-by-hop response headers are removed"
    );
    assert_eq!(e.version, "HTTP/1.1");

    let r = c
        .get(
            at,
            "shop.test",
            "/",
            &[("x-request-id", "client-chosen-id")],
        )
        .await;
    assert_eq!(r.echo().header("x-request-id"), Some("client-chosen-id"));
    assert_eq!(r.headers["x-request-id"], "client-chosen-id");
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A request without an id is given one, sent upstream once and to the client the same: beside
/// the request's map when no step reads the map whole, in it when one does (a header filter,
/// whose `remove` still removes it); over HTTP/2 (hyper's server) as over the native one.
#[tokio::test]
async fn a_generated_request_id_reaches_the_upstream_once() {
    let web = Upstream::start("web").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("web", &[web.addr])
            + r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: r }
spec:
  rules:
    - matches: [{ path: { value: /filtered } }]
      filters:
        - requestHeaderModifier: { add: [{ name: x-tag, value: b }] }
      backendRefs: [{ name: web }]
    - matches: [{ path: { value: /removed } }]
      filters:
        - requestHeaderModifier: { remove: [x-request-id] }
      backendRefs: [{ name: web }]
    - backendRefs: [{ name: web }]
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: limited }
spec:
  hostnames: [limited.test]
  rules:
    - backendRefs: [{ name: web }]
---
apiVersion: tidegate.dev/v1alpha1
kind: RateLimitPolicy
metadata: { name: p }
spec:
  targetRef: { kind: Route, name: limited }
  limits:
    - { name: all, key: { none: {} }, rate: 1000, per: 1s }
"#),
    );
    let gw = gateway(cfg.path()).await;
    let at = gw.http_addr();
    for client in [HttpClient::http1(), HttpClient::h2c()] {
        // A rate limit reads the map whole: the id is put in it before the request goes on.
        for (host, path) in [
            ("shop.test", "/"),
            ("shop.test", "/filtered"),
            ("limited.test", "/"),
        ] {
            let r = client.get(at, host, path, &[]).await;
            let sent = r.echo().headers.get("x-request-id").cloned();
            let sent = sent.unwrap_or_default();
            assert_eq!(sent.len(), 1, "{host}{path}: one id upstream: {sent:?}");
            assert_eq!(sent[0].len(), 32);
            assert_eq!(r.headers["x-request-id"], sent[0].as_str(), "{host}{path}");
            // Without a traceparent either, the trace started has the id as its trace id.
            assert_eq!(trace_id(&r), sent[0], "{host}{path}");
        }
        let r = client.get(at, "shop.test", "/removed", &[]).await;
        assert_eq!(r.echo().header("x-request-id"), None);
        assert_eq!(
            r.headers["x-request-id"].len(),
            32,
            "the client still gets it"
        );
        assert_eq!(trace_id(&r), r.headers["x-request-id"]);
        let r = client
            .get(at, "shop.test", "/", &[("x-request-id", "mine")])
            .await;
        assert_eq!(r.echo().headers["x-request-id"], ["mine"]);
        assert_eq!(r.headers["x-request-id"], "mine");
        // The client's id is not a trace id: a new one is started.
        let started = trace_id(&r);
        assert!(
            started
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(started.len(), 32);
        // A client's trace goes on, whatever the request id.
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let r = client
            .get(at, "shop.test", "/", &[("traceparent", given)])
            .await;
        assert_eq!(trace_id(&r), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            r.headers["x-request-id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Over HTTP/2 the id the gateway made goes to the client as a "never indexed" HPACK literal:
/// each is unique to its response, so putting it in the connection's header table would only
/// evict entries that repeat (and cost a hash and an insert per response). Python's `h2` and
/// `hpack` read the frames, so the encoding is checked by a decoder other than ours.
#[tokio::test]
async fn a_made_request_id_goes_to_http2_clients_never_indexed() {
    let web = Upstream::start("web").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("web", &[web.addr]) + &route_yaml("r", "/", "web", "")),
    );
    let gw = gateway(cfg.path()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/never_indexed.py");
    let port = gw.http_addr().port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &port])
            .output()
            .expect("python3 runs (scripts/test.sh installs it and the h2 package)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let mut ids = Vec::new();
    for line in lines {
        let [status, how, id] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("unexpected line {line:?}");
        };
        assert_eq!((status, how), ("200", "never-indexed"), "{line}");
        assert_eq!(id.len(), 32, "{line}");
        ids.push(id.to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "a new id per request: {ids:?}");
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

/// The trace id of the `traceparent` the upstream got (exactly one).
fn trace_id(r: &common::Reply) -> String {
    let sent = &r.echo().headers["traceparent"];
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (version, rest) = sent[0].split_once('-').expect("a traceparent");
    assert_eq!(version, "00");
    rest[..32].to_owned()
}

#[tokio::test]
async fn http2_cleartext_clients_and_h2c_backends() {
    let (web, grpc) = (Upstream::start("web").await, Upstream::start("grpc").await);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("web", &[web.addr])
            + &format!(
                "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: grpc }}\nspec:\n  protocol: H2C\n  endpoints: [\"{}\"]\n---\n",
                grpc.addr
            )
            + r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: r }
spec:
  rules:
    - matches: [{ path: { value: /grpc } }]
      backendRefs: [{ name: grpc }]
    - backendRefs: [{ name: web }]
"#),
    );
    let gw = gateway(cfg.path()).await;
    let at = gw.http_addr();
    let h2 = HttpClient::h2c();
    let r = h2.get(at, "ignored", "/x", &[]).await;
    assert_eq!(
        r.version,
        http::Version::HTTP_2,
        "the gateway speaks h2c on the same port"
    );
    assert_eq!(r.echo().version, "HTTP/1.1", "to an HTTP/1 backend");
    assert!(
        r.echo().header("host").is_some(),
        "the upstream gets a Host header from :authority"
    );
    let r = HttpClient::http1()
        .get(at, "h", "/grpc/svc", &[("te", "trailers")])
        .await;
    assert_eq!(r.echo().upstream, "grpc");
    assert_eq!(r.echo().version, "HTTP/2.0", "an H2C backend gets HTTP/2");
    assert_eq!(r.echo().header("te"), Some("trailers"));
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn upstream_failures_become_500_502_503_504() {
    let slow = Upstream::start("slow").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed at once
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("slow", &[slow.addr])
            + &backend_yaml("dead", &[dead])
            + r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: r }
spec:
  rules:
    - matches: [{ path: { value: /dead } }]
      backendRefs: [{ name: dead }]
    - matches: [{ path: { value: /zero } }]
      backendRefs: [{ name: slow, weight: 0 }]
    - matches: [{ path: { value: /unresolved } }]
      backendRefs: [{ name: slow, weight: 1 }, { name: missing, weight: 1 }]
    - matches: [{ path: { value: /none } }]
    - matches: [{ path: { value: /slow } }]
      timeouts: { request: 2s, backendRequest: 500ms }
      backendRefs: [{ name: slow }]
"#),
    );
    let gw = gateway(cfg.path()).await;
    let c = HttpClient::http1();
    let at = gw.http_addr();
    let r = c.get(at, "h", "/dead", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body, "upstream connect error\n");
    let r = c.get(at, "h", "/zero", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Half the split names a Backend that does not exist: those requests get 500.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.get(at, "h", "/unresolved", &[]).await.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 500, 500]);
    let r = c.get(at, "h", "/none", &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body, "this route has no backend configured\n");
    let started = std::time::Instant::now();
    let r = c.get(at, "h", "/slow", &[("x-delay-ms", "2000")]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        c.get(at, "h", "/slow", &[("x-delay-ms", "10")])
            .await
            .status,
        StatusCode::OK
    );
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

/// The gateway's request id replaces an upstream's own, once, on both writers: the native
/// HTTP/1.1 one (the id beside an upstream's raw lines, or in the map when a line names it)
/// and hyper's (HTTP/2, the id put in the map).
#[tokio::test]
async fn the_request_id_is_sent_once_whatever_the_upstream_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream writing fixed heads: with its own x-request-id, and without.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = upstream.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        let own = if head.starts_with("GET /own") {
                            "x-request-id: upstream-id\r\n"
                        } else {
                            ""
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nserver: fixed\r\n{own}content-length: 2\r\n\r\nok"
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("fixed", &[up])
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: r }\nspec:\n  rules:\n    - backendRefs: [{ name: fixed }]\n"),
    );
    let gw = gateway(cfg.path()).await;
    let at = gw.http_addr();
    for client in [HttpClient::http1(), HttpClient::h2c()] {
        for (path, sent) in [
            ("/own", None),
            ("/none", None),
            ("/none", Some("client-id")),
        ] {
            let headers: Vec<(&str, &str)> =
                sent.map(|id| ("x-request-id", id)).into_iter().collect();
            let r = client.get(at, "h", path, &headers).await;
            assert_eq!(r.status, StatusCode::OK);
            let ids: Vec<_> = r.headers.get_all("x-request-id").iter().collect();
            assert_eq!(ids.len(), 1, "{path} over {:?}: {ids:?}", r.version);
            match sent {
                Some(id) => assert_eq!(ids[0], id),
                None => assert_eq!(ids[0].len(), 32, "the gateway's: {:?}", ids[0]),
            }
            assert_eq!(r.headers["server"], "fixed");
        }
    }
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}
