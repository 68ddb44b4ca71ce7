//! HTTPS through the real binary with real clients: curl (`--resolve` for SNI, `--http2`),
//! `openssl s_client` (ALPN, versions, server names), Python's ssl module (session resumption),
//! and a rustls client under load while the certificate rotates.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::binary::{BIN, Binary};
use common::tls::{Ca, Leaf, connect, get, secret_yaml, tls_client};
use common::{ConfigDir, Upstream, backend_yaml, eventually};

/// A Route for `hosts` sending everything to Backend `backend`, with `spec.tls`.
fn tls_route(name: &str, hosts: &[&str], secret: &str, redirect: bool, backend: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{}]\n  tls: {{ secretName: {secret}, httpsRedirect: {redirect} }}\n  rules:\n    - backendRefs: [{{ name: {backend} }}]\n---\n",
        hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `curl` with the test CA; returns (exit success, stdout).
fn curl(ca: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `openssl s_client` against `addr` with these flags; stdout and stderr together.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The common name of the certificate the server sent, as s_client prints it.
fn served_cn(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let out = s_client(addr, args);
    let subject = out.lines().find(|l| l.starts_with("subject="))?;
    let cn = subject.rsplit("CN").next()?;
    Some(cn.trim_start_matches([' ', '=']).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_picks_certificates_by_sni_speaks_h2_and_http1_and_redirects_plain_http() {
    let up = Upstream::start("echo").await;
    let ca = Ca::new();
    let cfg = ConfigDir::new();
    cfg.write("ca.pem", &ca.pem());
    let exact = ca.leaf("exact", &["api.shop.test"]);
    let wildcard = ca.leaf("wildcard", &["*.shop.test"]);
    let default = ca.leaf("default", &["fallback.test"]);
    cfg.write(
        "secrets.yaml",
        &(secret_yaml("api-cert", &exact, true)
            + &secret_yaml("shop-cert", &wildcard, false)
            + &secret_yaml("default-cert", &default, true)),
    );
    cfg.write(
        "routes.yaml",
        &(backend_yaml("echo", &[up.addr])
            + &tls_route("api", &["api.shop.test"], "api-cert", true, "echo")
            + &tls_route("shop", &["*.shop.test"], "shop-cert", false, "echo")
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: hsts }\nspec:\n  hostnames: [hsts.shop.test]\n  tls: { secretName: shop-cert, hsts: { maxAge: 8760h, includeSubDomains: true } }\n  rules:\n    - backendRefs: [{ name: echo }]\n"),
    );
    let gw = Binary::start(
        cfg.path(),
        &["--default-certificate", "default/default-cert"],
    );
    let ca_file = cfg.file("ca.pem");
    let port = gw.https.port();
    let resolve = |host: &str| format!("{host}:{port}:127.0.0.1");

    // SNI: exact host, then wildcard, then the default certificate (also without SNI).
    let https = gw.https;
    let cn = |name: Option<&str>| match name {
        Some(n) => served_cn(https, &["-servername", n]),
        None => served_cn(https, &["-noservername"]),
    };
    assert_eq!(cn(Some("api.shop.test")).as_deref(), Some("exact"));
    assert_eq!(cn(Some("www.shop.test")).as_deref(), Some("wildcard"));
    assert_eq!(cn(Some("unknown.test")).as_deref(), Some("default"));
    assert_eq!(cn(None).as_deref(), Some("default"));

    // curl verifies the chain and the name; HTTP/2 and HTTP/1.1 go through the same handler,
    // and the upstream is told the truth about the scheme.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let url = format!("https://api.shop.test:{port}/hello");
        let (ok, out) = curl(
            &ca_file,
            &[
                flag,
                "--resolve",
                &resolve("api.shop.test"),
                "-w",
                "\n%{http_code} %{http_version}",
                &url,
            ],
        );
        assert!(ok, "curl {flag} failed: {out}");
        let (body, tail) = out.rsplit_once('\n').unwrap();
        assert_eq!(tail, format!("200 {version}"));
        let echo: common::Echo = serde_json::from_str(body).unwrap();
        assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
        assert_eq!(
            echo.header("x-forwarded-port"),
            Some(port.to_string().as_str())
        );
    }
    let url = format!("https://www.shop.test:{port}/");
    let (ok, out) = curl(
        &ca_file,
        &[
            "--resolve",
            &resolve("www.shop.test"),
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    assert!(
        ok && out.ends_with("\n200"),
        "wildcard host over HTTPS: {out}"
    );

    // ALPN and versions, as openssl sees them.
    let h2 = s_client(https, &["-servername", "api.shop.test", "-alpn", "h2"]);
    assert!(h2.contains("ALPN protocol: h2"), "{h2}");
    let h1 = s_client(
        https,
        &["-servername", "api.shop.test", "-alpn", "http/1.1"],
    );
    assert!(h1.contains("ALPN protocol: http/1.1"), "{h1}");
    let v12 = s_client(https, &["-servername", "api.shop.test", "-tls1_2"]);
    assert!(v12.contains("New, TLSv1.2"), "{v12}");
    let v13 = s_client(https, &["-servername", "api.shop.test", "-tls1_3"]);
    assert!(v13.contains("New, TLSv1.3"), "{v13}");
    for old in ["-tls1_1", "-tls1"] {
        let out = s_client(
            https,
            &[
                "-servername",
                "api.shop.test",
                old,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ],
        );
        assert!(
            !out.contains("New, TLSv1.1") && !out.contains("New, TLSv1,") && out.contains("alert"),
            "{old} must be refused: {out}"
        );
    }

    // Plain HTTP: a Route with httpsRedirect gets 308 to the HTTPS port; one without is served.
    let http_url = format!("http://{}/a/b?x=1", gw.http);
    let (_, out) = curl(
        &ca_file,
        &[
            "-H",
            "Host: api.shop.test",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &http_url,
        ],
    );
    assert_eq!(out, format!("308 https://api.shop.test:{port}/a/b?x=1"));
    let (_, out) = curl(
        &ca_file,
        &[
            "-H",
            "Host: www.shop.test",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &http_url,
        ],
    );
    assert_eq!(out, "200");

    let config: serde_json::Value = serde_json::from_str(&gw.admin("/config").await).unwrap();
    let tls = &config["tls"];
    let hosts: Vec<(&str, &str)> = tls["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let cert = &tls["certificates"][h["certificate"].as_u64().unwrap() as usize];
            (
                h["hostname"].as_str().unwrap(),
                cert["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("api.shop.test", "default/api-cert"),
            ("hsts.shop.test", "default/shop-cert"),
            ("*.shop.test", "default/shop-cert")
        ]
    );
    let default = &tls["certificates"][tls["default"].as_u64().unwrap() as usize];
    assert_eq!(default["source"], "default/default-cert");
    assert_eq!(default["names"], serde_json::json!(["fallback.test"]));
    assert!(!config.to_string().contains("PRIVATE KEY"));

    // HSTS on the HTTPS responses of a Route that asks for it, never over plain HTTP.
    let sts = |url: &str, resolve: &str| {
        let (ok, out) = curl(
            &ca_file,
            &["--resolve", resolve, "-D", "-", "-o", "/dev/null", url],
        );
        assert!(ok, "{out}");
        out.lines()
            .find_map(|l| l.strip_prefix("strict-transport-security: "))
            .map(|v| v.trim().to_owned())
    };
    let hsts_url = format!("https://hsts.shop.test:{port}/");
    assert_eq!(
        sts(&hsts_url, &resolve("hsts.shop.test")).as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
    let api_url = format!("https://api.shop.test:{port}/");
    assert_eq!(sts(&api_url, &resolve("api.shop.test")), None);
    let plain = format!("http://hsts.shop.test:{}/", gw.http.port());
    let plain_resolve = format!("hsts.shop.test:{}:127.0.0.1", gw.http.port());
    assert_eq!(sts(&plain, &plain_resolve), None);

    let metrics = gw.admin("/metrics").await;
    assert!(
        metrics.contains(r#"tidegate_tls_handshakes_total{result="success",version="TLSv1.3"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tidegate_tls_handshakes_total{result="success",version="TLSv1.2"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tidegate_tls_certificate_expiry_timestamp_seconds{certificate="default/api-cert"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_server_name_without_a_default_certificate_is_unrecognized_name() {
    let ca = Ca::new();
    let cfg = ConfigDir::new();
    let leaf = ca.leaf("exact", &["api.shop.test"]);
    cfg.write(
        "all.yaml",
        &(secret_yaml("api-cert", &leaf, true)
            + &backend_yaml("echo", &["127.0.0.1:9".parse().unwrap()])
            + &tls_route("api", &["api.shop.test"], "api-cert", false, "echo")),
    );
    let gw = Binary::start(cfg.path(), &[]);
    let out = s_client(gw.https, &["-servername", "other.test"]);
    assert!(out.contains("unrecognized name"), "{out}");
    let out = s_client(gw.https, &["-noservername"]);
    assert!(out.contains("unrecognized name"), "{out}");
    assert_eq!(
        served_cn(gw.https, &["-servername", "api.shop.test"]).as_deref(),
        Some("exact")
    );
    let metrics = gw.admin("/metrics").await;
    assert!(
        metrics
            .contains(r#"tidegate_tls_handshakes_total{result="unrecognized_name",version=""} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_with_tickets_on_tls_1_2_and_1_3() {
    let ca = Ca::new();
    let cfg = ConfigDir::new();
    cfg.write("ca.pem", &ca.pem());
    let leaf = ca.leaf("exact", &["api.shop.test"]);
    cfg.write(
        "all.yaml",
        &(secret_yaml("api-cert", &leaf, false)
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: api }\nspec:\n  hostnames: [api.shop.test]\n  tls: { secretName: api-cert }\n  rules:\n    - filters: [{ directResponse: { status: 200, body: ok } }]\n"),
    );
    let gw = Binary::start(cfg.path(), &[]);
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = version
    session = None
    reused = []
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="api.shop.test", session=session) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: api.shop.test\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200"), data
                reused.append(s.session_reused)
                session = s.session
    print(version.name, reused)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &gw.https.port().to_string()])
        .arg(cfg.file("ca.pem"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TLSv1_2 [False, True]"), "{stdout}");
    assert!(stdout.contains("TLSv1_3 [False, True]"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_handshakes_without_failing_or_dropping_anything() {
    let ca = Ca::new();
    let cfg = ConfigDir::new();
    let old = ca.leaf("old", &["api.shop.test"]);
    let new = ca.leaf("new", &["api.shop.test"]);
    let route = "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: api }\nspec:\n  hostnames: [api.shop.test]\n  tls: { secretName: api-cert }\n  rules:\n    - filters: [{ directResponse: { status: 200, body: ok } }]\n";
    cfg.write("route.yaml", route);
    cfg.write("secret.yaml", &secret_yaml("api-cert", &old, true));
    let gw = Binary::start(cfg.path(), &[]);
    let tls = tls_client(&ca);
    let addr = gw.https;

    // Keep-alive connections made before the rotation, used throughout.
    let mut kept = Vec::new();
    for _ in 0..2 {
        let (sender, leaf) = connect(&tls, addr, "api.shop.test").await.unwrap();
        assert_eq!(leaf, old.der);
        kept.push(sender);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let saw_new = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for mut sender in kept {
        let (stop, failures, requests) = (stop.clone(), failures.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(&mut sender, "api.shop.test").await {
                    Ok(()) => requests.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("kept connection: {e}"));
                        return;
                    }
                };
            }
        }));
    }
    for _ in 0..4 {
        let (stop, failures, requests, saw_new) = (
            stop.clone(),
            failures.clone(),
            requests.clone(),
            saw_new.clone(),
        );
        let tls = tls.clone();
        let new_der = new.der.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = match connect(&tls, addr, "api.shop.test").await {
                    Ok((mut sender, leaf)) => {
                        if leaf == new_der {
                            saw_new.fetch_add(1, Ordering::Relaxed);
                        }
                        get(&mut sender, "api.shop.test").await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => requests.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("new connection: {e}"));
                        0
                    }
                };
            }
        }));
    }
    let before = eventually(Duration::from_secs(5), "requests under load", || async {
        let n = requests.load(Ordering::Relaxed);
        (n > 50).then_some(n)
    })
    .await;

    // A broken Secret: reported, and the old certificate keeps serving.
    cfg.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: { name: api-cert }\ntype: kubernetes.io/tls\nstringData: { tls.crt: garbage, tls.key: garbage }\n",
    );
    eventually(
        Duration::from_secs(10),
        "the broken Secret reported",
        || async {
            let config = gw.admin("/config").await;
            config
                .contains("the last good certificate of this Secret keeps serving")
                .then_some(())
        },
    )
    .await;
    let (_, leaf) = connect(&tls, addr, "api.shop.test").await.unwrap();
    assert_eq!(leaf, old.der, "the last good certificate serves");

    // The rotation: new handshakes get the new certificate within a reload.
    cfg.write("secret.yaml", &secret_yaml("api-cert", &new, false));
    eventually(
        Duration::from_secs(10),
        "the new certificate served",
        || async { (saw_new.load(Ordering::Relaxed) > 20).then_some(()) },
    )
    .await;
    let after = requests.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(after > before, "requests went on after the rotation");
    let config = gw.admin("/config").await;
    assert!(!config.contains("keeps serving"), "{config}");
}

#[test]
fn validate_names_the_route_and_the_secret_of_a_bad_certificate() {
    let ca = Ca::new();
    let cfg = ConfigDir::new();
    let leaf = ca.leaf("exact", &["api.shop.test"]);
    let other = ca.leaf("other", &["api.shop.test"]);
    let mismatched = Leaf {
        cert: leaf.cert.clone(),
        key: other.key.clone(),
        der: leaf.der.clone(),
    };
    cfg.write(
        "all.yaml",
        &(secret_yaml("api-cert", &mismatched, true)
            + &backend_yaml("echo", &["127.0.0.1:9".parse().unwrap()])
            + &tls_route(
                "api",
                &["api.shop.test", "www.shop.test"],
                "api-cert",
                false,
                "echo",
            )
            + &tls_route("gone", &["gone.shop.test"], "missing", false, "echo")
            + "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: preload }\nspec:\n  hostnames: [p.shop.test]\n  tls: { secretName: api-cert, hsts: { maxAge: 8760h, preload: true } }\n  rules:\n    - backendRefs: [{ name: echo }]\n"),
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Route default/api: spec.tls.secretName: Secret default/api-cert: tls.key does not match the certificate in tls.crt"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("Route default/gone: spec.tls.secretName: Secret default/missing: not found"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Route default/preload: spec.tls.hsts.preload: preload needs includeSubDomains: true"
        ),
        "{stdout}"
    );

    // A good certificate that does not cover every hostname is a warning.
    cfg.write(
        "all.yaml",
        &(secret_yaml("api-cert", &leaf, true)
            + &backend_yaml("echo", &["127.0.0.1:9".parse().unwrap()])
            + &tls_route(
                "api",
                &["api.shop.test", "www.shop.test"],
                "api-cert",
                false,
                "echo",
            )),
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("the certificate of default/api-cert is not valid for www.shop.test"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_certificate_from_files_serves_and_follows_changes_to_them() {
    let ca = Ca::new();
    let cfg = ConfigDir::new();
    cfg.write(
        "route.yaml",
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: any }\nspec:\n  rules:\n    - filters: [{ directResponse: { status: 200, body: ok } }]\n",
    );
    let certs = ConfigDir::new();
    let first = ca.leaf("from-files", &["fallback.test"]);
    certs.write("tls.crt", &first.cert);
    certs.write("tls.key", &first.key);
    let source = format!(
        "{},{}",
        certs.file("tls.crt").display(),
        certs.file("tls.key").display()
    );
    let gw = Binary::start(cfg.path(), &["--default-certificate", &source]);
    assert_eq!(
        served_cn(gw.https, &["-servername", "any.test"]).as_deref(),
        Some("from-files")
    );

    // The files change (key first, then the certificate, as a tool would write them): new
    // handshakes get the new certificate without a signal.
    let second = ca.leaf("rotated-files", &["fallback.test"]);
    certs.write("tls.key", &second.key);
    certs.write("tls.crt", &second.cert);
    let https = gw.https;
    eventually(
        Duration::from_secs(10),
        "the rotated files served",
        || async move {
            let cn = tokio::task::spawn_blocking(move || served_cn(https, &["-noservername"]))
                .await
                .unwrap();
            (cn.as_deref() == Some("rotated-files")).then_some(())
        },
    )
    .await;

    // A broken file is reported and the last good certificate keeps serving.
    certs.write("tls.crt", "garbage");
    eventually(
        Duration::from_secs(10),
        "the broken file reported",
        || async {
            let config = gw.admin("/config").await;
            config
                .contains("the last good certificate of these files keeps serving")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        served_cn(gw.https, &["-noservername"]).as_deref(),
        Some("rotated-files")
    );
}

/// A Route with `spec.tls.clientValidation` for `host` (CA in Secret `client-ca`).
fn mtls_route(name: &str, host: &str, mode: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [\"{host}\"]\n  tls: {{ secretName: server-cert, clientValidation: {{ caSecretRef: {{ name: client-ca }}, mode: {mode} }} }}\n  rules:\n    - backendRefs: [{{ name: echo }}]\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_or_optional_per_host_and_reach_the_upstream_in_one_header()
 {
    let up = Upstream::start("echo").await;
    let ca = Ca::new();
    let client_ca = Ca::new();
    let stranger_ca = Ca::new();
    let cfg = ConfigDir::new();
    cfg.write("ca.pem", &ca.pem());
    let server = ca.leaf("server", &["m.test", "o.test", "p.test"]);
    let client = client_ca.leaf("client-a", &["client-a.test"]);
    let stranger = stranger_ca.leaf("stranger", &["stranger.test"]);
    for (name, leaf) in [("client", &client), ("stranger", &stranger)] {
        cfg.write(&format!("{name}.crt"), &leaf.cert);
        cfg.write(&format!("{name}.key"), &leaf.key);
    }
    let ca_pem: String = client_ca
        .pem()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    cfg.write(
        "secrets.yaml",
        &(secret_yaml("server-cert", &server, true)
            + &format!("apiVersion: v1\nkind: Secret\nmetadata: {{ name: client-ca }}\ntype: Opaque\nstringData:\n  ca.crt: |\n{ca_pem}---\n")),
    );
    cfg.write(
        "routes.yaml",
        &(backend_yaml("echo", &[up.addr])
            + &mtls_route("required", "m.test", "Require")
            + &mtls_route("optional", "o.test", "Optional")
            + &tls_route("plain", &["p.test"], "server-cert", false, "echo")),
    );
    let gw = Binary::start(cfg.path(), &[]);
    let ca_file = cfg.file("ca.pem");
    let port = gw.https.port();
    let spoof = "x-forwarded-client-cert: Hash=0;Subject=\"CN=admin\"";
    // curl to https://HOST with `cert` (a name written above) or none; (ok, status, echo header).
    let request = |host: &str, cert: Option<&str>, extra: &[&str]| {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/");
        let (crt, key) = cert
            .map(|c| (cfg.file(&format!("{c}.crt")), cfg.file(&format!("{c}.key"))))
            .unzip();
        let mut args: Vec<String> = vec!["--resolve".into(), resolve, "-H".into(), spoof.into()];
        if let (Some(crt), Some(key)) = (crt, key) {
            args.extend([
                "--cert".into(),
                crt.display().to_string(),
                "--key".into(),
                key.display().to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["-w".into(), "\n%{http_code}".into(), url]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = curl(&ca_file, &args);
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        let header = serde_json::from_str::<common::Echo>(body)
            .ok()
            .and_then(|e| e.header("x-forwarded-client-cert").map(str::to_owned));
        (ok, status.to_owned(), header, body.to_owned())
    };

    // Require: the verified certificate's identity reaches the upstream in one header (the
    // client's own is removed); without a certificate, or with one of another CA, the
    // handshake fails.
    let hash: String = sha256_hex(&client.der);
    let (ok, status, header, body) = request("m.test", Some("client"), &[]);
    assert!(ok && status == "200", "{status} {body}");
    assert_eq!(
        header.as_deref(),
        Some(format!("Hash={hash};Subject=\"CN=client-a\";DNS=\"client-a.test\"").as_str()),
        "{body}"
    );
    assert!(
        !body.contains("admin"),
        "the client's header is removed: {body}"
    );
    for cert in [None, Some("stranger")] {
        let (ok, status, _, _) = request("m.test", cert, &[]);
        assert!(
            !ok,
            "m.test with {cert:?}: handshake must fail, got {status}"
        );
    }

    // Optional: without a certificate the request passes, with no identity header (the
    // client's removed); a valid one is passed on; one of another CA fails the handshake.
    let (ok, status, header, body) = request("o.test", None, &[]);
    assert!(ok && status == "200", "{status} {body}");
    assert_eq!(header, None, "{body}");
    let (ok, _, header, _) = request("o.test", Some("client"), &[]);
    assert!(ok);
    assert!(header.unwrap().contains("Subject=\"CN=client-a\""));
    assert!(!request("o.test", Some("stranger"), &[]).0);

    // A host without mTLS: no certificate asked for, the spoofed header removed.
    let (ok, status, header, body) = request("p.test", None, &[]);
    assert!(ok && status == "200", "{status} {body}");
    assert_eq!(header, None, "{body}");
    let asked = |name: &str| s_client(gw.https, &["-servername", name]);
    assert!(
        asked("p.test").contains("No client certificate CA names sent"),
        "{}",
        asked("p.test")
    );
    assert!(
        asked("m.test").contains("Acceptable client certificate CA names"),
        "{}",
        asked("m.test")
    );

    // A handshake for o.test without a certificate cannot reach m.test by its Host header,
    // and plain HTTP cannot either.
    let (ok, status, _, body) = request("o.test", None, &["-H", "Host: m.test"]);
    assert!(ok && status == "403", "{status} {body}");
    assert_eq!(body, "forbidden: a valid client certificate is required\n");
    let plain = common::HttpClient::http1()
        .get(gw.http, "m.test", "/", &[])
        .await;
    assert_eq!(plain.status, 403);
    let plain = common::HttpClient::http1()
        .get(
            gw.http,
            "p.test",
            "/",
            &[("x-forwarded-client-cert", "spoofed")],
        )
        .await;
    assert_eq!(plain.echo().header("x-forwarded-client-cert"), None);
}

fn sha256_hex(der: &[u8]) -> String {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-hex"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(der)?;
            c.wait_with_output()
        })
        .expect("openssl dgst runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(' ').next().unwrap().trim().to_owned()
}
