//! DNS discovery: Backends whose `spec.dns` names A, AAAA or SRV records get their endpoints
//! from lookups, repeated on the records' TTL (within the Backend's refresh bounds).
//!
//! A discovery source like the EndpointSlice index: it watches the published tables for the
//! DNS queries their backends follow, runs one task per query, and writes each answer through
//! [`EndpointSink`] into the proxy's discovery store, whose listeners rebuild the backends'
//! pools in place (no recompile; endpoints that stay keep their state). Queries no table uses
//! any more are stopped and their sets emptied.

mod follow;
pub mod resolve;
pub mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{DiscoveryKey, DnsQuery, EndpointSink, RoutingTable};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{DnsLabels, DnsResultLabels};

pub use follow::{State, Step, Tracker};
pub use resolve::{Failure, Hickory, Outcome, Resolve, ResolverSetupError};
pub use status::{DnsStatuses, Standing};

/// Where lookups go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOptions {
    /// One DNS server (`--dns-server`); `None`: the system's configuration (`/etc/resolv.conf`).
    pub server: Option<SocketAddr>,
}

/// Follows the DNS queries of every table `tables` sees until `stop`. The resolver is set up
/// when the first table needs one; if that fails, the queries report it on `/backends`.
pub async fn run(
    options: DnsOptions,
    sink: Arc<dyn EndpointSink>,
    statuses: Arc<DnsStatuses>,
    tables: watch::Receiver<Option<Arc<RoutingTable>>>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let resolver = move || -> Arc<dyn Resolve> {
        match Hickory::new(options.server) {
            Ok(r) => Arc::new(r),
            Err(e) => Arc::new(Unusable(e.to_string())),
        }
    };
    follow_tables(resolver, sink, statuses, tables, telemetry, stop).await
}

/// [`run`] with a resolver of one's own.
pub async fn run_with(
    resolver: Arc<dyn Resolve>,
    sink: Arc<dyn EndpointSink>,
    statuses: Arc<DnsStatuses>,
    tables: watch::Receiver<Option<Arc<RoutingTable>>>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    follow_tables(
        move || resolver.clone(),
        sink,
        statuses,
        tables,
        telemetry,
        stop,
    )
    .await
}

async fn follow_tables(
    make_resolver: impl Fn() -> Arc<dyn Resolve>,
    sink: Arc<dyn EndpointSink>,
    statuses: Arc<DnsStatuses>,
    mut tables: watch::Receiver<Option<Arc<RoutingTable>>>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let mut resolver: Option<Arc<dyn Resolve>> = None;
    let mut running: BTreeMap<DnsQuery, CancellationToken> = BTreeMap::new();
    loop {
        let wanted: Vec<DnsQuery> = tables
            .borrow_and_update()
            .as_ref()
            .map(|t| t.backends.iter().filter_map(|b| b.dns.clone()).collect())
            .unwrap_or_default();
        running.retain(|query, task| {
            let keep = wanted.contains(query);
            if !keep {
                task.cancel();
                let key = DiscoveryKey::Dns(query.clone());
                sink.set(&key, Vec::new());
                sink.note(&key, None);
                statuses.remove(query);
                telemetry.metrics.dns_stale.remove(&labels(query));
            }
            keep
        });
        for query in wanted {
            if running.contains_key(&query) {
                continue;
            }
            let resolver = resolver.get_or_insert_with(&make_resolver).clone();
            let task = stop.child_token();
            running.insert(query.clone(), task.clone());
            tokio::spawn(follow(
                query,
                resolver,
                sink.clone(),
                statuses.clone(),
                telemetry.clone(),
                task,
            ));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = tables.changed() => if changed.is_err() { return },
        }
    }
}

/// Looks `query` up again and again, publishing what each answer says, until `stop`.
pub async fn follow(
    query: DnsQuery,
    resolver: Arc<dyn Resolve>,
    sink: Arc<dyn EndpointSink>,
    statuses: Arc<DnsStatuses>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let key = DiscoveryKey::Dns(query.clone());
    let mut tracker = Tracker::default();
    let mut serving = 0u32;
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = resolver.resolve(&query) => o,
        };
        let result = match &outcome {
            Outcome::Answer { .. } => "answer",
            Outcome::Empty { .. } => "empty",
            Outcome::Failed(f) => f.label(),
        };
        let step = tracker.step(&query, outcome, Instant::now());
        record(&telemetry, &query, result, &step);
        if let Some(endpoints) = step.publish {
            serving = endpoints.len() as u32;
            sink.set(&key, endpoints);
        }
        statuses.set(
            &query,
            Standing {
                state: step.state,
                endpoints: serving,
                note: step.note.clone(),
            },
        );
        sink.note(&key, step.note);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(step.next) => {}
        }
    }
}

fn labels(query: &DnsQuery) -> DnsLabels {
    DnsLabels {
        name: query.name.as_str().into(),
        record_type: query.record_type.as_str(),
    }
}

fn record(telemetry: &Telemetry, query: &DnsQuery, result: &'static str, step: &Step) {
    let m = &telemetry.metrics;
    m.dns_resolutions
        .get_or_create(&DnsResultLabels {
            name: query.name.as_str().into(),
            record_type: query.record_type.as_str(),
            result,
        })
        .inc();
    let stale = matches!(step.state, State::Stale(_));
    m.dns_stale.get_or_create(&labels(query)).set(stale as i64);
    match step.state {
        State::Resolved => {
            tracing::debug!(query = %query, next_s = step.next.as_secs(), "DNS answer")
        }
        State::Empty | State::Stale(_) | State::Failed(_) => {
            tracing::warn!(query = %query, result, note = step.note.as_deref().unwrap_or(""), "DNS lookup")
        }
    }
}

/// A resolver that could not be set up: every lookup fails, saying why on `/backends`.
struct Unusable(String);

impl Resolve for Unusable {
    fn resolve<'a>(&'a self, _: &'a DnsQuery) -> futures::future::BoxFuture<'a, Outcome> {
        tracing::warn!(error = %self.0, "no DNS resolver");
        Box::pin(async { Outcome::Failed(Failure::Error) })
    }
}

#[cfg(test)]
mod tests;
