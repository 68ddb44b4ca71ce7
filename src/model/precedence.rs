//! Which rule wins when several match a request: Gateway API precedence as an `Ord`.
//!
//! `Rank` orders best-first: `a < b` means `a` wins over `b`. The order, most significant first:
//! exact host over wildcard (longer wildcard over shorter) over any host; exact path over
//! prefix (longer first) over regular expression; a method condition; more header conditions;
//! more query conditions; then the older object, then namespace/name, then rule and match order
//! (Gateway API, `HTTPRouteRule` in its apis/v1).

use std::cmp::Ordering;

use serde::Serialize;

/// How specifically a hostname matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum HostRank {
    /// An exact host name.
    Exact,
    /// A `*.` wildcard; the number is the length of its suffix (`.example.com`).
    Wildcard(usize),
    /// A Route without hostnames.
    Any,
}

impl HostRank {
    fn key(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            HostRank::Exact => (0, std::cmp::Reverse(0)),
            HostRank::Wildcard(n) => (1, std::cmp::Reverse(*n)),
            HostRank::Any => (2, std::cmp::Reverse(0)),
        }
    }
}

/// How specifically a path matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathRank {
    /// An exact path.
    Exact,
    /// A prefix; the number is its length.
    Prefix(usize),
    /// A regular expression.
    RegularExpression,
}

impl PathRank {
    fn key(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            PathRank::Exact => (0, std::cmp::Reverse(0)),
            PathRank::Prefix(n) => (1, std::cmp::Reverse(*n)),
            PathRank::RegularExpression => (2, std::cmp::Reverse(0)),
        }
    }
}

/// The precedence of one (hostname, match) pair of one rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rank<'a> {
    /// Hostname specificity.
    pub host: HostRank,
    /// Path specificity.
    pub path: PathRank,
    /// Whether a method is required.
    pub method: bool,
    /// Number of header conditions.
    pub headers: usize,
    /// Number of query conditions.
    pub query: usize,
    /// Creation time of the Route (Unix seconds), when known; unknown sorts last.
    pub created: Option<i64>,
    /// Route namespace.
    pub namespace: &'a str,
    /// Route name.
    pub name: &'a str,
    /// Rule index within the Route.
    pub rule: usize,
    /// Match index within the rule.
    pub match_index: usize,
}

impl Ord for Rank<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.host
            .key()
            .cmp(&other.host.key())
            .then_with(|| self.path.key().cmp(&other.path.key()))
            .then_with(|| other.method.cmp(&self.method))
            .then_with(|| other.headers.cmp(&self.headers))
            .then_with(|| other.query.cmp(&self.query))
            .then_with(|| match (self.created, other.created) {
                (Some(a), Some(b)) => a.cmp(&b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| self.namespace.cmp(other.namespace))
            .then_with(|| self.name.cmp(other.name))
            .then_with(|| self.rule.cmp(&other.rule))
            .then_with(|| self.match_index.cmp(&other.match_index))
    }
}

/// The part of a [`Rank`] after the host that needs no string: its order is [`Rank`]'s, up to
/// ties. A host index reads it while it has the rule at hand and sorts a group by it, going back
/// to the rules (cold by then, at 10,000 Routes) only for candidates it ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quick {
    path: (u8, std::cmp::Reverse<usize>),
    method: std::cmp::Reverse<bool>,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    /// Unknown last.
    created: (bool, i64),
}

impl Rank<'_> {
    /// Its [`Quick`] part.
    pub fn quick(&self) -> Quick {
        Quick {
            path: self.path.key(),
            method: std::cmp::Reverse(self.method),
            headers: std::cmp::Reverse(self.headers),
            query: std::cmp::Reverse(self.query),
            created: (self.created.is_none(), self.created.unwrap_or(0)),
        }
    }
}

impl PartialOrd for Rank<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Rank<'static> {
        Rank {
            host: HostRank::Exact,
            path: PathRank::Prefix(4),
            method: false,
            headers: 0,
            query: 0,
            created: None,
            namespace: "default",
            name: "r",
            rule: 0,
            match_index: 0,
        }
    }

    fn wins(a: Rank, b: Rank) {
        assert!(a < b, "{a:?} should beat {b:?}");
        assert!(b > a);
        // The quick part never disagrees (it may tie).
        if a.host == b.host {
            assert!(a.quick() <= b.quick(), "{a:?} {b:?}");
        }
    }

    #[test]
    fn exact_host_beats_wildcard() {
        wins(
            base(),
            Rank {
                host: HostRank::Wildcard(12),
                ..base()
            },
        );
    }

    #[test]
    fn longer_wildcard_beats_shorter() {
        wins(
            Rank {
                host: HostRank::Wildcard(16),
                ..base()
            },
            Rank {
                host: HostRank::Wildcard(12),
                ..base()
            },
        );
    }

    #[test]
    fn wildcard_host_beats_any_host() {
        wins(
            Rank {
                host: HostRank::Wildcard(4),
                ..base()
            },
            Rank {
                host: HostRank::Any,
                ..base()
            },
        );
    }

    #[test]
    fn host_specificity_beats_path_specificity() {
        wins(
            Rank {
                path: PathRank::RegularExpression,
                ..base()
            },
            Rank {
                host: HostRank::Any,
                path: PathRank::Exact,
                ..base()
            },
        );
    }

    #[test]
    fn exact_path_beats_prefix() {
        wins(
            Rank {
                path: PathRank::Exact,
                ..base()
            },
            Rank {
                path: PathRank::Prefix(40),
                ..base()
            },
        );
    }

    #[test]
    fn longer_prefix_beats_shorter() {
        wins(
            Rank {
                path: PathRank::Prefix(8),
                ..base()
            },
            Rank {
                path: PathRank::Prefix(4),
                ..base()
            },
        );
    }

    #[test]
    fn prefix_beats_regex() {
        wins(
            Rank {
                path: PathRank::Prefix(0),
                ..base()
            },
            Rank {
                path: PathRank::RegularExpression,
                ..base()
            },
        );
    }

    #[test]
    fn method_beats_header_count() {
        // HTTPRouteMethodMatching case 11: `PATCH /` with `version: four` goes to the rule that
        // matches the method, not to the one that matches the header.
        wins(
            Rank {
                method: true,
                ..base()
            },
            Rank {
                headers: 3,
                query: 3,
                ..base()
            },
        );
    }

    #[test]
    fn path_beats_method() {
        wins(
            Rank {
                path: PathRank::Prefix(6),
                ..base()
            },
            Rank {
                method: true,
                headers: 2,
                ..base()
            },
        );
    }

    #[test]
    fn more_headers_beat_fewer() {
        wins(
            Rank {
                headers: 2,
                ..base()
            },
            Rank {
                headers: 1,
                query: 3,
                ..base()
            },
        );
        wins(
            Rank {
                method: true,
                headers: 1,
                ..base()
            },
            Rank {
                method: true,
                ..base()
            },
        );
    }

    #[test]
    fn method_beats_no_method() {
        wins(
            Rank {
                method: true,
                ..base()
            },
            Rank { query: 5, ..base() },
        );
    }

    #[test]
    fn more_query_params_beat_fewer() {
        wins(Rank { query: 2, ..base() }, Rank { query: 1, ..base() });
        wins(
            Rank {
                headers: 1,
                query: 1,
                ..base()
            },
            Rank {
                headers: 1,
                ..base()
            },
        );
    }

    #[test]
    fn older_route_wins_a_tie() {
        wins(
            Rank {
                created: Some(100),
                name: "z",
                ..base()
            },
            Rank {
                created: Some(200),
                ..base()
            },
        );
        wins(
            Rank {
                created: Some(100),
                ..base()
            },
            Rank {
                created: None,
                ..base()
            },
        );
    }

    #[test]
    fn namespace_then_name_break_remaining_ties() {
        wins(
            Rank {
                namespace: "a",
                name: "z",
                ..base()
            },
            Rank {
                namespace: "b",
                ..base()
            },
        );
        wins(
            Rank {
                name: "a",
                ..base()
            },
            Rank {
                name: "b",
                ..base()
            },
        );
    }

    #[test]
    fn rule_then_match_order_break_ties_within_a_route() {
        wins(
            Rank {
                rule: 0,
                match_index: 3,
                ..base()
            },
            Rank { rule: 1, ..base() },
        );
        wins(
            Rank {
                match_index: 0,
                ..base()
            },
            Rank {
                match_index: 1,
                ..base()
            },
        );
    }
}
