//! Helpers shared by the rate-limit tests: gateways, load, metrics.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::{ConfigDir, HttpClient, Upstream, backend_yaml, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_tidegate");

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

/// The `tidegate` binary, serving a config directory.
pub struct Gateway {
    child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts the binary on loopback port 0 and waits until it is ready (its "serving" log
    /// line names the bound addresses).
    pub async fn start(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--access-log", "off"])
            .arg("--config")
            .arg(config)
            .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--https-addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("TIDEGATE_REDIS_URL")
            .env_remove("TIDEGATE_TRUSTED_PROXIES")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "serving" {
                    let addr = |k: &str| v[k].as_str().and_then(|a| a.parse().ok());
                    let _ = tx.send((addr("http"), addr("admin")));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (http, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((Some(http), Some(admin))) => (http, admin),
            other => panic!(
                "tidegate did not start serving ({other:?}):\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        let gw = Self {
            child,
            http,
            admin,
            logs,
        };
        eventually(Duration::from_secs(20), "the gateway is ready", || async {
            let c = HttpClient::http1();
            let r = c.send(
                http::Request::get(format!("http://{admin}/readyz"))
                    .body(Default::default())
                    .unwrap(),
            );
            r.await.ok().filter(|r| r.status == 200).map(|_| ())
        })
        .await;
        gw
    }

    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub async fn get(&self, path: &str) -> (crate::common::Reply, Duration) {
        let started = Instant::now();
        let r = HttpClient::http1().get(self.http, "h", path, &[]).await;
        (r, started.elapsed())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
