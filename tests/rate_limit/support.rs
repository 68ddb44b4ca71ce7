//! Helpers shared by the rate-limit tests: gateways, load, metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::binary::Binary;
use crate::common::{ConfigDir, HttpClient, Upstream, backend_yaml};

/// A free loopback port (for the binary's listeners, which take addresses as flags).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway in this process with `yaml` (plus a Backend `up`) and `config`.
pub struct Local {
    pub gw: tidegate::Gateway,
    pub cfg: ConfigDir,
    pub up: Upstream,
}

impl Local {
    pub async fn start(yaml: &str, config: tidegate::proxy::ProxyConfig) -> Self {
        let up = Upstream::start("up").await;
        let cfg = ConfigDir::new();
        cfg.write("all.yaml", &(backend_yaml("up", &[up.addr]) + yaml));
        let gw = tidegate::Gateway::builder()
            .config_path(cfg.path())
            .http_addr("127.0.0.1:0".parse().unwrap())
            .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
            .proxy_config(config)
            .start()
            .await
            .expect("gateway starts");
        let table = gw.table().expect("a table");
        assert!(
            !table.has_errors(),
            "the test configuration is valid: {:?}",
            table.diagnostics
        );
        Self { gw, cfg, up }
    }

    pub fn http(&self) -> SocketAddr {
        self.gw.http_addr()
    }

    pub fn admin(&self) -> SocketAddr {
        self.gw.admin_addr().unwrap()
    }
}

/// A Route `r` (host `h`) with one rule named `api` to Backend `up`, and a RateLimitPolicy
/// `p` on it with `limits` (YAML list items, indented for `limits:`) and `extra` spec lines.
pub fn limited_route(limits: &str, extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  hostnames: [h]\n  rules:\n    - name: api\n      backendRefs: [{{ name: up }}]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: p }}\nspec:\n  targetRef: {{ kind: Route, name: r }}\n  limits:\n{limits}{extra}"
    )
}

/// What a burst of load got.
#[derive(Debug, Default)]
pub struct Tally {
    pub allowed: u64,
    pub limited: u64,
    pub other: u64,
    /// From the first request sent to the last answer.
    pub elapsed: Duration,
}

/// `clients` connections each sending GET `/` to `addrs` (round robin per request) for
/// `duration`, with `headers`.
pub async fn hammer(
    addrs: &[SocketAddr],
    headers: &[(&'static str, String)],
    clients: usize,
    duration: Duration,
) -> Tally {
    let allowed = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (allowed, limited, other) = (allowed.clone(), limited.clone(), other.clone());
        let addrs = addrs.to_vec();
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let http = HttpClient::http1();
            let mut i = c;
            while started.elapsed() < duration {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = http.get(addrs[i % addrs.len()], "h", "/", &h).await;
                i += 1;
                match r.status {
                    StatusCode::OK => allowed.fetch_add(1, Ordering::Relaxed),
                    StatusCode::TOO_MANY_REQUESTS => limited.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Tally {
        allowed: allowed.load(Ordering::Relaxed),
        limited: limited.load(Ordering::Relaxed),
        other: other.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// Checks that `tally` admitted no more than a token bucket allows (`burst + rate × t`) and at
/// least 95% of it.
pub fn assert_exact(tally: &Tally, rate_per_s: f64, burst: f64) {
    let ceiling = burst + rate_per_s * tally.elapsed.as_secs_f64();
    let allowed = tally.allowed as f64;
    assert!(
        allowed <= ceiling + 1.0,
        "{tally:?}: more than {ceiling:.1}"
    );
    assert!(
        allowed >= 0.95 * ceiling,
        "{tally:?}: less than 95% of {ceiling:.1}"
    );
    assert!(
        tally.limited > 0,
        "{tally:?}: the load was not enough to be limited"
    );
}

/// One sample of the gateway's metrics at `admin` (counters without `_total`).
pub async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let r = HttpClient::http1()
        .get(admin, "admin", "/metrics", &[])
        .await;
    let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned())))
        .expect("a valid exposition");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The `tidegate` binary, serving a config directory, ready.
pub struct Gateway(Binary);

impl std::ops::Deref for Gateway {
    type Target = Binary;

    fn deref(&self) -> &Binary {
        &self.0
    }
}

impl Gateway {
    /// Starts the binary with `args` and `env` and waits until it is ready.
    pub async fn start(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let b = Binary::run(config)
            .args(args)
            .env(&[("RUST_LOG", "info")])
            .env(env)
            .start();
        Self(b.ready().await)
    }

    /// GET `path` (host `h`), and how long the answer took.
    pub async fn get(&self, path: &str) -> (crate::common::Reply, Duration) {
        let started = Instant::now();
        let r = HttpClient::http1().get(self.http, "h", path, &[]).await;
        (r, started.elapsed())
    }
}
