//! Concurrency limits: requests in flight per key, in this replica. A request holds a
//! [`Slot`] from admission until its response body ends (or the client leaves); dropping it
//! gives the place back. Counts live in a few sharded maps whose entries go away at zero, so
//! memory follows the requests in flight, not the clients ever seen.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex};

use super::{Decisions, RateLimitMetrics, decisions};
use crate::model::ConcurrencyLimit;

/// Shards of the counts (a power of two).
const SHARDS: usize = 16;

/// One concurrency limit's live state.
pub struct ConcurrencyState {
    /// The limit as compiled.
    pub limit: ConcurrencyLimit,
    /// Hashes request keys (random per state: keys cannot be chosen to collide).
    pub hasher: RandomState,
    /// Decisions, by result.
    pub decisions: Decisions,
    shards: Box<[Mutex<HashMap<u64, u32>>]>,
}

impl ConcurrencyState {
    /// A state for `limit` of policy `policy` (`namespace/name`), counting in `metrics`.
    pub fn new(policy: &Arc<str>, limit: &ConcurrencyLimit, metrics: &RateLimitMetrics) -> Self {
        Self {
            limit: limit.clone(),
            hasher: RandomState::new(),
            decisions: decisions(metrics, policy, &limit.name),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, u32>> {
        &self.shards[(key as usize) & (SHARDS - 1)]
    }

    /// A place for one more request of the key hashed to `key`, or `None` when `max` are in
    /// flight.
    pub fn acquire(self: &Arc<Self>, key: u64) -> Option<Slot> {
        let mut counts = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.limit.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            state: self.clone(),
            key,
        })
    }

    /// Requests in flight for the key hashed to `key`.
    pub fn in_flight(&self, key: u64) -> u32 {
        let counts = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&key).copied().unwrap_or(0)
    }
}

/// One request's place under a concurrency limit, given back when dropped.
pub struct Slot {
    state: Arc<ConcurrencyState>,
    key: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .state
            .shard(self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LimitKey;

    #[test]
    fn places_are_given_back_when_slots_drop() {
        let limit = ConcurrencyLimit {
            name: "c".into(),
            key: LimitKey::default(),
            max: 2,
            exempt: Vec::new(),
        };
        let s = Arc::new(ConcurrencyState::new(
            &"ns/p".into(),
            &limit,
            &RateLimitMetrics::default(),
        ));
        let a = s.acquire(7).unwrap();
        let b = s.acquire(7).unwrap();
        assert!(s.acquire(7).is_none(), "two in flight");
        assert!(s.acquire(8).is_some(), "another key counts apart");
        drop(a);
        assert_eq!(s.in_flight(7), 1);
        let c = s.acquire(7).unwrap();
        drop((b, c));
        assert_eq!(s.in_flight(7), 0);
        assert!(
            s.shard(7).lock().unwrap().is_empty(),
            "no entry kept at zero"
        );
    }
}
