//! Backends that follow DNS, against a real DNS server: dnsmasq (Debian's `dnsmasq-base`) on a
//! free loopback port, serving A and SRV records from files this test rewrites (hosts files are
//! re-read on SIGHUP; SRV records live in its configuration, so it is restarted for those).
//!
//! `scripts/test.sh` installs dnsmasq; these tests are `#[ignore]`d for a plain `cargo test` and
//! fail (never skip) when dnsmasq is missing.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::dnsmasq::{Dnsmasq, ZONE};
use common::{ConfigDir, HttpClient, Upstream, eventually, route_yaml};

async fn gateway(config: &std::path::Path, dns: SocketAddr) -> tidegate::Gateway {
    tidegate::Gateway::builder()
        .config_path(config)
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .dns_server(Some(dns))
        .start()
        .await
        .expect("gateway starts")
}

/// A Backend following `dns` (the YAML of `spec.dns`), with `extra` spec lines, and a Route
/// sending everything to it.
fn config(dir: &ConfigDir, dns: &str, extra: &str) {
    dir.write(
        "api.yaml",
        &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: api }}\nspec:\n  dns: {dns}\n{extra}---\n{}",
            route_yaml("web", "/", "api", "")
        ),
    );
}

/// Upstreams on 127.0.0.1, .2 and .3, all on one port (A records carry addresses only).
async fn upstreams_on_one_port() -> (u16, [Upstream; 3]) {
    for _ in 0..20 {
        let port = common::dnsmasq::free_port();
        let bind = |ip: [u8; 4]| std::net::TcpListener::bind(SocketAddr::from((ip, port)));
        if bind([127, 0, 0, 2]).is_ok() && bind([127, 0, 0, 3]).is_ok() {
            let at = |ip: [u8; 4]| SocketAddr::from((ip, port));
            return (
                port,
                [
                    Upstream::start_on("a", at([127, 0, 0, 1])).await,
                    Upstream::start_on("b", at([127, 0, 0, 2])).await,
                    Upstream::start_on("c", at([127, 0, 0, 3])).await,
                ],
            );
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

async fn backends_json(c: &HttpClient, admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&c.get(admin, "admin", "/backends", &[]).await.body).unwrap()
}

/// The addresses `/backends` lists for `api`, and its discovery note.
async fn api_view(c: &HttpClient, admin: SocketAddr) -> (Vec<String>, String) {
    let all = backends_json(c, admin).await;
    let api = all
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == "default/api")
        .cloned()
        .unwrap_or_default();
    let mut addrs: Vec<String> = api["endpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["address"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    (addrs, api["discovery"].as_str().unwrap_or("").to_owned())
}

/// `tidegate_dns_resolutions_total` for `name` and `result`.
async fn resolutions(c: &HttpClient, admin: SocketAddr, name: &str, result: &str) -> u64 {
    let body = c.get(admin, "admin", "/metrics", &[]).await.body;
    let prefix = format!("tidegate_dns_resolutions_total{{name=\"{name}\",");
    let tail = format!("result=\"{result}\"}}");
    body.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&tail))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Requests sent without pause by a few clients until stopped: how many, and how many failed.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..4)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let c = HttpClient::http1();
                    while !stop.load(Ordering::Relaxed) {
                        let r = c.get(addr, "shop.test", "/", &[]).await;
                        if r.status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.body));
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn a_records_appear_and_disappear_under_load_with_zero_failed_requests() {
    let (port, [a, b, c]) = upstreams_on_one_port().await;
    let dns = Dnsmasq::start(
        1,
        "127.0.0.1 api.tidegate.test\n127.0.0.2 api.tidegate.test\n",
    );
    let dir = ConfigDir::new();
    config(
        &dir,
        &format!("{{ name: api.{ZONE}, type: A, port: {port}, refresh: {{ min: 1s, max: 1s }} }}"),
        "",
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    let client = HttpClient::http1();
    let at = |last: u8| format!("127.0.0.{last}:{port}");
    eventually(
        Duration::from_secs(10),
        "the first answer's two endpoints",
        || async { (api_view(&client, admin).await.0 == [at(1), at(2)]).then_some(()) },
    )
    .await;

    let load = Load::start(gw.http_addr());
    eventually(Duration::from_secs(5), "traffic on a and b", || async {
        (a.hits() > 20 && b.hits() > 20).then_some(())
    })
    .await;

    // A record added: the new endpoint takes traffic, without a new table.
    let version = gw.table().unwrap().version;
    dns.hosts(
        "127.0.0.1 api.tidegate.test\n127.0.0.2 api.tidegate.test\n127.0.0.3 api.tidegate.test\n",
    );
    eventually(Duration::from_secs(10), "traffic on c", || async {
        (c.hits() > 20).then_some(())
    })
    .await;

    // A record removed: its endpoint stops getting new requests.
    dns.hosts("127.0.0.2 api.tidegate.test\n127.0.0.3 api.tidegate.test\n");
    eventually(Duration::from_secs(10), "a gone from /backends", || async {
        (api_view(&client, admin).await.0 == [at(2), at(3)]).then_some(())
    })
    .await;
    let a_after = a.hits();
    let b_after = b.hits();
    eventually(Duration::from_secs(5), "more traffic on b", || async {
        (b.hits() > b_after + 50).then_some(())
    })
    .await;
    let (ok, failed) = load.finish().await;
    assert!(
        a.hits() <= a_after + 4,
        "a got new requests after it left: {} -> {}",
        a_after,
        a.hits()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 200, "only {ok} requests under load");
    assert_eq!(
        gw.table().unwrap().version,
        version,
        "endpoints changed in place, no new table"
    );
    assert!(resolutions(&client, admin, &format!("api.{ZONE}"), "answer").await >= 3);
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn srv_weights_split_traffic_in_proportion() {
    let ups = [
        Upstream::start("one").await,
        Upstream::start("two").await,
        Upstream::start("three").await,
    ];
    let mut dns = Dnsmasq::start(30, "");
    let name = format!("_api._tcp.{ZONE}");
    dns.srv(&[
        (&name, "one.tidegate.test", ups[0].addr.port(), 0, 10),
        (&name, "two.tidegate.test", ups[1].addr.port(), 0, 20),
        (&name, "three.tidegate.test", ups[2].addr.port(), 0, 30),
    ]);
    let dir = ConfigDir::new();
    config(
        &dir,
        &format!("{{ name: {name}, type: SRV }}"),
        "  loadBalancer: { algorithm: WeightedRoundRobin }\n",
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    let client = HttpClient::http1();
    eventually(Duration::from_secs(10), "three SRV endpoints", || async {
        (api_view(&client, admin).await.0.len() == 3).then_some(())
    })
    .await;
    for _ in 0..600 {
        let r = client.get(gw.http_addr(), "shop.test", "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let hits: Vec<usize> = ups.iter().map(|u| u.hits()).collect();
    // Smooth weighted round robin is exact over whole rounds (60 requests).
    assert_eq!(hits, [100, 200, 300], "weights 10:20:30");
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn srv_priorities_fail_over_to_the_next_tier_and_back() {
    let primary = Upstream::start("primary").await;
    let backup = Upstream::start("backup").await;
    let mut dns = Dnsmasq::start(30, "");
    let name = format!("_api._tcp.{ZONE}");
    dns.srv(&[
        (&name, "primary.tidegate.test", primary.addr.port(), 1, 1),
        (&name, "backup.tidegate.test", backup.addr.port(), 2, 1),
    ]);
    let dir = ConfigDir::new();
    config(
        &dir,
        &format!("{{ name: {name}, type: SRV }}"),
        "  healthCheck: { active: { http: { path: /healthz }, interval: 100ms, timeout: 80ms, healthyThreshold: 1, unhealthyThreshold: 1 } }\n",
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    let client = HttpClient::http1();
    eventually(Duration::from_secs(10), "both SRV endpoints", || async {
        (api_view(&client, admin).await.0.len() == 2).then_some(())
    })
    .await;
    let upstream_of = |r: common::Reply| r.echo().upstream;
    for _ in 0..20 {
        let r = client.get(gw.http_addr(), "shop.test", "/", &[]).await;
        assert_eq!(
            upstream_of(r),
            "primary",
            "the lowest priority takes everything"
        );
    }
    primary.faults.set_health(503);
    eventually(
        Duration::from_secs(5),
        "the backup tier taking over",
        || async {
            let r = client.get(gw.http_addr(), "shop.test", "/", &[]).await;
            (r.status == 200 && upstream_of(r) == "backup").then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        let r = client.get(gw.http_addr(), "shop.test", "/", &[]).await;
        assert_eq!(upstream_of(r), "backup", "the primary tier is down");
    }
    primary.faults.set_health(200);
    eventually(Duration::from_secs(5), "the primary tier back", || async {
        let r = client.get(gw.http_addr(), "shop.test", "/", &[]).await;
        (upstream_of(r) == "primary").then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn a_stopped_server_leaves_the_last_answer_serving_until_max_stale() {
    let up = Upstream::start("a").await;
    let port = up.addr.port();
    let mut dns = Dnsmasq::start(1, "127.0.0.1 api.tidegate.test\n");
    let dir = ConfigDir::new();
    config(
        &dir,
        &format!(
            "{{ name: api.{ZONE}, type: A, port: {port}, refresh: {{ min: 1s, max: 1s }}, maxStale: 4s }}"
        ),
        "",
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    let client = HttpClient::http1();
    eventually(Duration::from_secs(10), "the endpoint", || async {
        (client
            .get(gw.http_addr(), "shop.test", "/", &[])
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;

    dns.stop();
    let stopped = Instant::now();
    let note = eventually(Duration::from_secs(10), "a stale note", || async {
        let (_, note) = api_view(&client, admin).await;
        note.contains("stale").then_some(note)
    })
    .await;
    assert!(note.contains("last good answer"), "{note}");
    let metrics = client.get(admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains(&format!(
            "tidegate_dns_stale{{name=\"api.{ZONE}\",record_type=\"A\"}} 1"
        )),
        "{metrics}"
    );
    // Served until maxStale (4s) after the first failed lookup (at most 1s after the stop),
    // then not.
    let emptied = eventually(
        Duration::from_secs(15),
        "the stale answer dropped",
        || async {
            let r = client.get(gw.http_addr(), "shop.test", "/", &[]).await;
            (r.status != 200).then(|| (r.status, stopped.elapsed()))
        },
    )
    .await;
    assert_eq!(emptied.0, 503);
    assert!(
        emptied.1 >= Duration::from_secs(4),
        "dropped after {:?}, before maxStale",
        emptied.1
    );
    let (addrs, note) = api_view(&client, admin).await;
    assert!(addrs.is_empty(), "{addrs:?}");
    assert!(note.contains("no endpoints"), "{note}");

    // The server back: the answer back.
    dns.restart();
    eventually(Duration::from_secs(10), "the endpoint back", || async {
        (client
            .get(gw.http_addr(), "shop.test", "/", &[])
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        api_view(&client, admin).await.1,
        "",
        "current again: no note"
    );
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn nodata_is_an_empty_answer_and_nxdomain_a_failure() {
    let dns = Dnsmasq::start(1, "127.0.0.1 api.tidegate.test\n");
    let dir = ConfigDir::new();
    // api has an A record but no AAAA: NOERROR with no answer.
    config(
        &dir,
        &format!("{{ name: api.{ZONE}, type: AAAA, port: 80, refresh: {{ min: 1s, max: 1s }} }}"),
        "",
    );
    dir.write(
        "gone.yaml",
        &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: gone }}\nspec:\n  dns: {{ name: gone.{ZONE}, type: A, port: 80, refresh: {{ min: 1s, max: 1s }} }}\n---\n{}",
            route_yaml("gone", "/gone", "gone", "")
        ),
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    let client = HttpClient::http1();
    let notes = eventually(Duration::from_secs(10), "both notes", || async {
        let all = backends_json(&client, admin).await;
        let note = |name: &str| {
            all.as_array()?.iter().find(|b| b["backend"] == name)?["discovery"]
                .as_str()
                .map(str::to_owned)
        };
        Some((note("default/api")?, note("default/gone")?))
    })
    .await;
    assert!(notes.0.contains("NOERROR"), "{}", notes.0);
    assert!(notes.1.contains("nxdomain"), "{}", notes.1);
    assert!(resolutions(&client, admin, &format!("api.{ZONE}"), "empty").await >= 1);
    assert!(resolutions(&client, admin, &format!("gone.{ZONE}"), "nxdomain").await >= 1);
    assert_eq!(
        client
            .get(gw.http_addr(), "shop.test", "/", &[])
            .await
            .status,
        503
    );
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn the_ttl_is_raised_to_refresh_min_and_cut_to_refresh_max() {
    let name = format!("api.{ZONE}");
    let client = HttpClient::http1();

    // TTL 0, refresh.min 2s: a lookup every 2s, not a busy loop.
    let dns = Dnsmasq::start(0, "127.0.0.1 api.tidegate.test\n");
    let dir = ConfigDir::new();
    config(
        &dir,
        &format!("{{ name: {name}, type: A, port: 80, refresh: {{ min: 2s, max: 1h }} }}"),
        "",
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    let started = Instant::now();
    eventually(Duration::from_secs(15), "three lookups", || async {
        (resolutions(&client, admin, &name, "answer").await >= 3).then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "three lookups in {took:?}: TTL 0 not raised to 2s"
    );
    drop(gw);

    // TTL 1h, refresh.max 1s: a lookup every second all the same.
    let dns = Dnsmasq::start(3600, "127.0.0.1 api.tidegate.test\n");
    config(
        &dir,
        &format!("{{ name: {name}, type: A, port: 80, refresh: {{ min: 1s, max: 1s }} }}"),
        "",
    );
    let gw = gateway(dir.path(), dns.addr()).await;
    let admin = gw.admin_addr().unwrap();
    eventually(
        Duration::from_secs(10),
        "four lookups within seconds despite TTL 1h",
        || async { (resolutions(&client, admin, &name, "answer").await >= 4).then_some(()) },
    )
    .await;
}
