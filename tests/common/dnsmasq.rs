//! A private dnsmasq (Debian's `dnsmasq-base`) on a free loopback port, for Backends that follow
//! DNS: A records from a hosts file (re-read on SIGHUP), SRV records from its configuration
//! (restarted to change them). Missing dnsmasq fails the test (it never skips).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The zone dnsmasq is authoritative for: unknown names in it are NXDOMAIN.
pub const ZONE: &str = "tidegate.test";

pub fn dnsmasq_bin() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file())
        .expect("dnsmasq is not installed (apt-get install dnsmasq-base; scripts/test.sh does)")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private dnsmasq: authoritative for `tidegate.test` (unknown names there are NXDOMAIN),
/// answering from `hosts` (A records) and `srv` (SRV records with their targets' addresses).
pub struct Dnsmasq {
    port: u16,
    dir: tempfile::TempDir,
    ttl: u32,
    srv: Vec<String>,
    child: Option<Child>,
}

impl Dnsmasq {
    pub fn start(ttl: u32, hosts: &str) -> Self {
        let mut d = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            ttl,
            srv: Vec::new(),
            child: None,
        };
        std::fs::write(d.dir.path().join("hosts"), hosts).unwrap();
        d.spawn();
        d
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut conf = format!(
            "port={}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
             addn-hosts={}\nlocal=/{ZONE}/\nlocal-ttl={}\nlog-queries\nlog-facility={}\n",
            self.port,
            dir.join("hosts").display(),
            self.ttl,
            dir.join("log").display(),
        );
        // As root, dnsmasq would drop to `nobody`, who cannot read this test's files.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            conf.push_str("user=root\n");
        }
        for line in &self.srv {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(dir.join("dnsmasq.conf"), conf).unwrap();
        let child = Command::new(dnsmasq_bin())
            .arg("--keep-in-foreground")
            .arg(format!(
                "--conf-file={}",
                dir.join("dnsmasq.conf").display()
            ))
            .arg("--pid-file")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not listen on {}",
                self.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rewrites the hosts file and has dnsmasq re-read it (SIGHUP).
    pub fn hosts(&self, hosts: &str) {
        std::fs::write(self.dir.path().join("hosts"), hosts).unwrap();
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "SIGHUP to dnsmasq");
    }

    /// Replaces the SRV records (`(name, target, port, priority, weight)`; every target is
    /// 127.0.0.1) and restarts dnsmasq on the same port.
    pub fn srv(&mut self, records: &[(&str, &str, u16, u16, u16)]) {
        self.srv = records
            .iter()
            .map(|(name, target, port, prio, weight)| {
                format!("srv-host={name},{target},{port},{prio},{weight}")
            })
            .collect();
        let mut targets: Vec<&str> = records.iter().map(|r| r.1).collect();
        targets.sort();
        targets.dedup();
        for t in targets {
            self.srv.push(format!("host-record={t},127.0.0.1"));
        }
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
