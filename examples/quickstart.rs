//! The quickstart: two echo upstreams and a gateway on examples/quickstart/, all in one process.
//!
//! Run it with `cargo run --release --example quickstart`, then try the curl lines it prints.
//! The gateway is built through the library API ([`tidegate::Gateway::builder`]), the same engine
//! `tidegate run --config examples/quickstart` uses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Answers every request with its name, the method and path it saw, and a few headers.
async fn echo(name: &'static str, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let body = format!(
                        "{name}: {} {} (host {}, x-forwarded-for {}, x-gateway {})\n",
                        req.method(),
                        req.uri(),
                        h("host"),
                        h("x-forwarded-for"),
                        h("x-gateway"),
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tidegate::telemetry::init_logging(tidegate::telemetry::LogFormat::Text, "info");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart");
    echo("web-v1", "127.0.0.1:9001".parse()?).await?;
    echo("web-v2", "127.0.0.1:9002".parse()?).await?;
    let gateway = tidegate::Gateway::builder()
        .config_path(config)
        .http_addr("127.0.0.1:8080".parse()?)
        .admin_addr(Some("127.0.0.1:9090".parse()?))
        .start()
        .await?;
    let gw = gateway.http_addr();
    println!(
        "\nTidegate is serving {config} on http://{gw} (admin on http://{admin}).\nTry:\n\
         \n  curl -s http://{gw}/hello                       # 90% web-v1, 10% web-v2\
         \n  for i in $(seq 20); do curl -s http://{gw}/; done | sort | uniq -c\
         \n  curl -s -H 'x-version: v2' http://{gw}/hello     # header match: always web-v2\
         \n  curl -s http://{gw}/api/users                   # rewritten to /users on web-v1\
         \n  curl -si http://{gw}/maintenance                # directResponse 503\
         \n  curl -si http://{gw}/old/page                   # 301 to /new/page\
         \n  curl -s http://{admin}/config                   # the compiled table\
         \n\nEdit {config}/routes.yaml and save: the change is live at once. Ctrl-C stops.\n",
        admin = gateway
            .admin_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    );
    tokio::signal::ctrl_c().await?;
    gateway.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
