//! Basic authentication of one request: `Authorization: Basic base64(user:password)` checked
//! against the rule's htpasswd users. bcrypt and SHA-crypt cost milliseconds of CPU, so they
//! run on the blocking pool; every comparison is constant-time, and an unknown user costs the
//! same as a known one (the password is checked against another user's hash).

use base64::Engine;
use http::{HeaderMap, header};

use crate::model::{BasicAuth, PasswordHash};

/// Whether the request carries a user and password of `basic`.
pub async fn verify(basic: &BasicAuth, headers: &HeaderMap) -> bool {
    let Some((user, password)) = credentials(headers) else {
        return false;
    };
    let (hash, known) = match basic.users.get(&user) {
        Some(h) => (h.clone(), true),
        None => match basic.users.values().next() {
            Some(h) => (h.clone(), false),
            None => return false,
        },
    };
    let ok = match &hash {
        PasswordHash::Sha1(digest) => sha1_matches(digest, &password),
        _ => tokio::task::spawn_blocking(move || slow_matches(&hash, &password))
            .await
            .unwrap_or(false),
    };
    ok && known
}

/// The user and password of `Authorization: Basic …`.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn sha1_matches(digest: &[u8; 20], password: &[u8]) -> bool {
    let got = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password);
    constant_time_eq(got.as_ref(), digest)
}

fn slow_matches(hash: &PasswordHash, password: &[u8]) -> bool {
    use sha_crypt::PasswordVerifier;
    match hash {
        // bcrypt's verify compares in constant time (subtle).
        PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        PasswordHash::Sha256Crypt(h) | PasswordHash::Sha512Crypt(h) => {
            sha_crypt::ShaCrypt::default()
                .verify_password(password, h.as_str())
                .is_ok()
        }
        PasswordHash::Sha1(d) => sha1_matches(d, password),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_a_basic_authorization_header_only() {
        let mut h = HeaderMap::new();
        // alice:pa:ss (a colon in the password is the password's).
        h.insert(
            header::AUTHORIZATION,
            "basic YWxpY2U6cGE6c3M=".parse().unwrap(),
        );
        assert_eq!(credentials(&h), Some(("alice".into(), b"pa:ss".to_vec())));
        h.insert(
            header::AUTHORIZATION,
            "Bearer YWxpY2U6cGE6c3M=".parse().unwrap(),
        );
        assert_eq!(credentials(&h), None);
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(credentials(&h), None);
    }
}
