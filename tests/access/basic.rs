//! Basic authentication with htpasswd content made by Apache's `htpasswd` (Debian
//! `apache2-utils`) in a standalone Secret, and requests made by `curl -u`.

use std::process::Command;

use crate::common::Upstream;
use crate::config;
use crate::support::{Gateway, metric};

/// `htpasswd -nb<flag> user password`: one line.
fn htpasswd(flag: &str, user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args([&format!("-nb{flag}"), user, password])
        .output()
        .expect("htpasswd (apt install apache2-utils) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn secret(name: &str, lines: &[String]) -> String {
    let body: String = lines.iter().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\nstringData:\n  auth: |\n{body}---\n"
    )
}

/// `(status, headers)` of `curl -u user:password` (no `-u` when `user` is empty). Async: the
/// upstream runs on this test's runtime.
async fn curl(gw: &Gateway, user: &str) -> (u16, String) {
    let mut c = tokio::process::Command::new("curl");
    c.args(["-s", "-D", "-", "-o", "/dev/null", "-H", "Host: h"]);
    if !user.is_empty() {
        c.args(["-u", user]);
    }
    let out = c
        .arg(format!("http://{}/", gw.http))
        .output()
        .await
        .expect("curl runs");
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

const RULE: &str =
    "      authentication:\n        basic: { secretRef: { name: users }, realm: shop }\n";

/// bcrypt, SHA-256/512 crypt and SHA-1 entries all work; a wrong password, an unknown user
/// and no credentials get 401 with the realm's challenge, and never reach the upstream.
#[tokio::test]
async fn htpasswd_users_are_let_in_and_everyone_else_gets_a_challenge() {
    let up = Upstream::start("up").await;
    let lines = vec![
        htpasswd("B", "alice", "s3cret-a"),
        htpasswd("2", "bob", "s3cret-b"),
        htpasswd("5", "carol", "s3cret-c"),
        htpasswd("s", "dave", "s3cret-d"),
    ];
    let cfg = config(&up, RULE, &secret("users", &lines));
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    for user in [
        "alice:s3cret-a",
        "bob:s3cret-b",
        "carol:s3cret-c",
        "dave:s3cret-d",
    ] {
        assert_eq!(curl(&gw, user).await.0, 200, "{user}");
    }
    for user in ["alice:wrong", "dave:s3cret-a", "mallory:s3cret-a", ""] {
        let (status, head) = curl(&gw, user).await;
        assert_eq!(status, 401, "{user}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"shop\", charset=\"utf-8\""),
            "{user}: {head}"
        );
    }
    assert_eq!(up.hits(), 4);
    let denied = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/r/api"),
            ("mechanism", "basic"),
            ("result", "denied"),
        ],
    )
    .await;
    assert_eq!(denied, Some(4.0));
}

/// MD5 (htpasswd's default), DES crypt and plain text are refused with the line and why; a
/// missing Secret is named.
#[tokio::test]
async fn weak_htpasswd_hashes_and_missing_secrets_are_refused_clearly() {
    let up = Upstream::start("up").await;
    for (lines, want) in [
        (vec![htpasswd("m", "erin", "pw")], "MD5 hashes ($apr1$"),
        (
            vec![htpasswd("d", "frank", "pw")],
            "plain-text or DES-crypt",
        ),
        (vec![htpasswd("p", "gina", "pw")], "plain-text or DES-crypt"),
    ] {
        let cfg = config(&up, RULE, &secret("users", &lines));
        let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["validate", "--config"])
            .arg(cfg.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("spec.rules[0].authentication.basic.secretRef")
                && text.contains("Secret default/users: line 1")
                && text.contains(want),
            "{text}"
        );
    }
    let cfg = config(&up, RULE, "");
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["validate", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Secret default/users not found"), "{text}");
}

/// A deleted htpasswd Secret fails closed as Gateway API treats unresolved references: the
/// rule answers 500 (never reaching the upstream, never without authentication) and serves
/// again once the Secret is back.
#[tokio::test]
async fn a_deleted_htpasswd_secret_answers_500_until_it_is_back() {
    let up = Upstream::start("up").await;
    let cfg = config(&up, RULE, "");
    let users = secret("users", &[htpasswd("B", "alice", "s3cret-a")]);
    cfg.write("users.yaml", &users);
    let gw = Gateway::start(cfg.path(), &[], &[]).await;
    assert_eq!(curl(&gw, "alice:s3cret-a").await.0, 200);

    cfg.remove("users.yaml");
    crate::common::eventually(
        std::time::Duration::from_secs(10),
        "500 once the Secret is gone",
        || async { (curl(&gw, "alice:s3cret-a").await.0 == 500).then_some(()) },
    )
    .await;
    // From then on nothing reaches the upstream, with or without credentials.
    let hits = up.hits();
    assert_eq!(curl(&gw, "").await.0, 500);
    assert_eq!(curl(&gw, "alice:s3cret-a").await.0, 500);
    assert_eq!(up.hits(), hits);
    let unresolved = metric(
        gw.admin,
        "tidegate_access_decisions_total",
        &[
            ("route", "default/r/api"),
            ("mechanism", "unresolved"),
            ("result", "denied"),
        ],
    )
    .await;
    assert!(unresolved >= Some(2.0), "{unresolved:?}");

    cfg.write("users.yaml", &users);
    crate::common::eventually(
        std::time::Duration::from_secs(10),
        "served again",
        || async { (curl(&gw, "alice:s3cret-a").await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(curl(&gw, "").await.0, 401);
}
