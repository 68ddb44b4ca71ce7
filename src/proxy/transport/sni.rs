//! The server name of a TLS ClientHello, read without terminating TLS (for passthrough).
//!
//! Only what is needed is parsed: the handshake records (TLS 1.0–1.3 framing), the ClientHello's
//! fixed fields, and its `server_name` extension (RFC 6066). The ClientHello may span several
//! records; the caller bounds how many bytes it reads.

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// The whole ClientHello is there; its server name, if it sent one (lower-case).
    Complete(Option<String>),
    /// More bytes are needed.
    Partial,
    /// Not a TLS ClientHello.
    Invalid,
}

/// Largest ClientHello read for a server name (larger ones are refused).
pub const MAX_HELLO: usize = 16 * 1024;

/// Parses the ClientHello at the start of `buf`.
pub fn parse(buf: &[u8]) -> Hello {
    // Gather the handshake bytes from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return Hello::Partial;
        }
        if rest[0] != 22 || rest[1] != 3 {
            return Hello::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > MAX_HELLO {
            return Hello::Invalid;
        }
        let Some(body) = rest.get(5..5 + len) else {
            return Hello::Partial;
        };
        handshake.extend_from_slice(body);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Hello::Invalid;
            }
            let need = 4
                + (usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]));
            if need > MAX_HELLO {
                return Hello::Invalid;
            }
            if handshake.len() >= need {
                return match server_name(&handshake[4..need]) {
                    Some(name) => Hello::Complete(name),
                    None => Hello::Invalid,
                };
            }
        }
    }
}

/// A cursor over the ClientHello body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// `Some(None)`: a well-formed ClientHello without a server name.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // client_version, random
    let n = r.u8()?;
    r.take(n)?; // session_id
    let n = r.u16()?;
    r.take(n)?; // cipher_suites
    let n = r.u8()?;
    r.take(n)?; // compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions
    }
    let n = r.u16()?;
    let mut ext = Reader(r.take(n)?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let n = ext.u16()?;
        let data = ext.take(n)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let n = list.u16()?;
        let mut names = Reader(list.take(n)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = names.u16()?;
            let name = names.take(n)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn the_server_name_of_a_real_client_hello() {
        let hello = client_hello("Shop.Example.com");
        assert_eq!(
            parse(&hello),
            Hello::Complete(Some("shop.example.com".into()))
        );
        // Any prefix is partial, never a wrong answer.
        for cut in [0, 3, 5, 9, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), Hello::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn a_client_hello_split_over_two_records() {
        let hello = client_hello("a.test");
        let body = &hello[5..];
        let (first, second) = body.split_at(40);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(parse(&split), Hello::Complete(Some("a.test".into())));
    }

    #[test]
    fn without_a_server_name_and_not_tls_at_all() {
        // An IP address is not sent as a server name.
        let hello = client_hello("127.0.0.1");
        assert_eq!(parse(&hello), Hello::Complete(None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::Invalid);
        assert_eq!(parse(&[22, 3, 1, 0xff, 0xff, 1]), Hello::Invalid);
        // A truncated body inside a complete record is invalid, not partial.
        let mut bad = client_hello("a.test");
        let len = bad.len();
        bad[3..5].copy_from_slice(&((len - 5) as u16).to_be_bytes());
        bad[6..9].copy_from_slice(&[0, 0, 10]);
        assert_eq!(parse(&bad), Hello::Invalid);
    }
}
