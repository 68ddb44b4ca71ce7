//! One watch per kind, feeding the index.
//!
//! Every watch retries with [`WatchBackoff`] (an unreachable apiserver is retried, never fatal:
//! bounded and jittered, so a returning apiserver is noticed within seconds and replicas do not
//! retry in step) and decodes through a guard, so one object that cannot be read is reported and
//! skipped instead of ending its stream. A resumed watch picks up at its last resource version;
//! a (re)list — at start, or after a 410 Gone — is buffered and applied to the index in one step,
//! so the table never sees a half-listed kind and nothing known is dropped meanwhile.
//!
//! While a watch fails, the kind counts as failing in [`crate::telemetry::SourceHealth`] (the
//! `Synced` condition of `/config`, the stale-since gauge). It is current again at its next
//! event, or — a resumed watch may have nothing to say — when a probe (a one-item list) succeeds
//! after the watch has had time to retry.

// `Result<K, InvalidObject>` is kube's DeserializeGuard payload; objects are as large as its
// error, so boxing the error would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;
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
/// A cheap request that succeeds when the kind's API answers again (a one-item list).
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The shortest retry delay of a failing watch.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest: a returning apiserver is seen at most this long after it answers again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// How long after its last error a failing watch is probed (it has retried by then).
const PROBE_AFTER: Duration = Duration::from_millis(3500);
/// Probes of a failing kind are this far apart.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe that takes longer has failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Retry delays of a failing watch: 250 ms doubling to 3 s, each drawn uniformly from the upper
/// half of its step ([d/2, d]), so replicas that lost the apiserver together spread their
/// retries instead of arriving in one burst. Reset by every event the watch delivers.
///
/// An expired watch (410 Gone: its resource version is older than the apiserver keeps, as after
/// an apiserver restart) is not a failure: the relist follows within [0, 250 ms], whatever the
/// step, rather than after a delay grown during an outage.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    step: u32,
    expired: Arc<AtomicBool>,
}

impl WatchBackoff {
    /// Set when the watch expired: the next delay is short.
    pub fn expired_flag(&self) -> Arc<AtomicBool> {
        self.expired.clone()
    }
}

/// Whether a watch error says its resource version is too old (410 Gone).
pub fn is_expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.expired.swap(false, Ordering::Relaxed) {
            let spread = BACKOFF_MIN.as_millis() as u64;
            return Some(Duration::from_millis(fastrand::u64(0..=spread)));
        }
        let cap = BACKOFF_MIN
            .saturating_mul(1 << self.step.min(16))
            .min(BACKOFF_MAX);
        self.step = self.step.saturating_add(1);
        let half = cap / 2;
        let spread = half.as_millis() as u64;
        Some(half + Duration::from_millis(fastrand::u64(0..=spread)))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.step = 0;
    }
}

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
    /// Counts events and watch errors (metrics), and keeps the kind's source health.
    pub observe: Option<Arc<crate::telemetry::Telemetry>>,
    /// Tells whether the kind's API answers again, while the watch fails.
    pub probe: Option<Probe>,
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
    let backoff = WatchBackoff::default();
    let expired = backoff.expired_flag();
    let stream = stream
        .inspect(move |e| {
            if e.as_ref().err().is_some_and(is_expired) {
                expired.store(true, Ordering::Relaxed);
            }
        })
        .backoff(backoff);
    futures::pin_mut!(stream);
    let mut listing: Vec<Result<G::Object, InvalidObject>> = Vec::new();
    let mut listed_once = false;
    let mut failing = false;
    // While failing: when the next probe is due.
    let mut probe_at: Option<Instant> = None;
    loop {
        let probe_due = async {
            match probe_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            () = stop.cancelled() => return,
            () = probe_due => {
                // A probe may already have found the kind current again.
                failing = handlers
                    .observe
                    .as_ref()
                    .is_some_and(|t| t.sources.is_failing(kind.as_str()));
                probe_at = failing.then(|| Instant::now() + PROBE_EVERY);
                if failing {
                    spawn_probe(kind, &handlers);
                }
                continue;
            }
            e = stream.next() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let event = match event {
            Ok(e) => {
                probe_at = None;
                let was_failing = std::mem::take(&mut failing);
                let recorded = handlers
                    .observe
                    .as_ref()
                    .is_some_and(|t| t.sources.recovered(kind.as_str()));
                if was_failing && recorded {
                    tracing::info!(?kind, "watch recovered");
                }
                e
            }
            // Expired: the watcher relists at once (the list is buffered, nothing is dropped).
            Err(e) if is_expired(&e) => {
                tracing::info!(?kind, error = %e, "watch expired; relisting");
                continue;
            }
            Err(e) => {
                if let Some(t) = &handlers.observe {
                    t.metrics
                        .controller_errors
                        .get_or_create(&KindLabels {
                            kind: kind.as_str(),
                        })
                        .inc();
                    t.sources.failed(kind.as_str(), &e.to_string());
                }
                probe_at = Some(Instant::now() + PROBE_AFTER);
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

/// Probes a failing kind in the background (the watch keeps being polled meanwhile); success
/// marks the kind current again.
fn spawn_probe<K>(kind: Watched, handlers: &Handlers<K>) {
    let (Some(probe), Some(t)) = (handlers.probe.clone(), handlers.observe.clone()) else {
        return;
    };
    tokio::spawn(async move {
        match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => {
                if t.sources.recovered(kind.as_str()) {
                    tracing::info!(?kind, "watch recovered (the API answers again)");
                }
            }
            Ok(Err(e)) => tracing::debug!(?kind, error = %e, "probe failed"),
            Err(_) => tracing::debug!(?kind, "probe timed out"),
        }
    });
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
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::ConfigMap;

    use crate::telemetry::{AccessLogConfig, AccessLogFormat, Telemetry};

    #[test]
    fn backoff_is_bounded_jittered_and_reset() {
        let mut b = WatchBackoff::default();
        let caps = [250, 500, 1000, 2000, 3000, 3000, 3000];
        for _round in 0..50 {
            b.reset();
            for cap in caps {
                let d = b.next().unwrap().as_millis() as u64;
                assert!(
                    (cap / 2..=cap).contains(&d),
                    "{d} ms for a step of {cap} ms"
                );
            }
        }
        // An expiry (410) relists at once, however long the outage grew the delay.
        let flag = b.expired_flag();
        flag.store(true, Ordering::Relaxed);
        assert!(b.next().unwrap() <= BACKOFF_MIN);
        assert!(b.next().unwrap() >= BACKOFF_MAX / 2);
        let gone = watcher::Error::WatchError(Box::new(kube::core::Status {
            code: 410,
            ..Default::default()
        }));
        assert!(is_expired(&gone));
        assert!(!is_expired(&watcher::Error::NoResourceVersion));
        // Spread: replicas that fail together do not all wait the same.
        let firsts: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| WatchBackoff::default().nth(4).unwrap().as_millis())
            .collect();
        assert!(firsts.len() > 10, "{firsts:?}");
    }

    fn telemetry() -> Arc<Telemetry> {
        let off = AccessLogConfig {
            format: AccessLogFormat::Off,
            ..AccessLogConfig::default()
        };
        Arc::new(Telemetry::with_output(&off, Box::new(std::io::sink())))
    }

    fn quiet_handlers(t: &Arc<Telemetry>, probe: Option<Probe>) -> Handlers<ConfigMap> {
        Handlers {
            apply: Box::new(|_| Change::Compile),
            delete: Box::new(|_| Change::Compile),
            reset: Box::new(|_| Change::Compile),
            changed: Box::new(|_, _, _| {}),
            observe: Some(t.clone()),
            probe,
        }
    }

    /// A resumed watch says nothing until something changes: the probe tells that its API
    /// answers again, so the kind is current again without waiting for an event.
    #[tokio::test(start_paused = true)]
    async fn a_failing_watch_is_current_again_when_its_probe_succeeds() {
        let t = telemetry();
        let answers = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicUsize::new(0));
        let probe: Probe = {
            let (answers, probes) = (answers.clone(), probes.clone());
            Arc::new(move || {
                probes.fetch_add(1, Ordering::SeqCst);
                let ok = answers.load(Ordering::SeqCst);
                Box::pin(async move { if ok { Ok(()) } else { Err("refused".into()) } })
            })
        };
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let stop = CancellationToken::new();
        tokio::spawn(run::<DeserializeGuard<ConfigMap>, _>(
            Watched::Route,
            rx,
            quiet_handlers(&t, Some(probe)),
            stop.clone(),
        ));
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!t.sources.is_failing("route"));

        // The apiserver goes away: the kind fails, probes (after the watch had time to retry)
        // fail too, and the kind stays failing.
        tx.unbounded_send(Err(watcher::Error::NoResourceVersion))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(t.sources.is_failing("route"));
        assert!(t.metrics.config_stale_since.get() > 0.0);
        tokio::time::sleep(PROBE_AFTER).await;
        assert_eq!(probes.load(Ordering::SeqCst), 1);
        tokio::time::sleep(PROBE_EVERY * 3).await;
        assert!(probes.load(Ordering::SeqCst) >= 3);
        assert!(t.sources.is_failing("route"));

        // It answers again (the resumed watch has nothing to say): the next probe clears it,
        // and probing stops.
        answers.store(true, Ordering::SeqCst);
        tokio::time::sleep(PROBE_EVERY + Duration::from_millis(10)).await;
        assert!(!t.sources.is_failing("route"));
        assert_eq!(t.metrics.config_stale_since.get(), 0.0);
        let after = probes.load(Ordering::SeqCst);
        tokio::time::sleep(PROBE_EVERY * 5).await;
        assert_eq!(probes.load(Ordering::SeqCst), after);

        // Failing again, then an event: current at once, without a probe.
        answers.store(false, Ordering::SeqCst);
        tx.unbounded_send(Err(watcher::Error::NoResourceVersion))
            .unwrap();
        tokio::time::sleep(BACKOFF_MAX).await;
        assert!(t.sources.is_failing("route"));
        tx.unbounded_send(Ok(Event::Apply(cm("a")))).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!t.sources.is_failing("route"));
        stop.cancel();
    }

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
            probe: None,
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
