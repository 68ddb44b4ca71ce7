//! Access control through the real binary: IP lists on the one client-address resolver
//! (`ip`), CORS checked the way a browser checks it (`cors`), basic authentication against
//! htpasswd files made by Apache's `htpasswd` and requests made by `curl` (`basic`), JWT
//! against PyJWT tokens (`jwt`), keys fetched from a real JWKS issuer (`jwks_uri`).

mod basic;
#[path = "../common/mod.rs"]
mod common;
mod cors;
mod ext_auth;
mod ip;
mod jwks_uri;
mod jwt;
#[allow(dead_code)]
#[path = "../rate_limit/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{ConfigDir, Upstream, backend_yaml};

/// A config directory with Backend `up` and Route `r` (host `h`) whose one rule has `rule`
/// (YAML lines indented for the rule), plus `extra` documents.
pub fn config(up: &Upstream, rule: &str, extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &format!(
            "{}apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  hostnames: [h]\n  rules:\n    - name: api\n      backendRefs: [{{ name: up }}]\n{rule}---\n{extra}",
            backend_yaml("up", &[up.addr])
        ),
    );
    cfg
}

/// A Python test server (`tests/access/<script>`) given a directory of its own, which prints
/// its port and counts the requests it answers in `DIR/hits`.
pub struct PyServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl PyServer {
    /// Starts `script` with its directory and `args` (made by `prepare` in that directory).
    pub fn start(script: &str, prepare: impl FnOnce(&Path) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let args = prepare(dir.path());
        let mut child = Command::new("python3")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/access")
                    .join(script),
            )
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{script} printed {line:?}"));
        Self { child, dir, port }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("hits"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Writes `DIR/name` atomically.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join(name)).unwrap();
    }

    /// Kills it (the port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.stop();
    }
}
