//! Micro-benchmarks of the routing hot path and the compiler.
//!
//! `cargo bench --bench routing` (add `-- --quick` for a fast pass). Every configuration is built
//! in code: N Routes, each with a host, a header-matched path prefix, an exact path and a
//! catch-all, plus one Route without hostnames. Two table shapes:
//! - `distinct_hosts`: one host per Route, the usual large ingress (lookup is a hash probe);
//! - `shared_host`: every Route on one host with its own path prefix, the worst case (the
//!   candidates of that host are tried in precedence order).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use tidegate::api::{
    BackendRef, BackendSpec, HeaderMatch, PathMatch, PathMatchType, RouteMatch, RouteRule,
    RouteSpec, ValueMatchType,
};
use tidegate::controller::{
    CompileCache, CompileOptions, Meta, Obj, Snapshot, compile, compile_cached,
};
use tidegate::model::weighted::smooth_schedule;
use tidegate::model::{Endpoint, Kind, ObjectRef, RequestView, RoutingTable};
use tidegate::proxy::balance::{
    LeastRequest, Maglev, PickContext, Random, RoundRobin, Selector, WeightedRoundRobin,
};
use tidegate::proxy::{Registry, Router};

/// Table sizes the lookup is measured at.
const SIZES: [usize; 2] = [10, 10_000];
/// Header every header-matched rule looks at.
const TENANT: &str = "x-tenant";

#[derive(Clone, Copy)]
enum Shape {
    DistinctHosts,
    SharedHost,
}

fn backend_ref(name: &str, weight: Option<u32>) -> BackendRef {
    BackendRef {
        name: name.to_owned(),
        weight,
        ..Default::default()
    }
}

fn path(kind: PathMatchType, value: impl Into<String>) -> Option<PathMatch> {
    Some(PathMatch {
        kind,
        value: value.into(),
    })
}

/// Route `i`: `/svc{i}` with an `x-tenant` header to a 90/10 split, `/svc{i}/healthz` exactly,
/// and (distinct hosts only) a catch-all.
fn route(i: usize, shape: Shape) -> Obj<RouteSpec> {
    let prefix = match shape {
        Shape::DistinctHosts => "/api".to_owned(),
        Shape::SharedHost => format!("/svc{i}"),
    };
    let mut rules = vec![
        RouteRule {
            matches: vec![RouteMatch {
                path: path(PathMatchType::PathPrefix, prefix.clone()),
                headers: vec![HeaderMatch {
                    name: TENANT.to_owned(),
                    value: format!("t{i}"),
                    kind: ValueMatchType::Exact,
                }],
                ..Default::default()
            }],
            backend_refs: vec![
                backend_ref(&format!("app-{}", i % 100), Some(90)),
                backend_ref("canary", Some(10)),
            ],
            ..Default::default()
        },
        RouteRule {
            matches: vec![RouteMatch {
                path: path(PathMatchType::Exact, format!("{prefix}/healthz")),
                ..Default::default()
            }],
            backend_refs: vec![backend_ref(&format!("app-{}", i % 100), None)],
            ..Default::default()
        },
    ];
    let hostnames = match shape {
        Shape::DistinctHosts => {
            rules.push(RouteRule {
                backend_refs: vec![backend_ref(&format!("app-{}", i % 100), None)],
                ..Default::default()
            });
            vec![format!("svc{i}.example.com")]
        }
        Shape::SharedHost => vec!["api.example.com".to_owned()],
    };
    Obj {
        meta: Meta::new(ObjectRef::new(
            Kind::Route,
            "default",
            format!("route-{i:05}"),
        )),
        spec: Arc::new(RouteSpec {
            hostnames,
            rules,
            ..Default::default()
        }),
    }
}

/// The Route every host falls back to.
fn catch_all() -> Obj<RouteSpec> {
    Obj {
        meta: Meta::new(ObjectRef::new(Kind::Route, "default", "zz-catch-all")),
        spec: Arc::new(RouteSpec {
            rules: vec![RouteRule {
                backend_refs: vec![backend_ref("canary", None)],
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn backend(name: &str, port: u16) -> Obj<BackendSpec> {
    Obj {
        meta: Meta::new(ObjectRef::new(Kind::Backend, "default", name)),
        spec: Arc::new(BackendSpec {
            endpoints: vec![format!("127.0.0.1:{port}")],
            ..Default::default()
        }),
    }
}

fn snapshot(n: usize, shape: Shape) -> Snapshot {
    let mut snap = Snapshot::default();
    for o in (0..n).map(|i| route(i, shape)).chain([catch_all()]) {
        Arc::make_mut(&mut snap.routes).insert(o.meta.id.clone(), o);
    }
    let backends = (0..100u16).map(|i| backend(&format!("app-{i}"), 10_000 + i));
    for o in backends.chain([backend("canary", 9_999)]) {
        snap.backends.insert(o.meta.id.clone(), o);
    }
    snap
}

fn table(n: usize, shape: Shape) -> RoutingTable {
    let out = compile(&snapshot(n, shape), &CompileOptions::default());
    assert!(
        !out.table.has_errors(),
        "benchmark config rejected: {:?}",
        out.table.diagnostics
    );
    out.table
}

fn tenant(i: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(TENANT, HeaderValue::from_str(&format!("t{i}")).unwrap());
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in SIZES {
        let last = n - 1;
        let get = Method::GET;

        let t = table(n, Shape::DistinctHosts);
        let host = format!("svc{last}.example.com");
        let headers = tenant(last);
        let req = RequestView {
            method: &get,
            path: "/api/users/42",
            query: None,
            headers: &headers,
        };
        let label = |t: &RoutingTable, host: &str, req: &RequestView<'_>| {
            t.lookup(host, req).map(|h| h.rule.label.clone())
        };
        assert_eq!(
            label(&t, &host, &req).as_deref(),
            Some(format!("default/route-{last:05}").as_str())
        );
        g.bench_with_input(
            BenchmarkId::new("distinct_hosts/header_hit", n),
            &(&t, &host, req),
            |b, (t, host, req)| {
                b.iter(|| t.lookup(black_box(host), black_box(req)).map(|h| h.index))
            },
        );
        let unknown = RequestView {
            path: "/index.html",
            ..req
        };
        g.bench_with_input(
            BenchmarkId::new("distinct_hosts/unknown_host", n),
            &(&t, unknown),
            |b, (t, req)| {
                b.iter(|| {
                    t.lookup(black_box("www.other.org"), black_box(req))
                        .map(|h| h.index)
                })
            },
        );

        // One host: the request for the lowest-precedence Route, and one that only the
        // catch-all takes, walk the whole candidate list of that host.
        let t = table(n, Shape::SharedHost);
        let path = format!("/svc{last}/users/42");
        let req = RequestView {
            method: &get,
            path: &path,
            query: None,
            headers: &headers,
        };
        assert_eq!(
            label(&t, "api.example.com", &req).as_deref(),
            Some(format!("default/route-{last:05}").as_str())
        );
        g.bench_with_input(
            BenchmarkId::new("shared_host/header_hit", n),
            &(&t, req),
            |b, (t, req)| {
                b.iter(|| {
                    t.lookup(black_box("api.example.com"), black_box(req))
                        .map(|h| h.index)
                })
            },
        );
        let miss = RequestView {
            path: "/nothing/here",
            ..req
        };
        assert_eq!(
            label(&t, "api.example.com", &miss).as_deref(),
            Some("default/zz-catch-all")
        );
        g.bench_with_input(
            BenchmarkId::new("shared_host/fall_through", n),
            &(&t, miss),
            |b, (t, req)| {
                b.iter(|| {
                    t.lookup(black_box("api.example.com"), black_box(req))
                        .map(|h| h.index)
                })
            },
        );
    }
    g.finish();
}

fn compile_routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    // A full compile, snapshot to table, and the drop of that table: the gateway drops one
    // table per compile (the one the new table replaces). Timing the drop elsewhere does not
    // help: kept tables make the next compiles allocate fresh pages (measured: 74 ms either way).
    for n in [10, 10_000] {
        let snap = snapshot(n, Shape::DistinctHosts);
        let opts = CompileOptions::default();
        g.bench_with_input(BenchmarkId::new("routes", n), &snap, |b, snap| {
            b.iter(|| compile(black_box(snap), &opts).table.rules.len())
        });
    }
    // The drop alone: freeing a compiled 10,000-Route table (every rule is its own).
    {
        let snap = snapshot(10_000, Shape::DistinctHosts);
        let opts = CompileOptions::default();
        g.bench_function(BenchmarkId::new("drop", 10_000), |b| {
            b.iter_batched(
                || compile(&snap, &opts),
                |out| drop(black_box(out)),
                BatchSize::PerIteration,
            )
        });
    }
    // What a change costs once a compile has run: one Route changed (two versions taking
    // turns), the others reused from the cache; each compile's accepted versions feed the next,
    // as in a running controller.
    let mut snap = snapshot(10_000, Shape::DistinctHosts);
    let opts = CompileOptions::default();
    let mut cache = CompileCache::default();
    let versions = [route(0, Shape::DistinctHosts), {
        let mut r = route(0, Shape::DistinctHosts);
        Arc::make_mut(&mut r.spec)
            .hostnames
            .push("changed.example.com".to_owned());
        r
    }];
    for _ in 0..2 {
        snap.accepted = compile_cached(&snap, &opts, &mut cache).accepted;
    }
    let mut turn = 0;
    g.bench_function(BenchmarkId::new("one_change", 10_000), |b| {
        b.iter(|| {
            turn += 1;
            let v = versions[turn % 2].clone();
            Arc::make_mut(&mut snap.routes).insert(v.meta.id.clone(), v);
            let out = compile_cached(black_box(&snap), &opts, &mut cache);
            out.table.rules.len()
        })
    });
    // The proxy's side of every change: linking the new table to the live state (split
    // positions, backends, rate limits).
    let registry = Registry::new(Default::default());
    let linked = Arc::new(compile(&snap, &opts).table);
    let mut router = Router::link(linked.clone(), &registry);
    g.bench_function(BenchmarkId::new("link", 10_000), |b| {
        b.iter(|| {
            router = Router::link(black_box(linked.clone()), &registry);
            router.backends.len()
        })
    });
    g.finish();
}

fn weighted(c: &mut Criterion) {
    let mut g = c.benchmark_group("weighted");
    // Per request: the next backend of a rule's 90/10 split (one atomic add and two indexes).
    let t = Arc::new(table(10, Shape::DistinctHosts));
    let registry = Registry::new(Default::default());
    let router = Router::link(t.clone(), &registry);
    let (index, rule) = t
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(&r.action, tidegate::model::Action::Forward { backends, .. } if backends.len() == 2))
        .expect("a 90/10 rule");
    g.bench_function("pick_90_10", |b| {
        let headers = HeaderMap::new();
        b.iter(|| router.pick_backend(black_box(index), black_box(rule), &headers))
    });
    // Per compile: building one cycle of the schedule.
    for (name, weights) in [
        ("90_10", vec![90, 10]),
        ("five_way", vec![50, 20, 15, 10, 5]),
        ("max_4096", vec![999_983, 1_000_003]),
    ] {
        g.bench_with_input(BenchmarkId::new("schedule", name), &weights, |b, w| {
            b.iter(|| smooth_schedule(black_box(w)).len())
        });
    }
    g.finish();
}

fn balance(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance");
    let ctx = PickContext {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        hash: Some(0x9e37_79b9_7f4a_7c15),
    };
    for n in [1usize, 3, 100] {
        let endpoints: Vec<Endpoint> = (0..n)
            .map(|i| Endpoint::new(&format!("10.0.{}.{}:8080", i / 256, i % 256)))
            .collect();
        let all = |_: usize| true;
        let selectors: [(&str, Box<dyn Selector>); 5] = [
            ("round_robin", Box::new(RoundRobin::default())),
            (
                "weighted_round_robin",
                Box::new(WeightedRoundRobin::new(&endpoints)),
            ),
            ("least_request", Box::new(LeastRequest)),
            ("random", Box::new(Random)),
            ("maglev", Box::new(Maglev::new(&endpoints))),
        ];
        for (name, s) in &selectors {
            g.bench_with_input(BenchmarkId::new(*name, n), &endpoints, |b, eps| {
                b.iter(|| s.pick(black_box(eps), &ctx, &all))
            });
        }
    }
    // What the proxy does per request: load the live endpoint set, pick, clone the address.
    let t = Arc::new(table(10, Shape::DistinctHosts));
    let registry = Registry::new(Default::default());
    let router = Router::link(t, &registry);
    let state = &router.backends[0];
    state.set_endpoints(
        (0..3)
            .map(|i| Endpoint::new(&format!("10.0.0.{i}:8080")))
            .collect(),
    );
    g.bench_function("backend_state_pick/3", |b| {
        b.iter(|| state.pick(black_box(&ctx)))
    });
    g.finish();
}

criterion_group!(benches, lookup, compile_routes, weighted, balance);
criterion_main!(benches);
