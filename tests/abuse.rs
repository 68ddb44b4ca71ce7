//! Abuse through the real binary: slow request bodies, clients that never read their response,
//! and (with Python's `h2` package, `tests/abuse/h2_abuse.py`) HTTP/2 floods — each while
//! normal clients keep getting answers.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::Binary;
use common::{ConfigDir, HttpClient, backend_yaml, eventually, route_yaml};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that reads the whole request body before it answers `read N bytes`.
async fn reading_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let n = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes().len(),
                        Err(_) => 0,
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "read {n} bytes"
                    )))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A config dir with Backend `up` at `upstream` and a Route for `/` (rule lines `extra`).
fn config(upstream: SocketAddr, extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[upstream]) + &route_yaml("r", "/", "up", extra)),
    );
    cfg
}

/// Reads until the gateway closes the connection (or `limit` passes: a failure).
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .expect("the gateway answers and closes in time")
        .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

/// A POST announcing 100 bytes that sends 10 and stalls: 408 once the body read timeout passes
/// (not before), the connection closed, and the reason counted; a normal request is served
/// meanwhile. `codec`: `--http1-codec`; `rule`: extra rule lines (a retry policy makes the
/// gateway buffer the body instead of streaming it).
async fn a_stalled_body_is_cut(codec: &str, rule: &str) {
    let up = reading_upstream().await;
    let cfg = config(up, rule);
    let gw = Binary::start(
        cfg.path(),
        &["--body-read-timeout", "1s", "--http1-codec", codec],
    );
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let started = Instant::now();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let other = HttpClient::http1().get(gw.http, "h", "/", &[]).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (StatusCode::OK, "read 0 bytes")
    );
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        answer.contains("the request body stopped arriving"),
        "{answer:?}"
    );
    assert!(took >= Duration::from_secs(1), "cut after {took:?}");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    assert_eq!(gw.requests_with("code=\"408\"").await, 1);
    assert_eq!(gw.requests_with("reason=\"client_body_timeout\"").await, 1);
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_with_408_native_codec() {
    a_stalled_body_is_cut("native", "").await;
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_with_408_hyper_codec() {
    a_stalled_body_is_cut("hyper", "").await;
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_with_408_when_buffered_for_retries() {
    a_stalled_body_is_cut(
        "native",
        "      retry: { attempts: 2, nonIdempotent: true, backoff: { base: 1ms } }\n",
    )
    .await;
}

/// The timeout is between reads, not for the whole body: a body that keeps arriving, slowly,
/// gets through (here 2.4 s for a body with a 1 s timeout).
#[tokio::test]
async fn a_slow_body_that_keeps_arriving_is_not_cut() {
    let up = reading_upstream().await;
    let cfg = config(up, "");
    let gw = Binary::start(cfg.path(), &["--body-read-timeout", "1s"]);
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 8\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    for byte in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("read 8 bytes"), "{answer:?}");
}

/// Over HTTP/2 the stalled stream is answered 408 and the connection keeps serving.
#[tokio::test]
async fn a_stalled_h2_request_body_is_cut_and_the_connection_keeps_serving() {
    let up = reading_upstream().await;
    let cfg = config(up, "");
    let gw = Binary::start(cfg.path(), &["--body-read-timeout", "1s"]);
    let io = TokioIo::new(TcpStream::connect(gw.http).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) =
        futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
    let mut tx = tx;
    futures::SinkExt::send(
        &mut tx,
        Ok(http_body::Frame::data(Bytes::from_static(b"0123456789"))),
    )
    .await
    .unwrap();
    let stalled = Request::post("http://h/upload")
        .header("content-length", "100")
        .body(StreamBody::new(rx).boxed())
        .unwrap();
    let started = Instant::now();
    let stalled = send.send_request(stalled);
    let fine = Request::post("http://h/")
        .body(
            Full::new(Bytes::from_static(b"abc"))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let fine = send.send_request(fine).await.unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
    let resp = tokio::time::timeout(Duration::from_secs(10), stalled)
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_secs(1));
    drop(tx);
    let again = Request::get("http://h/")
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let again = send.send_request(again).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

/// An upstream that answers every request with a 1 GiB body, written as fast as it is taken;
/// `written` counts the bytes the upstream got out.
async fn endless_upstream(written: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let written = written.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let total: u64 = 1 << 30;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < total {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                    written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    addr
}

/// Waits until `written` stops growing (unchanged for a second) and returns it.
async fn settled(written: &AtomicU64) -> u64 {
    let last = std::sync::Mutex::new((u64::MAX, Instant::now()));
    eventually(
        Duration::from_secs(30),
        "the upstream to be held back",
        || {
            let now = written.load(Ordering::Relaxed);
            let mut last = last.lock().unwrap();
            let settled = if now != last.0 {
                *last = (now, Instant::now());
                None
            } else {
                (last.1.elapsed() >= Duration::from_secs(1)).then_some(now)
            };
            async move { settled }
        },
    )
    .await
}

/// Clients that ask for a 1 GiB response and never read it: the gateway reads from the
/// upstream only as fast as the client takes (kernel socket buffers and a bounded amount in
/// the gateway), so neither memory nor what the upstream gets out grows with the response —
/// over HTTP/1.1 (both codecs) and HTTP/2 (flow control). Normal requests are served meanwhile.
async fn a_client_that_never_reads_pins_no_memory(codec: &str) {
    let written = Arc::new(AtomicU64::new(0));
    let up = endless_upstream(written.clone()).await;
    let normal = reading_upstream().await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("big", &[up])
            + &backend_yaml("small", &[normal])
            + &route_yaml("big", "/big", "big", "")
            + &route_yaml("small", "/small", "small", "")),
    );
    let gw = Binary::start(cfg.path(), &["--http1-codec", codec]);
    // Warm: the first requests allocate what every request needs.
    for _ in 0..20 {
        let r = HttpClient::http1().get(gw.http, "h", "/small", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let before = gw.rss_kib();

    // Eight HTTP/1.1 clients and one HTTP/2 connection with eight streams; none reads.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: h\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    let io = TokioIo::new(TcpStream::connect(gw.http).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for _ in 0..8 {
        let req = Request::get("http://h/big")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        streams.push(resp); // Its body is never polled: no window update is sent.
    }

    let total = settled(&written).await;
    let after = gw.rss_kib();
    // 16 responses of 1 GiB each; what got out of the upstream is what fits in socket buffers
    // (a few MiB per connection on loopback) and the gateway's bounded buffers.
    assert!(total < 256 << 20, "the upstream wrote {} MiB", total >> 20);
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let r = HttpClient::http1().get(gw.http, "h", "/small", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "read 0 bytes")
    );
    eprintln!(
        "{codec}: upstream wrote {} MiB for 16 unread 1 GiB responses; RSS {before} -> {after} KiB",
        total >> 20
    );
    drop((held, streams));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_pin_no_memory_native_codec() {
    a_client_that_never_reads_pins_no_memory("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_pin_no_memory_hyper_codec() {
    a_client_that_never_reads_pins_no_memory("hyper").await;
}

/// One HTTP/2 attack at a time: each floods the machine, and the latency of the normal clients
/// running beside it is measured.
static H2_ATTACKS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the normal clients saw while an attack ran.
#[derive(Debug, Default)]
struct Normal {
    ok: u64,
    failed: Vec<String>,
    slowest: Duration,
}

/// Runs `tests/abuse/h2_abuse.py ATTACK` against the binary while one HTTP/1.1 and one HTTP/2
/// client keep sending requests; the script checks the gateway's reaction to the attack, this
/// checks that every normal request was answered, promptly, and that memory stayed flat.
async fn h2_attack(attack: &str) {
    let _one_at_a_time = H2_ATTACKS.lock().await;
    let up = reading_upstream().await;
    let cfg = config(up, "");
    let gw = Binary::start(
        cfg.path(),
        &["--body-read-timeout", "3s", "--max-header-bytes", "65536"],
    );
    let warm = HttpClient::h2c().get(gw.http, "h", "/", &[]).await;
    assert_eq!(warm.status, StatusCode::OK);
    let before = gw.rss_kib();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut normal = Vec::new();
    for client in [HttpClient::http1(), HttpClient::h2c()] {
        let (stop, http) = (stop.clone(), gw.http);
        normal.push(tokio::spawn(async move {
            let mut seen = Normal::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.send(
                        Request::get(format!("http://{http}/"))
                            .header("host", "h")
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    ),
                )
                .await;
                seen.slowest = seen.slowest.max(started.elapsed());
                match r {
                    Ok(Ok(r)) if r.status == StatusCode::OK => seen.ok += 1,
                    Ok(Ok(r)) => seen.failed.push(format!("{}: {}", r.status, r.body)),
                    Ok(Err(e)) => seen.failed.push(e.to_string()),
                    Err(_) => seen.failed.push("no answer within 10 s".into()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }));
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/abuse/h2_abuse.py");
    let port = gw.http.port().to_string();
    let attack_name = attack.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &port, &attack_name])
            .output()
            .expect("python3 runs (scripts/test.sh installs it and the h2 package)")
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut seen = Normal::default();
    for n in normal {
        let n = n.await.unwrap();
        seen.ok += n.ok;
        seen.failed.extend(n.failed);
        seen.slowest = seen.slowest.max(n.slowest);
    }
    let after = gw.rss_kib();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the h2 package is missing (pip install h2; scripts/test.sh installs it): {stderr}"
    );
    assert!(out.status.success(), "{attack}: {stdout}{stderr}");
    eprintln!(
        "{attack}: {} | normal requests: {} answered, slowest {:?} | RSS {before} -> {after} KiB",
        stdout.trim(),
        seen.ok,
        seen.slowest
    );
    assert!(
        seen.failed.is_empty(),
        "{attack}: normal requests failed: {seen:?}"
    );
    assert!(seen.ok >= 10, "{attack}: too few normal requests: {seen:?}");
    assert!(
        seen.slowest < Duration::from_secs(3),
        "{attack}: a normal request took {:?}",
        seen.slowest
    );
    assert!(
        after < before + 32 * 1024,
        "{attack}: RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_rapid_reset_closes_the_connection() {
    h2_attack("rapid-reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_continuation_flood_is_cut_at_the_header_limit() {
    h2_attack("continuation-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_empty_continuation_flood_is_cut() {
    h2_attack("empty-continuation-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_settings_flood_costs_no_memory() {
    h2_attack("settings-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_ping_flood_costs_no_memory() {
    h2_attack("ping-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_oversized_header_blocks_get_431_or_close_the_connection() {
    h2_attack("oversized-headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the h2 package; run scripts/test.sh"]
async fn h2_streams_beyond_the_limit_are_refused() {
    h2_attack("stream-limit").await;
}
