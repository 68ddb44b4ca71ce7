//! JWKS from a URI through the real binary, against a small real issuer (`jwks_server.py`,
//! Python's http.server, HTTPS with a test CA) and tokens made by PyJWT (`jwt_corpus.py`):
//! a flood of unknown kids costs the issuer at most one fetch per cooldown, a rotated key set
//! is picked up on an unknown kid, keys keep serving while the issuer is down, `max-age` sets
//! the refresh, and before the first good fetch tokens get 503.

use std::time::{Duration, Instant};

use base64::Engine;

use crate::PyServer;
use crate::common::tls::Ca;
use crate::common::{ConfigDir, HttpClient, Reply, Upstream, backend_yaml, eventually};
use crate::jwt::corpus;
use crate::support::{Gateway, metric};

/// The issuer: `jwks_server.py` serving `jwks.json` from its directory.
struct Issuer(PyServer);

impl std::ops::Deref for Issuer {
    type Target = PyServer;
    fn deref(&self) -> &PyServer {
        &self.0
    }
}

impl Issuer {
    fn start(jwks: &serde_json::Value, cache_control: &str, tls: Option<&Ca>) -> Self {
        let server = PyServer::start("jwks_server.py", |dir| match tls {
            Some(ca) => {
                let leaf = ca.leaf("issuer", &["localhost"]);
                std::fs::write(dir.join("cert.pem"), &leaf.cert).unwrap();
                std::fs::write(dir.join("key.pem"), &leaf.key).unwrap();
                vec![
                    dir.join("cert.pem").display().to_string(),
                    dir.join("key.pem").display().to_string(),
                ]
            }
            None => Vec::new(),
        });
        let me = Self(server);
        me.serve(jwks, cache_control);
        me
    }

    fn serve(&self, jwks: &serde_json::Value, cache_control: &str) {
        self.0.write("jwks.json", &jwks.to_string());
        self.0.write("cache_control", cache_control);
    }

    fn stop(&mut self) {
        self.0.stop();
    }
}

/// A Route `name` (host `name`) whose JWT keys come from `jwks` (YAML lines under `jwks:`).
fn route(name: &str, jwks: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{name}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      authentication:\n        jwt:\n          issuer: https://issuer.test\n          audiences: [shop]\n          jwks:\n{jwks}---\n"
    )
}

async fn bearer(gw: &Gateway, host: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    HttpClient::http1()
        .get(gw.http, host, "/", &[("authorization", &auth)])
        .await
}

/// `token` with its header's `kid` replaced (the signature no longer matches; the kid is
/// looked up first, which is what a flood of random kids aims at).
fn with_kid(token: &str, kid: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, rest) = token.split_once('.').unwrap();
    let head = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#);
    format!("{}.{rest}", b64.encode(head))
}

async fn wait_status(gw: &Gateway, host: &str, token: &str, status: u16, what: &str) {
    eventually(Duration::from_secs(20), what, || async {
        (bearer(gw, host, token).await.status == status).then_some(())
    })
    .await;
}

/// A flood of random kids: every token is refused, and the issuer sees at most one fetch per
/// cooldown (2s) while it lasts. A rotated set is then picked up on the first unknown kid.
#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_cooldown_and_rotation_is_picked_up() {
    let c = corpus();
    let up = Upstream::start("up").await;
    let issuer = Issuer::start(&c.jwks, "max-age=3600", None);
    let cfg = ConfigDir::new();
    let jwks = format!(
        "            uri: http://127.0.0.1:{}/jwks\n            refetchCooldown: 2s\n",
        issuer.port
    );
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &route("h", &jwks)),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    wait_status(&gw, "h", &c.tokens["valid"], 200, "the first fetch").await;
    let before = issuer.hits();
    assert_eq!(before, 1, "one fetch; requests do not fetch");

    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let token = with_kid(&c.tokens["valid"], &format!("random-{sent}"));
        let r = bearer(&gw, "h", &token).await;
        assert_eq!(r.status, 401, "an unknown kid is refused");
        sent += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = issuer.hits() - before;
    assert!(sent > 100, "a flood: {sent} requests");
    // One fetch at once, then at most one per 2s cooldown.
    let most = 1 + (elapsed / 2.0).floor() as u32;
    assert!(
        (1..=most).contains(&fetches),
        "{fetches} fetches for {sent} unknown kids in {elapsed:.1}s (at most {most})"
    );
    assert_eq!(bearer(&gw, "h", &c.tokens["valid"]).await.status, 200);

    // Rotation: the issuer now serves the new key only; the first token signed by it asks
    // for a refetch (refused meanwhile), and within a cooldown it verifies.
    issuer.serve(&c.jwks_rotated, "max-age=3600");
    wait_status(&gw, "h", &c.tokens["valid_rotated"], 200, "the rotated key").await;
    assert_eq!(
        bearer(&gw, "h", &c.tokens["valid"]).await.status,
        401,
        "the retired key no longer verifies"
    );
    let ok = metric(
        gw.admin,
        "tidegate_jwks_fetches_total",
        &[
            ("uri", &format!("http://127.0.0.1:{}/jwks", issuer.port)),
            ("result", "ok"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ok, f64::from(issuer.hits()));
}

/// `max-age` sets the refresh (within refresh.min): an issuer saying 1s is fetched again and
/// again, one saying an hour once. Then the fast one goes down: its keys keep serving, stale.
#[tokio::test]
async fn max_age_sets_the_refresh_and_keys_serve_while_the_issuer_is_down() {
    let c = corpus();
    let up = Upstream::start("up").await;
    let mut fast = Issuer::start(&c.jwks, "public, max-age=1", None);
    let slow = Issuer::start(&c.jwks, "max-age=3600", None);
    let cfg = ConfigDir::new();
    let jwks = |port: u16| {
        format!(
            "            uri: http://127.0.0.1:{port}/jwks\n            refresh: {{ min: 1s }}\n            refetchCooldown: 1s\n"
        )
    };
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &route("fast", &jwks(fast.port))
            + &route("slow", &jwks(slow.port))),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    wait_status(
        &gw,
        "fast",
        &c.tokens["valid"],
        200,
        "the fast issuer's keys",
    )
    .await;
    wait_status(
        &gw,
        "slow",
        &c.tokens["valid"],
        200,
        "the slow issuer's keys",
    )
    .await;
    eventually(Duration::from_secs(20), "max-age=1 refetches", || async {
        (fast.hits() >= 4).then_some(())
    })
    .await;
    assert_eq!(slow.hits(), 1, "max-age=3600: no refetch");

    fast.stop();
    let uri = format!("http://127.0.0.1:{}/jwks", fast.port);
    eventually(Duration::from_secs(20), "a failed fetch", || async {
        let failed = metric(
            gw.admin,
            "tidegate_jwks_fetches_total",
            &[("uri", &uri), ("result", "unreachable")],
        )
        .await;
        (failed >= Some(2.0)).then_some(())
    })
    .await;
    let stale = metric(gw.admin, "tidegate_jwks_stale", &[("uri", &uri)]).await;
    assert_eq!(stale, Some(1.0), "the keys are past their refresh");
    assert_eq!(
        bearer(&gw, "fast", &c.tokens["valid"]).await.status,
        200,
        "the last fetched keys serve while the issuer is down"
    );
}

/// Before the first good fetch there are no keys: 503 `jwks_unavailable` (not 401: the token
/// may well be good), counted as `unavailable`; a config reload that keeps the URI does not
/// fetch it again.
#[tokio::test]
async fn without_fetched_keys_tokens_get_503_and_a_reload_does_not_refetch() {
    let c = corpus();
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let issuer = Issuer::start(&c.jwks, "max-age=3600", None);
    let write = |extra: &str| {
        cfg.write(
            "all.yaml",
            &(backend_yaml("up", &[up.addr])
                + &route(
                    "down",
                    &format!("            uri: http://127.0.0.1:{port}/jwks\n"),
                )
                + &route(
                    "h",
                    &format!("            uri: http://127.0.0.1:{}/jwks\n", issuer.port),
                )
                + extra),
        )
    };
    write("");
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let r = bearer(&gw, "down", &c.tokens["valid"]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body, "authentication unavailable\n");
    let unavailable = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/down"),
            ("mechanism", "jwt"),
            ("result", "unavailable"),
        ],
    )
    .await;
    assert_eq!(unavailable, Some(1.0));
    assert!(
        gw.log()
            .contains("JWKS fetch failed; tokens of routes using it get 503"),
        "{}",
        gw.log()
    );

    wait_status(&gw, "h", &c.tokens["valid"], 200, "the issuer's keys").await;
    assert_eq!(issuer.hits(), 1);
    // A reload (another Route added) keeps the URI: no new fetch, the keys still serve.
    write(&backend_yaml("other", &[up.addr]));
    eventually(Duration::from_secs(20), "the reload", || async {
        let r = HttpClient::http1()
            .get(gw.admin, "admin", "/config", &[])
            .await;
        r.body.contains("\"other\"").then_some(())
    })
    .await;
    assert_eq!(bearer(&gw, "h", &c.tokens["valid"]).await.status, 200);
    assert_eq!(issuer.hits(), 1, "a reload does not fetch again");
}

/// An `https` URI verified with the CA of `caSecretRef`; without it (the system's roots) the
/// issuer's certificate does not verify and tokens get 503.
#[tokio::test]
async fn an_https_issuer_is_verified_with_the_ca_secret() {
    let c = corpus();
    let up = Upstream::start("up").await;
    let ca = Ca::new();
    let issuer = Issuer::start(&c.jwks, "max-age=3600", Some(&ca));
    let indent: String = ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: issuer-ca }}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indent}---\n"
    );
    let uri = format!("https://localhost:{}/jwks", issuer.port);
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &secret
            + &route(
                "h",
                &format!(
                    "            uri: {uri}\n            caSecretRef: {{ name: issuer-ca }}\n"
                ),
            )
            + &route("system", &format!("            uri: {uri}\n"))),
    );
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    wait_status(&gw, "h", &c.tokens["valid"], 200, "keys fetched over HTTPS").await;
    eventually(
        Duration::from_secs(20),
        "the untrusted fetch fails",
        || async {
            let failed = metric(
                gw.admin,
                "tidegate_jwks_fetches_total",
                &[("uri", &uri), ("result", "unreachable")],
            )
            .await;
            (failed >= Some(1.0)).then_some(())
        },
    )
    .await;
    assert_eq!(
        bearer(&gw, "system", &c.tokens["valid"]).await.status,
        503,
        "the system's roots do not trust the test CA"
    );
}
