//! A request's bucket key for one limit: its parts (client address, header values) fed into a
//! hasher, without building a string. Local limits hash with the limit's random SipHash key;
//! Global ones with SHA-256 (the same for every replica, and no API key is stored in Redis in
//! the clear).

use std::hash::Hasher;
use std::net::IpAddr;

use http::HeaderMap;

use serde_json::Value;

use super::super::jwt::VerifiedClaims;
use crate::model::{KeyPart, LimitKey, MissingHeader};

/// Where key bytes go.
pub trait KeySink {
    /// Adds bytes.
    fn bytes(&mut self, b: &[u8]);
}

impl<H: Hasher> KeySink for H {
    fn bytes(&mut self, b: &[u8]) {
        self.write(b);
    }
}

/// SHA-256 over the key (Global limits).
pub struct Sha256(pub ring::digest::Context);

impl Sha256 {
    /// An empty digest.
    pub fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// The first 16 bytes, in hex.
    pub fn hex(self) -> String {
        let digest = self.0.finish();
        let mut out = String::with_capacity(32);
        for b in &digest.as_ref()[..16] {
            out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
        }
        out
    }
}

impl KeySink for Sha256 {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update(b);
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// Feeds the key of `key` for a request from `client` with `headers` into `sink`; `false` when
/// the limit does not apply (a missing header with `missingHeader: NoLimit`). Each part is
/// tagged and length-prefixed, so that different parts never produce the same bytes.
pub fn feed(
    key: &LimitKey,
    client: impl FnOnce() -> IpAddr,
    headers: &HeaderMap,
    claims: Option<&VerifiedClaims>,
    sink: &mut impl KeySink,
) -> bool {
    let mut client = Some(client);
    for part in &key.parts {
        match part {
            KeyPart::ClientIp => {
                let ip = client.take().map_or(IpAddr::from([0u8; 4]), |f| f());
                match ip {
                    IpAddr::V4(v4) => {
                        sink.bytes(&[1, 4]);
                        sink.bytes(&v4.octets());
                    }
                    IpAddr::V6(v6) => {
                        sink.bytes(&[1, 16]);
                        sink.bytes(&v6.octets());
                    }
                }
            }
            KeyPart::Header(name) => {
                let mut values = headers.get_all(name).iter().peekable();
                if values.peek().is_none() {
                    match key.missing_header.unwrap_or_default() {
                        MissingHeader::NoLimit => return false,
                        MissingHeader::SharedBucket => sink.bytes(&[3]),
                        MissingHeader::ClientIp => fallback_ip(&mut client, sink),
                    }
                }
                for v in values {
                    sink.bytes(&[2]);
                    sink.bytes(&(v.len() as u32).to_le_bytes());
                    sink.bytes(v.as_bytes());
                }
            }
            KeyPart::JwtClaim(name) => {
                match claims
                    .and_then(|c| c.0.get(&**name))
                    .filter(|v| !v.is_null())
                {
                    // A string as itself; anything else (number, bool, array, object) as JSON.
                    Some(Value::String(s)) => claim_bytes(sink, 4, s.as_bytes()),
                    Some(other) => claim_bytes(sink, 6, other.to_string().as_bytes()),
                    None => match key.missing_header.unwrap_or_default() {
                        MissingHeader::NoLimit => return false,
                        MissingHeader::SharedBucket => sink.bytes(&[5]),
                        MissingHeader::ClientIp => fallback_ip(&mut client, sink),
                    },
                }
            }
        }
    }
    true
}

/// `missingHeader: ClientIP`: the client address in place of a missing part (tagged apart
/// from a `clientIP` part; the compiler refuses it beside one).
fn fallback_ip(client: &mut Option<impl FnOnce() -> IpAddr>, sink: &mut impl KeySink) {
    match client.take().map_or(IpAddr::from([0u8; 4]), |f| f()) {
        IpAddr::V4(v4) => {
            sink.bytes(&[7, 4]);
            sink.bytes(&v4.octets());
        }
        IpAddr::V6(v6) => {
            sink.bytes(&[7, 16]);
            sink.bytes(&v6.octets());
        }
    }
}

fn claim_bytes(sink: &mut impl KeySink, tag: u8, value: &[u8]) {
    sink.bytes(&[tag]);
    sink.bytes(&(value.len() as u32).to_le_bytes());
    sink.bytes(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn bytes_of(key: &LimitKey, ip: &str, headers: &[(&'static str, &str)]) -> Option<Vec<u8>> {
        struct Collect(Vec<u8>);
        impl KeySink for Collect {
            fn bytes(&mut self, b: &[u8]) {
                self.0.extend_from_slice(b);
            }
        }
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, v.parse().unwrap());
        }
        let mut sink = Collect(Vec::new());
        feed(key, || ip.parse().unwrap(), &h, None, &mut sink).then_some(sink.0)
    }

    fn key(parts: Vec<KeyPart>, missing: Option<MissingHeader>) -> LimitKey {
        LimitKey {
            parts,
            missing_header: missing,
        }
    }

    #[test]
    fn clients_and_header_values_make_different_keys() {
        let ip = key(vec![KeyPart::ClientIp], None);
        assert_ne!(
            bytes_of(&ip, "10.0.0.1", &[]),
            bytes_of(&ip, "10.0.0.2", &[])
        );
        let h = key(
            vec![KeyPart::Header(HeaderName::from_static("x-api-key"))],
            Some(MissingHeader::SharedBucket),
        );
        assert_ne!(
            bytes_of(&h, "10.0.0.1", &[("x-api-key", "a")]),
            bytes_of(&h, "10.0.0.1", &[("x-api-key", "b")])
        );
        assert_eq!(
            bytes_of(&h, "10.0.0.1", &[("x-api-key", "a")]),
            bytes_of(&h, "10.0.0.2", &[("x-api-key", "a")]),
            "a header key ignores the address"
        );
        // A missing header is its own shared bucket, not the empty value's.
        assert_ne!(
            bytes_of(&h, "10.0.0.1", &[]),
            bytes_of(&h, "10.0.0.1", &[("x-api-key", "")])
        );
    }

    #[test]
    fn combined_keys_need_both_parts_to_match() {
        let both = key(
            vec![
                KeyPart::ClientIp,
                KeyPart::Header(HeaderName::from_static("x-tenant")),
            ],
            Some(MissingHeader::SharedBucket),
        );
        let a = bytes_of(&both, "10.0.0.1", &[("x-tenant", "t1")]);
        assert_ne!(a, bytes_of(&both, "10.0.0.2", &[("x-tenant", "t1")]));
        assert_ne!(a, bytes_of(&both, "10.0.0.1", &[("x-tenant", "t2")]));
        assert_eq!(a, bytes_of(&both, "10.0.0.1", &[("x-tenant", "t1")]));
    }

    #[test]
    fn client_ip_for_a_missing_header_keys_by_address_apart_from_values() {
        let h = key(
            vec![KeyPart::Header(HeaderName::from_static("x-api-client"))],
            Some(MissingHeader::ClientIp),
        );
        let a = bytes_of(&h, "10.0.0.1", &[]);
        assert_eq!(a, bytes_of(&h, "10.0.0.1", &[]));
        assert_ne!(a, bytes_of(&h, "10.0.0.2", &[]));
        assert_ne!(a, bytes_of(&h, "10.0.0.1", &[("x-api-client", "10.0.0.1")]));
        assert_eq!(
            bytes_of(&h, "10.0.0.1", &[("x-api-client", "c")]),
            bytes_of(&h, "10.0.0.2", &[("x-api-client", "c")]),
        );
    }

    #[test]
    fn no_limit_for_a_missing_header_skips_the_limit() {
        let h = key(
            vec![KeyPart::Header(HeaderName::from_static("x-api-key"))],
            Some(MissingHeader::NoLimit),
        );
        assert_eq!(bytes_of(&h, "10.0.0.1", &[]), None);
        assert!(bytes_of(&h, "10.0.0.1", &[("x-api-key", "k")]).is_some());
    }

    #[test]
    fn verified_claims_key_by_value_and_a_missing_claim_is_its_own_bucket() {
        let k = key(
            vec![KeyPart::JwtClaim("sub".into())],
            Some(MissingHeader::SharedBucket),
        );
        let with = |claims: serde_json::Value| {
            struct Collect(Vec<u8>);
            impl KeySink for Collect {
                fn bytes(&mut self, b: &[u8]) {
                    self.0.extend_from_slice(b);
                }
            }
            let claims = VerifiedClaims(claims.as_object().unwrap().clone());
            let mut sink = Collect(Vec::new());
            let ip = || "10.0.0.1".parse().unwrap();
            feed(&k, ip, &HeaderMap::new(), Some(&claims), &mut sink).then_some(sink.0)
        };
        let alice = with(serde_json::json!({"sub": "alice"}));
        assert_ne!(alice, with(serde_json::json!({"sub": "bob"})));
        assert_eq!(alice, with(serde_json::json!({"sub": "alice", "jti": "2"})));
        // The string "7" and the number 7 are different values.
        assert_ne!(
            with(serde_json::json!({"sub": "7"})),
            with(serde_json::json!({"sub": 7}))
        );
        let missing = with(serde_json::json!({}));
        assert_eq!(missing, with(serde_json::json!({"sub": null})));
        assert_ne!(missing, with(serde_json::json!({"sub": ""})));
        let no_limit = key(
            vec![KeyPart::JwtClaim("sub".into())],
            Some(MissingHeader::NoLimit),
        );
        let claims = VerifiedClaims(serde_json::Map::new());
        let ip = || "10.0.0.1".parse().unwrap();
        assert!(!feed(
            &no_limit,
            ip,
            &HeaderMap::new(),
            Some(&claims),
            &mut std::collections::hash_map::DefaultHasher::new()
        ));
    }

    #[test]
    fn the_shared_key_is_empty() {
        assert_eq!(
            bytes_of(&LimitKey::default(), "10.0.0.1", &[]),
            Some(Vec::new())
        );
    }

    #[test]
    fn the_global_digest_is_stable_hex() {
        let mut a = Sha256::new();
        a.bytes(b"abc");
        // SHA-256("abc") starts ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(a.hex(), "ba7816bf8f01cfea414140de5dae2223");
    }
}
