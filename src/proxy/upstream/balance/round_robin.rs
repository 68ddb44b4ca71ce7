//! Each endpoint in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{EndpointList, PickContext, Selector, first_usable};

/// Round robin, one shared counter per backend; unusable endpoints are skipped.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
        _: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        match endpoints.len() {
            0 => None,
            1 => usable(0).then_some(0),
            n => {
                // Draw again past an unusable endpoint instead of taking its neighbour, so the
                // neighbour does not get a double share.
                for _ in 0..n {
                    let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                    if usable(i) {
                        return Some(i);
                    }
                }
                first_usable(0, n, usable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn visits_every_endpoint_evenly() {
        let eps = endpoints(3);
        assert_eq!(
            counts(&RoundRobin::default(), &eps, 300, &|_| true),
            [100, 100, 100]
        );
    }

    #[test]
    fn skips_unusable_endpoints() {
        let eps = endpoints(3);
        assert_eq!(
            counts(&RoundRobin::default(), &eps, 300, &|i| i != 1),
            [150, 0, 150]
        );
        assert_eq!(
            counts(&RoundRobin::default(), &eps, 10, &|_| false),
            [0, 0, 0]
        );
    }
}
