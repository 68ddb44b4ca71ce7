//! Connection limits: oversized heads, slow heads and idle keep-alive connections.

mod common;

use std::time::{Duration, Instant};

use common::{ConfigDir, Upstream, backend_yaml};
use tidegate::proxy::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(config: ProxyConfig) -> (tidegate::Gateway, ConfigDir, Upstream) {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: r }\nspec:\n  rules:\n    - backendRefs: [{ name: up }]\n"),
    );
    let gw = tidegate::Gateway::builder()
        .config_path(cfg.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .proxy_config(config)
        .start()
        .await
        .unwrap();
    (gw, cfg, up)
}

/// Reads until the peer closes; returns what was read and how long it took.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .expect("the gateway closes the connection");
    (
        String::from_utf8_lossy(&buf).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let (gw, _cfg, up) = start(ProxyConfig {
        max_header_bytes: 16 * 1024,
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(gw.http_addr()).await.unwrap();
    let big = "x".repeat(32 * 1024);
    s.write_all(format!("GET / HTTP/1.1\r\nhost: h\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_after_the_header_read_timeout() {
    let (gw, _cfg, _up) = start(ProxyConfig {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(gw.http_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n").await.unwrap(); // never finished
    let (_, took) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (gw, _cfg, _up) = start(ProxyConfig {
        idle_timeout: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(gw.http_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (_, took) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_slow_upstream_answer_is_not_an_idle_connection() {
    let (gw, _cfg, _up) = start(ProxyConfig {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(gw.http_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: h\r\nx-delay-ms: 900\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &first, b"HTTP/1.1 200",
        "the request outlived the idle timeout"
    );
}
