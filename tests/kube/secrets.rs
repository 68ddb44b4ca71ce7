//! Secrets of any type, read by reference in Kubernetes mode: htpasswd (basic auth), a JWKS,
//! and a client-certificate CA in Opaque Secrets, against real clients (curl, a PyJWT token).

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::cluster::{Ns, Tidegate, client_for, eventually, install_crds, kubeconfig};
use crate::common::tls::Ca;
use crate::common::{HttpClient, Upstream};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `htpasswd -nbB user password`: one bcrypt line.
fn htpasswd(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .expect("htpasswd (apt install apache2-utils) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn opaque(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": data,
    })
}

#[derive(Deserialize)]
struct Corpus {
    jwks: serde_json::Value,
    tokens: std::collections::BTreeMap<String, String>,
}

/// A JWKS and tokens signed by its keys, made by PyJWT (tests/access/jwt_corpus.py).
fn corpus() -> Corpus {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/access/jwt_corpus.py"
        ))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "jwt_corpus.py failed (pip install pyjwt cryptography): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `curl -u user` (none when empty) to `host`: the status.
async fn basic(gw: &Tidegate, host: &str, user: &str) -> u16 {
    let mut c = tokio::process::Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Host: {host}"));
    if !user.is_empty() {
        c.args(["-u", user]);
    }
    let out = c
        .arg(format!("http://{}/", gw.http))
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs a kube-apiserver, htpasswd, curl and PyJWT; run scripts/test.sh"]
async fn htpasswd_jwks_and_client_ca_come_from_opaque_secrets_and_follow_them() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "secrets").await;
    let up = Upstream::start("up").await;
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "up"},
        "spec": {"endpoints": [up.addr.to_string()]},
    }))
    .await;
    let route = |name: &str, rule: serde_json::Value, tls: Option<serde_json::Value>| {
        let mut spec = json!({
            "hostnames": [format!("{name}.test")],
            "rules": [rule],
        });
        if let Some(tls) = tls {
            spec["tls"] = tls;
        }
        json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name}, "spec": spec,
        })
    };
    let with_auth =
        |auth: serde_json::Value| json!({"backendRefs": [{"name": "up"}], "authentication": auth});

    // Basic auth from an Opaque Secret's `auth` key.
    ns.apply(opaque(
        "users",
        json!({"auth": b64(&htpasswd("alice", "pw-a"))}),
    ))
    .await;
    ns.apply(route(
        "basic",
        with_auth(json!({"basic": {"secretRef": {"name": "users"}}})),
        None,
    ))
    .await;
    // A JWKS from an Opaque Secret's `jwks` key.
    let c = corpus();
    ns.apply(opaque(
        "issuer-keys",
        json!({"jwks": b64(&c.jwks.to_string())}),
    ))
    .await;
    ns.apply(route(
        "jwt",
        with_auth(json!({"jwt": {
            "issuer": "https://issuer.test", "audiences": ["shop"],
            "jwks": {"secretRef": {"name": "issuer-keys"}},
        }})),
        None,
    ))
    .await;
    // Client certificates checked against a CA in an Opaque Secret.
    let ca = Ca::new();
    let client_ca = Ca::new();
    let stranger_ca = Ca::new();
    let server = ca.leaf("server", &["mtls.test"]);
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "server-cert"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&server.cert), "tls.key": b64(&server.key)},
    }))
    .await;
    ns.apply(opaque(
        "client-ca",
        json!({"ca.crt": b64(&client_ca.pem())}),
    ))
    .await;
    ns.apply(route(
        "mtls",
        json!({"backendRefs": [{"name": "up"}]}),
        Some(json!({"secretName": "server-cert",
                    "clientValidation": {"caSecretRef": {"name": "client-ca"}}})),
    ))
    .await;
    // A reference to a Secret that does not exist (yet).
    ns.apply(route(
        "later",
        with_auth(json!({"basic": {"secretRef": {"name": "later-users"}}})),
        None,
    ))
    .await;

    let gw = Tidegate::start(&kc, &ns.name, "secrets-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    for name in ["basic", "jwt", "mtls"] {
        ns.wait_condition("Route", name, "Accepted", "True").await;
    }

    // Basic auth: the htpasswd user passes, anyone else gets 401.
    assert_eq!(basic(&gw, "basic.test", "alice:pw-a").await, 200);
    assert_eq!(basic(&gw, "basic.test", "alice:wrong").await, 401);
    assert_eq!(basic(&gw, "basic.test", "").await, 401);
    // Rotating the Secret changes who is let in.
    ns.apply(opaque(
        "users",
        json!({"auth": b64(&htpasswd("bob", "pw-b"))}),
    ))
    .await;
    eventually(Duration::from_secs(20), "bob let in", || async {
        (basic(&gw, "basic.test", "bob:pw-b").await == 200).then_some(())
    })
    .await;
    assert_eq!(basic(&gw, "basic.test", "alice:pw-a").await, 401);
    // Deleted: an unresolved reference (Gateway API): the Route stays Accepted with
    // ResolvedRefs=False naming field and Secret, and nobody is let in (the rule answers 500:
    // fail closed); created again, it serves again.
    ns.delete("v1", "Secret", "users").await;
    let (reason, message) = ns
        .wait_condition("Route", "basic", "ResolvedRefs", "False")
        .await;
    assert_eq!(reason, "SecretNotFound");
    assert_eq!(
        message,
        format!(
            "spec.rules[0].authentication.basic.secretRef: Secret {}/users not found: the rule answers 500 until it exists",
            ns.name
        ),
        "{reason}"
    );
    assert_eq!(basic(&gw, "basic.test", "bob:pw-b").await, 500);
    ns.apply(opaque(
        "users",
        json!({"auth": b64(&htpasswd("bob", "pw-b"))}),
    ))
    .await;
    eventually(Duration::from_secs(20), "bob let in again", || async {
        (basic(&gw, "basic.test", "bob:pw-b").await == 200).then_some(())
    })
    .await;

    // JWT: a token signed by a key of the Secret's JWKS passes; none gets 401.
    let http = HttpClient::http1();
    let bearer = format!("Bearer {}", c.tokens["valid"]);
    let r = http
        .get(gw.http, "jwt.test", "/", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(http.get(gw.http, "jwt.test", "/", &[]).await.status, 401);

    // A missing Secret: the Route says which, by field; created, it is read and serves.
    let (reason, message) = ns
        .wait_condition("Route", "later", "ResolvedRefs", "False")
        .await;
    assert!(
        message.contains("spec.rules[0].authentication.basic.secretRef")
            && message.contains(&format!("Secret {}/later-users not found", ns.name)),
        "{reason}: {message}"
    );
    ns.apply(opaque(
        "later-users",
        json!({"auth": b64(&htpasswd("carol", "pw-c"))}),
    ))
    .await;
    ns.wait_condition("Route", "later", "ResolvedRefs", "True")
        .await;
    assert_eq!(basic(&gw, "later.test", "carol:pw-c").await, 200);

    // Client mTLS: curl with a certificate of the Secret's CA passes; without one, or with one
    // of another CA, it does not.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let server_ca = file("ca.pem", &ca.pem());
    let good = client_ca.leaf("client-a", &["client-a.test"]);
    let bad = stranger_ca.leaf("stranger", &["stranger.test"]);
    let certs = [
        (file("good.crt", &good.cert), file("good.key", &good.key)),
        (file("bad.crt", &bad.cert), file("bad.key", &bad.key)),
    ];
    let https = gw.https.expect("the HTTPS listener");
    // Async: the upstream runs on this test's runtime.
    let curl_mtls = |cert: Option<&(String, String)>| {
        let mut c = tokio::process::Command::new("curl");
        c.args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--cacert", &server_ca])
        .args([
            "--resolve",
            &format!("mtls.test:{}:127.0.0.1", https.port()),
        ]);
        if let Some((crt, key)) = cert {
            c.args(["--cert", crt, "--key", key]);
        }
        c.arg(format!("https://mtls.test:{}/", https.port()));
        async move {
            let out = c.output().await.expect("curl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    eventually(
        Duration::from_secs(10),
        "mTLS with a good certificate",
        || async { (curl_mtls(Some(&certs[0])).await == "200").then_some(()) },
    )
    .await;
    assert_ne!(curl_mtls(None).await, "200");
    assert_ne!(curl_mtls(Some(&certs[1])).await, "200");
}
