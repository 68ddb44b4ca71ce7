//! The follow loop on paused time: when lookups happen, what is published, and the stale limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::model::{DnsRecordType, Endpoint};
use crate::telemetry::{AccessLogConfig, AccessLogFormat};

/// Answers from a script (the last one repeats), noting when it was asked.
struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    asked: Mutex<Vec<Duration>>,
    start: Instant,
}

impl Script {
    fn new(outcomes: Vec<Outcome>) -> Arc<Self> {
        Arc::new(Self {
            outcomes: Mutex::new(outcomes.into()),
            asked: Mutex::default(),
            start: Instant::now(),
        })
    }

    fn asked_at_secs(&self) -> Vec<u64> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect()
    }
}

impl Resolve for Script {
    fn resolve<'a>(&'a self, _: &'a DnsQuery) -> futures::future::BoxFuture<'a, Outcome> {
        self.asked.lock().unwrap().push(self.start.elapsed());
        let mut q = self.outcomes.lock().unwrap();
        let o = if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        };
        Box::pin(async move { o.expect("a scripted outcome") })
    }
}

/// What was written, per key.
#[derive(Default)]
struct Sink {
    sets: Mutex<HashMap<DiscoveryKey, Vec<Endpoint>>>,
    notes: Mutex<HashMap<DiscoveryKey, String>>,
}

impl EndpointSink for Sink {
    fn set(&self, key: &DiscoveryKey, ready: Vec<Endpoint>) {
        self.sets.lock().unwrap().insert(key.clone(), ready);
    }
    fn note(&self, key: &DiscoveryKey, note: Option<String>) {
        let mut notes = self.notes.lock().unwrap();
        match note {
            Some(n) => notes.insert(key.clone(), n),
            None => notes.remove(key),
        };
    }
}

impl Sink {
    fn endpoints(&self, q: &DnsQuery) -> Vec<String> {
        let key = DiscoveryKey::Dns(q.clone());
        let sets = self.sets.lock().unwrap();
        sets.get(&key)
            .map(|v| v.iter().map(|e| e.address.to_string()).collect())
            .unwrap_or_default()
    }
    fn note(&self, q: &DnsQuery) -> String {
        let key = DiscoveryKey::Dns(q.clone());
        self.notes
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }
}

fn query() -> DnsQuery {
    DnsQuery {
        name: "api.internal".into(),
        record_type: DnsRecordType::A,
        port: 80,
        refresh_min: Duration::from_secs(2),
        refresh_max: Duration::from_secs(30),
        max_stale: Duration::from_secs(20),
    }
}

fn answer(ttl: u64, addresses: &[&str]) -> Outcome {
    Outcome::Answer {
        endpoints: addresses.iter().map(|a| Endpoint::new(a)).collect(),
        ttl: Duration::from_secs(ttl),
    }
}

fn telemetry() -> Arc<Telemetry> {
    Arc::new(Telemetry::new(&AccessLogConfig {
        format: AccessLogFormat::Off,
        include_query: false,
    }))
}

/// A `follow` task for `query()` over `script`, started at paused time `start`.
struct Following {
    sink: Arc<Sink>,
    statuses: Arc<DnsStatuses>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
    start: Instant,
}

impl Following {
    fn start(script: &Arc<Script>) -> Self {
        let f = Self {
            sink: Arc::default(),
            statuses: Arc::default(),
            telemetry: telemetry(),
            stop: CancellationToken::new(),
            start: Instant::now(),
        };
        tokio::spawn(follow(
            query(),
            script.clone(),
            f.sink.clone(),
            f.statuses.clone(),
            f.telemetry.clone(),
            f.stop.clone(),
        ));
        f
    }

    /// Lets the task run until it sleeps, `secs` seconds after the start.
    async fn at(&self, secs: u64) {
        tokio::time::sleep_until(self.start + Duration::from_secs(secs)).await;
        tokio::task::yield_now().await;
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn lookups_repeat_on_the_ttl_raised_to_min_and_cut_to_max() {
    let script = Script::new(vec![
        answer(0, &["10.0.0.1:80"]),    // at 0: ttl 0 -> again after min (2s)
        answer(7, &["10.0.0.1:80"]),    // at 2: ttl 7 -> again after 7s
        answer(3600, &["10.0.0.2:80"]), // at 9: ttl 1h -> again after max (30s)
        answer(3600, &["10.0.0.2:80"]), // at 39
    ]);
    let f = Following::start(&script);
    let sink = &f.sink;
    f.at(40).await;
    assert_eq!(script.asked_at_secs(), [0, 2, 9, 39]);
    assert_eq!(sink.endpoints(&query()), ["10.0.0.2:80"]);
    assert_eq!(sink.note(&query()), "", "current: nothing to note");
}

#[tokio::test(start_paused = true)]
async fn a_failing_name_keeps_its_last_answer_for_max_stale_then_has_none() {
    let script = Script::new(vec![
        answer(5, &["10.0.0.1:80"]),
        Outcome::Failed(Failure::ServFail),
    ]);
    let f = Following::start(&script);
    let (sink, statuses) = (&f.sink, &f.statuses);
    let stale = || {
        f.telemetry
            .metrics
            .dns_stale
            .get_or_create(&labels(&query()))
            .get()
    };

    // Fails from 5s on: stale, retried every refresh.min (2s).
    f.at(6).await;
    assert_eq!(sink.endpoints(&query()), ["10.0.0.1:80"]);
    assert!(
        sink.note(&query()).contains("stale"),
        "{}",
        sink.note(&query())
    );
    assert_eq!(stale(), 1);
    let standing = statuses.get(&query()).unwrap();
    assert_eq!(
        (standing.state, standing.endpoints),
        (State::Stale(Failure::ServFail), 1)
    );
    f.at(24).await;
    assert_eq!(
        sink.endpoints(&query()),
        ["10.0.0.1:80"],
        "19s of 20: still serving"
    );
    f.at(26).await;
    assert!(
        sink.endpoints(&query()).is_empty(),
        "maxStale (20s) is over"
    );
    assert!(
        sink.note(&query()).contains("no endpoints"),
        "{}",
        sink.note(&query())
    );
    assert_eq!(stale(), 0);
    let standing = statuses.get(&query()).unwrap();
    assert_eq!(
        (standing.state, standing.endpoints),
        (State::Failed(Failure::ServFail), 0)
    );
    assert_eq!(&script.asked_at_secs()[..4], [0, 5, 7, 9]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_answer_empties_at_once_and_an_answer_comes_back() {
    let script = Script::new(vec![
        answer(5, &["10.0.0.1:80"]),
        Outcome::Empty {
            ttl: Some(Duration::from_secs(4)),
        },
        answer(5, &["10.0.0.3:80"]),
    ]);
    let f = Following::start(&script);
    let sink = &f.sink;
    f.at(6).await;
    assert!(
        sink.endpoints(&query()).is_empty(),
        "NODATA is no outage: empty now"
    );
    assert!(sink.note(&query()).contains("NOERROR"));
    f.at(10).await;
    assert_eq!(sink.endpoints(&query()), ["10.0.0.3:80"]);
    assert_eq!(script.asked_at_secs(), [0, 5, 9]);
}

#[tokio::test(start_paused = true)]
async fn queries_follow_the_tables_and_stop_with_them() {
    let script = Script::new(vec![answer(5, &["10.0.0.1:80"])]);
    let sink = Arc::new(Sink::default());
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(None);
    let mut backend = crate::model::Backend::new(
        crate::model::ObjectRef::new(crate::model::Kind::Backend, "default", "api"),
        crate::model::UpstreamProtocol::Http1,
        Vec::new(),
    );
    backend.dns = Some(query());
    let table = RoutingTable::new(Vec::new(), vec![backend], Vec::new());
    tx.send_replace(Some(Arc::new(table)));
    let resolver: Arc<dyn Resolve> = script.clone();
    tokio::spawn(run_with(
        resolver,
        sink.clone(),
        Arc::default(),
        rx,
        telemetry(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sink.endpoints(&query()), ["10.0.0.1:80"]);
    tx.send_replace(Some(Arc::new(RoutingTable::new(
        Vec::new(),
        Vec::new(),
        Vec::new(),
    ))));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        sink.endpoints(&query()).is_empty(),
        "no table uses it: emptied"
    );
    let asked = script.asked_at_secs().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        script.asked_at_secs().len(),
        asked,
        "and no longer looked up"
    );
    stop.cancel();
}
