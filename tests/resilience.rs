//! Upstream resilience through real sockets: balancing, health, ejection, breaking, retries,
//! limits, and runtime state that survives reloads. Upstreams fail on cue (common::Faults).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    ConfigDir, HttpClient, Upstream, backend_yaml_with, eventually, gateway, route_yaml,
    wait_for_version,
};
use http::StatusCode;

fn addrs(ups: &[&Upstream]) -> Vec<String> {
    ups.iter().map(|u| u.addr.to_string()).collect()
}

/// A gateway serving Route `r` (`/`, with `route` rule lines) to Backend `b` over `ups` (with
/// `backend` spec lines), and a client; the directory lives as long as the gateway.
async fn serve_one(
    ups: &[&Upstream],
    backend: &str,
    route: &str,
) -> (ConfigDir, tidegate::Gateway, HttpClient, SocketAddr) {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml_with("b", &addrs(ups), backend) + &route_yaml("r", "/", "b", route)),
    );
    let gw = gateway(cfg.path()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    (cfg, gw, c, at)
}

/// Sends `n` sequential GETs; counts replies by (upstream name or status).
async fn tally(
    c: &HttpClient,
    at: SocketAddr,
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = c.get(at, "h", path, headers).await;
        let key = match r.headers.get("x-upstream") {
            Some(u) if r.status == StatusCode::OK => u.to_str().unwrap().to_owned(),
            _ => r.status.as_u16().to_string(),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn each_algorithm_distributes_or_sticks_as_documented() {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
    ];
    let all = addrs(&ups.iter().collect::<Vec<_>>());
    let weighted: Vec<String> = vec![format!("{} weight=3", all[0]), all[1].clone()];
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &[
            backend_yaml_with("rr", &all, ""),
            backend_yaml_with(
                "wrr",
                &weighted,
                "  loadBalancer: { algorithm: WeightedRoundRobin }\n",
            ),
            backend_yaml_with("rand", &all, "  loadBalancer: { algorithm: Random }\n"),
            backend_yaml_with("lr", &all, "  loadBalancer: { algorithm: LeastRequest }\n"),
            backend_yaml_with(
                "hash",
                &all,
                "  loadBalancer: { algorithm: ConsistentHash, hashOn: { header: x-user } }\n",
            ),
            backend_yaml_with(
                "cookie",
                &all,
                "  loadBalancer: { algorithm: ConsistentHash, hashOn: { cookie: session } }\n",
            ),
            backend_yaml_with("ip", &all, "  loadBalancer: { algorithm: IPHash }\n"),
            route_yaml("rr", "/rr", "rr", ""),
            route_yaml("wrr", "/wrr", "wrr", ""),
            route_yaml("rand", "/rand", "rand", ""),
            route_yaml("lr", "/lr", "lr", ""),
            route_yaml("hash", "/hash", "hash", ""),
            route_yaml("cookie", "/cookie", "cookie", ""),
            route_yaml("ip", "/ip", "ip", ""),
        ]
        .concat(),
    );
    let gw = gateway(cfg.path()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());

    let rr = tally(&c, at, "/rr", 300, &[]).await;
    assert_eq!(
        rr.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{rr:?}"
    );

    let wrr = tally(&c, at, "/wrr", 400, &[]).await;
    assert_eq!((wrr["u0"], wrr["u1"]), (300, 100), "weights 3:1");

    let rand = tally(&c, at, "/rand", 600, &[]).await;
    assert!(rand.values().all(|n| (120..280).contains(n)), "{rand:?}");

    // Least request: one endpoint is slow, so concurrent requests pile up there; P2C avoids it.
    ups[0].faults.set_status(0);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = c.clone();
        let delay = if i % 3 == 0 { "300" } else { "0" };
        tasks.push(tokio::spawn(async move {
            c.get(at, "h", "/lr", &[("x-delay-ms", delay)]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }

    // Consistent hash: the same key always lands on the same endpoint; keys spread.
    let mut homes = HashMap::new();
    for user in 0..30 {
        let key = format!("user-{user}");
        let first = tally(&c, at, "/hash", 5, &[("x-user", &key)]).await;
        assert_eq!(first.len(), 1, "key {key} must stick: {first:?}");
        homes.insert(key, first.into_keys().next().unwrap());
    }
    let distinct: std::collections::HashSet<_> = homes.values().collect();
    assert_eq!(distinct.len(), 3, "30 keys use every endpoint");
    let by_cookie = tally(
        &c,
        at,
        "/cookie",
        10,
        &[("cookie", "a=1; session=abc; b=2")],
    )
    .await;
    assert_eq!(by_cookie.len(), 1, "{by_cookie:?}");
    let by_ip = tally(&c, at, "/ip", 20, &[]).await;
    assert_eq!(
        by_ip.len(),
        1,
        "one client address, one endpoint: {by_ip:?}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_within_its_threshold_and_comes_back() {
    let (good, bad) = (Upstream::start("good").await, Upstream::start("bad").await);
    bad.faults.set_status(502);
    let (_cfg, gw, c, at) = serve_one(&[&good, &bad], "  healthCheck: { passive: { consecutiveFailures: 3, ejectionTime: 1s, maxEjectionPercent: 50 } }\n", "").await;
    let seen = tally(&c, at, "/", 40, &[]).await;
    assert_eq!(
        seen.get("502"),
        Some(&3),
        "clients see exactly the threshold's worth of failures: {seen:?}"
    );
    assert_eq!(seen["good"], 37);

    let admin = gw.admin_addr().unwrap();
    let view: serde_json::Value =
        serde_json::from_str(&c.get(admin, "a", "/backends", &[]).await.body).unwrap();
    let bad_view = view[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == bad.addr.to_string())
        .unwrap()
        .clone();
    assert_eq!(bad_view["ready"], false);
    assert!(bad_view["ejectedUntil"].is_string(), "{view}");

    // Recovered: after the ejection time it gets traffic again.
    bad.faults.set_status(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = tally(&c, at, "/", 20, &[]).await;
    assert_eq!(after.get("bad"), Some(&10), "{after:?}");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_slow_start_brings_it_back() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let (_cfg, gw, c, at) = serve_one(&[&a, &b], "  healthCheck: { active: { http: { path: /healthz }, interval: 100ms, timeout: 80ms, healthyThreshold: 2, unhealthyThreshold: 2 } }\n  slowStart: { window: 2s }\n", "").await;
    b.faults.set_health(500);
    let admin = gw.admin_addr().unwrap();
    eventually(Duration::from_secs(5), "the probes take b out", || async {
        let view: serde_json::Value =
            serde_json::from_str(&c.get(admin, "a", "/backends", &[]).await.body).unwrap();
        let out = view[0]["endpoints"].as_array().into_iter().flatten();
        let out_of_service = out.into_iter().any(|e| e["activeHealthy"] == false);
        (b.health_hits.load(std::sync::atomic::Ordering::Relaxed) >= 2 && out_of_service)
            .then_some(())
    })
    .await;
    let out = tally(&c, at, "/", 40, &[]).await;
    assert_eq!(
        out.get("a"),
        Some(&40),
        "the unhealthy endpoint gets nothing: {out:?}"
    );

    b.faults.set_health(200);
    eventually(
        Duration::from_secs(5),
        "the probes bring b back",
        || async {
            let view: serde_json::Value =
                serde_json::from_str(&c.get(admin, "a", "/backends", &[]).await.body).unwrap();
            let endpoints = view[0]["endpoints"].as_array().cloned().unwrap_or_default();
            endpoints
                .iter()
                .all(|e| e["activeHealthy"] == true)
                .then_some(())
        },
    )
    .await;
    let early = tally(&c, at, "/", 100, &[]).await;
    let early_b = early.get("b").copied().unwrap_or(0);
    assert!(
        (1..40).contains(&early_b),
        "slow start: a small share at first, got {early:?}"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let late = tally(&c, at, "/", 100, &[]).await;
    assert!(late["b"] >= 40, "full share after the window: {late:?}");
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_circuit_breaker_opens_sheds_half_opens_and_closes() {
    let up = Upstream::start("flaky").await;
    up.faults.set_status(500);
    let (_cfg, gw, c, at) = serve_one(&[&up], "  circuitBreaker: { failureRatio: 0.5, minRequests: 5, window: 10s, openDuration: 500ms, halfOpenRequests: 2 }\n", "").await;
    let first = tally(&c, at, "/", 5, &[]).await;
    assert_eq!(first.get("500"), Some(&5));
    let shed = c.get(at, "h", "/", &[]).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.body, "circuit breaker open for backend default/b\n");
    assert_eq!(up.hits(), 5, "an open breaker sends nothing");

    up.faults.set_status(0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let trials = tally(&c, at, "/", 2, &[]).await;
    assert_eq!(trials.get("flaky"), Some(&2), "half-open trials pass");
    let closed = tally(&c, at, "/", 10, &[]).await;
    assert_eq!(closed.get("flaky"), Some(&10), "closed again");

    let metrics = c
        .get(gw.admin_addr().unwrap(), "a", "/metrics", &[])
        .await
        .body;
    assert!(
        metrics.contains("tidegate_circuit_breaker_open{backend=\"default/b\"} 0"),
        "{metrics}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn retries_recover_a_dead_endpoint_and_a_flaky_one() {
    let good = Upstream::start("good").await;
    let flaky = Upstream::start("flaky").await;
    flaky.faults.set_status(503);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = ConfigDir::new();
    let retry = "      retry: { attempts: 3, on: [connect-failure, gateway-error], backoff: { base: 1ms, max: 5ms } }\n";
    cfg.write(
        "all.yaml",
        &[
            backend_yaml_with(
                "with-dead",
                &[dead.to_string(), good.addr.to_string()],
                "  healthCheck: { passive: { consecutiveFailures: 3, ejectionTime: 30s } }\n",
            ),
            backend_yaml_with("with-flaky", &addrs(&[&flaky, &good]), ""),
            route_yaml("dead", "/dead", "with-dead", retry),
            route_yaml("flaky", "/flaky", "with-flaky", retry),
            route_yaml("post", "/post", "with-flaky", retry),
        ]
        .concat(),
    );
    let gw = gateway(cfg.path()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    // The dead endpoint costs a retry until passive health ejects it; no client sees it.
    assert_eq!(tally(&c, at, "/dead", 20, &[]).await.get("good"), Some(&20));
    assert_eq!(
        tally(&c, at, "/flaky", 10, &[]).await.get("good"),
        Some(&10)
    );
    // POST is not idempotent: not retried unless the rule says so.
    let mut failed = 0;
    for _ in 0..10 {
        let post = http::Request::post(format!("http://{at}/post"))
            .header("host", "h")
            .body(Default::default())
            .unwrap();
        if c.send(post).await.unwrap().status == StatusCode::SERVICE_UNAVAILABLE {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 5,
        "every other POST hits the flaky endpoint and is not retried"
    );
    let metrics = c
        .get(gw.admin_addr().unwrap(), "a", "/metrics", &[])
        .await
        .body;
    assert!(
        metrics.contains("tidegate_upstream_retries_total{route=\"default/dead\"} 3"),
        "{metrics}"
    );
    // Round robin and retries alternate, so every request met the flaky endpoint first.
    assert!(
        metrics.contains("tidegate_upstream_retries_total{route=\"default/flaky\"} 10"),
        "{metrics}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_retried_post_replays_its_body() {
    let (flaky, good) = (
        Upstream::start("flaky").await,
        Upstream::start("good").await,
    );
    flaky.faults.set_status(502);
    let (_cfg, gw, c, at) = serve_one(
        &[&flaky, &good],
        "",
        "      retry: { attempts: 2, nonIdempotent: true, backoff: { base: 1ms } }\n",
    )
    .await;
    for _ in 0..4 {
        let post = http::Request::post(format!("http://{at}/items"))
            .header("host", "h")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"{\"n\":1}",
            )))
            .unwrap();
        let r = c.send(post).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let e = r.echo();
        assert_eq!((e.upstream.as_str(), e.method.as_str()), ("good", "POST"));
        assert_eq!(e.header("content-length"), Some("7"));
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_retry_budget_caps_amplification_in_a_full_outage() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.faults.set_status(503);
    b.faults.set_status(503);
    let (_cfg, gw, c, at) = serve_one(
        &[&a, &b],
        "",
        "      retry: { attempts: 5, on: [gateway-error], backoff: { base: 1ms, max: 1ms } }\n",
    )
    .await;
    let out = tally(&c, at, "/", 200, &[]).await;
    assert_eq!(out.get("503"), Some(&200));
    let sent = a.hits() + b.hits();
    // Without a budget: 200 × 5 = 1000 attempts. With it: ~20% more than the requests.
    assert!(
        sent <= 200 + 200 / 5 + 10,
        "{sent} attempts for 200 requests"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn per_try_timeout_moves_on_to_another_endpoint() {
    let (hole, good) = (Upstream::start("hole").await, Upstream::start("good").await);
    hole.faults.set_mode(2);
    let (_cfg, gw, c, at) = serve_one(&[&hole, &good], "", "      retry: { attempts: 2, on: [reset], perTryTimeout: 200ms, backoff: { base: 1ms } }\n      timeouts: { request: 3s }\n").await;
    let started = Instant::now();
    let out = tally(&c, at, "/", 4, &[]).await;
    assert_eq!(out.get("good"), Some(&4), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connection_limits_shed_excess_load_fast() {
    let up = Upstream::start("slow").await;
    let (_cfg, gw, c, at) = serve_one(
        &[&up],
        "  connection: { maxConnections: 2, maxPendingRequests: 1, pendingTimeout: 100ms }\n",
        "",
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = c.get(at, "h", "/", &[("x-delay-ms", "500")]).await;
            (r.status, started.elapsed(), r.body)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, took, body) = t.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body, "backend default/b is at its connection limit\n");
                assert!(
                    took < Duration::from_millis(400),
                    "shed fast, not queued: {took:?}"
                );
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(ok, 2, "exactly maxConnections served at once");
    assert_eq!(up.hits(), 2);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn ejections_and_counters_survive_a_route_reload() {
    let (good, bad) = (Upstream::start("good").await, Upstream::start("bad").await);
    bad.faults.set_status(500);
    let cfg = ConfigDir::new();
    let b = backend_yaml_with(
        "b",
        &addrs(&[&good, &bad]),
        "  healthCheck: { passive: { consecutiveFailures: 2, ejectionTime: 30s } }\n",
    );
    cfg.write("backends.yaml", &b);
    cfg.write("routes.yaml", &route_yaml("r", "/", "b", ""));
    let gw = gateway(cfg.path()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    let before = tally(&c, at, "/", 10, &[]).await;
    assert_eq!(before.get("500"), Some(&2));
    let v = gw.table().unwrap().version;
    cfg.write(
        "routes.yaml",
        &(route_yaml("r", "/", "b", "") + &route_yaml("other", "/other", "b", "")),
    );
    wait_for_version(&gw, v).await;
    let after = tally(&c, at, "/", 10, &[]).await;
    assert_eq!(
        after.get("good"),
        Some(&10),
        "still ejected after the reload: {after:?}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
