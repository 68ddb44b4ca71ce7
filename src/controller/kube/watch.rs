//! One watch per kind, feeding the index.
//!
//! Every watch has kube-runtime's default backoff (an unreachable apiserver is retried, never
//! fatal) and decodes through a guard, so one object that cannot be read is reported and
//! skipped instead of ending its stream. A (re)list — at start, or after a 410 Gone — is buffered
//! and applied to the index in one step, so the table never sees a half-listed kind.

// `Result<K, InvalidObject>` is kube's DeserializeGuard payload; objects are as large as its
// error, so boxing the error would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use super::index::{Change, Watched};
use crate::telemetry::metrics::KindLabels;

/// A watched object that may have failed to decode.
pub trait Guarded: Send + 'static {
    /// The object type.
    type Object: Resource;
    /// The object, or why it could not be read (with its metadata).
    fn into_result(self) -> Result<Self::Object, InvalidObject>;
}

impl<K: Resource + Send + 'static> Guarded for DeserializeGuard<K> {
    type Object = K;
    fn into_result(self) -> Result<K, InvalidObject> {
        self.0
    }
}

/// Metadata-only watches (Secrets) always decode.
impl<K: Resource + Send + 'static> Guarded for PartialObjectMeta<K> {
    type Object = PartialObjectMeta<K>;
    fn into_result(self) -> Result<PartialObjectMeta<K>, InvalidObject> {
        Ok(self)
    }
}

/// The metadata of a decoded object or of one that could not be read.
pub fn metadata<K: Resource>(obj: &Result<K, InvalidObject>) -> &ObjectMeta {
    match obj {
        Ok(o) => o.meta(),
        Err(e) => &e.metadata,
    }
}

/// A decoded object, or why it could not be decoded.
pub type Decoded<K> = Result<K, InvalidObject>;
type ApplyFn<K> = Box<dyn Fn(Decoded<K>) -> Change + Send + Sync>;
type DeleteFn = Box<dyn Fn(&ObjectMeta) -> Change + Send + Sync>;
type ResetFn<K> = Box<dyn Fn(Vec<Decoded<K>>) -> Change + Send + Sync>;
/// Told of every change of a kind, and whether it completes the kind's first list.
pub type ChangedFn = Box<dyn Fn(Watched, Change, bool) + Send + Sync>;

/// Where one kind's events go.
pub struct Handlers<K> {
    /// An object was added or changed.
    pub apply: ApplyFn<K>,
    /// An object was deleted.
    pub delete: DeleteFn,
    /// A complete list replaces everything known of the kind (apply atomically).
    pub reset: ResetFn<K>,
    /// Called with the kind's change, and once when its first list is in.
    pub changed: ChangedFn,
    /// Counts events and watch errors (metrics).
    pub observe: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Runs one watch until `stop`.
pub async fn run<G, S>(
    kind: Watched,
    stream: S,
    handlers: Handlers<G::Object>,
    stop: CancellationToken,
) where
    G: Guarded + Debug,
    G::Object: Debug,
    S: futures::Stream<Item = Result<Event<G>, watcher::Error>> + Send,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Vec<Result<G::Object, InvalidObject>> = Vec::new();
    let mut listed_once = false;
    let mut failing = false;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = stream.next() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let event = match event {
            Ok(e) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(?kind, "watch recovered");
                }
                e
            }
            Err(e) => {
                if let Some(t) = &handlers.observe {
                    t.metrics
                        .controller_errors
                        .get_or_create(&KindLabels {
                            kind: kind.as_str(),
                        })
                        .inc();
                }
                // The backoff wrapper retries; the table keeps serving meanwhile.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(?kind, error = %e, "watch failed; retrying with backoff");
                } else {
                    tracing::debug!(?kind, error = %e, "watch still failing");
                }
                continue;
            }
        };
        if let Some(t) = &handlers.observe {
            t.metrics
                .controller_events
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc();
        }
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(obj) => listing.push(report(kind, obj.into_result())),
            Event::InitDone => {
                let change = (handlers.reset)(std::mem::take(&mut listing));
                let first = !std::mem::replace(&mut listed_once, true);
                if first {
                    tracing::info!(?kind, "initial list done");
                }
                (handlers.changed)(kind, change.max(Change::Compile), first);
            }
            Event::Apply(obj) => {
                let change = (handlers.apply)(report(kind, obj.into_result()));
                (handlers.changed)(kind, change, false);
            }
            Event::Delete(obj) => {
                let obj = obj.into_result();
                let change = (handlers.delete)(metadata(&obj));
                (handlers.changed)(kind, change, false);
            }
        }
    }
}

fn report<K: Resource>(kind: Watched, obj: Result<K, InvalidObject>) -> Result<K, InvalidObject> {
    if let Err(e) = &obj {
        tracing::warn!(
            ?kind,
            namespace = e.metadata.namespace.as_deref().unwrap_or(""),
            name = e.metadata.name.as_deref().unwrap_or(""),
            error = %e.error,
            "object cannot be decoded; skipped"
        );
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(name: &str) -> DeserializeGuard<ConfigMap> {
        DeserializeGuard(Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }))
    }

    /// A relist (after a 410 Gone, say) is buffered and handed over whole: the objects known
    /// before are never dropped while the list is in progress.
    #[tokio::test]
    async fn a_relist_replaces_the_kind_in_one_step() {
        let calls = Arc::new(Mutex::new(Vec::<String>::new()));
        let (a, d, r) = (calls.clone(), calls.clone(), calls.clone());
        let handlers = Handlers::<ConfigMap> {
            apply: Box::new(move |o| {
                a.lock()
                    .unwrap()
                    .push(format!("apply {}", metadata(&o).name.clone().unwrap()));
                Change::Compile
            }),
            delete: Box::new(move |m| {
                d.lock()
                    .unwrap()
                    .push(format!("delete {}", m.name.clone().unwrap()));
                Change::Compile
            }),
            reset: Box::new(move |objs| {
                let names: Vec<String> = objs
                    .iter()
                    .map(|o| metadata(o).name.clone().unwrap())
                    .collect();
                r.lock().unwrap().push(format!("reset {}", names.join(",")));
                Change::Compile
            }),
            changed: Box::new(|_, _, _| {}),
            observe: None,
        };
        let events: Vec<Result<Event<DeserializeGuard<ConfigMap>>, watcher::Error>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("b"))),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a"))),
            Ok(Event::InitApply(cm("c"))),
            Ok(Event::InitDone),
            Ok(Event::Delete(cm("a"))),
        ];
        run(
            Watched::Route,
            futures::stream::iter(events),
            handlers,
            CancellationToken::new(),
        )
        .await;
        assert_eq!(
            *calls.lock().unwrap(),
            ["reset a", "apply b", "reset a,c", "delete a"]
        );
    }
}
