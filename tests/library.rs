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
