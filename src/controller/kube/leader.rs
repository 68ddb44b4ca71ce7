//! Leader election on a `coordination.k8s.io` Lease: only the holder writes status and Events.
//!
//! Every replica serves traffic either way. The holder renews the Lease every `retry`; another
//! replica takes it over once it has not been renewed for `lease_duration`. Writes use the
//! Lease's resourceVersion, so two replicas racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Settings of the elector.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace (the controller's own); `None`: the client's default namespace.
    pub namespace: Option<String>,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and others retry.
    pub retry: Duration,
}

/// Campaigns for the Lease until `stop`, publishing whether this replica leads.
pub async fn run(
    client: kube::Client,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let namespace = cfg
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    tracing::info!(lease = %cfg.name, %namespace, identity = %cfg.identity, "campaigning for leadership");
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(true) => {
                last_renewal = Some(tokio::time::Instant::now());
                if leader.send_if_modified(|l| !std::mem::replace(l, true)) {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
                }
            }
            Ok(false) => {
                last_renewal = None;
                if leader.send_if_modified(|l| std::mem::replace(l, false)) {
                    tracing::info!(lease = %cfg.name, "lost the lease to another replica");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "cannot reach the lease");
                // Without a renewal for a full lease, another replica may lead by now.
                if last_renewal.is_some_and(|t| t.elapsed() >= cfg.lease_duration)
                    && leader.send_if_modified(|l| std::mem::replace(l, false))
                {
                    tracing::warn!("leadership lapsed: the lease could not be renewed");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(cfg.retry) => {}
        }
    }
    if *leader.borrow() {
        release(&api, &cfg).await;
    }
}

/// One round: take or renew the Lease if free, expired or ours. `Ok(true)` when we hold it.
async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let held_for = spec
        .lease_duration_seconds
        .map_or(cfg.lease_duration.as_secs() as i64, i64::from);
    let expired = match &spec.renew_time {
        Some(t) => now.as_second() - t.0.as_second() > held_for,
        None => true,
    };
    let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !(ours || expired || free) {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(duration),
        acquire_time: if ours {
            spec.acquire_time
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    });
    // `replace` carries the resourceVersion we read: a concurrent change makes it fail (409).
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up on shutdown, so another replica need not wait for it to expire.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the lease"),
        Err(e) => tracing::debug!(error = %e, "cannot release the lease; it will expire"),
    }
}
