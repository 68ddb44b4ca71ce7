//! Global limits against a real Redis (`redis-server` from Debian), through the real binary:
//! exactness across two gateway processes, clock skew between them, Redis going away and
//! coming back, NOSCRIPT, TLS with a password, key TTLs.
//!
//! `scripts/test.sh` starts a Redis on a free loopback port and sets `TIDEGATE_TEST_REDIS_URL`;
//! tests that kill and restart Redis start their own `redis-server` (from PATH) on their own
//! port. Without them these tests fail, never pass.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::{ConfigDir, HttpClient, Upstream, backend_yaml, eventually};
use crate::support::{Gateway, assert_exact, free_port, hammer, metric};

/// The shared Redis `scripts/test.sh` started, without the buckets of namespace `ns` (an
/// earlier run's keys may not have expired yet).
fn shared_redis(ns: &str) -> String {
    let url = std::env::var("TIDEGATE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("TIDEGATE_TEST_REDIS_URL is not set: run these tests with scripts/test.sh");
    let mut conn = redis_conn(&url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("tidegate:rl:*:{ns}/*"))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
    }
    url
}

fn redis_server_bin() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .expect("redis-server is not on PATH (apt-get install redis-server; scripts/test.sh does)")
}

/// A private redis-server this test can kill, stop and restart.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(extra: &[&str]) -> Self {
        let mut s = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let tls = self.extra.iter().any(|a| a == "--tls-port");
        let port = if tls {
            "0".to_owned()
        } else {
            self.port.to_string()
        };
        let mut cmd = Command::new(redis_server_bin());
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .args(&self.extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server starts"));
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server listens on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: connections are reset, nothing answers.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: it kept nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A redis client for checks (not the gateway's).
fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("the test connects to Redis")
}

/// A config with a Route `r` (host `h`): rules `open` (`/open`) and `closed` (`/closed`),
/// each limited by its own policy of `limit` (one YAML limit, `scope: Global` added), with
/// failureMode Open and Closed; everything in namespace `ns` (Redis keys name it, so tests
/// sharing a Redis do not meet).
fn global_config(ns: &str, up: &Upstream, limit: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    let policy = |name: &str, rule: &str, mode: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  targetRef: {{ kind: Route, name: r, rule: {rule} }}\n  limits:\n    - {{ {limit}, scope: Global }}\n  failureMode: {mode}\n---\n"
        )
    };
    let yaml = backend_yaml("up", &[up.addr])
        .replace("metadata: {", &format!("metadata: {{ namespace: {ns},"))
        + &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r, namespace: {ns} }}\nspec:\n  hostnames: [h]\n  rules:\n    - name: open\n      matches: [{{ path: {{ value: /open }} }}]\n      backendRefs: [{{ name: up }}]\n    - name: closed\n      matches: [{{ path: {{ value: /closed }} }}]\n      backendRefs: [{{ name: up }}]\n---\n"
        )
        + &policy("open", "open", "Open")
        + &policy("closed", "closed", "Closed");
    cfg.write("all.yaml", &yaml);
    cfg
}

/// Fails if a gateway found Redis unavailable (then limits follow their failureMode, and
/// exactness is not what is being measured).
async fn assert_no_redis_errors(gateways: &[&Gateway]) {
    for gw in gateways {
        let errors = metric(gw.admin, "tidegate_redis_errors_total", &[]).await;
        assert!(
            errors.unwrap_or(0.0) == 0.0,
            "Redis errors: {errors:?}\n{}",
            gw.log()
        );
    }
}

/// A config whose only rule (`/`) is limited by one Global limit (namespace `ns`).
fn single_global(ns: &str, up: &Upstream, limit: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    let yaml = backend_yaml("up", &[up.addr])
        .replace("metadata: {", &format!("metadata: {{ namespace: {ns},"))
        + &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r, namespace: {ns} }}\nspec:\n  hostnames: [h]\n  rules:\n    - backendRefs: [{{ name: up }}]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: p, namespace: {ns} }}\nspec:\n  targetRef: {{ kind: Route, name: r }}\n  limits:\n    - {{ {limit}, scope: Global }}\n"
        );
    cfg.write("all.yaml", &yaml);
    cfg
}

#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn two_gateways_sharing_redis_admit_exactly_one_global_limit() {
    let url = shared_redis("exact");
    let up = Upstream::start("up").await;
    let cfg = single_global(
        "exact",
        &up,
        // A burst of one second: a stall of the load generator (a busy machine) shorter than
        // that loses no allowance, so the ≥ 95% bound measures the limiter, not the load.
        "name: all, key: { none: {} }, rate: 50, per: 1s, burst: 50",
    );
    // A generous timeout: on a busy machine a 50 ms call can time out, and failureMode Open
    // would then (rightly) let requests through uncounted; this test is about counting.
    let args = ["--redis-url", url.as_str(), "--redis-timeout", "2s"];
    let a = Gateway::start(cfg.path(), &args, &[]).await;
    let b = Gateway::start(cfg.path(), &args, &[]).await;
    let t = hammer(&[a.http, b.http], &[], 6, Duration::from_secs(4)).await;
    assert_eq!(t.other, 0, "{t:?}\n{}", a.log());
    assert_no_redis_errors(&[&a, &b]).await;
    assert_exact(&t, 50.0, 50.0);
    // Both gateways counted in the one bucket: each saw both results.
    for gw in [&a, &b] {
        for result in ["allowed", "limited"] {
            let n = metric(
                gw.admin,
                "tidegate_rate_limit_decisions_total",
                &[("policy", "exact/p"), ("limit", "all"), ("result", result)],
            )
            .await
            .unwrap_or(0.0);
            assert!(n > 0.0, "{result}: {n}");
        }
    }
}

#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn a_global_sliding_window_admits_rate_per_window_across_gateways() {
    let url = shared_redis("sliding");
    let up = Upstream::start("up").await;
    let cfg = single_global(
        "sliding",
        &up,
        "name: all, key: { none: {} }, algorithm: SlidingWindow, rate: 100, per: 1s",
    );
    // A generous timeout: on a busy machine a 50 ms call can time out, and failureMode Open
    // would then (rightly) let requests through uncounted; this test is about counting.
    let args = ["--redis-url", url.as_str(), "--redis-timeout", "2s"];
    let a = Gateway::start(cfg.path(), &args, &[]).await;
    let b = Gateway::start(cfg.path(), &args, &[]).await;
    let t = hammer(&[a.http, b.http], &[], 6, Duration::from_secs(3)).await;
    assert_no_redis_errors(&[&a, &b]).await;
    let secs = t.elapsed.as_secs_f64();
    assert!(t.allowed as f64 <= 100.0 * (secs.ceil() + 1.0), "{t:?}");
    assert!(t.allowed as f64 >= 0.95 * 100.0 * secs, "{t:?}");
}

/// Two gateways whose clocks are two hours apart (libfaketime) still share one exact limit:
/// the script reads Redis's clock, never theirs.
#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn gateways_whose_clocks_disagree_still_share_one_exact_limit() {
    let url = shared_redis("skew");
    let lib = std::env::var("TIDEGATE_TEST_FAKETIME_LIB")
        .ok()
        .filter(|p| Path::new(p).is_file())
        .expect("TIDEGATE_TEST_FAKETIME_LIB names libfaketimeMT.so.1 (scripts/test.sh installs faketime and sets it)");
    let lib = lib.as_str();
    let up = Upstream::start("up").await;
    let cfg = single_global(
        "skew",
        &up,
        "name: all, key: { none: {} }, rate: 40, per: 1s, burst: 40",
    );
    // A generous timeout: on a busy machine a 50 ms call can time out, and failureMode Open
    // would then (rightly) let requests through uncounted; this test is about counting.
    let args = ["--redis-url", url.as_str(), "--redis-timeout", "2s"];
    let ahead = Gateway::start(
        cfg.path(),
        &args,
        &[("LD_PRELOAD", lib), ("FAKETIME", "+1h")],
    )
    .await;
    let behind = Gateway::start(
        cfg.path(),
        &args,
        &[("LD_PRELOAD", lib), ("FAKETIME", "-1h")],
    )
    .await;
    // The fake clocks are in effect: the Date headers of the gateways' own answers (a 404 for
    // an unknown host, which no limit counts; a proxied answer carries the upstream's Date)
    // are two hours apart.
    let date = |gw: &Gateway| {
        let addr = gw.http;
        async move {
            let r = HttpClient::http1()
                .get(addr, "unknown.test", "/", &[])
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            httpdate::parse_http_date(r.headers["date"].to_str().unwrap()).unwrap()
        }
    };
    let skew = date(&ahead)
        .await
        .duration_since(date(&behind).await)
        .unwrap();
    assert!(
        skew > Duration::from_secs(7000) && skew < Duration::from_secs(7400),
        "{skew:?}"
    );
    let t = hammer(&[ahead.http, behind.http], &[], 6, Duration::from_secs(4)).await;
    assert_eq!(t.other, 0, "{t:?}");
    assert_no_redis_errors(&[&ahead, &behind]).await;
    assert_exact(&t, 40.0, 40.0);
}

/// Redis killed mid-run: failureMode Open lets traffic through, Closed answers 503 at once, no
/// request waits for Redis longer than the timeout, and nothing piles up; Redis back: limiting
/// resumes without a restart. The same for a Redis that hangs (SIGSTOP).
#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn redis_going_away_follows_the_failure_mode_and_limiting_resumes() {
    let mut server = RedisServer::start(&[]);
    let up = Upstream::start("up").await;
    let cfg = global_config(
        "outage",
        &up,
        "name: all, key: { none: {} }, rate: 5, per: 1s, burst: 5",
    );
    let timeout = Duration::from_millis(100);
    let gw = Gateway::start(
        cfg.path(),
        &["--redis-url", &server.url(), "--redis-timeout", "100ms"],
        &[],
    )
    .await;
    let statuses = |path: &'static str, n: usize| {
        let gw = &gw;
        async move {
            let mut out = Vec::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..n {
                let (r, took) = gw.get(path).await;
                out.push(r.status.as_u16());
                slowest = slowest.max(took);
            }
            (out, slowest)
        }
    };
    let (s, _) = statuses("/open", 8).await;
    assert_eq!(s.iter().filter(|c| **c == 429).count(), 3, "{s:?}");

    // Killed: refused connections.
    server.kill();
    let slack = Duration::from_millis(400); // a debug build on a busy machine
    let (s, slowest) = statuses("/open", 20).await;
    assert!(
        s.iter().all(|c| *c == 200),
        "Open lets everything through: {s:?}"
    );
    assert!(slowest < timeout + slack, "{slowest:?}");
    let (s, slowest) = statuses("/closed", 20).await;
    assert!(s.iter().all(|c| *c == 503), "Closed refuses: {s:?}");
    assert!(slowest < timeout + slack, "{slowest:?}");
    let (r, _) = gw.get("/closed").await;
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.body, "rate limiter unavailable\n");

    // Many at once: none waits (they do not queue behind Redis).
    let started = Instant::now();
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let addr = gw.http;
            tokio::spawn(async move {
                let r = HttpClient::http1().get(addr, "h", "/closed", &[]).await;
                r.status
            })
        })
        .collect();
    for t in burst {
        assert_eq!(t.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Back: limiting resumes by itself.
    server.restart();
    eventually(Duration::from_secs(10), "limiting resumes", || async {
        let (s, _) = statuses("/open", 8).await;
        s.contains(&429).then_some(())
    })
    .await;
    assert_eq!(
        metric(gw.admin, "tidegate_redis_connected", &[]).await,
        Some(1.0)
    );

    // Hung (SIGSTOP): the first calls wait at most the timeout, then Redis is taken out of
    // service and calls fail at once; SIGCONT: back again.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a full bucket again
    server.signal("STOP");
    let (s, slowest) = statuses("/open", 20).await;
    assert!(s.iter().all(|c| *c == 200), "{s:?}");
    assert!(slowest < timeout + slack, "{slowest:?}");
    let (s, slowest) = statuses("/closed", 10).await;
    assert!(s.iter().all(|c| *c == 503), "{s:?}");
    assert!(slowest < timeout + slack, "{slowest:?}");
    server.signal("CONT");
    eventually(
        Duration::from_secs(10),
        "limiting resumes after SIGCONT",
        || async {
            let (s, _) = statuses("/open", 8).await;
            s.contains(&429).then_some(())
        },
    )
    .await;

    let errors = |kind: &'static str| {
        let admin = gw.admin;
        async move {
            metric(admin, "tidegate_redis_errors_total", &[("kind", kind)])
                .await
                .unwrap_or(0.0)
        }
    };
    assert!(errors("disconnected").await > 0.0);
    assert!(errors("connection").await > 0.0);
    assert!(errors("timeout").await > 0.0);
    let decisions = |policy: &'static str, result: &'static str| {
        let admin = gw.admin;
        async move {
            metric(
                admin,
                "tidegate_rate_limit_decisions_total",
                &[("policy", policy), ("result", result)],
            )
            .await
            .unwrap_or(0.0)
        }
    };
    assert!(decisions("outage/open", "unavailable_allowed").await >= 40.0);
    assert!(decisions("outage/closed", "unavailable_denied").await >= 230.0);
    assert!(gw.log().contains("Redis unavailable"), "{}", gw.log());
}

/// The script is sent once (EVALSHA); after SCRIPT FLUSH the gateway loads it again and the
/// bucket goes on.
#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn a_flushed_script_is_loaded_again() {
    let server = RedisServer::start(&[]);
    let up = Upstream::start("up").await;
    let cfg = single_global(
        "noscript",
        &up,
        "name: all, key: { none: {} }, rate: 1, per: 1h, burst: 3",
    );
    let gw = Gateway::start(cfg.path(), &["--redis-url", &server.url()], &[]).await;
    let mut conn = redis_conn(&server.url());
    let sha = tidegate_script_sha();
    let exists = |conn: &mut redis::Connection| -> bool {
        let v: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(conn)
            .unwrap();
        v[0]
    };
    assert!(exists(&mut conn), "loaded when the gateway connected");
    assert_eq!(gw.get("/").await.0.status, 200);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    assert!(!exists(&mut conn));
    assert_eq!(gw.get("/").await.0.status, 200);
    assert!(exists(&mut conn), "loaded again after NOSCRIPT");
    assert_eq!(gw.get("/").await.0.status, 200);
    assert_eq!(gw.get("/").await.0.status, 429, "the same bucket went on");
    assert_eq!(
        metric(gw.admin, "tidegate_redis_errors_total", &[])
            .await
            .unwrap_or(0.0),
        0.0
    );
    // Every key the script wrote expires on its own.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tidegate:rl:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        keys,
        ["tidegate:rl:tb:noscript/p/all:"],
        "the shared key has no digest"
    );
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut conn).unwrap();
    // Three of one per hour used: full again in three hours.
    assert!(
        ttl > 3 * 3600 * 1000 - 60_000 && ttl <= 3 * 3600 * 1000 + 2,
        "{ttl}"
    );
}

/// The SHA-1 of the script, as Redis names it.
fn tidegate_script_sha() -> String {
    let src = include_str!("../../src/proxy/request/rate_limit/decide.lua");
    redis::Script::new(src).get_hash().to_owned()
}

#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn global_limits_answer_with_the_draft_headers_and_key_per_client() {
    let url = shared_redis("headers");
    let up = Upstream::start("up").await;
    let cfg = single_global(
        "headers",
        &up,
        "name: per-key, key: { header: x-api-key }, rate: 2, per: 1m, burst: 2",
    );
    let gw = Gateway::start(cfg.path(), &["--redis-url", &url], &[]).await;
    let http = HttpClient::http1();
    let get = |key: &'static str| {
        let (http, addr) = (&http, gw.http);
        async move { http.get(addr, "h", "/", &[("x-api-key", key)]).await }
    };
    let r = get("a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["ratelimit-policy"], "\"per-key\";q=2;w=60");
    assert_eq!(r.headers["ratelimit"], "\"per-key\";r=1;t=30");
    assert_eq!(get("a").await.status, 200);
    let r = get("a").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "30");
    assert_eq!(r.headers["ratelimit"], "\"per-key\";r=0;t=30");
    assert!(r.body.contains("quota-exceeded"), "{}", r.body);
    assert_eq!(get("b").await.status, 200, "another key, another bucket");
    // The API key is not stored in Redis in the clear.
    let mut conn = redis_conn(&url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tidegate:rl:*headers/*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.len() == "tidegate:rl:tb:headers/p/per-key:".len() + 32)
    );
}

/// `rediss://` with a password in the URL and a private CA.
#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn tls_and_a_password_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.path().join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let port = free_port();
    let server = RedisServer {
        port,
        dir: tempfile::tempdir().unwrap(),
        extra: [
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        child: None,
    };
    let mut server = server;
    server.spawn();
    let up = Upstream::start("up").await;
    let cfg = single_global(
        "tls",
        &up,
        "name: all, key: { none: {} }, rate: 1, per: 1h, burst: 2",
    );
    let url = format!("rediss://:s3cret@localhost:{port}");
    let ca = path("ca.pem");
    let gw = Gateway::start(
        cfg.path(),
        &["--redis-url", &url, "--redis-ca-file", &ca],
        &[],
    )
    .await;
    assert_eq!(
        metric(gw.admin, "tidegate_redis_connected", &[]).await,
        Some(1.0)
    );
    let s: Vec<u16> = [gw.get("/").await, gw.get("/").await, gw.get("/").await]
        .iter()
        .map(|(r, _)| r.status.as_u16())
        .collect();
    assert_eq!(s, [200, 200, 429]);
    // A wrong password never connects: the limit follows its failureMode (Open).
    let wrong = format!("rediss://:nope@localhost:{port}");
    let bad = Gateway::start(
        cfg.path(),
        &["--redis-url", &wrong, "--redis-ca-file", &ca],
        &[],
    )
    .await;
    assert_eq!(
        metric(bad.admin, "tidegate_redis_connected", &[]).await,
        Some(0.0)
    );
    assert_eq!(bad.get("/").await.0.status, 200);
    assert!(
        bad.log().contains("cannot connect to Redis"),
        "{}",
        bad.log()
    );
    assert!(!bad.log().contains("nope"), "the password is not logged");
}

/// `key: { jwtClaim: sub }` in Redis: one bucket per verified subject, shared by two gateways.
#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn global_buckets_are_per_verified_subject_across_gateways() {
    let url = shared_redis("jwtclaim");
    let t = super::jwt_claim::tokens();
    let up = Upstream::start("up").await;
    let cfg = super::jwt_claim::config("jwtclaim", &up, &t.jwks, "Global");
    let args = ["--redis-url", url.as_str(), "--redis-timeout", "2s"];
    let a = Gateway::start(cfg.path(), &args, &[]).await;
    let b = Gateway::start(cfg.path(), &args, &[]).await;
    super::jwt_claim::check_buckets(&a, &t).await;
    // The other gateway shares the buckets: alice's, bob's and the claim-less one are spent
    // there too.
    let spent = super::jwt_claim::statuses(&b, &t, &["alice", "bob", "no_sub"]).await;
    assert_eq!(spent, [429, 429, 429]);
    assert_no_redis_errors(&[&a, &b]).await;
    let mut conn = redis_conn(&url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tidegate:rl:*jwtclaim/*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 3, "alice, bob, no sub: {keys:?}");
}

/// ingress-nginx's `global-rate-limit` family, migrated and served by two gateways sharing
/// Redis: one sliding window per `X-Api-Client` across both, answered 429; a request without
/// the header counts by its address (as ingress-nginx's empty key does); the ignored CIDRs are
/// never limited. Without `--redis-url` the Ingress is rejected.
#[tokio::test]
#[ignore = "needs redis-server (scripts/test.sh starts it)"]
async fn ingress_global_rate_limit_counts_in_redis_across_gateways() {
    let url = shared_redis("ingress-global");
    let n = "    nginx.ingress.kubernetes.io/";
    let annotations = format!(
        "{n}global-rate-limit: \"3\"\n{n}global-rate-limit-window: 1m\n{n}global-rate-limit-key: \"${{http_x_api_client}}\"\n{n}global-rate-limit-ignored-cidrs: \"10.0.0.0/8\"\n"
    );
    let (report, yaml) = crate::clients::migrated("ingress-global", &annotations);
    assert!(
        report.contains("global-rate-limit: approximated: a Global SlidingWindow limit in Redis"),
        "{report}"
    );
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            .replace("metadata: {", "metadata: { namespace: ingress-global,")
            + "---\n"
            + &yaml),
    );
    let args = [
        "--redis-url",
        url.as_str(),
        "--redis-timeout",
        "2s",
        "--trusted-proxies",
        "127.0.0.1/32",
    ];
    let a = Gateway::start(cfg.path(), &args, &[]).await;
    let b = Gateway::start(cfg.path(), &args, &[]).await;
    let http = HttpClient::http1();
    let send = |gw: SocketAddr, client: &'static str, api: Option<&'static str>| {
        let http = http.clone();
        async move {
            let mut h = vec![("x-forwarded-for", client)];
            h.extend(api.map(|v| ("x-api-client", v)));
            http.get(gw, "h", "/", &h).await
        }
    };
    // One API client from two addresses, through both gateways: one window of 3.
    let mut got = Vec::new();
    for (i, client) in ["1.1.1.1", "2.2.2.2", "1.1.1.1", "2.2.2.2"]
        .iter()
        .enumerate()
    {
        let gw = if i % 2 == 0 { a.http } else { b.http };
        got.push(send(gw, client, Some("team-a")).await.status.as_u16());
    }
    assert_eq!(got, [200, 200, 200, 429], "{}", a.log());
    let r = send(a.http, "1.1.1.1", Some("team-a")).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert!(r.body.contains("global-rate-limit"), "{}", r.body);
    assert_eq!(send(b.http, "1.1.1.1", Some("team-b")).await.status, 200);
    // Without the header: by address.
    for want in [200, 200, 200, 429] {
        assert_eq!(send(a.http, "3.3.3.3", None).await.status, want);
    }
    assert_eq!(send(b.http, "4.4.4.4", None).await.status, 200);
    // Ignored CIDRs: never counted, never refused.
    for _ in 0..6 {
        assert_eq!(send(b.http, "10.2.3.4", Some("team-a")).await.status, 200);
    }
    assert_no_redis_errors(&[&a, &b]).await;

    // Without Redis the Ingress is rejected (tidegate validate --kubernetes).
    let dir = ConfigDir::new();
    dir.write(
        "ingress.yaml",
        &(crate::clients::ingress("ingress-global", &annotations).replace(
            "spec:\n  rules:",
            "spec:\n  ingressClassName: tidegate\n  rules:",
        ) + "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: { name: tidegate }\nspec: { controller: tidegate.dev/ingress-controller }\n---\napiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: ingress-global }\nspec: { ports: [{ name: http, port: 80 }] }\n"),
    );
    let out = Command::new(crate::common::binary::BIN)
        .args(["validate", "--kubernetes", "--config"])
        .arg(dir.path())
        .env_remove("TIDEGATE_REDIS_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Ingress ingress-global/web") && text.contains("a Global limit needs Redis"),
        "{text}"
    );
}
