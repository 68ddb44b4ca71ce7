//! `authentication.basic`: htpasswd content from a Secret's `auth` key → [`BasicAuth`].
//!
//! Accepted: the hash forms `htpasswd` writes that are still sound: bcrypt (`-B`), SHA-256 and
//! SHA-512 crypt (`-2`, `-5`), and `{SHA}` (`-s`, unsalted SHA-1, which Envoy and nginx accept
//! too). Refused, with the line and why: plain text (`-p`), DES crypt (`-d`) and Apache MD5
//! (`$apr1$`, htpasswd's default, which is an MD5 construction).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use http::HeaderValue;

use super::fields::Findings;
use super::route::Env;
use crate::api;
use crate::model::{BasicAuth, ObjectRef, PasswordHash};

/// The users of `b`; problems are in the findings.
pub fn compile(
    b: &api::BasicAuthentication,
    at: &str,
    route: &ObjectRef,
    env: &Env<'_>,
    f: &mut Findings<'_>,
) -> Option<BasicAuth> {
    let name = &b.secret_ref.name;
    let field = format!("{at}.secretRef");
    let source = format!("Secret {}/{name}", route.namespace);
    let Some(secret) = env
        .secrets
        .get(&(route.namespace.to_string(), name.clone()))
    else {
        super::access::secret_not_found(f, field, &source);
        return None;
    };
    let Some(auth) = &secret.auth else {
        f.invalid(
            field,
            format!("{source} has no `auth` key (htpasswd content)"),
        );
        return None;
    };
    let users = match parse_htpasswd(auth) {
        Ok(u) => u,
        Err(e) => {
            f.invalid(field, format!("{source}: {e}"));
            return None;
        }
    };
    let realm = b
        .realm
        .clone()
        .unwrap_or_else(|| format!("{}/{}", route.namespace, route.name));
    let challenge =
        match HeaderValue::try_from(format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
            Ok(v) if !realm.contains(['"', '\\']) => v,
            _ => {
                f.invalid(
                    format!("{at}.realm"),
                    "the realm cannot hold quotes, backslashes or control characters",
                );
                return None;
            }
        };
    Some(BasicAuth {
        source,
        challenge,
        users: Arc::new(users),
    })
}

/// `user:hash` lines (blank lines and `#` comments skipped).
pub fn parse_htpasswd(content: &[u8]) -> Result<HashMap<String, PasswordHash>, String> {
    let text =
        std::str::from_utf8(content).map_err(|_| "the htpasswd content is not UTF-8".to_owned())?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {n}: expected user:hash"))?;
        if user.is_empty() {
            return Err(format!("line {n}: empty user name"));
        }
        let hash = password_hash(hash).map_err(|e| format!("line {n} (user {user:?}): {e}"))?;
        if users.insert(user.to_owned(), hash).is_some() {
            return Err(format!("line {n}: user {user:?} appears twice"));
        }
    }
    if users.is_empty() {
        return Err("the htpasswd content lists no user".to_owned());
    }
    Ok(users)
}

fn password_hash(h: &str) -> Result<PasswordHash, String> {
    if h.starts_with("$2y$") || h.starts_with("$2b$") || h.starts_with("$2a$") {
        return Ok(PasswordHash::Bcrypt(h.to_owned()));
    }
    if h.starts_with("$5$") {
        return Ok(PasswordHash::Sha256Crypt(h.to_owned()));
    }
    if h.starts_with("$6$") {
        return Ok(PasswordHash::Sha512Crypt(h.to_owned()));
    }
    if let Some(b64) = h.strip_prefix("{SHA}") {
        let digest = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|d| <[u8; 20]>::try_from(d).ok())
            .ok_or("{SHA} is not followed by a base64 SHA-1 digest")?;
        return Ok(PasswordHash::Sha1(digest));
    }
    if h.starts_with("$apr1$") || h.starts_with("$1$") {
        return Err("MD5 hashes ($apr1$, htpasswd's default) are not accepted: re-create the entry with htpasswd -B (bcrypt) or -5 (SHA-512)".into());
    }
    Err("plain-text or DES-crypt passwords are not accepted: create the entry with htpasswd -B (bcrypt), -2/-5 (SHA-256/512) or -s (SHA-1)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_forms_htpasswd_writes_are_read_and_weak_ones_refused() {
        let users = parse_htpasswd(
            b"# comment\nalice:$2y$05$abcdefghijklmnopqrstuu5Zc3KQcFaS2DbC5G7p2Xb4bC6C7C8C9\n\
              bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\ncarol:$6$salt$x\r\n",
        )
        .unwrap();
        assert_eq!(users.len(), 3);
        assert!(matches!(users["bob"], PasswordHash::Sha1(_)));
        for (bad, why) in [
            ("dave:$apr1$x$y\n", "MD5"),
            ("erin:secret\n", "plain-text"),
            ("frank:abJnggxhB/yWI\n", "DES"),
            ("nocolon\n", "user:hash"),
            ("", "no user"),
            ("a:{SHA}xx\n", "base64"),
            ("a:$5$s$h\na:$5$s$h\n", "twice"),
        ] {
            let e = parse_htpasswd(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
