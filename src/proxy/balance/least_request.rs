//! Power of two choices: of two random usable endpoints, the one with fewer requests in flight.

use super::random::random_index;
use super::{EndpointView, PickContext, Selector};

/// Least request (P2C), weighted: in-flight counts are divided by the endpoint weight.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl Selector for LeastRequest {
    fn pick(
        &self,
        endpoints: &[&dyn EndpointView],
        _: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        let a = random_usable(n, usable)?;
        let Some(b) = random_usable(n, usable) else {
            return Some(a);
        };
        let load = |i: usize| {
            let e = endpoints[i];
            u64::from(e.in_flight()) * 1000 / u64::from(e.endpoint().weight.max(1))
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
    use crate::model::Endpoint;

    struct Loaded(Endpoint, u32);
    impl EndpointView for Loaded {
        fn endpoint(&self) -> &Endpoint {
            &self.0
        }
        fn in_flight(&self) -> u32 {
            self.1
        }
    }

    #[test]
    fn prefers_the_less_loaded_endpoint() {
        let eps: Vec<Loaded> = endpoints(2)
            .into_iter()
            .zip([50, 0])
            .map(|(e, l)| Loaded(e, l))
            .collect();
        let views: Vec<&dyn EndpointView> = eps.iter().map(|e| e as &dyn EndpointView).collect();
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
