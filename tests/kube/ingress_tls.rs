//! ingress-nginx's TLS annotations on a real apiserver, against a real nginx (from Debian) as
//! the Services' TLS endpoints: `backend-protocol: HTTPS` and `GRPCS` with `proxy-ssl-*`
//! (unverified by default, as ingress-nginx; verified with `proxy-ssl-verify: "on"`; the
//! client certificate of `proxy-ssl-secret`), and `ssl-passthrough` (TLS connections for the
//! Ingress's host reach nginx undecrypted). Served as Ingresses, then as the objects
//! `tidegate migrate` writes for them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::{Value, json};

use super::cluster::{Ns, Tidegate, client_for, eventually, install_crds, kubeconfig};
use super::common::HttpClient;
use super::common::nginx::Nginx;
use super::common::tls::{Ca, tls_client};
use super::ingress_nginx::{gateway, run_migrate, yaml_stream};

/// The Ingresses of the test, of class `class`, in namespace `ns`.
fn ingresses(class: &str, ns: &str) -> Vec<Value> {
    let ingress = |name: &str, host: &str, service: &str, annotations: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"name": "http"}}}},
            ]}}]},
        })
    };
    let n = "nginx.ingress.kubernetes.io";
    vec![
        // Unverified (ingress-nginx's default), with the Secret's client certificate.
        ingress(
            "https-plain",
            "https.test",
            "mtls-app",
            json!({
                format!("{n}/backend-protocol"): "HTTPS",
                format!("{n}/proxy-ssl-secret"): format!("{ns}/upstream-tls"),
            }),
        ),
        // HTTP/2 over TLS, verified with the Secret's ca.crt for proxy-ssl-name.
        ingress(
            "grpcs-verified",
            "grpcs.test",
            "h2-app",
            json!({
                format!("{n}/backend-protocol"): "GRPCS",
                format!("{n}/proxy-ssl-secret"): format!("{ns}/upstream-tls"),
                format!("{n}/proxy-ssl-verify"): "on",
                format!("{n}/proxy-ssl-name"): "backend.test",
            }),
        ),
        // Verified for the Service's name, which nginx's certificate does not hold.
        ingress(
            "wrong-name",
            "wrong.test",
            "h2-app",
            json!({
                format!("{n}/backend-protocol"): "HTTPS",
                format!("{n}/proxy-ssl-secret"): "upstream-tls",
                format!("{n}/proxy-ssl-verify"): "on",
            }),
        ),
        ingress(
            "passthrough",
            "pt.test",
            "h2-app",
            json!({format!("{n}/ssl-passthrough"): "true"}),
        ),
    ]
}

/// The Services (`mtls-app`: nginx's server that requires a client certificate; `h2-app`:
/// its HTTP/2 server) and the Secret of `proxy-ssl-secret`, in `ns`.
async fn cluster(ns: &Ns, nginx: &Nginx, server_ca: &Ca, client_ca: &Ca) {
    for (service, port) in [("mtls-app", nginx.mtls), ("h2-app", nginx.h2)] {
        ns.service(service, json!({})).await;
        ns.slice(service, service, port, true).await;
    }
    let client = client_ca.leaf("gateway", &["gw.test"]);
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "upstream-tls"},
        "type": "Opaque",
        "stringData": {"ca.crt": server_ca.pem(), "tls.crt": client.cert, "tls.key": client.key},
    }))
    .await;
}

/// What the gateway at `gw` answers for each Ingress (Service names in `ns`).
async fn check(gw: &Tidegate, ns: &str, server_ca: &Ca) {
    let http = HttpClient::http1();
    let r = eventually(Duration::from_secs(20), "https.test served", || async {
        let r = http.get(gw.http, "https.test", "/", &[]).await;
        (r.status != 404).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("client=CN=gateway"), "{}", r.body);
    assert!(r.body.contains("proto=HTTP/1.1"), "{}", r.body);
    assert!(
        r.body.contains(&format!("sni=mtls-app.{ns}.svc")),
        "{}",
        r.body
    );
    let r = http.get(gw.http, "grpcs.test", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("proto=HTTP/2.0"), "{}", r.body);
    assert!(r.body.contains("sni=backend.test"), "{}", r.body);
    let r = http.get(gw.http, "wrong.test", "/", &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body, "upstream TLS handshake failed\n");

    // ssl-passthrough: nginx's own certificate (trusted by the client only), its own answer.
    let https = gw.https.unwrap();
    let connector = tls_client(server_ca);
    let (mut sender, _) = eventually(Duration::from_secs(20), "pt.test passed", || async {
        super::common::tls::connect(&connector, https, "pt.test")
            .await
            .ok()
    })
    .await;
    let req = http::Request::get("/")
        .header("host", "pt.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("sni=pt.test"), "{body}");
    // Plain HTTP for the host is not served by a passthrough Ingress.
    assert_eq!(http.get(gw.http, "pt.test", "/", &[]).await.status, 404);
}

#[tokio::test]
#[ignore = "needs a kube-apiserver and nginx; run scripts/test.sh"]
async fn backend_tls_and_ssl_passthrough_annotations_serve_as_ingress_and_migrated() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let server = server_ca.leaf("backend", &["backend.test", "pt.test"]);
    let nginx = Nginx::start(&server, &client_ca).await;

    let ns = Ns::create(&client, "ingress-tls").await;
    let class = ns.ingress_class().await;
    cluster(&ns, &nginx, &server_ca, &client_ca).await;
    for ing in ingresses(&class, &ns.name) {
        ns.apply(ing).await;
    }
    let gw = gateway(&kc, &ns.name, "ingress-tls-0", &[]);
    gw.wait_ready().await;
    check(&gw, &ns.name, &server_ca).await;
    // Unverified certificates are said, with how to verify them (the Event is written after
    // the table is served: wait for it).
    eventually(
        Duration::from_secs(10),
        "the warning on https-plain",
        || async {
            let w = ns.warnings("Ingress", "https-plain").await;
            w.iter()
                .any(|w| w.contains("not verified") && w.contains("proxy-ssl-verify: \"on\""))
                .then_some(())
        },
    )
    .await;
    assert!(ns.warnings("Ingress", "grpcs-verified").await.is_empty());

    // The objects `tidegate migrate` writes answer the same.
    let migrated = Ns::create(&client, "ingress-tls-migrated").await;
    cluster(&migrated, &nginx, &server_ca, &client_ca).await;
    let input = yaml_stream(ingresses("nginx", &migrated.name), &migrated.name);
    let (objects, report) = run_migrate(&input);
    for line in [
        "nginx.ingress.kubernetes.io/backend-protocol: approximated: HTTP/1.1 over TLS",
        "nginx.ingress.kubernetes.io/proxy-ssl-verify: carried",
        "nginx.ingress.kubernetes.io/ssl-passthrough: approximated: a Route with protocol: TLS",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    assert!(objects.contains("insecureSkipVerify: true"), "{objects}");
    assert!(objects.contains("protocol: TLS"), "{objects}");
    migrated.apply_yaml(&objects).await;
    let gw2 = gateway(&kc, &migrated.name, "ingress-tls-1", &[]);
    gw2.wait_ready().await;
    check(&gw2, &migrated.name, &server_ca).await;
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;
}
