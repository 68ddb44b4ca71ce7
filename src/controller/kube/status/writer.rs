//! Writes status with server-side apply, under one field manager, only where it differs.

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::Desired;
use crate::api::{self, Backend, EndpointCounts, RateLimitPolicy, Route};
use crate::controller::kube::endpoints::Counts;
use crate::controller::kube::index::{LbAddress, Observed};
use crate::model::{Kind, ObjectRef};

/// The field manager of every status Tidegate writes.
pub const FIELD_MANAGER: &str = "tidegate";

/// The `status` to apply to an object, or `None` when what it carries already says the same.
/// A condition keeps its `lastTransitionTime` unless its status flips.
pub fn status_patch(
    desired: &Desired,
    observed: Option<&Observed>,
    endpoints: Option<Counts>,
    now: &Time,
) -> Option<Value> {
    let empty = Observed::default();
    let observed = observed.unwrap_or(&empty);
    let endpoints = endpoints
        .map(|c| EndpointCounts {
            ready: c.ready,
            total: c.total,
        })
        .or(desired
            .static_endpoints()
            .map(|n| EndpointCounts { ready: n, total: n }));
    let status_of = |c: &super::Cond| if c.status { "True" } else { "False" };
    // Compared before anything is built: at 10,000 objects nearly all are unchanged.
    let same = observed.generation == desired.generation
        && observed.endpoints == endpoints
        && observed.conditions.len() == desired.conditions.len()
        && desired.conditions.iter().all(|c| {
            observed.conditions.iter().any(|o| {
                o.type_ == c.type_
                    && o.status == status_of(c)
                    && o.reason == c.reason
                    && o.message == c.message
                    && o.observed_generation == desired.generation
            })
        });
    if same {
        return None;
    }
    let conditions: Vec<Condition> = desired
        .conditions
        .iter()
        .map(|c| {
            let status = status_of(c);
            let previous = observed.conditions.iter().find(|o| o.type_ == c.type_);
            Condition {
                type_: c.type_.to_owned(),
                status: status.to_owned(),
                reason: c.reason.to_owned(),
                message: c.message.clone().into_owned(),
                observed_generation: desired.generation,
                last_transition_time: previous
                    .filter(|p| p.status == status)
                    .map_or_else(|| now.clone(), |p| p.last_transition_time.clone()),
            }
        })
        .collect();
    let mut status = json!({ "conditions": conditions });
    if let Some(g) = desired.generation {
        status["observedGeneration"] = json!(g);
    }
    if let Some(e) = endpoints {
        status["endpoints"] = json!(e);
    }
    Some(status)
}

/// Patches the status subresource of our objects and of Ingresses.
#[derive(Clone)]
pub struct StatusWriter {
    client: kube::Client,
}

impl StatusWriter {
    /// A writer using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// Applies `status` to a Route, Backend or RateLimitPolicy.
    pub async fn write(&self, id: &ObjectRef, status: Value) -> Result<(), kube::Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = json!({
            "apiVersion": api::API_VERSION,
            "kind": id.kind.as_str(),
            "status": status,
        });
        let patch = Patch::Apply(&body);
        let ns = &id.namespace;
        let c = self.client.clone();
        match id.kind {
            Kind::Route => {
                Api::<Route>::namespaced(c, ns)
                    .patch_status(&id.name, &params, &patch)
                    .await?;
            }
            Kind::Backend => {
                Api::<Backend>::namespaced(c, ns)
                    .patch_status(&id.name, &params, &patch)
                    .await?;
            }
            Kind::RateLimitPolicy => {
                Api::<RateLimitPolicy>::namespaced(c, ns)
                    .patch_status(&id.name, &params, &patch)
                    .await?;
            }
            Kind::Service | Kind::Ingress | Kind::Secret | Kind::ConfigMap => {}
        }
        Ok(())
    }

    /// Sets an Ingress's `status.loadBalancer.ingress` to `addresses`.
    pub async fn write_ingress(
        &self,
        id: &ObjectRef,
        addresses: &[LbAddress],
    ) -> Result<(), kube::Error> {
        let list: Vec<Value> = addresses
            .iter()
            .map(|a| {
                let mut v = json!({});
                if let Some(ip) = &a.ip {
                    v["ip"] = json!(ip);
                }
                if let Some(h) = &a.hostname {
                    v["hostname"] = json!(h);
                }
                v
            })
            .collect();
        let body = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "status": { "loadBalancer": { "ingress": list } },
        });
        Api::<Ingress>::namespaced(self.client.clone(), &id.namespace)
            .patch_status(
                &id.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::kube::status::Cond;
    use http::{Request, Response};
    use kube::client::Body;

    fn desired(ok: bool) -> Desired {
        Desired {
            generation: Some(2),
            conditions: vec![Cond {
                type_: "Accepted",
                status: ok,
                reason: if ok { "Accepted" } else { "Invalid" },
                message: "m".into(),
            }],
            backend: None,
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    #[test]
    fn nothing_is_written_when_the_object_already_says_it() {
        let patch = status_patch(&desired(true), None, None, &now()).unwrap();
        let conditions: Vec<Condition> =
            serde_json::from_value(patch["conditions"].clone()).unwrap();
        let observed = Observed {
            generation: Some(2),
            conditions,
            ..Default::default()
        };
        assert_eq!(
            status_patch(&desired(true), Some(&observed), None, &now()),
            None
        );
        // A newer generation, or a flipped condition, is written.
        let newer = Desired {
            generation: Some(3),
            ..desired(true)
        };
        assert!(status_patch(&newer, Some(&observed), None, &now()).is_some());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let flipped = status_patch(&desired(false), Some(&observed), None, &later).unwrap();
        assert_eq!(flipped["conditions"][0]["status"], "False");
        assert_eq!(
            flipped["conditions"][0]["lastTransitionTime"],
            json!(later),
            "a flip moves the transition time"
        );
    }

    #[tokio::test]
    async fn route_status_is_server_side_applied_by_one_field_manager() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(mock, "default");
        let writer = StatusWriter::new(client);
        let id = ObjectRef::new(Kind::Route, "shop", "web");
        let status = status_patch(&desired(false), None, None, &now()).unwrap();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), http::Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/tidegate.dev/v1alpha1/namespaces/shop/routes/web/status"
            );
            let query = req.uri().query().unwrap_or_default().to_owned();
            assert!(query.contains("fieldManager=tidegate"), "{query}");
            assert!(query.contains("force=true"), "{query}");
            assert_eq!(
                req.headers()[http::header::CONTENT_TYPE],
                "application/apply-patch+yaml"
            );
            let body = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["kind"], "Route");
            assert_eq!(body["apiVersion"], "tidegate.dev/v1alpha1");
            assert_eq!(body["status"]["observedGeneration"], 2);
            assert_eq!(body["status"]["conditions"][0]["reason"], "Invalid");
            assert!(body.get("spec").is_none(), "status only: {body}");
            let object = json!({
                "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"rules": []}, "status": body["status"],
            });
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&object).unwrap()))
                    .unwrap(),
            );
        });
        writer.write(&id, status).await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn ingress_load_balancer_status_is_applied() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writer = StatusWriter::new(kube::Client::new(mock, "default"));
        let id = ObjectRef::new(Kind::Ingress, "shop", "web");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(
                req.uri().path(),
                "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status"
            );
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(
                body["status"]["loadBalancer"]["ingress"],
                json!([{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}])
            );
            let object = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "shop"}});
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&object).unwrap()))
                    .unwrap(),
            );
        });
        let addrs = [
            LbAddress {
                ip: Some("10.0.0.1".into()),
                hostname: None,
            },
            LbAddress {
                ip: None,
                hostname: Some("lb.example.com".into()),
            },
        ];
        writer.write_ingress(&id, &addrs).await.unwrap();
        server.await.unwrap();
    }
}
