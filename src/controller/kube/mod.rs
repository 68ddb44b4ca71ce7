//! Kubernetes mode: watch the cluster, index what is seen, compile, publish, report status.
//!
//! ```text
//!  watchers (one per kind) ──► Index (sync apply/delete/reset) ──► compile (debounced) ──► publish
//!  EndpointSlice watcher  ──► EndpointIndex ──► Discovery store (read by the proxy; no recompile)
//!  leader only:  desired status vs. observed ──► SSA status patches, Warning Events, Ingress LB
//! ```

// kube's DeserializeGuard hands over `Result<K, InvalidObject>`; see watch.rs.
#![allow(clippy::result_large_err)]

pub mod endpoints;
mod error;
mod events;
pub mod index;
pub mod leader;
pub mod referenced;
pub mod status;
mod watch;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch as tokio_watch};
use tokio_util::sync::CancellationToken;

pub use error::KubeError;

use self::endpoints::{EndpointIndex, EndpointSlice};
use self::index::{Change, Custom, Index, LbAddress, Watched};
use self::leader::LeaseConfig;
use self::status::Desired;
use self::status::writer::StatusWriter;
use super::compile::CompileOptions;
use super::pace::{Pace, off_the_workers};
use super::publish::{Publish, Publisher};
use super::snapshot::Accepted;
use crate::api::{Backend, RateLimitPolicy, Route};
use crate::controller::dns::DnsStatuses;
use crate::controller::file;
use crate::model::{EndpointSink, Kind, ObjectRef, RoutingTable};
use crate::telemetry::Telemetry;

/// How Kubernetes mode runs.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Watch only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// Campaign for the Lease; without it this replica always writes status.
    pub leader_elect: bool,
    /// The Lease (its namespace is the controller's own).
    pub lease: LeaseConfig,
    /// `namespace/name` of the Service whose load balancer addresses go to Ingress status.
    pub publish_service: Option<ObjectRef>,
    /// Addresses (IPs or host names) written to Ingress status.
    pub publish_addresses: Vec<String>,
    /// Quiet time before a recompile (changes within it are coalesced).
    pub debounce: Duration,
}

/// What the last compile produced, for the status writer.
struct Published {
    table: Arc<RoutingTable>,
    desired: std::collections::BTreeMap<ObjectRef, Desired>,
}

/// State shared by the watch tasks and the loops.
struct Shared {
    telemetry: Arc<Telemetry>,
    index: Mutex<Index>,
    endpoints: Mutex<EndpointIndex>,
    /// Rung when the compiler's input changed.
    compile: Notify,
    /// The kinds whose changes the next compile answers (logged with it).
    dirty: Mutex<BTreeSet<Watched>>,
    /// Rung when status may need writing.
    status: Notify,
    /// Where the DNS queries of Backends with `spec.dns` stand (their `DNSResolved` condition).
    dns: Arc<DnsStatuses>,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn endpoints(&self) -> MutexGuard<'_, EndpointIndex> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn changed(&self, kind: Watched, change: Change, first_list: bool) {
        if first_list {
            self.index().mark_synced(kind);
        }
        match change {
            Change::None => {}
            Change::Status => self.status.notify_one(),
            Change::Compile => {
                self.dirty
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(kind);
                self.compile.notify_one();
            }
        }
    }
}

/// Loads the client configuration: in-cluster when run in a pod, else `KUBECONFIG` or
/// `~/.kube/config`.
pub async fn client() -> Result<kube::Client, KubeError> {
    let mut config = kube::Config::infer().await.map_err(KubeError::Config)?;
    // A watch retry against an address that drops packets waits this long (kube's default is
    // 30 s); an apiserver is a few milliseconds away.
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    // kube's own retry of 503/429 honours `Retry-After`, which a starting apiserver sets to
    // 10 s: watches (bounded backoff), the status loop and the elector retry on their own.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(KubeError::Client)
}

/// Limit of one TCP connect to the apiserver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A probe of a watched kind's API: a one-item metadata list.
fn probe<K>(api: &Api<K>) -> watch::Probe
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let api = api.clone();
    Arc::new(move || {
        let api = api.clone();
        Box::pin(async move {
            api.list_metadata(&kube::api::ListParams::default().limit(1))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

/// Starts the watches, the compile loop, the elector and the status writer. Returns at once:
/// the table is published when every kind has been listed (`/readyz` turns 200 then). Each
/// message on `reload` (SIGHUP) recompiles and republishes from what the watches hold.
#[allow(clippy::too_many_arguments)]
pub fn start(
    client: kube::Client,
    opts: KubeOptions,
    compile_opts: CompileOptions,
    discovery: Arc<dyn EndpointSink>,
    dns: Arc<DnsStatuses>,
    publish: Publish,
    telemetry: Arc<Telemetry>,
    mut reload: tokio::sync::mpsc::Receiver<crate::controller::pace::Change>,
    file_watch: Option<crate::controller::files::FileWatch>,
    stop: CancellationToken,
) {
    let mut dns_changes = dns.subscribe();
    let shared = Arc::new(Shared {
        telemetry,
        index: Mutex::new({
            let mut idx = Index::new(opts.publish_service.clone());
            if let Some(super::compile::DefaultCertificate::Secret { namespace, name }) =
                &compile_opts.default_certificate
            {
                idx.pin_secret(namespace, name);
            }
            idx
        }),
        endpoints: Mutex::new(EndpointIndex::new(discovery)),
        compile: Notify::new(),
        dirty: Mutex::default(),
        status: Notify::new(),
        dns,
    });
    let ns = opts.namespace.clone();
    // A DNS query's standing changed: its Backends' condition may need writing.
    let dns_status = shared.clone();
    tokio::spawn(async move {
        while dns_changes.changed().await.is_ok() {
            dns_status.status.notify_one();
        }
    });

    spawn_custom::<Route>(&client, ns.as_deref(), &shared, &stop);
    spawn_custom::<Backend>(&client, ns.as_deref(), &shared, &stop);
    spawn_custom::<RateLimitPolicy>(&client, ns.as_deref(), &shared, &stop);
    spawn_services(&client, ns.as_deref(), &shared, &stop);
    spawn_ingresses(&client, ns.as_deref(), &shared, &stop);
    spawn_ingress_classes(&client, &shared, &stop);
    spawn_by_reference::<Secret>(
        &client,
        ns.as_deref(),
        &shared,
        &stop,
        Watched::Secret,
        Index::secret_seen,
        Index::delete_secret,
    );
    spawn_by_reference::<ConfigMap>(
        &client,
        ns.as_deref(),
        &shared,
        &stop,
        Watched::ConfigMap,
        Index::config_map_seen,
        Index::delete_config_map,
    );
    tokio::spawn(endpoint_slices(
        client.clone(),
        ns.clone(),
        shared.clone(),
        stop.clone(),
    ));

    let (leader_tx, leader_rx) = tokio_watch::channel(!opts.leader_elect);
    if opts.leader_elect {
        tokio::spawn(leader::run(
            client.clone(),
            opts.lease.clone(),
            leader_tx,
            stop.clone(),
        ));
    }
    let recompile = shared.clone();
    tokio::spawn(async move {
        let debounce = opts.debounce;
        while let Some(change) = reload.recv().await {
            // A file being written (a certificate) is read once its writer closes it, or after
            // the debounce.
            if change == crate::controller::pace::Change::Partial {
                let later = recompile.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(debounce).await;
                    later.compile.notify_one();
                });
            } else {
                recompile.compile.notify_one();
            }
        }
    });
    let (published_tx, published_rx) = tokio_watch::channel(None);
    let watched_classes = compile_opts.watch_ingress_classes.clone();
    tokio::spawn(compile_loop(
        shared.clone(),
        client.clone(),
        compile_opts,
        publish,
        published_tx,
        opts.debounce,
        file_watch,
        stop.clone(),
    ));
    tokio::spawn(status_loop(
        shared,
        client,
        opts,
        watched_classes,
        published_rx,
        leader_rx,
        stop,
    ));
}

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn changed_fn(shared: &Arc<Shared>) -> watch::ChangedFn {
    let s = shared.clone();
    Box::new(move |kind, c, first| s.changed(kind, c, first))
}

/// Index handlers for a kind: `apply`/`delete` per event, `reset` under one lock.
fn index_handlers<K: Send + 'static>(
    shared: &Arc<Shared>,
    kind: Watched,
    apply: fn(&mut Index, Result<K, InvalidObject>) -> Change,
    delete: fn(&mut Index, &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Change,
    probe: watch::Probe,
) -> watch::Handlers<K> {
    let (a, d, r) = (shared.clone(), shared.clone(), shared.clone());
    watch::Handlers {
        apply: Box::new(move |o| apply(&mut a.index(), o)),
        delete: Box::new(move |m| delete(&mut d.index(), m)),
        reset: Box::new(move |objs| {
            let mut idx = r.index();
            idx.clear(kind);
            for o in objs {
                apply(&mut idx, o);
            }
            Change::Compile
        }),
        changed: changed_fn(shared),
        observe: Some(shared.telemetry.clone()),
        probe: Some(probe),
    }
}

/// Lists are served from the apiserver's watch cache (`resourceVersion=0`, as client-go's
/// informers list), not read through from etcd page by page: at 10,000 Routes the paged
/// consistent read cost the apiserver several times the CPU of one list from its cache. The
/// cache may be a moment behind etcd; the watch that follows resumes from the list's version,
/// so whatever the list missed arrives as watch events. Without a page size: kube sends no
/// `resourceVersion=0` with a `limit` (and the cache ignores `limit` anyway).
fn watch_config() -> watcher::Config {
    let mut config = watcher::Config::default().any_semantic();
    config.page_size = None;
    config
}

fn spawn_custom<K>(
    client: &kube::Client,
    ns: Option<&str>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) where
    K: Custom
        + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = api::<DeserializeGuard<K>>(client, ns);
    let handlers = index_handlers::<K>(
        shared,
        K::WATCHED,
        |idx, o| idx.apply_custom::<K>(o),
        |idx, m| idx.delete_custom::<K>(m),
        probe(&api),
    );
    // The index reads the identity, generation, creation time, uid, spec and status of our
    // kinds: managedFields and annotations (kubectl's last-applied-configuration is a second
    // copy of the spec) are dropped as each object arrives, before a list is buffered whole.
    let stream = watcher(api, watch_config()).map_ok(|e| {
        e.modify(|g| {
            if let Ok(o) = &mut g.0 {
                let meta = o.meta_mut();
                meta.managed_fields = None;
                meta.annotations = None;
            }
        })
    });
    tokio::spawn(watch::run(K::WATCHED, stream, handlers, stop.clone()));
}

fn spawn_services(
    client: &kube::Client,
    ns: Option<&str>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) {
    let api = api::<DeserializeGuard<Service>>(client, ns);
    let handlers = index_handlers::<Service>(
        shared,
        Watched::Service,
        |idx, o| match o {
            Ok(s) => idx.apply_service(&s),
            Err(_) => Change::None,
        },
        |idx, m| idx.delete_service(m),
        probe(&api),
    );
    let stream = watcher(api, watch_config());
    tokio::spawn(watch::run(Watched::Service, stream, handlers, stop.clone()));
}

fn spawn_ingresses(
    client: &kube::Client,
    ns: Option<&str>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) {
    let api = api::<DeserializeGuard<Ingress>>(client, ns);
    let handlers = index_handlers::<Ingress>(
        shared,
        Watched::Ingress,
        |idx, o| match o {
            Ok(i) => idx.apply_ingress(&i),
            Err(_) => Change::None,
        },
        |idx, m| idx.delete_ingress(m),
        probe(&api),
    );
    let stream = watcher(api, watch_config());
    tokio::spawn(watch::run(Watched::Ingress, stream, handlers, stop.clone()));
}

fn spawn_ingress_classes(client: &kube::Client, shared: &Arc<Shared>, stop: &CancellationToken) {
    let api: Api<DeserializeGuard<IngressClass>> = Api::all(client.clone());
    let handlers = index_handlers::<IngressClass>(
        shared,
        Watched::IngressClass,
        |idx, o| match o {
            Ok(c) => idx.apply_ingress_class(&c),
            Err(_) => Change::None,
        },
        |idx, m| idx.delete_ingress_class(m),
        probe(&api),
    );
    let stream = watcher(api, watch_config());
    tokio::spawn(watch::run(
        Watched::IngressClass,
        stream,
        handlers,
        stop.clone(),
    ));
}

/// Secrets and ConfigMaps are watched by metadata only (every type: a CA bundle, htpasswd or
/// a JWKS sits in any Secret); the compile loop reads the data of the referenced ones (see
/// referenced.rs), so the cluster's other Secrets are never held.
fn spawn_by_reference<K>(
    client: &kube::Client,
    ns: Option<&str>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    kind: Watched,
    seen: fn(&mut Index, &ObjectMeta) -> Change,
    delete: fn(&mut Index, &ObjectMeta) -> Change,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    // `Api<PartialObjectMeta<K>>` lists and watches metadata only.
    let api = api::<PartialObjectMeta<K>>(client, ns);
    let (a, d, r) = (shared.clone(), shared.clone(), shared.clone());
    let handlers = watch::Handlers::<PartialObjectMeta<K>> {
        apply: Box::new(move |o| match o {
            Ok(m) => seen(&mut a.index(), &m.metadata),
            Err(_) => Change::None,
        }),
        delete: Box::new(move |m| delete(&mut d.index(), m)),
        reset: Box::new(move |objs| {
            let mut idx = r.index();
            idx.clear(kind);
            for m in objs.into_iter().flatten() {
                seen(&mut idx, &m.metadata);
            }
            Change::Compile
        }),
        changed: changed_fn(shared),
        observe: Some(shared.telemetry.clone()),
        probe: Some(probe(&api)),
    };
    // Only the identity and version are kept: annotations can be large, and kubectl's
    // last-applied-configuration annotation of a Secret carries its data.
    let stream = watcher(api, watch_config()).map_ok(|e| {
        e.modify(|m| {
            let meta = std::mem::take(&mut m.metadata);
            m.metadata = ObjectMeta {
                namespace: meta.namespace,
                name: meta.name,
                resource_version: meta.resource_version,
                ..ObjectMeta::default()
            };
        })
    });
    tokio::spawn(watch::run(kind, stream, handlers, stop.clone()));
}

/// How many referenced Secrets and ConfigMaps are read at once.
const READS_IN_FLIGHT: usize = 8;

/// Reads the data of the Secrets and ConfigMaps the indexed objects reference and that is not
/// held at their current version, and drops what is no longer referenced. `false` when a read
/// failed (what was held before keeps serving; the caller retries).
async fn read_referenced(client: &kube::Client, shared: &Shared, accepted: &Accepted) -> bool {
    let (secrets, config_maps) = shared.index().plan_reads(accepted);
    if secrets.is_empty() && config_maps.is_empty() {
        return true;
    }
    let version = |m: &ObjectMeta| m.resource_version.clone().unwrap_or_default();
    let (secret_reads, map_reads) = futures::join!(
        get_all::<Secret>(client, secrets),
        get_all::<ConfigMap>(client, config_maps)
    );
    let mut idx = shared.index();
    let mut ok = true;
    for (key, got) in secret_reads {
        let got = got.map(|s| s.map(|s| (version(&s.metadata), file::secret_info(&s))));
        ok &= stored(key, got, "Secret", |k, v, i| idx.store_secret(k, v, i));
    }
    for (key, got) in map_reads {
        let got = got.map(|m| m.map(|m| (version(&m.metadata), file::config_map_info(&m))));
        ok &= stored(key, got, "ConfigMap", |k, v, i| {
            idx.store_config_map(k, v, i)
        });
    }
    ok
}

/// GETs the objects `keys` names, [`READS_IN_FLIGHT`] at a time.
async fn get_all<K>(
    client: &kube::Client,
    keys: Vec<(String, String)>,
) -> Vec<((String, String), kube::Result<Option<K>>)>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    futures::stream::iter(keys)
        .map(|key| async move {
            let api: Api<K> = Api::namespaced(client.clone(), &key.0);
            let got = api.get_opt(&key.1).await;
            (key, got)
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .collect()
        .await
}

/// Stores what one read got (its version and reduced contents; `None`: it does not exist);
/// `false` when the read failed (what was held before stays).
fn stored<T>(
    key: (String, String),
    got: kube::Result<Option<(String, T)>>,
    kind: &str,
    store: impl FnOnce((String, String), String, Option<T>),
) -> bool {
    match got {
        Ok(Some((version, info))) => store(key, version, Some(info)),
        Ok(None) => store(key, String::new(), None),
        Err(e) => {
            tracing::warn!(object = %format!("{kind} {}/{}", key.0, key.1), error = %e, "cannot read a referenced object; will retry");
            return false;
        }
    }
    true
}

/// Which EndpointSlice version the apiserver serves: `v1`, else `v1beta1` (Kubernetes ≤ 1.20).
/// Retries until the apiserver answers, as watches do.
async fn endpoint_slice_version(
    client: &kube::Client,
    stop: &CancellationToken,
) -> Option<&'static str> {
    let mut delays = watch::WatchBackoff::default();
    loop {
        match client.list_api_groups().await {
            Ok(groups) => {
                let versions: BTreeSet<String> = groups
                    .groups
                    .iter()
                    .filter(|g| g.name == "discovery.k8s.io")
                    .flat_map(|g| g.versions.iter().map(|v| v.version.clone()))
                    .collect();
                if versions.contains("v1") {
                    return Some("v1");
                }
                if versions.contains("v1beta1") {
                    return Some("v1beta1");
                }
                tracing::warn!(
                    "the apiserver serves no EndpointSlices (discovery.k8s.io); Services get no endpoints"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list API groups; retrying");
            }
        }
        let delay = delays.next().unwrap_or(watch::BACKOFF_MAX);
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn endpoint_slices(
    client: kube::Client,
    ns: Option<String>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Some(version) = endpoint_slice_version(&client, &stop).await else {
        // Nothing to wait for: count the kind as listed so the table can be published.
        shared.changed(Watched::EndpointSlice, Change::Compile, true);
        return;
    };
    tracing::info!(version, "watching EndpointSlices");
    let ar = endpoints::api_resource(version);
    let api: Api<DeserializeGuard<EndpointSlice>> = match ns.as_deref() {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let endpoints_probe = probe(&api);
    let stream = watcher(api, watch_config());
    let (a, d, r) = (shared.clone(), shared.clone(), shared.clone());
    let handlers = watch::Handlers::<EndpointSlice> {
        apply: Box::new(move |o| match o {
            Ok(s) if a.endpoints().apply(&s) => Change::Status,
            _ => Change::None,
        }),
        delete: Box::new(move |m| {
            let ns = m.namespace.as_deref().unwrap_or_default();
            let name = m.name.as_deref().unwrap_or_default();
            if d.endpoints().delete(ns, name) {
                Change::Status
            } else {
                Change::None
            }
        }),
        reset: Box::new(move |objs| {
            let slices: Vec<EndpointSlice> = objs.into_iter().filter_map(Result::ok).collect();
            r.endpoints().reset(&slices);
            Change::Status
        }),
        changed: {
            let s = shared.clone();
            // Endpoint churn never recompiles; the first list still gates readiness.
            Box::new(move |kind, c, first| {
                if first {
                    s.changed(kind, Change::Compile, true);
                }
                if c != Change::None {
                    s.status.notify_one();
                }
            })
        },
        observe: Some(shared.telemetry.clone()),
        probe: Some(endpoints_probe),
    };
    watch::run(Watched::EndpointSlice, stream, handlers, stop).await;
}

/// Recompiles when the index changes, once every kind is listed: at once after a quiet period,
/// at most once per `debounce` during a burst ([`Pace`]).
#[allow(clippy::too_many_arguments)]
async fn compile_loop(
    shared: Arc<Shared>,
    client: kube::Client,
    opts: CompileOptions,
    publish: Publish,
    published: tokio_watch::Sender<Option<Arc<Published>>>,
    debounce: Duration,
    mut file_watch: Option<crate::controller::files::FileWatch>,
    stop: CancellationToken,
) {
    let mut accepted = Accepted::default();
    let mut publisher = Publisher::new(publish, shared.telemetry.clone());
    let mut waiting_logged = false;
    let mut pace = Pace::new(debounce);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.compile.notified() => {}
        }
        // The first change after a quiet period compiles at once; changes within `debounce` of
        // the last compile wait for the end of that window and compile together, so a burst of
        // N applies costs one compile per window, not N.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(pace.next()) => {}
        }
        if !shared.index().synced() {
            if !waiting_logged {
                tracing::info!(pending = ?shared.index().pending(), "waiting for the initial list of every kind");
                waiting_logged = true;
            }
            continue;
        }
        if !read_referenced(&client, &shared, &accepted).await {
            let retry = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                retry.compile.notify_one();
            });
        }
        // Changes noticed until now are in the snapshot about to be taken: their wake-up is
        // spent here, not on a second compile of the same index.
        let _ = shared.compile.notified().now_or_never();
        let snap = {
            let idx = shared.index();
            if !idx.synced() {
                if !waiting_logged {
                    tracing::info!(pending = ?idx.pending(), "waiting for the initial list of every kind");
                    waiting_logged = true;
                }
                continue;
            }
            // Moved, not cloned: a deep copy of every accepted object per compile.
            idx.snapshot(std::mem::take(&mut accepted))
        };
        let mut snap = snap;
        let files = crate::controller::files::fill(&opts, &mut snap);
        if let Some(w) = &mut file_watch {
            w.follow(&files);
        }
        let triggered_by: Vec<Watched> =
            std::mem::take(&mut *shared.dirty.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        let started = std::time::Instant::now();
        let trigger = format!("{triggered_by:?}");
        let (compiled, published_table) = off_the_workers(|| {
            let compiled = publisher.compile(&snap, &opts);
            let table = publisher.publish(compiled.table, started, &trigger);
            (compiled.accepted, table)
        });
        pace.applied();
        let Ok(table) = published_table else {
            accepted = std::mem::take(&mut snap.accepted);
            continue;
        };
        // Worked out once the table serves: status follows traffic, never delays it. What the
        // last compile left (its status, its snapshot's accepted versions) is dropped here too.
        off_the_workers(|| {
            let desired = status::desired_of(&snap, &table, &compiled);
            accepted = compiled;
            drop(published.send_replace(Some(Arc::new(Published { table, desired }))));
            drop(snap);
        });
        shared.status.notify_one();
    }
}

/// The status patch `id` needs (`None`: what it carries already says `d`).
fn status_patch(
    shared: &Shared,
    id: &ObjectRef,
    d: &Desired,
    now: &Time,
) -> Option<serde_json::Value> {
    let dns = d.dns().and_then(|q| shared.dns.get(q));
    let with_dns;
    let d = match &dns {
        Some(standing) => {
            with_dns = status::with_dns(d, standing);
            &with_dns
        }
        None => d,
    };
    let idx = shared.index();
    let eps = shared.endpoints();
    let counts = d
        .service()
        .map(|k| eps.counts(k))
        .or(dns.as_ref().map(|s| endpoints::Counts {
            ready: s.endpoints,
            total: s.endpoints,
        }));
    status::writer::status_patch(d, idx.observed(id), counts, now)
}

/// On the leader: writes what differs between desired and observed status, Ingress load
/// balancer addresses, and Warning Events.
async fn status_loop(
    shared: Arc<Shared>,
    client: kube::Client,
    opts: KubeOptions,
    watched_classes: Vec<String>,
    published: tokio_watch::Receiver<Option<Arc<Published>>>,
    mut leader: tokio_watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let writer = StatusWriter::new(client.clone());
    let mut events = events::Events::new(client, "tidegate", &opts.lease.identity);
    let static_addresses: Vec<LbAddress> = opts
        .publish_addresses
        .iter()
        .map(|a| match a.parse::<IpAddr>() {
            Ok(_) => LbAddress {
                ip: Some(a.clone()),
                hostname: None,
            },
            Err(_) => LbAddress {
                ip: None,
                hostname: Some(a.clone()),
            },
        })
        .collect();
    let publishes = opts.publish_service.is_some() || !static_addresses.is_empty();
    // Without an elector the sender is gone at once and `leader` stays what it was made with.
    let mut elector_alive = opts.leader_elect;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.status.notified() => {}
            r = leader.changed(), if elector_alive => {
                if r.is_err() {
                    elector_alive = false;
                    continue;
                }
                events.forget();
            }
        }
        // Let a burst (a compile plus the watch events of our own writes) settle.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !*leader.borrow() {
            continue;
        }
        let Some(p) = published.borrow().clone() else {
            continue;
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let (ingress_patches, uids) = {
            let idx = shared.index();
            let mut ingress_patches = Vec::new();
            if publishes {
                let mut want: Vec<LbAddress> = static_addresses.clone();
                want.extend(idx.published().iter().cloned());
                want.sort();
                want.dedup();
                let ours: BTreeSet<&ObjectRef> = p
                    .table
                    .rules
                    .iter()
                    .filter(|r| r.route.kind == Kind::Ingress)
                    .map(|r| &r.route)
                    .collect();
                for (id, (have, _)) in idx.ingress_status() {
                    // Another controller's Ingress, served side by side: its status is theirs.
                    if idx
                        .ingress_class(id)
                        .is_some_and(|c| watched_classes.iter().any(|w| w == c))
                    {
                        continue;
                    }
                    let mut have = have.clone();
                    have.sort();
                    if ours.contains(id) && have != want {
                        ingress_patches.push((id.clone(), want.clone()));
                    } else if !ours.contains(id) && !have.is_empty() && have == want {
                        // It carries our addresses but is no longer served by us (another
                        // class, or rejected): take them back rather than leave them stale.
                        ingress_patches.push((id.clone(), Vec::new()));
                    }
                }
            }
            let mut uids = std::collections::BTreeMap::new();
            for d in &p.table.diagnostics {
                if let Some(id) = &d.object {
                    let uid = match id.kind {
                        Kind::Ingress => idx.ingress_status().get(id).and_then(|(_, u)| u.clone()),
                        _ => idx.observed(id).and_then(|o| o.uid.clone()),
                    };
                    uids.insert(id.clone(), uid);
                }
            }
            (ingress_patches, uids)
        };
        let mut failed = false;
        // One patch at a time: made just before it is written, so at 10,000 Routes the first
        // writes after a start do not hold every Route's patch (~19 MB of JSON) until the last.
        for (id, d) in &p.desired {
            let Some(status) = status_patch(&shared, id, d, &now) else {
                continue;
            };
            match writer.write(id, status).await {
                Ok(()) => tracing::info!(object = %id, "status written"),
                Err(kube::Error::Api(s)) if s.code == 404 => {} // deleted meanwhile
                Err(e) => {
                    failed = true;
                    tracing::warn!(object = %id, error = %e, "cannot write status; will retry");
                }
            }
        }
        for (id, addrs) in ingress_patches {
            match writer.write_ingress(&id, &addrs).await {
                Ok(()) => tracing::info!(object = %id, "ingress status written"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(object = %id, error = %e, "cannot write ingress status; will retry");
                }
            }
        }
        events
            .publish(&p.table.diagnostics, |id| uids.get(id).cloned().flatten())
            .await;
        if failed {
            let s = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                s.status.notify_one();
            });
        }
    }
}
