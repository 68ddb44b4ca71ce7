//! Power of two choices: of two random usable endpoints, the one with fewer requests in flight.

use super::random::random_index;
use super::{EndpointList, PickContext, Selector};

/// Least request (P2C), weighted: in-flight counts are divided by the endpoint weight.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl Selector for LeastRequest {
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
        _: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        let a = random_usable(n, usable)?;
        let Some(b) = random_usable(n, usable) else {
            return Some(a);
        };
        let load = |i: usize| {
            u64::from(endpoints.in_flight(i)) * 1000 / u64::from(endpoints.weight(i).max(1))
        };
        Some(if load(b) < load(a) { b } else { a })
    }
}

fn random_usable(n: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    // A few random tries, then a scan from a random start: cheap when most endpoints are usable,
    // still correct when few are.
    for _ in 0..3 {
        let i = random_index(n);
        if usable(i) {
            return Some(i);
        }
    }
    super::first_usable(random_index(n), n, usable)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    struct Loaded(Vec<u32>);
    impl EndpointList for Loaded {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn weight(&self, _: usize) -> u32 {
            1
        }
        fn in_flight(&self, i: usize) -> u32 {
            self.0[i]
        }
    }

    #[test]
    fn prefers_the_less_loaded_endpoint() {
        let views = Loaded(vec![50, 0]);
        let mut picks = [0; 2];
        for _ in 0..1000 {
            picks[LeastRequest.pick(&views, &ctx(None), &|_| true).unwrap()] += 1;
        }
        // Endpoint 0 only wins when both choices land on it: about a quarter of the time.
        assert!(picks[1] > 650, "{picks:?}");
        assert_eq!(LeastRequest.pick(&views, &ctx(None), &|i| i == 0), Some(0));
        assert_eq!(LeastRequest.pick(&views, &ctx(None), &|_| false), None);
    }
}
