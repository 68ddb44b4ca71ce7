//! Compiler behaviour across compiles: last accepted versions, isolation of bad objects.

use crate::api::{BackendRef, BackendSpec, RouteRule, RouteSpec};
use crate::controller::snapshot::{Meta, Obj, Snapshot};
use crate::model::{Diagnostic, Kind, ObjectRef, Reason, Severity};

use super::{CompileOptions, compile};

fn backend(name: &str, endpoints: &[&str]) -> Obj<BackendSpec> {
    Obj {
        meta: Meta::new(ObjectRef::new(Kind::Backend, "default", name)),
        spec: std::sync::Arc::new(BackendSpec {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    }
}

fn route(name: &str, backend: &str) -> Obj<RouteSpec> {
    Obj {
        meta: Meta::new(ObjectRef::new(Kind::Route, "default", name)),
        spec: std::sync::Arc::new(RouteSpec {
            rules: vec![RouteRule {
                backend_refs: vec![BackendRef {
                    name: backend.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn snapshot(routes: Vec<Obj<RouteSpec>>, backends: Vec<Obj<BackendSpec>>) -> Snapshot {
    Snapshot {
        routes: std::sync::Arc::new(routes.into_iter().map(|o| (o.meta.id.clone(), o)).collect()),
        backends: backends
            .into_iter()
            .map(|o| (o.meta.id.clone(), o))
            .collect(),
        ..Default::default()
    }
}

fn errors_of<'a>(diags: &'a [Diagnostic], name: &str) -> Vec<&'a Diagnostic> {
    diags
        .iter()
        .filter(|d| d.is_error() && d.object.as_ref().is_some_and(|o| &*o.name == name))
        .collect()
}

/// A Route whose backendRef asks for more than the largest weight: an invalid spec.
fn invalid_route(name: &str, backend: &str) -> Obj<RouteSpec> {
    let mut r = route(name, backend);
    std::sync::Arc::make_mut(&mut r.spec).rules[0].backend_refs[0].weight = Some(5_000_000);
    r
}

#[test]
fn a_bad_route_does_not_affect_the_others() {
    let snap = snapshot(
        vec![route("good", "app"), invalid_route("bad", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let out = compile(&snap, &CompileOptions::default());
    assert_eq!(out.table.rules.len(), 1);
    assert_eq!(&*out.table.rules[0].route.name, "good");
    let bad = errors_of(&out.table.diagnostics, "bad");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason, Reason::Invalid);
    assert_eq!(bad[0].field, "spec.rules[0].backendRefs[0].weight");
}

#[test]
fn a_missing_backend_answers_500_for_its_rule_and_the_route_stays_accepted() {
    use crate::model::{Action, NoBackend};
    let snap = snapshot(
        vec![route("good", "app"), route("dangling", "missing")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let out = compile(&snap, &CompileOptions::default());
    assert!(!out.table.has_errors(), "{:?}", out.table.diagnostics);
    let rule = out
        .table
        .rules
        .iter()
        .find(|r| &*r.route.name == "dangling")
        .expect("the Route is served");
    let Action::Forward { backends, schedule } = &rule.action else {
        panic!("{:?}", rule.action)
    };
    assert_eq!(backends[0].backend, None);
    assert_eq!(
        crate::model::pick(backends, schedule, 0, &Default::default()).err(),
        Some(NoBackend::Unresolved)
    );
    let d = out
        .table
        .diagnostics
        .iter()
        .find(|d| d.object.as_ref().is_some_and(|o| &*o.name == "dangling"))
        .expect("a finding");
    assert_eq!(d.severity, Severity::Warning);
    assert_eq!(d.reason, Reason::RefNotFound);
    assert_eq!(d.field, "spec.rules[0].backendRefs[0].name");
    assert!(d.message.ends_with("the rule answers 500"), "{}", d.message);
    assert!(
        out.accepted
            .routes
            .contains_key(&ObjectRef::new(Kind::Route, "default", "dangling"))
    );
}

#[test]
fn an_unresolved_backend_ref_keeps_its_share_of_the_split() {
    use crate::model::{Action, NoBackend};
    let mut split = route("split", "app");
    std::sync::Arc::make_mut(&mut split.spec).rules[0].backend_refs[0].weight = Some(3);
    std::sync::Arc::make_mut(&mut split.spec).rules[0]
        .backend_refs
        .push(BackendRef {
            name: "missing".into(),
            ..Default::default()
        });
    let out = compile(
        &snapshot(vec![split], vec![backend("app", &["127.0.0.1:1"])]),
        &CompileOptions::default(),
    );
    let Action::Forward { backends, schedule } = &out.table.rules[0].action else {
        panic!()
    };
    let picks: Vec<_> = (0..schedule.len())
        .map(|n| {
            crate::model::pick(backends, schedule, n, &Default::default())
                .map(|p| p.backend)
                .err()
        })
        .collect();
    let unresolved = picks
        .iter()
        .filter(|p| **p == Some(NoBackend::Unresolved))
        .count();
    assert_eq!((unresolved, picks.len()), (1, 4), "{picks:?}");
    let d = &out.table.diagnostics[0];
    assert!(
        d.message
            .ends_with("its share of the rule's requests (1 of 4) is answered 500"),
        "{}",
        d.message
    );
}

#[test]
fn a_rule_without_backend_refs_answers_500_and_the_route_is_accepted() {
    use crate::model::{Action, NoBackend};
    let mut r = route("empty", "app");
    std::sync::Arc::make_mut(&mut r.spec).rules[0]
        .backend_refs
        .clear();
    let out = compile(&snapshot(vec![r], vec![]), &CompileOptions::default());
    assert!(!out.table.has_errors(), "{:?}", out.table.diagnostics);
    let Action::Forward { backends, schedule } = &out.table.rules[0].action else {
        panic!()
    };
    assert_eq!(
        crate::model::pick(backends, schedule, 0, &Default::default()).err(),
        Some(NoBackend::NoBackendRefs)
    );
}

#[test]
fn a_broken_update_keeps_the_last_accepted_version() {
    let first = snapshot(
        vec![route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let accepted = compile(&first, &CompileOptions::default()).accepted;

    // The Route's new spec is invalid.
    let mut second = snapshot(
        vec![invalid_route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    second.accepted = accepted;
    let out = compile(&second, &CompileOptions::default());
    assert_eq!(
        out.table.rules.len(),
        1,
        "the last accepted version keeps serving"
    );
    assert_eq!(&*out.table.rules[0].route.name, "web");
    assert_eq!(
        errors_of(&out.table.diagnostics, "web").len(),
        1,
        "the new version is still reported"
    );
    assert!(
        out.table
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("last accepted")),
        "{:?}",
        out.table.diagnostics
    );
    assert_eq!(
        out.accepted.routes[&ObjectRef::new(Kind::Route, "default", "web")].spec,
        route("web", "app").spec
    );
}

#[test]
fn an_update_to_a_missing_backend_is_served_not_replaced_by_the_last_accepted_version() {
    let first = snapshot(
        vec![route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let accepted = compile(&first, &CompileOptions::default()).accepted;
    // References are resolved per rule (Gateway API): the new version serves, with 500 for
    // the rule whose backend is missing, instead of the old version.
    let mut second = snapshot(
        vec![route("web", "nope")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    second.accepted = accepted;
    let out = compile(&second, &CompileOptions::default());
    assert!(!out.table.has_errors(), "{:?}", out.table.diagnostics);
    assert_eq!(
        out.accepted.routes[&ObjectRef::new(Kind::Route, "default", "web")].spec,
        route("web", "nope").spec
    );
    assert!(
        !out.table
            .diagnostics
            .iter()
            .any(|d| d.message.contains("last accepted"))
    );
}

#[test]
fn an_unreadable_document_keeps_the_last_accepted_version() {
    let first = snapshot(
        vec![route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let accepted = compile(&first, &CompileOptions::default()).accepted;

    let id = ObjectRef::new(Kind::Route, "default", "web");
    let mut second = snapshot(vec![], vec![backend("app", &["127.0.0.1:1"])]);
    second.problems.push(Diagnostic::error(
        &id,
        "spec.rules",
        Reason::Malformed,
        "bad",
    ));
    second.accepted = accepted;
    let out = compile(&second, &CompileOptions::default());
    assert_eq!(out.table.rules.len(), 1);
}

/// The accepted map names each Route's serving version, whichever Routes before or after it
/// serve their current one: the last accepted version of a broken update, none for a new
/// broken Route, the kept version of an unreadable one; with and without the compile cache.
#[test]
fn the_accepted_routes_are_each_routes_serving_version() {
    let backends = || vec![backend("app", &["127.0.0.1:1"])];
    let first = snapshot(
        vec![route("a", "app"), route("b", "app"), route("d", "app")],
        backends(),
    );
    let opts = CompileOptions::default();
    let mut cache = super::CompileCache::default();
    let accepted = super::compile_cached(&first, &opts, &mut cache).accepted;
    assert_eq!(accepted.routes.len(), 3);
    let d = ObjectRef::new(Kind::Route, "default", "d");
    for cached in [false, true] {
        let mut second = snapshot(
            vec![
                route("a", "app"),
                invalid_route("b", "app"),
                invalid_route("c", "app"),
                route("e", "app"),
            ],
            backends(),
        );
        second
            .problems
            .push(Diagnostic::error(&d, "spec", Reason::Malformed, "bad"));
        second.accepted = accepted.clone();
        let out = if cached {
            super::compile_cached(&second, &opts, &mut cache)
        } else {
            compile(&second, &opts)
        };
        let names: Vec<&str> = out.accepted.routes.keys().map(|k| &*k.name).collect();
        assert_eq!(names, ["a", "b", "d", "e"], "cached: {cached}");
        let id = |n: &str| ObjectRef::new(Kind::Route, "default", n);
        assert_eq!(out.accepted.routes[&id("b")].spec, route("b", "app").spec);
        assert!(std::sync::Arc::ptr_eq(
            &out.accepted.routes[&id("a")].spec,
            &second.routes[&id("a")].spec
        ));
        assert!(std::sync::Arc::ptr_eq(
            &out.accepted.routes[&d].spec,
            &accepted.routes[&d].spec
        ));
    }
}

#[test]
fn a_deleted_object_is_gone_even_with_an_accepted_version() {
    let first = snapshot(
        vec![route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let accepted = compile(&first, &CompileOptions::default()).accepted;
    let mut second = snapshot(vec![], vec![backend("app", &["127.0.0.1:1"])]);
    second.accepted = accepted;
    let out = compile(&second, &CompileOptions::default());
    assert!(out.table.rules.is_empty());
    assert!(out.accepted.routes.is_empty());
}

#[test]
fn a_route_to_a_broken_backend_falls_back_with_it() {
    let first = snapshot(
        vec![route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let accepted = compile(&first, &CompileOptions::default()).accepted;
    // The Backend loses its endpoints: it is rejected, its last version serves, and so the
    // Route that points at it still compiles.
    let mut second = snapshot(vec![route("web", "app")], vec![backend("app", &[])]);
    second.accepted = accepted;
    let out = compile(&second, &CompileOptions::default());
    assert_eq!(out.table.backends.len(), 1);
    assert_eq!(&*out.table.backends[0].endpoints[0].address, "127.0.0.1:1");
    assert_eq!(out.table.rules.len(), 1);
    assert!(errors_of(&out.table.diagnostics, "web").is_empty());
}

#[test]
fn a_route_moved_to_another_class_is_not_served_by_its_last_accepted_version() {
    let first = snapshot(
        vec![route("web", "app")],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let accepted = compile(&first, &CompileOptions::default()).accepted;
    let mut moved = route("web", "app");
    std::sync::Arc::make_mut(&mut moved.spec).ingress_class_name = Some("someone-else".into());
    let mut second = snapshot(vec![moved], vec![backend("app", &["127.0.0.1:1"])]);
    second.accepted = accepted;
    let out = compile(&second, &CompileOptions::default());
    assert!(out.table.rules.is_empty(), "{:?}", out.table.rules);
    assert!(out.accepted.routes.is_empty());
}

#[test]
fn compile_is_deterministic() {
    let snap = snapshot(
        vec![
            route("b", "app"),
            route("a", "app"),
            route("c", "missing"),
            invalid_route("d", "app"),
        ],
        vec![backend("app", &["127.0.0.1:1", "127.0.0.1:2"])],
    );
    let a = compile(&snap, &CompileOptions::default());
    let b = compile(&snap, &CompileOptions::default());
    assert_eq!(
        serde_json::to_string(&a.table).unwrap(),
        serde_json::to_string(&b.table).unwrap()
    );
    let names: Vec<_> = a.table.rules.iter().map(|r| &*r.route.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

mod lookup {
    //! Precedence through a compiled table: which rule a request lands on.

    use http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::api::{HeaderMatch, PathMatch, PathMatchType, RouteMatch};
    use crate::model::{RequestView, RoutingTable};

    fn r(name: &str, hosts: &[&str], m: RouteMatch) -> Obj<RouteSpec> {
        let mut o = route(name, "app");
        std::sync::Arc::make_mut(&mut o.spec).hostnames =
            hosts.iter().map(|h| h.to_string()).collect();
        std::sync::Arc::make_mut(&mut o.spec).rules[0].matches = vec![m];
        o
    }

    fn path(kind: PathMatchType, value: &str) -> RouteMatch {
        RouteMatch {
            path: Some(PathMatch {
                kind,
                value: value.into(),
            }),
            ..Default::default()
        }
    }

    fn table(routes: Vec<Obj<RouteSpec>>) -> RoutingTable {
        let out = compile(
            &snapshot(routes, vec![backend("app", &["127.0.0.1:1"])]),
            &CompileOptions::default(),
        );
        assert!(!out.table.has_errors(), "{:?}", out.table.diagnostics);
        out.table
    }

    fn winner(
        t: &RoutingTable,
        host: &str,
        p: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        let view = RequestView {
            method: &Method::GET,
            path: p,
            query: None,
            headers: &h,
        };
        t.lookup(host, &view)
            .map(|hit| hit.rule.route.name.to_string())
    }

    #[test]
    fn exact_host_route_beats_wildcard_route() {
        let t = table(vec![
            r(
                "wild",
                &["*.example.com"],
                path(PathMatchType::PathPrefix, "/"),
            ),
            r(
                "exact",
                &["shop.example.com"],
                path(PathMatchType::PathPrefix, "/"),
            ),
        ]);
        assert_eq!(
            winner(&t, "shop.example.com", "/", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            winner(&t, "blog.example.com", "/", &[]).as_deref(),
            Some("wild")
        );
    }

    #[test]
    fn unmatched_exact_host_rules_fall_through_to_wildcard_then_any_host() {
        let t = table(vec![
            r(
                "exact",
                &["shop.example.com"],
                path(PathMatchType::PathPrefix, "/api"),
            ),
            r(
                "wild",
                &["*.example.com"],
                path(PathMatchType::PathPrefix, "/static"),
            ),
            r("any", &[], path(PathMatchType::PathPrefix, "/")),
        ]);
        assert_eq!(
            winner(&t, "shop.example.com", "/api/x", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            winner(&t, "shop.example.com", "/static/a.css", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(
            winner(&t, "shop.example.com", "/other", &[]).as_deref(),
            Some("any")
        );
        assert_eq!(winner(&t, "unknown.test", "/", &[]).as_deref(), Some("any"));
    }

    #[test]
    fn wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
        let t = table(vec![r(
            "wild",
            &["*.example.com"],
            path(PathMatchType::PathPrefix, "/"),
        )]);
        assert_eq!(
            winner(&t, "a.example.com", "/", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(
            winner(&t, "a.b.example.com", "/", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(winner(&t, "example.com", "/", &[]), None);
        assert_eq!(winner(&t, "badexample.com", "/", &[]), None);
    }

    #[test]
    fn longer_wildcard_beats_shorter_wildcard() {
        let t = table(vec![
            r(
                "short",
                &["*.example.com"],
                path(PathMatchType::PathPrefix, "/"),
            ),
            r(
                "long",
                &["*.eu.example.com"],
                path(PathMatchType::PathPrefix, "/"),
            ),
        ]);
        assert_eq!(
            winner(&t, "shop.eu.example.com", "/", &[]).as_deref(),
            Some("long")
        );
        assert_eq!(
            winner(&t, "shop.us.example.com", "/", &[]).as_deref(),
            Some("short")
        );
    }

    #[test]
    fn exact_path_beats_longer_prefix_and_prefix_beats_regex() {
        let t = table(vec![
            r(
                "regex",
                &[],
                path(PathMatchType::RegularExpression, "/a/.*"),
            ),
            r("prefix", &[], path(PathMatchType::PathPrefix, "/a/b")),
            r("exact", &[], path(PathMatchType::Exact, "/a/b")),
        ]);
        assert_eq!(winner(&t, "h", "/a/b", &[]).as_deref(), Some("exact"));
        assert_eq!(winner(&t, "h", "/a/b/c", &[]).as_deref(), Some("prefix"));
        assert_eq!(winner(&t, "h", "/a/z", &[]).as_deref(), Some("regex"));
    }

    #[test]
    fn more_header_matches_beat_fewer() {
        let hm = |n: &str, v: &str| HeaderMatch {
            name: n.into(),
            value: v.into(),
            kind: Default::default(),
        };
        let one = RouteMatch {
            headers: vec![hm("x-a", "1")],
            ..Default::default()
        };
        let two = RouteMatch {
            headers: vec![hm("x-a", "1"), hm("x-b", "2")],
            ..Default::default()
        };
        let t = table(vec![r("one", &[], one), r("two", &[], two)]);
        assert_eq!(
            winner(&t, "h", "/", &[("x-a", "1"), ("x-b", "2")]).as_deref(),
            Some("two")
        );
        assert_eq!(
            winner(&t, "h", "/", &[("x-a", "1")]).as_deref(),
            Some("one")
        );
        assert_eq!(winner(&t, "h", "/", &[]), None);
    }

    #[test]
    fn a_method_match_beats_more_header_matches() {
        let hm = |n: &str, v: &str| HeaderMatch {
            name: n.into(),
            value: v.into(),
            kind: Default::default(),
        };
        let headers = RouteMatch {
            headers: vec![hm("x-a", "1"), hm("x-b", "2")],
            ..Default::default()
        };
        let method = RouteMatch {
            method: Some("GET".into()),
            ..Default::default()
        };
        let t = table(vec![r("headers", &[], headers), r("method", &[], method)]);
        assert_eq!(
            winner(&t, "h", "/", &[("x-a", "1"), ("x-b", "2")]).as_deref(),
            Some("method")
        );
    }

    #[test]
    fn older_route_wins_identical_matches_then_namespace_and_name() {
        let mut newer = r("a-newer", &[], path(PathMatchType::PathPrefix, "/"));
        newer.meta.created = Some(2_000);
        let mut older = r("z-older", &[], path(PathMatchType::PathPrefix, "/"));
        older.meta.created = Some(1_000);
        let t = table(vec![newer, older]);
        assert_eq!(winner(&t, "h", "/", &[]).as_deref(), Some("z-older"));
        let t = table(vec![
            r("b", &[], path(PathMatchType::PathPrefix, "/")),
            r("a", &[], path(PathMatchType::PathPrefix, "/")),
        ]);
        assert_eq!(winner(&t, "h", "/", &[]).as_deref(), Some("a"));
    }
}

#[test]
fn a_broken_ingress_update_keeps_its_last_accepted_version() {
    use crate::controller::objects::{
        IngressBackendInfo, IngressInfo, IngressPathInfo, IngressRuleInfo, PortRef, ServiceInfo,
        ServicePortInfo,
    };
    let svc = Obj {
        meta: Meta::new(ObjectRef::new(Kind::Service, "default", "web")),
        spec: std::sync::Arc::new(ServiceInfo {
            ports: vec![ServicePortInfo {
                name: "http".into(),
                port: 80,
                protocol: "TCP".into(),
            }],
            ..Default::default()
        }),
    };
    let ingress = |path_type: &str| Obj {
        meta: Meta::new(ObjectRef::new(Kind::Ingress, "default", "shop")),
        spec: std::sync::Arc::new(IngressInfo {
            class_name: Some(crate::api::DEFAULT_INGRESS_CLASS.into()),
            rules: vec![IngressRuleInfo {
                host: Some("shop.test".into()),
                paths: vec![IngressPathInfo {
                    path: Some("/".into()),
                    path_type: path_type.into(),
                    backend: IngressBackendInfo::Service {
                        name: "web".into(),
                        port: Some(PortRef::Number(80)),
                    },
                }],
            }],
            ..Default::default()
        }),
    };
    let opts = CompileOptions {
        discovery: true,
        ..CompileOptions::default()
    };
    let snap = |ing: Obj<IngressInfo>, accepted| Snapshot {
        services: [(svc.meta.id.clone(), svc.clone())].into(),
        ingresses: [(ing.meta.id.clone(), ing)].into(),
        accepted,
        ..Default::default()
    };
    let first = compile(&snap(ingress("Prefix"), Default::default()), &opts);
    assert_eq!(first.table.rules.len(), 1);
    let second = compile(&snap(ingress("Regex"), first.accepted), &opts);
    assert_eq!(
        second.table.rules.len(),
        1,
        "the last accepted version serves"
    );
    assert!(second.table.has_errors());
}

#[test]
fn an_ingress_default_backend_takes_the_services_first_port_and_a_missing_one_is_a_warning() {
    use crate::controller::objects::{
        IngressBackendInfo, IngressInfo, IngressPathInfo, IngressRuleInfo, PortRef, ServiceInfo,
        ServicePortInfo,
    };
    let svc = |name: &str, ports: &[(&str, u16)]| Obj {
        meta: Meta::new(ObjectRef::new(Kind::Service, "default", name)),
        spec: std::sync::Arc::new(ServiceInfo {
            ports: ports
                .iter()
                .map(|(n, p)| ServicePortInfo {
                    name: (*n).into(),
                    port: *p,
                    protocol: "TCP".into(),
                })
                .collect(),
            ..Default::default()
        }),
    };
    let ingress = |default_backend: &str| Obj {
        meta: Meta::new(ObjectRef::new(Kind::Ingress, "default", "shop")),
        spec: std::sync::Arc::new(IngressInfo {
            class_name: Some(crate::api::DEFAULT_INGRESS_CLASS.into()),
            annotations: [
                (
                    "nginx.ingress.kubernetes.io/default-backend".to_owned(),
                    default_backend.to_owned(),
                ),
                (
                    "nginx.ingress.kubernetes.io/custom-http-errors".to_owned(),
                    "404".to_owned(),
                ),
            ]
            .into(),
            rules: vec![IngressRuleInfo {
                host: Some("shop.test".into()),
                paths: vec![IngressPathInfo {
                    path: Some("/".into()),
                    path_type: "Prefix".into(),
                    backend: IngressBackendInfo::Service {
                        name: "web".into(),
                        port: Some(PortRef::Number(80)),
                    },
                }],
            }],
            ..Default::default()
        }),
    };
    let opts = CompileOptions {
        discovery: true,
        ..CompileOptions::default()
    };
    let services = [
        svc("web", &[("http", 80)]),
        svc("pages", &[("metrics", 9090), ("http", 8080)]),
    ];
    let snap = |ing: Obj<IngressInfo>| Snapshot {
        services: services
            .iter()
            .map(|s| (s.meta.id.clone(), s.clone()))
            .collect(),
        ingresses: [(ing.meta.id.clone(), ing)].into(),
        ..Default::default()
    };
    let out = compile(&snap(ingress("pages")), &opts);
    assert!(
        out.table.diagnostics.is_empty(),
        "{:?}",
        out.table.diagnostics
    );
    let rule = &out.table.rules[0];
    let fallback = rule.fallback_backend.as_ref().unwrap();
    assert_eq!(&*fallback.label, "default/pages:9090", "the first port");
    let errors = rule.error_responses.as_ref().unwrap();
    assert_eq!(
        (errors.statuses.as_slice(), errors.backend.index),
        (&[404][..], fallback.index)
    );

    let out = compile(&snap(ingress("nope")), &opts);
    let rule = &out.table.rules[0];
    assert!(rule.fallback_backend.is_none() && rule.error_responses.is_none());
    assert_eq!(
        out.table.diagnostics.len(),
        1,
        "{:?}",
        out.table.diagnostics
    );
    let d = &out.table.diagnostics[0];
    assert_eq!(d.severity, Severity::Warning);
    assert_eq!(
        d.field,
        "metadata.annotations[nginx.ingress.kubernetes.io/default-backend]"
    );
    assert!(d.message.contains("default/nope not found"), "{d:?}");
}

mod segment_index {
    //! The first-segment index must not change which rule wins.

    use http::{HeaderMap, Method};

    use super::*;
    use crate::api::{PathMatch, PathMatchType, RouteMatch};
    use crate::model::RequestView;

    #[test]
    fn many_prefixes_on_one_host_keep_precedence() {
        let mut routes = Vec::new();
        for i in 0..500 {
            let mut r = route(&format!("r{i:03}"), "app");
            std::sync::Arc::make_mut(&mut r.spec).rules[0].matches = vec![RouteMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::PathPrefix,
                    value: format!("/p{i}"),
                }),
                ..Default::default()
            }];
            routes.push(r);
        }
        let mut regex = route("regex", "app");
        std::sync::Arc::make_mut(&mut regex.spec).rules[0].matches = vec![RouteMatch {
            path: Some(PathMatch {
                kind: PathMatchType::RegularExpression,
                value: "/p1[0-9]/special".into(),
            }),
            ..Default::default()
        }];
        let mut deep = route("deep", "app");
        std::sync::Arc::make_mut(&mut deep.spec).rules[0].matches = vec![RouteMatch {
            path: Some(PathMatch {
                kind: PathMatchType::PathPrefix,
                value: "/p7/deeper".into(),
            }),
            ..Default::default()
        }];
        let mut exact = route("exact-root", "app");
        std::sync::Arc::make_mut(&mut exact.spec).rules[0].matches = vec![RouteMatch {
            path: Some(PathMatch {
                kind: PathMatchType::Exact,
                value: "/".into(),
            }),
            ..Default::default()
        }];
        routes.extend([regex, deep, exact, route("catch-all", "app")]);
        let out = compile(
            &snapshot(routes, vec![backend("app", &["127.0.0.1:1"])]),
            &CompileOptions::default(),
        );
        let h = HeaderMap::new();
        let win = |p: &str| {
            let view = RequestView {
                method: &Method::GET,
                path: p,
                query: None,
                headers: &h,
            };
            out.table
                .lookup("any.test", &view)
                .map(|hit| hit.rule.route.name.clone())
        };
        assert_eq!(win("/p42/x").as_deref(), Some("r042"));
        assert_eq!(
            win("/p7/deeper/x").as_deref(),
            Some("deep"),
            "longer prefix in the same segment"
        );
        assert_eq!(win("/p7/other").as_deref(), Some("r007"));
        assert_eq!(
            win("/p12/special").as_deref(),
            Some("r012"),
            "prefix beats regex"
        );
        assert_eq!(win("/nope").as_deref(), Some("catch-all"));
        assert_eq!(win("/").as_deref(), Some("exact-root"));
        assert_eq!(
            win("*").as_deref(),
            None,
            "not an origin-form path: only any-path rules could match"
        );
    }
}

#[test]
fn candidates_pair_each_object_with_its_last_accepted_version_and_keep_unreadable_ones() {
    let map = |names: &[&str]| -> std::collections::BTreeMap<ObjectRef, Obj<BackendSpec>> {
        names
            .iter()
            .map(|n| {
                let o = backend(n, &["10.0.0.1:80"]);
                (o.meta.id.clone(), o)
            })
            .collect()
    };
    let current = map(&["a", "c", "f"]);
    let accepted = map(&["a", "b", "d", "e", "g"]);
    let id = |n: &str| ObjectRef::new(Kind::Backend, "default", n);
    let (b, e) = (id("b"), id("e"));
    // b and e could not be read: their last accepted versions are compiled; d is gone.
    let unreadable = [&b, &e].into_iter().collect();
    let got: Vec<_> = super::candidates(&current, &accepted, &unreadable)
        .into_iter()
        .map(|(id, cur, old)| {
            assert!(cur.is_none_or(|c| std::ptr::eq(c, &current[id])));
            assert!(old.is_none_or(|o| std::ptr::eq(o, &accepted[id])));
            (&*id.name, cur.is_some(), old.is_some())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a", true, true),
            ("b", false, true),
            ("c", true, false),
            ("e", false, true),
            ("f", true, false),
        ]
    );
}

/// The host index a compile builds as it makes each Route's rules (and, with a cache, as it
/// reuses them) offers every host and path the candidates an index built from the finished
/// rules offers: exact hosts, wildcards, Routes without hostnames, several rules a Route.
#[test]
fn the_index_built_while_compiling_is_the_one_built_after() {
    use crate::api::{PathMatch, PathMatchType, RouteMatch};
    use crate::model::HostIndex;
    let rule = |kind, path: &str| RouteRule {
        matches: vec![RouteMatch {
            path: Some(PathMatch {
                kind,
                value: path.into(),
            }),
            ..Default::default()
        }],
        backend_refs: vec![BackendRef {
            name: "app".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let routed = |name: &str, hosts: &[&str], paths: &[(PathMatchType, &str)]| {
        let mut r = route(name, "app");
        let spec = std::sync::Arc::make_mut(&mut r.spec);
        spec.hostnames = hosts.iter().map(|h| h.to_string()).collect();
        spec.rules = paths.iter().map(|&(k, p)| rule(k, p)).collect();
        r
    };
    let (prefix, exact) = (PathMatchType::PathPrefix, PathMatchType::Exact);
    let mut snap = snapshot(
        vec![
            routed("a", &["a.example.com"], &[(prefix, "/"), (exact, "/x")]),
            routed(
                "b",
                &["a.example.com", "*.example.com"],
                &[(prefix, "/api")],
            ),
            routed("c", &[], &[(prefix, "/"), (prefix, "/x")]),
            routed("d", &["*.example.com"], &[(exact, "/api")]),
            routed("e", &["b.example.com", "B.example.com"], &[(prefix, "/x")]),
        ],
        vec![backend("app", &["127.0.0.1:1"])],
    );
    let probes = [
        ("a.example.com", "/"),
        ("a.example.com", "/x"),
        ("a.example.com", "/api/v1"),
        ("b.example.com", "/x"),
        ("c.example.com", "/api"),
        ("other.org", "/x"),
    ];
    let same = |table: &crate::model::RoutingTable| {
        assert!(!table.has_errors(), "{:?}", table.diagnostics);
        let after = HostIndex::build(&table.rules);
        for (host, path) in probes {
            let got: Vec<_> = table
                .host_index()
                .candidates(&table.rules, host, path)
                .collect();
            let want: Vec<_> = after.candidates(&table.rules, host, path).collect();
            assert!(!want.is_empty(), "{host}{path}");
            assert_eq!(got, want, "{host}{path}");
        }
    };
    same(&compile(&snap, &CompileOptions::default()).table);
    let opts = CompileOptions::default();
    let mut cache = super::CompileCache::default();
    snap.accepted = super::compile_cached(&snap, &opts, &mut cache).accepted;
    // Route c changed: a, b, d and e come from the cache, around it.
    let changed = routed("c", &[], &[(prefix, "/"), (exact, "/y")]);
    std::sync::Arc::make_mut(&mut snap.routes).insert(changed.meta.id.clone(), changed);
    same(&super::compile_cached(&snap, &opts, &mut cache).table);
}
