//! Whether the configuration sources are current: which watches (or the config path) are
//! failing, and since when the served configuration may be stale.
//!
//! The data plane keeps serving its last table through any outage of the sources, and
//! `/readyz` stays ready (a control-plane outage must not become a traffic outage). What tells
//! an operator is this state: the `Synced` condition in `/config` and the gauge
//! `tidegate_config_stale_since_timestamp_seconds`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

/// One failing source.
#[derive(Clone, Debug)]
struct Failing {
    since: SystemTime,
    last_error: Instant,
    error: String,
}

/// The health of every source, shared by the sources (writers) and the admin server (reader).
#[derive(Debug, Default)]
pub struct SourceHealth {
    failing: Mutex<BTreeMap<&'static str, Failing>>,
    /// `tidegate_config_stale_since_timestamp_seconds`.
    gauge: Gauge<f64, AtomicU64>,
}

/// The `Synced` condition of `/config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedCondition {
    /// Always `Synced`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True` when every source is current, else `False`.
    pub status: &'static str,
    /// `Synced`, or `SourceFailing`.
    pub reason: &'static str,
    /// What fails and since when; empty when synced.
    pub message: String,
    /// When the configuration became possibly stale (RFC 3339), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<String>,
}

impl SourceHealth {
    /// Health that keeps `gauge` (stale since, Unix seconds; 0 when synced) up to date.
    pub fn new(gauge: Gauge<f64, AtomicU64>) -> Self {
        Self {
            failing: Mutex::default(),
            gauge,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Failing>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `source` (a watched kind, or `file`) failed; the first failure of an outage starts it.
    pub fn failed(&self, source: &'static str, error: &str) {
        let mut failing = self.lock();
        let now = Instant::now();
        failing
            .entry(source)
            .and_modify(|f| {
                f.last_error = now;
                f.error = error.to_owned();
            })
            .or_insert_with(|| Failing {
                since: SystemTime::now(),
                last_error: now,
                error: error.to_owned(),
            });
        self.publish(&failing);
    }

    /// `source` works again.
    pub fn recovered(&self, source: &'static str) -> bool {
        let mut failing = self.lock();
        let was = failing.remove(source).is_some();
        if was {
            self.publish(&failing);
        }
        was
    }

    /// Whether `source` is failing.
    pub fn is_failing(&self, source: &str) -> bool {
        self.lock().contains_key(source)
    }

    /// The failing sources, each with the time of its latest error.
    pub fn failing(&self) -> Vec<(&'static str, Instant)> {
        self.lock()
            .iter()
            .map(|(k, f)| (*k, f.last_error))
            .collect()
    }

    /// Since when the configuration may be stale: the start of the oldest ongoing failure.
    pub fn stale_since(&self) -> Option<SystemTime> {
        self.lock().values().map(|f| f.since).min()
    }

    /// The `Synced` condition.
    pub fn condition(&self) -> SyncedCondition {
        let failing = self.lock();
        let Some(since) = failing.values().map(|f| f.since).min() else {
            return SyncedCondition {
                kind: "Synced",
                status: "True",
                reason: "Synced",
                message: String::new(),
                stale_since: None,
            };
        };
        let since = rfc3339(since);
        let parts: Vec<String> = failing
            .iter()
            .map(|(k, f)| format!("{k} ({})", f.error))
            .collect();
        SyncedCondition {
            kind: "Synced",
            status: "False",
            reason: "SourceFailing",
            message: format!(
                "failing since {since}: {}; the last configuration keeps serving",
                parts.join(", ")
            ),
            stale_since: Some(since),
        }
    }

    fn publish(&self, failing: &BTreeMap<&'static str, Failing>) {
        let since = failing
            .values()
            .map(|f| f.since)
            .min()
            .and_then(|s| s.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.gauge.set(since);
    }
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.round(jiff::Unit::Millisecond).unwrap_or(ts).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_since_is_the_start_of_the_oldest_ongoing_failure() {
        let gauge = Gauge::<f64, AtomicU64>::default();
        let h = SourceHealth::new(gauge.clone());
        assert_eq!(h.condition().status, "True");
        h.failed("route", "connection refused");
        let first = h.stale_since().unwrap();
        assert!(gauge.get() > 1e9);
        h.failed("backend", "connection refused");
        h.failed("route", "still refused");
        assert_eq!(h.stale_since(), Some(first));
        let c = h.condition();
        assert_eq!((c.status, c.reason), ("False", "SourceFailing"));
        assert!(c.message.contains("route (still refused)"), "{}", c.message);
        assert!(h.recovered("route"));
        assert!(!h.recovered("route"));
        assert!(h.stale_since().unwrap() >= first);
        h.recovered("backend");
        assert_eq!(h.stale_since(), None);
        assert_eq!(gauge.get(), 0.0);
        assert_eq!(h.condition().status, "True");
    }
}
