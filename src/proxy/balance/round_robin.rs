//! Each endpoint in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{PickContext, Selector};
use crate::model::Endpoint;

/// Round robin over the endpoints, one shared counter per backend.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn pick(&self, endpoints: &[Endpoint], _: &PickContext) -> Option<usize> {
        match endpoints.len() {
            0 => None,
            1 => Some(0),
            n => Some(self.next.fetch_add(1, Ordering::Relaxed) % n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_endpoint_evenly() {
        let eps: Vec<Endpoint> = (0..3)
            .map(|i| Endpoint::new(&format!("127.0.0.1:{}", 8000 + i)))
            .collect();
        let rr = RoundRobin::default();
        let ctx = PickContext {
            client: "127.0.0.1".parse().unwrap(),
        };
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[rr.pick(&eps, &ctx).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(rr.pick(&[], &ctx), None);
    }
}
