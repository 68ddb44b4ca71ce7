//! The Helm chart (charts/tidegate), rendered by a real `helm`: lint, the values schema, what the
//! templates render, and the checks that keep the chart, the README, the binary's flags and the
//! image from drifting apart. The chart on a real apiserver and the image running as the chart's
//! pod are in tests/kube/delivery.rs.
//!
//! `helm` comes from scripts/test.sh (`e2e/tools/helm.sh`), which sets `TIDEGATE_TEST_HELM`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tidegate");
const BIN: &str = env!("CARGO_BIN_EXE_tidegate");

fn helm_bin() -> PathBuf {
    std::env::var_os("TIDEGATE_TEST_HELM")
        .map(PathBuf::from)
        .expect("TIDEGATE_TEST_HELM is not set: run these tests with scripts/test.sh")
}

fn helm(args: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(args)
        .output()
        .expect("helm runs")
}

/// `helm template` of the chart with `--set` values; the rendered objects, or helm's error.
fn template(sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["template", "tg", CHART, "--namespace", "edge"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(documents(&String::from_utf8_lossy(&out.stdout)))
}

fn render(sets: &[&str]) -> Vec<Value> {
    template(sets).unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"))
}

/// The YAML documents of a stream, as JSON (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    match find(objs, kind).as_slice() {
        [o] => o,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

fn container(objs: &[Value]) -> &Value {
    &one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objs: &[Value]) -> Vec<String> {
    container(objs)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn helm_lint_passes() {
    let out = helm(&["lint", "--strict", CHART]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn the_values_schema_rejects_bad_values_naming_the_field() {
    for (set, says) in [
        (
            "replicas=abc",
            "replicas: Invalid type. Expected: integer, given: string",
        ),
        ("controller.idleTimeout=5x", "controller.idleTimeout"),
        ("controller.accessLog=xml", "controller.accessLog"),
        ("service.type=Ingress", "service.type"),
        ("containerPorts.http=70000", "containerPorts.http"),
        ("replica=3", "Additional property replica is not allowed"),
        ("image.digest=latest", "image.digest"),
    ] {
        let err = template(&[set]).expect_err(set);
        assert!(err.contains(says), "--set {set}: {err}");
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{err}"
        );
    }
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn what_is_not_built_or_cannot_work_is_refused_with_a_reason() {
    let err = template(&["controller.defaultCertificate=no-namespace"]).unwrap_err();
    assert!(err.contains("controller.defaultCertificate"), "{err}");
    let err = template(&["terminationGracePeriodSeconds=30"]).unwrap_err();
    assert!(
        err.contains("must be larger than controller.shutdownDelaySeconds + controller.drainTimeoutSeconds (35)"),
        "{err}"
    );
    let err = template(&["metrics.serviceMonitor.enabled=true"]).unwrap_err();
    assert!(
        err.contains("serves no monitoring.coreos.com/v1 ServiceMonitor"),
        "{err}"
    );
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn the_deployment_is_hardened_probed_and_spread() {
    let objs = render(&[]);
    let deploy = one(&objs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(&objs);
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(pod["serviceAccountName"], "tg-tidegate");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "admin"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        c["image"],
        format!("tidegate:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(c["resources"]["requests"]["cpu"].is_string());
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                &e["valueFrom"]["fieldRef"]["fieldPath"],
            )
        })
        .collect();
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(env["POD_NAME"], "metadata.name");
    // The kubelet waits longer than the shutdown delay and the drain together.
    let a = args(&objs);
    assert!(a.contains(&"--shutdown-delay=5s".to_owned()), "{a:?}");
    assert!(a.contains(&"--drain-timeout=30s".to_owned()), "{a:?}");
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 5 + 30);
    assert_eq!(
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(one(&objs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    assert!(find(&objs, "HorizontalPodAutoscaler").is_empty());
    // One replica: no PodDisruptionBudget (it would block every eviction).
    assert!(find(&render(&["replicas=1"]), "PodDisruptionBudget").is_empty());
    let hpa = render(&["autoscaling.enabled=true"]);
    assert!(one(&hpa, "Deployment")["spec"].get("replicas").is_none());
    assert_eq!(
        one(&hpa, "HorizontalPodAutoscaler")["spec"]["minReplicas"],
        2
    );
}

/// Files named by objects (`caFile`, `clientCertificateFiles`) and `--default-certificate
/// CERT,KEY` come from volumes the chart mounts through `controller.extraVolumes` and
/// `controller.extraVolumeMounts`; none by default.
#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn extra_volumes_are_mounted_into_the_container() {
    let plain = render(&[]);
    assert!(
        one(&plain, "Deployment")["spec"]["template"]["spec"]
            .get("volumes")
            .is_none()
    );
    assert!(container(&plain).get("volumeMounts").is_none());

    let objs = render(&[
        "controller.extraVolumes[0].name=client-ca",
        "controller.extraVolumes[0].secret.secretName=client-ca",
        "controller.extraVolumeMounts[0].name=client-ca",
        "controller.extraVolumeMounts[0].mountPath=/etc/tidegate/client-ca",
        "controller.extraVolumeMounts[0].readOnly=true",
    ]);
    let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "client-ca", "secret": {"secretName": "client-ca"}}])
    );
    assert_eq!(
        container(&objs)["volumeMounts"],
        json!([{"name": "client-ca", "mountPath": "/etc/tidegate/client-ca", "readOnly": true}])
    );
    let err = template(&["controller.extraVolumeMounts[0].name=client-ca"]).unwrap_err();
    assert!(err.contains("mountPath"), "{err}");
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn services_ingress_class_dashboard_and_service_monitor() {
    let objs = render(&[]);
    let services = find(&objs, "Service");
    let traffic = services
        .iter()
        .find(|s| s["metadata"]["name"] == "tg-tidegate")
        .unwrap();
    assert_eq!(traffic["spec"]["type"], "LoadBalancer");
    assert_eq!(
        traffic["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
        ])
    );
    let metrics = services
        .iter()
        .find(|s| s["metadata"]["name"] == "tg-tidegate-metrics")
        .unwrap();
    assert_eq!(metrics["spec"]["type"], "ClusterIP");
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "admin");
    assert!(args(&objs).contains(&"--publish-service=edge/tg-tidegate".to_owned()));

    let local = render(&[
        "service.type=NodePort",
        "service.externalTrafficPolicy=Local",
        "service.nodePorts.http=30080",
    ]);
    let svc = one_named(&local, "Service", "tg-tidegate");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);

    let class = one(&objs, "IngressClass");
    assert_eq!(
        class["spec"]["controller"],
        "tidegate.dev/ingress-controller"
    );
    assert!(
        class["metadata"].get("annotations").is_none(),
        "not the default class unless asked"
    );
    let default = render(&["ingressClass.default=true"]);
    assert_eq!(
        one(&default, "IngressClass")["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );

    assert!(find(&objs, "ConfigMap").is_empty());
    let dash = render(&["grafanaDashboard.enabled=true"]);
    let cm = one(&dash, "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/dashboards/tidegate.json")).unwrap(),
    )
    .unwrap();
    let in_map: Value =
        serde_json::from_str(cm["data"]["tidegate.json"].as_str().unwrap()).unwrap();
    assert_eq!(in_map, shipped);

    let sm = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.force=true",
    ]);
    let monitor = one(&sm, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let selected = &monitor["spec"]["selector"]["matchLabels"];
    let metrics_labels = &one_named(&sm, "Service", "tg-tidegate-metrics")["metadata"]["labels"];
    for (k, v) in selected.as_object().unwrap() {
        assert_eq!(
            &metrics_labels[k], v,
            "the ServiceMonitor selects the metrics Service by {k}"
        );
    }
    assert_ne!(
        one_named(&sm, "Service", "tg-tidegate")["metadata"]["labels"]["tidegate.dev/service"],
        "metrics",
        "and not the traffic Service"
    );
}

fn one_named<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objs, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// (apiGroup, resource, verb) triples a role grants, with resourceNames when restricted.
fn grants(role: &Value) -> Vec<(String, String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let names: Vec<String> = rule["resourceNames"]
            .as_array()
            .map(|n| n.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    out.push((
                        g.as_str().unwrap().to_owned(),
                        r.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                        names.clone(),
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String, Vec<String>)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(g, r, verb)| (g.to_string(), r.to_string(), verb.to_string(), Vec::new()))
        .collect();
    v.sort();
    v
}

/// What src/controller/kube/ calls: a list+watch per watched kind (a get of referenced Secrets
/// and ConfigMaps), SSA patches of status,
/// Events created and patched. (The Lease is checked below.) A change here must come with a
/// change of the controller's API calls.
const NAMESPACED: &[(&str, &str, &str)] = &[
    ("tidegate.dev", "routes", "list"),
    ("tidegate.dev", "routes", "watch"),
    ("tidegate.dev", "backends", "list"),
    ("tidegate.dev", "backends", "watch"),
    ("tidegate.dev", "ratelimitpolicies", "list"),
    ("tidegate.dev", "ratelimitpolicies", "watch"),
    ("", "services", "list"),
    ("", "services", "watch"),
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("discovery.k8s.io", "endpointslices", "list"),
    ("discovery.k8s.io", "endpointslices", "watch"),
    ("networking.k8s.io", "ingresses", "list"),
    ("networking.k8s.io", "ingresses", "watch"),
    ("tidegate.dev", "routes/status", "patch"),
    ("tidegate.dev", "backends/status", "patch"),
    ("tidegate.dev", "ratelimitpolicies/status", "patch"),
    ("networking.k8s.io", "ingresses/status", "patch"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];
const CLUSTER: &[(&str, &str, &str)] = &[
    ("networking.k8s.io", "ingressclasses", "list"),
    ("networking.k8s.io", "ingressclasses", "watch"),
];

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn rbac_grants_exactly_what_the_controller_calls() {
    let objs = render(&["controller.leaderElection.electionId=edge-leader"]);
    let cluster_role = one(&objs, "ClusterRole");
    let mut all: Vec<(&str, &str, &str)> = CLUSTER.to_vec();
    all.extend_from_slice(NAMESPACED);
    assert_eq!(grants(cluster_role), triples(&all));
    // The Lease: create (which resourceNames cannot restrict), get/update of the named one only.
    let lease = one_named(&objs, "Role", "tg-tidegate-leader-election");
    assert_eq!(lease["metadata"]["namespace"], "edge");
    let names = vec!["edge-leader".to_owned()];
    let mut want = vec![
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            "create".into(),
            vec![],
        ),
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            "get".into(),
            names.clone(),
        ),
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            "update".into(),
            names,
        ),
    ];
    want.sort();
    assert_eq!(grants(lease), want);
    assert!(args(&objs).contains(&"--election-id=edge-leader".to_owned()));
    let binding = one(&objs, "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "tg-tidegate", "namespace": "edge"}])
    );

    // One watched namespace: a Role there; the ClusterRole keeps only the cluster-scoped kind.
    let scoped = render(&["controller.watchNamespace=shop"]);
    assert_eq!(grants(one(&scoped, "ClusterRole")), triples(CLUSTER));
    let role = one_named(&scoped, "Role", "tg-tidegate");
    assert_eq!(role["metadata"]["namespace"], "shop");
    assert_eq!(grants(role), triples(NAMESPACED));
    assert_eq!(
        one_named(&scoped, "RoleBinding", "tg-tidegate")["metadata"]["namespace"],
        "shop"
    );
    assert!(args(&scoped).contains(&"--namespace=shop".to_owned()));

    // Without leader election: no Lease permissions at all.
    let single = render(&["controller.leaderElection.enabled=false"]);
    assert!(find(&single, "Role").is_empty());
    assert!(args(&single).contains(&"--leader-elect=false".to_owned()));
}

/// The long flags `tidegate run --help` lists.
fn run_flags() -> Vec<String> {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let re = regex::Regex::new(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)").unwrap();
    let mut flags: Vec<String> = re.captures_iter(&help).map(|c| c[1].to_owned()).collect();
    flags.retain(|f| f != "--help");
    flags.dedup();
    flags
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn every_run_flag_is_reachable_from_values() {
    let objs = render(&[
        "controller.watchNamespace=shop",
        "controller.publishAddresses={lb.example.com,192.0.2.1}",
        "controller.accessLogIncludeQuery=true",
        "controller.workerThreads=4",
        "controller.trustedProxies={10.0.0.0/8,192.0.2.1}",
        "controller.proxyProtocolFrom={10.1.0.0/16}",
        "controller.watchIngressClasses={nginx,nginx-internal}",
        "controller.redis.url=redis://redis:6379",
        "controller.redis.caFile=/etc/redis-ca/ca.pem",
        "controller.defaultCertificate=ingress/wildcard-cert",
        "controller.dnsServer=10.0.0.10:8600",
        "l4Ports[0].name=redis",
        "l4Ports[0].port=6379",
        "l4Ports[1].name=pg",
        "l4Ports[1].port=5432",
        "l4Ports[1].containerPort=15432",
        "l4Ports[2].name=dns",
        "l4Ports[2].port=53",
        "l4Ports[2].containerPort=5353",
        "l4Ports[2].protocol=UDP",
    ]);
    let a = args(&objs);
    assert_eq!(a[0], "run");
    let flags = run_flags();
    assert!(flags.len() > 20, "{flags:?}");
    // --config is standalone mode; the chart runs Kubernetes mode (extraArgs could still pass it).
    for flag in flags.iter().filter(|f| *f != "--config") {
        assert!(
            a.iter()
                .any(|x| x == flag || x.starts_with(&format!("{flag}="))),
            "`tidegate run {flag}` has no value in the chart (rendered args: {a:?})"
        );
    }
    assert!(a.contains(&"--publish-address=lb.example.com,192.0.2.1".to_owned()));
    assert!(a.contains(&"--worker-threads=4".to_owned()));
    assert!(a.contains(&"--trusted-proxies=10.0.0.0/8,192.0.2.1".to_owned()));
    assert!(a.contains(&"--dns-server=10.0.0.10:8600".to_owned()));
    assert!(a.contains(&"--proxy-protocol-from=10.1.0.0/16".to_owned()));
    assert!(a.contains(&"--watch-ingress-class=nginx,nginx-internal".to_owned()));
    assert!(a.contains(&"--l4-ports=6379/tcp,15432/tcp,5353/udp".to_owned()));
    // Every rendered flag is one the binary knows (a typo in a template fails here).
    for x in &a[1..] {
        let flag = x.split('=').next().unwrap();
        assert!(
            flags.iter().any(|f| f == flag),
            "{flag} is not a flag of tidegate run"
        );
    }
}

/// Leaf keys of values.yaml as dotted paths, with their defaults.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() && !is_free_form(prefix) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// Maps whose keys are the user's, listed as one row in the README.
fn is_free_form(key: &str) -> bool {
    [
        "resources",
        "podSecurityContext",
        "containerSecurityContext",
        "livenessProbe",
        "readinessProbe",
        "nodeSelector",
        "grafanaDashboard.labels",
    ]
    .contains(&key)
}

#[test]
fn the_readme_values_table_lists_every_value_with_its_default() {
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap())
            .unwrap();
    let mut want = BTreeMap::new();
    leaves("", &values, &mut want);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- values-table -->")
        .expect("README has a <!-- values-table --> marker");
    let mut listed = BTreeMap::new();
    for line in readme[start..].lines().skip(3) {
        if !line.starts_with("| `") {
            break;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let key = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        let default = cells[1].trim().trim_matches('`');
        let parsed: Value = serde_json::from_str(default)
            .unwrap_or_else(|e| panic!("README default of {key} is not JSON ({e}): {default}"));
        listed.insert(key, parsed);
    }
    let missing: Vec<_> = want.keys().filter(|k| !listed.contains_key(*k)).collect();
    let extra: Vec<_> = listed.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "values missing from the README table: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "README rows that are not values: {extra:?}"
    );
    for (key, default) in &want {
        assert_eq!(&listed[key], default, "README default of {key}");
    }
}

#[test]
fn chart_image_and_crate_versions_agree() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).unwrap())
            .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("ARG VERSION={version}\n")),
        "the Dockerfile's VERSION label is the crate's"
    );
    // The chart ships the CRDs in Helm's crds/ folder, identical to crds/.
    assert_eq!(
        std::fs::read_to_string(format!("{CHART}/crds/tidegate.dev.yaml")).unwrap(),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/tidegate.dev.yaml"
        ))
        .unwrap(),
        "charts/tidegate/crds is stale: run `just crds`"
    );
}

#[test]
#[ignore = "needs helm; run scripts/test.sh"]
fn https_is_served_by_default_and_can_be_turned_off() {
    let objs = render(&[]);
    let a = args(&objs);
    assert!(a.contains(&"--https-addr=0.0.0.0:8443".to_owned()), "{a:?}");
    assert!(a.contains(&"--https-public-port=443".to_owned()), "{a:?}");
    let deploy = one_named(&objs, "Deployment", "tg-tidegate");
    let ports = &deploy["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "https" && p["containerPort"] == 8443),
        "{ports}"
    );
    let svc = one_named(&objs, "Service", "tg-tidegate");
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "https" && p["port"] == 443 && p["targetPort"] == "https"),
        "{svc}"
    );

    let off = render(&["service.enableHttps=false"]);
    let a = args(&off);
    assert!(a.contains(&"--https-addr=off".to_owned()), "{a:?}");
    assert!(
        !a.iter().any(|x| x.starts_with("--https-public-port")),
        "{a:?}"
    );
    let svc = one_named(&off, "Service", "tg-tidegate");
    assert!(
        !svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "https"),
        "{svc}"
    );
}
