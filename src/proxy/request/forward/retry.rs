//! The one retry decider, for every upstream protocol and both HTTP/1.1 clients: which
//! requests may be repeated, what an attempt's outcome means for the upstream's health, and
//! whether to try again.

use std::time::Duration;

use http::Method;

use crate::model::Retry;
use crate::proxy::transport::{ErrorKind, UpstreamError};
use crate::proxy::upstream::balance::random::random_u64;

/// RFC 9110 §9.2.2: safe to repeat.
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether a pooled connection found closed by the upstream may be replaced and the request
/// sent again on a new one (RFC 9112 §9.3.1.1: the upstream may have received it before it
/// closed, so only a request that is safe to repeat).
pub(crate) fn resend_if_stale(m: &Method) -> bool {
    idempotent(m)
}

/// The retry policy a request runs under: the rule's, unless the request is an upgrade or its
/// method is not safe to repeat and the rule did not opt in (`nonIdempotent`).
pub(crate) fn policy<'r>(
    rule: Option<&'r Retry>,
    method: &Method,
    upgrade: bool,
) -> Option<&'r Retry> {
    rule.filter(|r| !upgrade && (r.non_idempotent || idempotent(method)))
}

/// What one attempt's outcome means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Whether it counts as a success for passive health and the breaker.
    pub success: bool,
    /// Whether the policy asks for another attempt.
    pub retry: bool,
}

/// Judges an attempt: `Ok(status)` when the upstream answered, the error otherwise.
/// `None` when the outcome says nothing about the upstream (the client's body failed): no
/// health or breaker record, no retry.
pub(crate) fn judge(
    policy: Option<&Retry>,
    outcome: Result<u16, &UpstreamError>,
    is_failure_status: impl FnOnce(u16) -> bool,
) -> Option<Verdict> {
    let on = |f: &dyn Fn(&Retry) -> bool| policy.is_some_and(f);
    Some(match outcome {
        Ok(code) => Verdict {
            success: !is_failure_status(code),
            retry: on(&|r| r.on.status(code)),
        },
        Err(e) => Verdict {
            success: false,
            retry: match e.kind() {
                ErrorKind::ClientBody => return None,
                // Nothing was sent: safe whatever the method, when the policy asks for it.
                ErrorKind::Connect | ErrorKind::Tls => {
                    e.retry_safe() && on(&|r| r.on.connect_failure)
                }
                ErrorKind::Broken => on(&|r| r.on.reset),
                ErrorKind::Timeout => on(&|r| r.on.reset || r.on.gateway_error || r.on.any_5xx),
            },
        },
    })
}

/// Full jitter: a random wait up to base × 2^(attempt−1), capped at max.
pub(crate) fn backoff(r: &Retry, attempt: u32) -> Duration {
    let cap = r
        .backoff_base
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(r.backoff_max);
    let ms = cap.as_millis() as u64;
    if ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(random_u64() % (ms + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RetryOn;

    fn retry(on: RetryOn) -> Retry {
        Retry {
            attempts: 5,
            on,
            per_try_timeout: None,
            max_duration: None,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            non_idempotent: false,
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let r = retry(Default::default());
        for attempt in 1..6 {
            let cap = Duration::from_millis((100u64 << (attempt - 1)).min(300));
            for _ in 0..50 {
                assert!(backoff(&r, attempt) <= cap);
            }
        }
    }

    #[test]
    fn only_methods_safe_to_repeat_get_a_policy_unless_the_rule_opts_in() {
        let r = retry(Default::default());
        assert!(policy(Some(&r), &Method::GET, false).is_some());
        assert!(policy(Some(&r), &Method::POST, false).is_none());
        assert!(policy(Some(&r), &Method::GET, true).is_none(), "upgrades");
        let opted = Retry {
            non_idempotent: true,
            ..r
        };
        assert!(policy(Some(&opted), &Method::POST, false).is_some());
        assert!(resend_if_stale(&Method::GET) && !resend_if_stale(&Method::POST));
    }

    #[test]
    fn each_failure_is_retried_only_on_its_condition() {
        let five_xx = |c: u16| (500..600).contains(&c);
        let on_connect = retry(RetryOn {
            connect_failure: true,
            ..Default::default()
        });
        let connect = UpstreamError::new(ErrorKind::Connect, "refused");
        let reset = UpstreamError::new(ErrorKind::Broken, "reset");
        let v = judge(Some(&on_connect), Err(&connect), five_xx).unwrap();
        assert_eq!(
            v,
            Verdict {
                success: false,
                retry: true
            }
        );
        assert!(
            !judge(Some(&on_connect), Err(&reset), five_xx)
                .unwrap()
                .retry
        );
        assert!(
            !judge(None, Err(&connect), five_xx).unwrap().retry,
            "no policy"
        );
        let ok = judge(Some(&on_connect), Ok(200), five_xx).unwrap();
        assert_eq!(
            ok,
            Verdict {
                success: true,
                retry: false
            }
        );
        assert!(!judge(None, Ok(503), five_xx).unwrap().success);
        let body = UpstreamError::new(ErrorKind::ClientBody, "cut");
        assert_eq!(judge(Some(&on_connect), Err(&body), five_xx), None);
    }
}
