//! Rate limits keyed by a claim of the verified JWT (`key: { jwtClaim: sub }`), with tokens
//! made by PyJWT (`jwt_tokens.py`): each subject has its own bucket, whichever token it
//! presents; tokens without the claim share one bucket; unauthenticated requests never reach
//! the limiter. Local here; Global (Redis) in `global.rs` with the same config.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::common::{ConfigDir, HttpClient, Upstream, backend_yaml};
use crate::support::Gateway;

#[derive(Deserialize)]
pub struct Tokens {
    pub jwks: serde_json::Value,
    pub tokens: BTreeMap<String, String>,
}

/// A JWKS and tokens for `alice` (two different tokens), `bob`, and two without `sub`.
pub fn tokens() -> Tokens {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/rate_limit/jwt_tokens.py"
        ))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "jwt_tokens.py failed (pip install pyjwt cryptography): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Route `r` (host `h`) with JWT authentication, limited to 2 requests a minute per `sub`
/// (`scope`: Local or Global), everything in namespace `ns`.
pub fn config(ns: &str, up: &Upstream, jwks: &serde_json::Value, scope: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    let yaml = backend_yaml("up", &[up.addr])
        .replace("metadata: {", &format!("metadata: {{ namespace: {ns},"))
        + &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r, namespace: {ns} }}\nspec:\n  hostnames: [h]\n  rules:\n    - backendRefs: [{{ name: up }}]\n      authentication:\n        jwt: {{ issuer: https://issuer.test, jwks: {{ inline: '{jwks}' }} }}\n---\napiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: p, namespace: {ns} }}\nspec:\n  targetRef: {{ kind: Route, name: r }}\n  limits:\n    - {{ name: per-user, key: {{ jwtClaim: sub }}, rate: 2, per: 1m, burst: 2, scope: {scope} }}\n"
        );
    cfg.write("all.yaml", &yaml);
    cfg
}

/// The statuses of `gw` for requests with these tokens (by name; `""`: no token), in order.
pub async fn statuses(gw: &Gateway, t: &Tokens, names: &[&str]) -> Vec<u16> {
    let http = HttpClient::http1();
    let mut out = Vec::new();
    for name in names {
        let auth = format!("Bearer {}", t.tokens.get(*name).map_or("", String::as_str));
        let headers: Vec<(&str, &str)> = if name.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", auth.as_str())]
        };
        out.push(http.get(gw.http, "h", "/", &headers).await.status.as_u16());
    }
    out
}

/// What every scope must show: buckets per subject, one shared bucket without the claim.
pub async fn check_buckets(gw: &Gateway, t: &Tokens) {
    // alice's two requests, then a third with another token of hers: her bucket is empty.
    assert_eq!(
        statuses(gw, t, &["alice", "alice", "alice_again"]).await,
        [200, 200, 429]
    );
    // bob has his own bucket.
    assert_eq!(
        statuses(gw, t, &["bob", "bob", "bob"]).await,
        [200, 200, 429]
    );
    // Tokens without `sub` share one bucket (missingHeader's default, SharedBucket).
    assert_eq!(
        statuses(gw, t, &["no_sub", "no_sub_either", "no_sub"]).await,
        [200, 200, 429]
    );
    // No token: 401 from authentication, before the limiter (no bucket is spent).
    assert_eq!(statuses(gw, t, &["", "", ""]).await, [401, 401, 401]);
}

#[tokio::test]
async fn local_buckets_are_per_verified_subject() {
    let t = tokens();
    let up = Upstream::start("up").await;
    let cfg = config("jwtlocal", &up, &t.jwks, "Local");
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    check_buckets(&gw, &t).await;
    assert_eq!(up.hits(), 6);
}
