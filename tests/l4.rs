//! TCP Routes through the real binary: `redis-cli` to a real `redis-server`, half-close, a
//! backend that dies mid-stream, connection limits, and reloads that add and remove Routes
//! without disturbing other listeners.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::dnsmasq::free_port;
use common::{ConfigDir, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::binary::{BIN, Binary};

/// A running `tidegate run` (the shared harness) with `--l4-ports` on 127.0.0.1.
struct Running(Binary);

impl std::ops::Deref for Running {
    type Target = Binary;
    fn deref(&self) -> &Binary {
        &self.0
    }
}

impl Running {
    fn start(config: &Path, l4_ports: &[u16]) -> Self {
        Self::start_with(config, l4_ports, &[])
    }

    fn start_with(config: &Path, l4_ports: &[u16], extra: &[&str]) -> Self {
        let ports: Vec<String> = l4_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}/tcp"))
            .collect();
        let ports = ports.join(",");
        let mut run = Binary::run(config).args(extra);
        if !ports.is_empty() {
            run = run.args(&["--l4-ports", &ports]);
        }
        Self(run.start())
    }

    async fn admin_get(&self, path: &str) -> String {
        self.0.admin(path).await
    }

    /// The value of the metric line that starts with `prefix` (0 when absent).
    async fn metric(&self, prefix: &str) -> f64 {
        let text = self.admin_get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

fn tcp_backend(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  protocol: TCP\n  endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

fn tcp_route(name: &str, port: u16, backend: &str, extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  protocol: TCP\n  port: {port}\n  backendRefs: [{{ name: {backend} }}]\n{extra}"
    )
}

/// Connects to the gateway's L4 port once it is open.
async fn connect(port: u16) -> TcpStream {
    eventually(Duration::from_secs(10), "the L4 port to open", || async {
        TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await
}

/// An echo server: every byte comes back; when the client half-closes it sends
/// `bye <total>` and closes.
async fn echo_server() -> SocketAddr {
    tagged_echo_server("").await
}

/// An echo server that says `bye TAG <total>` instead.
async fn tagged_echo_server(tag: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut total = 0usize;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total += n;
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let bye = match tag {
                    "" => format!("bye {total}"),
                    tag => format!("bye {tag} {total}"),
                };
                let _ = s.write_all(bye.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echo within 5s")
        .unwrap();
    assert_eq!(got, msg);
}

/// Whether the gateway closes `s` (EOF or reset) within 5 s.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn half_close_passes_through_and_the_other_direction_keeps_flowing() {
    let echo = echo_server().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("b.yaml", &tcp_backend("echo", &[echo], ""));
    dir.write("r.yaml", &tcp_route("echo", port, "echo", ""));
    let gw = Running::start(dir.path(), &[port]);
    let mut s = connect(port).await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    // Write everything and half-close while reading: the echo comes back, then the backend's
    // answer to our FIN.
    let writer = async {
        w.write_all(&big).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let reader = r.read_to_end(&mut got);
    let ((), n) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("done within 10s");
    n.unwrap();
    let tail = format!("bye {}", big.len());
    assert_eq!(got.len(), big.len() + tail.len());
    assert_eq!(&got[..big.len()], &big[..]);
    assert_eq!(&got[big.len()..], tail.as_bytes());
    let to_backend = gw
        .metric("tidegate_l4_bytes_total{route=\"default/echo\",backend=\"default/echo\",direction=\"to_backend\"}")
        .await;
    assert_eq!(to_backend, big.len() as f64);
    let forwarded = gw
        .metric("tidegate_l4_connections_total{route=\"default/echo\",backend=\"default/echo\",result=\"forwarded\"}")
        .await;
    assert_eq!(forwarded, 1.0);
}

#[tokio::test]
async fn max_connections_closes_the_connections_over_the_limit() {
    let echo = echo_server().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("b.yaml", &tcp_backend("echo", &[echo], ""));
    dir.write(
        "r.yaml",
        &tcp_route("echo", port, "echo", "  tcp: { maxConnections: 2 }\n"),
    );
    let gw = Running::start(dir.path(), &[port]);
    let mut a = connect(port).await;
    roundtrip(&mut a, b"one").await;
    let mut b = connect(port).await;
    roundtrip(&mut b, b"two").await;
    let mut c = connect(port).await;
    assert!(closed(&mut c).await, "a third connection is closed");
    assert_eq!(
        gw.metric(
            "tidegate_l4_connections_total{route=\"default/echo\",backend=\"\",result=\"limited\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        gw.metric("tidegate_l4_open_connections{route=\"default/echo\"}")
            .await,
        2.0
    );
    // Once one closes, a new one gets through.
    drop(a);
    eventually(Duration::from_secs(5), "a free slot", || async {
        let mut d = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        d.write_all(b"x").await.ok()?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(500), d.read(&mut buf)).await {
            Ok(Ok(1)) => Some(()),
            _ => None,
        }
    })
    .await;
    roundtrip(&mut b, b"still").await;
}

#[tokio::test]
async fn reloads_open_and_close_l4_listeners_without_touching_established_connections() {
    let echo = echo_server().await;
    let (pa, pb) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write("b.yaml", &tcp_backend("echo", &[echo], ""));
    dir.write("a.yaml", &tcp_route("a", pa, "echo", ""));
    let gw = Running::start(dir.path(), &[pa, pb]);
    let mut a = connect(pa).await;
    roundtrip(&mut a, b"before").await;
    assert!(
        TcpStream::connect(("127.0.0.1", pb)).await.is_err(),
        "b is not open without a Route"
    );

    // Adding Route b opens its port; a's connection goes on.
    dir.write("r-b.yaml", &tcp_route("b", pb, "echo", ""));
    let mut b = connect(pb).await;
    roundtrip(&mut b, b"b").await;
    roundtrip(&mut a, b"during").await;

    // Removing it closes the listener (new connections are refused); a's connection and b's
    // established one are untouched (b's drains for 30s by default).
    dir.remove("r-b.yaml");
    eventually(Duration::from_secs(10), "port b to close", || async {
        TcpStream::connect(("127.0.0.1", pb))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    roundtrip(&mut a, b"after").await;
    roundtrip(&mut b, b"draining").await;
    let config = gw.admin_get("/config").await;
    assert!(config.contains("\"l4\""), "{config}");
    assert!(!config.contains("default/b"), "{config}");
    // An HTTP listener is unaffected.
    let _ = TcpStream::connect(gw.http)
        .await
        .expect("the HTTP listener is open");
}

#[tokio::test]
async fn a_route_that_names_a_port_not_configured_is_rejected_with_a_diagnostic() {
    let dir = ConfigDir::new();
    let port = free_port();
    dir.write(
        "b.yaml",
        &tcp_backend("echo", &["127.0.0.1:9".parse().unwrap()], ""),
    );
    dir.write("r.yaml", &tcp_route("echo", 6999, "echo", ""));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(dir.path())
        .args(["--l4-ports", &format!("127.0.0.1:{port}/tcp")])
        .env_remove("TIDEGATE_L4_PORTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Route default/echo: spec.port: 6999 is not one of the gateway's TCP ports (--l4-ports: {port})"
        )),
        "{stdout}"
    );
}

/// Which tagged echo server a new connection through `port` reaches.
async fn reached(port: u16) -> String {
    let mut t = connect(port).await;
    t.shutdown().await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), t.read_to_string(&mut out))
        .await
        .expect("an answer within 5s")
        .unwrap();
    out
}

#[tokio::test]
async fn consistent_hash_on_the_source_ip_keeps_a_client_on_one_endpoint_and_round_robin_does_not()
{
    let (a, b) = (tagged_echo_server("a").await, tagged_echo_server("b").await);
    let (hashed, rr) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write(
        "b.yaml",
        &format!(
            "{}---\n{}",
            tcp_backend(
                "hashed",
                &[a, b],
                "  loadBalancer: { algorithm: ConsistentHash, hashOn: { sourceIP: {} } }\n"
            ),
            tcp_backend("rr", &[a, b], "")
        ),
    );
    dir.write(
        "r.yaml",
        &format!(
            "{}---\n{}",
            tcp_route("hashed", hashed, "hashed", ""),
            tcp_route("rr", rr, "rr", "")
        ),
    );
    let _gw = Running::start(dir.path(), &[hashed, rr]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(reached(hashed).await);
    }
    assert_eq!(seen.len(), 1, "one client address, one endpoint: {seen:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(reached(rr).await);
    }
    assert_eq!(seen.len(), 2, "round robin uses both: {seen:?}");
}

#[tokio::test]
async fn an_endpoint_failing_its_active_tcp_probe_gets_no_new_connections() {
    let a = tagged_echo_server("a").await;
    // b accepts until its listener is dropped; then connects to it are refused.
    let b_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = b_listener.local_addr().unwrap();
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "b.yaml",
        &tcp_backend(
            "echo",
            &[a, b],
            "  healthCheck:\n    active: { tcp: {}, interval: 100ms, timeout: 100ms, unhealthyThreshold: 1 }\n",
        ),
    );
    dir.write("r.yaml", &tcp_route("echo", port, "echo", ""));
    let gw = Running::start(dir.path(), &[port]);
    drop(b_listener);
    eventually(
        Duration::from_secs(10),
        "b to be marked unhealthy",
        || async {
            let body = gw.admin_get("/backends").await;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let endpoints = v[0]["endpoints"].as_array()?.clone();
            endpoints
                .iter()
                .any(|e| e["address"] == b.to_string() && e["activeHealthy"] == false)
                .then_some(())
        },
    )
    .await;
    for _ in 0..6 {
        assert_eq!(reached(port).await, "bye a 0");
    }
    // No connect was even tried on b: the probe took it out, not a failed connect.
    assert_eq!(
        gw.metric("tidegate_upstream_connect_errors_total{backend=\"default/echo\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let echo = echo_server().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("b.yaml", &tcp_backend("echo", &[echo], ""));
    dir.write(
        "r.yaml",
        &tcp_route("echo", port, "echo", "  tcp: { idleTimeout: 400ms }\n"),
    );
    let _gw = Running::start(dir.path(), &[port]);
    let mut busy = connect(port).await;
    let mut idle = connect(port).await;
    roundtrip(&mut idle, b"hello").await;
    // Bytes every 100 ms for 1.2 s keep a connection open past three idle timeouts...
    for i in 0..12u8 {
        roundtrip(&mut busy, &[i]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    roundtrip(&mut busy, b"still here").await;
    // ...while the silent one was closed.
    assert!(closed(&mut idle).await, "the idle connection is closed");
}

#[tokio::test]
async fn a_connection_whose_endpoint_leaves_drains_then_closes() {
    let (old, new) = (
        tagged_echo_server("old").await,
        tagged_echo_server("new").await,
    );
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("b.yaml", &tcp_backend("echo", &[old], ""));
    dir.write(
        "r.yaml",
        &tcp_route("echo", port, "echo", "  tcp: { drainTimeout: 2s }\n"),
    );
    let _gw = Running::start(dir.path(), &[port]);
    let mut s = connect(port).await;
    roundtrip(&mut s, b"before").await;
    dir.write("b.yaml", &tcp_backend("echo", &[new], ""));
    // New connections go to the new endpoint; the old connection still flows for a while...
    eventually(
        Duration::from_secs(10),
        "the old endpoint to leave",
        || async {
            let mut t = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            t.shutdown().await.ok()?;
            let mut out = String::new();
            t.read_to_string(&mut out).await.ok()?;
            (out == "bye new 0").then_some(())
        },
    )
    .await;
    roundtrip(&mut s, b"draining").await;
    // ...and is closed when the drain timeout ends.
    let started = std::time::Instant::now();
    assert!(
        closed(&mut s).await,
        "closed at the end of the drain timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_lets_l4_connections_finish_then_exits() {
    let echo = echo_server().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("b.yaml", &tcp_backend("echo", &[echo], ""));
    dir.write("r.yaml", &tcp_route("echo", port, "echo", ""));
    let mut gw = Running::start_with(dir.path(), &[port], &["--drain-timeout", "30s"]);
    let mut s = connect(port).await;
    roundtrip(&mut s, b"before").await;
    gw.0.signal("TERM");
    // The listener stops accepting; the established connection is still served.
    eventually(
        Duration::from_secs(10),
        "the L4 listener to close",
        || async {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    roundtrip(&mut s, b"during the drain").await;
    // Once the client is done, the gateway exits well before the 30 s drain timeout.
    s.shutdown().await.unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert_eq!(
        rest,
        format!("bye {}", "before".len() + "during the drain".len())
    );
    let status = gw.0.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

// --- TLS passthrough: openssl s_client and curl to real nginx TLS servers ---

/// The subject of the certificate `openssl s_client -servername NAME` is shown on `addr`.
fn served_subject(addr: SocketAddr, name: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate for {name}: {text}"))
        .to_owned()
}

/// `curl https://NAME:PORT/` through the gateway's HTTPS listener, trusting `ca`.
fn curl(addr: SocketAddr, name: &str, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("{name}:{}:127.0.0.1", addr.port()),
            &format!("https://{name}:{}/", addr.port()),
        ])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
#[ignore = "needs nginx, openssl and curl (scripts/test.sh installs them)"]
async fn tls_passthrough_by_server_name_beside_a_terminated_host() {
    use common::nginx::Nginx;
    use common::tls::{Ca, secret_yaml};
    let ca = Ca::new();
    let (a_leaf, b_leaf) = (
        ca.leaf("a.test", &["a.test"]),
        ca.leaf("b.test", &["*.b.test"]),
    );
    let a = Nginx::start(&a_leaf, &ca).await;
    let b = Nginx::start(&b_leaf, &ca).await;
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let dir = ConfigDir::new();
    dir.write(
        "b.yaml",
        &format!(
            "{}---\n{}",
            tcp_backend("a", &[local(a.h2)], ""),
            tcp_backend("b", &[local(b.h2)], "")
        ),
    );
    let tls_route = |name: &str, host: &str, backend: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  protocol: TLS\n  hostnames: [\"{host}\"]\n  backendRefs: [{{ name: {backend} }}]\n"
        )
    };
    dir.write(
        "r.yaml",
        &format!(
            "{}---\n{}",
            tls_route("a", "a.test", "a"),
            tls_route("b", "*.b.test", "b")
        ),
    );
    // A terminated host on the same listener, with the gateway's own certificate.
    let gw_leaf = ca.leaf("gateway.test", &["c.test"]);
    let upstream = common::Upstream::start("c").await;
    dir.write("secret.yaml", &secret_yaml("c-cert", &gw_leaf, false));
    dir.write(
        "c.yaml",
        &format!(
            "{}---\n{}",
            common::backend_yaml("c", &[upstream.addr]),
            common::route_yaml(
                "c",
                "/",
                "c",
                "  hostnames: [c.test]\n  tls: { secretName: c-cert }\n"
            )
        ),
    );
    let ca_file = dir.file("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let gw = Running::start(dir.path(), &[]);
    let https = gw.https;

    let subjects = tokio::task::spawn_blocking(move || {
        [
            served_subject(https, "a.test"),
            served_subject(https, "x.b.test"),
            served_subject(https, "c.test"),
        ]
    })
    .await
    .unwrap();
    assert!(
        subjects[0].contains("CN = a.test") || subjects[0].contains("CN=a.test"),
        "{subjects:?}"
    );
    assert!(subjects[1].contains("b.test"), "{subjects:?}");
    assert!(subjects[2].contains("gateway.test"), "{subjects:?}");

    // Whole requests: nginx answers passthrough names itself (its SNI), the gateway the other.
    let ca2 = ca_file.clone();
    let bodies = tokio::task::spawn_blocking(move || {
        [
            curl(https, "a.test", &ca2),
            curl(https, "x.b.test", &ca2),
            curl(https, "c.test", &ca2),
        ]
    })
    .await
    .unwrap();
    assert!(
        bodies[0].starts_with("h2 ") && bodies[0].contains("sni=a.test"),
        "{bodies:?}"
    );
    assert!(bodies[1].contains("sni=x.b.test"), "{bodies:?}");
    assert!(bodies[2].contains("\"upstream\":\"c\""), "{bodies:?}");
    assert_eq!(
        gw.metric("tidegate_tls_handshakes_total{result=\"passthrough\",version=\"\"}")
            .await,
        4.0
    );
}

// --- redis-cli to redis-server through the gateway ---

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH (apt-get install redis-server; scripts/test.sh does)")
        })
}

/// A private redis-server on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(which("redis-server"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        eventually(
            Duration::from_secs(10),
            "redis-server to listen",
            || async { TcpStream::connect(("127.0.0.1", port)).await.ok() },
        )
        .await;
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_cli(port: u16, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new(which("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (scripts/test.sh installs them)"]
async fn redis_cli_through_the_gateway_pipelined_and_a_large_value() {
    let redis = RedisServer::start().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "b.yaml",
        &tcp_backend(
            "redis",
            &[redis.addr()],
            "  loadBalancer: { algorithm: ConsistentHash, hashOn: { sourceIP: {} } }\n  healthCheck:\n    active: { tcp: {}, interval: 1s }\n",
        ),
    );
    dir.write("r.yaml", &tcp_route("redis", port, "redis", ""));
    let _gw = Running::start(dir.path(), &[port]);
    connect(port).await;

    // 10,000 commands in one pipelined write (redis-cli --pipe sends the raw protocol).
    let mut resp = Vec::new();
    for i in 0..10_000 {
        let (k, v) = (format!("key:{i}"), format!("value-{i}"));
        resp.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    let piped = tokio::task::spawn_blocking(move || redis_cli(port, &["--pipe"], &resp))
        .await
        .unwrap();
    assert!(piped.contains("errors: 0, replies: 10000"), "{piped}");
    let got = redis_cli(port, &["GET", "key:9999"], b"");
    assert_eq!(got.trim(), "value-9999");

    // A 4 MiB value, in and out (-x reads the last argument from stdin).
    let big: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let big2 = big.clone();
    let set = tokio::task::spawn_blocking(move || redis_cli(port, &["-x", "SET", "big"], &big2))
        .await
        .unwrap();
    assert_eq!(set.trim(), "OK");
    let len = redis_cli(port, &["STRLEN", "big"], b"");
    assert_eq!(len.trim(), big.len().to_string());
    let back =
        tokio::task::spawn_blocking(move || redis_cli(port, &["--no-raw", "GET", "big"], b""))
            .await
            .unwrap();
    assert_eq!(back.trim().trim_matches('"').as_bytes(), &big[..]);
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (scripts/test.sh installs them)"]
async fn a_backend_dying_mid_stream_closes_the_client_and_new_connections_go_elsewhere() {
    let mut dying = RedisServer::start().await;
    let healthy = RedisServer::start().await;
    let port = free_port();
    let dir = ConfigDir::new();
    // Passive health: one failed connect ejects the dead endpoint.
    dir.write(
        "b.yaml",
        &tcp_backend(
            "redis",
            &[dying.addr()],
            "  healthCheck:\n    passive: { consecutiveFailures: 1, ejectionTime: 60s, maxEjectionPercent: 100 }\n",
        ),
    );
    dir.write("r.yaml", &tcp_route("redis", port, "redis", ""));
    let gw = Running::start(dir.path(), &[port]);
    let mut s = connect(port).await;
    s.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+PONG\r\n");

    let _ = dying.child.kill();
    let _ = dying.child.wait();
    assert!(closed(&mut s).await, "the client sees the backend go");

    // A new connection finds no endpoint to connect to: closed, and counted.
    let mut t = connect(port).await;
    assert!(closed(&mut t).await);
    eventually(Duration::from_secs(5), "connect_failed counted", || async {
        (gw.metric("tidegate_l4_connections_total{route=\"default/redis\",backend=\"default/redis\",result=\"connect_failed\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;

    // Both endpoints listed: the dead one is ejected after its failed connect, every new
    // connection reaches the live one.
    dir.write(
        "b.yaml",
        &tcp_backend(
            "redis",
            &[dying.addr(), healthy.addr()],
            "  healthCheck:\n    passive: { consecutiveFailures: 1, ejectionTime: 60s, maxEjectionPercent: 100 }\n",
        ),
    );
    eventually(Duration::from_secs(10), "the live endpoint", || async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        (&buf == b"+PONG\r\n").then_some(())
    })
    .await;
    for _ in 0..10 {
        let mut s = connect(port).await;
        s.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("an answer within 5s")
            .unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    }
}

/// A TLS Route shows the HTTPS listener's port in `/config`; without an HTTPS listener it is
/// refused with a diagnostic naming the reason (not left unserved in silence).
#[tokio::test]
async fn tls_routes_show_the_https_port_and_are_refused_without_https() {
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &format!(
            "{}---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: pass }}\nspec:\n  protocol: TLS\n  hostnames: [db.test]\n  backendRefs: [{{ name: db }}]\n",
            tcp_backend("db", &["127.0.0.1:9".parse().unwrap()], "")
        ),
    );
    let gw = Running::start(dir.path(), &[]);
    let config: serde_json::Value = serde_json::from_str(&gw.admin_get("/config").await).unwrap();
    let l4 = config["l4"].as_array().expect("an l4 list");
    assert_eq!(l4.len(), 1, "{config}");
    assert_eq!(l4[0]["port"], gw.https.port(), "{}", l4[0]);

    // The library's gateway has no HTTPS listener unless asked for one.
    let gw = common::gateway(dir.path()).await;
    let admin = gw.admin_addr().unwrap();
    let body = common::HttpClient::http1()
        .get(admin, "admin", "/config", &[])
        .await
        .body;
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["l4"].as_array().map_or(0, Vec::len), 0, "{config}");
    let diagnostics = config["diagnostics"].to_string();
    assert!(
        diagnostics.contains("spec.protocol") && diagnostics.contains("--https-addr off"),
        "{diagnostics}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
