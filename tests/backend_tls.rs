//! TLS and mTLS to backends through the real binary, against a real nginx (from Debian):
//! HTTP/1.1 over TLS with a client certificate that nginx verifies (`ssl_verify_client on`),
//! HTTP/2 over TLS (ALPN h2), the server name sent, a wrong CA that fails closed (502, reason
//! `upstream_tls` in the access log and the metrics), a rotated client certificate that
//! new connections present, CA bundles from ConfigMaps, HTTP health probes over TLS, and
//! `insecureSkipVerify` (any certificate accepted, the handshake's signature still checked
//! against a server of the test's own).

mod common;

use std::time::Duration;

use common::binary::Binary;
use common::nginx::Nginx;
use common::tls::{Ca, secret_yaml};
use common::{ConfigDir, HttpClient, backend_yaml_with, eventually, route_yaml};

/// GET `path` (host `gw.test`): status and body.
async fn get(gw: &Binary, path: &str) -> (u16, String) {
    let r = HttpClient::http1().get(gw.http, "gw.test", path, &[]).await;
    (r.status.as_u16(), r.body)
}

/// An Opaque Secret holding a CA bundle in `ca.crt`.
fn ca_secret_yaml(name: &str, ca: &Ca) -> String {
    let indent: String = ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indent}---\n"
    )
}

/// A ConfigMap holding a CA bundle in `ca.crt`.
fn ca_config_map_yaml(name: &str, ca: &Ca) -> String {
    let indent: String = ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: {name} }}\ndata:\n  ca.crt: |\n{indent}---\n"
    )
}

/// Backends, each behind its own path prefix.
fn config(nginx: &Nginx, client_secret: &str) -> String {
    let mtls = format!("127.0.0.1:{}", nginx.mtls);
    let h2 = format!("127.0.0.1:{}", nginx.h2);
    let by_name = format!("localhost:{}", nginx.mtls);
    [
        backend_yaml_with(
            "mtls",
            std::slice::from_ref(&mtls),
            &format!(
                "  tls:\n    sni: backend.test\n    caSecretRef: {{ name: server-ca }}\n    clientCertificateRef: {{ name: {client_secret} }}\n"
            ),
        ),
        backend_yaml_with(
            "no-client-cert",
            std::slice::from_ref(&mtls),
            "  tls: { sni: backend.test, caSecretRef: { name: server-ca } }\n",
        ),
        backend_yaml_with(
            "by-name",
            &[by_name],
            &format!(
                "  tls: {{ caSecretRef: {{ name: server-ca }}, clientCertificateRef: {{ name: {client_secret} }} }}\n"
            ),
        ),
        backend_yaml_with(
            "h2",
            std::slice::from_ref(&h2),
            "  protocol: HTTP2\n  tls: { sni: backend.test, caSecretRef: { name: server-ca } }\n",
        ),
        backend_yaml_with(
            "wrong-ca",
            std::slice::from_ref(&mtls),
            "  tls: { sni: backend.test, caSecretRef: { name: other-ca } }\n",
        ),
        backend_yaml_with(
            "configmap-ca",
            std::slice::from_ref(&h2),
            "  tls: { sni: backend.test, caConfigMapRef: { name: server-ca-map } }\n",
        ),
        backend_yaml_with(
            "wrong-configmap-ca",
            std::slice::from_ref(&h2),
            "  tls: { sni: backend.test, caConfigMapRef: { name: other-ca-map } }\n",
        ),
        backend_yaml_with(
            "wrong-name",
            std::slice::from_ref(&mtls),
            "  tls: { sni: elsewhere.test, caSecretRef: { name: server-ca } }\n",
        ),
        route_yaml("mtls", "/mtls", "mtls", ""),
        route_yaml("no-client-cert", "/no-client-cert", "no-client-cert", ""),
        route_yaml("by-name", "/by-name", "by-name", ""),
        route_yaml("h2", "/h2", "h2", ""),
        route_yaml("wrong-ca", "/wrong-ca", "wrong-ca", ""),
        route_yaml("configmap-ca", "/configmap-ca", "configmap-ca", ""),
        route_yaml(
            "wrong-configmap-ca",
            "/wrong-configmap-ca",
            "wrong-configmap-ca",
            "",
        ),
        route_yaml("wrong-name", "/wrong-name", "wrong-name", ""),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx (scripts/test.sh installs it)"]
async fn backends_over_tls_verify_the_server_present_a_client_certificate_and_fail_closed() {
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let other_ca = Ca::new();
    let server = server_ca.leaf("backend", &["backend.test", "localhost"]);
    let nginx = Nginx::start(&server, &client_ca).await;

    let dir = ConfigDir::new();
    dir.write(
        "secrets.yaml",
        &[
            ca_secret_yaml("server-ca", &server_ca),
            ca_secret_yaml("other-ca", &other_ca),
            ca_config_map_yaml("server-ca-map", &server_ca),
            ca_config_map_yaml("other-ca-map", &other_ca),
            secret_yaml("client-a", &client_ca.leaf("gateway-a", &["gw.test"]), true),
            secret_yaml(
                "client-b",
                &client_ca.leaf("gateway-b", &["gw.test"]),
                false,
            ),
        ]
        .concat(),
    );
    dir.write("config.yaml", &config(&nginx, "client-a"));
    let gw = Binary::run(dir.path()).access_log().start();

    // HTTP/1.1 over TLS with the client certificate nginx requires; the configured SNI.
    let (status, body) = get(&gw, "/mtls").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client=CN=gateway-a"), "{body}");
    assert!(body.contains("proto=HTTP/1.1"), "{body}");
    assert!(body.contains("sni=backend.test"), "{body}");
    // Pooled: a second request reuses the connection and still works.
    assert_eq!(get(&gw, "/mtls").await.0, 200);

    // Without a client certificate nginx refuses the request (its own 400).
    let (status, body) = get(&gw, "/no-client-cert").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("No required SSL certificate"), "{body}");

    // Without sni the endpoint's host name is sent and verified.
    let (status, body) = get(&gw, "/by-name").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sni=localhost"), "{body}");

    // HTTP/2 over TLS, negotiated with ALPN.
    let (status, body) = get(&gw, "/h2").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("proto=HTTP/2.0"), "{body}");
    assert!(body.contains("alpn=h2"), "{body}");

    // The CA from a ConfigMap (`data`), over HTTP/1.1 to the server without client auth.
    let (status, body) = get(&gw, "/configmap-ca").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("proto=HTTP/1.1"), "{body}");
    let (status, body) = get(&gw, "/wrong-configmap-ca").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(gw.requests_with("reason=\"upstream_tls\"").await, 1);

    // A CA that did not sign the server's certificate, or a name it does not hold: the
    // handshake fails and nothing is sent (502, reason upstream_tls).
    for path in ["/wrong-ca", "/wrong-name"] {
        let (status, body) = get(&gw, path).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(body, "upstream TLS handshake failed\n", "{path}");
    }
    assert_eq!(gw.requests_with("reason=\"upstream_tls\"").await, 3);
    let logged = eventually(Duration::from_secs(5), "the access log lines", || async {
        let log = gw.access_log();
        let tls: Vec<_> = log
            .iter()
            .filter(|l| l["reason"] == "upstream_tls")
            .map(|l| (l["status"].as_u64(), l["path"].as_str().map(str::to_owned)))
            .collect();
        (tls.len() == 3).then_some(tls)
    })
    .await;
    assert_eq!(
        logged,
        vec![
            (Some(502), Some("/wrong-configmap-ca".to_owned())),
            (Some(502), Some("/wrong-ca".to_owned())),
            (Some(502), Some("/wrong-name".to_owned()))
        ]
    );

    // A rotated client certificate: new connections present it.
    dir.write("config.yaml", &config(&nginx, "client-b"));
    eventually(
        Duration::from_secs(10),
        "the new client certificate",
        || async {
            let (status, body) = get(&gw, "/mtls").await;
            (status == 200 && body.contains("client=CN=gateway-b")).then_some(())
        },
    )
    .await;
}

/// The endpoints' `activeHealthy` of backend `name` in `/backends`.
async fn active_health(gw: &Binary, name: &str) -> Vec<bool> {
    let body = gw.admin("/backends").await;
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    view.as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["backend"] == format!("default/{name}"))
        .flat_map(|b| b["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["activeHealthy"] == true)
        .collect()
}

/// HTTP health probes of a TLS backend go over TLS with its settings (server name, CA, client
/// certificate, HTTP/2): nginx's TLS ports answer a plain-HTTP probe with 400, so the probed
/// endpoints staying healthy shows the probes spoke TLS; the one whose Backend sends no client
/// certificate gets nginx's 400 and is taken out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx (scripts/test.sh installs it)"]
async fn http_health_probes_of_tls_backends_go_over_tls_with_their_settings() {
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let server = server_ca.leaf("backend", &["backend.test"]);
    let nginx = Nginx::start(&server, &client_ca).await;
    let dir = ConfigDir::new();
    dir.write(
        "secrets.yaml",
        &[
            ca_secret_yaml("server-ca", &server_ca),
            secret_yaml("client-a", &client_ca.leaf("gateway-a", &["gw.test"]), true),
        ]
        .concat(),
    );
    let mtls = format!("127.0.0.1:{}", nginx.mtls);
    let h2 = format!("127.0.0.1:{}", nginx.h2);
    let check = "  healthCheck: { active: { http: { path: / }, interval: 1s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 2 } }\n";
    dir.write(
        "config.yaml",
        &[
            backend_yaml_with(
                "probed",
                std::slice::from_ref(&mtls),
                &format!("  tls: {{ sni: backend.test, caSecretRef: {{ name: server-ca }}, clientCertificateRef: {{ name: client-a }} }}\n{check}"),
            ),
            backend_yaml_with(
                "probed-h2",
                std::slice::from_ref(&h2),
                &format!("  protocol: HTTP2\n  tls: {{ sni: backend.test, caSecretRef: {{ name: server-ca }} }}\n{check}"),
            ),
            backend_yaml_with(
                "no-client-cert",
                std::slice::from_ref(&mtls),
                &format!("  tls: {{ sni: backend.test, caSecretRef: {{ name: server-ca }} }}\n{check}"),
            ),
            route_yaml("probed", "/probed", "probed", ""),
            route_yaml("probed-h2", "/h2", "probed-h2", ""),
            route_yaml("no-client-cert", "/no-client-cert", "no-client-cert", ""),
        ]
        .concat(),
    );
    let gw = Binary::run(dir.path()).start();
    // A first request each (a backend's state, and its probes, start with its first use).
    for path in ["/probed", "/h2", "/no-client-cert"] {
        get(&gw, path).await;
    }
    // The probes of the Backend without a client certificate get nginx's 400: out.
    eventually(
        Duration::from_secs(20),
        "the endpoint refused by nginx taken out",
        || async { (active_health(&gw, "no-client-cert").await == [false]).then_some(()) },
    )
    .await;
    // Meanwhile (at least two rounds of probes) the others stayed in: their probes spoke TLS
    // with the client certificate, and HTTP/2 with ALPN.
    assert_eq!(active_health(&gw, "probed").await, [true]);
    assert_eq!(active_health(&gw, "probed-h2").await, [true]);
    let (status, body) = get(&gw, "/probed").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&gw, "/h2").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("proto=HTTP/2.0"), "{body}");
    let (status, body) = get(&gw, "/no-client-cert").await;
    assert_eq!(status, 503, "{body}");
}

/// `tls.insecureSkipVerify`: a certificate no configured CA signs is accepted (HTTP/1.1 with a
/// client certificate from an Opaque Secret, as ingress-nginx's `proxy-ssl-secret` often is,
/// and HTTP/2); without it the same server fails verification (502); with a CA as well the
/// Backend is rejected (its Route answers 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx (scripts/test.sh installs it)"]
async fn insecure_skip_verify_accepts_any_certificate_and_still_presents_the_client_certificate() {
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let server = server_ca.leaf("backend", &["backend.test"]);
    let nginx = Nginx::start(&server, &client_ca).await;
    let dir = ConfigDir::new();
    let opaque = secret_yaml(
        "client-a",
        &client_ca.leaf("gateway-a", &["gw.test"]),
        false,
    )
    .replace("type: kubernetes.io/tls", "type: Opaque");
    dir.write(
        "secrets.yaml",
        &[opaque, ca_secret_yaml("server-ca", &server_ca)].concat(),
    );
    let mtls = format!("127.0.0.1:{}", nginx.mtls);
    let h2 = format!("127.0.0.1:{}", nginx.h2);
    dir.write(
        "config.yaml",
        &[
            backend_yaml_with(
                "unverified",
                std::slice::from_ref(&mtls),
                "  tls: { insecureSkipVerify: true, clientCertificateRef: { name: client-a } }\n",
            ),
            backend_yaml_with(
                "unverified-h2",
                std::slice::from_ref(&h2),
                "  protocol: HTTP2\n  tls: { sni: backend.test, insecureSkipVerify: true }\n",
            ),
            backend_yaml_with(
                "verified",
                std::slice::from_ref(&h2),
                "  tls: { sni: backend.test }\n",
            ),
            backend_yaml_with(
                "both",
                std::slice::from_ref(&h2),
                "  tls: { insecureSkipVerify: true, caSecretRef: { name: server-ca } }\n",
            ),
            route_yaml("unverified", "/unverified", "unverified", ""),
            route_yaml("unverified-h2", "/h2", "unverified-h2", ""),
            route_yaml("verified", "/verified", "verified", ""),
            route_yaml("both", "/both", "both", ""),
        ]
        .concat(),
    );
    let gw = Binary::run(dir.path()).start();
    // The endpoint is an IP address and no sni is set: no server name is sent.
    let (status, body) = get(&gw, "/unverified").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client=CN=gateway-a"), "{body}");
    assert!(body.contains("sni= ") || body.ends_with("sni=\n"), "{body}");
    let (status, body) = get(&gw, "/h2").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("proto=HTTP/2.0"), "{body}");
    assert!(body.contains("sni=backend.test"), "{body}");
    // The system's trust store does not know the test CA.
    let (status, body) = get(&gw, "/verified").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body, "upstream TLS handshake failed\n");
    let (status, _) = get(&gw, "/both").await;
    assert_eq!(status, 500);
}

/// A TLS server on loopback answering `200 ok` to each request, presenting `leaf`'s certificate
/// and signing its handshakes with `key` (another's key: a server posing with a certificate
/// it does not hold the key of).
async fn tls_server(leaf: &common::tls::Leaf, key: &str) -> std::net::SocketAddr {
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(CertifiedKey::new(vec![leaf.der.clone()], signing));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(certified)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let (mut buf, mut seen) = (vec![0u8; 4096], Vec::new());
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// `insecureSkipVerify` accepts any certificate, but the handshake must still be signed with
/// the key of the certificate shown: a server that shows another's certificate fails (502,
/// `upstream_tls`), the one that holds its key answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_still_checks_the_handshake_signature() {
    let ca = Ca::new();
    let real = ca.leaf("real", &["backend.test"]);
    let other = ca.leaf("other", &["backend.test"]);
    let honest = tls_server(&real, &real.key).await;
    let impostor = tls_server(&real, &other.key).await;
    let dir = ConfigDir::new();
    let tls = "  tls: { sni: backend.test, insecureSkipVerify: true }\n";
    dir.write(
        "config.yaml",
        &[
            backend_yaml_with("honest", &[honest.to_string()], tls),
            backend_yaml_with("impostor", &[impostor.to_string()], tls),
            route_yaml("honest", "/honest", "honest", ""),
            route_yaml("impostor", "/impostor", "impostor", ""),
        ]
        .concat(),
    );
    let gw = Binary::run(dir.path()).start();
    let (status, body) = get(&gw, "/honest").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&gw, "/impostor").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body, "upstream TLS handshake failed\n");
}
