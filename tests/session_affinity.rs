//! Sticky sessions (a Backend's `loadBalancer.sessionPersistence`) through the real binary and
//! real upstreams: the cookie's attributes, stickiness, a bad cookie re-picked, an endpoint
//! removed (re-picked, new cookie), a second replica that honours the first one's cookies, and
//! a retry that moves the session to the endpoint that answered.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::binary::Binary;
use common::{ConfigDir, HttpClient, Reply, Upstream, backend_yaml_with, eventually};

const SESSION: &str = "  loadBalancer:\n    sessionPersistence:\n      cookieName: route\n      maxAge: 48h\n      sameSite: Lax\n";

fn config(ups: &[&Upstream], backend_extra: &str, rule_extra: &str) -> String {
    let eps: Vec<String> = ups.iter().map(|u| u.addr.to_string()).collect();
    backend_yaml_with("b", &eps, backend_extra)
        + &format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  rules:\n    - matches: [{{ path: {{ value: /app }} }}]\n      backendRefs: [{{ name: b }}]\n{rule_extra}---\n"
        )
}

fn upstream(r: &Reply) -> String {
    r.headers
        .get("x-upstream")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| format!("status {}", r.status))
}

/// The `route=VALUE` pair of the reply's Set-Cookie, and the whole header.
fn set_cookie(r: &Reply) -> Option<(String, String)> {
    let all: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(all.len() <= 1, "one Set-Cookie at most: {all:?}");
    let v = all.first()?;
    Some((v.split(';').next().unwrap().to_owned(), (*v).to_owned()))
}

async fn get(c: &HttpClient, at: SocketAddr, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    c.get(at, "h", "/app/page", &headers).await
}

#[tokio::test]
async fn a_session_cookie_keeps_a_client_on_its_endpoint_until_it_goes() {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
    ];
    let all: Vec<&Upstream> = ups.iter().collect();
    let cfg = ConfigDir::new();
    cfg.write("all.yaml", &config(&all, SESSION, ""));
    let gw = Binary::start(cfg.path(), &[]).ready().await;
    let c = HttpClient::http1();
    let view: serde_json::Value = serde_json::from_str(&gw.admin("/backends").await).unwrap();
    assert_eq!(view[0]["sessionCookie"], "route", "{view}");

    // Without a cookie: balanced as usual (round robin reaches every endpoint), each answer
    // setting the cookie of the endpoint that gave it, with the attributes asked for.
    let mut cookies = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let r = get(&c, gw.http, None).await;
        assert_eq!(r.status, 200);
        let (pair, header) = set_cookie(&r).expect("a Set-Cookie");
        let value = pair.strip_prefix("route=").expect("named route");
        assert!(
            value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
            "{header}"
        );
        let expires = header
            .split("; ")
            .find_map(|a| a.strip_prefix("Expires="))
            .expect("Expires");
        let in_two_days = std::time::SystemTime::now() + Duration::from_secs(172_800);
        let at = httpdate::parse_http_date(expires).expect("an HTTP date");
        assert!(
            at <= in_two_days + Duration::from_secs(1)
                && in_two_days <= at + Duration::from_secs(60),
            "{header}"
        );
        assert_eq!(
            header,
            format!("{pair}; Expires={expires}; Max-Age=172800; Path=/app; HttpOnly; SameSite=Lax")
        );
        seen.insert(upstream(&r));
        cookies.push((pair, upstream(&r)));
    }
    assert_eq!(seen.len(), 3, "{cookies:?}");

    // With a cookie: that endpoint, every time, and no new cookie.
    for (pair, owner) in &cookies {
        for _ in 0..5 {
            let r = get(&c, gw.http, Some(&format!("a=1; {pair}; b=2"))).await;
            assert_eq!(&upstream(&r), owner);
            assert!(set_cookie(&r).is_none());
        }
    }

    // A cookie that names no endpoint (made up, malformed, another proxy's): a new pick and a
    // new cookie, which then sticks.
    for bad in ["route=0123456789abcdef", "route=zz", "route=abc|def"] {
        let r = get(&c, gw.http, Some(bad)).await;
        assert_eq!(r.status, 200);
        let (pair, _) = set_cookie(&r).expect("a new cookie");
        let owner = upstream(&r);
        let again = get(&c, gw.http, Some(&pair)).await;
        assert_eq!(upstream(&again), owner);
    }

    // A second replica (same configuration) honours the first one's cookies.
    let other = Binary::start(cfg.path(), &[]).ready().await;
    for (pair, owner) in &cookies {
        let r = get(&c, other.http, Some(pair)).await;
        assert_eq!(&upstream(&r), owner);
        assert!(set_cookie(&r).is_none());
    }
    drop(other);

    // u1 leaves the Backend: its sessions get another endpoint and a new cookie; the others'
    // cookies still stick after the reload.
    let (gone, _) = cookies.iter().find(|(_, o)| o == "u1").unwrap();
    cfg.write("all.yaml", &config(&[&ups[0], &ups[2]], SESSION, ""));
    let r = eventually(Duration::from_secs(10), "u1 is removed", || async {
        let r = get(&c, gw.http, Some(gone)).await;
        (upstream(&r) != "u1").then_some(r)
    })
    .await;
    let (moved, _) = set_cookie(&r).expect("a new cookie for the new endpoint");
    assert_ne!(&moved, gone);
    assert_eq!(
        upstream(&get(&c, gw.http, Some(&moved)).await),
        upstream(&r)
    );
    for (pair, owner) in cookies.iter().filter(|(_, o)| o != "u1") {
        let r = get(&c, gw.http, Some(pair)).await;
        assert_eq!(&upstream(&r), owner);
        assert!(set_cookie(&r).is_none());
    }
}

/// ingress-nginx's session-cookie-change-on-failure: false (the default) retries on the
/// session's endpoint; true moves the retry, and the cookie, to an endpoint that answers.
#[tokio::test]
async fn a_retry_moves_the_session_only_with_change_on_failure() {
    let ups = [Upstream::start("u0").await, Upstream::start("u1").await];
    let all: Vec<&Upstream> = ups.iter().collect();
    let cfg = ConfigDir::new();
    let retry = "      retry: { attempts: 3, on: [\"503\"] }\n";
    cfg.write("all.yaml", &config(&all, SESSION, retry));
    let gw = Binary::start(cfg.path(), &[]).ready().await;
    let c = HttpClient::http1();
    let r = get(&c, gw.http, None).await;
    let (pair, _) = set_cookie(&r).unwrap();
    let owner = upstream(&r);
    let (sick, well) = if owner == "u0" {
        (&ups[0], "u1")
    } else {
        (&ups[1], "u0")
    };
    sick.faults.set_status(503);

    // Stays on the session's endpoint: every try gets its 503.
    let before = sick.hits();
    let r = get(&c, gw.http, Some(&pair)).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        sick.hits() - before,
        3,
        "all three tries on the session's endpoint"
    );
    assert!(set_cookie(&r).is_none());

    let with_change = SESSION.to_owned() + "      changeOnFailure: true\n";
    cfg.write("all.yaml", &config(&all, &with_change, retry));
    let r = eventually(Duration::from_secs(10), "the retry moves", || async {
        let r = get(&c, gw.http, Some(&pair)).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(upstream(&r), well);
    let (moved, _) = set_cookie(&r).expect("the cookie follows the endpoint that answered");
    assert_ne!(moved, pair);
    sick.faults.set_status(0);
    assert_eq!(upstream(&get(&c, gw.http, Some(&moved)).await), well);
}

/// A session cookie is for HTTP Backends, and its attributes are checked.
#[test]
fn bad_session_settings_are_rejected_with_their_field() {
    let cfg = ConfigDir::new();
    cfg.write(
        "b.yaml",
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: { name: b }\nspec:\n  endpoints: [\"127.0.0.1:9\"]\n  loadBalancer:\n    sessionPersistence: { cookieName: \"a b\", path: \"/x;y\", maxAge: 0s }\n",
    );
    let out = std::process::Command::new(common::binary::BIN)
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for field in ["cookieName", "sessionPersistence.path", "maxAge"] {
        assert!(text.contains(field), "{field}: {text}");
    }
}

/// A split between two Backends that keep sessions: a client stays on the side that holds its
/// session (ingress-nginx's sticky canaries), a new client is split by weight, and a side
/// whose weight goes to 0 keeps no sessions.
#[tokio::test]
async fn a_weighted_split_keeps_a_session_on_the_backend_that_holds_it() {
    let ups = [
        Upstream::start("main").await,
        Upstream::start("canary").await,
    ];
    let split = |canary_weight: u32| {
        backend_yaml_with("main", &[ups[0].addr.to_string()], SESSION)
            + &backend_yaml_with("canary", &[ups[1].addr.to_string()], SESSION)
            + &format!(
                "apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  rules:\n    - matches: [{{ path: {{ value: /app }} }}]\n      backendRefs: [{{ name: main, weight: 50 }}, {{ name: canary, weight: {canary_weight} }}]\n---\n"
            )
    };
    let cfg = ConfigDir::new();
    cfg.write("all.yaml", &split(50));
    let gw = Binary::start(cfg.path(), &[]).ready().await;
    let c = HttpClient::http1();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let r = get(&c, gw.http, None).await;
        sessions.push((set_cookie(&r).unwrap().0, upstream(&r)));
    }
    let sides: HashSet<&str> = sessions.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(sides.len(), 2, "the split alternates: {sessions:?}");
    for (pair, side) in &sessions {
        for _ in 0..4 {
            let r = get(&c, gw.http, Some(pair)).await;
            assert_eq!(&upstream(&r), side);
            assert!(set_cookie(&r).is_none());
        }
    }
    // The canary rolled back to 0: its clients go to main, with a new cookie.
    cfg.write("all.yaml", &split(0));
    let (on_canary, _) = sessions.iter().find(|(_, s)| s == "canary").unwrap();
    let r = eventually(
        Duration::from_secs(10),
        "the canary is rolled back",
        || async {
            let r = get(&c, gw.http, Some(on_canary)).await;
            (upstream(&r) == "main").then_some(r)
        },
    )
    .await;
    assert!(set_cookie(&r).is_some());
}

/// `conditionalSameSiteNone`: `SameSite=None` is left out for a browser that mishandles it.
#[tokio::test]
async fn samesite_none_is_left_out_for_old_browsers_when_asked() {
    let up = Upstream::start("u0").await;
    let cfg = ConfigDir::new();
    let session = "  loadBalancer:\n    sessionPersistence: { cookieName: s, sameSite: None, secure: true, conditionalSameSiteNone: true }\n";
    cfg.write("all.yaml", &config(&[&up], session, ""));
    let gw = Binary::start(cfg.path(), &[]).ready().await;
    let c = HttpClient::http1();
    let cookie = |ua: &'static str| {
        let c = c.clone();
        async move {
            let r = c.get(gw.http, "h", "/app", &[("user-agent", ua)]).await;
            set_cookie(&r).unwrap().1
        }
    };
    let old = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/59.0.3071.115 Safari/537.36";
    let new = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    assert!(cookie(old).await.ends_with("; Path=/app; Secure; HttpOnly"));
    assert!(
        cookie(new)
            .await
            .ends_with("; Path=/app; Secure; HttpOnly; SameSite=None")
    );
}
