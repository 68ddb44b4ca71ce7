//! The real binary, started as a user would: validate, crds, run + readiness, SIGHUP, SIGTERM drain.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{BIN, Binary};
use common::{ConfigDir, HttpClient, Upstream, backend_yaml, eventually};
use http::StatusCode;

fn route(name: &str, path: &str, backend: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  rules:\n    - matches: [{{ path: {{ value: {path} }} }}]\n      backendRefs: [{{ name: {backend} }}]\n"
    )
}

#[test]
fn validate_prints_one_line_per_problem_and_exits_1_on_rejection() {
    let cfg = ConfigDir::new();
    cfg.write(
        "ok.yaml",
        &(backend_yaml("a", &["127.0.0.1:9".parse().unwrap()]) + &route("good", "/", "a")),
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    // A reference that does not resolve is a warning that says what happens; nothing is rejected.
    cfg.write("bad.yaml", &route("dangling", "/b", "nope"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let dangling = "Route default/dangling: spec.rules[0].backendRefs[0].name: Backend default/nope not found (and Service references are not supported yet): the rule answers 500 [warning] (bad.yaml)";
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [dangling]
    );

    cfg.write("bad.yaml", &(route("dangling", "/b", "nope") + "---\n" + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: typo, namespace: shop }\nspec: { rulez: [] }\n"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            dangling,
            "Route shop/typo: spec.rulez: unknown field `rulez`, expected one of `ingressClassName`, `protocol`, `hostnames`, `tls`, `port`, `rules`, `backendRefs`, `udp`, `tcp` (bad.yaml)",
        ]
    );

    let out = Command::new(BIN)
        .args(["validate", "--config", "/nonexistent/tidegate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tidegate"));
}

/// A manifest set as `helm template` prints it: our objects next to Services, EndpointSlices,
/// Ingresses, IngressClasses, Secrets, and kinds Tidegate does not read.
const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{name: http, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: tidegate}
spec: {controller: tidegate.dev/ingress-controller}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: "", tls.key: ""}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  ingressClassName: tidegate
  tls: [{hosts: [shop.example.com], secretName: shop-cert}]
  rules:
  - host: shop.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}]
---
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: {name: api, namespace: shop}
spec: {service: {name: api, port: http}}
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: {name: shop, namespace: shop}
spec:
  hostnames: [api.example.com]
  rules: [{backendRefs: [{name: api}, {name: api, kind: Service, port: 80}]}]
"#;

fn validate(dir: &std::path::Path, extra: &[&str]) -> (Option<i32>, Vec<String>, String) {
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code(),
        stdout.lines().map(str::to_owned).collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_kubernetes_reads_a_whole_manifest_set() {
    let cfg = ConfigDir::new();
    // A real certificate for the Ingress's TLS host (TLS terminates in both modes).
    let leaf = common::tls::Ca::new().leaf("shop", &["shop.example.com"]);
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let data = format!(
        "data: {{tls.crt: {}, tls.key: {}}}",
        b64(&leaf.cert),
        b64(&leaf.key)
    );
    cfg.write(
        "all.yaml",
        &MANIFESTS.replace(r#"data: {tls.crt: "", tls.key: ""}"#, &data),
    );
    let (code, lines, stderr) = validate(cfg.path(), &["--kubernetes"]);
    assert_eq!(code, Some(0), "{lines:#?}\n{stderr}");
    assert_eq!(
        lines,
        [
            "all.yaml: documents[0].kind: \"Namespace\" (v1) is not read by Tidegate [ignored]",
            "all.yaml: documents[1].kind: \"Deployment\" (apps/v1) is not read by Tidegate [ignored]",
        ]
    );
    assert!(
        stderr.contains("1 Route(s), 1 Backend(s), 0 RateLimitPolicy(s), 1 Service(s), 1 EndpointSlice(s), 1 Ingress(s), 1 IngressClass(s), 1 Secret(s) read, 2 other document(s) ignored; 2 rule(s) compiled; 0 object(s) or file(s) rejected"),
        "{stderr}"
    );

    // Without the flag: the Kubernetes objects switch it on, and it says so.
    let (code, auto, stderr) = validate(cfg.path(), &[]);
    assert_eq!((code, &auto), (Some(0), &lines));
    assert!(
        stderr.contains("validating as in a cluster (--kubernetes)"),
        "{stderr}"
    );

    // What the controller would refuse or warn about in the cluster is said here, naming object
    // and file: a reference to a Service the manifests lack (a warning: the rule answers 500), a
    // Service port that does not exist, a malformed Service.
    cfg.write(
        "more.yaml",
        r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: {name: typo, namespace: shop}
spec: {rules: [{backendRefs: [{name: apii, kind: Service}]}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: port, namespace: shop}
spec:
  ingressClassName: tidegate
  defaultBackend: {service: {name: api, port: {name: grpc}}}
---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: shop}
spec: {ports: [{port: http}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: snippet
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/configuration-snippet: 'more_set_headers "x: y";'
    nginx.ingress.kubernetes.io/auth-cache-key: $remote_user
    nginx.ingress.kubernetes.io/ssl-redirct: "false"
spec:
  ingressClassName: tidegate
  defaultBackend: {service: {name: api, port: {number: 80}}}
"#,
    );
    let (code, lines, _) = validate(cfg.path(), &["--kubernetes"]);
    // ingress-nginx annotations: a snippet is refused, one not implemented yet rejects the
    // Ingress, an unknown one is a warning.
    for expected in [
        "Ingress shop/snippet: metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]: refused: Tidegate never runs configuration text",
        "Ingress shop/snippet: metadata.annotations[nginx.ingress.kubernetes.io/auth-cache-key]: not supported yet: the ingress-nginx annotation auth-cache-key",
        "Ingress shop/snippet: metadata.annotations[nginx.ingress.kubernetes.io/ssl-redirct]: unknown annotation nginx.ingress.kubernetes.io/ssl-redirct: it has no effect [warning]",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "missing {expected:?} in {lines:#?}"
        );
    }
    assert_eq!(code, Some(1), "{lines:#?}");
    for expected in [
        "Route shop/typo: spec.rules[0].backendRefs[0].name: Service shop/apii not found: the rule answers 500 [warning] (more.yaml)",
        "Ingress shop/port: spec.defaultBackend.service.port: Service shop/api has no port grpc (more.yaml)",
        "Service shop/broken: spec.ports[0].port: invalid type: string \"http\", expected i32 (more.yaml)",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "missing {expected:?} in {lines:#?}"
        );
    }

    // Standalone files (no flag, no Kubernetes objects) still refuse unknown kinds.
    let plain = ConfigDir::new();
    plain.write(
        "x.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\n",
    );
    let (code, lines, _) = validate(plain.path(), &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [
            "x.yaml: documents[0].kind: \"Deployment\" is not a kind Tidegate reads (Route, Backend, RateLimitPolicy, Secret, ConfigMap)"
        ]
    );
}

#[test]
fn crds_in_the_repo_are_what_the_binary_prints() {
    let out = Command::new(BIN).arg("crds").output().unwrap();
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string("crds/tidegate.dev.yaml").unwrap();
    assert!(
        checked_in == String::from_utf8_lossy(&out.stdout),
        "crds/tidegate.dev.yaml is stale: run `tidegate crds > crds/tidegate.dev.yaml` (just crds)"
    );
    for kind in ["kind: Route", "kind: Backend", "kind: RateLimitPolicy"] {
        assert!(checked_in.contains(kind), "{kind} missing");
    }
    assert!(checked_in.contains("x-kubernetes-validations"));
}

#[test]
fn crds_without_cel_keep_the_openapi_constraints_for_old_clusters() {
    let out = Command::new(BIN)
        .args(["crds", "--without-cel"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("x-kubernetes-validations"), "{text}");
    assert!(
        text.contains("maxItems: 16") && text.contains("pattern:"),
        "{text}"
    );
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 3);
}

#[tokio::test]
async fn readiness_config_and_sighup_reload() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("r", "/", "up")),
    );
    let gw = Binary::start(cfg.path(), &[]);
    let c = HttpClient::http1();
    let ready = c.get(gw.admin, "admin", "/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        c.get(gw.admin, "admin", "/healthz", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(gw.http, "any.test", "/x", &[]).await.echo().upstream,
        "up"
    );

    let config: serde_json::Value =
        serde_json::from_str(&c.get(gw.admin, "admin", "/config", &[]).await.body).unwrap();
    assert_eq!(config["version"], 1);
    assert_eq!(config["rules"][0]["label"], "default/r");
    assert_eq!(
        config["backends"][0]["endpoints"][0]["address"],
        up.addr.to_string()
    );

    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config: serde_json::Value =
            serde_json::from_str(&c.get(gw.admin, "admin", "/config", &[]).await.body).unwrap();
        if config["version"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight_then_exits_0() {
    let up = Upstream::start("slow").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("slow", &[up.addr]) + &route("r", "/", "slow")),
    );
    let mut gw = Binary::start(cfg.path(), &["--drain-timeout", "10s"]);
    let c = HttpClient::http1();
    let at = gw.http;
    let in_flight =
        tokio::spawn(async move { c.get(at, "h", "/", &[("x-delay-ms", "1500")]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: no new connections are accepted.
    assert!(
        tokio::net::TcpStream::connect(at).await.is_err(),
        "the listener is closed while draining"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request completes"
    );
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Waits until the gateway's `/readyz` answers 503 and returns its body.
async fn wait_unready(admin: SocketAddr) -> String {
    eventually(Duration::from_secs(2), "/readyz 503", || async {
        let r = HttpClient::http1()
            .get(admin, "admin", "/readyz", &[])
            .await;
        (r.status == StatusCode::SERVICE_UNAVAILABLE).then_some(r.body)
    })
    .await
}

#[tokio::test]
async fn shutdown_delay_turns_readiness_off_and_keeps_serving_before_the_drain() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("r", "/", "up")),
    );
    let delay = Duration::from_secs(2);
    let mut gw = Binary::start(
        cfg.path(),
        &["--shutdown-delay", "2s", "--drain-timeout", "5s"],
    );
    let c = HttpClient::http1();
    assert_eq!(
        c.get(gw.admin, "admin", "/readyz", &[]).await.status,
        StatusCode::OK
    );
    let signalled = Instant::now();
    gw.signal("TERM");
    assert_eq!(wait_unready(gw.admin).await, "not ready: shutting down\n");
    // Still accepting: a new connection is served during the delay.
    let fresh = HttpClient::http1().get(gw.http, "h", "/", &[]).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.echo().upstream, "up");
    assert!(
        signalled.elapsed() < delay,
        "served during the delay ({:?})",
        signalled.elapsed()
    );
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= delay,
        "exited before the delay was over ({:?})",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_second_sigterm_cuts_the_shutdown_delay_short() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("r", "/", "up")),
    );
    let mut gw = Binary::start(cfg.path(), &["--shutdown-delay", "60s"]);
    gw.signal("TERM");
    wait_unready(gw.admin).await;
    gw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let up = Upstream::start("stuck").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("stuck", &[up.addr]) + &route("r", "/", "stuck")),
    );
    let mut gw = Binary::start(cfg.path(), &["--drain-timeout", "500ms"]);
    let at = gw.http;
    let _stuck = tokio::spawn(async move {
        HttpClient::http1()
            .get(at, "h", "/", &[("x-delay-ms", "30000")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_access_log_goes_to_stdout_as_json_lines() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("r", "/", "up")),
    );
    let gw = Binary::run(cfg.path()).access_log().start();
    let c = HttpClient::http1();
    c.get(gw.http, "a.test", "/one?secret=1", &[]).await;
    c.get(
        gw.http,
        "b.test",
        "/two",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    let lines = eventually(Duration::from_secs(5), "two access-log lines", || async {
        let lines = gw.access_log();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let (one, two) = (&lines[0], &lines[1]);
    assert_eq!(
        (
            one["host"].as_str(),
            one["path"].as_str(),
            one["status"].as_u64()
        ),
        (Some("a.test"), Some("/one"), Some(200))
    );
    assert_eq!(one["route"], "default/r");
    assert_eq!(two["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

/// `validate` checks a Backend's `spec.dns` by its shape and looks nothing up: a name that
/// does not exist passes, a missing port is named.
#[test]
fn validate_checks_dns_backends_by_shape_only() {
    let cfg = ConfigDir::new();
    let dns_backend = |name: &str, dns: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  dns: {dns}\n---\n"
        )
    };
    cfg.write(
        "ok.yaml",
        &(dns_backend("api", "{ name: no-such-name.invalid, type: A, port: 80 }")
            + &dns_backend("srv", "{ name: _api._tcp.service.consul, type: SRV }")
            + &route("good", "/", "api")),
    );
    let (code, lines, stderr) = validate(cfg.path(), &[]);
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert!(lines.is_empty(), "{lines:?}");

    cfg.write(
        "bad.yaml",
        &dns_backend("noport", "{ name: api.internal, type: AAAA }"),
    );
    let (code, lines, _) = validate(cfg.path(), &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        ["Backend default/noport: spec.dns.port: AAAA records need a port (bad.yaml)"]
    );
}
