//! `ipAllow` / `ipDeny` on the client address `--trusted-proxies` resolves (the resolver rate
//! limiting uses): IPv4 and IPv6, with and without trusted proxies.

use crate::common::{HttpClient, Upstream};
use crate::config;
use crate::support::{Gateway, metric};

const LISTS: &str = "      ipAllow: [10.0.0.0/8, \"2001:db8::/32\", 127.0.0.1]\n      ipDeny: [10.0.0.7, \"2001:db8:bad::/48\"]\n";

async fn status(gw: &Gateway, xff: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = xff.map(|x| ("x-forwarded-for", x)).into_iter().collect();
    HttpClient::http1()
        .get(gw.http, "h", "/", &headers)
        .await
        .status
        .as_u16()
}

/// Behind a trusted proxy the forwarded address is the client: deny wins over allow, and an
/// address in neither list is refused.
#[tokio::test]
async fn ip_lists_judge_the_client_a_trusted_proxy_names() {
    let up = Upstream::start("up").await;
    let cfg = config(&up, LISTS, "");
    let gw = Gateway::start(cfg.path(), &["--trusted-proxies", "127.0.0.1/32"], &[]).await;
    for (xff, want, why) in [
        ("10.1.2.3", 200, "in ipAllow"),
        ("10.0.0.7", 403, "in ipDeny too: deny wins"),
        ("192.0.2.1", 403, "in no list"),
        ("2001:db8::5", 200, "IPv6 in ipAllow"),
        ("2001:db8:bad::1", 403, "IPv6 in ipDeny"),
        (
            "::ffff:10.1.2.3",
            200,
            "an IPv4-mapped address is the IPv4 one",
        ),
        ("192.0.2.1, 10.1.2.3", 200, "one hop: the rightmost entry"),
    ] {
        assert_eq!(status(&gw, Some(xff)).await, want, "{xff}: {why}");
    }
    let r = HttpClient::http1()
        .get(gw.http, "h", "/", &[("x-forwarded-for", "192.0.2.1")])
        .await;
    assert_eq!(r.body, "forbidden\n");
    assert_eq!(up.hits(), 4, "refused requests never reach the upstream");
    let denied = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/r/api"),
            ("mechanism", "ip"),
            ("result", "denied"),
        ],
    )
    .await;
    assert_eq!(denied, Some(4.0));
    let allowed = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/r/api"),
            ("mechanism", "ip"),
            ("result", "allowed"),
        ],
    )
    .await;
    assert_eq!(allowed, Some(4.0));
}

/// Without trusted proxies (or from a peer that is not one), X-Forwarded-For is the client's
/// own claim and is ignored: the socket peer is judged.
#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let up = Upstream::start("up").await;
    let cfg = config(&up, LISTS, "");
    for args in [&[][..], &["--trusted-proxies", "10.0.0.0/8"][..]] {
        let gw = Gateway::start(cfg.path(), args, &[]).await;
        // The peer, 127.0.0.1, is allowed: claiming a denied address changes nothing.
        assert_eq!(status(&gw, Some("10.0.0.7")).await, 200, "{args:?}");
        assert_eq!(status(&gw, None).await, 200, "{args:?}");
    }
    let deny_peer = config(&up, "      ipDeny: [127.0.0.0/8]\n", "");
    let gw = Gateway::start(deny_peer.path(), &[], &[]).await;
    assert_eq!(
        status(&gw, Some("10.1.2.3")).await,
        403,
        "the denied peer cannot claim to be someone else"
    );
}

/// A bad CIDR rejects the Route with a message naming the field; `/config` shows the lists
/// and the order of evaluation.
#[tokio::test]
async fn bad_cidrs_are_named_and_config_shows_the_lists_and_the_order() {
    let up = Upstream::start("up").await;
    let bad = config(&up, "      ipAllow: [10.0.0.0/33]\n", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["validate", "--config"])
        .arg(bad.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("spec.rules[0].ipAllow[0]") && text.contains("is not a CIDR range"),
        "{text}"
    );

    let cfg = config(&up, LISTS, "");
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    let c = HttpClient::http1()
        .get(gw.admin, "admin", "/config", &[])
        .await;
    let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    assert_eq!(
        v["accessOrder"],
        serde_json::json!([
            "ipDeny",
            "ipAllow",
            "corsPreflight",
            "authentication",
            "authorization",
            "rateLimits",
            "filters"
        ])
    );
    assert_eq!(
        v["rules"][0]["access"]["ipDeny"],
        serde_json::json!(["10.0.0.7/32", "2001:db8:bad::/48"])
    );
}
