//! `tidegate migrate` through the real binary: Ingress YAML in (stdin or files), Routes and
//! Backends out, the report on stderr; the output is what `validate --kubernetes` accepts.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::ConfigDir;
use common::binary::BIN;

const INGRESSES: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: web
    namespace: shop
    annotations:
      nginx.ingress.kubernetes.io/rewrite-target: /
      nginx.ingress.kubernetes.io/enable-cors: "true"
      nginx.ingress.kubernetes.io/ssl-redirect: "false"
  spec:
    ingressClassName: nginx
    tls: [{hosts: [a.example.com], secretName: a-cert}]
    rules:
    - host: a.example.com
      http:
        paths:
        - {path: /x, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
    - host: b.example.com
      http:
        paths:
        - {path: /y, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: guarded
    namespace: shop
    annotations:
      nginx.ingress.kubernetes.io/auth-cache-key: "$remote_user"
      nginx.ingress.kubernetes.io/server-snippet: "return 200;"
  spec:
    defaultBackend: {service: {name: web, port: {number: 80}}}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: web-canary
    namespace: shop
    annotations:
      nginx.ingress.kubernetes.io/canary: "true"
      nginx.ingress.kubernetes.io/canary-weight: "10"
      nginx.ingress.kubernetes.io/canary-by-header: x-canary
  spec:
    ingressClassName: nginx
    rules:
    - host: a.example.com
      http:
        paths:
        - {path: /x, pathType: Prefix, backend: {service: {name: web-v2, port: {number: 80}}}}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec: {ports: [{name: http, port: 80}]}
"#;

/// Runs `tidegate migrate ARGS` with `stdin`: (exit code, stdout, stderr).
/// `tidegate validate --kubernetes` of `migrated` (what migrate wrote) beside `cluster` (the
/// objects it names), which must pass; what it printed.
fn validate_beside(migrated: &str, cluster: &str) -> String {
    let cfg = ConfigDir::new();
    cfg.write("migrated.yaml", migrated);
    cfg.write("cluster.yaml", cluster);
    let out = Command::new(BIN)
        .args(["validate", "--kubernetes", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{migrated}");
    stdout
}

fn migrate(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .arg("migrate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_writes_routes_and_backends_and_reports_every_annotation() {
    let (code, yaml, report) = migrate(&[], INGRESSES);
    // One Ingress cannot be migrated (an annotation not supported yet, a refused snippet).
    assert_eq!(code, Some(1), "{report}");
    let lines: Vec<&str> = report.lines().collect();
    for expected in [
        "Ingress shop/guarded: not migrated",
        "Ingress shop/web-canary: a canary: its backend is in the Routes written for Ingress web",
        "  nginx.ingress.kubernetes.io/canary-weight: carried",
        "Ingress shop/web: migrated to Route web-0, Route web-1, Backend web-http",
        "  nginx.ingress.kubernetes.io/enable-cors: approximated: Access-Control-Max-Age 1728000 is sent as 86400 (our longest)",
        "  nginx.ingress.kubernetes.io/rewrite-target: carried",
        "  nginx.ingress.kubernetes.io/ssl-redirect: carried",
        "<stdin>: documents[0].items[3]: \"Service\" left out (only Ingresses are migrated)",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in\n{report}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("server-snippet]: refused")),
        "{report}"
    );
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Backend", "Route", "Route"]);
    // The host with tls keeps it (with ssl-redirect "false": no redirect); regex paths.
    let a = &docs[1]["spec"];
    assert_eq!(a["hostnames"][0].as_str(), Some("a.example.com"));
    assert_eq!(a["tls"]["secretName"].as_str(), Some("a-cert"));
    assert_eq!(a["tls"]["httpsRedirect"].as_bool(), Some(false));
    assert_eq!(
        a["rules"][0]["matches"][0]["path"]["value"].as_str(),
        Some("(?i)(?:/x).*")
    );
    // The canary of a.example.com /x: its header first (always, never), then the split.
    let rules = a["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 3, "{yaml}");
    let to = |r: &serde_yaml_ng::Value| {
        r["backendRefs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|b| (b["name"].as_str().unwrap().to_owned(), b["weight"].as_u64()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rules[0]["matches"][0]["headers"][0]["value"].as_str(),
        Some("always")
    );
    assert_eq!(to(&rules[0]), [("web-v2".to_owned(), None)]);
    assert_eq!(to(&rules[1]), [("web-http".to_owned(), None)]);
    assert_eq!(
        to(&rules[2]),
        [
            ("web-http".to_owned(), Some(90)),
            ("web-v2".to_owned(), Some(10))
        ]
    );
    assert_eq!(
        docs[2]["spec"]["rules"][0]["backendRefs"][0]["kind"].as_str(),
        Some("Service")
    );

    // The objects are valid as they are, next to the Service (and the certificate) they name.
    let leaf = common::tls::Ca::new().leaf("a", &["a.example.com"]);
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let stdout = validate_beside(
        &yaml,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web-v2, namespace: shop}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: a-cert, namespace: shop}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64(&leaf.cert),
            b64(&leaf.key)
        ),
    );
    assert!(stdout.is_empty(), "{stdout}");

    // Files instead of stdin (the objects written: no Ingress in them); an unreadable one is
    // exit 2.
    let cfg = ConfigDir::new();
    cfg.write("migrated.yaml", &yaml);
    let (code, from_file, _) = migrate(&[cfg.path().join("migrated.yaml").to_str().unwrap()], "");
    assert_eq!((code, from_file.as_str()), (Some(0), ""));
    let (code, _, err) = migrate(&["/nonexistent/ingress.yaml"], "");
    assert_eq!(code, Some(2), "{err}");
}

/// The auth-url family is written as the extAuth an annotated Ingress compiles to: the URL as
/// written (variables kept), GET, every header, 401/403 passed back, the signin URL with where
/// to come back appended; the report says what differs.
#[test]
fn migrate_writes_auth_url_as_ext_auth() {
    let input = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: dash
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/auth-url: https://$host/oauth2/auth
    nginx.ingress.kubernetes.io/auth-signin: https://$host/oauth2/start
    nginx.ingress.kubernetes.io/auth-response-headers: X-Auth-Request-User
spec:
  ingressClassName: nginx
  rules:
  - host: dash.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let (code, yaml, report) = migrate(&[], input);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("auth-url: approximated: extAuth with appendPath: false"),
        "{report}"
    );
    assert!(report.contains("auth-signin: carried"), "{report}");
    let route: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml_ng::Value| d["kind"] == "Route")
        .unwrap();
    let e = &route["spec"]["rules"][0]["authentication"]["extAuth"];
    assert_eq!(e["url"].as_str(), Some("https://$host/oauth2/auth"));
    assert_eq!(e["appendPath"].as_bool(), Some(false));
    assert_eq!(e["method"].as_str(), Some("GET"));
    assert_eq!(e["forwardAllHeaders"].as_bool(), Some(true));
    assert_eq!(e["denyStatuses"][1].as_u64(), Some(403));
    assert_eq!(
        e["signinUrl"].as_str(),
        Some("https://$host/oauth2/start?rd=$scheme://$http_host$escaped_request_uri")
    );
    assert_eq!(
        e["allowedUpstreamHeaders"][0].as_str(),
        Some("X-Auth-Request-User")
    );
    assert_eq!(e["timeout"].as_str(), Some("1m"));
}

/// `backend-protocol: HTTPS` with `proxy-ssl-*` is written as a Backend with `tls` (unverified
/// as ingress-nginx, `insecureSkipVerify`; or verified with the Secret's CA), and
/// `ssl-passthrough` as a TLS passthrough Route; the report says how, and the objects are
/// valid beside the Service and the Opaque Secret they name.
#[test]
fn migrate_writes_backend_tls_and_ssl_passthrough() {
    let input = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/backend-protocol: GRPCS
    nginx.ingress.kubernetes.io/proxy-ssl-secret: shop/upstream-tls
    nginx.ingress.kubernetes.io/proxy-ssl-verify: "on"
    nginx.ingress.kubernetes.io/proxy-ssl-name: api.internal
spec:
  rules:
  - host: api.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 443}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/backend-protocol: HTTPS
spec:
  rules:
  - host: legacy.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {name: https}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: db
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/ssl-passthrough: "true"
spec:
  rules:
  - host: db.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {name: https}}}}
"#;
    let (code, yaml, report) = migrate(&[], input);
    assert_eq!(code, Some(0), "{report}");
    for line in [
        "  nginx.ingress.kubernetes.io/backend-protocol: approximated: HTTP/2 over TLS to the backend",
        "  nginx.ingress.kubernetes.io/proxy-ssl-verify: carried",
        "  nginx.ingress.kubernetes.io/proxy-ssl-name: carried",
        "  nginx.ingress.kubernetes.io/ssl-passthrough: approximated: a Route with protocol: TLS on the HTTPS listener for the Ingress's hosts, to the Service of each host's / path (else defaultBackend); plain HTTP for those hosts is not served by this Ingress (ingress-nginx serves its paths there too)",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(line)),
            "{line:?} in\n{report}"
        );
    }
    assert!(report.contains("are not verified"), "{report}");
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in\n{yaml}"))
            .clone()
    };
    let b = &named("Backend", "api-443-grpcs")["spec"];
    assert_eq!(b["protocol"].as_str(), Some("HTTP2"));
    assert_eq!(b["tls"]["sni"].as_str(), Some("api.internal"));
    assert_eq!(
        b["tls"]["caSecretRef"]["name"].as_str(),
        Some("upstream-tls")
    );
    assert_eq!(
        b["tls"]["clientCertificateRef"]["name"].as_str(),
        Some("upstream-tls")
    );
    let b = &named("Backend", "api-https-https")["spec"];
    assert_eq!(b["tls"]["insecureSkipVerify"].as_bool(), Some(true));
    let r = &named("Route", "db")["spec"];
    assert_eq!(r["protocol"].as_str(), Some("TLS"));
    assert_eq!(r["hostnames"][0].as_str(), Some("db.example.com"));
    assert_eq!(r["backendRefs"][0]["name"].as_str(), Some("api-https-tcp"));
    assert_eq!(
        named("Backend", "api-https-tcp")["spec"]["protocol"].as_str(),
        Some("TCP")
    );

    // Valid as they are, next to the Service and the (Opaque) Secret.
    let ca = common::tls::Ca::new();
    let client = ca.leaf("gateway", &["gateway.internal"]);
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let stdout = validate_beside(
        &yaml,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: shop}}\nspec: {{ports: [{{name: https, port: 443}}]}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: upstream-tls, namespace: shop}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{}  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&ca.pem()),
            indent(&client.cert),
            indent(&client.key)
        ),
    );
    assert!(stdout.is_empty(), "{stdout}");
}

/// Cookie affinity is written as a Backend with a session cookie; the report says what is
/// carried and what differs from ingress-nginx, and the objects validate.
#[test]
fn migrate_writes_affinity_as_a_backend_session_cookie() {
    let input = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sticky
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/affinity: cookie
    nginx.ingress.kubernetes.io/affinity-mode: balanced
    nginx.ingress.kubernetes.io/session-cookie-name: route
    nginx.ingress.kubernetes.io/session-cookie-expires: "172800"
    nginx.ingress.kubernetes.io/session-cookie-max-age: "172800"
    nginx.ingress.kubernetes.io/session-cookie-samesite: None
    nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none: "true"
    nginx.ingress.kubernetes.io/session-cookie-hash: sha1
spec:
  ingressClassName: nginx
  rules:
  - host: sticky.example.com
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let (code, yaml, report) = migrate(&[], input);
    assert_eq!(code, Some(0), "{report}");
    let lines: Vec<&str> = report.lines().collect();
    for expected in [
        "Ingress shop/sticky: migrated to Route sticky, Backend web-80-sticky-route",
        "  nginx.ingress.kubernetes.io/affinity: carried",
        "  nginx.ingress.kubernetes.io/session-cookie-name: carried",
        "  nginx.ingress.kubernetes.io/session-cookie-max-age: carried",
        "  nginx.ingress.kubernetes.io/session-cookie-expires: carried",
        "  nginx.ingress.kubernetes.io/session-cookie-samesite: carried",
        "  nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none: carried",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in\n{report}"
        );
    }
    assert!(report.contains("affinity-mode: approximated: "), "{report}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("session-cookie-hash]") && l.contains("no effect")),
        "{report}"
    );
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let backend = docs.iter().find(|d| d["kind"] == "Backend").unwrap();
    let s = &backend["spec"]["loadBalancer"]["sessionPersistence"];
    assert_eq!(s["cookieName"].as_str(), Some("route"), "{yaml}");
    assert_eq!(s["maxAge"].as_str(), Some("48h"), "{yaml}");
    assert_eq!(s["sameSite"].as_str(), Some("None"), "{yaml}");
    assert_eq!(s["conditionalSameSiteNone"].as_bool(), Some(true), "{yaml}");
    assert!(
        s["path"].is_null(),
        "the rule's path, as ingress-nginx: {yaml}"
    );

    validate_beside(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n",
    );
}

/// `default-backend` and `custom-http-errors` are written as the rule's `fallbackBackendRef`
/// and `errorResponses` (the report says how they differ), valid next to their Services;
/// `custom-http-errors` without `default-backend` (the controller's own default backend,
/// which Tidegate does not have) is not migrated.
#[test]
fn migrate_writes_default_backend_and_custom_http_errors_as_fallback_and_error_responses() {
    let input = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/default-backend: error-pages
    nginx.ingress.kubernetes.io/custom-http-errors: "404, 503,404"
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: alone
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/custom-http-errors: "404"
spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: web, port: {number: 80}}}
"#;
    let (code, yaml, report) = migrate(&[], input);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("Ingress shop/alone: not migrated"),
        "{report}"
    );
    assert!(
        report.contains("custom-http-errors without default-backend"),
        "{report}"
    );
    assert!(
        report.contains(
            "nginx.ingress.kubernetes.io/default-backend: approximated: the rule's fallbackBackendRef"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "nginx.ingress.kubernetes.io/custom-http-errors: approximated: the rule's errorResponses"
        ),
        "{report}"
    );
    let route: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml_ng::Value| d["kind"] == "Route")
        .unwrap();
    let rule = &route["spec"]["rules"][0];
    let fallback = &rule["fallbackBackendRef"];
    assert_eq!(fallback["name"].as_str(), Some("error-pages"));
    assert_eq!(fallback["kind"].as_str(), Some("Service"));
    let errors = &rule["errorResponses"];
    let statuses: Vec<u64> = errors["statuses"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [404, 503]);
    assert_eq!(errors["backendRef"], *fallback);

    // Valid next to the Services they name.
    let stdout = validate_beside(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: error-pages, namespace: shop}\nspec: {ports: [{name: http, port: 8080}]}\n",
    );
    assert!(stdout.is_empty(), "{stdout}");
}
/// `proxy-next-upstream-timeout`, migrated (`retry.maxDuration`) and served by the binary: of
/// ten tries allowed, those that would start after the timeout do not, and the try under way
/// when it passes is not cut (its 503 is the answer, after the timeout). Without it, all ten.
#[tokio::test]
async fn next_upstream_timeout_stops_new_tries_without_cutting_the_one_under_way() {
    let up = common::Upstream::start("up").await;
    let serve = |timeout: Option<&str>| {
        let mut annotations = String::from(
            "    nginx.ingress.kubernetes.io/proxy-next-upstream: \"http_503\"\n    nginx.ingress.kubernetes.io/proxy-next-upstream-tries: \"10\"\n",
        );
        if let Some(t) = timeout {
            annotations.push_str(&format!(
                "    nginx.ingress.kubernetes.io/proxy-next-upstream-timeout: \"{t}\"\n"
            ));
        }
        let input = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  annotations:\n{annotations}spec:\n  rules:\n    - host: h\n      http:\n        paths:\n          - {{ path: /, pathType: Prefix, backend: {{ service: {{ name: web, port: {{ number: 80 }} }} }} }}\n"
        );
        let (code, yaml, report) = migrate(&[], &input);
        assert_eq!(code, Some(0), "{report}");
        let yaml = yaml.replace(
            "  - backendRefs:\n    - kind: Service\n      name: web\n      port: 80\n",
            "  - backendRefs:\n    - name: up\n",
        );
        assert!(yaml.contains("name: up"), "{yaml}");
        (yaml, report)
    };
    let (yaml, report) = serve(Some("1"));
    assert!(
        report.contains("proxy-next-upstream-timeout: carried"),
        "{report}"
    );
    assert!(yaml.contains("maxDuration: 1s"), "{yaml}");
    let run = |yaml: String| {
        let addr = up.addr;
        async move {
            let cfg = ConfigDir::new();
            cfg.write(
                "all.yaml",
                &(common::backend_yaml("up", &[addr]) + "---\n" + &yaml),
            );
            let gw = common::binary::Binary::start(cfg.path(), &[]).ready().await;
            let started = std::time::Instant::now();
            let r = common::HttpClient::http1()
                .get(
                    gw.http,
                    "h",
                    "/",
                    &[("x-status", "503"), ("x-delay-ms", "600")],
                )
                .await;
            (r, started.elapsed())
        }
    };
    let before = up.hits();
    let (r, took) = run(yaml).await;
    assert_eq!(
        r.status, 503,
        "the upstream's answer, not a 504: {}",
        r.body
    );
    assert_eq!(
        up.hits() - before,
        2,
        "tries at 0 s and 0.6 s; none at 1.2 s"
    );
    assert!(
        took >= std::time::Duration::from_millis(1150),
        "the second try ran to its end past the timeout: {took:?}"
    );
    let before = up.hits();
    let (r, _) = run(serve(None).0).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.hits() - before, 10, "without the timeout: every try");
}

/// `proxy-send-timeout` is served as an approximation: the Ingress is accepted with a warning
/// saying how (`validate --kubernetes`), and `tidegate migrate` reports it approximated.
#[test]
fn proxy_send_timeout_is_accepted_with_a_warning() {
    let input = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    nginx.ingress.kubernetes.io/proxy-send-timeout: \"120\"\nspec:\n  ingressClassName: tidegate\n  rules:\n    - host: h\n      http:\n        paths:\n          - { path: /, pathType: Prefix, backend: { service: { name: web, port: { number: 80 } } } }\n";
    let (code, _, report) = migrate(&[], input);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report
            .contains("proxy-send-timeout: approximated: Tidegate has no limit between two writes"),
        "{report}"
    );
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &format!(
            "{input}---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{ name: tidegate }}\nspec: {{ controller: tidegate.dev/ingress-controller }}\n---\napiVersion: v1\nkind: Service\nmetadata: {{ name: web, namespace: shop }}\nspec: {{ ports: [{{ name: http, port: 80 }}] }}\n"
        ),
    );
    let out = Command::new(BIN)
        .args(["validate", "--kubernetes", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "accepted: {text}");
    assert!(
        text.contains("proxy-send-timeout]: approximated:") && text.contains("[warning]"),
        "{text}"
    );
    // A value with a unit is rejected, as proxy-read-timeout's is.
    cfg.write(
        "all.yaml",
        &std::fs::read_to_string(cfg.file("all.yaml"))
            .unwrap()
            .replace("\"120\"", "\"120s\""),
    );
    let out = Command::new(BIN)
        .args(["validate", "--kubernetes", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
}
