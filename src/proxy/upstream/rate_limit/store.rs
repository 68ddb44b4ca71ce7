//! The per-replica store of a Local limit: key hashes to states, bounded, sharded, and free of
//! allocation on the request path once a shard has grown to its working size.
//!
//! Each shard is a set-associative table (like a CPU cache): a key hashes to one set of
//! [`WAYS`] slots, so a lookup reads two cache lines and never chains. A shard starts with one
//! set and doubles (a rehash, at most log2 of its size times in its life) while it has fewer
//! keys than its share of `maxKeys`. At that bound, or when a set is full at the largest size,
//! a new key takes the slot of the least active key of its set.
//!
//! Eviction never lets a client through more than its limit: a key that had used part of its
//! allowance is folded into a small *ghost* table (by hash, keeping the stricter state), and a
//! key that arrives is started from its ghost slot. A client that comes back after being
//! evicted therefore starts where it was, or stricter; a new client that shares a ghost slot
//! with an evicted one can be held back by at most one burst, until that slot's state has
//! aged out (at most `burst × per / rate` for a token bucket, two windows for a sliding one).

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

use super::algorithm::{Algorithm, State, Verdict};

/// Slots per set.
pub const WAYS: usize = 8;
/// Most shards of one store.
const MAX_SHARDS: usize = 64;
/// A shard gets at least this many keys before the store is split further.
const KEYS_PER_SHARD: usize = 64;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The key's hash; 0 marks an empty slot (hashes are never 0).
    key: u64,
    state: State,
}

struct Table {
    /// A power of two of sets.
    sets: Vec<[Slot; WAYS]>,
    len: usize,
    /// Most keys kept.
    limit: usize,
    /// Most sets: room for `limit` keys at half load.
    max_sets: usize,
    /// Evicted keys' states by hash; empty until the first eviction of an active key.
    ghosts: Vec<State>,
}

/// One shard, on its own cache lines so that shards do not share them.
#[repr(align(128))]
struct Shard(Mutex<Table>);

/// A bounded map from key hashes to states, with the counting rule that updates them.
pub struct Store {
    shards: Box<[Shard]>,
    /// log2 of the shard count.
    shard_bits: u32,
    algorithm: Algorithm,
    evictions: Counter,
}

impl Store {
    /// A store keeping at most about `max_keys` keys (rounded up to a multiple of the shard
    /// count), counting evictions of active keys in `evictions`.
    pub fn new(algorithm: Algorithm, max_keys: usize, evictions: Counter) -> Self {
        let max_keys = max_keys.max(1);
        let shards = (max_keys / KEYS_PER_SHARD)
            .next_power_of_two()
            .clamp(1, MAX_SHARDS);
        let limit = max_keys.div_ceil(shards);
        let max_sets = (2 * limit).div_ceil(WAYS).next_power_of_two();
        let shards: Box<[Shard]> = (0..shards)
            .map(|_| {
                Shard(Mutex::new(Table {
                    sets: vec![[Slot::default(); WAYS]],
                    len: 0,
                    limit,
                    max_sets,
                    ghosts: Vec::new(),
                }))
            })
            .collect();
        Self {
            shard_bits: shards.len().trailing_zeros(),
            shards,
            algorithm,
            evictions,
        }
    }

    /// The counting rule.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Table> {
        let i = if self.shard_bits == 0 {
            0
        } else {
            (key >> (64 - self.shard_bits)) as usize
        };
        self.shards[i].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides one request of key `key` (a hash, see [`nonzero`]) at `now` (ns).
    pub fn decide(&self, key: u64, now: u64) -> Verdict {
        let alg = self.algorithm;
        let mut t = self.shard(key);
        if let Some(slot) = t.find(key) {
            return alg.decide(&mut slot.state, now);
        }
        let (slot, evicted) = t.insert(key, now, &alg);
        let verdict = alg.decide(&mut slot.state, now);
        drop(t);
        if evicted {
            self.evictions.inc();
        }
        verdict
    }

    /// Takes back one counted request of `key` (another limit refused it).
    pub fn refund(&self, key: u64, now: u64) {
        let alg = self.algorithm;
        if let Some(slot) = self.shard(key).find(key) {
            alg.refund(&mut slot.state, now);
        }
    }

    /// Keys kept now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len)
            .sum()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Active keys evicted so far (keys as good as new are dropped without counting).
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }
}

/// A key hash the store accepts (0 marks empty slots).
pub fn nonzero(hash: u64) -> u64 {
    hash.max(1)
}

impl Table {
    fn set_of(&self, key: u64) -> usize {
        key as usize & (self.sets.len() - 1)
    }

    fn find(&mut self, key: u64) -> Option<&mut Slot> {
        let set = self.set_of(key);
        self.sets[set].iter_mut().find(|s| s.key == key)
    }

    /// Makes room for `key` and returns its slot, started from its ghost; and whether an
    /// active key was evicted for it.
    fn insert(&mut self, key: u64, now: u64, alg: &Algorithm) -> (&mut Slot, bool) {
        let start = self.ghost(key, now, alg);
        let mut evicted = false;
        let mut set = self.set_of(key);
        while !self.sets[set].iter().any(|s| s.key == 0) {
            if self.len < self.limit && self.sets.len() < self.max_sets {
                self.grow();
                set = self.set_of(key);
            } else {
                evicted |= self.evict(set, now, alg);
            }
        }
        if self.len >= self.limit {
            // The set has room but the shard is at its bound: the least active key of the
            // set goes, or, if the set is empty, of the next set that is not.
            let n = self.sets.len();
            let victim_set = (0..n)
                .map(|i| (set + i) & (n - 1))
                .find(|&s| self.sets[s].iter().any(|slot| slot.key != 0))
                .unwrap_or(set);
            evicted |= self.evict(victim_set, now, alg);
        }
        let way = self.sets[set].iter().position(|s| s.key == 0).unwrap_or(0);
        self.len += 1;
        let slot = &mut self.sets[set][way];
        *slot = Slot { key, state: start };
        (slot, evicted)
    }

    /// Empties the least active occupied slot of `set`; returns whether its key was active
    /// (then its state went into the ghosts).
    fn evict(&mut self, set: usize, now: u64, alg: &Algorithm) -> bool {
        let Some((way, activity)) = self.sets[set]
            .iter()
            .enumerate()
            .filter(|(_, s)| s.key != 0)
            .map(|(w, s)| (w, alg.activity(&s.state, now)))
            .min_by_key(|&(_, a)| a)
        else {
            return false;
        };
        let victim = std::mem::take(&mut self.sets[set][way]);
        self.len -= 1;
        if activity > 0 {
            if self.ghosts.is_empty() {
                // The first eviction of an active key: a quarter as many ghosts as keys.
                self.ghosts = vec![State::default(); (self.limit / 4).max(1).next_power_of_two()];
            }
            let g = ghost_index(victim.key, self.ghosts.len());
            alg.merge(&mut self.ghosts[g], &victim.state);
        }
        activity > 0
    }

    /// Where a new `key` starts: its ghost's state if that still counts, else fresh.
    fn ghost(&self, key: u64, now: u64, alg: &Algorithm) -> State {
        if self.ghosts.is_empty() {
            return State::default();
        }
        let g = self.ghosts[ghost_index(key, self.ghosts.len())];
        if alg.activity(&g, now) > 0 {
            g
        } else {
            State::default()
        }
    }

    /// Doubles the sets: each set's keys split between it and its new twin, so none overflows.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.sets);
        let n = old.len() * 2;
        self.sets = vec![[Slot::default(); WAYS]; n];
        let mut fill = vec![0u8; n];
        for slot in old.iter().flatten().filter(|s| s.key != 0) {
            let set = slot.key as usize & (n - 1);
            self.sets[set][fill[set] as usize] = *slot;
            fill[set] += 1;
        }
    }
}

/// A ghost slot from hash bits the set index does not use.
fn ghost_index(key: u64, len: usize) -> usize {
    (key.rotate_right(29) as usize) & (len - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn bucket(rate: u64, burst: u64) -> Algorithm {
        Algorithm::TokenBucket {
            interval_ns: S / rate,
            burst,
        }
    }

    /// A well-spread hash of `i`, as the store's users give it.
    fn key(i: u64) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        nonzero(
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(i),
        )
    }

    #[test]
    fn keys_are_isolated() {
        let store = Store::new(bucket(1, 2), 1000, Counter::default());
        for k in 0..100 {
            assert!(store.decide(key(k), S).allowed);
            assert!(store.decide(key(k), S).allowed);
            assert!(!store.decide(key(k), S).allowed, "key {k}");
        }
        assert_eq!(store.len(), 100);
        assert_eq!(store.evictions(), 0);
    }

    #[test]
    fn the_store_never_keeps_more_than_its_bound() {
        let store = Store::new(bucket(1, 1), 1000, Counter::default());
        for k in 0..50_000 {
            store.decide(key(k), S);
        }
        let shards = store.shards.len();
        assert!(store.len() <= 1000 + shards, "{}", store.len());
        assert!(store.len() >= 900, "it fills up: {}", store.len());
        assert!(store.evictions() > 0);
    }

    #[test]
    fn eviction_never_lets_a_client_past_its_limit() {
        // A tiny store (one set) and a client that keeps using its whole allowance while a
        // crowd of one-off keys pushes it out again and again.
        let alg = bucket(10, 5);
        let store = Store::new(alg, 8, Counter::default());
        let client = key(u64::MAX);
        let mut passed = 0;
        let mut now = S;
        let span = 20 * S;
        let mut crowd = 0;
        while now < S + span {
            passed += u64::from(store.decide(client, now).allowed);
            for _ in 0..20 {
                crowd += 1;
                store.decide(key(crowd), now);
            }
            now += S / 100;
        }
        assert!(store.evictions() > 1000, "{}", store.evictions());
        // At most burst + rate × span, as without eviction.
        assert!(passed <= 5 + 10 * 20, "{passed}");
        // And evicted clients are not starved either: a ghost holds back by one burst at most.
        assert!(passed >= 10 * 20 - 5, "{passed}");
    }

    #[test]
    fn idle_keys_are_dropped_before_active_ones() {
        // Eight keys fill the one set; seven are idle again by the time the ninth comes.
        let store = Store::new(bucket(1, 1), 8, Counter::default());
        let busy = key(1);
        for k in 2..9 {
            store.decide(key(k), S); // used, as good as new from 2 s
        }
        assert!(store.decide(busy, 3 * S).allowed); // active until 4 s
        store.decide(key(100), 3 * S);
        assert_eq!(store.evictions(), 0, "an idle key made room, not busy");
        assert!(!store.decide(busy, 3 * S).allowed, "busy kept its state");
    }

    #[test]
    fn growing_keeps_every_key() {
        let store = Store::new(bucket(1, 1), 100_000, Counter::default());
        for k in 0..5000 {
            assert!(store.decide(key(k), S).allowed);
        }
        for k in 0..5000 {
            assert!(!store.decide(key(k), S).allowed, "key {k} was lost");
        }
        assert_eq!(store.evictions(), 0);
    }

    #[test]
    fn a_refund_reaches_the_key() {
        let store = Store::new(bucket(1, 1), 10, Counter::default());
        assert!(store.decide(key(1), S).allowed);
        store.refund(key(1), S);
        assert!(store.decide(key(1), S).allowed);
    }
}
