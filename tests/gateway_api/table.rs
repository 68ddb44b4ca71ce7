//! One conformance test as data (`cases/*.yaml`): where it comes from, the objects, then
//! requests and what must come of them. The checks are the suite's own
//! (`conformance/utils/http.CompareRoundTrip`), with the same defaults; see `cases/README.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde::Deserialize;
use tidegate::controller::file::FileSource;
use tidegate::controller::kube::status;
use tidegate::controller::{CompileOptions, compile};

use crate::common::{HttpClient, Reply};
use crate::echo::{Captured, Echo};

/// Each case is sent this many times in a row and must pass every time (the suite's
/// `RequiredConsecutiveSuccesses`).
const CONSECUTIVE: usize = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The conformance test's `ShortName`.
    pub test: String,
    pub source: Source,
    /// Echo servers to start; `${name}` in `objects` becomes the address of the one named.
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    /// Route and Backend objects, as a user would write them.
    #[serde(default)]
    pub objects: Vec<serde_yaml_ng::Value>,
    /// Gateway listeners of the test, each served by a gateway of its own: listener name → the
    /// Routes attached to it (Backends go everywhere). None: one gateway serves every object.
    #[serde(default)]
    pub listeners: BTreeMap<String, Vec<String>>,
    /// Per object (`Route ns/name`): condition type → `True`, or `False Reason`.
    #[serde(default)]
    pub conditions: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub cases: Vec<Case>,
    /// Another table's file whose cases this test runs too (the suite shares one test function
    /// between two manifests); case names take this table's test name.
    #[serde(default, rename = "casesFrom")]
    pub cases_from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub repo: String,
    pub commit: String,
    pub files: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    /// `<test>/<index>` (or `<test>/<section>/<index>`), the index in the Go test's list.
    pub name: String,
    /// With `listeners`: the one this request goes to.
    #[serde(default)]
    pub listener: Option<String>,
    pub request: Req,
    /// Send the request this many times (default once); every answer must pass.
    #[serde(default)]
    pub repeat: Option<usize>,
    /// Sent as `X-Echo-Set-Header`: the echo server sets these response headers.
    #[serde(default)]
    pub backend_sets_response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Req {
    /// Default GET.
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    /// Default: the gateway's address, as the suite's client sends it.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `http` (HTTP/1.1, default), `h2c` (HTTP/2 prior knowledge) or `websocket`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// A query parameter given a fresh value for every request (the retry simulation's uuid).
    #[serde(default)]
    pub unique_query: Option<String>,
    /// WebSocket: messages sent, each must come back.
    #[serde(default)]
    pub messages: Vec<WsMessage>,
}

/// A WebSocket message: `{ text: ... }` or `{ binary: [bytes] }`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WsMessage {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub binary: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// Default 200.
    #[serde(default)]
    pub status: Option<u16>,
    /// Any of these (instead of `status`).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// The answering pod's name starts with this (checked on 200/204).
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// What the backend saw (the suite's `ExpectedRequest`); default: the request as sent.
    #[serde(default)]
    pub seen: Option<Seen>,
    #[serde(default)]
    pub response: ResponseExpect,
    /// The whole `Location` of a redirect. `${host}` is the gateway's host as the client wrote
    /// it, `${port}` is `:<listener port>` (empty for 80); see cases/README.md.
    #[serde(default)]
    pub location: Option<String>,
    /// Send this many requests; each must also pass the other checks.
    #[serde(default)]
    pub distribution: Option<Distribution>,
    /// The value of this request header at the backend must name the backend that answered.
    #[serde(default)]
    pub backend_header: Option<String>,
    /// WebSocket: the messages echoed back.
    #[serde(default)]
    pub messages: Vec<WsMessage>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Seen {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseExpect {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Distribution {
    pub requests: usize,
    /// Largest difference between a backend's share and its expected share.
    pub tolerance: f64,
    /// Backend name → expected share of the requests.
    pub shares: BTreeMap<String, f64>,
}

/// Reads a table; `casesFrom` cases are taken from the named file next to it.
pub fn load(path: &Path) -> Table {
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: Table =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Some(other) = table.cases_from.clone() {
        let other = load(&path.with_file_name(other));
        let from = format!("{}/", other.test);
        let to = format!("{}/", table.test);
        table.cases.extend(other.cases.into_iter().map(|mut c| {
            c.name = c.name.replacen(&from, &to, 1);
            c
        }));
    }
    table
}

/// Runs every case of `table` through a real gateway; returns what failed, one line each.
pub async fn run(table: &Table) -> Vec<String> {
    let mut upstreams = Vec::new();
    for u in &table.upstreams {
        upstreams.push((u.name.clone(), Echo::start(&u.namespace, &u.name).await));
    }
    let render = |listener: Option<&Vec<String>>| {
        let mut yaml = String::new();
        for object in &table.objects {
            let attached = match (listener, object["kind"].as_str()) {
                (Some(routes), Some("Route")) => object["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| routes.iter().any(|r| r == n)),
                _ => true,
            };
            if attached {
                yaml.push_str("---\n");
                yaml.push_str(&serde_yaml_ng::to_string(object).unwrap());
            }
        }
        for (name, echo) in &upstreams {
            yaml = yaml.replace(&format!("${{{name}}}"), &echo.addr.to_string());
        }
        yaml
    };

    let all = tempfile::tempdir().unwrap();
    std::fs::write(all.path().join("objects.yaml"), render(None)).unwrap();
    let mut failures = conditions(table, all.path());
    let listeners: Vec<Option<&String>> = match table.listeners.is_empty() {
        true => vec![None],
        false => table.listeners.keys().map(Some).collect(),
    };
    for listener in listeners {
        let dir = tempfile::tempdir().unwrap();
        let routes = listener.and_then(|l| table.listeners.get(l));
        std::fs::write(dir.path().join("objects.yaml"), render(routes)).unwrap();
        let cases: Vec<&Case> = table
            .cases
            .iter()
            .filter(|c| c.listener.as_ref() == listener)
            .collect();
        failures.extend(serve(dir.path(), &cases).await);
    }
    failures
}

/// Starts a gateway on the objects in `dir` and sends it `cases`.
async fn serve(dir: &Path, cases: &[&Case]) -> Vec<String> {
    let gw = tidegate::Gateway::builder()
        .config_path(dir)
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .watch(false)
        .start()
        .await
        .expect("gateway starts");
    let at = gw.http_addr();
    let mut failures = Vec::new();
    for case in cases {
        for _ in 0..CONSECUTIVE {
            let outcome = tokio::time::timeout(Duration::from_secs(30), run_case(at, case))
                .await
                .unwrap_or_else(|_| Err("no answer within 30s".into()));
            if let Err(e) = outcome {
                failures.push(format!("{}: {e}", case.name));
                break;
            }
        }
    }
    gw.shutdown(Duration::from_secs(1)).await;
    failures
}

/// The status conditions the objects would get in a cluster (the status writer's mapping).
fn conditions(table: &Table, dir: &Path) -> Vec<String> {
    let snap = FileSource::new(dir).load().expect("objects are readable");
    let desired = status::desired(&snap, &compile(&snap, &CompileOptions::default()));
    let mut failures = Vec::new();
    for (object, expected) in &table.conditions {
        let Some(d) = desired.iter().find(|(id, _)| id.to_string() == *object) else {
            failures.push(format!("{}: no status for {object}", table.test));
            continue;
        };
        for (type_, want) in expected {
            let got =
                d.1.conditions
                    .iter()
                    .find(|c| c.type_ == type_)
                    .map(|c| match c.status {
                        true => "True".to_owned(),
                        false => format!("False {}", c.reason),
                    });
            if got.as_deref() != Some(want.as_str()) {
                failures.push(format!(
                    "{}: {object} {type_}: want {want}, got {got:?} ({:?})",
                    table.test, d.1.conditions
                ));
            }
        }
    }
    failures
}

async fn run_case(at: SocketAddr, case: &Case) -> Result<(), String> {
    match case.request.protocol.as_deref() {
        Some("websocket") => return websocket(at, case).await,
        None | Some("http") | Some("h2c") => {}
        Some(other) => return Err(format!("unknown protocol {other}")),
    }
    if let Some(d) = &case.expect.distribution {
        return distribution(at, case, d).await;
    }
    for _ in 0..case.repeat.unwrap_or(1) {
        one(at, case).await?;
    }
    Ok(())
}

/// Sends the case's request once and checks the answer; returns the pod that answered.
async fn one(at: SocketAddr, case: &Case) -> Result<Option<String>, String> {
    let req = &case.request;
    let method = req.method.as_deref().unwrap_or("GET");
    let mut path = req.path.clone();
    if let Some(param) = &req.unique_query {
        let sep = if path.contains('?') { '&' } else { '?' };
        path = format!("{path}{sep}{param}={}", unique());
    }
    let h2c = req.protocol.as_deref() == Some("h2c");
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{at}{path}"));
    if !h2c {
        // HTTP/2 carries the authority in the URI; HTTP/1.1 clients send the Host header.
        b = b.header("host", req.host.clone().unwrap_or_else(|| at.to_string()));
    }
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let set: Vec<String> = case
        .backend_sets_response_headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    b = b.header("x-echo-set-header", set.join(","));
    let client = if h2c {
        HttpClient::h2c()
    } else {
        HttpClient::http1()
    };
    let reply = client
        .send(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    check(at, case, method, &path, &reply)
}

fn check(
    at: SocketAddr,
    case: &Case,
    method: &str,
    path: &str,
    reply: &Reply,
) -> Result<Option<String>, String> {
    let e = &case.expect;
    let statuses = match (&e.statuses[..], e.status) {
        ([], s) => vec![s.unwrap_or(200)],
        (list, _) => list.to_vec(),
    };
    let code = reply.status.as_u16();
    if !statuses.contains(&code) {
        return Err(format!(
            "status {code}, want one of {statuses:?} (body {:?})",
            reply.body
        ));
    }
    if code == 200 || code == 204 {
        let seen: Captured = serde_json::from_str(&reply.body)
            .map_err(|err| format!("not an echo answer ({err}): {:?}", reply.body))?;
        check_backend(e, &seen)?;
        check_seen(case, method, path, &seen)?;
        check_response(e, reply)?;
        if let Some(h) = &e.backend_header {
            let named = seen.headers.get(&h.to_ascii_lowercase());
            match named.map(Vec::as_slice) {
                Some([one]) if seen.pod.starts_with(one.as_str()) => {}
                other => {
                    return Err(format!(
                        "{h} at the backend is {other:?}, but {} answered",
                        seen.pod
                    ));
                }
            }
        }
        return Ok(Some(seen.pod));
    }
    if (300..400).contains(&code)
        && let Some(want) = &e.location
    {
        let port = match at.port() {
            80 => String::new(),
            p => format!(":{p}"),
        };
        let want = want
            .replace("${host}", &at.ip().to_string())
            .replace("${port}", &port);
        let got = reply
            .headers
            .get("location")
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
        if got.as_deref() != Some(want.as_str()) {
            return Err(format!("Location {got:?}, want {want:?}"));
        }
    }
    Ok(None)
}

fn check_backend(e: &Expect, seen: &Captured) -> Result<(), String> {
    if let Some(b) = &e.backend
        && !seen.pod.starts_with(b.as_str())
    {
        return Err(format!("answered by {}, want {b}", seen.pod));
    }
    if let Some(ns) = &e.namespace
        && *ns != seen.namespace
    {
        return Err(format!("namespace {}, want {ns}", seen.namespace));
    }
    Ok(())
}

/// The suite's `ExpectedRequest` checks; without one, the request as sent must arrive.
fn check_seen(case: &Case, method: &str, path: &str, seen: &Captured) -> Result<(), String> {
    let default = Seen {
        headers: case.request.headers.clone(),
        ..Seen::default()
    };
    let want = case.expect.seen.as_ref().unwrap_or(&default);
    let want_path = match (&want.path, &case.request.unique_query) {
        (Some(p), None) => p.clone(),
        _ => path.to_owned(),
    };
    if seen.path != want_path {
        return Err(format!("backend saw path {}, want {want_path}", seen.path));
    }
    let want_method = want.method.as_deref().unwrap_or(method);
    if seen.method != want_method {
        return Err(format!("backend saw {}, want {want_method}", seen.method));
    }
    if let Some(h) = &want.host
        && seen.host != *h
    {
        return Err(format!("backend saw host {}, want {h}", seen.host));
    }
    for (name, value) in &want.headers {
        match seen.headers.get(&name.to_ascii_lowercase()) {
            Some(v) if v.join(",") == *value => {}
            other => {
                return Err(format!(
                    "backend saw {name}: {other:?}, want {value:?} (all: {:?})",
                    seen.headers
                ));
            }
        }
    }
    for name in &want.absent {
        if let Some(v) = seen.headers.get(&name.to_ascii_lowercase()) {
            return Err(format!("backend saw {name}: {v:?}, want none"));
        }
    }
    Ok(())
}

fn check_response(e: &Expect, reply: &Reply) -> Result<(), String> {
    for (name, value) in &e.response.headers {
        let got: Vec<String> = reply
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if got.is_empty() || got.join(",") != *value {
            return Err(format!("response {name}: {got:?}, want {value:?}"));
        }
    }
    for name in &e.response.absent {
        if let Some(v) = reply.headers.get(name.as_str()) {
            return Err(format!("response has {name}: {v:?}, want none"));
        }
    }
    Ok(())
}

/// The suite's weighted-distribution check (`weight.TestWeightedDistribution`).
async fn distribution(at: SocketAddr, case: &Case, d: &Distribution) -> Result<(), String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..d.requests {
        let pod = one(at, case).await?.unwrap_or_default();
        let backend = d
            .shares
            .keys()
            .filter(|b| pod.starts_with(b.as_str()))
            .max_by_key(|b| b.len())
            .ok_or_else(|| format!("{pod} is none of {:?}", d.shares.keys()))?;
        *counts.entry(backend.clone()).or_default() += 1;
    }
    for (backend, want) in &d.shares {
        let got = counts.get(backend).copied().unwrap_or(0) as f64 / d.requests as f64;
        if (got - want).abs() > d.tolerance {
            return Err(format!(
                "{backend} got {got:.3} of the requests, want {want} ± {} ({counts:?})",
                d.tolerance
            ));
        }
    }
    Ok(())
}

/// Dials `ws://gateway/<path>`, sends each message and expects it back.
async fn websocket(at: SocketAddr, case: &Case) -> Result<(), String> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{at}{}", case.request.path);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("dial: {e}"))?;
    let mut echoed = Vec::new();
    for m in &case.request.messages {
        let msg = match (&m.text, &m.binary) {
            (Some(t), None) => Message::text(t.clone()),
            (None, Some(b)) => Message::binary(b.clone()),
            _ => return Err(format!("{m:?}: give text or binary")),
        };
        ws.send(msg).await.map_err(|e| format!("send: {e}"))?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) => echoed.push(WsMessage {
                text: Some(t.to_string()),
                binary: None,
            }),
            Some(Ok(Message::Binary(b))) => echoed.push(WsMessage {
                text: None,
                binary: Some(b.to_vec()),
            }),
            other => return Err(format!("receive: {other:?}")),
        }
    }
    let _ = ws.close(None).await;
    if echoed != case.expect.messages {
        return Err(format!(
            "echoed {echoed:?}, want {:?}",
            case.expect.messages
        ));
    }
    Ok(())
}

/// A value no other request uses (the suite sends a fresh uuid).
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
