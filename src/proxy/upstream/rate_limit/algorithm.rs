//! The counting rules, as pure functions over one key's state (two words) and a time in
//! nanoseconds. The Redis script (`request/rate_limit/decide.lua`) implements the same rules on
//! Redis's clock, in microseconds.
//!
//! - **Token bucket** (GCRA): the state is the theoretical arrival time (TAT) of the next
//!   request. Each request moves it `interval = per / rate` later; a request is refused when
//!   that would put the TAT more than `burst × interval` ahead of now. Over any span `d`, a key
//!   gets at most `burst + rate × d / per` requests, and exactly that when it asks often enough.
//! - **Sliding window** (two counters): counts in the current and the previous fixed window;
//!   the previous one is weighted by the share of it the sliding window still covers. Each fixed
//!   window admits at most `rate`; any span of length `per` at most `2 × rate − 1` in the worst
//!   case (everything at the end of one window, then at the start of the next), and exactly
//!   `rate` when requests are spread evenly.

/// One key's state: what [`Algorithm::decide`] reads and writes. All zeros is a key never seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Token bucket: the TAT. Sliding window: the fixed window's number plus one.
    pub a: u64,
    /// Sliding window: previous count in the high half, current count in the low half.
    pub b: u64,
}

/// The outcome of one decision for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may pass (and was counted).
    pub allowed: bool,
    /// Requests left right now (the `r` of the `RateLimit` header).
    pub remaining: u64,
    /// Refused: how long until a request would pass, in nanoseconds.
    pub retry_after_ns: u64,
    /// How long until the key is back to its full allowance (the `t` of `RateLimit`).
    pub reset_ns: u64,
}

/// A counting rule with its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// GCRA.
    TokenBucket {
        /// `per / rate`, rounded up (never more permissive than asked).
        interval_ns: u64,
        /// Requests allowed at once.
        burst: u64,
    },
    /// Two-counter sliding window.
    SlidingWindow {
        /// `per`.
        window_ns: u64,
        /// Requests per window.
        rate: u64,
    },
}

impl Algorithm {
    /// The rule for the model's limit.
    pub fn of(limit: &crate::model::Limit) -> Self {
        let per = limit.per.as_nanos() as u64;
        let rate = u64::from(limit.rate.max(1));
        match limit.algorithm {
            crate::model::Algorithm::TokenBucket { burst } => Algorithm::TokenBucket {
                interval_ns: per.div_ceil(rate).max(1),
                burst: u64::from(burst.max(1)),
            },
            crate::model::Algorithm::SlidingWindow => Algorithm::SlidingWindow {
                window_ns: per.max(1),
                rate,
            },
        }
    }

    /// Decides one request at `now` (ns, at least 1) and counts it if it passes.
    pub fn decide(&self, s: &mut State, now: u64) -> Verdict {
        match *self {
            Algorithm::TokenBucket { interval_ns, burst } => {
                let tolerance = interval_ns.saturating_mul(burst);
                let tat = s.a.max(now);
                let next = tat.saturating_add(interval_ns);
                let ahead = next - now;
                if ahead > tolerance {
                    return Verdict {
                        allowed: false,
                        remaining: 0,
                        retry_after_ns: ahead - tolerance,
                        reset_ns: tat - now,
                    };
                }
                s.a = next;
                Verdict {
                    allowed: true,
                    remaining: (tolerance - ahead) / interval_ns,
                    retry_after_ns: 0,
                    reset_ns: ahead,
                }
            }
            Algorithm::SlidingWindow { window_ns, rate } => {
                let (window, elapsed) = (now / window_ns + 1, now % window_ns);
                let (prev, curr) = sliding_counts(s, window);
                // Everything times window_ns, to stay in integers: estimate = weighted + curr.
                let weighted = u128::from(prev) * u128::from(window_ns - elapsed);
                let w = u128::from(window_ns);
                let limit = u128::from(rate) * w;
                let used = weighted + u128::from(curr) * w;
                if used + w > limit {
                    return Verdict {
                        allowed: false,
                        remaining: 0,
                        retry_after_ns: sliding_wait(prev, curr, elapsed, window_ns, rate),
                        reset_ns: window_ns - elapsed,
                    };
                }
                s.a = window;
                s.b = (prev << 32) | (curr + 1);
                Verdict {
                    allowed: true,
                    remaining: ((limit - used - w) / w) as u64,
                    retry_after_ns: 0,
                    reset_ns: window_ns - elapsed,
                }
            }
        }
    }

    /// Takes back one request that passed here but was refused by another limit.
    pub fn refund(&self, s: &mut State, now: u64) {
        match *self {
            Algorithm::TokenBucket { interval_ns, .. } => s.a = s.a.saturating_sub(interval_ns),
            Algorithm::SlidingWindow { window_ns, .. } => {
                if s.a == now / window_ns + 1 && s.b & 0xffff_ffff > 0 {
                    s.b -= 1;
                }
            }
        }
    }

    /// How much the key has used that it has not earned back yet: zero for a key that is as
    /// good as new (forgetting it loses nothing). Eviction takes the least active key.
    pub fn activity(&self, s: &State, now: u64) -> u64 {
        match *self {
            Algorithm::TokenBucket { .. } => s.a.saturating_sub(now),
            Algorithm::SlidingWindow { window_ns, .. } => {
                let (prev, curr) = sliding_counts(s, now / window_ns + 1);
                prev.saturating_add(curr)
            }
        }
    }

    /// Folds an evicted key's state into `ghost`, which then holds at least as much use as
    /// either: a key that starts from the ghost is never treated more kindly than it was.
    pub fn merge(&self, ghost: &mut State, evicted: &State) {
        match *self {
            Algorithm::TokenBucket { .. } => ghost.a = ghost.a.max(evicted.a),
            Algorithm::SlidingWindow { .. } => {
                let window = ghost.a.max(evicted.a);
                let (gp, gc) = sliding_counts(ghost, window);
                let (ep, ec) = sliding_counts(evicted, window);
                ghost.a = window;
                ghost.b = (gp.max(ep) << 32) | gc.max(ec);
            }
        }
    }
}

/// (previous, current) counts of a sliding-window state, as seen from fixed window `window`.
fn sliding_counts(s: &State, window: u64) -> (u64, u64) {
    let (prev, curr) = (s.b >> 32, s.b & 0xffff_ffff);
    if s.a == window {
        (prev, curr)
    } else if s.a + 1 == window {
        (curr, 0)
    } else {
        (0, 0)
    }
}

/// How long until the sliding window admits one more request (ns).
fn sliding_wait(prev: u64, curr: u64, elapsed: u64, window_ns: u64, rate: u64) -> u64 {
    let (w, rate) = (u128::from(window_ns), u128::from(rate));
    let (prev, curr) = (u128::from(prev), u128::from(curr));
    let left = w - u128::from(elapsed);
    // In this window, the previous window's weight decays: prev × (left − d) + (curr+1) × w
    // ≤ rate × w.
    if curr < rate && prev > 0 {
        let excess = prev * left + (curr + 1) * w - rate * w;
        let d = excess.div_ceil(prev);
        if d < left {
            return d as u64;
        }
    }
    // In the next window, this one's count is the previous: curr × (w − x) + w ≤ rate × w.
    let x = if curr == 0 {
        0
    } else {
        (curr * w + w).saturating_sub(rate * w).div_ceil(curr)
    };
    (left + x.min(w)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn bucket(rate: u64, per_s: u64, burst: u64) -> Algorithm {
        Algorithm::TokenBucket {
            interval_ns: (per_s * S).div_ceil(rate),
            burst,
        }
    }

    /// Requests asked for every `step` ns from `start` for `span` ns; how many passed.
    fn run(alg: &Algorithm, start: u64, step: u64, span: u64) -> u64 {
        let mut s = State::default();
        let mut passed = 0;
        let mut t = start;
        while t < start + span {
            passed += u64::from(alg.decide(&mut s, t).allowed);
            t += step;
        }
        passed
    }

    #[test]
    fn a_token_bucket_allows_its_burst_at_once_then_its_rate() {
        let alg = bucket(10, 1, 5);
        let mut s = State::default();
        let now = S;
        let passed: Vec<bool> = (0..7).map(|_| alg.decide(&mut s, now).allowed).collect();
        assert_eq!(passed, [true, true, true, true, true, false, false]);
        // A tenth of a second later, exactly one more.
        assert!(alg.decide(&mut s, now + S / 10).allowed);
        assert!(!alg.decide(&mut s, now + S / 10).allowed);
    }

    #[test]
    fn a_token_bucket_never_exceeds_burst_plus_rate_over_any_span() {
        let alg = bucket(100, 1, 20);
        // Hammering every 100 µs for 10 s: burst + 100/s × 10 s.
        let passed = run(&alg, S, 100_000, 10 * S);
        assert!(passed <= 20 + 1000, "{passed}");
        assert!(passed >= 20 + 1000 - 1, "{passed}");
    }

    #[test]
    fn a_token_bucket_says_when_to_come_back_and_how_much_is_left() {
        let alg = bucket(2, 1, 2);
        let mut s = State::default();
        let v = alg.decide(&mut s, S);
        assert_eq!((v.allowed, v.remaining), (true, 1));
        assert_eq!(v.reset_ns, S / 2);
        let v = alg.decide(&mut s, S);
        assert_eq!((v.allowed, v.remaining), (true, 0));
        assert_eq!(v.reset_ns, S);
        let v = alg.decide(&mut s, S);
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ns, S / 2);
        // Asking again exactly then passes.
        assert!(alg.decide(&mut s, S + v.retry_after_ns).allowed);
    }

    #[test]
    fn a_refund_gives_back_exactly_one_request() {
        let alg = bucket(1, 1, 1);
        let mut s = State::default();
        assert!(alg.decide(&mut s, S).allowed);
        assert!(!alg.decide(&mut s, S).allowed);
        alg.refund(&mut s, S);
        assert!(alg.decide(&mut s, S).allowed);
    }

    fn window(rate: u64, per_s: u64) -> Algorithm {
        Algorithm::SlidingWindow {
            window_ns: per_s * S,
            rate,
        }
    }

    #[test]
    fn a_sliding_window_allows_rate_per_fixed_window_and_never_twice_rate_per_span() {
        let alg = window(10, 1);
        let mut s = State::default();
        // Ten at the very end of window 5, then as many as pass just after it starts.
        let end = 6 * S - 1;
        let first = (0..20).filter(|_| alg.decide(&mut s, end).allowed).count();
        assert_eq!(first, 10);
        let next = (0..20)
            .filter(|_| alg.decide(&mut s, 6 * S + 1).allowed)
            .count();
        // The previous window still weighs almost fully: nothing (the bound is 2 × rate − 1).
        assert_eq!(next, 0);
        // Halfway through, half the previous count is forgotten.
        let half = (0..20)
            .filter(|_| alg.decide(&mut s, 6 * S + S / 2).allowed)
            .count();
        assert_eq!(half, 5);
    }

    #[test]
    fn a_sliding_window_over_a_long_run_admits_rate_per_window() {
        let alg = window(50, 1);
        // Asking every millisecond (20 × rate): the first window admits 50, each later one 49
        // (the previous window's last requests still weigh a little at the very end).
        let passed = run(&alg, S, 1_000_000, 10 * S);
        assert!((490..=500).contains(&passed), "{passed}");
    }

    #[test]
    fn a_sliding_window_tells_the_wait_that_makes_the_next_request_pass() {
        let alg = window(4, 1);
        for start in [S, S + S / 3, 2 * S - 1] {
            let mut s = State::default();
            let mut t = start;
            for _ in 0..30 {
                let v = alg.decide(&mut s, t);
                if !v.allowed {
                    assert!(v.retry_after_ns > 0);
                    let mut probe = s;
                    assert!(
                        alg.decide(&mut probe, t + v.retry_after_ns).allowed,
                        "at {t}"
                    );
                    if v.retry_after_ns > 1 {
                        let mut early = s;
                        assert!(!alg.decide(&mut early, t + v.retry_after_ns - 1).allowed);
                    }
                }
                t += S / 7;
            }
        }
    }

    #[test]
    fn merging_keeps_the_stricter_state() {
        let alg = bucket(1, 1, 1);
        let mut ghost = State { a: 5 * S, b: 0 };
        alg.merge(&mut ghost, &State { a: 9 * S, b: 0 });
        assert_eq!(ghost.a, 9 * S);
        alg.merge(&mut ghost, &State { a: 2 * S, b: 0 });
        assert_eq!(ghost.a, 9 * S);

        let alg = window(10, 1);
        let mut ghost = State {
            a: 3,
            b: (1 << 32) | 7,
        };
        alg.merge(
            &mut ghost,
            &State {
                a: 4,
                b: (2 << 32) | 3,
            },
        );
        // Seen from window 4: the ghost has prev 7, cur 0; the evicted prev 2, cur 3.
        assert_eq!(
            ghost,
            State {
                a: 4,
                b: (7 << 32) | 3
            }
        );
    }

    #[test]
    fn a_key_as_good_as_new_has_no_activity() {
        let alg = bucket(10, 1, 10);
        let mut s = State::default();
        assert_eq!(alg.activity(&s, S), 0);
        alg.decide(&mut s, S);
        assert!(alg.activity(&s, S) > 0);
        assert_eq!(alg.activity(&s, 2 * S), 0);
    }
}
