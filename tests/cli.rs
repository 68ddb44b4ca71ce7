//! The real binary, started as a user would: validate, crds, run + readiness, SIGHUP, SIGTERM drain.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ConfigDir, HttpClient, Upstream, backend_yaml};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_tidegate");

fn route(name: &str, path: &str, backend: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  rules:\n    - matches: [{{ path: {{ value: {path} }} }}]\n      backendRefs: [{{ name: {backend} }}]\n"
    )
}

/// A running `tidegate run`, killed on drop.
struct Running {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
    /// Access-log lines (the binary's stdout).
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(config: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        // The "serving" log line carries the bound addresses.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (http, admin) = loop {
            let line = lines
                .next()
                .expect("tidegate exited before serving")
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "serving" {
                break (
                    v["http"].as_str().unwrap().parse().unwrap(),
                    v["admin"].as_str().unwrap().parse().unwrap(),
                );
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let (tx, stdout) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            http,
            admin,
            stdout,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tidegate did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn validate_prints_one_line_per_problem_and_exits_1_on_rejection() {
    let cfg = ConfigDir::new();
    cfg.write(
        "ok.yaml",
        &(backend_yaml("a", &["127.0.0.1:9".parse().unwrap()]) + &route("good", "/", "a")),
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    cfg.write("bad.yaml", &(route("broken", "/b", "nope") + "---\n" + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: typo, namespace: shop }\nspec: { rulez: [] }\n"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Route default/broken: spec.rules[0].backendRefs[0].name: Backend default/nope not found (and Service references are not supported yet) (bad.yaml)",
            "Route shop/typo: spec.rulez: unknown field `rulez`, expected one of `ingressClassName`, `protocol`, `hostnames`, `tls`, `port`, `rules`, `backendRefs`, `udp` (bad.yaml)",
        ]
    );

    let out = Command::new(BIN)
        .args(["validate", "--config", "/nonexistent/tidegate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tidegate"));
}

#[test]
fn crds_in_the_repo_are_what_the_binary_prints() {
    let out = Command::new(BIN).arg("crds").output().unwrap();
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string("crds/tidegate.dev.yaml").unwrap();
    assert!(
        checked_in == String::from_utf8_lossy(&out.stdout),
        "crds/tidegate.dev.yaml is stale: run `tidegate crds > crds/tidegate.dev.yaml` (just crds)"
    );
    for kind in ["kind: Route", "kind: Backend", "kind: RateLimitPolicy"] {
        assert!(checked_in.contains(kind), "{kind} missing");
    }
    assert!(checked_in.contains("x-kubernetes-validations"));
}

#[test]
fn crds_without_cel_keep_the_openapi_constraints_for_old_clusters() {
    let out = Command::new(BIN)
        .args(["crds", "--without-cel"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("x-kubernetes-validations"), "{text}");
    assert!(
        text.contains("maxItems: 16") && text.contains("pattern:"),
        "{text}"
    );
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 3);
}

#[tokio::test]
async fn readiness_config_and_sighup_reload() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("r", "/", "up")),
    );
    let gw = Running::start(cfg.path(), &[]);
    let c = HttpClient::http1();
    let ready = c.get(gw.admin, "admin", "/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        c.get(gw.admin, "admin", "/healthz", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(gw.http, "any.test", "/x", &[]).await.echo().upstream,
        "up"
    );

    let config: serde_json::Value =
        serde_json::from_str(&c.get(gw.admin, "admin", "/config", &[]).await.body).unwrap();
    assert_eq!(config["version"], 1);
    assert_eq!(config["rules"][0]["label"], "default/r");
    assert_eq!(
        config["backends"][0]["endpoints"][0]["address"],
        up.addr.to_string()
    );

    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config: serde_json::Value =
            serde_json::from_str(&c.get(gw.admin, "admin", "/config", &[]).await.body).unwrap();
        if config["version"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight_then_exits_0() {
    let up = Upstream::start("slow").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("slow", &[up.addr]) + &route("r", "/", "slow")),
    );
    let mut gw = Running::start(cfg.path(), &["--drain-timeout", "10s"]);
    let c = HttpClient::http1();
    let at = gw.http;
    let in_flight =
        tokio::spawn(async move { c.get(at, "h", "/", &[("x-delay-ms", "1500")]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: no new connections are accepted.
    assert!(
        tokio::net::TcpStream::connect(at).await.is_err(),
        "the listener is closed while draining"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request completes"
    );
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let up = Upstream::start("stuck").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("stuck", &[up.addr]) + &route("r", "/", "stuck")),
    );
    let mut gw = Running::start(cfg.path(), &["--drain-timeout", "500ms"]);
    let at = gw.http;
    let _stuck = tokio::spawn(async move {
        HttpClient::http1()
            .get(at, "h", "/", &[("x-delay-ms", "30000")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_access_log_goes_to_stdout_as_json_lines() {
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("r", "/", "up")),
    );
    let gw = Running::start(cfg.path(), &[]);
    let c = HttpClient::http1();
    c.get(gw.http, "a.test", "/one?secret=1", &[]).await;
    c.get(
        gw.http,
        "b.test",
        "/two",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    let line = |gw: &Running| -> serde_json::Value {
        let l = gw
            .stdout
            .recv_timeout(Duration::from_secs(5))
            .expect("an access-log line");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    let (one, two) = (line(&gw), line(&gw));
    assert_eq!(
        (
            one["host"].as_str(),
            one["path"].as_str(),
            one["status"].as_u64()
        ),
        (Some("a.test"), Some("/one"), Some(200))
    );
    assert_eq!(one["route"], "default/r");
    assert_eq!(two["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}
