//! Local limits through the real binary: the client-address flags (`--trusted-proxies`,
//! `--trusted-proxy-hops`, `--client-ip-header`, their environment variables), reloads of the
//! configuration directory, the admin `/config` view and `tidegate validate`.

use std::process::Command;
use std::time::Duration;

use http::StatusCode;

use crate::common::{ConfigDir, HttpClient, Upstream, backend_yaml, eventually};
use crate::support::{Gateway, limited_route, metric};

use crate::common::binary::BIN;

/// A config directory with Backend `up` and `limited_route(limits)`.
fn config(up: &Upstream, limits: &str) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &limited_route(limits, "")),
    );
    cfg
}

const PER_CLIENT: &str =
    "    - { name: per-client, key: { clientIP: {} }, rate: 1, per: 1m, burst: 1 }\n";

async fn status(gw: &Gateway, headers: &[(&str, &str)]) -> u16 {
    HttpClient::http1()
        .get(gw.http, "h", "/", headers)
        .await
        .status
        .as_u16()
}

/// `--client-ip-header forwarded` with two hops: the client is found through a chain of trusted
/// proxies, an untrusted hop is taken as the client, and X-Forwarded-For is not read at all.
#[tokio::test]
async fn the_binary_keys_clients_by_the_forwarded_header_of_trusted_proxies() {
    let up = Upstream::start("up").await;
    let cfg = config(&up, PER_CLIENT);
    let gw = Gateway::start(
        cfg.path(),
        &[
            "--trusted-proxies",
            "127.0.0.1/32,10.0.0.0/8",
            "--trusted-proxy-hops",
            "2",
            "--client-ip-header",
            "forwarded",
        ],
        &[],
    )
    .await;
    for (forwarded, want, why) in [
        ("for=1.1.1.1", 200, "first of 1.1.1.1"),
        ("for=1.1.1.1;proto=http", 429, "1.1.1.1 again"),
        (
            "for=2.2.2.2, for=10.0.0.5",
            200,
            "two trusted hops deep: 2.2.2.2",
        ),
        ("for=2.2.2.2", 429, "the same client, one hop"),
        (
            "for=3.3.3.3, for=4.4.4.4",
            200,
            "4.4.4.4 is not a trusted proxy: it is the client",
        ),
        ("for=\"[2001:db8::1]:4711\"", 200, "an IPv6 client"),
        ("for=4.4.4.4", 429, "4.4.4.4 again"),
        (
            "for=9.9.9.9, for=8.8.8.8, for=10.0.0.1",
            200,
            "hops end at 8.8.8.8",
        ),
        ("for=8.8.8.8", 429, "8.8.8.8 again"),
    ] {
        assert_eq!(
            status(&gw, &[("forwarded", forwarded)]).await,
            want,
            "{why}"
        );
    }
    // X-Forwarded-For is not the configured header: both requests are the peer's (127.0.0.1).
    assert_eq!(status(&gw, &[("x-forwarded-for", "5.5.5.5")]).await, 200);
    assert_eq!(status(&gw, &[("x-forwarded-for", "6.6.6.6")]).await, 429);
}

/// The flags' environment variables work too, and without trusted proxies a forwarding header
/// is ignored (a client cannot choose its own bucket).
#[tokio::test]
async fn trusted_proxies_from_the_environment_and_none_by_default() {
    let up = Upstream::start("up").await;
    let cfg = config(&up, PER_CLIENT);
    let trusting = Gateway::start(
        cfg.path(),
        &[],
        &[("TIDEGATE_TRUSTED_PROXIES", "127.0.0.0/8")],
    )
    .await;
    for (xff, want) in [
        ("7.7.7.7", 200),
        ("7.7.7.7", 429),
        ("8.8.8.8", 200),
        ("1.2.3.4, 8.8.8.8", 429), // one hop: the rightmost entry
    ] {
        assert_eq!(
            status(&trusting, &[("x-forwarded-for", xff)]).await,
            want,
            "{xff}"
        );
    }
    let untrusting = Gateway::start(cfg.path(), &[], &[]).await;
    assert_eq!(
        status(&untrusting, &[("x-forwarded-for", "7.7.7.7")]).await,
        200
    );
    assert_eq!(
        status(&untrusting, &[("x-forwarded-for", "8.8.8.8")]).await,
        429,
        "the same peer, whatever it claims"
    );
}

#[test]
fn bad_client_address_flags_are_refused_at_start() {
    for (args, needle) in [
        (
            &["--trusted-proxies", "10.0.0.0/33"][..],
            "--trusted-proxies",
        ),
        (
            &["--trusted-proxies", "proxy.example"][..],
            "--trusted-proxies",
        ),
        (&["--trusted-proxy-hops", "0"][..], "--trusted-proxy-hops"),
        (
            &["--client-ip-header", "x-real-ip"][..],
            "--client-ip-header",
        ),
        (&["--redis-url", "http://redis:6379"][..], "--redis-url"),
    ] {
        let out = Command::new(BIN)
            .args([
                "run",
                "--config",
                "/nonexistent",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--admin-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("TIDEGATE_REDIS_URL")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Reloads keep every bucket whose limit is unchanged (a client cannot reset its allowance by
/// waiting for a deploy), and a limit whose settings change starts afresh.
#[tokio::test]
async fn reloads_keep_unchanged_buckets_and_reset_changed_ones() {
    let up = Upstream::start("up").await;
    let limits = |rate: u32| {
        format!(
            "    - {{ name: all, key: {{ none: {{}} }}, rate: {rate}, per: 1m, burst: 1 }}\n    - {{ name: other, key: {{ none: {{}} }}, rate: 100, per: 1h }}\n"
        )
    };
    let cfg = config(&up, &limits(1));
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    assert_eq!(status(&gw, &[]).await, 200);
    assert_eq!(status(&gw, &[]).await, 429);
    let version = || async {
        let r = HttpClient::http1()
            .get(gw.admin, "admin", "/config", &[])
            .await;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v
    };
    let v0 = version().await;
    assert_eq!(v0["rateLimits"][0]["limits"][0]["name"], "all", "{v0}");
    // Waits for a table newer than `after` whose `all` limit has `rate` (a reload can also
    // come from something else, such as a rename's events arriving apart).
    let reloaded = |after: u64, rate: u32| async move {
        eventually(
            Duration::from_secs(10),
            "the reload is published",
            || async {
                let c = version().await;
                let v = c["version"].as_u64().unwrap();
                let all = &c["rateLimits"][0]["limits"][0];
                (v > after && all["rate"] == rate).then_some(v)
            },
        )
        .await
    };
    // Another object changes: the table is new, the buckets are not.
    cfg.write(
        "other.yaml",
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: other }\nspec:\n  hostnames: [other]\n  rules:\n    - backendRefs: [{ name: up }]\n",
    );
    let v1 = reloaded(v0["version"].as_u64().unwrap(), 1).await;
    let r = HttpClient::http1().get(gw.http, "h", "/", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Refused by `all` before `other` was asked: only `all` is named.
    assert_eq!(r.headers["ratelimit-policy"], "\"all\";q=1;w=60");
    // The rate of `all` changes: its bucket starts afresh, `other`'s goes on.
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up.addr]) + &limited_route(&limits(2), "")),
    );
    reloaded(v1, 2).await;
    let r = HttpClient::http1().get(gw.http, "h", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers["ratelimit"],
        "\"all\";r=0;t=30, \"other\";r=98;t=72"
    );
    let allowed = metric(
        gw.admin,
        "tidegate_rate_limit_decisions_total",
        &[
            ("policy", "default/p"),
            ("limit", "other"),
            ("result", "allowed"),
        ],
    )
    .await;
    assert_eq!(allowed, Some(2.0));
}

/// `tidegate validate` checks policies offline: a Global limit needs `--redis-url` (nothing is
/// connected to), and a bad policy is one line naming object and field.
#[test]
fn validate_checks_rate_limit_policies() {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &["127.0.0.1:9".parse().unwrap()])
            + &limited_route(
                "    - { name: g, key: { clientIP: {} }, rate: 10, per: 1s, scope: Global }\n",
                "  failureMode: Closed\n",
            )),
    );
    let validate = |extra: &[&str]| {
        Command::new(BIN)
            .args(["validate", "--config"])
            .arg(cfg.path())
            .args(extra)
            .env_remove("TIDEGATE_REDIS_URL")
            .output()
            .unwrap()
    };
    let out = validate(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(
            "RateLimitPolicy default/p: spec.limits[0].scope: a Global limit needs Redis"
        ),
        "{text}"
    );
    let out = validate(&["--redis-url", "redis://redis.invalid:6379"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
}
