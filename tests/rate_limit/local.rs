//! Local limits through a real gateway: exactness, keys, trusted proxies, headers, the 429,
//! metrics, several policies, reloads and eviction.

use std::time::Duration;

use http::StatusCode;
use tidegate::proxy::{ClientIpConfig, ProxyConfig};

use crate::common::{HttpClient, eventually, wait_for_version};
use crate::support::{Local, assert_exact, hammer, limited_route, metric};

fn trusting_loopback() -> ProxyConfig {
    ProxyConfig {
        client_ip: ClientIpConfig {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            hops: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn get(l: &Local, headers: &[(&str, &str)]) -> crate::common::Reply {
    HttpClient::http1().get(l.http(), "h", "/", headers).await
}

#[tokio::test]
async fn a_local_token_bucket_admits_burst_plus_rate_under_load() {
    let l = Local::start(
        &limited_route(
            // A burst of one second: a stall of the load generator shorter than that loses no
            // allowance, so the ≥ 95% bound measures the limiter, not the load.
            "    - { name: all, key: { none: {} }, rate: 50, per: 1s, burst: 50 }\n",
            "",
        ),
        ProxyConfig::default(),
    )
    .await;
    let t = hammer(&[l.http()], &[], 4, Duration::from_secs(3)).await;
    assert_eq!(t.other, 0, "{t:?}");
    assert_exact(&t, 50.0, 50.0);
}

#[tokio::test]
async fn a_local_sliding_window_admits_rate_per_window_under_load() {
    let l = Local::start(
        &limited_route(
            "    - { name: all, key: { none: {} }, algorithm: SlidingWindow, rate: 100, per: 1s }\n",
            "",
        ),
        ProxyConfig::default(),
    )
    .await;
    let t = hammer(&[l.http()], &[], 4, Duration::from_secs(3)).await;
    let secs = t.elapsed.as_secs_f64();
    // At most rate per fixed window (a 3 s run touches at most 4 of them), at least 95% of
    // rate per second over the run.
    assert!(t.allowed as f64 <= 100.0 * (secs.ceil() + 1.0), "{t:?}");
    assert!(t.allowed as f64 >= 0.95 * 100.0 * secs, "{t:?}");
    assert!(t.limited > 0, "{t:?}");
}

#[tokio::test]
async fn clients_count_apart_and_an_untrusted_peer_cannot_spoof_its_address() {
    let limits = "    - { name: per-client, key: { clientIP: {} }, rate: 1, per: 1m, burst: 2 }\n";
    // No trusted proxies: X-Forwarded-For is the client's word and counts for nothing.
    let l = Local::start(&limited_route(limits, ""), ProxyConfig::default()).await;
    for (xff, want) in [
        ("1.1.1.1", 200),
        ("1.1.1.1", 200),
        ("2.2.2.2", 429),
        ("3.3.3.3", 429),
    ] {
        let r = get(&l, &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status, want, "{xff}");
    }
    // Loopback trusted: each forwarded client has its own bucket.
    let l = Local::start(&limited_route(limits, ""), trusting_loopback()).await;
    for (xff, want) in [
        ("1.1.1.1", 200),
        ("1.1.1.1", 200),
        ("1.1.1.1", 429),
        ("2.2.2.2", 200),
        ("9.9.9.9, 2.2.2.2", 200), // the rightmost entry is what the trusted peer saw
        ("2.2.2.2", 429),
    ] {
        let r = get(&l, &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status, want, "{xff}");
    }
}

#[tokio::test]
async fn allowed_and_limited_answers_carry_the_draft_headers_and_a_problem_body() {
    let l = Local::start(
        &limited_route(
            "    - { name: per-client, key: { clientIP: {} }, rate: 2, per: 1s, burst: 2 }\n    - { name: hourly, key: { none: {} }, rate: 100, per: 1h }\n",
            "",
        ),
        ProxyConfig::default(),
    )
    .await;
    let policy = "\"per-client\";q=2;w=1, \"hourly\";q=100;w=3600";
    let r = get(&l, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["ratelimit-policy"], policy);
    // t: seconds until the allowance is whole again (one request: half a second; one of a
    // hundred per hour: 36 s).
    assert_eq!(
        r.headers["ratelimit"],
        "\"per-client\";r=1;t=1, \"hourly\";r=99;t=36"
    );
    let r = get(&l, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per-client\";r=0;t=1")
    );

    let r = get(&l, &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.headers["ratelimit"], "\"per-client\";r=0;t=1");
    assert_eq!(r.headers["ratelimit-policy"], "\"per-client\";q=2;w=1");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "violated-policies": ["per-client"],
        })
    );
    assert_eq!(
        l.up.hits(),
        2,
        "a limited request never reaches the upstream"
    );

    let count = |limit: &'static str, result: &'static str| {
        let admin = l.admin();
        async move {
            metric(
                admin,
                "tidegate_rate_limit_decisions_total",
                &[
                    ("policy", "default/p"),
                    ("limit", limit),
                    ("result", result),
                ],
            )
            .await
        }
    };
    assert_eq!(count("per-client", "allowed").await, Some(2.0));
    assert_eq!(count("per-client", "limited").await, Some(1.0));
    // The third request was refused before the hourly limit was asked: it did not count.
    assert_eq!(count("hourly", "allowed").await, Some(2.0));
    assert_eq!(count("hourly", "limited").await, Some(0.0));
    let limited = metric(
        l.admin(),
        "tidegate_requests_total",
        &[
            ("code", "429"),
            ("reason", "rate_limited"),
            ("route", "default/r/api"),
        ],
    )
    .await;
    assert_eq!(limited, Some(1.0));
    let keys = metric(
        l.admin(),
        "tidegate_rate_limit_keys",
        &[("policy", "default/p"), ("limit", "per-client")],
    )
    .await;
    assert_eq!(keys, Some(1.0));
}

/// Two policies on one rule both apply; a request one refuses is not counted by the other,
/// and the refusing policy's status is the answer.
#[tokio::test]
async fn every_policy_applies_and_a_refused_request_counts_nowhere() {
    let yaml = limited_route(
        "    - { name: fast, key: { none: {} }, rate: 2, per: 1s, burst: 1 }\n",
        "",
    ) + "\n---\napiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: q }\nspec:\n  targetRef: { kind: Route, name: r, rule: api }\n  limits:\n    - { name: slow, key: { none: {} }, rate: 3, per: 1h }\n  response: { statusCode: 503 }\n";
    let l = Local::start(&yaml, ProxyConfig::default()).await;
    let r = get(&l, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["ratelimit"],
        "\"fast\";r=0;t=1, \"slow\";r=2;t=1200"
    );
    // Refused by fast (429, its policy's status), many times: slow does not count them.
    for _ in 0..5 {
        assert_eq!(get(&l, &[]).await.status, 429);
    }
    let remaining_slow = |want: &'static str| {
        let l = &l;
        async move {
            let r = get(l, &[]).await;
            (r.status == 200).then(|| {
                let h = r.headers["ratelimit"].to_str().unwrap().to_owned();
                assert!(h.contains(want), "{h}");
            })
        }
    };
    eventually(Duration::from_secs(3), "fast lets one through", || {
        remaining_slow("\"slow\";r=1;")
    })
    .await;
    eventually(Duration::from_secs(3), "fast lets one through", || {
        remaining_slow("\"slow\";r=0;")
    })
    .await;
    // Now slow refuses, with its own status.
    let r = eventually(Duration::from_secs(3), "slow refuses", || async {
        let r = get(&l, &[]).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(
        r.body.contains("\"violated-policies\":[\"slow\"]"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_missing_header_gets_a_shared_bucket_or_no_limit_as_configured() {
    let route = |name: &str, host: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{host}]\n  rules:\n    - backendRefs: [{{ name: up }}]\n---\n"
        )
    };
    let policy = |name: &str, route: &str, missing: &str| {
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name} }}\nspec:\n  targetRef: {{ kind: Route, name: {route} }}\n  limits:\n    - {{ name: by-key, key: {{ header: x-api-key, missingHeader: {missing} }}, rate: 1, per: 1m, burst: 1 }}\n---\n"
        )
    };
    let yaml = route("open", "open.test")
        + &route("shared", "shared.test")
        + &policy("p-open", "open", "NoLimit")
        + &policy("p-shared", "shared", "SharedBucket");
    let l = Local::start(&yaml, ProxyConfig::default()).await;
    let http = HttpClient::http1();
    for _ in 0..5 {
        let r = http.get(l.http(), "open.test", "/", &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.headers.get("ratelimit").is_none(), "no limit applied");
    }
    for (key, want) in [(Some("a"), 200), (Some("a"), 429), (Some("b"), 200)] {
        let r = http
            .get(l.http(), "open.test", "/", &[("x-api-key", key.unwrap())])
            .await;
        assert_eq!(r.status, want, "{key:?}");
    }
    for (key, want) in [(None, 200), (None, 429), (Some("a"), 200)] {
        let h: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        let r = http.get(l.http(), "shared.test", "/", &h).await;
        assert_eq!(r.status, want, "{key:?}");
    }
}

#[tokio::test]
async fn a_combined_key_counts_each_pair_apart() {
    let l = Local::start(
        &limited_route(
            "    - { name: pair, key: { clientIP: {}, header: x-tenant }, rate: 1, per: 1m, burst: 1 }\n",
            "",
        ),
        trusting_loopback(),
    )
    .await;
    for (ip, tenant, want) in [
        ("1.1.1.1", "t1", 200),
        ("1.1.1.1", "t1", 429),
        ("1.1.1.1", "t2", 200),
        ("2.2.2.2", "t1", 200),
    ] {
        let r = get(&l, &[("x-forwarded-for", ip), ("x-tenant", tenant)]).await;
        assert_eq!(r.status, want, "{ip} {tenant}");
    }
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_and_a_changed_limit_starts_afresh() {
    let limit = |rate: u32| {
        limited_route(
            &format!(
                "    - {{ name: all, key: {{ none: {{}} }}, rate: {rate}, per: 1m, burst: 1 }}\n"
            ),
            "",
        )
    };
    let l = Local::start(&limit(1), ProxyConfig::default()).await;
    assert_eq!(get(&l, &[]).await.status, 200);
    assert_eq!(get(&l, &[]).await.status, 429);
    let v = l.gw.table().unwrap().version;
    // Another object changes: the table is new, the bucket is not.
    l.cfg.write(
        "other.yaml",
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: other }\nspec:\n  hostnames: [other]\n  rules:\n    - backendRefs: [{ name: up }]\n",
    );
    let v = wait_for_version(&l.gw, v).await;
    assert_eq!(get(&l, &[]).await.status, 429);
    // The limit itself changes: a new bucket.
    l.cfg.write(
        "all.yaml",
        &(crate::common::backend_yaml("up", &[l.up.addr]) + &limit(2)),
    );
    wait_for_version(&l.gw, v).await;
    assert_eq!(get(&l, &[]).await.status, 200);
}

/// A client keeps asking at twice its rate while a crowd of one-off clients, many more than
/// maxKeys, keeps evicting it: it still gets no more than burst + rate × time.
#[tokio::test]
async fn eviction_never_lets_a_client_past_its_limit() {
    let l = Local::start(
        &limited_route(
            "    - { name: per-client, key: { clientIP: {} }, rate: 20, per: 1s, burst: 5, maxKeys: 8 }\n",
            "",
        ),
        trusting_loopback(),
    )
    .await;
    let crowd = {
        let addr = l.http();
        tokio::spawn(async move {
            let http = HttpClient::http1();
            for i in 0u32..u32::MAX {
                let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                http.get(addr, "h", "/", &[("x-forwarded-for", &ip)]).await;
            }
        })
    };
    let t = hammer(
        &[l.http()],
        &[("x-forwarded-for", "192.0.2.1".to_owned())],
        2,
        Duration::from_secs(3),
    )
    .await;
    crowd.abort();
    let ceiling = 5.0 + 20.0 * t.elapsed.as_secs_f64();
    assert!(t.allowed as f64 <= ceiling + 1.0, "{t:?}: over {ceiling}");
    assert!(t.allowed as f64 >= 0.8 * ceiling, "{t:?}: starved");
    let evictions = metric(
        l.admin(),
        "tidegate_rate_limit_evictions_total",
        &[("policy", "default/p"), ("limit", "per-client")],
    )
    .await
    .unwrap_or(0.0);
    assert!(
        evictions > 100.0,
        "the crowd evicted active keys: {evictions}"
    );
    let keys = metric(
        l.admin(),
        "tidegate_rate_limit_keys",
        &[("policy", "default/p"), ("limit", "per-client")],
    )
    .await
    .unwrap();
    assert!(keys <= 8.0, "{keys}");
}
