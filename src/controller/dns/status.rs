//! Where each followed DNS query stands, for the Backends' status (Kubernetes mode): written by
//! the follow loops, read by the status writer, which is told of every change.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::State;
use crate::model::DnsQuery;

/// One query's last outcome and how many endpoints it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    /// How the last lookup went.
    pub state: State,
    /// Endpoints served now (a stale answer's included).
    pub endpoints: u32,
    /// What `/backends` says (`None` while current).
    pub note: Option<String>,
}

/// Every followed query's [`Standing`].
#[derive(Debug)]
pub struct DnsStatuses {
    map: Mutex<BTreeMap<DnsQuery, Standing>>,
    changed: watch::Sender<u64>,
}

impl Default for DnsStatuses {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl DnsStatuses {
    /// Records `standing` for `query`; tells subscribers when it differs from before.
    pub fn set(&self, query: &DnsQuery, standing: Standing) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(query) != Some(&standing) {
            map.insert(query.clone(), standing);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Forgets `query` (no table follows it any more).
    pub fn remove(&self, query: &DnsQuery) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.remove(query).is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Where `query` stands (`None` before its first lookup).
    pub fn get(&self, query: &DnsQuery) -> Option<Standing> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(query).cloned()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
