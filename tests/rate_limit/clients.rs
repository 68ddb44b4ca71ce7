//! Limits on clients through the real binary: `exemptClients` (a limit that does not apply to
//! some client addresses).

use crate::common::{ConfigDir, HttpClient, Upstream, backend_yaml};
use crate::support::{Gateway, limited_route};

/// A config directory with Backend `up` and `limited_route(limits)`.
fn config(up: &Upstream, limits: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &limited_route(limits, "")),
    );
    cfg
}

/// Clients in `exemptClients` (found through a trusted proxy's X-Forwarded-For) are never
/// limited and get no RateLimit headers for the limit; every other client is.
#[tokio::test]
async fn exempt_clients_pass_a_limit_others_hit() {
    let up = Upstream::start("up").await;
    let cfg = config(
        &up,
        "    - { name: per-client, key: { clientIP: {} }, rate: 1, per: 1m, burst: 1,\n        exemptClients: [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"] }\n",
    );
    let gw = Gateway::start(cfg.path(), &["--trusted-proxies", "127.0.0.1/32"], &[]).await;
    let http = HttpClient::http1();
    for client in ["10.1.2.3", "2001:db8::5", "192.0.2.7"] {
        for i in 0..5 {
            let r = http
                .get(gw.http, "h", "/", &[("x-forwarded-for", client)])
                .await;
            assert_eq!(r.status, 200, "{client} #{i}: {}", r.body);
            assert!(
                !r.headers.contains_key("ratelimit"),
                "{client}: no limit applied: {:?}",
                r.headers
            );
        }
    }
    for client in ["1.1.1.1", "192.0.2.8", "11.0.0.1"] {
        let r = http
            .get(gw.http, "h", "/", &[("x-forwarded-for", client)])
            .await;
        assert_eq!(r.status, 200, "{client}");
        assert_eq!(r.headers["ratelimit"], "\"per-client\";r=0;t=60");
        let r = http
            .get(gw.http, "h", "/", &[("x-forwarded-for", client)])
            .await;
        assert_eq!(r.status, 429, "{client} is not exempt");
    }
}

/// An Ingress `web` in namespace `ns` for host `h` with `annotations` (YAML mapping lines).
pub fn ingress(ns: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: {ns}\n  annotations:\n{annotations}spec:\n  rules:\n    - host: h\n      http:\n        paths:\n          - {{ path: /, pathType: Prefix, backend: {{ service: {{ name: web, port: {{ number: 80 }} }} }} }}\n"
    )
}

/// `tidegate migrate` of [`ingress`]: its report, and its Route and policies made servable
/// here (the Route's backendRefs to Backend `up` instead of the Service).
pub fn migrated(ns: &str, annotations: &str) -> (String, String) {
    use std::io::Write;
    let ingress = ingress(ns, annotations);
    let mut child = std::process::Command::new(crate::common::binary::BIN)
        .arg("migrate")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ingress.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout)) {
        let mut v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] == "Route" {
            for rule in v["spec"]["rules"].as_sequence_mut().unwrap() {
                rule["backendRefs"] = serde_yaml_ng::from_str("[{ name: up }]").unwrap();
            }
        }
        docs.push(serde_yaml_ng::to_string(&v).unwrap());
    }
    (report, docs.join("---\n"))
}

/// An Ingress's `limit-whitelist` beside its `limit-rpm`, migrated and served: whitelisted
/// clients pass, others get ingress-nginx's 503 after the burst.
#[tokio::test]
async fn limit_whitelist_exempts_clients_from_the_ingress_limits() {
    let (report, yaml) = migrated(
        "default",
        "    nginx.ingress.kubernetes.io/limit-rpm: \"1\"\n    nginx.ingress.kubernetes.io/limit-burst-multiplier: \"1\"\n    nginx.ingress.kubernetes.io/limit-whitelist: \"10.0.0.0/8, 192.0.2.7\"\n",
    );
    assert!(
        report.contains("nginx.ingress.kubernetes.io/limit-whitelist: carried"),
        "{report}"
    );
    assert!(yaml.contains("exemptClients"), "{yaml}");
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + "---\n" + &yaml),
    );
    let gw = Gateway::start(cfg.path(), &["--trusted-proxies", "127.0.0.1/32"], &[]).await;
    let http = HttpClient::http1();
    for client in ["10.9.8.7", "192.0.2.7"] {
        for _ in 0..5 {
            let r = http
                .get(gw.http, "h", "/", &[("x-forwarded-for", client)])
                .await;
            assert_eq!(r.status, 200, "{client} is whitelisted: {}", r.body);
        }
    }
    // limit-rpm 1 with multiplier 1: nginx's burst=1 nodelay passes two, then 503.
    let statuses: Vec<u16> = statuses(&http, gw.http, "1.1.1.1", 3).await;
    assert_eq!(statuses, [200, 200, 503]);
}

/// `n` requests from `client` (X-Forwarded-For), one after the other: their statuses.
async fn statuses(
    http: &HttpClient,
    addr: std::net::SocketAddr,
    client: &str,
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = http
            .get(addr, "h", "/", &[("x-forwarded-for", client)])
            .await;
        out.push(r.status.as_u16());
    }
    out
}
