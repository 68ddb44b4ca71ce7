//! A configuration and a request, both fuzzed: the first line is `METHOD HOST PATH?QUERY`, the
//! rest a configuration file. Looking the request up never panics, and a hit's rule matches it.
#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use tidegate::controller::file::{Mode, read_str};
use tidegate::controller::{CompileOptions, compile};
use tidegate::model::RequestView;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, config) = text.split_once('\n').unwrap_or((text, ""));
    let mut parts = first.splitn(3, ' ');
    let method =
        Method::from_bytes(parts.next().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let host = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let table = compile(
        &read_str(config, "fuzz.yaml", Mode::Standalone),
        &CompileOptions::default(),
    )
    .table;
    let mut headers = HeaderMap::new();
    headers.insert("x-fuzz", http::HeaderValue::from_static("1"));
    let req = RequestView {
        method: &method,
        path,
        query,
        headers: &headers,
    };
    if let Some(hit) = table.lookup(host, &req) {
        assert!(
            hit.rule.matches.iter().any(|m| m.matches(&req)),
            "a hit matches"
        );
    }
});
