//! Properties (proptest) of the compiler and the matchers, over generated inputs.
//!
//! The compiler: it never panics and its table always validates, whatever the objects; the same
//! objects give the same table and diagnostics, whatever order they arrive in (watch events, or
//! documents in a file). The matchers: segment-aware prefixes, exact paths, anchored patterns and
//! percent-decoded query values agree with simple reference definitions.
//! (`PROPTEST_CASES=N` runs more cases.)

use std::collections::BTreeSet;

use http::{HeaderMap, Method};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use tidegate::controller::kube::index::Index;
use tidegate::controller::{CompileOptions, compile};
use tidegate::model::precedence::{HostRank, PathRank, Rank};
use tidegate::model::{PathMatcher, Pattern, RequestView, RoutingTable, Rule, query_pairs};

// ---- generated objects -------------------------------------------------------------------

/// Host names, good and bad (wildcards, IPs, ports, upper case, empty labels, too long).
fn hostname() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}\\.example\\.com",
        "\\*\\.[a-z]{1,6}\\.test",
        select(vec![
            "Shop.Example.COM",
            "10.0.0.1",
            "a..b",
            "a.example.com:80",
            "-bad.test",
            "*",
            "",
            "a_b.test",
        ])
        .prop_map(str::to_owned),
        "[a-z.*:_-]{0,12}",
    ]
}

fn path_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z]{0,6}(/[a-z0-9]{1,4}){0,2}/?",
        select(vec![
            "/",
            "api",
            "/a b",
            "/a?x",
            "(unclosed",
            "/v[0-9]+",
            ".*",
            ""
        ])
        .prop_map(str::to_owned),
    ]
}

fn path_match() -> impl Strategy<Value = Value> {
    (
        select(vec!["PathPrefix", "Exact", "RegularExpression"]),
        path_value(),
    )
        .prop_map(|(t, v)| json!({"type": t, "value": v}))
}

fn route_match() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(path_match()),
        proptest::option::of(select(vec!["GET", "POST", "get", "PURGE", ""])),
        proptest::collection::vec(
            (
                select(vec!["x-v", "X-V", "x y", "cookie"]),
                "[a-z0-9]{0,3}",
                any::<bool>(),
            ),
            0..3,
        ),
        proptest::collection::vec(("[a-z]{0,2}", "[a-z%0-9]{0,4}"), 0..2),
    )
        .prop_map(|(path, method, headers, query)| {
            let mut m = json!({});
            if let Some(p) = path {
                m["path"] = p;
            }
            if let Some(method) = method {
                m["method"] = json!(method);
            }
            let headers: Vec<Value> = headers
                .into_iter()
                .map(|(n, v, re)| {
                    let kind = if re { "RegularExpression" } else { "Exact" };
                    json!({"name": n, "value": v, "type": kind})
                })
                .collect();
            if !headers.is_empty() {
                m["headers"] = json!(headers);
            }
            let query: Vec<Value> = query
                .into_iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            if !query.is_empty() {
                m["queryParams"] = json!(query);
            }
            m
        })
}

fn filter() -> impl Strategy<Value = Value> {
    prop_oneof![
        (select(vec!["x-a", "Host", "x y", "content-length"]), "[ -~]{0,4}").prop_map(
            |(n, v)| json!({"requestHeaderModifier": {"set": [{"name": n, "value": v}], "remove": [n]}})
        ),
        select(vec!["server", "Connection"])
            .prop_map(|n| json!({"responseHeaderModifier": {"remove": [n]}})),
        (path_value(), any::<bool>()).prop_map(|(p, prefix)| {
            let key = if prefix { "replacePrefixMatch" } else { "replaceFullPath" };
            json!({"urlRewrite": {"path": {key: p}}})
        }),
        (
            select(vec!["http", "https", "ftp"]),
            select(vec![301u16, 302, 308, 200])
        )
            .prop_map(|(s, c)| json!({"requestRedirect": {"scheme": s, "statusCode": c}})),
        (100u16..700, "[a-z]{0,5}")
            .prop_map(|(s, b)| json!({"directResponse": {"status": s, "body": b}})),
        Just(json!({})),
        Just(json!({"urlRewrite": {}, "directResponse": {"status": 200}})),
    ]
}

fn backend_ref() -> impl Strategy<Value = Value> {
    (
        select(vec!["api", "web", "missing", "svc"]),
        proptest::option::of(select(vec!["Backend", "Service", "Pod"])),
        proptest::option::of(0u32..1_200_000),
        proptest::option::of(select(vec![0u16, 80, 8080])),
    )
        .prop_map(|(name, kind, weight, port)| {
            let mut r = json!({"name": name});
            if let Some(k) = kind {
                r["kind"] = json!(k);
            }
            if let Some(w) = weight {
                r["weight"] = json!(w);
            }
            if let Some(p) = port {
                r["port"] = json!(p);
            }
            r
        })
}

fn duration() -> impl Strategy<Value = String> {
    select(vec!["1s", "250ms", "0s", "1h30m", "5s", "10ms"]).prop_map(str::to_owned)
}

fn rule() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(select(vec!["api", "API", "web", "api"])),
        proptest::collection::vec(route_match(), 0..3),
        proptest::collection::vec(filter(), 0..3),
        proptest::collection::vec(backend_ref(), 0..3),
        proptest::option::of((duration(), duration())),
        proptest::option::of((
            0u32..12,
            proptest::collection::vec(select(vec!["reset", "5xx", "429", "0429", "nope"]), 0..3),
        )),
    )
        .prop_map(|(name, matches, filters, refs, timeouts, retry)| {
            let mut r = json!({"matches": matches, "filters": filters, "backendRefs": refs});
            if let Some(n) = name {
                r["name"] = json!(n);
            }
            if let Some((req, be)) = timeouts {
                r["timeouts"] = json!({"request": req, "backendRequest": be});
            }
            if let Some((attempts, on)) = retry {
                r["retry"] = json!({"attempts": attempts, "on": on});
            }
            r
        })
}

fn route_spec() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(hostname(), 0..3),
        proptest::collection::vec(rule(), 0..3),
        proptest::option::of(select(vec!["tidegate", "other"])),
    )
        .prop_map(|(hosts, rules, class)| {
            let mut s = json!({"hostnames": hosts, "rules": rules});
            if let Some(c) = class {
                s["ingressClassName"] = json!(c);
            }
            s
        })
}

fn backend_spec() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(
            select(vec![
                "127.0.0.1:8080",
                "[::1]:80",
                "api.internal:80 weight=3",
                "127.0.0.1:0",
                "nope",
                "x:80 weight=0",
            ]),
            0..3,
        ),
        proptest::option::of(select(vec!["http", "80", "grpc"])),
        proptest::option::of(select(vec!["RoundRobin", "ConsistentHash", "LeastRequest"])),
        any::<bool>(),
    )
        .prop_map(|(endpoints, service, algorithm, hash)| {
            let mut s = json!({"endpoints": endpoints});
            if let Some(port) = service {
                s["service"] = json!({"name": "svc", "port": port});
            }
            if let Some(a) = algorithm {
                s["loadBalancer"] = json!({"algorithm": a});
                if hash {
                    s["loadBalancer"]["hashOn"] = json!({"header": "x-user"});
                }
            }
            s
        })
}

/// A set of objects: Routes and Backends with generated specs, and two Services.
fn objects() -> impl Strategy<Value = Vec<Value>> {
    (
        proptest::collection::vec(route_spec(), 1..5),
        proptest::collection::vec(backend_spec(), 0..3),
    )
        .prop_map(|(routes, backends)| {
            let mut out = Vec::new();
            let names = ["api", "web", "svc"];
            for (i, spec) in backends.into_iter().enumerate() {
                out.push(json!({"apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
                    "metadata": {"name": names[i], "namespace": "default"}, "spec": spec}));
            }
            for (i, spec) in routes.into_iter().enumerate() {
                out.push(json!({"apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
                    "metadata": {"name": format!("r{i}"), "namespace": if i % 2 == 0 { "default" } else { "shop" }},
                    "spec": spec}));
            }
            for (name, ann) in [("svc", json!({})), ("svc-v2", json!({"tidegate.dev/canary-of": "svc", "tidegate.dev/canary-weight": "30"}))] {
                out.push(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "default", "annotations": ann},
                    "spec": {"ports": [{"name": "http", "port": 80}]}}));
            }
            out
        })
}

/// Feeds `objects` to the Kubernetes index in the given order (as watch events) and compiles:
/// the table, rendered (rules, backends, diagnostics).
fn compile_in_order(objects: &[Value], order: &[usize]) -> String {
    let mut index = Index::new(None);
    for &i in order {
        let o = objects[i].clone();
        let _ = match o["kind"].as_str().unwrap() {
            "Route" => index.apply_custom::<tidegate::api::Route>(decode(o)),
            "Backend" => index.apply_custom::<tidegate::api::Backend>(decode(o)),
            _ => index.apply_service(&serde_json::from_value(o).unwrap()),
        };
    }
    let opts = CompileOptions {
        discovery: true,
        ..CompileOptions::default()
    };
    let table = compile(&index.snapshot(Default::default()), &opts).table;
    table.validate().expect("a compiled table always validates");
    for d in &table.diagnostics {
        assert!(!d.message.is_empty(), "{d:?}");
        assert!(d.object.is_some() || d.file.is_some(), "{d:?}");
    }
    serde_json::to_string(&(&table.rules, &table.backends, &table.diagnostics)).unwrap()
}

/// As the watch decodes: through a guard, so an undecodable object is reported, not fatal.
#[allow(clippy::result_large_err)] // kube's DeserializeGuard payload, as in watch.rs
fn decode<K>(v: Value) -> Result<K, kube::core::error_boundary::InvalidObject>
where
    K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>,
{
    serde_json::from_value::<kube::core::DeserializeGuard<K>>(v)
        .expect("a guard always decodes")
        .0
}

/// The rule and match a lookup should find, by scanning every (rule, match) of the table and
/// keeping the best-ranked one that matches: what the host index must agree with.
fn best_by_scan(table: &RoutingTable, host: &str, req: &RequestView<'_>) -> Option<(usize, usize)> {
    let host_rank = |rule: &Rule| -> Option<HostRank> {
        if rule.hostnames.is_empty() {
            return Some(HostRank::Any);
        }
        rule.hostnames
            .iter()
            .filter_map(|h| match h.strip_prefix('*') {
                // As the index probes: the host's suffixes from each inner dot.
                Some(suffix) => host
                    .char_indices()
                    .any(|(i, c)| c == '.' && i > 0 && &host[i..] == suffix)
                    .then_some(HostRank::Wildcard(suffix.len())),
                None => (h == host).then_some(HostRank::Exact),
            })
            .min_by(|a, b| rank_key(a).cmp(&rank_key(b)))
    };
    let mut best: Option<(Rank<'_>, (usize, usize))> = None;
    for (ri, rule) in table.rules.iter().enumerate() {
        let Some(host) = host_rank(rule) else {
            continue;
        };
        for (mi, m) in rule.matches.iter().enumerate() {
            if !m.matches(req) {
                continue;
            }
            let rank = Rank {
                host: host.clone(),
                path: match &m.path {
                    PathMatcher::Exact(_) => PathRank::Exact,
                    PathMatcher::Prefix(p) => PathRank::Prefix(p.len()),
                    PathMatcher::RegularExpression(_) => PathRank::RegularExpression,
                },
                method: m.method.is_some(),
                headers: m.headers.len(),
                query: m.query_params.len(),
                created: rule.created,
                namespace: &rule.route.namespace,
                name: &rule.route.name,
                rule: rule.index,
                match_index: mi,
            };
            if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                best = Some((rank, (ri, mi)));
            }
        }
    }
    best.map(|(_, at)| at)
}

fn rank_key(h: &HostRank) -> (u8, std::cmp::Reverse<usize>) {
    match h {
        HostRank::Exact => (0, std::cmp::Reverse(0)),
        HostRank::Wildcard(n) => (1, std::cmp::Reverse(*n)),
        HostRank::Any => (2, std::cmp::Reverse(0)),
    }
}

/// A Route with enough rules on one host (and on a wildcard) that their groups are indexed by
/// first path segment.
fn crowded_route() -> Value {
    let rules: Vec<Value> = (0..24)
        .map(|i| {
            let seg = ["a", "b", "ab", ""][i % 4];
            let kind = ["PathPrefix", "Exact", "PathPrefix", "RegularExpression"][i % 4];
            let value = match kind {
                "RegularExpression" => "/a.*".to_owned(),
                _ => format!("/{seg}/{}", i / 4),
            };
            json!({"matches": [{"path": {"type": kind, "value": value}}], "backendRefs": []})
        })
        .collect();
    json!({"apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "crowded", "namespace": "default"},
        "spec": {"hostnames": ["crowded.example.com", "*.example.com"], "rules": rules}})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200)
    ))]

    #[test]
    fn the_compiler_is_total_deterministic_and_blind_to_arrival_order(
        objects in objects(),
        seed in any::<u64>(),
    ) {
        let forward: Vec<usize> = (0..objects.len()).collect();
        let first = compile_in_order(&objects, &forward);
        prop_assert_eq!(&first, &compile_in_order(&objects, &forward));
        let mut shuffled = forward.clone();
        // A permutation from the seed (Fisher-Yates with a small LCG).
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(&first, &compile_in_order(&objects, &shuffled));
        let reversed: Vec<usize> = forward.iter().rev().copied().collect();
        prop_assert_eq!(&first, &compile_in_order(&objects, &reversed));
    }

    #[test]
    fn documents_in_any_order_and_any_file_give_the_same_table(
        objects in objects(),
        split in 0usize..6,
    ) {
        // Standalone mode: our kinds only, written to files in two different layouts.
        let ours: Vec<&Value> = objects.iter().filter(|o| o["apiVersion"] != "v1").collect();
        let yaml = |docs: &[&Value]| {
            docs.iter()
                .map(|d| serde_yaml_ng::to_string(d).unwrap())
                .collect::<Vec<_>>()
                .join("---\n")
        };
        let one = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("all.yaml"), yaml(&ours)).unwrap();
        let two = tempfile::tempdir().unwrap();
        let mut reversed = ours.clone();
        reversed.reverse();
        let cut = split.min(reversed.len());
        std::fs::write(two.path().join("a.yaml"), yaml(&reversed[..cut])).unwrap();
        std::fs::write(two.path().join("b.yaml"), yaml(&reversed[cut..])).unwrap();
        let table = |dir: &std::path::Path| {
            let snap = tidegate::controller::file::FileSource::new(dir).load().unwrap();
            let t = compile(&snap, &CompileOptions::default()).table;
            t.validate().expect("valid");
            // File names and document positions differ by construction; the rest may not.
            let diags: BTreeSet<String> = t
                .diagnostics
                .iter()
                .map(|d| format!("{:?} {} {:?} {}", d.object, d.field, d.severity, d.message))
                .collect();
            serde_json::to_string(&(&t.rules, &t.backends, diags)).unwrap()
        };
        prop_assert_eq!(table(one.path()), table(two.path()));
    }

    #[test]
    fn a_lookup_finds_the_best_ranked_matching_rule_of_all(
        objects in objects(),
        crowded in any::<bool>(),
        paths in proptest::collection::vec(path_value(), 1..6),
    ) {
        let mut index = Index::new(None);
        let routes = objects
            .iter()
            .filter(|o| o["kind"] == "Route")
            .cloned()
            .chain(crowded.then(crowded_route));
        let mut hosts: BTreeSet<String> =
            ["other.test", "crowded.example.com", "x.crowded.example.com", "example.com"]
                .into_iter()
                .map(str::to_owned)
                .collect();
        for o in routes {
            for h in o["spec"]["hostnames"].as_array().into_iter().flatten() {
                let h = h.as_str().unwrap_or_default().to_ascii_lowercase();
                hosts.insert(h.replace('*', "any"));
                hosts.insert(format!("deep.{}", h.replace('*', "x")));
            }
            let _ = index.apply_custom::<tidegate::api::Route>(decode(o));
        }
        let table = compile(&index.snapshot(Default::default()), &CompileOptions::default()).table;
        let headers = HeaderMap::new();
        for host in &hosts {
            for path in paths.iter().chain([&"/a/1".to_owned(), &"/ab/2".to_owned(), &"/".to_owned()]) {
                let req = RequestView { method: &Method::GET, path, query: None, headers: &headers };
                let found = table
                    .lookup(host, &req)
                    .map(|h| (h.index, h.rule.matches.iter().position(|m| std::ptr::eq(m, h.matched)).unwrap()));
                prop_assert_eq!(found, best_by_scan(&table, host, &req), "{} {}", host, path);
            }
        }
    }

    // ---- matchers ----------------------------------------------------------------------

    #[test]
    fn a_prefix_matches_whole_segments(
        prefix in proptest::collection::vec("[a-c]{0,2}", 0..4),
        trailing in any::<bool>(),
        path in proptest::collection::vec("[a-c]{0,2}", 0..5),
    ) {
        let mut p = format!("/{}", prefix.join("/"));
        if trailing && !p.ends_with('/') {
            p.push('/');
        }
        let request = format!("/{}", path.join("/"));
        // Reference: the prefix's segments (trailing empty ones dropped) begin the path's.
        let segs = |s: &str| -> Vec<String> { s.split('/').skip(1).map(str::to_owned).collect() };
        let mut want = segs(&p);
        while want.last().is_some_and(|s| s.is_empty()) {
            want.pop();
        }
        let have = segs(&request);
        let expected = want.is_empty() || (have.len() >= want.len() && have[..want.len()] == want[..]);
        prop_assert_eq!(PathMatcher::prefix(&p).matches(&request), expected, "{} vs {}", p, request);
    }

    #[test]
    fn exact_paths_and_literal_patterns_match_only_themselves(
        a in "[ -~]{0,12}",
        b in "[ -~]{0,12}",
    ) {
        prop_assert_eq!(PathMatcher::Exact(a.clone()).matches(&b), a == b);
        let literal = Pattern::new(&regex::escape(&a)).unwrap();
        prop_assert!(literal.is_match(&a));
        prop_assert_eq!(literal.is_match(&b), a == b);
        // Anchored: a pattern never matches inside a longer value.
        let (longer, earlier) = (format!("{}x", a), format!("x{}", a));
        prop_assert!(!literal.is_match(&longer));
        prop_assert!(!literal.is_match(&earlier));
    }

    #[test]
    fn query_values_round_trip_through_percent_encoding(
        pairs in proptest::collection::vec(("[a-z]{1,4}", "\\PC{0,6}"), 0..4),
    ) {
        let encode = |s: &str| -> String {
            s.bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect()
        };
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let query = query.join("&");
        let decoded: Vec<(String, String)> =
            query_pairs(&query).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        prop_assert_eq!(decoded, pairs);
    }

    #[test]
    fn a_header_condition_holds_when_any_value_matches(
        values in proptest::collection::vec("[a-c]{0,2}", 0..4),
        wanted in "[a-c]{0,2}",
    ) {
        let mut headers = HeaderMap::new();
        for v in &values {
            headers.append("x-v", v.parse().unwrap());
        }
        let m = tidegate::model::RequestMatch {
            headers: vec![tidegate::model::HeaderMatcher {
                name: http::HeaderName::from_static("x-v"),
                value: tidegate::model::ValueMatcher::Exact(wanted.clone()),
            }],
            ..Default::default()
        };
        let req = RequestView { method: &Method::GET, path: "/", query: None, headers: &headers };
        prop_assert_eq!(m.matches(&req), values.contains(&wanted));
    }
}
