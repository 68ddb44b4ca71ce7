//! One DNS query followed over time: what each lookup's outcome publishes, and when to look
//! up again (the TTL within the refresh bounds; a failure keeps the last good answer for
//! `maxStale`, then empties the set).

use std::time::Duration;

use tokio::time::Instant;

use super::resolve::{Failure, Outcome};
use crate::model::{DnsQuery, Endpoint};

/// How a query's endpoints stand after a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The last lookup answered with records.
    Resolved,
    /// The name has no records of the type (NOERROR, no answer): no endpoints, by the DNS's
    /// own word.
    Empty,
    /// Lookups fail; the last good answer still serves (for at most `maxStale`).
    Stale(Failure),
    /// Lookups fail and no good answer is left to serve: no endpoints.
    Failed(Failure),
}

/// What to do after one lookup.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// New endpoints to publish (`None`: keep what is published).
    pub publish: Option<Vec<Endpoint>>,
    /// Where the query stands now.
    pub state: State,
    /// The `/backends` note (`None` while current).
    pub note: Option<String>,
    /// When to look up again.
    pub next: Duration,
}

/// The memory of one followed query.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Whether a good answer is published (and may be served stale).
    has_answer: bool,
    /// Since when lookups have failed.
    failing_since: Option<Instant>,
}

impl Tracker {
    /// Takes one lookup's outcome at `now`.
    pub fn step(&mut self, query: &DnsQuery, outcome: Outcome, now: Instant) -> Step {
        match outcome {
            Outcome::Answer { endpoints, ttl } => {
                self.has_answer = true;
                self.failing_since = None;
                Step {
                    publish: Some(endpoints),
                    state: State::Resolved,
                    note: None,
                    next: query.next_refresh(ttl),
                }
            }
            Outcome::Empty { ttl } => {
                self.has_answer = false;
                self.failing_since = None;
                Step {
                    publish: Some(Vec::new()),
                    state: State::Empty,
                    note: Some(format!(
                        "{query}: the name has no {} records (NOERROR, empty answer): no endpoints",
                        query.record_type.as_str()
                    )),
                    next: query.next_refresh(ttl.unwrap_or(query.refresh_min)),
                }
            }
            Outcome::Failed(failure) => self.failed(query, failure, now),
        }
    }

    fn failed(&mut self, query: &DnsQuery, failure: Failure, now: Instant) -> Step {
        let since = *self.failing_since.get_or_insert(now);
        let failing_for = now.saturating_duration_since(since);
        let kind = failure.label();
        if self.has_answer && failing_for < query.max_stale {
            let left = query.max_stale - failing_for;
            return Step {
                publish: None,
                state: State::Stale(failure),
                note: Some(format!(
                    "{query}: lookups fail ({kind}) for {}s: serving the last good answer, stale, for {}s more",
                    failing_for.as_secs(),
                    left.as_secs()
                )),
                // Try again soon, and be on time to drop the stale answer.
                next: query.refresh_min.min(left),
            };
        }
        let publish = self.has_answer.then(Vec::new);
        self.has_answer = false;
        Step {
            publish,
            state: State::Failed(failure),
            note: Some(format!(
                "{query}: lookups fail ({kind}) for {}s and no good answer is left to serve (maxStale {}s): no endpoints",
                failing_for.as_secs(),
                query.max_stale.as_secs()
            )),
            next: query.refresh_min,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DnsRecordType;

    fn query() -> DnsQuery {
        DnsQuery {
            name: "api.internal".into(),
            record_type: DnsRecordType::A,
            port: 80,
            refresh_min: Duration::from_secs(2),
            refresh_max: Duration::from_secs(30),
            max_stale: Duration::from_secs(60),
        }
    }

    fn answer(ttl: u64) -> Outcome {
        Outcome::Answer {
            endpoints: vec![Endpoint::new("10.0.0.1:80")],
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn the_ttl_is_clamped_to_the_refresh_bounds() {
        let mut t = Tracker::default();
        let now = Instant::now();
        assert_eq!(
            t.step(&query(), answer(0), now).next,
            Duration::from_secs(2)
        );
        assert_eq!(
            t.step(&query(), answer(10), now).next,
            Duration::from_secs(10)
        );
        assert_eq!(
            t.step(&query(), answer(3600), now).next,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn an_empty_answer_is_published_at_once_and_is_not_an_outage() {
        let mut t = Tracker::default();
        let now = Instant::now();
        t.step(&query(), answer(5), now);
        let s = t.step(&query(), Outcome::Empty { ttl: None }, now);
        assert_eq!(s.publish, Some(Vec::new()));
        assert_eq!(s.state, State::Empty);
        assert!(s.note.unwrap().contains("NOERROR"));
    }

    #[test]
    fn a_failure_without_a_good_answer_publishes_nothing_new() {
        let mut t = Tracker::default();
        let s = t.step(&query(), Outcome::Failed(Failure::NxDomain), Instant::now());
        assert_eq!(s.publish, None, "nothing was published; nothing to empty");
        assert_eq!(s.state, State::Failed(Failure::NxDomain));
    }
}
