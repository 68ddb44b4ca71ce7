//! The `tidegate` binary as the tests run it: `tidegate run` on loopback ports it picks,
//! its logs kept, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{HttpClient, eventually};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tidegate");

/// How to start the binary: [`Binary::run`], then [`Start::start`].
pub struct Start<'a> {
    config: &'a Path,
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a str)>,
    access_log: bool,
}

impl<'a> Start<'a> {
    /// More command-line arguments (after the loopback addresses, so they can override them).
    pub fn args(mut self, args: &[&'a str]) -> Self {
        self.args.extend_from_slice(args);
        self
    }

    /// Environment variables (the caller's own `TIDEGATE_*` variables are never inherited).
    pub fn env(mut self, env: &[(&'a str, &'a str)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// Keeps the binary's default access log (JSON lines on stdout), readable through
    /// [`Binary::stdout`]. Without it the access log is off.
    pub fn access_log(mut self) -> Self {
        self.access_log = true;
        self
    }

    /// Starts it and waits for its "serving" log line, which names the bound addresses.
    pub fn start(self) -> Binary {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(self.config)
            .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            // Not the default 0.0.0.0:8443, which tests running in parallel would share.
            .args(["--https-addr", "127.0.0.1:0", "--log-format", "json"]);
        if !self.access_log {
            cmd.args(["--access-log", "off"]);
        }
        for (k, _) in std::env::vars() {
            if k.starts_with("TIDEGATE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(&self.args)
            .envs(self.env.iter().copied())
            .stdout(if self.access_log {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");

        // Both pipes are always read, or a full pipe blocks the binary on its next line.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "serving" {
                    let _ = tx.send(v);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let Ok(serving) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tidegate did not start serving:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        };
        let addr = |k: &str| -> Option<SocketAddr> { serving[k].as_str()?.parse().ok() };
        Binary {
            http: addr("http").expect("an http address"),
            https: addr("https").expect("an https address"),
            admin: addr("admin").expect("an admin address"),
            child,
            stdout,
            stderr,
        }
    }
}

/// A running `tidegate run`, killed on drop.
pub struct Binary {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// The binary serving the config directory `config`.
    pub fn run(config: &Path) -> Start<'_> {
        Start {
            config,
            args: Vec::new(),
            env: Vec::new(),
            access_log: false,
        }
    }

    /// Starts it with `args`, access log off.
    pub fn start(config: &Path, args: &[&str]) -> Self {
        Self::run(config).args(args).start()
    }

    /// Waits until `/readyz` says ready.
    pub async fn ready(self) -> Self {
        let admin = self.admin;
        eventually(Duration::from_secs(20), "the gateway is ready", || async {
            let r = HttpClient::http1()
                .send(
                    http::Request::get(format!("http://{admin}/readyz"))
                        .body(Default::default())
                        .unwrap(),
                )
                .await;
            r.ok().filter(|r| r.status == 200).map(|_| ())
        })
        .await;
        self
    }

    /// Its log so far (stderr), one line per entry.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Its stdout so far (the access log, with [`Start::access_log`]).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The access-log lines so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let lines = self.stdout.lock().unwrap();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The body of admin endpoint `path`.
    pub async fn admin(&self, path: &str) -> String {
        HttpClient::http1()
            .get(self.admin, "admin", path, &[])
            .await
            .body
    }

    /// `tidegate_requests_total` samples whose labels contain `needle`, summed.
    pub async fn requests_with(&self, needle: &str) -> u64 {
        let m = self.admin("/metrics").await;
        m.lines()
            .filter(|l| l.starts_with("tidegate_requests_total{") && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Sends signal `sig` (`TERM`, `HUP`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for it to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
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

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
