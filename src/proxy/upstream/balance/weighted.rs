//! Smooth weighted round robin over per-endpoint weights (nginx's algorithm, precomputed).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{EndpointList, PickContext, Selector};
use crate::model::Endpoint;
use crate::model::weighted::smooth_schedule;

/// Endpoints in proportion to their weights, interleaved rather than in bursts.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// The schedule for these endpoints' weights.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Self {
            schedule: smooth_schedule(&weights).into(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Selector for WeightedRoundRobin {
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
        _: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 || endpoints.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.schedule[(start + k) % n] as usize)
            .find(|&i| i < endpoints.len() && usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn follows_the_weights() {
        let mut eps = endpoints(3);
        eps[0].weight = 5;
        eps[1].weight = 3;
        eps[2].weight = 2;
        let s = WeightedRoundRobin::new(&eps);
        assert_eq!(counts(&s, &eps, 1000, &|_| true), [500, 300, 200]);
        // An unusable endpoint's turns go to the next in the schedule.
        let c = counts(&s, &eps, 1000, &|i| i != 0);
        assert_eq!(c[0], 0);
        assert_eq!(c[1] + c[2], 1000);
    }
}
