//! Warning Events for rejected objects, unresolved references, and warnings on objects that
//! have no conditions (ignored canary annotations on Services, unknown annotations on Ingresses).
//!
//! Each object's findings are published when they change, not on every compile, so an object
//! that stays broken does not flood its Events.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::model::{Diagnostic, Kind, ObjectRef, Severity};

/// Longest Event note (the API's limit is 1 kB).
const MAX_NOTE: usize = 1000;

/// Publishes Warning Events, remembering what each object was last told.
pub struct Events {
    recorder: Recorder,
    told: BTreeMap<ObjectRef, BTreeSet<String>>,
}

/// Whether a finding deserves an Event: every rejection, every reference that does not resolve
/// (its traffic gets 500 or 503), and warnings on Services and Ingresses (ignored canary
/// annotations, unknown ingress-nginx annotations: objects without conditions, where a warning
/// has no other place to be seen in a cluster).
fn eventful(d: &Diagnostic) -> bool {
    d.is_error()
        || d.is_unresolved_ref()
        || (d.severity == Severity::Warning
            && d.object
                .as_ref()
                .is_some_and(|o| matches!(o.kind, Kind::Service | Kind::Ingress)))
}

impl Events {
    /// A publisher reporting as `controller`, instance `identity`.
    pub fn new(client: kube::Client, controller: &str, identity: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            told: BTreeMap::new(),
        }
    }

    /// Publishes the findings of objects whose findings changed. `uid` gives an object's uid.
    pub async fn publish(
        &mut self,
        diagnostics: &[Diagnostic],
        uid: impl Fn(&ObjectRef) -> Option<String>,
    ) {
        let mut now: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
        for d in diagnostics.iter().filter(|d| eventful(d)) {
            if let Some(o) = &d.object {
                now.entry(o).or_default().push(d);
            }
        }
        self.told.retain(|id, _| now.contains_key(id));
        for (id, diags) in now {
            let lines: BTreeSet<String> = diags
                .iter()
                .map(|d| {
                    if d.field.is_empty() {
                        d.message.clone()
                    } else {
                        format!("{}: {}", d.field, d.message)
                    }
                })
                .collect();
            if self.told.get(id) == Some(&lines) {
                continue;
            }
            let mut note = lines.iter().cloned().collect::<Vec<_>>().join("; ");
            if note.len() > MAX_NOTE {
                let mut cut = MAX_NOTE;
                while !note.is_char_boundary(cut) {
                    cut -= 1;
                }
                note.truncate(cut);
                note.push('…');
            }
            let reason = diags[0].reason.as_str();
            let (api_version, kind) = match id.kind {
                Kind::Route | Kind::Backend | Kind::RateLimitPolicy => {
                    (crate::api::API_VERSION, id.kind.as_str())
                }
                Kind::Service => ("v1", "Service"),
                Kind::Secret => ("v1", "Secret"),
                Kind::ConfigMap => ("v1", "ConfigMap"),
                Kind::Ingress => ("networking.k8s.io/v1", "Ingress"),
            };
            let reference = ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                name: Some(id.name.to_string()),
                namespace: Some(id.namespace.to_string()),
                uid: uid(id),
                ..ObjectReference::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note),
                action: "Compile".into(),
                secondary: None,
            };
            match self.recorder.publish(&event, &reference).await {
                Ok(()) => {
                    self.told.insert(id.clone(), lines);
                }
                Err(e) => {
                    tracing::warn!(object = %id, error = %e, "cannot publish a Warning Event")
                }
            }
        }
    }

    /// Forgets what was told, so a new leader (or this one, again) tells it afresh.
    pub fn forget(&mut self) {
        self.told.clear();
    }
}
