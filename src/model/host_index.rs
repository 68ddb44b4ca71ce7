//! Rules grouped by host, each group sorted by precedence: what a lookup walks.
//!
//! Built for every published table, so its cost is part of every change: at 10,000 Routes it
//! was most of a one-Route change. Keys are not copied out of the rules (a key names the rule
//! and hostname it is spelled in) and every group's candidates sit in one shared pool, so
//! building allocates a handful of buffers rather than several per host.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::matching::RequestMatch;
use super::precedence::{HostRank, PathRank, Quick, Rank};
use super::{PathMatcher, Rule};

/// One (rule, match) pair to try for a host bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Index in [`super::RoutingTable::rules`].
    pub rule: u32,
    /// Index in that rule's matches.
    pub match_index: u32,
}

/// A candidate and its position in its whole group (its precedence).
type Ordered = (u32, Candidate);

/// Groups shorter than this are scanned without the segment index.
const SEGMENT_INDEX_MIN: usize = 16;

/// The candidates of one host bucket in precedence order; a long one is also indexed by the
/// first path segment, so that a host with thousands of path rules is not scanned rule by rule.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Where its candidates are in the index's pool.
    start: u32,
    len: u32,
    /// Only for groups of [`SEGMENT_INDEX_MIN`] or more.
    segments: Option<Box<Segments>>,
}

#[derive(Clone, Debug)]
struct Segments {
    /// Candidates whose path condition fixes the first segment (`/api/...` → `api`), by that
    /// segment.
    by_segment: HashMap<Box<str>, Box<[Ordered]>>,
    /// Candidates that may match any first segment: prefix `/` and regular expressions.
    rest: Box<[Ordered]>,
}

impl Segments {
    fn new(sorted: &[Ordered], rules: &[Arc<Rule>]) -> Self {
        let mut by_segment: HashMap<Box<str>, Vec<Ordered>> = HashMap::new();
        let mut rest = Vec::new();
        for &(order, c) in sorted {
            let m = &rules[c.rule as usize].matches[c.match_index as usize];
            match required_segment(m) {
                Some(s) => by_segment.entry(s.into()).or_default().push((order, c)),
                None => rest.push((order, c)),
            }
        }
        Self {
            by_segment: by_segment.into_iter().map(|(k, v)| (k, v.into())).collect(),
            rest: rest.into(),
        }
    }
}

impl Group {
    /// The candidates that may match `path`, in precedence order (`pool` is the index's): the
    /// path's first-segment list merged with the list that fits any path.
    fn candidates<'a>(
        &'a self,
        pool: &'a [Ordered],
        path: &str,
    ) -> impl Iterator<Item = Candidate> + 'a {
        let (fixed, rest): (&[Ordered], &[Ordered]) = match &self.segments {
            None => (&[], &pool[self.start as usize..][..self.len as usize]),
            Some(s) => (
                first_segment(path)
                    .and_then(|p| s.by_segment.get(p))
                    .map_or(&[], |v| v),
                &s.rest,
            ),
        };
        let (mut a, mut b) = (fixed.iter().peekable(), rest.iter().peekable());
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => a.next().map(|c| c.1),
            (Some(_), Some(_)) | (None, Some(_)) => b.next().map(|c| c.1),
            (Some(_), None) => a.next().map(|c| c.1),
            (None, None) => None,
        })
    }
}

/// `api` for `/api/v1`, `` for `/`; `None` for a path that does not start with `/`.
fn first_segment(path: &str) -> Option<&str> {
    path.strip_prefix('/')
        .map(|p| p.split('/').next().unwrap_or(""))
}

/// The first segment a match requires, if it requires one.
fn required_segment(m: &RequestMatch) -> Option<&str> {
    match &m.path {
        PathMatcher::Exact(p) => first_segment(p),
        PathMatcher::Prefix(p) if !p.is_empty() => first_segment(p),
        PathMatcher::Prefix(_) | PathMatcher::RegularExpression(_) => None,
    }
}

/// A host bucket's key where the rules spell it: hostname `host` of rule `rule` (a wildcard's
/// key is that hostname without its `*`), and the bucket's group.
#[derive(Clone, Copy, Debug)]
struct Key {
    rule: u32,
    host: u32,
    group: u32,
}

/// How a table spells its keys: [`Key::exact`] or [`Key::suffix`].
type Spelled = fn(Key, &[Arc<Rule>]) -> &str;

impl Key {
    fn exact(self, rules: &[Arc<Rule>]) -> &str {
        &rules[self.rule as usize].hostnames[self.host as usize]
    }

    fn suffix(self, rules: &[Arc<Rule>]) -> &str {
        let h = self.exact(rules);
        h.strip_prefix('*').unwrap_or(h)
    }
}

/// Rules grouped by host, each group sorted by precedence. It reads its keys from the rules it
/// was built from: look up only with those. Hosts are hashed with foldhash, seeded per index:
/// the keys come from the configuration, a client's Host only probes them.
#[derive(Clone, Debug, Default)]
pub struct HostIndex {
    hasher: RandomState,
    exact: HashTable<Key>,
    /// Keyed by the suffix after `*`, e.g. `.example.com`.
    wildcard: HashTable<Key>,
    /// By the `group` of their keys.
    groups: Vec<Group>,
    /// Routes without hostnames.
    any: Group,
    /// Every group's candidates, group after group, each in precedence order.
    pool: Box<[Ordered]>,
}

impl HostIndex {
    /// Groups every (hostname, match) of `rules` and sorts each group by [`Rank`]
    /// ([`IndexBuilder`] with every rule at once).
    pub fn build(rules: &[Arc<Rule>]) -> Self {
        IndexBuilder::with_capacity(rules.len()).finish(rules)
    }

    /// The candidates that may match a request to `host` (lower-case, no port) for `path`, in
    /// precedence order, group by group: the exact host, then wildcards from the longest
    /// suffix, then Routes without hostnames. `rules` are the ones the index was built from.
    pub fn candidates<'a>(
        &'a self,
        rules: &'a [Arc<Rule>],
        host: &'a str,
        path: &'a str,
    ) -> impl Iterator<Item = Candidate> + 'a {
        let find = move |table: &'a HashTable<Key>, name: &str, spelled: Spelled| {
            table
                .find(self.hasher.hash_one(name), |k| spelled(*k, rules) == name)
                .map(|k| &self.groups[k.group as usize])
        };
        let exact = (!self.exact.is_empty())
            .then(|| find(&self.exact, host, Key::exact))
            .flatten();
        let wildcards = host
            .char_indices()
            .filter(|&(i, c)| c == '.' && i > 0)
            .filter_map(move |(i, _)| find(&self.wildcard, &host[i..], Key::suffix));
        let wildcards = (!self.wildcard.is_empty())
            .then_some(wildcards)
            .into_iter()
            .flatten();
        exact
            .into_iter()
            .chain(wildcards)
            .chain(std::iter::once(&self.any))
            .flat_map(move |g| g.candidates(&self.pool, path))
    }
}

/// Builds a [`HostIndex`] as the rules are made: [`IndexBuilder::add`] after each batch of rules
/// is appended, [`IndexBuilder::finish`] with them all.
///
/// Each rule is read once, when it is added: at 10,000 Routes the rules no longer fit in the
/// caches, and reading them again in a pass of their own (their host lists, their matches) was
/// most of the build; a compile adds each Route's rules right after making them. Going back to
/// them (key comparisons, ties in the quick rank) is rare. The rules of one Route share their
/// host list, so only the first of them looks its hosts up.
pub struct IndexBuilder {
    hasher: RandomState,
    exact: HashTable<Key>,
    wildcard: HashTable<Key>,
    /// Each bucket's host rank; the groups are numbered in order of first appearance.
    ranks: Vec<HostRank>,
    /// (group, quick rank, candidate) in rule order; `u32::MAX` is the group of Routes without
    /// hosts.
    items: Vec<Item>,
    /// The host list of the last rule added, and its groups.
    last: Option<Arc<[String]>>,
    groups_of_last: Vec<u32>,
    /// How many rules were added.
    added: usize,
}

impl IndexBuilder {
    /// For about `rules` rules (sized for a host per rule, the usual large table: no rehash
    /// while it fills).
    pub fn with_capacity(rules: usize) -> Self {
        Self {
            hasher: RandomState::default(),
            exact: HashTable::with_capacity(rules),
            wildcard: HashTable::new(),
            ranks: Vec::with_capacity(rules),
            items: Vec::with_capacity(rules),
            last: None,
            groups_of_last: Vec::new(),
            added: 0,
        }
    }

    /// Adds the rules appended to `rules` since the last call. The rules added before must be
    /// the same (and in the same places), as far as the index reads them: their host lists,
    /// matches, creation times, Routes and rule indexes.
    pub fn add(&mut self, rules: &[Arc<Rule>]) {
        let from = self.added;
        self.added = rules.len();
        let hasher = &self.hasher;
        for (ri, rule) in rules.iter().enumerate().skip(from) {
            if !self
                .last
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, &rule.hostnames))
            {
                self.groups_of_last.clear();
                for (hi, h) in rule.hostnames.iter().enumerate() {
                    let (table, spelled, rank, name): (_, Spelled, _, &str) =
                        match h.strip_prefix('*') {
                            Some(suffix) => (
                                &mut self.wildcard,
                                Key::suffix as Spelled,
                                HostRank::Wildcard(suffix.len()),
                                suffix,
                            ),
                            None => (&mut self.exact, Key::exact as Spelled, HostRank::Exact, h),
                        };
                    let hash = hasher.hash_one(name);
                    let group = match table.find(hash, |k: &Key| spelled(*k, rules) == name) {
                        Some(k) => k.group,
                        None => {
                            let group = self.ranks.len() as u32;
                            self.ranks.push(rank);
                            let key = Key {
                                rule: ri as u32,
                                host: hi as u32,
                                group,
                            };
                            table.insert_unique(hash, key, |k| hasher.hash_one(spelled(*k, rules)));
                            group
                        }
                    };
                    self.groups_of_last.push(group);
                }
                self.last = Some(rule.hostnames.clone());
            }
            for (mi, m) in rule.matches.iter().enumerate() {
                let c = Candidate {
                    rule: ri as u32,
                    match_index: mi as u32,
                };
                let quick = rank_of(rule, mi, m, HostRank::Any).quick();
                if rule.hostnames.is_empty() {
                    self.items.push((u32::MAX, quick, c));
                }
                self.items
                    .extend(self.groups_of_last.iter().map(|&g| (g, quick, c)));
            }
        }
    }

    /// The index of `rules`: those added, and any appended since.
    pub fn finish(mut self, rules: &[Arc<Rule>]) -> HostIndex {
        self.add(rules);
        let (groups, any, pool) = sorted_groups(rules, &self.ranks, self.items);
        HostIndex {
            hasher: self.hasher,
            exact: self.exact,
            wildcard: self.wildcard,
            groups,
            any,
            pool,
        }
    }
}

/// A candidate of a group (`u32::MAX`: the Routes without hostnames) and its [`Quick`] rank.
type Item = (u32, Quick, Candidate);

/// The groups numbered in `items`, each sorted by [`Rank`], their candidates laid out in one
/// pool.
fn sorted_groups(
    rules: &[Arc<Rule>],
    ranks: &[HostRank],
    items: Vec<Item>,
) -> (Vec<Group>, Group, Box<[Ordered]>) {
    let slot = |g: u32| {
        if g == u32::MAX {
            ranks.len()
        } else {
            g as usize
        }
    };
    // A counting sort by group keeps each group's candidates in rule order (a stable base for
    // the sort by rank below, which ties break the way a full sort did).
    let mut starts = vec![0u32; ranks.len() + 2];
    for (g, ..) in &items {
        starts[slot(*g) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut by_group: Vec<(Quick, Candidate)> = Vec::with_capacity(items.len());
    // Every slot is written below: each item goes to its group's next one.
    by_group.resize(items.len(), (Quick::default(), Candidate::default()));
    for (g, quick, c) in items {
        let at = &mut next[slot(g)];
        by_group[*at as usize] = (quick, c);
        *at += 1;
    }
    let mut pool = Vec::with_capacity(by_group.len());
    let mut groups = Vec::with_capacity(ranks.len());
    for g in 0..=ranks.len() {
        let (start, end) = (starts[g], starts[g + 1]);
        let members = &mut by_group[start as usize..end as usize];
        let host = ranks.get(g).cloned().unwrap_or(HostRank::Any);
        if members.len() > 1 {
            // The host is the group's; the quick rank decides unless it ties.
            let rank = |c: &Candidate| {
                let rule = &rules[c.rule as usize];
                let mi = c.match_index as usize;
                rank_of(rule, mi, &rule.matches[mi], host.clone())
            };
            members.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| rank(&a.1).cmp(&rank(&b.1))));
        }
        pool.extend(
            members
                .iter()
                .enumerate()
                .map(|(order, &(_, c))| (order as u32, c)),
        );
        let members = &pool[start as usize..end as usize];
        let segments =
            (members.len() >= SEGMENT_INDEX_MIN).then(|| Box::new(Segments::new(members, rules)));
        groups.push(Group {
            start,
            len: end - start,
            segments,
        });
    }
    let any = groups.pop().unwrap_or_default();
    (groups, any, pool.into())
}

fn rank_of<'a>(rule: &'a Rule, match_index: usize, m: &RequestMatch, host: HostRank) -> Rank<'a> {
    Rank {
        host,
        path: match &m.path {
            PathMatcher::Exact(_) => PathRank::Exact,
            PathMatcher::Prefix(p) => PathRank::Prefix(p.len()),
            PathMatcher::RegularExpression(_) => PathRank::RegularExpression,
        },
        headers: m.headers.len(),
        method: m.method.is_some(),
        query: m.query_params.len(),
        created: rule.created,
        namespace: &rule.route.namespace,
        name: &rule.route.name,
        rule: rule.index,
        match_index,
    }
}
