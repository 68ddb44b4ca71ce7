//! An embedded gateway configured entirely in code: Routes and Backends built as Rust values
//! (no YAML), a custom load-balancing selector (active/standby: always the first usable
//! endpoint) and a custom health check (an in-process maintenance switch instead of an HTTP
//! probe). Starts two upstreams, shows the failover, applies a new set of objects at run time,
//! prints what came back and exits (CI runs it and fails if any step does not hold).
//!
//! Run it with `cargo run --example embedded`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidegate::api::{
    ActiveHealthCheck, Backend, BackendRef, BackendSpec, Empty, HealthCheck, PathMatch,
    PathMatchType, Route, RouteMatch, RouteRule, RouteSpec,
};
use tidegate::controller::code::Objects;
use tidegate::model::Endpoint;
use tidegate::proxy::balance::{EndpointList, PickContext, Selector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Active/standby: the first endpoint that may take traffic, in the order the Backend lists them.
struct FirstUsable;

impl Selector for FirstUsable {
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
        _: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        (0..endpoints.len()).find(|&i| usable(i))
    }
}

/// An upstream that answers every request with its name.
async fn upstream(name: &'static str) -> std::io::Result<SocketAddr> {
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
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}\n",
                        name.len() + 1
                    );
                    if conn.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The body of `GET path` through the gateway.
async fn get(at: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(at).await?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: example\r\nconnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    conn.read_to_string(&mut out).await?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or(&out).to_owned())
}

/// Polls `path` until its body is `want` (health checks run every 100 ms).
async fn until(at: SocketAddr, path: &str, want: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(at, path).await.map_err(|e| e.to_string())?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{path}: wanted {want:?}, still {got:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Backend over `endpoints`, probed every 100 ms.
fn backend(name: &str, endpoints: &[SocketAddr]) -> Backend {
    Backend::new(
        name,
        BackendSpec {
            endpoints: endpoints.iter().map(|a| a.to_string()).collect(),
            health_check: Some(HealthCheck {
                active: Some(ActiveHealthCheck {
                    // The probe kind is replaced by the custom check; timings still apply.
                    tcp: Some(Empty {}),
                    interval: Some(tidegate::api::Duration(Duration::from_millis(100))),
                    timeout: Some(tidegate::api::Duration(Duration::from_millis(50))),
                    healthy_threshold: Some(1),
                    unhealthy_threshold: Some(1),
                    ..Default::default()
                }),
                passive: None,
            }),
            ..Default::default()
        },
    )
}

/// A Route sending `prefix` to `backend`.
fn route(name: &str, prefix: &str, backend: &str) -> Route {
    Route::new(
        name,
        RouteSpec {
            rules: vec![RouteRule {
                matches: vec![RouteMatch {
                    path: Some(PathMatch {
                        kind: PathMatchType::PathPrefix,
                        value: prefix.into(),
                    }),
                    ..Default::default()
                }],
                backend_refs: vec![BackendRef {
                    name: backend.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (primary, standby) = (upstream("primary").await?, upstream("standby").await?);
    let v2 = upstream("v2").await?;
    let maintenance: Arc<Mutex<HashSet<String>>> = Arc::default();
    let switch = maintenance.clone();

    let objects = Objects::new()
        .backend(backend("app", &[primary, standby]))
        .route(route("app", "/", "app"));
    let gateway = tidegate::Gateway::builder()
        .objects(objects)
        .http_addr("127.0.0.1:0".parse()?)
        .admin_addr(None)
        .selector("default", "app", |_: &[Endpoint]| {
            Box::new(FirstUsable) as Box<dyn Selector>
        })
        .health_check("default", "app", move |endpoint: Endpoint| {
            let down = switch
                .lock()
                .map(|d| d.contains(&*endpoint.address))
                .unwrap_or(false);
            async move { !down }
        })
        .start()
        .await?;
    let at = gateway.http_addr();
    // Objects built in code are compiled like YAML: any problem is a diagnostic on its object.
    let diagnostics = gateway.table().map(|t| t.diagnostics.clone());
    for d in diagnostics.iter().flatten() {
        eprintln!("{d}");
    }
    assert!(diagnostics.is_some_and(|d| d.is_empty()));

    until(at, "/", "primary\n").await?;
    println!("active/standby: every request goes to the primary");
    maintenance.lock().unwrap().insert(primary.to_string());
    until(at, "/", "standby\n").await?;
    println!("primary in maintenance (custom health check): the standby serves");
    maintenance.lock().unwrap().clear();
    until(at, "/", "primary\n").await?;
    println!("primary back: it serves again");

    // New objects at run time: a second Route and Backend, built in code too.
    let version = gateway.table().map(|t| t.version).unwrap_or(0);
    let applied = gateway.apply(
        Objects::new()
            .backend(backend("app", &[primary, standby]))
            .backend(backend("v2", &[v2]))
            .route(route("app", "/", "app"))
            .route(route("v2", "/v2", "v2")),
    );
    assert!(applied);
    until(at, "/v2/", "v2\n").await?;
    let now = gateway.table().map(|t| t.version).unwrap_or(0);
    println!("applied new objects: table version {version} -> {now}, /v2 served by v2");
    assert!(now > version);

    gateway.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
