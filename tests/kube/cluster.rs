//! Test support for Kubernetes mode: a client for the test apiserver, CRD install, per-test
//! namespaces, objects applied server-side (as `kubectl apply --server-side` would), and the
//! real binary run against the cluster.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::{Api, Client};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidegate");
const MANAGER: &str = "tidegate-test";

/// The kubeconfig scripts/test.sh wrote.
pub fn kubeconfig() -> PathBuf {
    std::env::var_os("TIDEGATE_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .expect("TIDEGATE_TEST_KUBECONFIG is not set: run these tests with scripts/test.sh")
}

/// A client for the cluster of `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig usable");
    Client::try_from(cfg).expect("client")
}

pub use crate::common::eventually;

/// Installs the CRDs (`tidegate crds --without-cel`: Kubernetes 1.20 has no CEL) and waits until
/// each is Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in tidegate::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let mut body = serde_json::to_value(&crd).unwrap();
        tidegate::api::strip_cel(&mut body);
        body["apiVersion"] = json!("apiextensions.k8s.io/v1");
        body["kind"] = json!("CustomResourceDefinition");
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("the apiserver refused CRD {name}: {e}"));
    }
    for crd in tidegate::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        eventually(
            Duration::from_secs(30),
            &format!("CRD {name} Established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await;
    }
}

/// The API resource for `apiVersion` + `kind`, as the apiserver serves it.
async fn resource(client: &Client, api_version: &str, kind: &str) -> (ApiResource, bool) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{api_version} {kind} is not served: {e}"));
    (ar, caps.scope == Scope::Namespaced)
}

/// Waits until the apiserver serves `apiVersion` `kind` (CRD-backed APIs come back a moment
/// after a restarted apiserver answers).
pub async fn wait_served(client: &Client, api_version: &str, kind: &str) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    eventually(
        Duration::from_secs(30),
        &format!("{api_version} {kind} served"),
        || async {
            kube::discovery::pinned_kind(client, &gvk)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// The EndpointSlice apiVersion this apiserver serves (`v1beta1` on Kubernetes 1.20).
pub async fn endpoint_slice_version(client: &Client) -> &'static str {
    let gvk = GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice");
    if kube::discovery::pinned_kind(client, &gvk).await.is_ok() {
        "discovery.k8s.io/v1"
    } else {
        "discovery.k8s.io/v1beta1"
    }
}

/// A namespace for one test (left behind: Kubernetes 1.20 without a controller manager never
/// finishes deleting namespaces, and the apiserver is thrown away after the run).
pub struct Ns {
    pub client: Client,
    pub name: String,
}

impl Ns {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let ns = Self {
            client: client.clone(),
            name,
        };
        ns.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name}}))
            .await;
        ns
    }

    /// Applies one object (server-side apply); namespaced objects go to this namespace.
    pub async fn apply(&self, obj: Value) -> DynamicObject {
        let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
        self.try_apply(obj)
            .await
            .unwrap_or_else(|e| panic!("cannot apply {what}: {e}"))
    }

    /// An IngressClass of Tidegate's controller for this namespace's test (`tg-NAMESPACE`);
    /// its name.
    pub async fn ingress_class(&self) -> String {
        let class = format!("tg-{}", self.name);
        self.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": class},
            "spec": {"controller": "tidegate.dev/ingress-controller"},
        }))
        .await;
        class
    }

    /// Applies every document of `yaml` (what `tidegate migrate` writes) in this namespace.
    pub async fn apply_yaml(&self, yaml: &str) {
        use serde::Deserialize;
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
            self.apply(serde_json::to_value(&value).unwrap()).await;
        }
    }

    /// Applies one object, or says why the apiserver refused it.
    pub async fn try_apply(&self, mut obj: Value) -> Result<DynamicObject, kube::Error> {
        let api_version = obj["apiVersion"].as_str().unwrap().to_owned();
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let (ar, namespaced) = resource(&self.client, &api_version, &kind).await;
        let api: Api<DynamicObject> = if namespaced {
            obj["metadata"]["namespace"] = json!(self.name);
            Api::namespaced_with(self.client.clone(), &self.name, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
    }

    /// Deletes one object.
    pub async fn delete(&self, api_version: &str, kind: &str, name: &str) {
        let (ar, namespaced) = resource(&self.client, api_version, kind).await;
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), &self.name, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        let _ = api.delete(name, &DeleteParams::default()).await;
    }

    /// Reads one object as JSON.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let (ar, namespaced) = resource(&self.client, api_version, kind).await;
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), &self.name, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// `kubectl get` of our kind `plural` in this namespace: each object's printer columns, by
    /// column name, as the apiserver's Table API renders them.
    pub async fn columns(&self, plural: &str) -> Vec<std::collections::BTreeMap<String, Value>> {
        let req = http::Request::get(format!(
            "/apis/tidegate.dev/v1alpha1/namespaces/{}/{plural}",
            self.name
        ))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
        let table: Value =
            serde_json::from_str(&self.client.request_text(req).await.unwrap()).unwrap();
        let names: Vec<String> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                names
                    .iter()
                    .cloned()
                    .zip(row["cells"].as_array().unwrap().iter().cloned())
                    .collect()
            })
            .collect()
    }

    /// A selector-less Service with one port `http` (80).
    pub async fn service(&self, name: &str, annotations: Value) {
        self.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }))
        .await;
    }

    /// A hand-made EndpointSlice of Service `service`: one endpoint on 127.0.0.1 at `port`.
    pub async fn slice(&self, name: &str, service: &str, port: u16, ready: bool) {
        let api_version = endpoint_slice_version(&self.client).await;
        self.apply(json!({
            "apiVersion": api_version, "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }))
        .await;
    }

    /// The conditions of an object's status, by type: (status, reason, message, observedGeneration).
    pub async fn conditions(
        &self,
        kind: &str,
        name: &str,
    ) -> Vec<(String, String, String, String, Option<i64>)> {
        let Some(obj) = self.get("tidegate.dev/v1alpha1", kind, name).await else {
            return Vec::new();
        };
        obj["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or("").to_owned(),
                    c["status"].as_str().unwrap_or("").to_owned(),
                    c["reason"].as_str().unwrap_or("").to_owned(),
                    c["message"].as_str().unwrap_or("").to_owned(),
                    c["observedGeneration"].as_i64(),
                )
            })
            .collect()
    }

    /// Waits until condition `type_` of the object has `status`, at the object's generation.
    pub async fn wait_condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
    ) -> (String, String) {
        eventually(
            Duration::from_secs(20),
            &format!("{kind} {name}: {type_}={status}"),
            || async {
                let obj = self.get("tidegate.dev/v1alpha1", kind, name).await?;
                let generation = obj["metadata"]["generation"].as_i64();
                self.conditions(kind, name)
                    .await
                    .into_iter()
                    .find(|c| c.0 == type_ && c.1 == status && c.4 == generation)
                    .map(|c| (c.2, c.3))
            },
        )
        .await
    }

    /// Warning Events about one object (core/v1 and events.k8s.io/v1 are the same store).
    pub async fn warnings(&self, kind: &str, name: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.name);
        api.list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.involved_object.kind.as_deref() == Some(kind)
                    && e.involved_object.name.as_deref() == Some(name)
            })
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tidegate run` in Kubernetes mode, killed on drop. Its log lines are kept.
pub struct Tidegate {
    child: Child,
    pub http: SocketAddr,
    /// The HTTPS listener (when the test chose its port).
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Tidegate {
    /// Starts the binary against `kubeconfig`, watching namespace `ns`, as pod `pod` of `ns`.
    pub fn start(kubeconfig: &Path, ns: &str, pod: &str, extra: &[&str]) -> Self {
        Self::start_with(kubeconfig, Some(ns), ns, pod, extra)
    }

    /// Starts the binary watching `watch` (`None`: every namespace), as pod `pod` of `pod_ns`.
    pub fn start_with(
        kubeconfig: &Path,
        watch: Option<&str>,
        pod_ns: &str,
        pod: &str,
        extra: &[&str],
    ) -> Self {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--log-format", "json"]);
        if let Some(ns) = watch {
            cmd.args(["--namespace", ns]);
        }
        cmd.args([
            "--http-addr",
            &http.to_string(),
            "--https-addr",
            &https.to_string(),
            "--admin-addr",
            &admin.to_string(),
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", pod_ns)
        .env(
            "RUST_LOG",
            std::env::var("TIDEGATE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("TIDEGATE_CONFIG");
        let mut gw = Self::spawn(cmd, http, admin);
        gw.https = Some(https);
        gw
    }

    /// Runs `cmd` (the binary, or a container running it) serving on `http` and `admin`; its
    /// stderr lines are kept.
    pub fn spawn(mut cmd: Command, http: SocketAddr, admin: SocketAddr) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            http,
            https: None,
            admin,
            logs,
        }
    }

    /// Sends `sig` (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until the process exits, and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/readyz` answers 200 (every kind listed, a table published).
    /// A timeout prints the gateway's log: why it is not ready is in there.
    pub async fn wait_ready(&self) {
        let http = crate::common::HttpClient::http1();
        let within = Duration::from_secs(30);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let req = http::Request::get(format!("http://{}/readyz", self.admin))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            if http.send(req).await.is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {within:?} waiting for tidegate /readyz; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many log lines have this `message`.
    pub fn count(&self, message: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["message"] == message))
            .count()
    }

    /// Log lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// The log so far, for failure messages.
    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Tidegate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private etcd + kube-apiserver (for tests that stop and restart it), stopped on drop.
pub struct PrivateApiserver {
    pub run_dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    ports: [u16; 3],
}

impl PrivateApiserver {
    pub fn start() -> Self {
        let run_dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let mut s = Self {
            run_dir,
            kubeconfig: PathBuf::new(),
            ports,
        };
        s.kubeconfig = s.start_apiserver();
        s
    }

    /// Starts (or restarts) the apiserver; etcd keeps running across restarts.
    pub fn start_apiserver(&self) -> PathBuf {
        let bin = std::env::var("TIDEGATE_TEST_KUBE_BIN")
            .expect("TIDEGATE_TEST_KUBE_BIN is not set: run these tests with scripts/test.sh");
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/kube/start.sh"))
            .arg(bin)
            .arg(self.run_dir.path())
            .env("ETCD_PORT", self.ports[0].to_string())
            .env("PEER_PORT", self.ports[1].to_string())
            .env("API_PORT", self.ports[2].to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .unwrap(),
        )
    }

    /// Stops the apiserver only (etcd keeps the data).
    pub fn stop_apiserver(&self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/kube/stop.sh"))
            .arg(self.run_dir.path())
            .arg("apiserver")
            .status();
    }
}

impl Drop for PrivateApiserver {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/kube/stop.sh"))
            .arg(self.run_dir.path())
            .status();
    }
}
