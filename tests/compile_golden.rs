//! Golden tests of the compiler: each `tests/golden/compile/NAME.in.yaml` is read by the file
//! source and compiled; the table and diagnostics must equal `NAME.out.yaml`.
//! `tests/golden/kube/` is the same for Kubernetes mode: its documents (our CRDs and core
//! objects such as Services and Ingresses) go through the Kubernetes index, then the compiler.
//! Each output also shows the status conditions every Route and Backend would get in a cluster
//! (`controller::kube::status::desired`, the mapping the status writer patches). Inputs are
//! compiled as for a gateway with Redis (`--redis-url`), so Global rate limits are allowed.
//! `UPDATE_GOLDEN=1 cargo test --test compile_golden` rewrites the expected files.
// These tests use Kubernetes mode (its index or status), a default cargo feature.
#![cfg(feature = "kubernetes")]

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidegate::controller::file::FileSource;
use tidegate::controller::kube::status;
use tidegate::controller::{CompileOptions, Snapshot, compile};
use tidegate::model::{Backend, RateLimitPolicy, Rule};

#[derive(Serialize)]
struct Golden<'a> {
    rules: &'a [std::sync::Arc<Rule>],
    backends: &'a [Backend],
    #[serde(rename = "rateLimits", skip_serializing_if = "<[_]>::is_empty")]
    rate_limits: &'a [RateLimitPolicy],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    l4: &'a [tidegate::model::L4Route],
    diagnostics: Vec<String>,
    /// Per object: `Type=Status`, then `Reason: message` when False.
    status: BTreeMap<String, Vec<String>>,
}

fn render(input: &Path) -> String {
    let snap = FileSource::new(input)
        .load()
        .expect("golden input is readable");
    render_compiled(&snap, &options())
}

/// As a gateway run with `--redis-url` and `--l4-ports 6379/tcp,7000/tcp,5353/udp` compiles
/// (Global rate limits allowed).
fn options() -> CompileOptions {
    CompileOptions {
        global_rate_limits: true,
        l4_ports: ["6379/tcp", "7000/tcp", "5353/udp"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect(),
        ..CompileOptions::default()
    }
}

/// Feeds every document of `input` to the Kubernetes index, then compiles in Kubernetes mode.
fn render_kube(input: &Path) -> String {
    use k8s_openapi::api::core::v1::{Secret, Service};
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use tidegate::api::{Backend, RateLimitPolicy, Route};
    use tidegate::controller::kube::index::Index;

    let text = std::fs::read_to_string(input).expect("golden input is readable");
    let mut index = Index::new(None);
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut value = serde_yaml_ng::Value::deserialize(doc).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        // As the apiserver would: a namespace, and a creation order for precedence.
        value["metadata"]
            .as_mapping_mut()
            .expect("metadata")
            .entry("namespace".into())
            .or_insert("default".into());
        let json: serde_json::Value = serde_json::to_value(&value).unwrap();
        let kind = json["kind"].as_str().expect("kind").to_owned();
        let _ = match kind.as_str() {
            "Route" => index.apply_custom::<Route>(Ok(serde_json::from_value(json).unwrap())),
            "Backend" => index.apply_custom::<Backend>(Ok(serde_json::from_value(json).unwrap())),
            "RateLimitPolicy" => {
                index.apply_custom::<RateLimitPolicy>(Ok(serde_json::from_value(json).unwrap()))
            }
            "Service" => index.apply_service(&serde_json::from_value::<Service>(json).unwrap()),
            "Ingress" => index.apply_ingress(&serde_json::from_value::<Ingress>(json).unwrap()),
            "IngressClass" => {
                index.apply_ingress_class(&serde_json::from_value::<IngressClass>(json).unwrap())
            }
            "Secret" => index.apply_secret(&serde_json::from_value::<Secret>(json).unwrap()),
            other => panic!("{}: unexpected kind {other}", input.display()),
        };
    }
    let opts = CompileOptions {
        discovery: true,
        ..options()
    };
    render_compiled(&index.snapshot(Default::default()), &opts)
}

fn render_compiled(snap: &Snapshot, opts: &CompileOptions) -> String {
    let compiled = compile(snap, opts);
    let status = status::desired(snap, &compiled)
        .into_iter()
        .map(|(id, desired)| {
            let conditions = desired
                .conditions
                .iter()
                .map(|c| match c.status {
                    true => format!("{}=True", c.type_),
                    false => format!("{}=False {}: {}", c.type_, c.reason, c.message),
                })
                .collect();
            (id.to_string(), conditions)
        })
        .collect();
    let table = compiled.table;
    table.validate().expect("compiled table is valid");
    let golden = Golden {
        rules: &table.rules,
        backends: &table.backends,
        rate_limits: &table.rate_limits,
        l4: &table.l4,
        diagnostics: table.diagnostics.iter().map(ToString::to_string).collect(),
        status,
    };
    serde_yaml_ng::to_string(&golden).expect("serializable")
}

#[test]
fn compile_matches_golden_files() {
    check_dir("tests/golden/compile", render);
}

#[test]
fn kube_compile_matches_golden_files() {
    check_dir("tests/golden/kube", render_kube);
}

fn check_dir(dir: &str, render: fn(&Path) -> String) {
    // Relative, so file names in diagnostics are the same on every machine (cargo runs tests
    // from the package root).
    let dir = PathBuf::from(dir);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden inputs in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let expected_path = PathBuf::from(input.to_string_lossy().replace(".in.yaml", ".out.yaml"));
        let actual = render(input);
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with UPDATE_GOLDEN=1",
                expected_path.display()
            )
        });
        if expected != actual {
            failures.push(format!(
                "{}:\n{}",
                input.display(),
                pretty_assertions::StrComparison::new(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
