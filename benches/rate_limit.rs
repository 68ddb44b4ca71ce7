//! Micro-benchmarks of a Local rate-limit decision: hashing the client address with the
//! limit's SipHash key, then the store's decision (shard lock, set lookup, GCRA or sliding
//! window), as `proxy::request::rate_limit` does per request and limit.
//!
//! `cargo bench --bench rate_limit` (add `-- --quick` for a fast pass). The budget is
//! 100 ns per decision. Shapes: one hot key, and 100,000 clients (the default `maxKeys`)
//! visited in random order, so that most lookups miss the CPU caches; plus a store kept at
//! 1,000 keys while 100,000 clients come through (every new key evicts one).

use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prometheus_client::metrics::counter::Counter;
use tidegate::proxy::upstream::rate_limit::{Algorithm, Store, nonzero};

fn algorithms() -> [(&'static str, Algorithm); 2] {
    [
        (
            "token_bucket",
            // 100 per second, burst 200.
            Algorithm::TokenBucket {
                interval_ns: 10_000_000,
                burst: 200,
            },
        ),
        (
            "sliding_window",
            Algorithm::SlidingWindow {
                window_ns: 1_000_000_000,
                rate: 100,
            },
        ),
    ]
}

/// Client addresses in a fixed pseudo-random order (xorshift: no dependency, repeatable).
fn clients(n: usize) -> Vec<Ipv4Addr> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Ipv4Addr::from((x >> 32) as u32)
        })
        .collect()
}

fn decide(c: &mut Criterion) {
    let hasher = std::collections::hash_map::RandomState::new();
    let hash = |ip: &Ipv4Addr| {
        let mut h = hasher.build_hasher();
        h.write(&[1, 4]);
        h.write(&ip.octets());
        nonzero(h.finish())
    };
    let mut g = c.benchmark_group("rate_limit_local_decide");
    g.measurement_time(Duration::from_secs(3));
    for (name, alg) in algorithms() {
        for (keys, max_keys) in [(1usize, 100_000usize), (100_000, 100_000), (100_000, 1_000)] {
            let store = Store::new(alg, max_keys, Counter::default());
            let ips = clients(keys);
            // Warm the store: every client seen once.
            let mut now = 1u64;
            for ip in &ips {
                store.decide(hash(ip), now);
            }
            let mut i = 0usize;
            let id = BenchmarkId::new(name, format!("{keys}_clients_max_keys_{max_keys}"));
            g.bench_function(id, |b| {
                b.iter(|| {
                    i = (i + 1) % ips.len();
                    now += 1_000; // 1 µs per request: a mix of allowed and refused
                    black_box(store.decide(hash(black_box(&ips[i])), now))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
