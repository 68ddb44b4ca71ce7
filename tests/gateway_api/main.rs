//! The HTTPRoute cases of the Gateway API conformance suite (kubernetes-sigs/gateway-api,
//! `conformance/tests/httproute-*`), translated to Route/Backend objects, through a real gateway
//! on loopback sockets with upstreams that answer like the suite's echo server.
//!
//! Every conformance test that maps onto Route/Backend is one table in `cases/` (see
//! `cases/README.md` for the format and the README's "Gateway API conformance" section for
//! what is covered and what is skipped, and why).
// These tests use Kubernetes mode (its index or status), a default cargo feature.
#![cfg(feature = "kubernetes")]

#[path = "../common/mod.rs"]
mod common;
mod echo;
mod table;

use std::path::{Path, PathBuf};

const CASES: &str = "tests/gateway_api/cases";

fn tables() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CASES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_httproute_conformance_case_passes() {
    let tables: Vec<table::Table> = tables().iter().map(|p| table::load(p)).collect();
    assert!(tables.len() > 30, "{} tables", tables.len());
    let runs = tables.iter().map(table::run);
    let failures: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let cases: usize = tables.iter().map(|t| t.cases.len()).sum();
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_table_names_its_source_and_its_cases_after_it() {
    let mut commits = std::collections::BTreeSet::new();
    for path in tables() {
        let t = table::load(&path);
        assert_eq!(
            t.source.repo,
            "kubernetes-sigs/gateway-api",
            "{}",
            path.display()
        );
        assert_eq!(t.source.commit.len(), 40, "{}", path.display());
        assert!(
            t.source
                .files
                .iter()
                .all(|f| f.starts_with("conformance/tests/httproute-"))
                && t.source.files[0].ends_with(".go"),
            "{}: {:?}",
            path.display(),
            t.source.files
        );
        commits.insert(t.source.commit.clone());
        assert!(!t.cases.is_empty(), "{}: no cases", path.display());
        for c in &t.cases {
            let index = c
                .name
                .strip_prefix(&format!("{}/", t.test))
                .and_then(|rest| rest.rsplit('/').next())
                .and_then(|i| i.parse::<usize>().ok());
            assert!(index.is_some(), "{}: case {:?}", path.display(), c.name);
        }
    }
    assert_eq!(
        commits.len(),
        1,
        "every table from one suite commit: {commits:?}"
    );
}

/// The README's coverage list names exactly the tables that exist.
#[test]
fn the_readme_lists_the_covered_tests() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let section = readme
        .split("### Gateway API conformance")
        .nth(1)
        .expect("README has a Gateway API conformance section");
    let covered = section
        .split("**Covered**")
        .nth(1)
        .and_then(|s| s.split("**Skipped**").next())
        .expect("the section lists covered, then skipped tests");
    let mut listed: Vec<String> = covered
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with("HTTPRoute"))
        .map(str::to_owned)
        .collect();
    listed.sort();
    listed.dedup();
    let mut tests: Vec<String> = tables()
        .iter()
        .map(|p| table::load(Path::new(p)).test)
        .collect();
    tests.sort();
    assert_eq!(listed, tests);
}
