//! The PROXY protocol through the real binary, with real peers from Debian: HAProxy in front
//! (`send-proxy-v2` and `send-proxy`) on the HTTP, HTTPS and L4 listeners, and nginx behind a
//! TCP Route (`listen ... proxy_protocol`) reading the header the gateway writes.
//!
//! Clients use other loopback addresses (127.0.0.2, ...) so the client HAProxy names differs
//! from HAProxy's own address (127.0.0.1, the one `--proxy-protocol-from` lists).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::binary::{BIN, Binary};
use common::dnsmasq::free_port;
use common::tls::{Ca, Leaf, secret_yaml};
use common::{ConfigDir, Upstream, backend_yaml, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NEEDS: &str = "haproxy and nginx (scripts/test.sh installs them)";

/// A foreground HAProxy, killed on drop.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Frontends `(listen port, gateway address, server option)` in TCP mode.
    async fn start(frontends: &[(u16, SocketAddr, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut conf = String::from(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n",
        );
        for (i, (port, to, option)) in frontends.iter().enumerate() {
            conf += &format!(
                "frontend f{i}\n  bind 127.0.0.1:{port}\n  default_backend b{i}\nbackend b{i}\n  server gw {to} {option} source 127.0.0.1\n"
            );
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("haproxy runs ({NEEDS}): {e}"));
        for (port, _, _) in frontends {
            let port = *port;
            eventually(Duration::from_secs(10), "haproxy listens", || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            })
            .await;
        }
        Self { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` from source address `from`: (status, body). `url` may be https (certificates are
/// not checked: these tests are about addresses). Status 0: no HTTP answer.
async fn curl(from: &str, url: &str, resolve: Option<&str>) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sk", "--max-time", "10", "--interface", from])
        .args(["-o", "-", "-w", "\n%{http_code}"]);
    if let Some(r) = resolve {
        cmd.args(["--resolve", r]);
    }
    let out = cmd.arg(url).output().await.expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the metric line that starts with `prefix` (0 when absent).
async fn metric(gw: &Binary, prefix: &str) -> f64 {
    let text = gw.admin("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// The `client_ip` of every access-log line so far.
fn logged_clients(gw: &Binary) -> Vec<String> {
    gw.access_log()
        .iter()
        .map(|l| l["client_ip"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn http_config(up: &Upstream, ca: &Ca) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(secret_yaml("cert", &ca.leaf("h", &["h"]), false)
            + &backend_yaml("up", &[up.addr])
            + "---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: r }\nspec:\n  hostnames: [h]\n  tls: { secretName: cert }\n  rules:\n    - name: api\n      backendRefs: [{ name: up }]\n      ipDeny: [127.0.0.3]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: p }\nspec:\n  targetRef: { kind: Route, name: r }\n  limits:\n    - { name: per-client, key: { clientIP: {} }, rate: 1, per: 1m, burst: 1 }\n"),
    );
    cfg
}

/// HAProxy in front of the HTTP and HTTPS listeners, with v2 and v1 headers: the access log,
/// the IP deny list and the per-client rate limit all see the client HAProxy names, and
/// HAProxy's own connections without a header are refused.
#[tokio::test]
#[ignore = "needs haproxy and nginx (scripts/test.sh installs them)"]
async fn haproxy_in_front_names_the_client_for_logs_lists_and_limits() {
    let up = Upstream::start("up").await;
    let ca = Ca::new();
    let cfg = http_config(&up, &ca);
    let gw = Binary::run(cfg.path())
        .access_log()
        .args(&["--proxy-protocol-from", "127.0.0.1/32,::1"])
        .start()
        .ready()
        .await;
    let (v2, v1, v2_tls) = (free_port(), free_port(), free_port());
    let _haproxy = Haproxy::start(&[
        (v2, gw.http, "send-proxy-v2"),
        (v1, gw.http, "send-proxy"),
        (v2_tls, gw.https, "send-proxy-v2"),
    ])
    .await;
    let http = |port: u16| format!("http://h:{port}/");
    let resolve = |port: u16| format!("h:{port}:127.0.0.1");

    // v2: the client is 127.0.0.2, whose second request in the minute is limited.
    let r = curl("127.0.0.2", &http(v2), Some(&resolve(v2))).await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(
        curl("127.0.0.2", &http(v2), Some(&resolve(v2))).await.0,
        429
    );
    // v1: another client has its own limit; 127.0.0.3 is denied.
    assert_eq!(
        curl("127.0.0.4", &http(v1), Some(&resolve(v1))).await.0,
        200
    );
    assert_eq!(
        curl("127.0.0.3", &http(v1), Some(&resolve(v1))).await.0,
        403
    );
    // HTTPS: the header comes before the TLS handshake.
    let url = format!("https://h:{v2_tls}/");
    let r = curl("127.0.0.5", &url, Some(&resolve(v2_tls))).await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(up.hits(), 3);

    let clients = eventually(Duration::from_secs(5), "five access-log lines", || async {
        let c = logged_clients(&gw);
        (c.len() >= 5).then_some(c)
    })
    .await;
    assert_eq!(
        clients,
        [
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.4",
            "127.0.0.3",
            "127.0.0.5"
        ]
    );

    // HAProxy's address without a header (a health check that forgot it, a misconfiguration)
    // is refused, not served as itself.
    let direct = format!("http://h:{}/", gw.http.port());
    let resolve_gw = format!("h:{}:127.0.0.1", gw.http.port());
    assert_eq!(curl("127.0.0.1", &direct, Some(&resolve_gw)).await.0, 0);
    let refused = metric(
        &gw,
        "tidegate_proxy_protocol_rejected_total{listener=\"http\",reason=\"missing\"}",
    )
    .await;
    assert_eq!(refused, 1.0);
    assert_eq!(up.hits(), 3);
}

/// A peer not in `--proxy-protocol-from` is never read for a header: one it sends is not
/// believed, and without one it is served as itself.
#[tokio::test]
async fn a_header_from_a_peer_not_listed_is_not_trusted() {
    let up = Upstream::start("up").await;
    let ca = Ca::new();
    let cfg = http_config(&up, &ca);
    let gw = Binary::run(cfg.path())
        .access_log()
        .args(&["--proxy-protocol-from", "127.0.0.1/32"])
        .start()
        .ready()
        .await;
    // 127.0.0.6 claims to speak for 127.0.0.9 (v1) and for 127.0.0.9 (v2).
    let v2 = {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        h.extend_from_slice(&[127, 0, 0, 9, 127, 0, 0, 1, 0x30, 0x39, 0, 80]);
        h
    };
    for header in [b"PROXY TCP4 127.0.0.9 127.0.0.1 12345 80\r\n".to_vec(), v2] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(gw.http).await.unwrap();
        // The gateway answers the header as a bad request and closes: a write may be reset.
        let _ = s.write_all(&header).await;
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "a header from an unlisted peer is not HTTP: {answer}"
        );
    }
    // Without a header it is an ordinary client.
    let url = format!("http://h:{}/", gw.http.port());
    let resolve = format!("h:{}:127.0.0.1", gw.http.port());
    assert_eq!(curl("127.0.0.6", &url, Some(&resolve)).await.0, 200);
    let clients = eventually(Duration::from_secs(5), "an access-log line", || async {
        let c = logged_clients(&gw);
        c.contains(&"127.0.0.6".to_owned()).then_some(c)
    })
    .await;
    assert!(!clients.contains(&"127.0.0.9".to_owned()), "{clients:?}");
    assert_eq!(up.hits(), 1);
    assert_eq!(
        metric(&gw, "tidegate_proxy_protocol_rejected_total").await,
        0.0
    );
}

/// A foreground nginx whose servers read PROXY headers (`listen ... proxy_protocol`), answer
/// and log `$proxy_protocol_addr`: `port` in plain HTTP, `tls_port` over TLS with `leaf`;
/// killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    tls_port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.crt"), &leaf.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &leaf.key).unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
  log_format pp "$proxy_protocol_addr $proxy_protocol_port";
  access_log {d}/access.log pp;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} proxy_protocol;
    location / {{ return 200 "client=$proxy_protocol_addr server=$proxy_protocol_server_addr:$proxy_protocol_server_port\n"; }}
  }}
  server {{
    listen 127.0.0.1:{tls_port} ssl proxy_protocol;
    ssl_certificate {d}/server.crt;
    ssl_certificate_key {d}/server.key;
    location / {{ return 200 "tls client=$proxy_protocol_addr server=$proxy_protocol_server_addr:$proxy_protocol_server_port\n"; }}
  }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("nginx runs ({NEEDS}): {e}"));
        for port in [port, tls_port] {
            eventually(Duration::from_secs(10), "nginx listens", || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            })
            .await;
        }
        Self {
            child,
            port,
            tls_port,
            dir,
        }
    }

    /// The addresses nginx logged, one per request.
    fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn l4_config(dir: &Path, nginx: u16, v1_port: u16, v2_port: u16) {
    let mut yaml = String::new();
    for (name, version, port) in [("v1", "V1", v1_port), ("v2", "V2", v2_port)] {
        yaml += &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  protocol: TCP\n  proxyProtocol: {version}\n  endpoints: [\"127.0.0.1:{nginx}\"]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  protocol: TCP\n  port: {port}\n  backendRefs: [{{ name: {name} }}]\n---\n"
        );
    }
    std::fs::write(dir.join("l4.yaml"), yaml).unwrap();
}

/// nginx behind TCP Routes whose Backends ask for v1 and v2 headers sees our client's address,
/// both for a client that connects directly and for one HAProxy names with its own v2 header
/// on the L4 listener.
#[tokio::test]
#[ignore = "needs haproxy and nginx (scripts/test.sh installs them)"]
async fn nginx_behind_a_tcp_route_reads_the_client_we_send() {
    let nginx = Nginx::start(&Ca::new().leaf("n", &["n"])).await;
    let (v1_port, v2_port) = (free_port(), free_port());
    let cfg = ConfigDir::new();
    l4_config(cfg.path(), nginx.port, v1_port, v2_port);
    let ports = format!("127.0.0.1:{v1_port}/tcp,127.0.0.1:{v2_port}/tcp");
    let gw = Binary::run(cfg.path())
        .args(&["--l4-ports", &ports, "--proxy-protocol-from", "127.0.0.1"])
        .start();
    for port in [v1_port, v2_port] {
        eventually(
            Duration::from_secs(10),
            "the L4 port opens",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
    }
    let want = |client: &str, port: u16| format!("client={client} server=127.0.0.1:{port}\n");
    for port in [v1_port, v2_port] {
        let r = curl("127.0.0.2", &format!("http://127.0.0.1:{port}/"), None).await;
        assert_eq!(r, (200, want("127.0.0.2", port)), "direct to {port}");
    }
    // HAProxy (127.0.0.1, listed) in front of the L4 listener names 127.0.0.7.
    let front = free_port();
    let _haproxy = Haproxy::start(&[(
        front,
        SocketAddr::from(([127, 0, 0, 1], v2_port)),
        "send-proxy-v2",
    )])
    .await;
    let r = curl("127.0.0.7", &format!("http://127.0.0.1:{front}/"), None).await;
    // The destination is the one HAProxy's header carried: HAProxy's frontend.
    assert_eq!(r, (200, want("127.0.0.7", front)), "through haproxy");
    let logged = eventually(Duration::from_secs(5), "nginx logs 3 requests", || async {
        let l = nginx.logged();
        (l.len() >= 3).then_some(l)
    })
    .await;
    assert_eq!(logged, ["127.0.0.2", "127.0.0.2", "127.0.0.7"]);
    drop(gw);
}

/// A Backend that asks for the PROXY protocol must be a TCP one: on an HTTP Backend (pooled
/// connections carry many clients) it is refused with a clear diagnostic.
#[test]
fn proxy_protocol_on_an_http_backend_is_refused() {
    let cfg = ConfigDir::new();
    cfg.write(
        "b.yaml",
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: { name: web }\nspec:\n  proxyProtocol: V2\n  endpoints: [\"127.0.0.1:9\"]\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("spec.proxyProtocol") && text.contains("pooled connections"),
        "{text}"
    );
}

/// From a listed peer: v2 `LOCAL` (a load balancer's own health check) is served as the peer
/// itself, and a malformed header closes the connection with its reason counted.
#[tokio::test]
async fn local_keeps_the_peer_and_a_malformed_header_is_refused() {
    let up = Upstream::start("up").await;
    let ca = Ca::new();
    let cfg = http_config(&up, &ca);
    let gw = Binary::run(cfg.path())
        .access_log()
        .args(&["--proxy-protocol-from", "127.0.0.1/32"])
        .start()
        .ready()
        .await;
    let exchange = |header: &'static [u8]| async move {
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        // A refused header closes the connection at once: the writes may then fail (reset),
        // and what counts is that no answer comes.
        let _ = s.write_all(header).await;
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let local = exchange(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00").await;
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    let bad = exchange(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 80\r\n").await;
    assert_eq!(bad, "", "closed without an answer");
    assert_eq!(
        metric(
            &gw,
            "tidegate_proxy_protocol_rejected_total{listener=\"http\",reason=\"malformed_v1\"}"
        )
        .await,
        1.0
    );
    let clients = eventually(Duration::from_secs(5), "an access-log line", || async {
        let c = logged_clients(&gw);
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(clients, ["127.0.0.1"]);
    assert_eq!(up.hits(), 1);
}

/// A TLS Route whose Backend asks for a v1 header: nginx, behind TLS passed through, sees the
/// client, whether it connected directly or HAProxy named it in a v2 header on the HTTPS
/// listener (read before the ClientHello).
#[tokio::test]
#[ignore = "needs haproxy and nginx (scripts/test.sh installs them)"]
async fn a_tls_route_sends_the_client_to_nginx() {
    let ca = Ca::new();
    let nginx = Nginx::start(&ca.leaf("db.test", &["db.test"])).await;
    let cfg = ConfigDir::new();
    cfg.write(
        "db.yaml",
        &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: db }}\nspec:\n  protocol: TCP\n  proxyProtocol: V1\n  endpoints: [\"127.0.0.1:{}\"]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: db }}\nspec:\n  protocol: TLS\n  hostnames: [db.test]\n  backendRefs: [{{ name: db }}]\n",
            nginx.tls_port
        ),
    );
    let gw = Binary::run(cfg.path())
        .args(&["--proxy-protocol-from", "127.0.0.1"])
        .start()
        .ready()
        .await;
    let https = gw.https.port();
    let url = |port: u16| format!("https://db.test:{port}/");
    let resolve = |port: u16| format!("db.test:{port}:127.0.0.1");
    let r = curl("127.0.0.2", &url(https), Some(&resolve(https))).await;
    assert_eq!(
        r,
        (
            200,
            format!("tls client=127.0.0.2 server=127.0.0.1:{https}\n")
        )
    );
    let front = free_port();
    let _haproxy = Haproxy::start(&[(front, gw.https, "send-proxy-v2")]).await;
    let r = curl("127.0.0.8", &url(front), Some(&resolve(front))).await;
    assert_eq!(
        r,
        (
            200,
            format!("tls client=127.0.0.8 server=127.0.0.1:{front}\n")
        )
    );
}
