//! Access control through the real binary: IP lists on the one client-address resolver
//! (`ip`), CORS checked the way a browser checks it (`cors`), basic authentication against
//! htpasswd files made by Apache's `htpasswd` and requests made by `curl` (`basic`), JWT
//! against PyJWT tokens (`jwt`), keys fetched from a real JWKS issuer (`jwks_uri`).

mod basic;
#[path = "../common/mod.rs"]
mod common;
mod cors;
mod ip;
mod jwks_uri;
mod jwt;
#[allow(dead_code)]
#[path = "../rate_limit/support.rs"]
mod support;

use crate::common::{ConfigDir, Upstream, backend_yaml};

/// A config directory with Backend `up` and Route `r` (host `h`) whose one rule has `rule`
/// (YAML lines indented for the rule), plus `extra` documents.
pub fn config(up: &Upstream, rule: &str, extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &format!(
            "{}apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  hostnames: [h]\n  rules:\n    - name: api\n      backendRefs: [{{ name: up }}]\n{rule}---\n{extra}",
            backend_yaml("up", &[up.addr])
        ),
    );
    cfg
}
