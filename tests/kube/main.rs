//! Kubernetes mode against a real kube-apiserver, through the real binary.
//!
//! `scripts/test.sh` builds (once) and starts an apiserver on loopback and sets
//! `TIDEGATE_TEST_KUBECONFIG`; each test works in its own namespace, with selector-less
//! Services and hand-made EndpointSlices pointing at echo upstreams on 127.0.0.1.
// These tests use Kubernetes mode (its index or status), a default cargo feature.
#![cfg(feature = "kubernetes")]

#[path = "../admission/cases.rs"]
mod cases;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod ingress_auth_tls;
mod ingress_nginx;
mod ingress_tls;
mod secrets;
mod udp;

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use cluster::{Ns, PrivateApiserver, Tidegate, client_for, eventually, install_crds, kubeconfig};
use common::{HttpClient, Reply, Upstream};

async fn get(gw: &Tidegate, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    HttpClient::http1().get(gw.http, host, path, headers).await
}

/// Which upstream answered each of `n` requests.
async fn spread(gw: &Tidegate, host: &str, headers: &[(&str, &str)], n: usize) -> Vec<String> {
    let http = HttpClient::http1();
    let mut out = Vec::new();
    for _ in 0..n {
        let r = http.get(gw.http, host, "/", headers).await;
        assert_eq!(r.status, 200, "{}", r.body);
        out.push(r.echo().upstream);
    }
    out
}

/// Which upstream answered each of `n` requests, or `None` if one was not answered 200 (a
/// table published before the watches delivered every object: retried by `eventually`).
async fn try_spread(gw: &Tidegate, host: &str, n: usize) -> Option<Vec<String>> {
    let http = HttpClient::http1();
    let mut out = Vec::new();
    for _ in 0..n {
        let r = http.get(gw.http, host, "/", &[]).await;
        if r.status != 200 {
            return None;
        }
        out.push(r.echo().upstream);
    }
    Some(out)
}

/// Waits until `host` answers 200 from `upstream`.
async fn wait_served_by(gw: &Tidegate, host: &str, path: &str, upstream: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{host}{path} served by {upstream}"),
        || async {
            let r = get(gw, host, path, &[]).await;
            (r.status == 200 && r.echo().upstream == upstream).then_some(())
        },
    )
    .await;
}

fn route(name: &str, host: &str, backend_refs: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": name},
        "spec": {"hostnames": [host], "rules": [{"backendRefs": backend_refs}]},
    })
}

/// A match only the compiler refuses (the apiserver's schema cannot judge a regular expression,
/// whatever its version): the Route is stored, and rejected in its status.
fn bad_regex() -> serde_json::Value {
    json!([{"path": {"type": "RegularExpression", "value": "(unclosed"}}])
}

fn backend(name: &str, service: &str) -> serde_json::Value {
    json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": name},
        "spec": {"service": {"name": service, "port": "http"}},
    })
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn crds_install_and_reach_established() {
    let client = client_for(&kubeconfig()).await;
    install_crds(&client).await;
    // And they take a valid object: the schema is structural and accepted as generated.
    let ns = Ns::create(&client, "crds").await;
    ns.apply(route("r", "crd.test", json!([{"name": "b"}])))
        .await;
    assert!(
        ns.get("tidegate.dev/v1alpha1", "Route", "r")
            .await
            .is_some()
    );
}

/// SIGHUP in Kubernetes mode recompiles and republishes from what the watches hold.
#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn sighup_republishes_from_the_watches() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "hup").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "hup.test", json!([{"name": "api"}])))
        .await;
    let gw = Tidegate::start(&kc, &ns.name, "hup-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    wait_served_by(&gw, "hup.test", "/", "a").await;
    let version = || async {
        let config = HttpClient::http1().get(gw.admin, "a", "/config", &[]).await;
        serde_json::from_str::<serde_json::Value>(&config.body).ok()?["version"].as_u64()
    };
    let before = version().await.expect("a published version");

    gw.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "a new version after SIGHUP",
        || async { version().await.filter(|v| *v > before) },
    )
    .await;
    wait_served_by(&gw, "hup.test", "/", "a").await;
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn bad_objects_are_refused_at_apply_with_the_field_named() {
    use cases::Admission;
    let client = client_for(&kubeconfig()).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "admission").await;
    let mut failures = Vec::new();
    let index = regex::Regex::new(r"\[[0-9]+\]").unwrap();
    let cases = cases::cases();
    for case in &cases {
        let result = ns.try_apply(case.object(&ns.name)).await;
        match (case.admission, result) {
            (Admission::OpenApi, Err(kube::Error::Api(e))) => {
                // e.g. `Route.tidegate.dev "x" is invalid: spec.hostnames[0]: Invalid value: …`;
                // Kubernetes 1.20 leaves the list indices out (`spec.rules.matches.method`).
                let bare = index.replace_all(case.path, "");
                let named = [case.path, &bare]
                    .iter()
                    .any(|p| e.message.contains(&format!(" {p}: ")));
                if e.code != 422 || !named {
                    failures.push(format!(
                        "{}: refused without naming {}: {e:?}",
                        case.name, case.path
                    ));
                }
            }
            (Admission::OpenApi, other) => {
                failures.push(format!(
                    "{}: expected a refusal at {}, got {other:?}",
                    case.name, case.path
                ));
            }
            // Kubernetes 1.20 has no CEL: what only a CEL rule refuses is stored here (and the
            // controller rejects it, see tests/admission.rs).
            (Admission::Ok | Admission::Cel, Ok(_)) => {}
            (_, Err(e)) => failures.push(format!("{}: refused: {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let refused = cases
        .iter()
        .filter(|c| c.admission == Admission::OpenApi)
        .count();
    assert!(refused >= 30, "only {refused} OpenAPI cases");
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn services_and_endpoint_slices_drive_traffic_and_status_tells_the_truth() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "basic").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "web.test", json!([{"name": "api"}])))
        .await;

    let gw = Tidegate::start(&kc, &ns.name, "basic-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    wait_served_by(&gw, "web.test", "/", "a").await;

    // Status: every condition True at the current generation; endpoint counts on the Backend.
    for t in ["Accepted", "ResolvedRefs", "Programmed"] {
        ns.wait_condition("Route", "web", t, "True").await;
    }
    ns.wait_condition("Backend", "api", "ResolvedRefs", "True")
        .await;
    // `kubectl get routes` shows the class and the conditions.
    let rows = ns.columns("routes").await;
    let web = rows.iter().find(|r| r["Name"] == json!("web")).unwrap();
    for (column, value) in [
        ("Accepted", "True"),
        ("Programmed", "True"),
        ("Hosts", "[\"web.test\"]"),
    ] {
        assert_eq!(web[column], json!(value), "{column}: {rows:?}");
    }
    assert!(web.contains_key("Class"), "{rows:?}");
    eventually(
        Duration::from_secs(10),
        "Backend status.endpoints",
        || async {
            let b = ns.get("tidegate.dev/v1alpha1", "Backend", "api").await?;
            (b["status"]["endpoints"] == json!({"ready": 1, "total": 1})).then_some(())
        },
    )
    .await;

    // An invalid Route is refused with a condition naming the field; the others keep serving.
    let mut bad = route("bad", "bad.test", json!([{"name": "api"}]));
    bad["spec"]["rules"][0]["matches"] = bad_regex();
    ns.apply(bad.clone()).await;
    let (reason, message) = ns.wait_condition("Route", "bad", "Accepted", "False").await;
    assert_eq!(reason, "Invalid");
    assert!(
        message.contains("spec.rules[0].matches[0].path.value"),
        "{message}"
    );
    ns.wait_condition("Route", "bad", "Programmed", "False")
        .await;
    assert_eq!(get(&gw, "bad.test", "/", &[]).await.status, 404);
    assert_eq!(get(&gw, "web.test", "/", &[]).await.echo().upstream, "a");
    eventually(
        Duration::from_secs(10),
        "a Warning Event on Route bad",
        || async {
            let w = ns.warnings("Route", "bad").await;
            w.iter()
                .any(|w| w.contains("spec.rules[0].matches[0].path.value"))
                .then_some(())
        },
    )
    .await;

    // Fixed: the conditions follow the new generation, and it serves.
    bad["spec"]["rules"][0]["matches"] =
        json!([{"path": {"type": "RegularExpression", "value": "/.*"}}]);
    ns.apply(bad).await;
    ns.wait_condition("Route", "bad", "Accepted", "True").await;
    ns.wait_condition("Route", "bad", "Programmed", "True")
        .await;
    wait_served_by(&gw, "bad.test", "/", "a").await;

    // A reference to a missing Backend: ResolvedRefs=False, BackendNotFound.
    ns.apply(route(
        "dangling",
        "dangling.test",
        json!([{"name": "nope", "kind": "Backend"}]),
    ))
    .await;
    let (reason, message) = ns
        .wait_condition("Route", "dangling", "ResolvedRefs", "False")
        .await;
    assert_eq!(reason, "BackendNotFound");
    assert!(
        message.contains("spec.rules[0].backendRefs[0].name"),
        "{message}"
    );
    // Gateway API: the Route stays accepted and serves; the unresolved backendRef's requests
    // are answered 500, and a Warning Event names the field.
    ns.wait_condition("Route", "dangling", "Accepted", "True")
        .await;
    ns.wait_condition("Route", "dangling", "Programmed", "True")
        .await;
    eventually(
        Duration::from_secs(10),
        "dangling.test answers 500",
        || async { (get(&gw, "dangling.test", "/", &[]).await.status == 500).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "a Warning Event on Route dangling",
        || async {
            let w = ns.warnings("Route", "dangling").await;
            w.iter()
                .any(|w| w.contains("spec.rules[0].backendRefs[0].name"))
                .then_some(())
        },
    )
    .await;

    // A kind traffic cannot go to: ResolvedRefs=False, InvalidKind; still accepted.
    ns.apply(route(
        "odd-kind",
        "odd-kind.test",
        json!([{"name": "api", "kind": "ConfigMap"}]),
    ))
    .await;
    let (reason, message) = ns
        .wait_condition("Route", "odd-kind", "ResolvedRefs", "False")
        .await;
    assert_eq!(reason, "InvalidKind");
    assert!(
        message.contains("spec.rules[0].backendRefs[0].kind"),
        "{message}"
    );
    ns.wait_condition("Route", "odd-kind", "Accepted", "True")
        .await;
}

/// A RateLimitPolicy in the cluster: it limits the Route it targets, and its status says so;
/// one whose Route does not exist is accepted with ResolvedRefs=False.
#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn a_rate_limit_policy_limits_its_route_and_reports_status() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "ratelimit").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "rl.test", json!([{"name": "api"}])))
        .await;
    let gw = Tidegate::start(&kc, &ns.name, "rl-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    wait_served_by(&gw, "rl.test", "/", "a").await;

    let policy = |name: &str, target: &str| {
        json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "RateLimitPolicy",
            "metadata": {"name": name},
            "spec": {
                "targetRef": {"kind": "Route", "name": target},
                "limits": [{"name": "all", "key": {"none": {}}, "rate": 1, "per": "1m", "burst": 2}],
            },
        })
    };
    ns.apply(policy("limits", "web")).await;
    ns.apply(policy("dangling", "nope")).await;
    for t in ["Accepted", "ResolvedRefs", "Programmed"] {
        ns.wait_condition("RateLimitPolicy", "limits", t, "True")
            .await;
    }
    let r = eventually(Duration::from_secs(10), "a 429 from the policy", || async {
        let r = get(&gw, "rl.test", "/", &[]).await;
        (r.status == 429).then_some(r)
    })
    .await;
    assert_eq!(r.headers["ratelimit-policy"], "\"all\";q=1;w=60");
    assert_eq!(r.headers["content-type"], "application/problem+json");

    ns.wait_condition("RateLimitPolicy", "dangling", "Accepted", "True")
        .await;
    let (reason, message) = ns
        .wait_condition("RateLimitPolicy", "dangling", "ResolvedRefs", "False")
        .await;
    assert_eq!(reason, "TargetNotFound");
    assert!(message.contains("spec.targetRef.name"), "{message}");
    ns.wait_condition("RateLimitPolicy", "dangling", "Programmed", "False")
        .await;
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn canary_annotation_shifts_the_split_and_the_header_overrides_it() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "canary").await;
    let (stable, canary) = (
        Upstream::start("stable").await,
        Upstream::start("canary").await,
    );
    ns.service("api", json!({})).await;
    ns.slice("api-1", "api", stable.addr.port(), true).await;
    let annotations = |weight: &str| {
        json!({"tidegate.dev/canary-of": "api", "tidegate.dev/canary-weight": weight,
               "tidegate.dev/canary-header": "x-canary", "tidegate.dev/canary-cookie": "canary"})
    };
    ns.service("api-v2", annotations("0")).await;
    ns.slice("api-v2-1", "api-v2", canary.addr.port(), true)
        .await;
    ns.apply(route(
        "shop",
        "shop.test",
        json!([{"name": "api", "kind": "Service"}]),
    ))
    .await;

    let gw = Tidegate::start(&kc, &ns.name, "canary-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    wait_served_by(&gw, "shop.test", "/", "stable").await;
    assert!(
        spread(&gw, "shop.test", &[], 10)
            .await
            .iter()
            .all(|u| u == "stable")
    );
    // Header, then cookie, override the weight.
    let always = spread(&gw, "shop.test", &[("x-canary", "always")], 5).await;
    assert!(always.iter().all(|u| u == "canary"), "{always:?}");
    let cookie = spread(&gw, "shop.test", &[("cookie", "a=b; canary=always")], 5).await;
    assert!(cookie.iter().all(|u| u == "canary"), "{cookie:?}");
    let never = spread(
        &gw,
        "shop.test",
        &[("x-canary", "never"), ("cookie", "canary=always")],
        5,
    )
    .await;
    assert!(never.iter().all(|u| u == "stable"), "{never:?}");

    // Moving the weight moves traffic within about a second, on the same client connections.
    let changed = Instant::now();
    ns.service("api-v2", annotations("50")).await;
    eventually(
        Duration::from_secs(5),
        "the canary to get traffic",
        || async {
            (get(&gw, "shop.test", "/", &[]).await.echo().upstream == "canary").then_some(())
        },
    )
    .await;
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the split moved after {took:?}"
    );
    // Exactly half over whole cycles, unless a recompile (another test's cluster-scoped
    // IngressClass, say) restarts the cycle in between.
    let split = spread(&gw, "shop.test", &[], 20).await;
    let to_canary = split.iter().filter(|u| *u == "canary").count();
    assert!((8..=12).contains(&to_canary), "about 50%: {split:?}");

    // An invalid weight is ignored (a Warning Event on the Service); traffic returns to stable.
    ns.service("api-v2", annotations("lots")).await;
    eventually(
        Duration::from_secs(10),
        "Warning Event on Service api-v2",
        || async {
            let w = ns.warnings("Service", "api-v2").await;
            w.iter().any(|w| w.contains("canary-weight")).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "all traffic back on stable",
        || async {
            spread(&gw, "shop.test", &[], 6)
                .await
                .iter()
                .all(|u| u == "stable")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn endpoints_turning_not_ready_stop_receiving_traffic() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "ready").await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.slice("api-b", "api", b.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "ready.test", json!([{"name": "api"}])))
        .await;

    let gw = Tidegate::start(&kc, &ns.name, "ready-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    eventually(
        Duration::from_secs(20),
        "both endpoints in rotation",
        || async {
            let seen = try_spread(&gw, "ready.test", 4).await?;
            (seen.iter().any(|u| u == "a") && seen.iter().any(|u| u == "b")).then_some(())
        },
    )
    .await;
    let published = gw.count("configuration published");

    // b turns not ready: no new requests reach it.
    ns.slice("api-b", "api", b.addr.port(), false).await;
    eventually(Duration::from_secs(5), "b out of rotation", || async {
        spread(&gw, "ready.test", &[], 6)
            .await
            .iter()
            .all(|u| u == "a")
            .then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "Backend endpoints 1 of 2",
        || async {
            let o = ns.get("tidegate.dev/v1alpha1", "Backend", "api").await?;
            (o["status"]["endpoints"] == json!({"ready": 1, "total": 2})).then_some(())
        },
    )
    .await;
    // No ready endpoint at all: 503 with a clear body.
    ns.slice("api-a", "api", a.addr.port(), false).await;
    let r = eventually(Duration::from_secs(5), "503", || async {
        let r = get(&gw, "ready.test", "/", &[]).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(r.body.contains("no endpoints available"), "{}", r.body);
    // Endpoint churn is the fast path: no table was recompiled for it. (A cluster-scoped
    // IngressClass made by another test may recompile meanwhile; that is not ours.)
    let since: Vec<String> = gw
        .lines_with("configuration published")
        .into_iter()
        .skip(published)
        .filter(|l| !l.contains("triggered_by\":\"[IngressClass]"))
        .collect();
    assert!(
        since.is_empty(),
        "recompiled for endpoint changes: {since:#?}"
    );
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn an_ingress_of_our_class_is_served_and_gets_the_published_address() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "ingress").await;
    let class = ns.ingress_class().await;
    let web = Upstream::start("web").await;
    ns.service("web", json!({})).await;
    ns.slice("web-1", "web", web.addr.port(), true).await;
    let ingress = |class: &str| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop"},
            "spec": {
                "ingressClassName": class,
                "rules": [{"host": "ingress.test", "http": {"paths": [
                    {"path": "/app", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                    {"path": "/exact", "pathType": "Exact",
                     "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                ]}}],
            },
        })
    };
    ns.apply(ingress(&class)).await;

    // The Service in front of the gateway, with a load balancer address (set by hand here).
    ns.service("front", json!({})).await;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), &ns.name);
    services
        .patch_status(
            "front",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({
                "status": {"loadBalancer": {"ingress": [{"ip": "10.1.1.1"}]}}
            })),
        )
        .await
        .unwrap();
    let publish_service = format!("{}/front", ns.name);

    let gw = Tidegate::start(
        &kc,
        &ns.name,
        "ingress-0",
        &[
            "--leader-elect=false",
            "--publish-address",
            "10.9.8.7",
            "--publish-service",
            &publish_service,
        ],
    );
    gw.wait_ready().await;
    wait_served_by(&gw, "ingress.test", "/app/x", "web").await;
    assert_eq!(get(&gw, "ingress.test", "/exact", &[]).await.status, 200);
    assert_eq!(get(&gw, "ingress.test", "/exact/x", &[]).await.status, 404);
    assert_eq!(get(&gw, "ingress.test", "/other", &[]).await.status, 404);
    eventually(
        Duration::from_secs(10),
        "Ingress status.loadBalancer",
        || async {
            let o = ns.get("networking.k8s.io/v1", "Ingress", "shop").await?;
            (o["status"]["loadBalancer"]["ingress"]
                == json!([{"ip": "10.1.1.1"}, {"ip": "10.9.8.7"}]))
            .then_some(())
        },
    )
    .await;

    // ingress-nginx annotations: a snippet is refused (the last accepted version keeps serving)
    // and an unknown one is a warning, each a Warning Event naming the annotation.
    let mut annotated = ingress(&class);
    annotated["metadata"]["annotations"] = json!({
        "nginx.ingress.kubernetes.io/server-snippet": "location /x { return 200; }",
        "nginx.ingress.kubernetes.io/ssl-redirct": "false",
    });
    ns.apply(annotated).await;
    eventually(
        Duration::from_secs(10),
        "Warning Events naming the annotations",
        || async {
            let w = ns.warnings("Ingress", "shop").await;
            let snippet = w.iter().any(|m| m.contains("server-snippet]: refused"));
            let unknown = w
                .iter()
                .any(|m| m.contains("unknown annotation nginx.ingress.kubernetes.io/ssl-redirct"));
            (snippet && unknown).then_some(())
        },
    )
    .await;
    assert_eq!(get(&gw, "ingress.test", "/exact", &[]).await.status, 200);

    // Another class's Ingress is left alone.
    ns.apply(ingress("someone-else")).await;
    eventually(
        Duration::from_secs(10),
        "the Ingress to be dropped",
        || async { (get(&gw, "ingress.test", "/app", &[]).await.status == 404).then_some(()) },
    )
    .await;
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn two_replicas_serve_and_only_the_leader_writes_status() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "replicas").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "ha.test", json!([{"name": "api"}])))
        .await;

    let one = Tidegate::start(&kc, &ns.name, "replica-1", &[]);
    let two = Tidegate::start(&kc, &ns.name, "replica-2", &[]);
    one.wait_ready().await;
    two.wait_ready().await;
    wait_served_by(&one, "ha.test", "/", "a").await;
    wait_served_by(&two, "ha.test", "/", "a").await;
    ns.wait_condition("Route", "web", "Programmed", "True")
        .await;

    let holder = eventually(Duration::from_secs(20), "a Lease holder", || async {
        let lease = ns
            .get("coordination.k8s.io/v1", "Lease", "tidegate-leader")
            .await?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
    })
    .await;
    // A change after both run: still written once, by the leader only.
    let mut bad = route("bad", "bad.test", json!([{"name": "api"}]));
    bad["spec"]["rules"][0]["matches"] = bad_regex();
    ns.apply(bad).await;
    ns.wait_condition("Route", "bad", "Accepted", "False").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (leader, follower) = match holder.as_str() {
        "replica-1" => (&one, &two),
        "replica-2" => (&two, &one),
        other => panic!("unexpected holder {other}"),
    };
    assert!(leader.count("status written") > 0, "{}", leader.log());
    assert_eq!(follower.count("status written"), 0, "{}", follower.log());
    // Both still serve.
    assert_eq!(get(&one, "ha.test", "/", &[]).await.status, 200);
    assert_eq!(get(&two, "ha.test", "/", &[]).await.status, 200);
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn traffic_flows_while_the_apiserver_is_down_and_changes_apply_within_5s_after_it_returns() {
    let cluster = PrivateApiserver::start();
    let client = client_for(&cluster.kubeconfig).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "outage").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "outage.test", json!([{"name": "api"}])))
        .await;

    let gw = Tidegate::start(
        &cluster.kubeconfig,
        &ns.name,
        "outage-0",
        &["--leader-elect=false"],
    );
    gw.wait_ready().await;
    wait_served_by(&gw, "outage.test", "/", "a").await;
    let (condition, stale) = admin_synced(&gw).await;
    assert_eq!(
        (condition["status"].as_str(), stale),
        (Some("True"), 0.0),
        "{condition}"
    );

    // A 12 s outage: long enough for an unbounded backoff to grow past the target.
    cluster.stop_apiserver();
    let stopped = std::time::SystemTime::now();
    let until = Instant::now() + Duration::from_secs(12);
    let mut served = 0;
    while Instant::now() < until {
        let r = get(&gw, "outage.test", "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still ready (it serves), but /config and the gauge say since when it may be stale.
    let ready = HttpClient::http1()
        .get(gw.admin, "admin", "/readyz", &[])
        .await;
    assert_eq!(ready.status, 200);
    assert!(
        ready.body.contains("sources failing since"),
        "{}",
        ready.body
    );
    let (condition, stale) = admin_synced(&gw).await;
    assert_eq!(condition["status"], "False", "{condition}");
    assert_eq!(condition["reason"], "SourceFailing", "{condition}");
    assert!(
        condition["message"].as_str().unwrap().contains("route"),
        "{condition}"
    );
    let since = stopped
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (since - 1.0..since + 5.0).contains(&stale),
        "stale since {stale}, stopped at {since}"
    );

    cluster.start_apiserver();
    let client = client_for(&cluster.kubeconfig).await;
    cluster::wait_served(&client, "tidegate.dev/v1alpha1", "Route").await;
    let ns = Ns {
        client,
        name: ns.name.clone(),
    };
    let created = Instant::now();
    ns.apply(route("later", "later.test", json!([{"name": "api"}])))
        .await;
    eventually(
        Duration::from_secs(30),
        "a Route made after the restart",
        || async { (get(&gw, "later.test", "/", &[]).await.status == 200).then_some(()) },
    )
    .await;
    let took = created.elapsed();
    eprintln!(
        "served {served} requests during the outage; a Route made after the return served after {took:?}"
    );
    assert!(
        took <= Duration::from_secs(5),
        "served {took:?} after the apiserver returned; log:\n{}",
        gw.log()
    );
    assert_eq!(get(&gw, "outage.test", "/", &[]).await.status, 200);
    // Every watch resumed: current again (kinds with no change are cleared by their probe).
    eventually(Duration::from_secs(10), "Synced=True again", || async {
        let (condition, stale) = admin_synced(&gw).await;
        (condition["status"] == "True" && stale == 0.0).then_some(())
    })
    .await;
}

/// The `Synced` condition of `/config` and the stale-since gauge of `/metrics`.
async fn admin_synced(gw: &Tidegate) -> (serde_json::Value, f64) {
    let http = HttpClient::http1();
    let config = http.get(gw.admin, "admin", "/config", &[]).await;
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    let metrics = http.get(gw.admin, "admin", "/metrics", &[]).await.body;
    let stale = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidegate_config_stale_since_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the stale-since gauge");
    (config["conditions"][0].clone(), stale)
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn the_rbac_in_manifests_is_enough_to_run_every_namespace() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;

    let kc = kubeconfig();
    let admin = client_for(&kc).await;
    install_crds(&admin).await;
    // The RBAC of manifests/tidegate.yaml (the chart with default values: every namespace), as
    // users apply it (namespace `tidegate`).
    let system = Ns {
        client: admin.clone(),
        name: "tidegate".into(),
    };
    let manifests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/tidegate.yaml"
    ))
    .unwrap();
    let rbac_kinds = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    for doc in serde_yaml_ng::Deserializer::from_str(&manifests) {
        let v: serde_json::Value =
            serde_json::to_value(serde_yaml_ng::Value::deserialize(doc).unwrap()).unwrap();
        if rbac_kinds.iter().any(|k| v["kind"] == *k) {
            system.apply(v).await;
        }
    }
    // A kubeconfig with the ServiceAccount's token instead of the admin's.
    let token = kube::Api::<ServiceAccount>::namespaced(admin.clone(), "tidegate")
        .create_token_request(
            "tidegate",
            &Default::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut config: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    config["users"][0]["user"]["token"] = json!(token);
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&sa_kubeconfig, serde_yaml_ng::to_string(&config).unwrap()).unwrap();

    let ns = Ns::create(&admin, "rbac").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    // This replica sees every namespace, earlier runs' too: a host of this run's own.
    let host = format!("{}.rbac.test", ns.name);
    ns.apply(route("web", &host, json!([{"name": "api"}])))
        .await;
    let mut bad = route("bad", &format!("bad.{host}"), json!([{"name": "api"}]));
    bad["spec"]["rules"][0]["matches"] = bad_regex();
    ns.apply(bad).await;

    let gw = Tidegate::start_with(&sa_kubeconfig, None, "tidegate", "rbac-0", &[]);
    gw.wait_ready().await;
    wait_served_by(&gw, &host, "/", "a").await;
    ns.wait_condition("Route", "web", "Programmed", "True")
        .await;
    ns.wait_condition("Route", "bad", "Accepted", "False").await;
    eventually(
        Duration::from_secs(10),
        "a Warning Event from the ServiceAccount",
        || async { (!ns.warnings("Route", "bad").await.is_empty()).then_some(()) },
    )
    .await;
    assert!(
        system
            .get("coordination.k8s.io/v1", "Lease", "tidegate-leader")
            .await
            .is_some()
    );
    let forbidden = gw.lines_with("forbidden");
    assert!(forbidden.is_empty(), "{forbidden:#?}");
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn tls_secrets_serve_rotate_and_a_broken_or_deleted_one_keeps_the_last_good_certificate() {
    use base64::Engine;
    use common::tls::{Ca, Leaf, connect, get as tls_get, tls_client};
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "tls").await;
    let ca = Ca::new();
    let (first, second) = (
        ca.leaf("first", &["secure.test"]),
        ca.leaf("second", &["secure.test"]),
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = |leaf: &Leaf| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "secure-cert"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&leaf.cert), "tls.key": b64(&leaf.key)},
        })
    };
    ns.apply(secret(&first)).await;
    // An Opaque Secret of the same shape is not a certificate (a Route's secretName needs a
    // kubernetes.io/tls Secret).
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "opaque"},
        "type": "Opaque",
        "data": {"tls.crt": b64(&second.cert), "tls.key": b64(&second.key)},
    }))
    .await;
    let route = |secret: &str| {
        json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "secure"},
            "spec": {
                "hostnames": ["secure.test"],
                "tls": {"secretName": secret, "httpsRedirect": true},
                "rules": [{"filters": [{"directResponse": {"status": 200, "body": "ok"}}]}],
            },
        })
    };
    ns.apply(route("opaque")).await;
    let gw = Tidegate::start(&kc, &ns.name, "tls-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    let (_, message) = ns
        .wait_condition("Route", "secure", "Accepted", "False")
        .await;
    assert!(message.contains("Secret"), "{message}");
    assert!(
        message.contains("/opaque: has type \"Opaque\", not kubernetes.io/tls"),
        "{message}"
    );

    ns.apply(route("secure-cert")).await;
    ns.wait_condition("Route", "secure", "Accepted", "True")
        .await;
    let tls = tls_client(&ca);
    let https = gw.https.unwrap();
    let served = || async {
        let (mut sender, leaf) = connect(&tls, https, "secure.test").await.ok()?;
        tls_get(&mut sender, "secure.test").await.ok()?;
        Some(leaf)
    };
    let leaf = eventually(Duration::from_secs(10), "HTTPS served", served).await;
    assert_eq!(leaf, first.der);
    let plain = get(&gw, "secure.test", "/x", &[]).await;
    assert_eq!(plain.status, 308);
    let location = format!("https://secure.test:{}/x", https.port());
    assert_eq!(plain.headers["location"], location.as_str());

    // Rotation: the next handshakes get the new certificate.
    ns.apply(secret(&second)).await;
    eventually(
        Duration::from_secs(10),
        "the rotated certificate",
        || async { (served().await? == second.der).then_some(()) },
    )
    .await;

    // An Ingress with tls: its hosts are served over HTTPS with its Secret, and plain HTTP
    // redirects (as ingress-nginx does by default).
    let class = ns.ingress_class().await;
    let web = Upstream::start("web").await;
    ns.service("web", json!({})).await;
    ns.slice("web-1", "web", web.addr.port(), true).await;
    let shop = ca.leaf("shop", &["shop.secure.test"]);
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shop-cert"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&shop.cert), "tls.key": b64(&shop.key)},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "shop"},
        "spec": {
            "ingressClassName": class,
            "tls": [{"hosts": ["shop.secure.test"], "secretName": "shop-cert"}],
            "rules": [{"host": "shop.secure.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            ]}}],
        },
    }))
    .await;
    let leaf = eventually(
        Duration::from_secs(10),
        "the Ingress over HTTPS",
        || async {
            let (mut sender, leaf) = connect(&tls, https, "shop.secure.test").await.ok()?;
            tls_get(&mut sender, "shop.secure.test").await.ok()?;
            Some(leaf)
        },
    )
    .await;
    assert_eq!(leaf, shop.der);
    assert_eq!(get(&gw, "shop.secure.test", "/", &[]).await.status, 308);
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;

    // A broken Secret: the Route says why, and the last good certificate keeps serving.
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "secure-cert"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64("not a certificate"), "tls.key": b64(&second.key)},
    }))
    .await;
    let (reason, message) = ns
        .wait_condition("Route", "secure", "Accepted", "False")
        .await;
    assert_eq!(reason, "InvalidCertificateRef");
    assert!(
        message.contains("tls.crt holds no certificate")
            && message.contains("the last good certificate of this Secret keeps serving"),
        "{message}"
    );
    assert_eq!(served().await, Some(second.der.clone()));

    // Deleted: the same, with "not found".
    ns.delete("v1", "Secret", "secure-cert").await;
    eventually(Duration::from_secs(20), "the deletion reported", || async {
        let conditions = ns.conditions("Route", "secure").await;
        conditions
            .iter()
            .any(|c| c.0 == "Accepted" && c.3.contains("not found"))
            .then_some(())
    })
    .await;
    assert_eq!(served().await, Some(second.der.clone()));
}

/// Kubernetes mode, a Backend that follows an external DNS name (dnsmasq on loopback, asked
/// through `--dns-server`): its endpoints come from the answers and change with them, and it
/// is Accepted like any other Backend.
#[tokio::test]
#[ignore = "needs a kube-apiserver and dnsmasq; run scripts/test.sh"]
async fn a_backend_follows_an_external_dns_name() {
    use common::dnsmasq::{Dnsmasq, ZONE};
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "dns").await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut dns = Dnsmasq::start(1, "");
    let name = format!("_api._tcp.{ZONE}");
    dns.srv(&[(&name, "a.tidegate.test", a.addr.port(), 0, 1)]);
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "external"},
        "spec": {"dns": {"name": name, "type": "SRV", "refresh": {"min": "1s", "max": "1s"}}},
    }))
    .await;
    ns.apply(route("web", "web.test", json!([{"name": "external"}])))
        .await;
    let server = dns.addr().to_string();
    let gw = Tidegate::start(
        &kc,
        &ns.name,
        "dns-0",
        &["--leader-elect=false", "--dns-server", &server],
    );
    gw.wait_ready().await;
    wait_served_by(&gw, "web.test", "/", "a").await;
    for t in ["Accepted", "Programmed", "DNSResolved"] {
        ns.wait_condition("Backend", "external", t, "True").await;
    }
    eventually(
        Duration::from_secs(10),
        "Backend status.endpoints",
        || async {
            let b = ns
                .get("tidegate.dev/v1alpha1", "Backend", "external")
                .await?;
            (b["status"]["endpoints"] == json!({"ready": 1, "total": 1})).then_some(())
        },
    )
    .await;
    // The answer changes: the endpoints follow, without any change in the cluster.
    dns.srv(&[(&name, "b.tidegate.test", b.addr.port(), 0, 1)]);
    wait_served_by(&gw, "web.test", "/", "b").await;
    // The server gone: the condition says the last answer serves, stale.
    dns.stop();
    let (reason, message) = ns
        .wait_condition("Backend", "external", "DNSResolved", "False")
        .await;
    assert_eq!(reason, "StaleAnswer", "{message}");
    assert!(message.contains("last good answer"), "{message}");
    assert_eq!(get(&gw, "web.test", "/", &[]).await.echo().upstream, "b");
}

#[tokio::test]
#[ignore = "needs a kube-apiserver and nginx; run scripts/test.sh"]
async fn backends_speak_tls_and_mtls_with_secrets_from_the_cluster() {
    use base64::Engine;
    use common::nginx::Nginx;
    use common::tls::{Ca, Leaf};
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "upstream-tls").await;
    let ca = Ca::new();
    // The endpoints are 127.0.0.1: the name verified is the Service's NAME.NAMESPACE.svc.
    let names = [
        format!("secure.{}.svc", ns.name),
        format!("h2.{}.svc", ns.name),
    ];
    let server = ca.leaf("backend", &[names[0].as_str(), names[1].as_str()]);
    let nginx = Nginx::start(&server, &ca).await;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // A kubernetes.io/tls Secret with the gateway's client certificate and the CA (ca.crt),
    // as cert-manager writes them.
    let client_secret = |leaf: &Leaf| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gateway-client"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&leaf.cert), "tls.key": b64(&leaf.key), "ca.crt": b64(&ca.pem())},
        })
    };
    ns.apply(client_secret(&ca.leaf("gateway-a", &["gateway.test"])))
        .await;
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "opaque-ca"},
        "type": "Opaque",
        "data": {"ca.crt": b64(&ca.pem())},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "other-ca"},
        "type": "Opaque",
        "data": {"ca.crt": b64(&Ca::new().pem())},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ca-map"},
        "data": {"ca.crt": ca.pem()},
    }))
    .await;
    for (service, port) in [("secure", nginx.mtls), ("h2", nginx.h2)] {
        ns.service(service, json!({})).await;
        ns.slice(service, service, port, true).await;
    }
    let tls_backend = |name: &str, service: &str, protocol: &str, tls: serde_json::Value| {
        json!({
            "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
            "metadata": {"name": name},
            "spec": {"service": {"name": service, "port": "http"}, "protocol": protocol, "tls": tls},
        })
    };
    let both = json!({"caSecretRef": {"name": "gateway-client"},
                      "clientCertificateRef": {"name": "gateway-client"}});
    // The same from files, as a Secret volume mounted into the gateway's pod would hold them
    // (the gateway runs on this machine: a directory stands for the volume).
    let volume = tempfile::tempdir().unwrap();
    let from_files = ca.leaf("gateway-files", &["gateway.test"]);
    std::fs::write(volume.path().join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(volume.path().join("tls.crt"), &from_files.cert).unwrap();
    std::fs::write(volume.path().join("tls.key"), &from_files.key).unwrap();
    let files = json!({"sni": names[0], "caFile": volume.path().join("ca.crt"),
        "clientCertificateFiles": {"certFile": volume.path().join("tls.crt"),
                                   "keyFile": volume.path().join("tls.key")}});
    ns.apply(tls_backend("files", "secure", "HTTP1", files))
        .await;
    ns.apply(tls_backend("secure", "secure", "HTTP1", both))
        .await;
    ns.apply(tls_backend(
        "h2",
        "h2",
        "HTTP2",
        json!({"caSecretRef": {"name": "gateway-client"}}),
    ))
    .await;
    // CAs from an Opaque Secret, a ConfigMap, one of another CA, and a missing Secret (over
    // HTTP/1.1 to the server that needs no client certificate).
    for (name, ca_ref) in [
        ("opaque", json!({"caSecretRef": {"name": "opaque-ca"}})),
        ("configmap", json!({"caConfigMapRef": {"name": "ca-map"}})),
        ("wrong-ca", json!({"caSecretRef": {"name": "other-ca"}})),
        ("missing-ca", json!({"caSecretRef": {"name": "nowhere"}})),
        (
            "missing-file",
            json!({"caFile": volume.path().join("nowhere.crt")}),
        ),
    ] {
        let mut tls = ca_ref;
        tls["sni"] = json!(names[1]);
        ns.apply(tls_backend(name, "h2", "HTTP1", tls)).await;
    }
    for name in [
        "secure",
        "h2",
        "opaque",
        "configmap",
        "wrong-ca",
        "missing-ca",
        "files",
        "missing-file",
    ] {
        ns.apply(route(
            name,
            &format!("{name}.test"),
            json!([{"name": name}]),
        ))
        .await;
    }

    let gw = Tidegate::start(&kc, &ns.name, "upstream-tls-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    let body = |host: &'static str| {
        let gw = &gw;
        async move {
            let r = get(gw, host, "/", &[]).await;
            (r.status == 200).then_some(r.body)
        }
    };
    let secure = eventually(Duration::from_secs(20), "secure.test over mTLS", || {
        body("secure.test")
    })
    .await;
    assert!(secure.contains("client=CN=gateway-a"), "{secure}");
    assert!(secure.contains(&format!("sni={}", names[0])), "{secure}");
    let h2 = eventually(Duration::from_secs(20), "h2.test over TLS", || {
        body("h2.test")
    })
    .await;
    assert!(h2.contains("proto=HTTP/2.0"), "{h2}");
    assert!(h2.contains(&format!("sni={}", names[1])), "{h2}");

    // The CA of an Opaque Secret and of a ConfigMap verify the server.
    for host in ["opaque.test", "configmap.test"] {
        let b = eventually(Duration::from_secs(20), host, || body(host)).await;
        assert!(b.contains("proto=HTTP/1.1"), "{b}");
    }
    // Another CA fails closed (502, never an unverified connection).
    let wrong = get(&gw, "wrong-ca.test", "/", &[]).await;
    assert_eq!(wrong.status, 502, "{}", wrong.body);
    // A missing Secret: the Backend names the field and the Secret (its Route answers 500).
    let (reason, message) = ns
        .wait_condition("Backend", "missing-ca", "Accepted", "False")
        .await;
    assert_eq!(reason, "InvalidCertificateRef");
    assert!(
        message.contains(&format!(
            "spec.tls.caSecretRef: Secret {}/nowhere: not found",
            ns.name
        )),
        "{message}"
    );
    assert_eq!(get(&gw, "missing-ca.test", "/", &[]).await.status, 500);

    // CA bundle and client certificate from files.
    let files = eventually(Duration::from_secs(20), "files.test over mTLS", || {
        body("files.test")
    })
    .await;
    assert!(files.contains("client=CN=gateway-files"), "{files}");
    let (reason, message) = ns
        .wait_condition("Backend", "missing-file", "Accepted", "False")
        .await;
    assert_eq!(reason, "InvalidCertificateRef");
    assert!(
        message.contains(&format!(
            "spec.tls.caFile: file {}: cannot read",
            volume.path().join("nowhere.crt").display()
        )),
        "{message}"
    );

    // The client certificate rotates: new connections present the new one.
    ns.apply(client_secret(&ca.leaf("gateway-b", &["gateway.test"])))
        .await;
    eventually(
        Duration::from_secs(20),
        "the rotated client certificate",
        || async {
            body("secure.test")
                .await
                .filter(|b| b.contains("client=CN=gateway-b"))
        },
    )
    .await;
}

/// A TCP Route to a Service port (EndpointSlice endpoints): bytes flow through the L4 port, the
/// Route's status says so, and a Route naming a port the gateway does not have is refused.
#[tokio::test]
#[ignore = "needs a kube-apiserver: run scripts/test.sh"]
async fn a_tcp_route_reaches_a_service_and_reports_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "l4").await;
    // An echo server behind the Service's EndpointSlice.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    ns.service("echo", json!({})).await;
    ns.slice("echo-a", "echo", echo_port, true).await;
    let l4_port = cluster::free_port();
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "echo"},
        "spec": {"protocol": "TCP", "port": l4_port,
                 "backendRefs": [{"kind": "Service", "name": "echo", "port": 80}]},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "elsewhere"},
        "spec": {"protocol": "TCP", "port": 1,
                 "backendRefs": [{"kind": "Service", "name": "echo", "port": 80}]},
    }))
    .await;
    let ports = format!("--l4-ports=127.0.0.1:{l4_port}/tcp");
    let gw = Tidegate::start(&kc, &ns.name, "l4-0", &["--leader-elect=false", &ports]);
    gw.wait_ready().await;

    let mut s = eventually(Duration::from_secs(10), "the L4 port to open", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", l4_port))
            .await
            .ok()
    })
    .await;
    s.write_all(b"through a Service").await.unwrap();
    let mut got = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echo within 5s")
        .unwrap();
    assert_eq!(&got, b"through a Service");

    for t in ["Accepted", "ResolvedRefs", "Programmed"] {
        ns.wait_condition("Route", "echo", t, "True").await;
    }
    let (reason, message) = ns
        .wait_condition("Route", "elsewhere", "Accepted", "False")
        .await;
    assert_eq!(reason, "Invalid");
    assert!(
        message.contains("spec.port: 1 is not one of the gateway's TCP ports"),
        "{message}"
    );
}

/// A TLS Route to a Service port (EndpointSlice endpoints): the client's TLS reaches nginx
/// unterminated (the certificate it gets is nginx's), the Route's status says so, and
/// `/config` shows the HTTPS listener's port.
#[tokio::test]
#[ignore = "needs a kube-apiserver and nginx: run scripts/test.sh"]
async fn a_tls_route_passes_through_to_a_service() {
    use common::nginx::Nginx;
    use common::tls::{Ca, connect, get, tls_client};
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "tls-pass").await;
    let ca = Ca::new();
    let leaf = ca.leaf("db.test", &["db.test"]);
    let nginx = Nginx::start(&leaf, &ca).await;
    ns.service("db", json!({})).await;
    ns.slice("db-a", "db", nginx.h2, true).await;
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "db"},
        "spec": {"protocol": "TLS", "hostnames": ["db.test"],
                 "backendRefs": [{"kind": "Service", "name": "db", "port": 80}]},
    }))
    .await;
    let gw = Tidegate::start(&kc, &ns.name, "tls-pass-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    let https = gw.https.expect("an HTTPS listener");

    let tls = tls_client(&ca);
    let (mut sender, served) = eventually(
        Duration::from_secs(20),
        "a handshake with nginx through the gateway",
        || async { connect(&tls, https, "db.test").await.ok() },
    )
    .await;
    assert_eq!(
        served, leaf.der,
        "the certificate is nginx's: TLS passed through"
    );
    get(&mut sender, "db.test").await.unwrap();

    for t in ["Accepted", "ResolvedRefs", "Programmed"] {
        ns.wait_condition("Route", "db", t, "True").await;
    }
    let config: serde_json::Value = serde_json::from_str(
        &HttpClient::http1()
            .get(gw.admin, "admin", "/config", &[])
            .await
            .body,
    )
    .unwrap();
    let route = config["l4"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["hostnames"][0] == "db.test"))
        .unwrap_or_else(|| panic!("the TLS Route in /config: {config}"))
        .clone();
    assert_eq!(route["port"], https.port(), "{route}");
}

/// `extAuth.backendRef` naming a Service (no Backend of that name): the subrequests go to its
/// EndpointSlices' ready endpoints, both in rotation, and stop reaching one that turns not
/// ready (the fast path, no recompile). A name that resolves to nothing leaves the Route
/// accepted with `ResolvedRefs=False` naming the field, and its rule answers 500.
#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn an_auth_service_named_by_service_follows_its_endpoint_slices() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "extauth").await;
    let app = Upstream::start("app").await;
    let (a, b) = (
        Upstream::start("auth-a").await,
        Upstream::start("auth-b").await,
    );
    ns.service("app", json!({})).await;
    ns.slice("app-1", "app", app.addr.port(), true).await;
    ns.service("auth", json!({})).await;
    ns.slice("auth-a", "auth", a.addr.port(), true).await;
    ns.slice("auth-b", "auth", b.addr.port(), true).await;
    let authed = |name: &str, host: &str, auth: &str| {
        let mut r = route(name, host, json!([{"name": "app"}]));
        // The echo answers with the status a request asks for: 403 is a refusal whose body,
        // passed back, names the auth endpoint that answered.
        r["spec"]["rules"][0]["authentication"] = json!({"extAuth": {
            "backendRef": {"name": auth}, "headersToAuth": ["x-status"]}});
        r
    };
    ns.apply(authed("web", "auth.test", "auth")).await;
    ns.apply(authed("dangling", "dangling.test", "nope")).await;

    let gw = Tidegate::start(&kc, &ns.name, "extauth-0", &["--leader-elect=false"]);
    gw.wait_ready().await;
    wait_served_by(&gw, "auth.test", "/", "app").await;
    let asked = |n: usize| {
        let gw = &gw;
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let r = get(gw, "auth.test", "/", &[("x-status", "403")]).await;
                assert_eq!(r.status, 403, "{}", r.body);
                out.push(r.echo().upstream);
            }
            out
        }
    };
    eventually(
        Duration::from_secs(20),
        "both auth endpoints asked",
        || async {
            let seen = asked(4).await;
            (seen.iter().any(|u| u == "auth-a") && seen.iter().any(|u| u == "auth-b")).then_some(())
        },
    )
    .await;

    ns.slice("auth-b", "auth", b.addr.port(), false).await;
    eventually(Duration::from_secs(5), "auth-b out of rotation", || async {
        asked(6).await.iter().all(|u| u == "auth-a").then_some(())
    })
    .await;

    let (reason, message) = ns
        .wait_condition("Route", "dangling", "ResolvedRefs", "False")
        .await;
    assert_eq!(reason, "BackendNotFound");
    assert!(
        message.contains("spec.rules[0].authentication.extAuth.backendRef.name"),
        "{message}"
    );
    ns.wait_condition("Route", "dangling", "Accepted", "True")
        .await;
    assert_eq!(get(&gw, "dangling.test", "/", &[]).await.status, 500);
}

/// `tidegate_config_reloads_total{result="success"}` of `gw`'s `/metrics`.
async fn successful_reloads(gw: &Tidegate) -> u64 {
    let metrics = HttpClient::http1()
        .get(gw.admin, "admin", "/metrics", &[])
        .await
        .body;
    metrics
        .lines()
        .find(|l| l.starts_with("tidegate_config_reloads_total{result=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("tidegate_config_reloads_total in /metrics")
}

/// A change after a quiet period compiles at once, and a burst of applies compiles a bounded
/// number of times (at most one per debounce window), not once per apply.
#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn a_burst_of_applies_compiles_a_bounded_number_of_times() {
    use futures::StreamExt;
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "burst").await;
    let a = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", a.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    ns.apply(route("web", "web.burst.test", json!([{"name": "api"}])))
        .await;
    // A debounce far longer than a compile: the first apply is served well before it ends only
    // if it was compiled at once.
    let gw = Tidegate::start(
        &kc,
        &ns.name,
        "burst-0",
        &["--leader-elect=false", "--debounce", "3s"],
    );
    gw.wait_ready().await;
    wait_served_by(&gw, "web.burst.test", "/", "a").await;

    // Quiet for longer than the window, then one apply: served at once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    ns.apply(route("one", "one.burst.test", json!([{"name": "api"}])))
        .await;
    wait_served_by(&gw, "one.burst.test", "/", "a").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2000), "served after {took:?}");

    // A burst of N applies, 16 at a time.
    const N: usize = 400;
    let before = successful_reloads(&gw).await;
    futures::stream::iter(0..N)
        .map(|i| {
            let ns = &ns;
            async move {
                ns.apply(route(
                    &format!("b{i}"),
                    &format!("b{i}.burst.test"),
                    json!([{"name": "api"}]),
                ))
                .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    for i in [0, N / 2, N - 1] {
        wait_served_by(&gw, &format!("b{i}.burst.test"), "/", "a").await;
    }
    let compiles = successful_reloads(&gw).await - before;
    assert!(
        compiles <= 10,
        "{compiles} compiles for {N} applies with a 3 s window"
    );
}
