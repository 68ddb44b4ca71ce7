//! The library face: a gateway embedded in a program, with its own middleware, through real
//! sockets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{ConfigDir, HttpClient, Upstream, backend_yaml, route_yaml};
use http::{HeaderValue, StatusCode, request, response};

/// Refuses `/admin/*` before routing, tags requests it lets through, and marks every answer.
struct Guard;

impl tidegate::Middleware for Guard {
    fn on_request(&self, req: &mut request::Parts) -> Option<http::Response<Bytes>> {
        if req.uri.path().starts_with("/admin") {
            let mut answer = http::Response::new(Bytes::from_static(b"not here\n"));
            *answer.status_mut() = StatusCode::FORBIDDEN;
            return Some(answer);
        }
        req.headers
            .insert("x-checked", HeaderValue::from_static("yes"));
        None
    }

    fn on_response(&self, resp: &mut response::Parts) {
        resp.headers
            .insert("x-guard", HeaderValue::from_static("on"));
    }
}

#[tokio::test]
async fn middleware_sees_every_request_and_response_and_may_answer_first() {
    let up = Upstream::start("app").await;
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("app", &[up.addr]) + &route_yaml("app", "/", "app", "")),
    );
    let gw = tidegate::Gateway::builder()
        .config_path(cfg.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .middleware(Guard)
        .start()
        .await
        .unwrap();
    let (c, at) = (HttpClient::http1(), gw.http_addr());

    let served = c.get(at, "h", "/shop", &[]).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(
        served.echo().header("x-checked"),
        Some("yes"),
        "the upstream saw the edit"
    );
    assert_eq!(
        served.headers.get("x-guard").and_then(|v| v.to_str().ok()),
        Some("on")
    );

    let refused = c.get(at, "h", "/admin/users", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body, "not here\n");
    assert_eq!(
        refused.headers.get("x-guard").and_then(|v| v.to_str().ok()),
        Some("on"),
        "its own answers too"
    );
    assert_eq!(up.hits(), 1, "a refused request never reaches the upstream");

    common::eventually(Duration::from_secs(5), "both answers counted", || async {
        let text = gw.telemetry().metrics.encode();
        (text.contains(r#"code="403",reason="middleware""#) && text.contains(r#"code="200""#))
            .then_some(())
    })
    .await;
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Objects built in code with serde (the same shapes as the YAML), for the tests below.
fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn code_backend(
    name: &str,
    endpoints: &[String],
    extra: serde_json::Value,
) -> tidegate::api::Backend {
    let mut spec = serde_json::json!({ "endpoints": endpoints });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    object(serde_json::json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
        "metadata": { "name": name }, "spec": spec,
    }))
}

fn code_route(name: &str, prefix: &str, backend: &str) -> tidegate::api::Route {
    object(serde_json::json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route", "metadata": { "name": name },
        "spec": { "rules": [{ "matches": [{ "path": { "value": prefix } }],
                              "backendRefs": [{ "name": backend }] }] },
    }))
}

#[tokio::test]
async fn objects_built_in_code_are_served_replaced_and_a_bad_one_keeps_its_last_good_version() {
    use tidegate::controller::code::Objects;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = tidegate::Gateway::builder()
        .objects(
            Objects::new()
                .backend(code_backend(
                    "app",
                    &[a.addr.to_string()],
                    serde_json::json!({}),
                ))
                .route(code_route("app", "/", "app")),
        )
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .start()
        .await
        .unwrap();
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    assert_eq!(c.get(at, "h", "/x", &[]).await.echo().upstream, "a");

    // A new set: the Backend moves to b and a second Route appears.
    let v1 = gw.table().unwrap().version;
    assert!(
        gw.apply(
            Objects::new()
                .backend(code_backend(
                    "app",
                    &[b.addr.to_string()],
                    serde_json::json!({})
                ))
                .route(code_route("app", "/", "app"))
                .route(code_route("other", "/other", "app")),
        )
    );
    let v2 = common::wait_for_version(&gw, v1).await;
    assert_eq!(c.get(at, "h", "/x", &[]).await.echo().upstream, "b");
    assert_eq!(gw.table().unwrap().rules.len(), 2);

    // A broken Backend: reported on that object, its last good version keeps serving.
    assert!(
        gw.apply(
            Objects::new()
                .backend(code_backend(
                    "app",
                    &["not an address".into()],
                    serde_json::json!({})
                ))
                .route(code_route("app", "/", "app")),
        )
    );
    common::wait_for_version(&gw, v2).await;
    let table = gw.table().unwrap();
    let d = table
        .diagnostics
        .iter()
        .find(|d| d.is_error())
        .expect("the bad Backend is reported");
    assert_eq!(
        d.object.as_ref().map(|o| o.to_string()).as_deref(),
        Some("Backend default/app")
    );
    assert!(d.field.starts_with("spec.endpoints"), "{d}");
    assert_eq!(c.get(at, "h", "/x", &[]).await.echo().upstream, "b");
    gw.shutdown(Duration::from_secs(1)).await;

    // A gateway that reads files does not take objects from code.
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("app", &[a.addr]) + &route_yaml("app", "/", "app", "")),
    );
    let files = common::gateway(cfg.path()).await;
    assert!(!files.apply(Objects::new()));
    files.shutdown(Duration::from_secs(1)).await;
}

/// Always the first usable endpoint (active/standby).
struct FirstUsable;

impl tidegate::proxy::balance::Selector for FirstUsable {
    fn pick(
        &self,
        endpoints: &dyn tidegate::proxy::balance::EndpointList,
        _: &tidegate::proxy::balance::PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        (0..endpoints.len()).find(|&i| usable(i))
    }
}

#[tokio::test]
async fn a_custom_selector_and_health_check_decide_which_endpoint_serves() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tidegate::controller::code::Objects;
    use tidegate::model::Endpoint;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let a_down = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (down, counted, a_addr) = (a_down.clone(), probes.clone(), a.addr.to_string());
    let health = serde_json::json!({ "healthCheck": { "active": {
        "tcp": {}, "interval": "50ms", "timeout": "20ms",
        "healthyThreshold": 1, "unhealthyThreshold": 1 } } });
    let gw = tidegate::Gateway::builder()
        .objects(
            Objects::new()
                .backend(code_backend(
                    "app",
                    &[a.addr.to_string(), b.addr.to_string()],
                    health,
                ))
                .route(code_route("app", "/", "app")),
        )
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .selector("default", "app", |_: &[Endpoint]| {
            Box::new(FirstUsable) as Box<dyn tidegate::proxy::balance::Selector>
        })
        .health_check("default", "app", move |e: Endpoint| {
            counted.fetch_add(1, Ordering::Relaxed);
            let healthy = !(down.load(Ordering::Relaxed) && *e.address == *a_addr);
            async move { healthy }
        })
        .start()
        .await
        .unwrap();
    let (c, at) = (HttpClient::http1(), gw.http_addr());
    // Round robin (the Backend's default) would alternate; the custom selector never does.
    for _ in 0..6 {
        assert_eq!(c.get(at, "h", "/", &[]).await.echo().upstream, "a");
    }
    a_down.store(true, Ordering::Relaxed);
    common::eventually(
        Duration::from_secs(5),
        "b serves while a is down",
        || async { (c.get(at, "h", "/", &[]).await.echo().upstream == "b").then_some(()) },
    )
    .await;
    a_down.store(false, Ordering::Relaxed);
    common::eventually(Duration::from_secs(5), "a serves again", || async {
        (c.get(at, "h", "/", &[]).await.echo().upstream == "a").then_some(())
    })
    .await;
    assert!(probes.load(Ordering::Relaxed) >= 4, "the custom check ran");
    gw.shutdown(Duration::from_secs(1)).await;
}
