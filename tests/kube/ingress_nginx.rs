//! ingress-nginx annotations on a real apiserver: the corpus (`tests/ingress_nginx/corpus.yaml`)
//! served as Ingresses answers as ingress-nginx does.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::cluster::{Ns, Tidegate, client_for, eventually, install_crds, kubeconfig};
use super::common::{HttpClient, Upstream};

#[path = "../ingress_nginx/corpus.rs"]
mod corpus;
use corpus::{Case, corpus, corpus_with_auth};

async fn mismatches(gw: &Tidegate, cases: &[Case]) -> Vec<String> {
    corpus::mismatches(gw.http, cases).await
}

/// The Ingresses of `case`, of ingress class `class`: its own, every path to Service `web`,
/// and its canary's, if any, every path to Service `canary`.
pub fn ingresses(case: &Case, class: &str) -> Vec<Value> {
    let service = case.service.as_deref().unwrap_or("web");
    let mut out = vec![ingress(case, class, &case.name, &case.annotations, service)];
    if let Some(c) = &case.canary {
        let name = format!("{}-canary", case.name);
        out.push(ingress(case, class, &name, &c.annotations, "canary"));
    }
    out
}

/// An Ingress named `name` with the rules of `case` and `annotations`, every path to `service`.
fn ingress(
    case: &Case,
    class: &str,
    name: &str,
    annotations: &std::collections::BTreeMap<String, String>,
    service: &str,
) -> Value {
    let rules: Vec<Value> = case
        .rules
        .iter()
        .map(|r| {
            let paths: Vec<Value> = r
                .paths
                .iter()
                .map(|p| {
                    json!({"path": p.path, "pathType": p.path_type,
                           "backend": {"service": {"name": service, "port": {"name": "http"}}}})
                })
                .collect();
            json!({"host": r.host, "http": {"paths": paths}})
        })
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"ingressClassName": class, "rules": rules},
    })
}

/// The htpasswd Secret of the basic-auth case (`foo:wonderland`, `htpasswd -nbs`).
pub fn basic_auth_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "basic-auth"},
        "stringData": {"auth": "foo:{SHA}tiY7sUhYKUwI5L3866kDY+ENcrQ=\n"},
    })
}

/// Waits until every case's host is served (its first request no longer gets 404 unless
/// that is the answer wanted).
pub async fn wait_served(gw: &Tidegate, corpus: &[Case]) {
    let http = HttpClient::http1();
    // Each case is asked until it is served and no more, so that a rate-limited case spends
    // exactly one request here.
    let served = std::sync::Mutex::new(vec![false; corpus.len()]);
    eventually(Duration::from_secs(20), "every case served", || async {
        for (i, case) in corpus.iter().enumerate() {
            if served.lock().unwrap()[i] {
                continue;
            }
            let r = &case.requests[0];
            let host = r.host.as_deref().unwrap_or(&case.rules[0].host);
            let got = http.get(gw.http, host, &r.path, &[]).await.status;
            if got == 404 && r.status != 404 {
                return None;
            }
            served.lock().unwrap()[i] = true;
        }
        Some(())
    })
    .await;
}

/// The gateway, with the public ports ingress-nginx's Locations assume (80, 443).
pub fn gateway(kc: &std::path::Path, ns: &str, pod: &str, extra: &[&str]) -> Tidegate {
    let mut args = vec![
        "--leader-elect=false",
        "--http-public-port",
        "80",
        "--https-public-port",
        "443",
    ];
    args.extend(extra);
    Tidegate::start(kc, ns, pod, &args)
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn the_ingress_nginx_corpus_is_answered_as_ingress_nginx_answers_it() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "nginx-corpus").await;
    let class = ns.ingress_class().await;
    let _upstreams = upstreams(&ns).await;
    ns.apply(basic_auth_secret()).await;
    // The auth-url case's auth service (an echo server named as the backends are).
    let auth = Upstream::start("web").await;
    let corpus = corpus_with_auth(auth.addr);
    for case in &corpus {
        for ing in ingresses(case, &class) {
            ns.apply(ing).await;
        }
    }
    let gw = gateway(&kc, &ns.name, "corpus-0", &[]);
    gw.wait_ready().await;
    wait_served(&gw, &corpus).await;
    for case in &corpus {
        // Events are written after the table is served: wait for the ones expected (an
        // object's warnings share one Event, "; " between them).
        let w = eventually(Duration::from_secs(10), "the warnings", || async {
            let w = ns.warnings("Ingress", &case.name).await;
            let all = w.join("; ");
            let told = case
                .warns
                .iter()
                .all(|n| all.contains(&format!("nginx.ingress.kubernetes.io/{n}]")));
            told.then_some(w)
        })
        .await;
        if case.warns.is_empty() {
            assert!(w.is_empty(), "{}: {w:?}", case.name);
        } else {
            let lines = w.join("; ").matches("has no effect").count();
            assert_eq!(lines, case.warns.len(), "{}: {w:?}", case.name);
        }
        if case.canary.is_some() {
            let name = format!("{}-canary", case.name);
            let w = ns.warnings("Ingress", &name).await;
            assert!(w.is_empty(), "{name}: {w:?}");
        }
    }
    let wrong = mismatches(&gw, &corpus).await;
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The round trip: `tidegate migrate` of the same Ingresses, applied in a namespace of their
    // own (a gateway of its own watching it), answers the corpus the same.
    let migrated = Ns::create(&client, "nginx-migrated").await;
    let _upstreams2 = upstreams(&migrated).await;
    migrated.apply(basic_auth_secret()).await;
    let input = yaml_stream(
        corpus.iter().flat_map(|c| ingresses(c, "nginx")),
        &migrated.name,
    );
    let (objects, report) = run_migrate(&input);
    assert!(!report.contains("not migrated"), "{report}");
    let (carried, not_carried): (Vec<Case>, Vec<Case>) = corpus
        .into_iter()
        .partition(|c| c.not_carried_by_migrate.is_none());
    for case in &not_carried {
        let key = case.not_carried_by_migrate.as_deref().unwrap();
        assert!(
            report.contains(&format!("{key}: not carried: ")),
            "{}: {report}",
            case.name
        );
    }
    let corpus = carried;
    for doc in serde_yaml_ng::Deserializer::from_str(&objects) {
        let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        let json: Value = serde_json::to_value(&value).unwrap();
        assert!(
            matches!(
                json["kind"].as_str(),
                Some("Route" | "Backend" | "RateLimitPolicy")
            ),
            "{json}"
        );
        migrated.apply(json).await;
    }
    let gw2 = gateway(&kc, &migrated.name, "migrated-0", &[]);
    gw2.wait_ready().await;
    wait_served(&gw2, &corpus).await;
    let wrong = mismatches(&gw2, &corpus).await;
    assert!(wrong.is_empty(), "migrated objects: {wrong:#?}\n{objects}");
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;
}

/// The Services of the corpus in `ns` (port `http`, 80), each endpoint an upstream that names
/// itself in `x-upstream`: `web` and `canary`; `flaky`, whose endpoint `flaky-bad` answers
/// every request 503 and `flaky-good` as the others; `pair`, with `pair-a` and `pair-b`;
/// `down`, whose one endpoint is not ready.
async fn upstreams(ns: &Ns) -> Vec<Upstream> {
    let mut out = Vec::new();
    for (service, name) in [
        ("web", "web"),
        ("canary", "canary"),
        ("flaky", "flaky-bad"),
        ("flaky", "flaky-good"),
        ("pair", "pair-a"),
        ("pair", "pair-b"),
        ("down", "down"),
    ] {
        let up = Upstream::start(name).await;
        if name == "flaky-bad" {
            up.faults.set_status(503);
        }
        ns.service(service, json!({})).await;
        ns.slice(name, service, up.addr.port(), name != "down")
            .await;
        out.push(up);
    }
    out
}

/// `ingresses` as one YAML stream (`tidegate migrate`'s input), each in namespace `ns`.
pub fn yaml_stream(ingresses: impl IntoIterator<Item = Value>, ns: &str) -> String {
    ingresses
        .into_iter()
        .map(|mut ing| {
            ing["metadata"]["namespace"] = json!(ns);
            format!("---\n{}", serde_yaml_ng::to_string(&ing).unwrap())
        })
        .collect()
}

/// `tidegate migrate` with `input` on stdin: (stdout, stderr); it must succeed.
pub fn run_migrate(input: &str) -> (String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(super::cluster::BIN)
        .arg("migrate")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn watch_ingress_class_serves_another_controllers_ingresses_without_touching_their_status() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "side-by-side").await;
    let ours = format!("tg-{}", ns.name);
    let theirs = format!("nginx-{}", ns.name);
    for (class, controller) in [
        (&ours, "tidegate.dev/ingress-controller"),
        (&theirs, "k8s.io/ingress-nginx"),
    ] {
        ns.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": class}, "spec": {"controller": controller},
        }))
        .await;
    }
    let _web = {
        let web = Upstream::start("web").await;
        ns.service("web", json!({})).await;
        ns.slice("web-1", "web", web.addr.port(), true).await;
        web
    };
    let ingress = |name: &str, class: &str, host: &str| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": {
                "nginx.ingress.kubernetes.io/rewrite-target": "/",
            }},
            "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
                {"path": "/app", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            ]}}]},
        })
    };
    ns.apply(ingress("mine", &ours, "mine.test")).await;
    ns.apply(ingress("legacy", &theirs, "legacy.test")).await;
    // ingress-nginx has written its address on its Ingress.
    let ingresses: kube::Api<k8s_openapi::api::networking::v1::Ingress> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let theirs_status = json!([{"ip": "10.5.5.5"}]);
    ingresses
        .patch_status(
            "legacy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": theirs_status}}}),
            ),
        )
        .await
        .unwrap();

    let gw = gateway(
        &kc,
        &ns.name,
        "side-0",
        &[
            "--watch-ingress-class",
            &theirs,
            "--publish-address",
            "10.9.8.7",
        ],
    );
    gw.wait_ready().await;
    // Both are served, the annotations carried for both.
    let http = HttpClient::http1();
    for host in ["mine.test", "legacy.test"] {
        eventually(Duration::from_secs(20), host, || async {
            let r = http.get(gw.http, host, "/app/x", &[]).await;
            (r.status == 200 && r.echo().uri == "/").then_some(())
        })
        .await;
    }
    // Our Ingress gets our address; once it has, the other's status is still ingress-nginx's.
    eventually(Duration::from_secs(10), "our Ingress's status", || async {
        let o = ns.get("networking.k8s.io/v1", "Ingress", "mine").await?;
        (o["status"]["loadBalancer"]["ingress"] == json!([{"ip": "10.9.8.7"}])).then_some(())
    })
    .await;
    let o = ns
        .get("networking.k8s.io/v1", "Ingress", "legacy")
        .await
        .unwrap();
    assert_eq!(o["status"]["loadBalancer"]["ingress"], theirs_status);
    assert!(
        gw.lines_with("legacy")
            .iter()
            .all(|l| !l.contains("status written"))
    );

    // Without the flag, the other controller's Ingress is not ours.
    let plain = gateway(&kc, &ns.name, "side-1", &["--publish-address", "10.9.8.7"]);
    plain.wait_ready().await;
    eventually(Duration::from_secs(20), "mine served", || async {
        (http.get(plain.http, "mine.test", "/app", &[]).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(
        http.get(plain.http, "legacy.test", "/app", &[])
            .await
            .status,
        404
    );
    for class in [&ours, &theirs] {
        ns.delete("networking.k8s.io/v1", "IngressClass", class)
            .await;
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn a_canary_ingress_takes_its_weight_of_the_main_ingress_traffic_as_ingress_and_migrated() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "canary-weight").await;
    let class = ns.ingress_class().await;
    let _upstreams = upstreams(&ns).await;
    // 30 of 200: 15% to the canary.
    let case: Case = serde_yaml_ng::from_str(
        r#"
name: weighted
annotations: {}
canary:
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-weight: "30"
    nginx.ingress.kubernetes.io/canary-weight-total: "200"
rules: [{ host: weighted.bar.com, paths: [{ path: /, pathType: Prefix }] }]
requests: [{ path: /, status: 200 }]
"#,
    )
    .unwrap();
    for ing in ingresses(&case, &class) {
        ns.apply(ing).await;
    }
    let gw = gateway(&kc, &ns.name, "weighted-0", &[]);
    gw.wait_ready().await;
    wait_served(&gw, std::slice::from_ref(&case)).await;
    let share = |gw: &Tidegate| {
        let http = HttpClient::http1();
        let addr = gw.http;
        async move {
            let mut to_canary = 0;
            for _ in 0..400 {
                let r = http.get(addr, "weighted.bar.com", "/", &[]).await;
                assert_eq!(r.status, 200, "{}", r.body);
                to_canary += usize::from(r.echo().upstream == "canary");
            }
            to_canary
        }
    };
    // A smooth weighted round robin: 30 of every 200 (ingress-nginx draws at random, ~15%).
    let n = share(&gw).await;
    assert!((55..=65).contains(&n), "{n} of 400 to the canary");

    // The objects `tidegate migrate` writes split the same.
    let migrated = Ns::create(&client, "canary-weight-migrated").await;
    let _upstreams2 = upstreams(&migrated).await;
    let input = yaml_stream(ingresses(&case, "nginx"), &migrated.name);
    let (objects, report) = run_migrate(&input);
    assert!(
        report.contains("a canary: its backend is in the Routes written for Ingress weighted"),
        "{report}"
    );
    migrated.apply_yaml(&objects).await;
    let gw2 = gateway(&kc, &migrated.name, "weighted-1", &[]);
    gw2.wait_ready().await;
    wait_served(&gw2, std::slice::from_ref(&case)).await;
    let n = share(&gw2).await;
    assert!(
        (55..=65).contains(&n),
        "migrated: {n} of 400 to the canary\n{objects}"
    );
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn migrate_from_cluster_writes_what_migrate_writes_from_the_same_ingresses_as_files() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "migrate-cluster").await;
    let _upstreams = upstreams(&ns).await;
    // A class of this test's own (no IngressClass object: migrate reads only the name).
    let class = format!("nginx-{}", ns.name);
    let cases: Vec<Case> = corpus()
        .into_iter()
        .filter(|c| matches!(c.name.as_str(), "rewrite-captures" | "canary-header"))
        .collect();
    assert_eq!(cases.len(), 2);
    let mut input = String::new();
    for case in &cases {
        for mut ing in ingresses(case, &class) {
            ns.apply(ing.clone()).await;
            ing["metadata"]["namespace"] = json!(ns.name);
            input.push_str(&format!("---\n{}", serde_yaml_ng::to_string(&ing).unwrap()));
        }
    }
    // Left out: another class, and no class (the cluster's default IngressClass is not ours).
    let mut other = ingresses(&cases[0], "other");
    other[0]["metadata"]["name"] = json!("other-class");
    ns.apply(other[0].clone()).await;
    other[0]["metadata"]["name"] = json!("no-class");
    other[0]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("ingressClassName");
    ns.apply(other[0].clone()).await;

    let out = std::process::Command::new(super::cluster::BIN)
        .args(["migrate", "--from-cluster", "--namespace", &ns.name])
        .args(["--ingress-class", &format!("unused,{class}")])
        .env("KUBECONFIG", &kc)
        .output()
        .unwrap();
    let (objects, report) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{report}");
    let (from_files, files_report) = run_migrate(&input);
    assert_eq!(objects, from_files);
    let n = &ns.name;
    let left_out = format!(
        "Ingress {n}/no-class: left out (no class, and the default IngressClass is not one of \
         those migrated)\nIngress {n}/other-class: left out (class \"other\")\n"
    );
    assert_eq!(report, format!("{left_out}{files_report}"));
    assert!(
        report.contains("a canary: its backend is in the Routes written for Ingress canary-header"),
        "{report}"
    );
    assert!(objects.contains("replaceRegexMatch: /$2"), "{objects}");

    // The objects serve the cases as the Ingresses would.
    let migrated = Ns::create(&client, "migrate-cluster-objects").await;
    let _upstreams2 = upstreams(&migrated).await;
    for doc in serde_yaml_ng::Deserializer::from_str(&objects) {
        let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        let mut json: Value = serde_json::to_value(&value).unwrap();
        json["metadata"]["namespace"] = json!(migrated.name);
        migrated.apply(json).await;
    }
    let gw = gateway(&kc, &migrated.name, "migrate-cluster-0", &[]);
    gw.wait_ready().await;
    wait_served(&gw, &cases).await;
    let wrong = mismatches(&gw, &cases).await;
    assert!(wrong.is_empty(), "{wrong:#?}\n{objects}");

    // The cluster cannot be read: exit 2, said on stderr.
    let out = std::process::Command::new(super::cluster::BIN)
        .args(["migrate", "--from-cluster"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Kubernetes configuration"));
}

#[tokio::test]
#[ignore = "needs a kube-apiserver; run scripts/test.sh"]
async fn proxy_connect_timeout_bounds_the_connect_to_the_services_as_ingress_and_migrated() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    // The Service `stuck`: its endpoint never accepts; a connect waits until the timeout
    // (--connect-timeout, 5 s, without the annotation). Tidegate answers 502 (connect_failed)
    // where nginx answers 504 (tests/ingress_nginx_vs_nginx.rs).
    let stuck = super::common::Unaccepting::start();
    let case: Case = serde_yaml_ng::from_str(
        r#"
name: connect-timeout
annotations: { nginx.ingress.kubernetes.io/proxy-connect-timeout: "1" }
service: stuck
rules: [{ host: connect.bar.com, paths: [{ path: /, pathType: Prefix }] }]
requests: [{ path: /, status: 502 }]
"#,
    )
    .unwrap();
    let timed = |gw: &Tidegate| {
        let addr = gw.http;
        async move {
            let started = std::time::Instant::now();
            let r = HttpClient::http1()
                .get(addr, "connect.bar.com", "/", &[])
                .await;
            (r.status, started.elapsed())
        }
    };
    let ns = Ns::create(&client, "connect-timeout").await;
    let class = ns.ingress_class().await;
    let migrated = Ns::create(&client, "connect-timeout-migrated").await;
    for n in [&ns, &migrated] {
        n.service("stuck", json!({})).await;
        n.slice("stuck", "stuck", stuck.addr.port(), true).await;
    }
    for ing in ingresses(&case, &class) {
        ns.apply(ing).await;
    }
    let gw = gateway(&kc, &ns.name, "connect-0", &[]);
    gw.wait_ready().await;
    wait_served(&gw, std::slice::from_ref(&case)).await;
    let (status, took) = timed(&gw).await;
    assert_eq!(status, 502);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let input = yaml_stream(ingresses(&case, "nginx"), &migrated.name);
    let (objects, report) = run_migrate(&input);
    assert!(
        report.contains("proxy-connect-timeout: approximated: "),
        "{report}"
    );
    assert!(objects.contains("connectTimeout: 1s"), "{objects}");
    migrated.apply_yaml(&objects).await;
    let gw2 = gateway(&kc, &migrated.name, "connect-1", &[]);
    gw2.wait_ready().await;
    wait_served(&gw2, std::slice::from_ref(&case)).await;
    let (status, took) = timed(&gw2).await;
    assert_eq!(status, 502);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "migrated: {took:?}\n{objects}"
    );
    ns.delete("networking.k8s.io/v1", "IngressClass", &class)
        .await;
}
