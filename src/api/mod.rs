//! The custom resources users write (group `tidegate.dev`, version `v1alpha1`).
//!
//! These types are the shape of the YAML, in Kubernetes and in standalone files alike. They are
//! validated structurally here (serde, the CRD schema) and semantically by the compiler.

mod access;
pub mod annotations;
mod backend;
mod cel;
mod duration;
pub mod limits;
mod rate_limit;
mod route;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use access::*;
pub use backend::*;
pub use duration::{DURATION_PATTERN, Duration, ParseDurationError};
pub use rate_limit::*;
pub use route::*;

/// The API group of every Tidegate resource.
pub const GROUP: &str = "tidegate.dev";
/// The API version this crate serves.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "tidegate.dev/v1alpha1";
/// The ingress class a Route belongs to when it names none.
pub const DEFAULT_INGRESS_CLASS: &str = "tidegate";
/// The `spec.controller` of IngressClasses this controller serves, unless told otherwise.
pub const DEFAULT_CONTROLLER_NAME: &str = "tidegate.dev/ingress-controller";

/// An empty object, for fields like `sourceIP: {}` whose presence is the setting.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `type: object` with no properties: Kubernetes forbids `additionalProperties: false`, which
/// the derived schema of a `deny_unknown_fields` struct would carry. Files still reject
/// unknown keys (serde); the apiserver prunes them.
impl JsonSchema for Empty {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Empty".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

/// Every CRD this crate defines, in a stable order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![Route::crd(), Backend::crd(), RateLimitPolicy::crd()]
}

/// All CRDs as one multi-document YAML stream, as `tidegate crds` prints it; `with_cel: false`
/// leaves the CEL rules out, for Kubernetes ≤ 1.24 (see [`strip_cel`]).
pub fn crds_yaml(with_cel: bool) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        if with_cel {
            out.push_str(&serde_yaml_ng::to_string(&crd)?);
        } else {
            let mut value = serde_json::to_value(&crd)
                .map_err(<serde_yaml_ng::Error as serde::ser::Error>::custom)?;
            strip_cel(&mut value);
            out.push_str(&serde_yaml_ng::to_string(&value)?);
        }
    }
    Ok(out)
}

/// Removes the CEL rules (`x-kubernetes-validations`) from a CRD. Kubernetes before 1.25 does
/// not know them: kubectl's validation and server-side apply refuse the field there (a plain
/// `kubectl apply --validate=false` would store the CRD with the rules silently dropped).
pub fn strip_cel(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_cel);
        }
        serde_json::Value::Array(list) => list.iter_mut().for_each(strip_cel),
        _ => {}
    }
}
