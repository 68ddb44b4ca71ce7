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

/// A gateway whose Backend `api` follows DNS through dnsmasq, with an admin listener and a
/// client for both.
struct Served {
    gw: tidegate::Gateway,
    admin: SocketAddr,
    client: HttpClient,
}

impl Served {
    /// Serves `dir`, asking `dns`.
    async fn start(dir: &ConfigDir, dns: &Dnsmasq) -> Self {
        let gw = tidegate::Gateway::builder()
            .config_path(dir.path())
            .http_addr("127.0.0.1:0".parse().unwrap())
            .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
            .dns_server(Some(dns.addr()))
            .start()
            .await
            .expect("gateway starts");
        let admin = gw.admin_addr().unwrap();
        Self {
            gw,
            admin,
            client: HttpClient::http1(),
        }
    }

    /// `GET shop.test/` through the gateway.
    async fn get(&self) -> common::Reply {
        self.client
            .get(self.gw.http_addr(), "shop.test", "/", &[])
            .await
    }

    /// Waits until `GET shop.test/` answers 200.
    async fn until_served(&self, what: &str) {
        eventually(Duration::from_secs(10), what, || async {
            (self.get().await.status == 200).then_some(())
        })
        .await;
    }

    /// Waits until `/backends` lists `n` endpoints for `api`.
    async fn until_endpoints(&self, n: usize, what: &str) {
        eventually(Duration::from_secs(10), what, || async {
            (self.api_view().await.0.len() == n).then_some(())
        })
        .await;
    }

    async fn backends_json(&self) -> serde_json::Value {
        serde_json::from_str(
            &self
                .client
                .get(self.admin, "admin", "/backends", &[])
                .await
                .body,
        )
        .unwrap()
    }

    /// The addresses `/backends` lists for `api`, and its discovery note.
    async fn api_view(&self) -> (Vec<String>, String) {
        let all = self.backends_json().await;
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
    async fn resolutions(&self, name: &str, result: &str) -> u64 {
        let body = self
            .client
            .get(self.admin, "admin", "/metrics", &[])
            .await
            .body;
        let prefix = format!("tidegate_dns_resolutions_total{{name=\"{name}\",");
        let tail = format!("result=\"{result}\"}}");
        body.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(&tail))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
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
        // Each listener is held from the check on: a port found free and bound later could be
        // taken in between by a parallel test's connection.
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let bind = |ip: [u8; 4]| std::net::TcpListener::bind(SocketAddr::from((ip, port)));
        if let (Ok(second), Ok(third)) = (bind([127, 0, 0, 2]), bind([127, 0, 0, 3])) {
            return (
                port,
                [
                    Upstream::start_with("a", first),
                    Upstream::start_with("b", second),
                    Upstream::start_with("c", third),
                ],
            );
        }
    }
    panic!("no port free on 127.0.0.1-3");
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
    let s = Served::start(&dir, &dns).await;
    let at = |last: u8| format!("127.0.0.{last}:{port}");
    eventually(
        Duration::from_secs(10),
        "the first answer's two endpoints",
        || async { (s.api_view().await.0 == [at(1), at(2)]).then_some(()) },
    )
    .await;

    let load = Load::start(s.gw.http_addr());
    eventually(Duration::from_secs(5), "traffic on a and b", || async {
        (a.hits() > 20 && b.hits() > 20).then_some(())
    })
    .await;

    // A record added: the new endpoint takes traffic, without a new table.
    let version = s.gw.table().unwrap().version;
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
        (s.api_view().await.0 == [at(2), at(3)]).then_some(())
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
        s.gw.table().unwrap().version,
        version,
        "endpoints changed in place, no new table"
    );
    assert!(s.resolutions(&format!("api.{ZONE}"), "answer").await >= 3);
}

/// A Backend following the SRV records `records` (name, target, port, priority, weight) of
/// `_api._tcp` in the zone, with `extra` spec lines, served once its `n` endpoints are listed.
async fn srv_served(
    dns: &mut Dnsmasq,
    records: &[(&str, u16, u16, u16)],
    extra: &str,
) -> (ConfigDir, Served) {
    let name = format!("_api._tcp.{ZONE}");
    let records: Vec<_> = records
        .iter()
        .map(|&(target, port, priority, weight)| (name.as_str(), target, port, priority, weight))
        .collect();
    dns.srv(&records);
    let dir = ConfigDir::new();
    config(&dir, &format!("{{ name: {name}, type: SRV }}"), extra);
    let s = Served::start(&dir, dns).await;
    s.until_endpoints(records.len(), "every SRV endpoint").await;
    (dir, s)
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
    let (_dir, s) = srv_served(
        &mut dns,
        &[
            ("one.tidegate.test", ups[0].addr.port(), 0, 10),
            ("two.tidegate.test", ups[1].addr.port(), 0, 20),
            ("three.tidegate.test", ups[2].addr.port(), 0, 30),
        ],
        "  loadBalancer: { algorithm: WeightedRoundRobin }\n",
    )
    .await;
    for _ in 0..600 {
        let r = s.get().await;
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
    let (_dir, s) = srv_served(
        &mut dns,
        &[
            ("primary.tidegate.test", primary.addr.port(), 1, 1),
            ("backup.tidegate.test", backup.addr.port(), 2, 1),
        ],
        "  healthCheck: { active: { http: { path: /healthz }, interval: 100ms, timeout: 80ms, healthyThreshold: 1, unhealthyThreshold: 1 } }\n",
    )
    .await;
    let upstream_of = |r: common::Reply| r.echo().upstream;
    for _ in 0..20 {
        let r = s.get().await;
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
            let r = s.get().await;
            (r.status == 200 && upstream_of(r) == "backup").then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        let r = s.get().await;
        assert_eq!(upstream_of(r), "backup", "the primary tier is down");
    }
    primary.faults.set_health(200);
    eventually(Duration::from_secs(5), "the primary tier back", || async {
        let r = s.get().await;
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
    let s = Served::start(&dir, &dns).await;
    s.until_served("the endpoint").await;

    dns.stop();
    let stopped = Instant::now();
    let note = eventually(Duration::from_secs(10), "a stale note", || async {
        let (_, note) = s.api_view().await;
        note.contains("stale").then_some(note)
    })
    .await;
    assert!(note.contains("last good answer"), "{note}");
    let metrics = s.client.get(s.admin, "admin", "/metrics", &[]).await.body;
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
            let r = s.get().await;
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
    let (addrs, note) = s.api_view().await;
    assert!(addrs.is_empty(), "{addrs:?}");
    assert!(note.contains("no endpoints"), "{note}");

    // The server back: the answer back.
    dns.restart();
    s.until_served("the endpoint back").await;
    assert_eq!(s.api_view().await.1, "", "current again: no note");
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
    let s = Served::start(&dir, &dns).await;
    let notes = eventually(Duration::from_secs(10), "both notes", || async {
        let all = s.backends_json().await;
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
    assert!(s.resolutions(&format!("api.{ZONE}"), "empty").await >= 1);
    assert!(s.resolutions(&format!("gone.{ZONE}"), "nxdomain").await >= 1);
    assert_eq!(s.get().await.status, 503);
}

#[tokio::test]
#[ignore = "needs dnsmasq (scripts/test.sh installs it)"]
async fn the_ttl_is_raised_to_refresh_min_and_cut_to_refresh_max() {
    let name = format!("api.{ZONE}");

    // TTL 0, refresh.min 2s: a lookup every 2s, not a busy loop.
    let dns = Dnsmasq::start(0, "127.0.0.1 api.tidegate.test\n");
    let dir = ConfigDir::new();
    config(
        &dir,
        &format!("{{ name: {name}, type: A, port: 80, refresh: {{ min: 2s, max: 1h }} }}"),
        "",
    );
    let s = Served::start(&dir, &dns).await;
    let started = Instant::now();
    eventually(Duration::from_secs(15), "three lookups", || async {
        (s.resolutions(&name, "answer").await >= 3).then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "three lookups in {took:?}: TTL 0 not raised to 2s"
    );
    drop(s);

    // TTL 1h, refresh.max 1s: a lookup every second all the same.
    let dns = Dnsmasq::start(3600, "127.0.0.1 api.tidegate.test\n");
    config(
        &dir,
        &format!("{{ name: {name}, type: A, port: 80, refresh: {{ min: 1s, max: 1s }} }}"),
        "",
    );
    let s = Served::start(&dir, &dns).await;
    eventually(
        Duration::from_secs(10),
        "four lookups within seconds despite TTL 1h",
        || async { (s.resolutions(&name, "answer").await >= 4).then_some(()) },
    )
    .await;
}
