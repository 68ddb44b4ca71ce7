//! Allocations per proxied HTTP/1.1 request on the native path (none, issue #16's target for a
//! request with at most 16 headers): a gateway, a keep-alive upstream and a keep-alive client on
//! one thread (a current-thread runtime), with an allocator that counts that thread's
//! allocations. The client and the upstream reuse their buffers and allocate nothing per
//! request, so what is counted is the gateway's. `cargo test --test h1_alloc -- --nocapture`
//! prints the figure; the test fails on any allocation.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The upstream's answer's body; the client reads until its end.
const BODY: &str = "tidegate h1_alloc upstream: a fixed body, newline included, ending with END.\n";
const END: &[u8] = b"END.\n";

/// A request as a browser-like client sends it: 16 headers (issue #16's bound), names in
/// mixed case, four of them not among the standard names.
const REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: example.test\r\n\
User-Agent: h1-alloc/1.0\r\naccept: application/json\r\naccept-language: en\r\n\
accept-encoding: gzip\r\ncache-control: no-cache\r\nx-tenant: blue\r\n\
cookie: session=abc123\r\nreferer: http://example.test/\r\nconnection: keep-alive\r\n\
Sec-Fetch-Mode: cors\r\nsec-fetch-site: same-origin\r\nsec-fetch-dest: empty\r\n\
dnt: 1\r\nupgrade-insecure-requests: 1\r\npragma: no-cache\r\n\r\n";

/// Answers every request on each connection with [`BODY`], reading into one buffer.
async fn upstream(listener: TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            );
            let mut buf = vec![0u8; 16 * 1024];
            let mut have = 0;
            loop {
                match conn.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => have += n,
                }
                // One request at a time, without a body: answer each complete head.
                while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..have, 0);
                    have -= end + 4;
                }
            }
        });
    }
}

/// Sends [`REQUEST`] and reads until the body's end; false when the answer is not a 200.
async fn exchange(client: &mut TcpStream, buf: &mut [u8]) -> bool {
    client.write_all(REQUEST).await.unwrap();
    let mut have = 0;
    loop {
        let n = client.read(&mut buf[have..]).await.unwrap();
        assert!(n > 0, "the gateway closed the connection");
        have += n;
        if buf[..have].ends_with(END) {
            return buf.starts_with(b"HTTP/1.1 200 ");
        }
        if have >= 12 && !buf.starts_with(b"HTTP/1.1 200 ") {
            panic!("{}", String::from_utf8_lossy(&buf[..have]));
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_proxied_request_allocates_at_most_its_budget() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(upstream(listener));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: up }}\nspec:\n  endpoints: [\"{up}\"]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: api }}\nspec:\n  hostnames: [example.test]\n  rules:\n    - matches: [{{ path: {{ type: PathPrefix, value: /api }} }}]\n      backendRefs: [{{ name: up }}]\n"
        ),
    )
    .unwrap();
    let gw = tidegate::Gateway::builder()
        .config_path(dir.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .https_addr(None)
        .admin_addr(None)
        .watch(false)
        .start()
        .await
        .expect("gateway starts");
    let mut client = TcpStream::connect(gw.http_addr()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    // Warm up: the upstream connection, the route's series, the buffers' first growth, and
    // both per-thread chunks the made header values are cut from (4 KiB each; a request id,
    // 32 bytes, per request: the second is made after ~130 requests).
    for _ in 0..400 {
        assert!(
            exchange(&mut client, &mut buf).await,
            "a 200 through the gateway"
        );
    }
    const REQUESTS: u64 = 2000;
    let before = allocations();
    for _ in 0..REQUESTS {
        assert!(exchange(&mut client, &mut buf).await);
    }
    let made = allocations() - before;
    println!(
        "allocations per proxied request (native HTTP/1.1, 16 headers, access log off): {:.2} ({made} in {REQUESTS} requests)",
        made as f64 / REQUESTS as f64
    );
    // Issue #16's target, met: none. On 2026-12-01 it was 17, then 3 (the header values the
    // proxy makes cut from per-thread chunks; the connection's buffers and the parsed heads'
    // header maps kept per thread between requests; the trace id inline; the endpoint's URI
    // authority parsed once), then 0 (the request's future and its parsed head in blocks the
    // thread keeps, header names the client spelled before kept per thread, a used-up chunk
    // of made values written again once its values are gone).
    assert_eq!(made, 0, "allocations in {REQUESTS} proxied requests");
    drop(gw);
}
