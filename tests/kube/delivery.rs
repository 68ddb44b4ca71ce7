//! Delivery on the real apiserver: `helm install` of the chart, `kubectl apply -f manifests/`,
//! and the container image run as the chart's pod would run it, with only the chart's RBAC.
//!
//! scripts/test.sh provides `helm` and `kubectl` (`TIDEGATE_TEST_HELM`, `TIDEGATE_TEST_KUBECTL`),
//! builds the image with podman (`TIDEGATE_TEST_IMAGE`; `CONTAINERS_CONF` set) and starts the
//! apiserver.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::{Ns, Tidegate, client_for, eventually, free_port, install_crds, kubeconfig};
use crate::common::{HttpClient, Upstream};
use crate::{backend, route, wait_served_by};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tidegate");

fn tool(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: run these tests with scripts/test.sh"))
}

/// Runs a tool against the test apiserver; panics with its output when it fails.
fn run(var: &str, args: &[&str]) -> String {
    let out = run_raw(var, args);
    assert!(
        out.status.success(),
        "{var} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_raw(var: &str, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(tool(var))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        // helm keeps its cache and config here, not in the developer's home.
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap_or_else(|e| panic!("{var} does not run: {e}"))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `helm install` of the chart into `ns` as release `ns`, with `--set` values; returns what
/// the release created (`helm get manifest`).
fn helm_install(ns: &str, sets: &[String]) -> Vec<Value> {
    let mut args = vec![
        "install".to_owned(),
        ns.to_owned(),
        CHART.to_owned(),
        "--namespace".to_owned(),
        ns.to_owned(),
        // IngressClasses and ClusterRoles are cluster-scoped: a name of this test's own.
        "--set".to_owned(),
        format!("ingressClass.name={ns}"),
    ];
    for s in sets {
        args.extend(["--set".to_owned(), s.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("TIDEGATE_TEST_HELM", &args);
    assert!(out.contains("STATUS: deployed"), "{out}");
    documents(&run(
        "TIDEGATE_TEST_HELM",
        &["get", "manifest", ns, "--namespace", ns],
    ))
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[tokio::test]
#[ignore = "needs a kube-apiserver and helm; run scripts/test.sh"]
async fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let admin = client_for(&kubeconfig()).await;
    // Other tests share this apiserver and install the CRDs too: have them there first, so that
    // helm finds them (it installs crds/ only when they are missing, as on a first install).
    install_crds(&admin).await;
    let ns = Ns::create(&admin, "helm").await;
    let objs = helm_install(&ns.name, &[]);
    // Kubernetes 1.20 serves policy/v1beta1 only: the chart asks the apiserver which to use.
    let pdb = of_kind(&objs, "PodDisruptionBudget");
    assert_eq!(pdb[0]["apiVersion"], "policy/v1beta1");
    let full = format!("{}-tidegate", ns.name);
    for (api, kind, name) in [
        ("apps/v1", "Deployment", full.as_str()),
        ("v1", "Service", full.as_str()),
        ("v1", "Service", &format!("{full}-metrics")),
        ("v1", "ServiceAccount", full.as_str()),
        (
            "rbac.authorization.k8s.io/v1",
            "Role",
            &format!("{full}-leader-election"),
        ),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", full.as_str()),
        ("networking.k8s.io/v1", "IngressClass", ns.name.as_str()),
        ("policy/v1beta1", "PodDisruptionBudget", full.as_str()),
    ] {
        assert!(
            ns.get(api, kind, name).await.is_some(),
            "{kind} {name} exists"
        );
    }
    let deploy = ns.get("apps/v1", "Deployment", &full).await.unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);

    run(
        "TIDEGATE_TEST_HELM",
        &[
            "upgrade",
            &ns.name,
            CHART,
            "--namespace",
            &ns.name,
            "--reuse-values",
            "--set",
            "replicas=3",
        ],
    );
    let deploy = ns.get("apps/v1", "Deployment", &full).await.unwrap();
    assert_eq!(deploy["spec"]["replicas"], 3);

    // A value the schema refuses never reaches the cluster.
    let bad = run_raw(
        "TIDEGATE_TEST_HELM",
        &[
            "upgrade",
            &ns.name,
            CHART,
            "--namespace",
            &ns.name,
            "--reuse-values",
            "--set",
            "replicas=abc",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("replicas: Invalid type"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    run(
        "TIDEGATE_TEST_HELM",
        &["uninstall", &ns.name, "--namespace", &ns.name],
    );
    assert!(
        ns.get("rbac.authorization.k8s.io/v1", "ClusterRole", &full)
            .await
            .is_none()
    );
    // Helm never deletes CRDs (README: upgrading).
    assert!(
        ns.get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "routes.tidegate.dev"
        )
        .await
        .is_some()
    );
}

#[tokio::test]
#[ignore = "needs a kube-apiserver and kubectl; run scripts/test.sh"]
async fn kubectl_apply_of_manifests_installs_everything_the_apiserver_serves() {
    let admin = client_for(&kubeconfig()).await;
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/");
    // The CRDs carry CEL rules, which kubectl's validation refuses before Kubernetes 1.25; on
    // this v1.20 apiserver they are applied as the README says for such clusters
    // (--validate=false: stored with the rules dropped; the controller still rejects, in status,
    // what they would have refused).
    let out = run_raw(
        "TIDEGATE_TEST_KUBECTL",
        &["apply", "--validate=false", "-f", manifests],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Kubernetes 1.20 does not serve policy/v1 (1.21 does): that one object is refused here,
    // and only that one.
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.contains("resource mapping not found"))
        .collect();
    assert!(
        refused.len() == 1 && refused[0].contains("PodDisruptionBudget"),
        "{stdout}\n{stderr}"
    );
    let system = Ns {
        client: admin,
        name: "tidegate".into(),
    };
    for (api, kind, name) in [
        ("v1", "Namespace", "tidegate"),
        (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "routes.tidegate.dev",
        ),
        ("apps/v1", "Deployment", "tidegate"),
        ("v1", "Service", "tidegate"),
        ("v1", "Service", "tidegate-metrics"),
        ("v1", "ServiceAccount", "tidegate"),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "tidegate",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "Role",
            "tidegate-leader-election",
        ),
        ("networking.k8s.io/v1", "IngressClass", "tidegate"),
    ] {
        assert!(
            system.get(api, kind, name).await.is_some(),
            "{kind} {name}: {stdout}"
        );
    }
    // The example objects (the kind e2e applies them) are accepted as they are.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubernetes");
    // echo.yaml's `preStop: sleep` is Kubernetes >= 1.30; 1.20 only checks the rest of it.
    run(
        "TIDEGATE_TEST_KUBECTL",
        &[
            "apply",
            "--validate=false",
            "-f",
            &format!("{examples}/echo.yaml"),
        ],
    );
    run(
        "TIDEGATE_TEST_KUBECTL",
        &["apply", "-f", &format!("{examples}/routes.yaml")],
    );
    let demo = Ns {
        client: system.client.clone(),
        name: "demo".into(),
    };
    assert!(
        demo.get("tidegate.dev/v1alpha1", "Route", "web")
            .await
            .is_some()
    );
}

/// A container, removed on drop (killing `podman run` does not stop the container).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs podman and the image; run scripts/test.sh"]
fn the_image_is_non_root_labelled_and_starts_with_tidegate_run() {
    let image = std::env::var("TIDEGATE_TEST_IMAGE")
        .expect("TIDEGATE_TEST_IMAGE is not set: run these tests with scripts/test.sh");
    let config: Value = serde_json::from_str(&podman(&["image", "inspect", &image])).unwrap();
    let c = &config[0]["Config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], json!(["tidegate"]));
    assert_eq!(c["Cmd"], json!(["run"]));
    let ports = c["ExposedPorts"].as_object().unwrap();
    assert!(
        ports.contains_key("8080/tcp") && ports.contains_key("9090/tcp"),
        "{ports:?}"
    );
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(labels["org.opencontainers.image.source"].is_string());
    // The binary in it is this crate's, and runs read-only as its own user.
    let out = podman(&["run", "--rm", "--read-only", &image, "version"]);
    assert_eq!(
        out.trim(),
        format!("tidegate {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The files a pod finds in /var/run/secrets/kubernetes.io/serviceaccount/.
fn service_account_dir(token: &str, ca: &Path, ns: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), token).unwrap();
    std::fs::copy(ca, dir.path().join("ca.crt")).unwrap();
    std::fs::write(dir.path().join("namespace"), ns).unwrap();
    // Readable by the container's user, as the kubelet's projected volume is.
    for f in ["token", "ca.crt", "namespace"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
#[ignore = "needs a kube-apiserver, helm, podman and the image; run scripts/test.sh"]
async fn the_image_runs_as_the_charts_pod_with_only_the_charts_rbac() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;

    let image = std::env::var("TIDEGATE_TEST_IMAGE")
        .expect("TIDEGATE_TEST_IMAGE is not set: run these tests with scripts/test.sh");
    let (repository, tag) = image.rsplit_once(':').expect("IMAGE:TAG");
    let kc = kubeconfig();
    let admin = client_for(&kc).await;
    install_crds(&admin).await;
    let ns = Ns::create(&admin, "pod").await;
    // The chart as a user installs it; only what cannot be had without a kubelet differs: the
    // ports (the container shares the host's network with other tests), the namespace watched
    // (this test's own) and a published address (no load balancer here).
    let (http_port, https_port, admin_port) = (free_port(), free_port(), free_port());
    let objs = helm_install(
        &ns.name,
        &[
            format!("image.repository={repository}"),
            format!("image.tag={tag}"),
            format!("containerPorts.http={http_port}"),
            format!("containerPorts.https={https_port}"),
            format!("containerPorts.admin={admin_port}"),
            format!("controller.watchNamespace={}", ns.name),
            "controller.publishAddresses={127.0.0.1}".to_owned(),
        ],
    );
    let deploy = of_kind(&objs, "Deployment")[0];
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], image.as_str());

    // The ServiceAccount's token from the TokenRequest API, as the kubelet would project it.
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let token = kube::Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create_token_request(
            sa,
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
    let config: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    let ca = PathBuf::from(cluster["certificate-authority"].as_str().unwrap());
    let api_port = cluster["server"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let sa_dir = service_account_dir(&token, &ca, &ns.name);

    // `podman run` with what the rendered pod spec says.
    let name = format!("tidegate-{}", ns.name);
    let pod_name = format!(
        "{}-7d4b9c-x2x9q",
        deploy["metadata"]["name"].as_str().unwrap()
    );
    let sc = &c["securityContext"];
    let mut cmd = Command::new("podman");
    cmd.args(["run", "--rm", "--name", &name, "--network", "host"]);
    cmd.arg(format!("--user={}:{}", sc["runAsUser"], sc["runAsGroup"]));
    if sc["readOnlyRootFilesystem"] == true {
        cmd.arg("--read-only");
    }
    if sc["allowPrivilegeEscalation"] == false {
        cmd.arg("--security-opt=no-new-privileges");
    }
    for cap in sc["capabilities"]["drop"].as_array().unwrap() {
        cmd.arg(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    cmd.arg(format!(
        "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        sa_dir.path().display()
    ));
    cmd.args([
        "--env=KUBERNETES_SERVICE_HOST=127.0.0.1".to_owned(),
        format!("--env=KUBERNETES_SERVICE_PORT={api_port}"),
    ]);
    for e in c["env"].as_array().unwrap() {
        let value = match (
            e.get("value"),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.as_str().unwrap().to_owned(),
            (None, Some("metadata.name")) => pod_name.clone(),
            (None, Some("metadata.namespace")) => ns.name.clone(),
            _ => panic!("the test cannot supply env {e}"),
        };
        cmd.arg(format!("--env={}={value}", e["name"].as_str().unwrap()));
    }
    cmd.arg(&image);
    for a in c["args"].as_array().unwrap() {
        cmd.arg(a.as_str().unwrap());
    }
    let _container = Container(name.clone());
    let mut gw = Tidegate::spawn(
        cmd,
        format!("127.0.0.1:{http_port}").parse().unwrap(),
        format!("127.0.0.1:{admin_port}").parse().unwrap(),
    );

    // Traffic: a Route to a loopback upstream; status written from inside the container.
    let up = Upstream::start("a").await;
    ns.service("api", json!({})).await;
    ns.slice("api-a", "api", up.addr.port(), true).await;
    ns.apply(backend("api", "api")).await;
    // Routes of the release's ingress class (a Route naming none belongs to `tidegate`).
    let mut web = route("web", "pod.test", json!([{"name": "api"}]));
    web["spec"]["ingressClassName"] = json!(ns.name);
    ns.apply(web).await;
    let mut bad = route("bad", "bad.pod.test", json!([{"name": "api"}]));
    bad["spec"]["ingressClassName"] = json!(ns.name);
    // Admission cannot see this one (the CRD has no regex engine); the controller refuses it.
    bad["spec"]["rules"][0]["matches"] =
        json!([{"path": {"type": "RegularExpression", "value": "/(("}}]);
    ns.apply(bad).await;
    ns.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "shop"},
        "spec": {"ingressClassName": ns.name, "rules": [{"host": "ingress.pod.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "api", "port": {"name": "http"}}}}]}}]},
    }))
    .await;

    gw.wait_ready().await;
    wait_served_by(&gw, "pod.test", "/", "a").await;
    wait_served_by(&gw, "ingress.pod.test", "/", "a").await;
    ns.wait_condition("Route", "web", "Programmed", "True")
        .await;
    ns.wait_condition("Route", "bad", "Accepted", "False").await;
    eventually(
        Duration::from_secs(20),
        "a Warning Event from the container",
        || async { (!ns.warnings("Route", "bad").await.is_empty()).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the Ingress's published address",
        || async {
            let i = ns.get("networking.k8s.io/v1", "Ingress", "shop").await?;
            (i["status"]["loadBalancer"]["ingress"] == json!([{"ip": "127.0.0.1"}])).then_some(())
        },
    )
    .await;
    let lease = ns
        .get("coordination.k8s.io/v1", "Lease", "tidegate-leader")
        .await
        .expect("the Lease, in the release namespace");
    assert_eq!(lease["spec"]["holderIdentity"], pod_name.as_str());
    let forbidden = gw.lines_with("forbidden");
    assert!(forbidden.is_empty(), "{forbidden:#?}");

    // What the kubelet does to a pod that goes: SIGTERM. /readyz turns 503 at once while the
    // shutdown delay (5s, the chart's) keeps serving; then the drain, and exit 0.
    podman(&["kill", "--signal", "TERM", &name]);
    eventually(
        Duration::from_secs(3),
        "/readyz 503 after SIGTERM",
        || async {
            let req = http::Request::get(format!("http://{}/readyz", gw.admin))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let r = HttpClient::http1().send(req).await.ok()?;
            (r.status == 503).then_some(())
        },
    )
    .await;
    assert_eq!(
        HttpClient::http1()
            .get(gw.http, "pod.test", "/", &[])
            .await
            .status,
        200,
        "still serving during the shutdown delay"
    );
    let code = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(45));
        (code, gw)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.log());
}
