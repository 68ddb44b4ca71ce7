//! Global limits: one script call to Redis decides every Global limit of a request at once.

use std::sync::LazyLock;

use redis::Script;

use crate::model::Limit;
use crate::proxy::transport::{Redis, Unavailable};
use crate::proxy::upstream::rate_limit::Verdict;

/// The decision script: atomic over all of a request's Global limits, on Redis's clock.
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Its source (see the file for the contract).
pub const SOURCE: &str = include_str!("decide.lua");

/// Nanoseconds per millisecond (the script answers in milliseconds).
const MS: u64 = 1_000_000;

/// The Redis key of a limit's bucket for the key digest `digest`: the algorithm is part of
/// the name, so a limit that changes algorithm never reads the other's state.
pub fn redis_key(policy: &str, limit: &Limit, digest: &str) -> String {
    let alg = match limit.algorithm {
        crate::model::Algorithm::TokenBucket { .. } => "tb",
        crate::model::Algorithm::SlidingWindow => "sw",
    };
    format!("tidegate:rl:{alg}:{policy}/{}:{digest}", limit.name)
}

/// Decides `limits` (each with its Redis key) in one call.
pub async fn decide(
    redis: &Redis,
    limits: &[(&Limit, String)],
) -> Result<Vec<Verdict>, Unavailable> {
    let mut call = SCRIPT.prepare_invoke();
    for (limit, key) in limits {
        let (alg, burst) = match limit.algorithm {
            crate::model::Algorithm::TokenBucket { burst } => (1u8, burst),
            crate::model::Algorithm::SlidingWindow => (2u8, 0),
        };
        call.key(key.as_str())
            .arg(alg)
            .arg(limit.rate)
            .arg(limit.per.as_micros() as u64)
            .arg(burst);
    }
    let flat: Vec<i64> = redis.eval(&call).await?;
    if flat.len() != 4 * limits.len() {
        return Err(Unavailable::Response);
    }
    let ns = |ms: i64| (ms.max(0) as u64).saturating_mul(MS);
    Ok(flat
        .chunks_exact(4)
        .map(|v| Verdict {
            allowed: v[0] == 1,
            remaining: v[1].max(0) as u64,
            retry_after_ns: ns(v[2]),
            reset_ns: ns(v[3]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock-skew guarantee, read off the script: it takes the time from Redis (`TIME`)
    /// and from nowhere else; no argument carries a replica's time.
    #[test]
    fn the_script_uses_redis_time_only() {
        assert!(SOURCE.contains("redis.call('TIME')"));
        let code: String = SOURCE
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(code.matches("local now =").count(), 1);
        assert!(code.contains("local now = (tonumber(t[1])"));
        // Four arguments per limit, none of them a time of day.
        for i in 0..4 {
            assert!(code.contains(&format!("ARGV[4 * i - {i}]")) || i == 0);
        }
        assert!(code.contains("ARGV[4 * i]"));
        // Every write sets a TTL.
        assert!(code.contains("'PX'") && code.contains("PEXPIRE"));
    }
}
