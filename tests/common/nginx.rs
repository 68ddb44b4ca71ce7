//! A real nginx (from Debian) as a TLS upstream: HTTP/1.1 over TLS requiring a client
//! certificate, and HTTP/2 over TLS. Run as one process (`master_process off`), killed on drop.

use std::net::TcpListener;
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
    pub async fn start(server: &Leaf, client_ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("server.crt"), &server.cert).unwrap();
        std::fs::write(p.join("server.key"), &server.key).unwrap();
        std::fs::write(p.join("client-ca.crt"), client_ca.pem()).unwrap();
        let (mtls, h2) = (free_port(), free_port());
        let d = p.display();
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
        let child = Command::new("nginx")
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx runs (scripts/test.sh installs it)");
        for port in [mtls, h2] {
            eventually(Duration::from_secs(10), "nginx listens", || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            })
            .await;
        }
        Self {
            child,
            mtls,
            h2,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
