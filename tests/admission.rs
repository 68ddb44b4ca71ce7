//! Admission validation: the CRDs' CEL rules (`x-kubernetes-validations`), evaluated by a CEL
//! interpreter (kube-cel, which kube uses for client-side validation), against good and bad
//! objects; and the compiler's verdict on the same objects. The OpenAPI constraints are checked
//! by a real kube-apiserver in `tests/kube` (`bad_objects_are_refused_at_apply_with_the_field_named`).
//! Kubernetes 1.20 has no CEL, hence the interpreter.

#[path = "admission/cases.rs"]
mod cases;

use std::collections::BTreeMap;

use cases::{Admission, Case};
use kube::core::cel::{ScopeContext, Validator, WarningKind, analyze_rule, compile_schema};
use serde_json::{Value, json};
use tidegate::controller::CompileOptions;
use tidegate::controller::kube::index::Index;

/// The `openAPIV3Schema` of each CRD, by kind.
fn schemas() -> BTreeMap<String, Value> {
    tidegate::api::crds()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("a schema");
            (crd.spec.names.kind, serde_json::to_value(schema).unwrap())
        })
        .collect()
}

/// Every CEL rule of a schema, with the schema node it sits on and its path.
fn rules(schema: &Value, path: String, out: &mut Vec<(String, Value, String)>) {
    if let Some(list) = schema["x-kubernetes-validations"].as_array() {
        for r in list {
            out.push((
                path.clone(),
                schema.clone(),
                r["rule"].as_str().unwrap().to_owned(),
            ));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            rules(v, format!("{path}.{k}"), out);
        }
    }
    if schema["items"].is_object() {
        rules(&schema["items"], format!("{path}[]"), out);
    }
}

/// The CEL verdict on a case: the errors, as `path: message`.
fn cel_errors(schemas: &BTreeMap<String, Value>, case: &Case) -> Vec<String> {
    let schema = &schemas[case.kind];
    match Validator::new().validate(schema, &case.object("default"), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

/// The compiler's errors on the case's object, as `field: message`, in Kubernetes mode.
fn compiler_errors(case: &Case) -> Vec<String> {
    let mut index = Index::new(None);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    });
    let _ = index.apply_service(&serde_json::from_value(service).unwrap());
    let api = json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"endpoints": ["127.0.0.1:8080"]},
    });
    let _ = index.apply_custom::<tidegate::api::Backend>(Ok(serde_json::from_value(api).unwrap()));
    // What files would report: a document that does not decode names the field (the apiserver's
    // OpenAPI check refuses such objects before the controller sees them).
    let decoded = match case.kind {
        "Route" => {
            serde_path_to_error::deserialize::<_, tidegate::api::RouteSpec>(&case.spec).map(|_| ())
        }
        _ => serde_path_to_error::deserialize::<_, tidegate::api::BackendSpec>(&case.spec)
            .map(|_| ()),
    };
    if let Err(e) = decoded {
        return vec![format!("spec.{}: {}", e.path(), e.inner())];
    }
    let obj = case.object("default");
    let _ = match case.kind {
        "Route" => {
            index.apply_custom::<tidegate::api::Route>(Ok(serde_json::from_value(obj).unwrap()))
        }
        "Backend" => {
            index.apply_custom::<tidegate::api::Backend>(Ok(serde_json::from_value(obj).unwrap()))
        }
        other => panic!("unexpected kind {other}"),
    };
    let opts = CompileOptions {
        discovery: true,
        ..CompileOptions::default()
    };
    let table = tidegate::controller::compile(&index.snapshot(Default::default()), &opts).table;
    table
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && d.object.as_ref().is_some_and(|o| &*o.name == case.name))
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

/// `field` names `path` or something under it (`spec.a` names `spec.a`, `spec.a[0]`, `spec.a.b`).
fn under(field: &str, path: &str) -> bool {
    field == path
        || field
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[test]
fn every_cel_rule_compiles_reads_only_self_and_is_bounded() {
    let mut found = 0;
    for (kind, schema) in schemas() {
        let compiled = compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{kind}: {:?}",
            compiled.compilation_errors()
        );
        let mut all = Vec::new();
        rules(&schema, String::new(), &mut all);
        for (path, node, rule) in all {
            found += 1;
            // (Its scope check takes comprehension variables for unknown ones: left out.)
            // The analyzer's cost estimate depends on hash-map order (the same rule and schema
            // came out at 1.64M and under 1M in runs of one binary), so a rule passes when one of
            // several analyses finds it bounded; a rule over budget is over in every one.
            let analyze = || -> Vec<_> {
                analyze_rule(&rule, &compile_schema(&node), ScopeContext::CrdValidation)
                    .into_iter()
                    .filter(|w| w.kind != WarningKind::WrongScope)
                    .collect()
            };
            let mut warnings = analyze();
            for _ in 0..16 {
                if warnings.is_empty() {
                    break;
                }
                warnings = analyze();
            }
            assert!(warnings.is_empty(), "{kind}{path}: {rule}: {warnings:#?}");
        }
    }
    assert!(found >= 25, "only {found} CEL rules found");
}

#[test]
fn cel_rules_refuse_the_bad_objects_and_only_them() {
    let schemas = schemas();
    let mut failures = Vec::new();
    for case in cases::cases() {
        let errors = cel_errors(&schemas, &case);
        match case.admission {
            Admission::Cel => {
                let named = errors.iter().any(|e| {
                    e.starts_with(&format!("{}: ", case.path)) && e.contains(case.message)
                });
                if !named {
                    failures.push(format!(
                        "{}: expected a CEL error at {} containing {:?}, got {errors:?}",
                        case.name, case.path, case.message
                    ));
                }
            }
            // Objects the schema lets through (and OpenAPI-only refusals) pass every CEL rule:
            // no rule is stricter than it says.
            Admission::Ok | Admission::OpenApi => {
                if !errors.is_empty() {
                    failures.push(format!("{}: unexpected CEL errors {errors:?}", case.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_compiler_agrees_with_admission() {
    let mut failures = Vec::new();
    for case in cases::cases() {
        let errors = compiler_errors(&case);
        match case.compiler {
            None => {
                if !errors.is_empty() {
                    failures.push(format!(
                        "{}: admission accepts it, the compiler rejects it: {errors:?}",
                        case.name
                    ));
                }
            }
            Some(field) => {
                if !errors
                    .iter()
                    .any(|e| under(e.split(": ").next().unwrap(), field))
                {
                    failures.push(format!(
                        "{}: expected a compiler error at {field}, got {errors:?}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn duration_rules_read_durations_as_the_compiler_does() {
    // CEL's duration() and the compiler's parser agree on every form the schema's pattern allows.
    let schemas = schemas();
    for (text, positive) in [
        ("1h1m1s1ms", true),
        ("1s1h", true),
        ("00000ms", false),
        ("0h0m", false),
        ("99999h", true),
        ("1ms", true),
    ] {
        let d: tidegate::api::Duration = text.parse().unwrap();
        assert_eq!(!d.0.is_zero(), positive, "{text}");
        let case = Case {
            name: "duration",
            kind: "Backend",
            spec: json!({"endpoints": ["127.0.0.1:1"], "slowStart": {"window": text}}),
            admission: Admission::Ok,
            path: "",
            message: "",
            compiler: None,
            gap: None,
        };
        assert_eq!(cel_errors(&schemas, &case).is_empty(), positive, "{text}");
    }
}
