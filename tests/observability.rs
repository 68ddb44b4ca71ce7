//! Metrics, access log and trace propagation, read back with real parsers after known traffic.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ConfigDir, HttpClient, Upstream, backend_yaml};
use http::StatusCode;
use tidegate::telemetry::{AccessLogConfig, AccessLogFormat, Telemetry};

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The JSON lines written so far, waiting until there are `n`.
    async fn lines(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("every line is JSON"))
                .collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} access-log lines");
    }
}

const CONFIG: &str = r#"
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: shop, namespace: web }
spec:
  hostnames: [shop.test]
  rules:
    - name: api
      matches: [{ path: { value: /api } }]
      backendRefs: [{ name: api }]
    - backendRefs: [{ name: site }]
    - name: down
      matches: [{ path: { value: /down } }]
      backendRefs: [{ name: dead }]
"#;

async fn start(
    log: AccessLogConfig,
) -> (tidegate::Gateway, Captured, ConfigDir, Upstream, Upstream) {
    let (api, site) = (Upstream::start("api").await, Upstream::start("site").await);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = ConfigDir::new();
    let backends = backend_yaml("api", &[api.addr])
        + &backend_yaml("site", &[site.addr])
        + &backend_yaml("dead", &[dead]);
    cfg.write(
        "all.yaml",
        &(backends.replace("metadata: {", "metadata: { namespace: web,") + CONFIG),
    );
    let captured = Captured::default();
    let telemetry = Arc::new(Telemetry::with_output(&log, Box::new(captured.clone())));
    let gw = tidegate::Gateway::builder()
        .config_path(cfg.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .telemetry(telemetry)
        .start()
        .await
        .unwrap();
    (gw, captured, cfg, api, site)
}

fn json_log() -> AccessLogConfig {
    AccessLogConfig {
        format: AccessLogFormat::Json,
        include_query: false,
    }
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

async fn scrape(gw: &tidegate::Gateway) -> prometheus_parse::Scrape {
    let r = HttpClient::http1()
        .get(gw.admin_addr().unwrap(), "admin", "/metrics", &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned())))
        .expect("a valid exposition")
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let (gw, _log, _cfg, _api, _site) = start(json_log()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    for _ in 0..5 {
        assert_eq!(
            c.get(at, "shop.test", "/api/x", &[]).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..3 {
        assert_eq!(
            c.get(at, "shop.test", "/page", &[("x-status", "404")])
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    let post = http::Request::post(format!("http://{at}/api/orders"))
        .header("host", "shop.test")
        .body(Default::default())
        .unwrap();
    assert_eq!(c.send(post).await.unwrap().status, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            c.get(at, "unknown.test", "/", &[]).await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        c.get(at, "shop.test", "/down", &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
    tokio::time::sleep(Duration::from_millis(50)).await; // the last body may finish just after the reply

    let s = scrape(&gw).await;
    let req = |route, backend, method, code| {
        sample(
            &s,
            "tidegate_requests_total",
            &[
                ("route", route),
                ("backend", backend),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(req("web/shop/api", "web/api", "GET", "200"), Some(5.0));
    assert_eq!(req("web/shop/api", "web/api", "POST", "200"), Some(1.0));
    assert_eq!(
        req("web/shop", "web/site", "GET", "404"),
        Some(3.0),
        "upstream 404s count under their route"
    );
    assert_eq!(
        req("", "", "GET", "404"),
        Some(2.0),
        "unmatched requests have route=\"\""
    );
    assert_eq!(req("web/shop/down", "web/dead", "GET", "502"), Some(1.0));
    let total: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "tidegate_requests_total")
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 12.0);
    assert_eq!(
        sample(
            &s,
            "tidegate_upstream_connect_errors_total",
            &[("backend", "web/dead")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "tidegate_backend_endpoints",
            &[("backend", "web/api"), ("state", "ready")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "tidegate_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "tidegate_routes", &[("state", "accepted")]),
        Some(1.0)
    );
    assert!(
        sample(
            &s,
            "tidegate_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1.6e9
    );

    // Histogram: cumulative buckets, +Inf equal to the count, count equal to the requests.
    let hist = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "tidegate_request_duration_seconds"
                && x.labels.get("route") == Some("web/shop/api")
        })
        .expect("a histogram for web/shop/api");
    let prometheus_parse::Value::Histogram(buckets) = &hist.value else {
        panic!("{:?}", hist.value)
    };
    let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "buckets are cumulative: {counts:?}"
    );
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf bucket");
    assert_eq!(inf.count, 6.0);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn access_log_lines_are_json_with_every_field() {
    let (gw, log, _cfg, _api, _site) = start(json_log()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    let post = http::Request::post(format!("http://{at}/api/items?token=secret"))
        .header("host", "shop.test")
        .header("x-request-id", "rid-1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"0123456789",
        )))
        .unwrap();
    let reply = c.send(post).await.unwrap();
    c.get(at, "nowhere.test", "/x", &[]).await;
    let lines = log.lines(2).await;

    let l = &lines[0];
    let fields = [
        "time",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream",
        "upstream_duration_ms",
        "route",
        "backend",
        "retries",
        "trace_id",
    ];
    for f in fields {
        assert!(l.get(f).is_some(), "field {f} missing in {l}");
    }
    assert_eq!(l["request_id"], "rid-1");
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], "shop.test");
    assert_eq!(l["path"], "/api/items", "the query string is left out");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 10);
    assert_eq!(l["bytes_out"], reply.body.len());
    assert_eq!(l["route"], "web/shop/api");
    assert_eq!(l["backend"], "web/api");
    assert!(l["upstream"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(l["duration_ms"].as_f64().unwrap() >= l["upstream_duration_ms"].as_f64().unwrap());
    assert_eq!(l["trace_id"].as_str().unwrap().len(), 32);
    l["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .expect("RFC 3339 time");

    let miss = &lines[1];
    assert_eq!(miss["status"], 404);
    assert_eq!(miss["route"], "");
    assert_eq!(miss["upstream"], serde_json::Value::Null);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn traceparent_keeps_the_trace_id_and_gets_a_new_parent_id() {
    let (gw, log, _cfg, _api, _site) = start(json_log()).await;
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c
        .get(
            at,
            "shop.test",
            "/api",
            &[("traceparent", given), ("tracestate", "vendor=x")],
        )
        .await;
    let e = r.echo();
    let sent = e.header("traceparent").unwrap();
    assert_eq!(&sent[..36], &given[..36], "same version and trace id");
    assert_ne!(
        &sent[36..52],
        &given[36..52],
        "a new parent (span) id for this hop"
    );
    assert_eq!(&sent[52..], "-01");
    assert_eq!(e.header("tracestate"), Some("vendor=x"));
    assert_eq!(
        log.lines(1).await[0]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    let r = c.get(at, "shop.test", "/api", &[]).await;
    let started = r.echo().header("traceparent").unwrap().to_owned();
    assert_eq!(
        started.len(),
        55,
        "a trace is started when none came in: {started}"
    );
    assert_eq!(log.lines(2).await[1]["trace_id"], &started[3..35]);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn access_log_off_writes_nothing() {
    let (gw, log, _cfg, _api, _site) = start(AccessLogConfig {
        format: AccessLogFormat::Off,
        include_query: false,
    })
    .await;
    HttpClient::http1()
        .get(gw.http_addr(), "shop.test", "/api", &[])
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(log.0.lock().unwrap().is_empty());
    gw.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn the_dashboard_uses_only_metrics_that_exist() {
    let dashboard = std::fs::read_to_string("charts/tidegate/dashboards/tidegate.json").unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let declared = tidegate::telemetry::metrics::names::ALL;
    let re = regex::Regex::new(r"tidegate_[a-z_]+").unwrap();
    for used in re.find_iter(&dashboard).map(|m| m.as_str()) {
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .fold(used, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            declared.contains(&base),
            "the dashboard uses {used}, which Tidegate does not export"
        );
    }
}

/// Standalone mode: an unreadable configuration path keeps the last table serving and ready,
/// and says so (the `Synced` condition, the stale-since gauge) until it reads again.
#[tokio::test]
async fn an_unreadable_config_path_marks_the_configuration_stale_while_it_keeps_serving() {
    let up = Upstream::start("a").await;
    let parent = tempfile::tempdir().unwrap();
    let config = parent.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("b.yaml"), backend_yaml("api", &[up.addr])).unwrap();
    std::fs::write(
        config.join("r.yaml"),
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: web }\nspec:\n  rules: [{ backendRefs: [{ name: api }] }]\n",
    )
    .unwrap();
    let gw = common::gateway(&config).await;
    let admin = gw.admin_addr().unwrap();
    let http = HttpClient::http1();
    let synced = || async {
        let body = http.get(admin, "admin", "/config", &[]).await.body;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let metrics = http.get(admin, "admin", "/metrics", &[]).await.body;
        let s = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let stale = sample(&s, "tidegate_config_stale_since_timestamp_seconds", &[]).unwrap();
        (v["conditions"][0].clone(), stale)
    };
    let (c, stale) = synced().await;
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str(), stale),
        (Some("Synced"), Some("True"), 0.0)
    );

    let moved = parent.path().join("elsewhere");
    std::fs::rename(&config, &moved).unwrap();
    gw.reload();
    let (c, stale) = common::eventually(Duration::from_secs(10), "Synced=False", || async {
        let (c, stale) = synced().await;
        (c["status"] == "False").then_some((c, stale))
    })
    .await;
    assert_eq!(c["reason"], "SourceFailing");
    assert!(
        c["message"].as_str().unwrap().starts_with("failing since"),
        "{c}"
    );
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("file (cannot read configuration"),
        "{c}"
    );
    assert!(c["staleSince"].is_string(), "{c}");
    assert!(stale > 1.6e9, "{stale}");
    let ready = http.get(admin, "admin", "/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    assert!(
        ready.body.contains("sources failing since"),
        "{}",
        ready.body
    );
    assert_eq!(http.get(gw.http_addr(), "x", "/", &[]).await.status, 200);

    std::fs::rename(&moved, &config).unwrap();
    gw.reload();
    common::eventually(Duration::from_secs(10), "Synced=True again", || async {
        let (c, stale) = synced().await;
        (c["status"] == "True" && stale == 0.0).then_some(())
    })
    .await;
    gw.shutdown(Duration::from_secs(1)).await;
}
