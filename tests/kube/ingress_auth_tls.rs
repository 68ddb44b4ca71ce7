//! ingress-nginx's client certificates (`auth-tls-secret`, `auth-tls-verify-client`,
//! `auth-tls-pass-certificate-to-upstream`) on a real apiserver: the Ingress's HTTPS host asks
//! for a certificate its Secret's `ca.crt` signs, and the upstream (an echo server) gets
//! ingress-nginx's `ssl-client-*` headers. Served as Ingresses, then as the objects
//! `tidegate migrate` writes for them (which carry the validation, not those headers).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::{Ns, client_for, eventually, install_crds, kubeconfig};
use super::common::tls::{Ca, Leaf};
use super::common::{Echo, Upstream};
use super::ingress_nginx::{gateway, run_migrate, yaml_stream};

const N: &str = "nginx.ingress.kubernetes.io";

/// The Ingresses: `m.test` requires a certificate (and passes it on), `o.test` asks for one.
fn ingresses(class: &str, ns: &str) -> Vec<Value> {
    let ingress = |name: &str, host: &str, annotations: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {
                "ingressClassName": class,
                "tls": [{"hosts": [host], "secretName": "server-cert"}],
                "rules": [{"host": host, "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "echo", "port": {"name": "http"}}}},
                ]}}],
            },
        })
    };
    vec![
        ingress(
            "required",
            "m.test",
            json!({
                format!("{N}/auth-tls-secret"): format!("{ns}/client-ca"),
                format!("{N}/auth-tls-pass-certificate-to-upstream"): "true",
            }),
        ),
        ingress(
            "optional",
            "o.test",
            json!({
                format!("{N}/auth-tls-secret"): "client-ca",
                format!("{N}/auth-tls-verify-client"): "optional",
            }),
        ),
    ]
}

/// The echo Service, the server certificate and the client CA, in `ns`.
async fn cluster(ns: &Ns, echo: SocketAddr, server: &Leaf, client_ca: &Ca) {
    ns.service("echo", json!({})).await;
    ns.slice("echo", "echo", echo.port(), true).await;
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "server-cert"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": server.cert, "tls.key": server.key},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "client-ca"},
        "type": "Opaque",
        "stringData": {"ca.crt": client_ca.pem()},
    }))
    .await;
}

/// curl to `https://HOST/` through `https` (trusting `ca`), with the client certificate files
/// `cert` or none, and a spoofed `ssl-client-subject-dn`: `None` when the handshake failed,
/// else the status and the echo.
fn curl(
    https: SocketAddr,
    host: &str,
    ca: &std::path::Path,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> Option<(u16, Option<Echo>)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", https.port())])
        .args(["-H", "ssl-client-subject-dn: CN=admin"])
        .args(["-w", "\n%{http_code}"]);
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("https://{host}:{}/", https.port()))
        .output()
        .expect("curl");
    if !out.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n')?;
    Some((status.parse().ok()?, serde_json::from_str(body).ok()))
}

/// Percent-decoding (of `ssl-client-cert`).
fn unescape(raw: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

/// What the gateway at `https` answers; `nginx_headers`: served from the Ingress (the
/// migrated Route sends `x-forwarded-client-cert` alone).
async fn check(https: SocketAddr, dir: &std::path::Path, client: &Leaf, nginx_headers: bool) {
    let ca = dir.join("ca.pem");
    let cert = (dir.join("client.crt"), dir.join("client.key"));
    let stranger = (dir.join("stranger.crt"), dir.join("stranger.key"));
    let with = |p: &(std::path::PathBuf, std::path::PathBuf)| Some((p.0.clone(), p.1.clone()));
    let run = |host: &'static str, c: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let ca = ca.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                curl(
                    https,
                    host,
                    &ca,
                    c.as_ref().map(|(a, b)| (a.as_path(), b.as_path())),
                )
            })
            .await
            .unwrap()
        }
    };
    let (status, echo) = eventually(Duration::from_secs(20), "m.test served", || async {
        run("m.test", with(&cert)).await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(status, 200);
    let echo = echo.expect("an echo");
    assert!(
        echo.header("x-forwarded-client-cert")
            .is_some_and(|v| v.contains("Subject=\"CN=client-a\"")),
        "{echo:?}"
    );
    if nginx_headers {
        assert_eq!(
            echo.header("ssl-client-verify"),
            Some("SUCCESS"),
            "{echo:?}"
        );
        assert_eq!(echo.header("ssl-client-subject-dn"), Some("CN=client-a"));
        assert_eq!(
            echo.header("ssl-client-issuer-dn"),
            Some("CN=tidegate test CA")
        );
        let pem = unescape(echo.header("ssl-client-cert").expect("ssl-client-cert"));
        assert_eq!(
            pem.trim(),
            client.cert.trim(),
            "the client's PEM, URL-encoded"
        );
    } else {
        // The client's copy is passed as it is (the migrated Route does not set the header).
        assert_eq!(echo.header("ssl-client-verify"), None, "{echo:?}");
    }
    // Without a certificate, or with one of another CA, the handshake fails.
    assert!(run("m.test", None).await.is_none());
    assert!(run("m.test", with(&stranger)).await.is_none());

    // optional: no certificate passes, and the upstream is told so.
    let (status, echo) = run("o.test", None)
        .await
        .expect("o.test without a certificate");
    assert_eq!(status, 200);
    let echo = echo.expect("an echo");
    assert_eq!(echo.header("x-forwarded-client-cert"), None, "{echo:?}");
    if nginx_headers {
        assert_eq!(echo.header("ssl-client-verify"), Some("NONE"), "{echo:?}");
        assert_eq!(
            echo.header("ssl-client-subject-dn"),
            None,
            "the client's copy is removed: {echo:?}"
        );
        let (_, echo) = run("o.test", with(&cert)).await.unwrap();
        let echo = echo.unwrap();
        assert_eq!(echo.header("ssl-client-verify"), Some("SUCCESS"));
        assert_eq!(
            echo.header("ssl-client-cert"),
            None,
            "not asked for on o.test"
        );
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn auth_tls_annotations_ask_for_client_certificates_as_ingress_and_migrated() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let stranger_ca = Ca::new();
    let server = server_ca.leaf("server", &["m.test", "o.test"]);
    let client_leaf = client_ca.leaf("client-a", &["client-a.test"]);
    let stranger = stranger_ca.leaf("client-a", &["client-a.test"]);
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("ca.pem", server_ca.pem()),
        ("client.crt", client_leaf.cert.clone()),
        ("client.key", client_leaf.key.clone()),
        ("stranger.crt", stranger.cert.clone()),
        ("stranger.key", stranger.key.clone()),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let echo = Upstream::start("echo").await;

    let ns = Ns::create(&client, "auth-tls").await;
    let class = ns.ingress_class().await;
    cluster(&ns, echo.addr, &server, &client_ca).await;
    for ing in ingresses(&class, &ns.name) {
        ns.apply(ing).await;
    }
    let gw = gateway(&kc, &ns.name, "auth-tls-0", &[]);
    gw.wait_ready().await;
    check(gw.https.unwrap(), dir.path(), &client_leaf, true).await;
    assert!(ns.warnings("Ingress", "required").await.is_empty());

    // The objects `tidegate migrate` writes ask for the same certificates.
    let migrated = Ns::create(&client, "auth-tls-migrated").await;
    cluster(&migrated, echo.addr, &server, &client_ca).await;
    let input = yaml_stream(ingresses("nginx", &migrated.name), &migrated.name);
    let (objects, report) = run_migrate(&input);
    for line in [
        "nginx.ingress.kubernetes.io/auth-tls-secret: approximated:",
        "nginx.ingress.kubernetes.io/auth-tls-verify-client: carried",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    assert!(objects.contains("clientValidation"), "{objects}");
    assert!(objects.contains("mode: Optional"), "{objects}");
    migrated.apply_yaml(&objects).await;
    let gw2 = gateway(&kc, &migrated.name, "auth-tls-1", &[]);
    gw2.wait_ready().await;
    check(gw2.https.unwrap(), dir.path(), &client_leaf, false).await;
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;
}
