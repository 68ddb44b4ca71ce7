//! JWT authentication against an attack corpus made by PyJWT (`jwt_corpus.py`): each token is
//! accepted or refused exactly as the README says, claim headers cannot be forged, and a
//! rotated key set takes effect on reload.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::common::{ConfigDir, HttpClient, Reply, Upstream, backend_yaml, eventually};
use crate::support::{Gateway, metric};

#[derive(Deserialize)]
pub struct Corpus {
    pub jwks: serde_json::Value,
    pub jwks_rotated: serde_json::Value,
    pub tokens: BTreeMap<String, String>,
}

/// The JWKS documents and tokens `jwt_corpus.py` makes (keys new on every run).
pub fn corpus() -> Corpus {
    let out = std::process::Command::new("python3")
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

/// Route `r` (host `h`, Bearer tokens) and route `c` (host `c`, the `session` cookie).
fn write_config(cfg: &ConfigDir, up: &Upstream, jwks: &serde_json::Value) {
    let jwt = |extra: &str| {
        format!(
            "      authentication:\n        jwt:\n          issuer: https://issuer.test\n          audiences: [shop]\n          requiredClaims: [{{ name: scope, values: [write, admin] }}]\n          claimToHeaders: [{{ claim: sub, header: x-user-id }}, {{ claim: email, header: x-user-email }}]\n{extra}          jwks:\n            inline: '{jwks}'\n"
        )
    };
    let route = |name: &str, extra: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{name}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n{}---\n",
            jwt(extra)
        )
    };
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr])
            + &route("h", "")
            + &route("c", "          fromCookie: session\n")),
    );
}

async fn bearer(gw: &Gateway, token: &str, extra: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    HttpClient::http1().get(gw.http, "h", "/", &headers).await
}

fn challenge(r: &Reply) -> &str {
    r.headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every token of the corpus: the valid ones pass (with the claim headers set and the client's
/// copies gone), the attacks get 401 `invalid_token`, a claim rule failure 403.
#[tokio::test]
async fn the_attack_corpus_is_refused_and_valid_tokens_pass() {
    let c = corpus();
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    write_config(&cfg, &up, &c.jwks);
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let t = |name: &str| c.tokens[name].clone();

    for name in ["valid", "valid_es256", "within_leeway", "array_aud"] {
        let r = bearer(&gw, &t(name), &[("x-user-id", "mallory")]).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let echo = r.echo();
        assert_eq!(
            echo.headers["x-user-id"],
            vec!["alice"],
            "{name}: the client's copy is gone"
        );
        assert_eq!(echo.header("x-user-email"), Some("alice@example.com"));
    }
    for name in [
        "alg_none",
        "hs256_with_rsa_public_key",
        "expired",
        "not_yet_valid",
        "string_nbf",
        "string_exp",
        "no_exp",
        "wrong_aud",
        "wrong_iss",
        "no_iss",
        "unknown_kid",
        "other_key_same_kid",
        "rs256_with_es_kid",
        "tampered",
        "valid_rotated",
    ] {
        let r = bearer(&gw, &t(name), &[]).await;
        assert_eq!(r.status, 401, "{name} must be refused");
        assert_eq!(
            challenge(&r),
            "Bearer realm=\"default/h\", error=\"invalid_token\"",
            "{name}"
        );
    }
    let r = bearer(&gw, &t("missing_scope"), &[]).await;
    assert_eq!(r.status, 403, "a valid token without the required scope");
    assert_eq!(
        challenge(&r),
        "Bearer realm=\"default/h\", error=\"insufficient_scope\""
    );
    let r = HttpClient::http1().get(gw.http, "h", "/", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(challenge(&r), "Bearer realm=\"default/h\"");

    // A claim that cannot be a header value is left out, not forwarded.
    let r = bearer(&gw, &t("header_injection"), &[]).await;
    assert_eq!(r.status, 200);
    let echo = r.echo();
    assert_eq!(echo.header("x-user-email"), None);
    assert_eq!(echo.header("x-admin"), None);

    // The cookie source: the Authorization header means nothing there.
    let cookie = format!("a=b; session={}", t("valid"));
    let r = HttpClient::http1()
        .get(gw.http, "c", "/", &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 200);
    let auth = format!("Bearer {}", t("valid"));
    let r = HttpClient::http1()
        .get(gw.http, "c", "/", &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 401);

    assert_eq!(up.hits(), 6, "refused requests never reach the upstream");
    let denied = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/h"),
            ("mechanism", "jwt"),
            ("result", "denied"),
        ],
    )
    .await;
    assert_eq!(denied, Some(17.0));
}

/// A new key set (a rotation) takes effect on reload: tokens of the new key pass, of the old
/// one no longer.
#[tokio::test]
async fn a_rotated_key_set_takes_effect_on_reload() {
    let c = corpus();
    let up = Upstream::start("up").await;
    let cfg = ConfigDir::new();
    write_config(&cfg, &up, &c.jwks);
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    assert_eq!(bearer(&gw, &c.tokens["valid"], &[]).await.status, 200);
    write_config(&cfg, &up, &c.jwks_rotated);
    eventually(
        Duration::from_secs(20),
        "the rotated keys serve",
        || async {
            (bearer(&gw, &c.tokens["valid_rotated"], &[]).await.status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(bearer(&gw, &c.tokens["valid"], &[]).await.status, 401);
}
