//! The fetch schedule in paused time, against a scripted issuer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::model::jwt::JwksCell;
use crate::telemetry::{AccessLogConfig, AccessLogFormat};

const KEY_A: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LWE","alg":"HS256","kid":"a"}]}"#;
const KEY_B: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LWI","alg":"HS256","kid":"b"}]}"#;

/// What the scripted issuer answers, and how often it was asked.
struct Issuer {
    answer: Mutex<Result<(&'static str, Option<u64>), ()>>,
    hits: AtomicUsize,
}

impl Issuer {
    fn new(doc: &'static str, max_age: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(Ok((doc, max_age))),
            hits: AtomicUsize::new(0),
        })
    }

    fn set(&self, a: Result<(&'static str, Option<u64>), ()>) {
        *self.answer.lock().unwrap() = a;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn fetch(self: &Arc<Self>) -> Fetch {
        let me = self.clone();
        Arc::new(move |_| {
            me.hits.fetch_add(1, Ordering::SeqCst);
            let a = *me.answer.lock().unwrap();
            Box::pin(async move {
                match a {
                    Ok((doc, age)) => Fetched::Document {
                        body: Bytes::from_static(doc.as_bytes()),
                        max_age: age.map(Duration::from_secs),
                    },
                    Err(()) => Fetched::Failed("unreachable", "connection refused".into()),
                }
            })
        })
    }
}

fn jwks(min: u64, max: u64, cooldown: u64, max_stale: u64) -> Arc<RemoteJwks> {
    Arc::new(RemoteJwks {
        uri: "http://issuer.test/jwks".into(),
        tls: None,
        min_refresh: Duration::from_secs(min),
        max_refresh: Duration::from_secs(max),
        refetch_cooldown: Duration::from_secs(cooldown),
        max_stale: Duration::from_secs(max_stale),
        cell: Arc::new(JwksCell::default()),
    })
}

fn start(jwks: &Arc<RemoteJwks>, issuer: &Arc<Issuer>) -> (Arc<Telemetry>, CancellationToken) {
    let telemetry = Arc::new(Telemetry::new(&AccessLogConfig {
        format: AccessLogFormat::Off,
        include_query: false,
    }));
    let stop = CancellationToken::new();
    tokio::spawn(follow(
        jwks.clone(),
        issuer.fetch(),
        telemetry.clone(),
        stop.clone(),
    ));
    (telemetry, stop)
}

async fn at(t: u64, since: Instant) {
    tokio::time::sleep_until(since + Duration::from_secs(t) + Duration::from_millis(1)).await;
}

fn kids(j: &RemoteJwks) -> Vec<String> {
    j.cell
        .keys()
        .map(|k| k.keys.iter().filter_map(|k| k.kid.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn max_age_sets_the_refresh_within_its_bounds() {
    let t0 = Instant::now();
    let j = jwks(30, 600, 30, 3600);
    let issuer = Issuer::new(KEY_A, Some(120));
    let _run = start(&j, &issuer);
    at(0, t0).await;
    assert_eq!(issuer.hits(), 1, "fetched at once");
    assert_eq!(kids(&j), ["a"]);
    at(119, t0).await;
    assert_eq!(issuer.hits(), 1, "max-age 120 honoured");
    at(120, t0).await;
    assert_eq!(issuer.hits(), 2);
    // max-age 1 is raised to refresh.min (30s).
    issuer.set(Ok((KEY_A, Some(1))));
    at(240, t0).await;
    assert_eq!(issuer.hits(), 3);
    at(269, t0).await;
    assert_eq!(issuer.hits(), 3);
    at(270, t0).await;
    assert_eq!(issuer.hits(), 4);
    // A day's max-age is cut to refresh.max (600s); none at all is 5m.
    issuer.set(Ok((KEY_A, Some(86_400))));
    at(300, t0).await;
    assert_eq!(issuer.hits(), 5);
    at(899, t0).await;
    assert_eq!(issuer.hits(), 5);
    issuer.set(Ok((KEY_A, None)));
    at(900, t0).await;
    assert_eq!(issuer.hits(), 6);
    at(1199, t0).await;
    assert_eq!(issuer.hits(), 6);
    at(1200, t0).await;
    assert_eq!(issuer.hits(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_cooldown_and_rotation_is_picked_up() {
    let t0 = Instant::now();
    let j = jwks(30, 3600, 30, 3600);
    let issuer = Issuer::new(KEY_A, Some(3600));
    let _run = start(&j, &issuer);
    at(0, t0).await;
    assert_eq!(issuer.hits(), 1);
    issuer.set(Ok((KEY_B, Some(3600))));
    // Random kids from t=1s to t=89s, 100 a second.
    for ms in (1000..90_000).step_by(10) {
        tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
        j.cell.ask_refetch();
        // (At 30s and 60s exactly the refetch is due but has not run yet.)
        let expected = 1 + ((ms - 1) / 30_000) as usize;
        assert_eq!(issuer.hits(), expected, "at {ms}ms");
    }
    assert_eq!(kids(&j), ["b"], "the rotated set is in");
    // The kids asked for after 60s bring one more fetch, at 90s; then quiet: the next fetch
    // is max-age after the last.
    at(90, t0).await;
    assert_eq!(issuer.hits(), 4);
    at(90 + 3599, t0).await;
    assert_eq!(issuer.hits(), 4);
    at(90 + 3600, t0).await;
    assert_eq!(issuer.hits(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_refetch_asked_after_the_cooldown_happens_at_once() {
    let t0 = Instant::now();
    let j = jwks(30, 3600, 10, 3600);
    let issuer = Issuer::new(KEY_A, Some(3600));
    let _run = start(&j, &issuer);
    at(100, t0).await;
    assert_eq!(issuer.hits(), 1);
    j.cell.ask_refetch();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(issuer.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn keys_serve_while_the_issuer_is_down_until_max_stale() {
    let t0 = Instant::now();
    let j = jwks(30, 3600, 30, 600);
    let issuer = Issuer::new(KEY_A, Some(60));
    let (telemetry, _stop) = start(&j, &issuer);
    let stale = || {
        telemetry
            .metrics
            .jwks_stale
            .get_or_create(&JwksLabels {
                uri: "http://issuer.test/jwks".into(),
            })
            .get()
    };
    at(0, t0).await;
    issuer.set(Err(()));
    at(61, t0).await;
    assert_eq!(kids(&j), ["a"], "the issuer is down: the keys serve");
    assert_eq!(stale(), 1);
    // Retries at 1s, 2s, 4s, ... then every cooldown (30s): the flood rule holds while down.
    let hits = issuer.hits();
    at(61 + 300, t0).await;
    assert!(
        issuer.hits() - hits <= 5 + 10,
        "{} retries",
        issuer.hits() - hits
    );
    at(60 + 599, t0).await;
    assert_eq!(kids(&j), ["a"]);
    // maxStale (600s) past the due time (60s), at the next retry, the keys go.
    at(60 + 600 + 30, t0).await;
    assert!(j.cell.keys().is_none(), "stale past maxStale");
    assert_eq!(stale(), 0);
    // The issuer is back: keys again at the next retry.
    issuer.set(Ok((KEY_B, Some(60))));
    at(60 + 600 + 60, t0).await;
    assert_eq!(kids(&j), ["b"]);
    let failed = telemetry
        .metrics
        .jwks_fetches
        .get_or_create(&JwksFetchLabels {
            uri: "http://issuer.test/jwks".into(),
            result: "unreachable",
        })
        .get();
    assert!(failed >= 20, "{failed}");
}

#[tokio::test(start_paused = true)]
async fn before_the_first_good_fetch_there_are_no_keys_and_retries_back_off() {
    let t0 = Instant::now();
    let j = jwks(30, 3600, 8, 600);
    let issuer = Issuer::new("not json", None);
    let (telemetry, _stop) = start(&j, &issuer);
    at(0, t0).await;
    assert!(j.cell.keys().is_none());
    // Attempts at 0, 1, 3, 7, 15, 23, 31: 1s doubling, capped at the cooldown (8s).
    at(31, t0).await;
    assert_eq!(issuer.hits(), 7);
    let invalid = telemetry
        .metrics
        .jwks_fetches
        .get_or_create(&JwksFetchLabels {
            uri: "http://issuer.test/jwks".into(),
            result: "invalid",
        })
        .get();
    assert_eq!(invalid, 7);
    issuer.set(Ok((KEY_A, None)));
    at(39, t0).await;
    assert_eq!(kids(&j), ["a"]);
}

#[test]
fn max_age_reads_cache_control() {
    let v = |s: &'static str| max_age(Some(&HeaderValue::from_static(s)));
    assert_eq!(v("max-age=300"), Some(Duration::from_secs(300)));
    assert_eq!(
        v("public, max-age=\"60\", must-revalidate"),
        Some(Duration::from_secs(60))
    );
    assert_eq!(v("no-store"), Some(Duration::ZERO));
    assert_eq!(v("public"), None);
    assert_eq!(v("max-age=x"), None);
    assert_eq!(max_age(None), None);
}
