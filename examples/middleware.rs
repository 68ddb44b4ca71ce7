//! An embedded gateway with middleware: every response gets an `x-served-by` header, and
//! requests without an `x-api-key` are answered 401 before routing. Starts its own upstream,
//! sends three requests, prints what came back and exits (CI runs it).
//!
//! Run it with `cargo run --example middleware`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, request, response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The middleware: a key check in front of every route, and a header on every answer.
struct ApiKeys;

impl tidegate::Middleware for ApiKeys {
    fn on_request(&self, req: &mut request::Parts) -> Option<http::Response<Bytes>> {
        if req.headers.contains_key("x-api-key") {
            return None;
        }
        let mut answer = http::Response::new(Bytes::from_static(b"an x-api-key is required\n"));
        *answer.status_mut() = StatusCode::UNAUTHORIZED;
        Some(answer)
    }

    fn on_response(&self, resp: &mut response::Parts) {
        resp.headers
            .insert("x-served-by", HeaderValue::from_static("embedded-gateway"));
    }
}

/// A one-line HTTP/1.1 upstream.
async fn upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nupstream\n";
                    if conn.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Sends one request and returns the response's text.
async fn get(at: SocketAddr, extra: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(at).await?;
    let req = format!("GET / HTTP/1.1\r\nhost: example\r\n{extra}connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    conn.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let up = upstream().await?;
    let config = tempfile::tempdir()?;
    std::fs::write(
        config.path().join("all.yaml"),
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: app }}\nspec: {{ endpoints: [\"{up}\"] }}\n---\n\
             apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: app }}\nspec:\n  rules:\n    - backendRefs: [{{ name: app }}]\n"
        ),
    )?;
    let gateway = tidegate::Gateway::builder()
        .config_path(config.path())
        .http_addr("127.0.0.1:0".parse()?)
        .admin_addr(None)
        .middleware(ApiKeys)
        .start()
        .await?;
    let at = gateway.http_addr();

    let refused = get(at, "").await?;
    println!("without a key:\n{refused}");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let served = get(at, "x-api-key: k1\r\n").await?;
    println!("with a key:\n{served}");
    assert!(served.starts_with("HTTP/1.1 200") && served.ends_with("upstream\n"));
    assert!(served.contains("x-served-by: embedded-gateway"), "{served}");

    gateway.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
