//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table filled from each
//! endpoint's permutation, so that a key keeps its endpoint when others come and go, and only
//! about 1/N of the keys move when one endpoint is added or removed.

use super::hash::hash_bytes;
use super::{EndpointList, PickContext, Selector};
use crate::model::Endpoint;

/// Table sizes (primes); the smallest one at least 100 × the endpoint count is used.
const SIZES: [usize; 6] = [251, 1021, 4093, 16381, 65521, 262_139];

/// Maglev over the endpoints' addresses, honouring their weights.
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// Builds the lookup table for `endpoints`.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let n = endpoints.len();
        if n == 0 {
            return Self {
                table: Box::new([]),
            };
        }
        let m = SIZES
            .iter()
            .copied()
            .find(|&s| s >= n * 100)
            .unwrap_or(SIZES[SIZES.len() - 1]);
        let perms: Vec<(usize, usize)> = endpoints
            .iter()
            .map(|e| {
                let offset = hash_bytes(e.address.as_bytes(), 0x6d61_676c) as usize % m;
                let skip = hash_bytes(e.address.as_bytes(), 0x6c65_7621) as usize % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        // Weighted Maglev: each round, an endpoint claims as many slots as its weight.
        'fill: loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                for _ in 0..endpoints[i].weight.max(1) {
                    loop {
                        let slot = (offset + next[i] * skip) % m;
                        next[i] += 1;
                        if table[slot] == u32::MAX {
                            table[slot] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Self {
            table: table.into(),
        }
    }
}

impl Selector for Maglev {
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
        ctx: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let m = self.table.len();
        if m == 0 || endpoints.is_empty() {
            return None;
        }
        let hash = ctx.hash.unwrap_or(0);
        // The key's own slot; if its endpoint is unusable, a fixed probe sequence from the key,
        // so keys of healthy endpoints never move and a failed endpoint's keys spread evenly.
        let mut h = hash;
        for _ in 0..64 {
            let i = self.table[(h % m as u64) as usize] as usize;
            if i < endpoints.len() && usable(i) {
                return Some(i);
            }
            h = hash_bytes(&h.to_le_bytes(), 0x7072_6f62);
        }
        super::first_usable(
            (hash % endpoints.len() as u64) as usize,
            endpoints.len(),
            usable,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Selector, stable_hash};
    use super::*;

    #[allow(clippy::ptr_arg)] // a Vec is what implements EndpointList
    fn assignments(
        s: &Maglev,
        eps: &Vec<Endpoint>,
        keys: usize,
        usable: &dyn Fn(usize) -> bool,
    ) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let i = s
                    .pick(
                        eps,
                        &ctx(Some(stable_hash(format!("user-{k}").as_bytes()))),
                        usable,
                    )
                    .unwrap();
                eps[i].address.to_string()
            })
            .collect()
    }

    #[test]
    fn the_same_key_always_gets_the_same_endpoint() {
        let eps = endpoints(5);
        let a = assignments(&Maglev::new(&eps), &eps, 1000, &|_| true);
        let b = assignments(&Maglev::new(&eps), &eps, 1000, &|_| true);
        assert_eq!(a, b, "deterministic across builds (and replicas)");
    }

    #[test]
    fn spreads_keys_evenly() {
        let eps = endpoints(5);
        let c = counts(&Maglev::new(&eps), &eps, 10_000, &|_| true);
        for n in &c {
            assert!((1700..2300).contains(n), "{c:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys_and_a_little_more() {
        let eps = endpoints(10);
        let before = assignments(&Maglev::new(&eps), &eps, 10_000, &|_| true);
        let fewer: Vec<Endpoint> = eps
            .iter()
            .filter(|e| &*e.address != "10.0.0.4:80")
            .cloned()
            .collect();
        let after = assignments(&Maglev::new(&fewer), &fewer, 10_000, &|_| true);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let owned = before.iter().filter(|a| *a == "10.0.0.4:80").count();
        // Every key of the removed endpoint moves; Maglev keeps other moves to a few percent.
        assert!(
            moved >= owned && moved <= owned + 10_000 * 3 / 100,
            "moved {moved}, owned {owned}"
        );
    }

    #[test]
    fn an_unhealthy_endpoint_moves_only_its_own_keys() {
        let eps = endpoints(6);
        let s = Maglev::new(&eps);
        let before = assignments(&s, &eps, 5000, &|_| true);
        let after = assignments(&s, &eps, 5000, &|i| i != 2);
        for (b, a) in before.iter().zip(&after) {
            if b != "10.0.0.3:80" {
                assert_eq!(a, b, "keys of healthy endpoints stay put");
            } else {
                assert_ne!(a, "10.0.0.3:80");
            }
        }
    }

    #[test]
    fn weights_shift_the_share() {
        let mut eps = endpoints(2);
        eps[0].weight = 3;
        let c = counts(&Maglev::new(&eps), &eps, 10_000, &|_| true);
        let share = c[0] as f64 / 10_000.0;
        assert!((share - 0.75).abs() < 0.05, "{c:?}");
    }
}
