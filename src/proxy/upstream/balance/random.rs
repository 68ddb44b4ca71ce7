//! Uniformly random.

use std::cell::Cell;

use super::{EndpointList, PickContext, Selector, first_usable};

/// A uniformly random usable endpoint.
#[derive(Debug, Default)]
pub struct Random;

impl Selector for Random {
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
        _: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let i = random_index(n);
        if usable(i) {
            Some(i)
        } else {
            first_usable(random_index(n), n, usable)
        }
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed() | 1);
}

/// A random seed per thread (std's per-process hash keys, mixed with the thread's id).
fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id())
}

/// A random index below `n` (xorshift per thread: no lock, no syscall).
pub(crate) fn random_index(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

/// A per-thread xorshift64* number.
pub fn random_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn spreads_evenly() {
        let eps = endpoints(4);
        let c = counts(&Random, &eps, 8000, &|_| true);
        for n in &c {
            assert!((1700..2300).contains(n), "{c:?}");
        }
        assert_eq!(counts(&Random, &eps, 100, &|i| i == 2), [0, 0, 100, 0]);
    }
}
