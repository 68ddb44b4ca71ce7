//! Hot reload: routes come and go while traffic flows, bad files keep the last good table, and
//! open connections (WebSockets included) survive every reload.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{ConfigDir, HttpClient, Upstream, backend_yaml, gateway, wait_for_version};
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

fn route(name: &str, path: &str, backend: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: {name} }}\nspec:\n  rules:\n    - matches: [{{ path: {{ value: {path} }} }}]\n      backendRefs: [{{ name: {backend} }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_added_and_removed_with_zero_failed_requests_while_a_client_loops() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let cfg = ConfigDir::new();
    cfg.write(
        "backends.yaml",
        &(backend_yaml("a", &[a.addr]) + &backend_yaml("b", &[b.addr])),
    );
    cfg.write("a.yaml", &route("ra", "/a", "a"));
    let gw = gateway(cfg.path()).await;
    let at = gw.http_addr();

    // Clients loop on the stable route the whole time, on fresh and on kept-alive connections.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            let client = HttpClient::http1();
            while !stop.load(Ordering::Relaxed) {
                match client.send(get(at, "/a/x")).await {
                    Ok(r) if r.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let c = HttpClient::http1();
    let mut version = gw.table().unwrap().version;
    assert_eq!(
        c.get(at, "h", "/b", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    for round in 0..5 {
        cfg.write("b.yaml", &route("rb", "/b", "b"));
        version = wait_for_version(&gw, version).await;
        assert_eq!(
            c.get(at, "h", "/b", &[]).await.echo().upstream,
            "b",
            "round {round}: route added"
        );
        cfg.remove("b.yaml");
        version = wait_for_version(&gw, version).await;
        assert_eq!(
            c.get(at, "h", "/b", &[]).await.status,
            StatusCode::NOT_FOUND,
            "round {round}: route removed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during 10 reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "the clients kept going: {}",
        ok.load(Ordering::Relaxed)
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

fn get(at: std::net::SocketAddr, path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get(format!("http://{at}{path}"))
        .header("host", "h")
        .body(Default::default())
        .unwrap()
}

#[tokio::test]
async fn an_invalid_file_or_object_keeps_the_last_good_table() {
    let a = Upstream::start("a").await;
    let cfg = ConfigDir::new();
    cfg.write("backends.yaml", &backend_yaml("a", &[a.addr]));
    cfg.write("routes.yaml", &route("ra", "/a", "a"));
    let gw = gateway(cfg.path()).await;
    let (at, c) = (gw.http_addr(), HttpClient::http1());
    let admin = gw.admin_addr().unwrap();
    let v1 = gw.table().unwrap().version;

    // Not YAML at all: the file's previous documents keep serving.
    cfg.write("routes.yaml", "kind: Route\nmetadata: [unclosed\n");
    let v2 = wait_for_version(&gw, v1).await;
    assert_eq!(c.get(at, "h", "/a", &[]).await.echo().upstream, "a");
    let config = c.get(admin, "admin", "/config", &[]).await;
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(config["version"], v2);
    let diag = config["diagnostics"][0].to_string();
    assert!(
        diag.contains("routes.yaml") && diag.contains("last good version keeps serving"),
        "{diag}"
    );

    // Valid YAML, invalid object (a method that is not one): the last accepted version keeps
    // serving.
    cfg.write(
        "routes.yaml",
        &route("ra", "/a", "a").replace("value: /a } }", "value: /a }, method: get }"),
    );
    let v3 = wait_for_version(&gw, v2).await;
    assert_eq!(c.get(at, "h", "/a", &[]).await.echo().upstream, "a");
    let table = gw.table().unwrap();
    assert!(
        table
            .diagnostics
            .iter()
            .any(|d| d.is_error() && d.field == "spec.rules[0].matches[0].method"),
        "{:?}",
        table.diagnostics
    );

    // A broken object next to working ones: only it is rejected. A Route whose Backend is
    // missing is not broken (Gateway API): it serves, and its rule answers 500.
    cfg.write(
        "more.yaml",
        &(route("good", "/good", "a")
            + "---\n"
            + &route("bad", "/bad", "a").replace("value: /bad } }", "value: /bad }, method: x }")
            + "---\n"
            + &route("dangling", "/dangling", "missing")),
    );
    let v4 = wait_for_version(&gw, v3).await;
    assert_eq!(c.get(at, "h", "/good", &[]).await.status, StatusCode::OK);
    assert_eq!(
        c.get(at, "h", "/bad", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(at, "h", "/dangling", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    // Fixed: the new version serves, the diagnostics are gone.
    cfg.write("routes.yaml", &route("ra", "/fixed", "a"));
    cfg.remove("more.yaml");
    wait_for_version(&gw, v4).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // both writes land in one or two reloads
    gw.reload();
    let v = wait_for_version(&gw, gw.table().unwrap().version).await;
    assert!(v > v4);
    assert_eq!(c.get(at, "h", "/fixed", &[]).await.status, StatusCode::OK);
    assert_eq!(
        c.get(at, "h", "/a", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        !gw.table().unwrap().has_errors(),
        "{:?}",
        gw.table().unwrap().diagnostics
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_websocket_stays_open_across_reloads() {
    let ws_up = Upstream::start("ws").await;
    let other = Upstream::start("other").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "backends.yaml",
        &(backend_yaml("ws", &[ws_up.addr]) + &backend_yaml("other", &[other.addr])),
    );
    cfg.write("routes.yaml", &route("chat", "/chat", "ws"));
    let gw = gateway(cfg.path()).await;
    let url = format!("ws://{}/chat", gw.http_addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);

    let mut version = gw.table().unwrap().version;
    for i in 0..3 {
        ws.send(Message::text(format!("before reload {i}")))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("before reload {i}"))
        );
        // Point the route elsewhere, then remove it entirely: the open tunnel is unaffected.
        let change = if i % 2 == 0 {
            route("chat", "/chat", "other")
        } else {
            String::new()
        };
        cfg.write("routes.yaml", &change);
        version = wait_for_version(&gw, version).await;
        ws.send(Message::text(format!("after reload {i}")))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("after reload {i}"))
        );
    }
    ws.close(None).await.unwrap();
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Starts a gateway on `config` whose debounce is far longer than any wait below: a test that
/// passes saw a change applied because its writer finished, not because the debounce ran out.
async fn slow_debounce_gateway(config: &std::path::Path) -> tidegate::Gateway {
    tidegate::Gateway::builder()
        .config_path(config)
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(Some("127.0.0.1:0".parse().unwrap()))
        .debounce(Duration::from_secs(2))
        .start()
        .await
        .expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_two_writes_is_never_served_half_written() {
    use std::io::Write;
    let a = Upstream::start("a").await;
    let cfg = ConfigDir::new();
    cfg.write("backends.yaml", &backend_yaml("a", &[a.addr]));
    let both = route("one", "/one", "a") + "---\n" + &route("two", "/two", "a");
    cfg.write("routes.yaml", &both);
    let gw = slow_debounce_gateway(cfg.path()).await;
    let mut tables = gw.tables();
    let before = gw.table().unwrap().version;

    // Rewritten in place, as `cp` or a shell redirect does: truncate, write the first Route (a
    // file that parses, with one Route fewer), pause, write the rest, close.
    let mut file = std::fs::File::create(cfg.file("routes.yaml")).unwrap();
    let half = route("one", "/one", "a") + "---\n";
    file.write_all(half.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = gw.table().unwrap().version;
    file.write_all(route("two", "/two", "a").as_bytes())
        .unwrap();
    drop(file);

    let after = wait_for_version(&gw, before).await;
    assert_eq!(
        during, before,
        "nothing was published while the file was half written"
    );
    let table = tables.borrow_and_update().clone().unwrap();
    assert_eq!(table.version, after);
    let routes: std::collections::BTreeSet<&str> =
        table.rules.iter().map(|r| r.route.name.as_ref()).collect();
    assert!(
        routes.contains("one") && routes.contains("two"),
        "the closed file's two Routes serve: {routes:?}"
    );
    let c = common::HttpClient::http1();
    assert_eq!(
        c.get(gw.http_addr(), "h", "/two", &[]).await.status,
        StatusCode::OK
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_in_file_is_served_without_waiting_for_the_debounce() {
    let a = Upstream::start("a").await;
    let cfg = ConfigDir::new();
    cfg.write("backends.yaml", &backend_yaml("a", &[a.addr]));
    let gw = slow_debounce_gateway(cfg.path()).await;
    let before = gw.table().unwrap().version;

    let started = tokio::time::Instant::now();
    // `ConfigDir::write` writes a hidden temporary file and renames it into place.
    cfg.write("new.yaml", &route("new", "/new", "a"));
    wait_for_version(&gw, before).await;
    let took = started.elapsed();
    // The debounce is 2 s: well under it means the rename was applied at once (a few ms on an
    // idle machine; the margin is for a loaded one).
    assert!(took < Duration::from_millis(1000), "served after {took:?}");
    let c = common::HttpClient::http1();
    assert_eq!(
        c.get(gw.http_addr(), "h", "/new", &[])
            .await
            .echo()
            .upstream,
        "a"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_renames_is_applied_in_few_reloads() {
    let a = Upstream::start("a").await;
    let cfg = ConfigDir::new();
    cfg.write("backends.yaml", &backend_yaml("a", &[a.addr]));
    let gw = gateway(cfg.path()).await;
    let before = gw.table().unwrap().version;

    for i in 0..200 {
        cfg.write(
            &format!("r{i}.yaml"),
            &route(&format!("r{i}"), &format!("/r{i}"), "a"),
        );
    }
    let version = common::eventually(Duration::from_secs(10), "all 200 Routes served", || {
        let t = gw.table().unwrap();
        let n = t
            .rules
            .iter()
            .filter(|r| r.route.name.starts_with('r'))
            .count();
        std::future::ready((n == 200).then_some(t.version))
    })
    .await;
    // One reload at once, then at most one per 50 ms window while the burst lasts: far fewer
    // than one per file.
    assert!(
        version - before < 100,
        "{} reloads for 200 files",
        version - before
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
