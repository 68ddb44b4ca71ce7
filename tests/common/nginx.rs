//! A real nginx (from Debian) as a TLS upstream: HTTP/1.1 over TLS requiring a client
//! certificate, and HTTP/2 over TLS. Run as one process (`master_process off`), killed on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;
use super::tls::{Ca, Leaf};

/// A free loopback port (nginx needs a number in its configuration).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx with two TLS servers: `mtls` (HTTP/1.1, requires a client certificate signed by
/// the client CA) and `h2` (HTTP/2 over TLS). Both answer with what they saw.
pub struct Nginx {
    child: Child,
    /// HTTP/1.1 over TLS; requires a client certificate signed by the client CA.
    pub mtls: u16,
    /// HTTP/2 over TLS (ALPN h2).
    pub h2: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on two fresh ports. A port picked here can be taken by another test's
    /// server before nginx binds it; then something else answers on it (another nginx's
    /// `mtls` server answers 400 to a request without a client certificate). nginx writes
    /// its pid file only once every listening socket is bound, and exits when a bind fails
    /// for good, so a run that never writes it is retried on other ports.
    pub async fn start(server: &Leaf, client_ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("server.crt"), &server.cert).unwrap();
        std::fs::write(p.join("server.key"), &server.key).unwrap();
        std::fs::write(p.join("client-ca.crt"), client_ca.pem()).unwrap();
        for _attempt in 0..5 {
            let mtls = free_port();
            let h2 = free_port();
            if mtls == h2 {
                continue;
            }
            let mut child = Self::spawn(p, mtls, h2);
            if !Self::bound(p, &mut child).await {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            for port in [mtls, h2] {
                eventually(Duration::from_secs(10), "nginx listens", || async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()
                })
                .await;
            }
            return Self {
                child,
                mtls,
                h2,
                _dir: dir,
            };
        }
        panic!("nginx could not bind two free ports in five attempts");
    }

    fn spawn(p: &Path, mtls: u16, h2: u16) -> Child {
        let d = p.display();
        let _ = std::fs::remove_file(p.join("nginx.pid"));
        let conf = format!(
            r#"worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  ssl_certificate {d}/server.crt;
  ssl_certificate_key {d}/server.key;
  server {{
    listen 127.0.0.1:{mtls} ssl;
    ssl_client_certificate {d}/client-ca.crt;
    ssl_verify_client on;
    location / {{ return 200 "mtls client=$ssl_client_s_dn proto=$server_protocol sni=$ssl_server_name\n"; }}
  }}
  server {{
    listen 127.0.0.1:{h2} ssl http2;
    location / {{ return 200 "h2 proto=$server_protocol alpn=$ssl_alpn_protocol sni=$ssl_server_name\n"; }}
  }}
}}
"#
        );
        std::fs::write(p.join("nginx.conf"), conf).unwrap();
        Command::new("nginx")
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx runs (scripts/test.sh installs it)")
    }

    /// Whether this nginx bound its ports: its pid file appeared before it exited (nginx
    /// gives up on a taken port after about 2.5 s of retries).
    async fn bound(p: &Path, child: &mut Child) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if p.join("nginx.pid").exists() {
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
