//! Soak: the real binary under steady load while its configuration changes over and over and
//! every endpoint of its backend is replaced; no request may fail, and memory and file
//! descriptors must stay flat.
//!
//! The short form runs with every `cargo test` (20,000 requests, 40 configuration changes, the
//! endpoint window moving every 10, so that every endpoint is replaced). `bash scripts/test.sh
//! --soak` runs the long form in a release build (10,000,000 requests, 1,000 changes); the sizes
//! come from `TIDEGATE_SOAK_REQUESTS` and `TIDEGATE_SOAK_CHANGES`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ConfigDir, Upstream, eventually};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIN: &str = env!("CARGO_BIN_EXE_tidegate");
/// Client connections kept busy at once.
const CONCURRENCY: usize = 16;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The process's resident memory (KiB) and open file descriptors.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Configuration `generation`: the Backend's two endpoints (a window over the upstreams that
/// moves one step every `rotate_every` generations) and a header that names the generation.
fn config(upstreams: &[SocketAddr], generation: u64, rotate_every: u64) -> (String, String) {
    let step = (generation / rotate_every) as usize;
    let pick = |i: usize| upstreams[(step + i) % upstreams.len()];
    let backend = format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: api }}\nspec:\n  endpoints: [\"{}\", \"{}\"]\n",
        pick(0),
        pick(1)
    );
    let route = format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: soak }}\nspec:\n  hostnames: [soak.test]\n  rules:\n    - filters: [{{ requestHeaderModifier: {{ set: [{{ name: x-generation, value: \"{generation}\" }}] }} }}]\n      backendRefs: [{{ name: api }}]\n"
    );
    (backend, route)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_churn_and_endpoint_rotation_under_load_fail_nothing_and_leak_nothing() {
    let total = env_or("TIDEGATE_SOAK_REQUESTS", 20_000);
    let changes = env_or("TIDEGATE_SOAK_CHANGES", 40);
    let rotate_every = (changes / 4).max(1);
    let names = ["a", "b", "c", "d"];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(Upstream::start(name).await);
    }
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();

    let dir = ConfigDir::new();
    let (backend, route) = config(&addrs, 0, rotate_every);
    dir.write("backend.yaml", &backend);
    dir.write("route.yaml", &route);
    let (http, admin) = (free_addr(), free_addr());
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.path())
        .args([
            "--http-addr",
            &http.to_string(),
            "--admin-addr",
            &admin.to_string(),
            // Not the default 0.0.0.0:8443, which parallel tests would share.
            "--https-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--access-log",
            "off",
            "--log-level",
            "warn",
            "--worker-threads",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _gateway = Gateway(child);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http();
    let version = {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("http://{admin}/readyz").parse().unwrap())
                    .await
                    .ok()?;
                let body = r.into_body().collect().await.ok()?.to_bytes();
                let text = String::from_utf8_lossy(&body).into_owned();
                text.split("configuration version ")
                    .nth(1)?
                    .split([')', ';'])
                    .next()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            }
        }
    };
    eventually(Duration::from_secs(20), "the gateway ready", &version).await;

    // The load: CONCURRENCY clients, each a keep-alive loop, until `total` requests are done.
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut load = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, done, failures) = (client.clone(), done.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            while done.fetch_add(1, Ordering::Relaxed) < total {
                let req = http::Request::get(format!("http://{http}/"))
                    .header("host", "soak.test")
                    .body(Empty::new())
                    .unwrap();
                let outcome = match client.request(req).await {
                    Ok(r) => {
                        let (parts, body) = r.into_parts();
                        let ok = body.collect().await.is_ok();
                        let upstream = parts.headers.contains_key("x-upstream");
                        if parts.status == 200 && ok && upstream {
                            None
                        } else {
                            Some(format!("{} (body read: {ok})", parts.status))
                        }
                    }
                    Err(e) => Some(format!("{e:?}")),
                };
                if let Some(f) = outcome {
                    failures.lock().unwrap().push(f);
                }
            }
        }));
    }

    // The churn: `changes` configurations, each waited for (published) before the next,
    // spread over the run; the endpoint window moves every `rotate_every` changes.
    let mut warm = None;
    let mut peak = (0, 0);
    let mut published = version().await.unwrap_or(0);
    for generation in 1..=changes {
        let due = total * generation / (changes + 1);
        while done.load(Ordering::Relaxed) < due {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let now = usage(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        if warm.is_none() && done.load(Ordering::Relaxed) >= total / 10 {
            warm = Some(now);
        }
        let (backend, route) = config(&addrs, generation, rotate_every);
        if generation % rotate_every == 0 {
            dir.write("backend.yaml", &backend);
        }
        dir.write("route.yaml", &route);
        published = eventually(Duration::from_secs(10), "the change published", || {
            let version = version.clone();
            async move { version().await.filter(|v| *v > published) }
        })
        .await;
    }
    for l in load {
        l.await.unwrap();
    }
    let elapsed = started.elapsed();
    let end = usage(pid);
    let warm = warm.unwrap_or(end);
    let failures = failures.lock().unwrap();
    let served: usize = upstreams.iter().map(|u| u.hits()).sum();
    let per_upstream: Vec<usize> = upstreams.iter().map(|u| u.hits()).collect();
    eprintln!(
        "soak: {total} requests in {elapsed:.1?} ({:.0}/s), {changes} configuration changes \
         (published up to version {published}), endpoints rotated {} times; per upstream \
         {per_upstream:?}; RSS warm {} KiB, end {} KiB, peak {} KiB; fds warm {}, end {}, peak {}",
        total as f64 / elapsed.as_secs_f64(),
        changes / rotate_every,
        warm.0,
        end.0,
        peak.0,
        warm.1,
        end.1,
        peak.1,
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(served as u64, total, "every request reached an upstream");
    assert!(
        per_upstream.iter().all(|n| *n > 0),
        "a full rotation: every upstream served ({per_upstream:?})"
    );
    // Flat: no growth with the number of requests or changes beyond allocator noise.
    assert!(
        end.0 <= warm.0 + (warm.0 / 4).max(8 * 1024),
        "RSS grew from {} to {} KiB",
        warm.0,
        end.0
    );
    assert!(
        end.1 <= warm.1 + 8,
        "open file descriptors grew from {} to {}",
        warm.1,
        end.1
    );
}
