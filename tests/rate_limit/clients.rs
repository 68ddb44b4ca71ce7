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

/// A concurrency limit counts requests in flight per client: of three slow requests from one
/// client at once, the limit's two are served and one is refused, while another client is
/// served; once they end, the places are free again.
#[tokio::test]
async fn a_concurrency_limit_refuses_requests_beyond_max_in_flight_per_client() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &limited_route(
                "",
                "  concurrency:\n    - { name: in-flight, key: { clientIP: {} }, max: 2 }\n",
            )
            .replace("  limits:\n", "")),
    );
    let gw = Gateway::start(cfg.path(), &["--trusted-proxies", "127.0.0.1/32"], &[]).await;
    let addr = gw.http;
    let slow = |client: &'static str| async move {
        HttpClient::http1()
            .get(
                addr,
                "h",
                "/",
                &[("x-forwarded-for", client), ("x-delay-ms", "1500")],
            )
            .await
    };
    let (a, b, c, other) = tokio::join!(slow("1.1.1.1"), slow("1.1.1.1"), slow("1.1.1.1"), async {
        // Sent while the three are in flight.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        slow("2.2.2.2").await
    });
    let mut statuses = [a.status.as_u16(), b.status.as_u16(), c.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429], "{}", gw.log());
    let refused = [a, b, c].into_iter().find(|r| r.status == 429).unwrap();
    assert!(refused.body.contains("in-flight"), "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(other.status, 200, "another client counts apart");
    // All ended: both places are free.
    let (a, b) = tokio::join!(slow("1.1.1.1"), slow("1.1.1.1"));
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let limited = crate::support::metric(
        gw.admin,
        "tidegate_rate_limit_decisions_total",
        &[("limit", "in-flight"), ("result", "limited")],
    )
    .await;
    assert_eq!(limited, Some(1.0));
}

/// An upstream whose first answer sends its head and half its body, then the rest when
/// `release` is notified; later answers are whole. Every answer closes its connection.
async fn slow_body_upstream(release: std::sync::Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let (release, first) = (release.clone(), first.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    let _ = s.flush().await;
                    release.notified().await;
                }
                let _ = s.write_all(b"world").await;
            });
        }
    });
    addr
}

/// ingress-nginx's `limit-connections`, migrated and served: a request whose response body is
/// still being sent holds its place (nginx's limit_conn counts it until the request ends), so
/// the client's next request gets 503; when the body ends, the place is free.
#[tokio::test]
async fn limit_connections_holds_a_place_until_the_response_body_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (report, yaml) = migrated(
        "default",
        "    nginx.ingress.kubernetes.io/limit-connections: \"1\"\n",
    );
    assert!(
        report.contains("limit-connections: approximated: a concurrency limit"),
        "{report}"
    );
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let up = slow_body_upstream(release.clone()).await;
    let cfg = ConfigDir::new();
    cfg.write("all.yaml", &(backend_yaml("up", &[up]) + "---\n" + &yaml));
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    // A: head and half the body received, the rest pending.
    let mut a = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    a.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"hello") {
        let n = a.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let http = HttpClient::http1();
    let r = http.get(gw.http, "h", "/", &[]).await;
    assert_eq!(r.status, 503, "A's body is still being sent: {}", r.body);
    assert!(r.body.contains("limit-connections"), "{}", r.body);
    // A's body ends: the place is given back.
    release.notify_one();
    while !got.ends_with(b"world") {
        let n = a.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    crate::common::eventually(
        std::time::Duration::from_secs(5),
        "the place is free once A's body ended",
        || async { (http.get(gw.http, "h", "/", &[]).await.status == 200).then_some(()) },
    )
    .await;
    drop(a);
}
