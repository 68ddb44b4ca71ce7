//! UDP Routes through the real binary: `dig` through the gateway to real `dnsmasq` servers
//! (affinity by client address, sessions that expire, a dead backend taken out of rotation,
//! the session limit), and a small UDP echo for datagram sizes and Route removal.
//!
//! `scripts/test.sh` installs dnsmasq and dig (dnsutils); the tests that need them are
//! `#[ignore]`d for a plain `cargo test` and fail (never skip) when they are missing.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::binary::Binary;
use common::dnsmasq::{Dnsmasq, ZONE, free_port};
use common::{ConfigDir, eventually};
use tokio::net::UdpSocket;

/// A running `tidegate run` with `--l4-ports` for UDP (and TCP) ports on 127.0.0.1 (and the
/// configuration directory it was given, when it made it).
struct Running(Binary, Option<ConfigDir>);

impl Running {
    /// One UDP Route on a free port (returned) to Backend `name` over `endpoints`, with `backend`
    /// spec lines and `udp` settings (flow-mapping entries).
    fn route(name: &str, endpoints: &[SocketAddr], backend: &str, udp: &str) -> (Self, u16) {
        Self::route_with(name, endpoints, backend, udp, &[])
    }

    fn route_with(
        name: &str,
        endpoints: &[SocketAddr],
        backend: &str,
        udp: &str,
        extra: &[&str],
    ) -> (Self, u16) {
        let port = free_port();
        let dir = ConfigDir::new();
        dir.write("b.yaml", &udp_backend(name, endpoints, backend));
        dir.write("r.yaml", &udp_route(name, port, name, udp));
        let mut running = Self::start_with(dir.path(), &[port], &[], extra);
        running.1 = Some(dir);
        (running, port)
    }

    fn start(config: &Path, udp: &[u16], tcp: &[u16]) -> Self {
        Self::start_with(config, udp, tcp, &[])
    }

    fn start_with(config: &Path, udp: &[u16], tcp: &[u16], extra: &[&str]) -> Self {
        let mut ports: Vec<String> = udp.iter().map(|p| format!("127.0.0.1:{p}/udp")).collect();
        ports.extend(tcp.iter().map(|p| format!("127.0.0.1:{p}/tcp")));
        let ports = ports.join(",");
        Self(
            Binary::run(config)
                .args(&["--l4-ports", &ports])
                .args(extra)
                .start(),
            None,
        )
    }

    /// The value of the metric line that starts with `prefix` (0 when absent).
    async fn metric(&self, prefix: &str) -> f64 {
        let text = self.0.admin("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

fn udp_backend(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  protocol: UDP\n  endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

fn udp_route(name: &str, port: u16, backend: &str, udp: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  protocol: UDP\n  port: {port}\n  backendRefs: [{{ name: {backend} }}]\n  udp: {{ {udp} }}\n"
    )
}

/// A dnsmasq answering `who.tidegate.test` with `answer`.
fn dns_server(answer: &str) -> Dnsmasq {
    Dnsmasq::start(0, &format!("{answer} who.{ZONE}\n"))
}

/// `dig` from `source` (a loopback address) to the gateway's `port`: the answer, or `None`
/// when none came (one try, one second).
fn dig(port: u16, source: &str) -> Option<String> {
    let out = Command::new("dig")
        .args([
            "-b",
            source,
            "-p",
            &port.to_string(),
            "@127.0.0.1",
            &format!("who.{ZONE}"),
            "A",
            "+short",
            "+tries=1",
            "+time=1",
        ])
        .output()
        .expect("dig runs (apt-get install dnsutils; scripts/test.sh does)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty() && !text.starts_with(";;")).then_some(text)
}

/// `dig` until it answers (the UDP port opens when the configuration is loaded).
async fn dig_eventually(port: u16, source: &'static str) -> String {
    eventually(Duration::from_secs(10), "dig to answer", || async move {
        tokio::task::spawn_blocking(move || dig(port, source))
            .await
            .unwrap()
    })
    .await
}

/// A UDP echo: every datagram comes back as it is.
async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 70_000];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Sends `data` to the gateway's `port` from `socket` and waits up to `within` for the echo.
async fn echo_through(socket: &UdpSocket, port: u16, data: &[u8], within: Duration) -> bool {
    socket.send_to(data, ("127.0.0.1", port)).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(within, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => &buf[..n] == data,
        _ => false,
    }
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn dig_through_the_gateway_to_dnsmasq_and_the_admin_api_shows_the_route() {
    let dns = dns_server("10.1.1.1");
    let (gw, port) = Running::route("dns", &[dns.addr()], "", "idleTimeout: 30s");
    assert_eq!(dig_eventually(port, "127.0.0.1").await, "10.1.1.1");
    for _ in 0..3 {
        assert_eq!(dig(port, "127.0.0.1").as_deref(), Some("10.1.1.1"));
    }
    let labels = "route=\"default/dns\",backend=\"default/dns\"";
    // dig uses a new source port per query: a session each.
    assert!(
        gw.metric(&format!(
            "tidegate_l4_sessions_total{{{labels},result=\"forwarded\"}}"
        ))
        .await
            >= 4.0
    );
    for direction in ["to_backend", "to_client"] {
        let datagrams = gw
            .metric(&format!(
                "tidegate_l4_datagrams_total{{{labels},direction=\"{direction}\"}}"
            ))
            .await;
        assert!(datagrams >= 4.0, "{direction}: {datagrams}");
        let bytes = gw
            .metric(&format!(
                "tidegate_l4_bytes_total{{{labels},direction=\"{direction}\"}}"
            ))
            .await;
        assert!(bytes > datagrams * 20.0, "{direction}: {bytes} bytes");
    }
    assert!(
        gw.metric("tidegate_l4_open_sessions{route=\"default/dns\"}")
            .await
            >= 1.0
    );
    let config: serde_json::Value = serde_json::from_str(&gw.0.admin("/config").await).unwrap();
    let route = &config["l4"][0];
    assert_eq!(route["protocol"], "UDP", "{route}");
    assert_eq!(route["port"], port);
    assert_eq!(route["idleTimeout"], "30s");
    assert_eq!(route["udp"]["maxDatagramSize"], 65507);
    let backends = gw.0.admin("/backends").await;
    assert!(backends.contains("\"UDP\""), "{backends}");
    assert!(backends.contains(&dns.addr().to_string()), "{backends}");
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn clients_keep_their_backend_under_consistent_hash_on_the_source_ip() {
    let a = dns_server("10.0.0.1");
    let b = dns_server("10.0.0.2");
    let (_gw, port) = Running::route(
        "dns",
        &[a.addr(), b.addr()],
        "  loadBalancer: { algorithm: ConsistentHash, hashOn: { sourceIP: {} } }\n",
        "idleTimeout: 30s",
    );
    dig_eventually(port, "127.0.0.1").await;
    const CLIENTS: [&str; 12] = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
        "127.0.0.7",
        "127.0.0.8",
        "127.0.0.9",
        "127.0.0.10",
        "127.0.0.11",
        "127.0.0.12",
        "127.0.0.13",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for client in CLIENTS {
        // Each query comes from a new source port: a new session, the same backend.
        let answers: Vec<Option<String>> = (0..4).map(|_| dig(port, client)).collect();
        let first = answers[0].clone().expect("an answer");
        assert!(
            answers.iter().all(|a| a.as_deref() == Some(&first)),
            "{client}: {answers:?}"
        );
        seen.insert(first);
    }
    // Twelve addresses spread over both endpoints.
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn sessions_expire_after_the_idle_timeout() {
    let dns = dns_server("10.1.1.1");
    let (gw, port) = Running::route("dns", &[dns.addr()], "", "idleTimeout: 1s");
    dig_eventually(port, "127.0.0.1").await;
    dig(port, "127.0.0.2").unwrap();
    let open = "tidegate_l4_open_sessions{route=\"default/dns\"}";
    assert!(gw.metric(open).await >= 1.0);
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "every session to expire",
        || async { (gw.metric(open).await == 0.0).then_some(()) },
    )
    .await;
    // Not before the idle timeout (less the time the last dig took to return).
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn a_dead_backend_is_taken_out_of_rotation_passively() {
    let a = dns_server("10.0.0.1");
    let mut b = dns_server("10.0.0.2");
    // No replyTimeout: the dead server's port refuses datagrams (ICMP port unreachable).
    let (_gw, port) = Running::route(
        "dns",
        &[a.addr(), b.addr()],
        "  healthCheck: { passive: { consecutiveFailures: 1, ejectionTime: 60s } }\n",
        "idleTimeout: 30s",
    );
    dig_eventually(port, "127.0.0.1").await;
    let answers: Vec<Option<String>> = (0..6).map(|_| dig(port, "127.0.0.1")).collect();
    assert!(answers.contains(&Some("10.0.0.2".into())), "{answers:?}");
    b.stop();
    // A query may go to the dead one (refused) before it is ejected.
    let mut lost = 0;
    for _ in 0..6 {
        if dig(port, "127.0.0.1").is_none() {
            lost += 1;
        }
    }
    assert!(lost <= 2, "{lost} of 6 lost");
    for _ in 0..10 {
        assert_eq!(dig(port, "127.0.0.1").as_deref(), Some("10.0.0.1"));
    }
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn an_endpoint_that_does_not_answer_is_ejected_after_the_reply_timeout() {
    let a = dns_server("10.0.0.1");
    // Takes datagrams and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (gw, port) = Running::route(
        "dns",
        &[a.addr(), silent.local_addr().unwrap()],
        "  healthCheck: { passive: { consecutiveFailures: 1, ejectionTime: 60s } }\n",
        "idleTimeout: 30s, replyTimeout: 300ms",
    );
    dig_eventually(port, "127.0.0.1").await;
    let mut lost = 0;
    for _ in 0..4 {
        if dig(port, "127.0.0.1").is_none() {
            lost += 1;
        }
    }
    assert!(lost <= 1, "{lost} of 4 lost");
    for _ in 0..10 {
        assert_eq!(dig(port, "127.0.0.1").as_deref(), Some("10.0.0.1"));
    }
    let backends = gw.0.admin("/backends").await;
    assert!(backends.contains("ejectedUntil"), "{backends}");
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn a_dead_backend_is_taken_out_of_rotation_by_its_active_probe() {
    let a = dns_server("10.0.0.1");
    let mut b = dns_server("10.0.0.2");
    // dnsmasq answers on TCP too: a TCP probe of the same port.
    let (gw, port) = Running::route(
        "dns",
        &[a.addr(), b.addr()],
        "  healthCheck: { active: { tcp: {}, interval: 200ms, timeout: 100ms, unhealthyThreshold: 1 } }\n",
        "",
    );
    dig_eventually(port, "127.0.0.1").await;
    b.stop();
    let dead = b.addr().to_string();
    eventually(Duration::from_secs(10), "the probe to fail", || async {
        let v: serde_json::Value = serde_json::from_str(&gw.0.admin("/backends").await).ok()?;
        let endpoints = v.as_array()?.first()?["endpoints"].as_array()?.clone();
        endpoints
            .iter()
            .any(|e| e["address"] == dead.as_str() && e["activeHealthy"] == false)
            .then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(dig(port, "127.0.0.1").as_deref(), Some("10.0.0.1"));
    }
}

#[tokio::test]
#[ignore = "needs dnsmasq and dig (scripts/test.sh installs them)"]
async fn max_sessions_drops_the_datagrams_of_further_clients() {
    let dns = dns_server("10.1.1.1");
    let (gw, port) = Running::route("dns", &[dns.addr()], "", "idleTimeout: 60s, maxSessions: 1");
    // The one session: this socket's.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echoed = eventually(Duration::from_secs(10), "the first session", || async {
        // A DNS query for `who.tidegate.test` A (id 0x1234).
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["who", "tidegate", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        client.send_to(&q, ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(n, _)| n)
    })
    .await;
    assert!(echoed > 12);
    // Another client (dig's own source port) gets nothing, and the drop is counted.
    assert_eq!(dig(port, "127.0.0.1"), None);
    assert!(
        gw.metric(
            "tidegate_l4_dropped_datagrams_total{route=\"default/dns\",reason=\"max_sessions\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        gw.metric("tidegate_l4_open_sessions{route=\"default/dns\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn datagrams_over_the_size_limit_are_dropped_and_counted() {
    let echo = udp_echo().await;
    let (gw, port) = Running::route("echo", &[echo], "", "maxDatagramSize: 512");
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    eventually(Duration::from_secs(10), "the echo", || async {
        echo_through(&client, port, b"hello", Duration::from_millis(300))
            .await
            .then_some(())
    })
    .await;
    assert!(echo_through(&client, port, &[7u8; 512], Duration::from_secs(2)).await);
    assert!(!echo_through(&client, port, &[7u8; 513], Duration::from_millis(500)).await);
    assert_eq!(
        gw.metric(
            "tidegate_l4_dropped_datagrams_total{route=\"default/echo\",reason=\"too_large\"}"
        )
        .await,
        1.0
    );
    // The largest UDP payload passes with the default limit.
    let dir = gw.1.as_ref().unwrap();
    dir.write("r.yaml", &udp_route("echo", port, "echo", ""));
    eventually(Duration::from_secs(10), "the new limit", || async {
        echo_through(&client, port, &[9u8; 65507], Duration::from_millis(500))
            .await
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn removing_a_udp_route_closes_its_port_and_ends_its_sessions_without_touching_others() {
    let echo = udp_echo().await;
    let (kept, removed) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write("b.yaml", &udp_backend("echo", &[echo], ""));
    dir.write("kept.yaml", &udp_route("kept", kept, "echo", ""));
    dir.write("removed.yaml", &udp_route("removed", removed, "echo", ""));
    let gw = Running::start(dir.path(), &[kept, removed], &[]);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (socket, port) in [(&client, kept), (&other, removed)] {
        eventually(Duration::from_secs(10), "the echo", || async {
            echo_through(socket, port, b"hi", Duration::from_millis(300))
                .await
                .then_some(())
        })
        .await;
    }
    dir.remove("removed.yaml");
    eventually(Duration::from_secs(10), "the session to end", || async {
        (gw.metric("tidegate_l4_open_sessions{route=\"default/removed\"}")
            .await
            == 0.0)
            .then_some(())
    })
    .await;
    // The port is closed: nothing answers there, and the gateway can no longer hold it.
    assert!(!echo_through(&other, removed, b"hi", Duration::from_millis(300)).await);
    std::net::UdpSocket::bind(("127.0.0.1", removed)).expect("the port is free again");
    // The other Route's session went on, on the same socket.
    assert!(echo_through(&client, kept, b"still", Duration::from_secs(2)).await);
    assert_eq!(
        gw.metric(
            "tidegate_l4_sessions_total{route=\"default/kept\",backend=\"default/echo\",result=\"forwarded\"}"
        )
        .await,
        1.0
    );
}

/// A UDP echo on `ip` that answers `tag:` and the datagram.
async fn tagged_udp_echo(ip: &str, tag: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = [tag.as_bytes(), b":", &buf[..n]].concat();
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// An HTTP health endpoint on `ip:port`: 200 while `healthy`, else 503.
async fn health_server(
    ip: &str,
    port: u16,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = match healthy.load(std::sync::atomic::Ordering::Relaxed) {
                    true => "200 OK",
                    false => "503 Service Unavailable",
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
}

#[tokio::test]
async fn an_http_probe_on_another_port_takes_an_endpoint_out_of_rotation() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let a = tagged_udp_echo("127.0.0.2", "a").await;
    let b = tagged_udp_echo("127.0.0.3", "b").await;
    // The same health port on both hosts.
    let health = free_port();
    let b_healthy = Arc::new(AtomicBool::new(true));
    health_server("127.0.0.2", health, Arc::new(AtomicBool::new(true))).await;
    health_server("127.0.0.3", health, b_healthy.clone()).await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "b.yaml",
        &udp_backend(
            "echo",
            &[a, b],
            &format!(
                "  healthCheck: {{ active: {{ port: {health}, http: {{ path: /healthz }}, interval: 200ms, timeout: 100ms, healthyThreshold: 1, unhealthyThreshold: 1 }} }}\n"
            ),
        ),
    );
    dir.write("r.yaml", &udp_route("echo", port, "echo", ""));
    let gw = Running::start(dir.path(), &[port], &[]);
    // Round robin over both while both are healthy (a new client socket is a new session).
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually(
        Duration::from_secs(10),
        "both endpoints to answer",
        || async {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(b"q", ("127.0.0.1", port)).await.unwrap();
            let mut buf = [0u8; 64];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await
            {
                let mut seen = seen.lock().unwrap();
                seen.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
                return (seen.len() == 2).then_some(());
            }
            None
        },
    )
    .await;
    b_healthy.store(false, Ordering::Relaxed);
    let dead = b.to_string();
    eventually(Duration::from_secs(10), "b's probe to fail", || async {
        let v: serde_json::Value = serde_json::from_str(&gw.0.admin("/backends").await).ok()?;
        let endpoints = v.as_array()?.first()?["endpoints"].as_array()?.clone();
        endpoints
            .iter()
            .any(|e| e["address"] == dead.as_str() && e["activeHealthy"] == false)
            .then_some(())
    })
    .await;
    for _ in 0..10 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(echo_through_tagged(&client, port, "a:q").await);
    }
}

/// Sends `q` through the gateway's `port` and whether `want` comes back.
async fn echo_through_tagged(socket: &UdpSocket, port: u16, want: &str) -> bool {
    socket.send_to(b"q", ("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => &buf[..n] == want.as_bytes(),
        _ => false,
    }
}

#[tokio::test]
async fn on_sigterm_a_quiet_session_ends_without_waiting_for_the_drain_timeout() {
    let echo = udp_echo().await;
    let (mut gw, port) = Running::route_with(
        "echo",
        &[echo],
        "",
        "idleTimeout: 10m",
        &["--drain-timeout", "60s"],
    );
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    eventually(Duration::from_secs(10), "the echo", || async {
        echo_through(&client, port, b"hi", Duration::from_millis(300))
            .await
            .then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    gw.0.signal("TERM");
    // The session is quiet: it ends about a second after the drain starts, and the gateway
    // exits long before its 60 s drain timeout (or the 10 min idle timeout).
    let status = gw.0.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The port no longer answers.
    assert!(!echo_through(&client, port, b"hi", Duration::from_millis(300)).await);
}

/// A UDP endpoint that reads the PROXY protocol v2 header (IPv4, DGRAM) each datagram must
/// start with and answers `SOURCE DESTINATION-PORT|payload`, or `bad header` without one.
async fn proxy_protocol_echo() -> SocketAddr {
    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 70_000];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let d = &buf[..n];
            let reply = if n >= 28
                && d.starts_with(SIGNATURE)
                && d[12] == 0x21
                && d[13] == 0x12
                && d[14..16] == [0, 12]
            {
                let source = SocketAddr::from((
                    [d[16], d[17], d[18], d[19]],
                    u16::from_be_bytes([d[24], d[25]]),
                ));
                let destination_port = u16::from_be_bytes([d[26], d[27]]);
                let mut r = format!("{source} {destination_port}|").into_bytes();
                r.extend_from_slice(&d[28..]);
                r
            } else {
                b"bad header".to_vec()
            };
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// Sends `payload` to the gateway's `port` and waits briefly for the reply.
async fn ask(client: &UdpSocket, port: u16, payload: &str) -> Option<String> {
    client
        .send_to(payload.as_bytes(), ("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn a_backend_asking_for_proxy_protocol_v2_gets_the_client_on_every_datagram() {
    let echo = proxy_protocol_echo().await;
    let (gw, port) = Running::route("pp", &[echo], "  proxyProtocol: V2\n", "");
    let client = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let want = |payload: &str| format!("{} {port}|{payload}", client.local_addr().unwrap());
    let first = eventually(Duration::from_secs(10), "the first reply", || async {
        ask(&client, port, "one").await
    })
    .await;
    assert_eq!(first, want("one"));
    // The same session: the header again, the payload whole.
    assert_eq!(ask(&client, port, "two").await, Some(want("two")));
    let big = "x".repeat(400);
    assert_eq!(ask(&client, port, &big).await, Some(want(&big)));
    // The bytes counted are the client's, not the header's.
    let sent = gw
        .metric("tidegate_l4_bytes_total{route=\"default/pp\",backend=\"default/pp\",direction=\"to_backend\"}")
        .await;
    // 406 bytes sent (a few more if the first tries came before the port was open); with the
    // 28-byte headers counted it would be 490 or more.
    assert!((406.0..490.0).contains(&sent), "{sent}");
}
