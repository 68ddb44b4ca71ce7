//! What the last compile made of each Route, reused by the next compile while neither the Route
//! nor anything a Route compiles against changed: at 10,000 Routes a change recompiles one
//! Route, not 10,000 (the table is still assembled whole, so its order, precedence and
//! conflicts are worked out as in a full compile).
//!
//! A Route's rules depend on the Route (spec and metadata), the options, the Backends (their
//! indexes and what they speak), the Secrets (basic authentication, JWT keys) and, for a
//! reference to a Service, on which Routes made that Service's backend before it. The first four
//! are compared as a whole ([`Inputs`]); a Route that read a Service is never reused.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::CompileOptions;
use crate::api::{BackendSpec, RouteSpec};
use crate::controller::objects::{ConfigMapInfo, SecretInfo, ServiceInfo};
use crate::controller::snapshot::{Obj, Snapshot};
use crate::model::{Diagnostic, ObjectRef, Rule};

/// Compiled Routes kept between compiles (hold one per source and pass it to
/// [`super::compile_cached`]; a fresh one compiles everything).
#[derive(Debug, Default)]
pub struct CompileCache {
    inputs: Option<Inputs>,
    /// By identity, as Routes are compiled: a compile walks the last one's entries alongside its
    /// Routes (one comparison a Route, where a lookup in a map of 2,000 cost ~1,400
    /// instructions) and keeps the entries it reused or made, in the same order. Boxed: each
    /// compile moves every entry into a new list, 8 bytes each rather than ~300 (3 MB of
    /// fresh memory written per compile at 10,000 Routes).
    routes: Vec<Slot>,
    /// The last compile's entries not yet reached by this one.
    last: std::vec::IntoIter<Slot>,
}

/// One Route's identity and entry.
type Slot = Box<(ObjectRef, Entry)>;

/// Everything besides the Route itself that a Route's compile reads.
#[derive(Debug, PartialEq)]
struct Inputs {
    opts: CompileOptions,
    backends: BTreeMap<ObjectRef, Obj<BackendSpec>>,
    /// The Backend versions this compile serves (current or last accepted): they and the
    /// options decide every Backend's index and settings.
    chosen_backends: BTreeMap<ObjectRef, Obj<BackendSpec>>,
    services: BTreeMap<ObjectRef, Obj<ServiceInfo>>,
    secrets: BTreeMap<(String, String), SecretInfo>,
    config_maps: BTreeMap<(String, String), ConfigMapInfo>,
    files: BTreeMap<std::path::PathBuf, Result<bytes::Bytes, String>>,
    problems: Vec<Diagnostic>,
}

impl Inputs {
    fn of(
        snap: &Snapshot,
        opts: &CompileOptions,
        chosen: &BTreeMap<ObjectRef, Obj<BackendSpec>>,
    ) -> Self {
        Self {
            opts: opts.clone(),
            backends: snap.backends.clone(),
            chosen_backends: chosen.clone(),
            services: snap.services.clone(),
            secrets: snap.secrets.clone(),
            config_maps: snap.config_maps.clone(),
            files: snap.files.clone(),
            problems: snap.problems.clone(),
        }
    }

    /// Whether `snap` and `opts` are what these were taken from, without copying them.
    fn same(
        &self,
        snap: &Snapshot,
        opts: &CompileOptions,
        chosen: &BTreeMap<ObjectRef, Obj<BackendSpec>>,
    ) -> bool {
        self.opts == *opts
            && same_objects(&self.backends, &snap.backends)
            && same_objects(&self.chosen_backends, chosen)
            && same_objects(&self.services, &snap.services)
            && self.secrets == snap.secrets
            && self.config_maps == snap.config_maps
            && self.files == snap.files
            && self.problems == snap.problems
    }
}

/// Equal maps of objects, the shared specs compared by address first.
fn same_objects<S: PartialEq>(
    a: &BTreeMap<ObjectRef, Obj<S>>,
    b: &BTreeMap<ObjectRef, Obj<S>>,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && va.meta == vb.meta && va.same_spec(vb))
}

fn same_version<S: PartialEq>(a: Option<&Obj<S>>, b: Option<&Obj<S>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.meta == b.meta && a.same_spec(b),
        _ => false,
    }
}

/// One Route's last compile: from which versions, what it found and what it made.
#[derive(Debug)]
struct Entry {
    current: Option<Obj<RouteSpec>>,
    fallback: Option<Obj<RouteSpec>>,
    found: Vec<Diagnostic>,
    /// Its rules, and whether they are the fallback's (the last accepted version's).
    rules: Option<(Vec<Arc<Rule>>, bool)>,
}

/// A reused compile of one Route.
pub(super) struct Reused<'c> {
    pub found: &'c [Diagnostic],
    pub rules: Option<(&'c [Arc<Rule>], bool)>,
}

impl CompileCache {
    /// Starts compiling the Routes of `snap`, once its Backends are `chosen`: forgets every
    /// Route if what Routes compile against changed. The Routes are then passed in identity
    /// order.
    pub(super) fn begin(
        &mut self,
        snap: &Snapshot,
        opts: &CompileOptions,
        chosen: &BTreeMap<ObjectRef, Obj<BackendSpec>>,
    ) {
        let last = std::mem::take(&mut self.routes);
        // An entry per Route (a new Route is one more than the last compile kept: sized from
        // that, the list was copied whole, 3 MB at 10,000 Routes, to make room for it).
        self.routes = Vec::with_capacity(snap.routes.len());
        if self
            .inputs
            .as_ref()
            .is_some_and(|i| i.same(snap, opts, chosen))
        {
            self.last = last.into_iter();
        } else {
            self.last = Vec::new().into_iter();
            self.inputs = Some(Inputs::of(snap, opts, chosen));
        }
    }

    /// The last compile's entry for Route `id`, if it had one; the entries before it are of
    /// Routes that are gone, and dropped.
    fn take_last(&mut self, id: &ObjectRef) -> Option<Slot> {
        debug_assert!(self.routes.last().is_none_or(|kept| kept.0 < *id));
        loop {
            match self.last.as_slice().first()?.0.cmp(id) {
                std::cmp::Ordering::Less => drop(self.last.next()),
                std::cmp::Ordering::Equal => return self.last.next(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }

    /// The last compile of Route `id`, if it was made from these versions.
    pub(super) fn get(
        &mut self,
        id: &ObjectRef,
        current: Option<&Obj<RouteSpec>>,
        fallback: Option<&Obj<RouteSpec>>,
    ) -> Option<Reused<'_>> {
        let slot = self.take_last(id)?;
        let e = &slot.1;
        // Rules made from the current version never read the fallback (the last accepted
        // version is compiled only when the current one is rejected): a change of fallback alone,
        // as on the compile after the first, when every Route gets one, changes nothing.
        let from_current = matches!(e.rules, Some((_, false)));
        if !same_version(e.current.as_ref(), current)
            || (!from_current && !same_version(e.fallback.as_ref(), fallback))
        {
            return None;
        }
        self.routes.push(slot);
        let e = &self.routes.last()?.1;
        Some(Reused {
            found: &e.found,
            rules: e.rules.as_ref().map(|(r, fb)| (r.as_slice(), *fb)),
        })
    }

    /// Keeps what Route `id` compiled to.
    pub(super) fn put(
        &mut self,
        id: &ObjectRef,
        current: Option<&Obj<RouteSpec>>,
        fallback: Option<&Obj<RouteSpec>>,
        found: Vec<Diagnostic>,
        rules: Option<(Vec<Arc<Rule>>, bool)>,
    ) {
        self.take_last(id);
        let entry = Entry {
            current: current.cloned(),
            fallback: fallback.cloned(),
            found,
            rules,
        };
        self.routes.push(Box::new((id.clone(), entry)));
    }

    /// Forgets Route `id` (its compile read a Service).
    pub(super) fn forget(&mut self, id: &ObjectRef) {
        self.take_last(id);
    }

    /// Ends a compile: drops the Routes it did not see.
    pub(super) fn end(&mut self) {
        self.last = Vec::new().into_iter();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::CompileCache;
    use crate::api::{BackendSpec, RateLimitPolicySpec, RouteSpec};
    use crate::controller::compile::{CompileOptions, Compiled, compile, compile_cached};
    use crate::controller::objects::{ServiceInfo, ServicePortInfo};
    use crate::controller::snapshot::{Accepted, Meta, Obj, Snapshot};
    use crate::model::{Diagnostic, Kind, ObjectRef, Reason};

    fn obj<S: serde::de::DeserializeOwned>(
        kind: Kind,
        name: &str,
        created: i64,
        yaml: &str,
    ) -> Obj<S> {
        let spec = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        Obj::new(
            Meta {
                created: Some(created),
                generation: Some(1),
                ..Meta::new(ObjectRef::new(kind, "default", name))
            },
            spec,
        )
    }

    fn route(name: &str, created: i64, yaml: &str) -> Obj<RouteSpec> {
        obj(Kind::Route, name, created, yaml)
    }

    fn put<S>(map: &mut BTreeMap<ObjectRef, Obj<S>>, o: Obj<S>) {
        map.insert(o.meta.id.clone(), o);
    }

    fn id(kind: Kind, name: &str) -> ObjectRef {
        ObjectRef::new(kind, "default", name)
    }

    fn service(ports: &[(&str, u16)]) -> Obj<ServiceInfo> {
        Obj::new(
            Meta::new(id(Kind::Service, "svc")),
            ServiceInfo {
                ports: ports
                    .iter()
                    .map(|(name, port)| ServicePortInfo {
                        name: (*name).to_owned(),
                        port: *port,
                        protocol: "TCP".to_owned(),
                    })
                    .collect(),
                ..Default::default()
            },
        )
    }

    /// Everything a compile produces, in a form two compiles can be compared by (the host
    /// index is built from the rules, so comparing rules covers it).
    fn assert_same(step: &str, cached: &Compiled, full: &Compiled) {
        let (a, b) = (&cached.table, &full.table);
        assert_eq!(
            format!("{:?}", a.rules),
            format!("{:?}", b.rules),
            "{step}: rules"
        );
        assert_eq!(
            format!("{:?}", a.backends),
            format!("{:?}", b.backends),
            "{step}: backends"
        );
        assert_eq!(
            format!("{:?}", a.rate_limits),
            format!("{:?}", b.rate_limits),
            "{step}"
        );
        assert_eq!(format!("{:?}", a.l4), format!("{:?}", b.l4), "{step}: l4");
        assert_eq!(a.diagnostics, b.diagnostics, "{step}: diagnostics");
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap(),
            "{step}: table"
        );
        assert_eq!(cached.accepted, full.accepted, "{step}: accepted versions");
    }

    #[test]
    fn a_cached_compile_equals_a_full_compile_over_a_sequence_of_changes() {
        let opts = CompileOptions {
            discovery: true,
            ..Default::default()
        };
        let mut snap = Snapshot::default();
        for (name, endpoint) in [("app", "127.0.0.1:1"), ("api", "127.0.0.1:2")] {
            let yaml = format!("endpoints: [\"{endpoint}\"]");
            put(
                &mut snap.backends,
                obj::<BackendSpec>(Kind::Backend, name, 1, &yaml),
            );
        }
        put(&mut snap.services, service(&[("http", 80)]));
        let routes = [
            route(
                "r1",
                10,
                "hostnames: [a.test]\nrules: [{backendRefs: [{name: app}]}]",
            ),
            // Same host, a longer path: precedence between Routes.
            route(
                "r2",
                11,
                "hostnames: [a.test]\nrules: [{matches: [{path: {value: /x}}], backendRefs: [{name: api, weight: 9}, {name: app}]}]",
            ),
            // A Service: made on demand, never reused.
            route(
                "r3",
                12,
                "hostnames: [s.test]\nrules: [{backendRefs: [{name: svc, kind: Service, port: 80}]}]",
            ),
            route(
                "r4",
                13,
                "hostnames: [l.test]\nrules: [{backendRefs: [{name: later}]}]",
            ),
            route(
                "r5",
                14,
                "hostnames: [t.test]\ntls: {secretName: cert, httpsRedirect: true}\nrules: [{backendRefs: [{name: app}]}]",
            ),
            route(
                "r6",
                15,
                "hostnames: [p.test]\nrules: [{name: limited, backendRefs: [{name: app}]}, {name: free, backendRefs: [{name: api}]}]",
            ),
            route(
                "r7",
                16,
                "rules: [{matches: [{path: {value: /any}}], backendRefs: [{name: app}]}]",
            ),
        ];
        for r in routes {
            put(Arc::make_mut(&mut snap.routes), r);
        }
        put(
            &mut snap.policies,
            obj::<RateLimitPolicySpec>(
                Kind::RateLimitPolicy,
                "limit",
                20,
                "targetRef: {kind: Route, name: r6, rule: limited}\nlimits: [{rate: 5, per: 1s}]",
            ),
        );

        let broken = |name: &str| {
            route(
                name,
                10,
                "hostnames: [a.test]\nrules: [{backendRefs: [{name: app, weight: 5000000}]}]",
            )
        };
        type Change = Box<dyn Fn(&mut Snapshot)>;
        let changes: Vec<(&str, Change)> = vec![
            ("first compile", Box::new(|_| {})),
            ("nothing changed", Box::new(|_| {})),
            (
                "a Route on a taken host and path",
                Box::new(|s| {
                    put(
                        Arc::make_mut(&mut s.routes),
                        route(
                            "r8",
                            17,
                            "hostnames: [a.test]\nrules: [{backendRefs: [{name: api}]}]",
                        ),
                    );
                }),
            ),
            (
                "a Route changed",
                Box::new(|s| {
                    put(
                        Arc::make_mut(&mut s.routes),
                        route(
                            "r2",
                            11,
                            "hostnames: [a.test, b.test]\nrules: [{matches: [{path: {value: /y}}], backendRefs: [{name: api}]}]",
                        ),
                    );
                }),
            ),
            (
                "a Route broken: its last accepted version serves",
                Box::new(move |s| {
                    put(Arc::make_mut(&mut s.routes), broken("r1"));
                }),
            ),
            ("still broken", Box::new(|_| {})),
            (
                "a referenced Backend appears",
                Box::new(|s| {
                    put(
                        &mut s.backends,
                        obj(Kind::Backend, "later", 2, "endpoints: [\"127.0.0.1:3\"]"),
                    );
                }),
            ),
            (
                "a referenced Backend goes",
                Box::new(|s| {
                    s.backends.remove(&id(Kind::Backend, "api"));
                }),
            ),
            (
                "a Route deleted",
                Box::new(|s| {
                    Arc::make_mut(&mut s.routes).remove(&id(Kind::Route, "r8"));
                }),
            ),
            (
                "a broken Route fixed",
                Box::new(|s| {
                    put(
                        Arc::make_mut(&mut s.routes),
                        route(
                            "r1",
                            10,
                            "hostnames: [a.test]\nrules: [{backendRefs: [{name: later}]}]",
                        ),
                    );
                }),
            ),
            (
                "a Service's port renamed",
                Box::new(|s| {
                    put(&mut s.services, service(&[("web", 80), ("admin", 81)]));
                }),
            ),
            (
                "the Service goes",
                Box::new(|s| {
                    s.services.clear();
                }),
            ),
            (
                "a Route moved to another class",
                Box::new(|s| {
                    put(
                        Arc::make_mut(&mut s.routes),
                        route(
                            "r5",
                            14,
                            "ingressClassName: other\nhostnames: [t.test]\nrules: [{backendRefs: [{name: app}]}]",
                        ),
                    );
                }),
            ),
            (
                "a Route unreadable",
                Box::new(|s| {
                    let gone = id(Kind::Route, "r6");
                    Arc::make_mut(&mut s.routes).remove(&gone);
                    s.problems.push(Diagnostic::error(
                        &gone,
                        "",
                        Reason::Invalid,
                        "cannot be read",
                    ));
                }),
            ),
            (
                "the policy goes",
                Box::new(|s| {
                    s.policies.clear();
                }),
            ),
            (
                "readable again, on a new host",
                Box::new(|s| {
                    s.problems.clear();
                    put(
                        Arc::make_mut(&mut s.routes),
                        route(
                            "r6",
                            15,
                            "hostnames: [q.test]\nrules: [{name: limited, backendRefs: [{name: app}]}]",
                        ),
                    );
                }),
            ),
            ("options changed", Box::new(|_| {})),
        ];

        let mut cache = CompileCache::default();
        let (mut accepted_cached, mut accepted_full) = (Accepted::default(), Accepted::default());
        let mut opts = opts;
        let mut previous: Option<Compiled> = None;
        for (step, change) in &changes {
            change(&mut snap);
            if *step == "options changed" {
                opts.ingress_class = "other".to_owned();
            }
            let cached = compile_cached(
                &Snapshot {
                    accepted: std::mem::take(&mut accepted_cached),
                    ..snap.clone()
                },
                &opts,
                &mut cache,
            );
            let full = compile(
                &Snapshot {
                    accepted: std::mem::take(&mut accepted_full),
                    ..snap.clone()
                },
                &opts,
            );
            assert_same(step, &cached, &full);
            let reused = [
                // Every Route now has a last accepted version: still reused.
                "nothing changed",
                "a Route on a taken host and path",
                "a Route changed",
                "still broken",
                "a Route deleted",
                "a broken Route fixed",
            ];
            if reused.contains(step) {
                // Reused, not recompiled: the same rules, shared with the last table.
                let before = previous.as_ref().map(|p| &p.table.rules).unwrap();
                let r7 = |rules: &[Arc<crate::model::Rule>]| {
                    rules
                        .iter()
                        .find(|r| &*r.route.name == "r7")
                        .cloned()
                        .unwrap()
                };
                assert!(
                    Arc::ptr_eq(&r7(before), &r7(&cached.table.rules)),
                    "{step}: r7 recompiled"
                );
            }
            accepted_cached = cached.accepted.clone();
            accepted_full = full.accepted.clone();
            previous = Some(cached);
        }
    }
}
