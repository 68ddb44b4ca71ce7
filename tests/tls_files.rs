//! CA bundles and client certificates from files, through the real binary: a "volume"
//! directory laid out as Kubernetes mounts a Secret or ConfigMap (`..data` symlink to a
//! timestamped directory, swapped atomically on a change), CAs and client certificates made
//! by `openssl`, curl as the HTTPS client, and nginx requiring a client certificate as the
//! backend.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::{BIN, Binary};
use common::nginx::Nginx;
use common::tls::{Ca, secret_yaml};
use common::{ConfigDir, HttpClient, Upstream, backend_yaml, backend_yaml_with, eventually};

/// Runs openssl with `args` in `dir`; panics when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA made by openssl in `dir`: `NAME.crt` and `NAME.key`.
fn openssl_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A client certificate `NAME.crt`/`NAME.key` signed by CA `ca` (both in `dir`).
fn openssl_client(dir: &Path, ca: &str, name: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("extendedKeyUsage=clientAuth\nsubjectAltName=DNS:{name}.test\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A directory laid out like a mounted Secret or ConfigMap volume: each key a symlink
/// `KEY -> ..data/KEY`, `..data` a symlink to the current version's directory.
struct Volume {
    dir: tempfile::TempDir,
    version: usize,
}

impl Volume {
    fn new(files: &[(&str, &[u8])]) -> Self {
        let mut v = Self {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        v.update(files);
        for (key, _) in files {
            std::os::unix::fs::symlink(format!("..data/{key}"), v.dir.path().join(key)).unwrap();
        }
        v
    }

    /// The path of `key` as a pod sees it.
    fn path(&self, key: &str) -> PathBuf {
        self.dir.path().join(key)
    }

    /// What the kubelet does on a change: a new version directory, then an atomic rename of
    /// a new `..data` symlink over the old one.
    fn update(&mut self, files: &[(&str, &[u8])]) {
        self.version += 1;
        let name = format!("..2026_11_30_v{}", self.version);
        let version = self.dir.path().join(&name);
        std::fs::create_dir(&version).unwrap();
        for (key, content) in files {
            std::fs::write(version.join(key), content).unwrap();
        }
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// curl to `https://m.test/` through the gateway's HTTPS port, trusting `server_ca`, with
/// client certificate `client` (a name in `certs`) or none: the status, or `None` when the
/// handshake failed.
fn curl_status(port: u16, server_ca: &Path, certs: &Path, client: Option<&str>) -> Option<u16> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ])
    .arg("--cacert")
    .arg(server_ca)
    .args(["--resolve", &format!("m.test:{port}:127.0.0.1")]);
    if let Some(c) = client {
        cmd.arg("--cert")
            .arg(certs.join(format!("{c}.crt")))
            .arg("--key")
            .arg(certs.join(format!("{c}.key")));
    }
    let out = cmd
        .arg(format!("https://m.test:{port}/"))
        .output()
        .expect("curl runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).parse().ok())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_with_a_ca_file_that_follows_its_volume() {
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    openssl_ca(c, "ca-a");
    openssl_ca(c, "ca-b");
    openssl_client(c, "ca-a", "client-a");
    openssl_client(c, "ca-b", "client-b");
    let mut volume = Volume::new(&[("ca.crt", &read(c, "ca-a.crt"))]);

    let up = Upstream::start("echo").await;
    let server_ca = Ca::new();
    let cfg = ConfigDir::new();
    cfg.write("server-ca.pem", &server_ca.pem());
    let ca_file = volume.path("ca.crt");
    cfg.write(
        "config.yaml",
        &(secret_yaml("server-cert", &server_ca.leaf("server", &["m.test"]), true)
            + &backend_yaml("echo", &[up.addr])
            + &format!(
                "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: m }}\nspec:\n  hostnames: [m.test]\n  tls: {{ secretName: server-cert, clientValidation: {{ caFile: {} }} }}\n  rules:\n    - backendRefs: [{{ name: echo }}]\n",
                ca_file.display()
            )),
    );
    let gw = Binary::start(cfg.path(), &[]);
    let port = gw.https.port();
    let server_pem = cfg.file("server-ca.pem");
    let status = |client: Option<&'static str>| {
        let (server_pem, c) = (server_pem.clone(), c.to_path_buf());
        async move {
            tokio::task::spawn_blocking(move || curl_status(port, &server_pem, &c, client))
                .await
                .unwrap()
        }
    };

    // CA a signs client-a: accepted; client-b (another CA) and no certificate are refused.
    assert_eq!(status(Some("client-a")).await, Some(200));
    assert_eq!(status(Some("client-b")).await, None);
    assert_eq!(status(None).await, None);

    // The volume swaps to CA b (as the kubelet does): client-b gets in, client-a no longer.
    volume.update(&[("ca.crt", &read(c, "ca-b.crt"))]);
    eventually(Duration::from_secs(10), "CA b trusted", || async {
        (status(Some("client-b")).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(status(Some("client-a")).await, None);

    // A broken file: a diagnostic on the Route naming the field and the path; CA b keeps
    // verifying.
    volume.update(&[("ca.crt", b"not a certificate")]);
    let config = eventually(
        Duration::from_secs(10),
        "the broken file reported",
        || async {
            let config = gw.admin("/config").await;
            config
                .contains("the last good CA bundle of this file keeps serving")
                .then_some(config)
        },
    )
    .await;
    assert!(
        config.contains("spec.tls.clientValidation.caFile"),
        "{config}"
    );
    assert!(
        config.contains(&format!("file {}", ca_file.display())),
        "{config}"
    );
    assert_eq!(status(Some("client-b")).await, Some(200));
    assert_eq!(status(Some("client-a")).await, None);

    // Fixed again: the diagnostic goes away.
    volume.update(&[("ca.crt", &read(c, "ca-a.crt"))]);
    eventually(Duration::from_secs(10), "CA a trusted again", || async {
        (status(Some("client-a")).await == Some(200)).then_some(())
    })
    .await;
    assert!(!gw.admin("/config").await.contains("caFile"));
}

#[test]
fn validate_names_the_field_and_path_of_a_missing_or_relative_file() {
    let cfg = ConfigDir::new();
    let missing = cfg.file("nowhere/ca.crt");
    cfg.write(
        "config.yaml",
        &(backend_yaml_with(
            "b",
            &["127.0.0.1:1".to_owned()],
            &format!(
                "  tls: {{ caFile: {}, clientCertificateFiles: {{ certFile: tls.crt, keyFile: /k }} }}\n",
                missing.display()
            ),
        )),
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "spec.tls.caFile: file {}: cannot read",
            missing.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("spec.tls.clientCertificateFiles: file tls.crt: not an absolute path"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx (scripts/test.sh installs it)"]
async fn backend_tls_takes_its_ca_and_client_certificate_from_files_and_follows_them() {
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let other_ca = Ca::new();
    let nginx = Nginx::start(&server_ca.leaf("backend", &["backend.test"]), &client_ca).await;
    let a = client_ca.leaf("gateway-a", &["gw.test"]);
    let b = client_ca.leaf("gateway-b", &["gw.test"]);
    let ca_volume = Volume::new(&[("ca.crt", server_ca.pem().as_bytes())]);
    let other = Volume::new(&[("ca.crt", other_ca.pem().as_bytes())]);
    let mut client = Volume::new(&[
        ("tls.crt", a.cert.as_bytes()),
        ("tls.key", a.key.as_bytes()),
    ]);
    let endpoint = format!("127.0.0.1:{}", nginx.mtls);
    let tls = |ca: &Volume| {
        format!(
            "  tls:\n    sni: backend.test\n    caFile: {}\n    clientCertificateFiles: {{ certFile: {}, keyFile: {} }}\n",
            ca.path("ca.crt").display(),
            client.path("tls.crt").display(),
            client.path("tls.key").display()
        )
    };
    let cfg = ConfigDir::new();
    cfg.write(
        "config.yaml",
        &[
            backend_yaml_with("mtls", std::slice::from_ref(&endpoint), &tls(&ca_volume)),
            backend_yaml_with("wrong-ca", std::slice::from_ref(&endpoint), &tls(&other)),
            common::route_yaml("mtls", "/mtls", "mtls", ""),
            common::route_yaml("wrong-ca", "/wrong-ca", "wrong-ca", ""),
        ]
        .concat(),
    );
    let gw = Binary::start(cfg.path(), &[]);
    let get = |path: &'static str| {
        let addr = gw.http;
        async move {
            let r = HttpClient::http1().get(addr, "gw.test", path, &[]).await;
            (r.status.as_u16(), r.body)
        }
    };

    // The server verified with the CA file, the client certificate from the files.
    let (status, body) = get("/mtls").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client=CN=gateway-a"), "{body}");
    // A CA file that did not sign the server's certificate fails closed.
    let (status, body) = get("/wrong-ca").await;
    assert_eq!(status, 502, "{body}");

    // The client certificate's volume swaps: new connections present the new certificate.
    client.update(&[
        ("tls.crt", b.cert.as_bytes()),
        ("tls.key", b.key.as_bytes()),
    ]);
    eventually(
        Duration::from_secs(10),
        "the new client certificate",
        || async {
            let (status, body) = get("/mtls").await;
            (status == 200 && body.contains("client=CN=gateway-b")).then_some(())
        },
    )
    .await;

    // A key that does not match: a diagnostic naming the field, gateway-b keeps serving.
    client.update(&[
        ("tls.crt", b.cert.as_bytes()),
        ("tls.key", a.key.as_bytes()),
    ]);
    let config = eventually(
        Duration::from_secs(10),
        "the bad files reported",
        || async {
            let config = gw.admin("/config").await;
            config
                .contains("the last good certificate of these files keeps serving")
                .then_some(config)
        },
    )
    .await;
    assert!(
        config.contains("spec.tls.clientCertificateFiles"),
        "{config}"
    );
    let (status, body) = get("/mtls").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client=CN=gateway-b"), "{body}");
}
