//! Sticky sessions: the id a session cookie carries for an endpoint, and the index from ids to
//! the endpoints of the current set (built with the set, never on the request path).
//!
//! The id is a hash of the endpoint's address under a fixed seed, so every replica and every
//! release of the gateway gives one endpoint the same id (a per-process counter or a random
//! key would not survive a reload or a second replica). A value the index does not know (made
//! up, from an endpoint that is gone, or another proxy's) simply gets a new pick.

use std::fmt::Write;

use super::hash_bytes;
use crate::model::Endpoint;

/// The seed of session ids: unlike the balancers' hash keys, so that an id does not say which
/// endpoint a hash key of the same bytes would pick.
const SEED: u64 = 0x7469_6465_6761_7465; // "tidegate"

/// The session id of the endpoint at `address`.
pub fn session_id(address: &str) -> u64 {
    hash_bytes(address.as_bytes(), SEED)
}

/// A session id as the cookie carries it: 16 lower-case hex digits.
pub struct CookieValue(String);

impl CookieValue {
    /// The cookie value of `id`.
    pub fn of(id: u64) -> Self {
        let mut s = String::with_capacity(16);
        let _ = write!(s, "{id:016x}");
        Self(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id in a cookie value, if it is one (16 hex digits).
pub fn parse_cookie(value: &str) -> Option<u64> {
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(value, 16).ok()
}

/// Session ids → indexes of the endpoint set they were built from.
#[derive(Debug, Default)]
pub struct StickyIndex {
    /// Sorted by id.
    ids: Vec<(u64, usize)>,
}

impl StickyIndex {
    /// The index of `endpoints`.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let mut ids: Vec<(u64, usize)> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (session_id(&e.address), i))
            .collect();
        ids.sort_unstable();
        Self { ids }
    }

    /// The endpoint whose id is `id`, if it is in the set.
    pub fn find(&self, id: u64) -> Option<usize> {
        self.ids
            .binary_search_by_key(&id, |(k, _)| *k)
            .ok()
            .map(|at| self.ids[at].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::upstream::balance::testing::endpoints;

    #[test]
    fn ids_depend_on_the_address_only_and_round_trip_through_the_cookie() {
        let eps = endpoints(3);
        // Fixed across processes and releases (pinned: a change would end every session at an
        // upgrade): a replica or a reloaded gateway recognizes it.
        assert_eq!(session_id("10.0.0.1:80"), session_id("10.0.0.1:80"));
        assert_eq!(
            CookieValue::of(session_id("10.0.0.1:80")).as_str(),
            "390a980c9eb341db"
        );
        assert_ne!(session_id("10.0.0.1:80"), session_id("10.0.0.2:80"));
        let index = StickyIndex::new(&eps);
        for (i, e) in eps.iter().enumerate() {
            let v = CookieValue::of(session_id(&e.address));
            assert_eq!(v.as_str().len(), 16);
            assert_eq!(index.find(parse_cookie(v.as_str()).unwrap()), Some(i));
        }
    }

    #[test]
    fn unknown_or_malformed_values_find_nothing() {
        let index = StickyIndex::new(&endpoints(3));
        assert_eq!(index.find(session_id("10.0.0.9:80")), None);
        for bad in [
            "",
            "zz",
            "0123456789abcdef0",
            "0123456789abcdeg",
            "a|b",
            "+123456789abcdef",
        ] {
            assert!(
                parse_cookie(bad).is_none_or(|id| index.find(id).is_none()),
                "{bad:?}"
            );
        }
    }
}
