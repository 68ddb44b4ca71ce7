//! One end of a TCP connection, reading HTTP/1.1 messages by hand.

use super::*;

pub(crate) type Headers = Vec<(String, String)>;

/// Body bytes that print short (a 1 MiB body in an assertion message helps no one).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Blob(pub(crate) Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 96 {
            write!(f, "{:?}", String::from_utf8_lossy(&self.0))
        } else {
            let sum = self.0.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            write!(
                f,
                "<{} bytes, fnv1a {sum:016x}, starting {:?}>",
                self.0.len(),
                String::from_utf8_lossy(&self.0[..48])
            )
        }
    }
}

/// Why reading a message stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The peer closed (or reset) the connection before a message started.
    Closed,
    /// The peer closed the connection inside a message.
    Truncated(String),
    /// Nothing arrived in time.
    Stalled,
    /// Not a message this harness understands.
    Garbled(String),
}

/// One end of a TCP connection, with what was read and not yet consumed.
pub(crate) struct Wire {
    pub(crate) io: TcpStream,
    pub(crate) buf: Vec<u8>,
    /// How long one read may wait (`None`: for ever, as an idle keep-alive server does).
    pub(crate) wait: Option<Duration>,
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Wire {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        Self {
            io: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
            wait: Some(WAIT),
        }
    }

    /// Writes `bytes`; a gateway that already closed is the next read's business.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
    }

    /// Reads once more; `Ok(0)` at the end of the stream (a reset counts as one).
    pub(crate) async fn fill(&mut self) -> Result<usize, Cut> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.io.read(&mut chunk);
        let r = match self.wait {
            Some(d) => tokio::time::timeout(d, read)
                .await
                .map_err(|_| Cut::Stalled)?,
            None => read.await,
        };
        let n = r.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    pub(crate) async fn more(&mut self, what: &str) -> Result<(), Cut> {
        if self.fill().await? == 0 {
            return Err(Cut::Truncated(format!(
                "closed in {what}, unread: {:?}",
                Blob(self.buf.clone())
            )));
        }
        Ok(())
    }

    /// The start line and header fields of the next message (names lower-cased, values
    /// trimmed); `None` when the peer closed first.
    pub(crate) async fn head(&mut self) -> Result<Option<(String, Headers)>, Cut> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Cut::Truncated(format!(
                    "closed in a head: {:?}",
                    Blob(self.buf.clone())
                )));
            }
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (
                    n.to_ascii_lowercase(),
                    v.trim_matches([' ', '\t']).to_owned(),
                ),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        Ok(Some((start, headers)))
    }

    pub(crate) async fn take(&mut self, n: usize) -> Result<Vec<u8>, Cut> {
        while self.buf.len() < n {
            self.more("a body").await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    pub(crate) async fn line(&mut self) -> Result<String, Cut> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.more("a chunked body").await?;
        }
    }

    /// A chunked body: the data, and the trailer fields.
    pub(crate) async fn chunked(&mut self) -> Result<(Vec<u8>, Headers), Cut> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| Cut::Garbled(format!("chunk size line {line:?}")))?;
            if size == 0 {
                break;
            }
            body.extend(self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return Err(Cut::Garbled("no CRLF after chunk data".into()));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok((body, trailers));
            }
            let (n, v) = line.split_once(':').unwrap_or((&line, ""));
            trailers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
    }

    /// Everything until the peer closes.
    pub(crate) async fn rest(&mut self) -> Result<Vec<u8>, Cut> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The next response (1xx other than 101 collected on the way). `head_request`: the request
    /// was HEAD, so no body follows.
    pub(crate) async fn reply(&mut self, head_request: bool) -> Result<Reply, Cut> {
        let mut interim = Vec::new();
        loop {
            let Some((start, headers)) = self.head().await? else {
                return Err(if interim.is_empty() {
                    Cut::Closed
                } else {
                    Cut::Truncated(format!("closed after interim responses {interim:?}"))
                });
            };
            let mut parts = start.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_owned();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Cut::Garbled(format!("status line {start:?}")))?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let chunked = header(&headers, "transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let length = header(&headers, "content-length");
            let (framing, body) = if head_request || matches!(status, 101..=199 | 204 | 304) {
                ("none", Vec::new())
            } else if chunked {
                ("chunked", self.chunked().await?.0)
            } else if let Some(n) = length {
                let n = n
                    .parse()
                    .map_err(|_| Cut::Garbled(format!("content-length {n:?}")))?;
                ("length", self.take(n).await?)
            } else {
                ("close", self.rest().await?)
            };
            return Ok(Reply {
                version,
                status,
                interim,
                headers,
                framing,
                body: Blob(body),
            });
        }
    }

    /// Whether the peer closes the connection (within the wait) with nothing more to say.
    pub(crate) async fn closed(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.fill().await, Ok(0))
    }
}

/// A response as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) version: String,
    pub(crate) status: u16,
    /// 1xx responses received before this one.
    pub(crate) interim: Vec<u16>,
    pub(crate) headers: Headers,
    /// How the body was delimited: `none`, `length`, `chunked` or `close`.
    pub(crate) framing: &'static str,
    pub(crate) body: Blob,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Sends `raw` on a fresh connection and reads one response.
pub(crate) async fn once(addr: SocketAddr, raw: &[u8]) -> Result<Reply, Cut> {
    let mut c = Wire::connect(addr).await;
    c.send(raw).await;
    c.reply(raw.starts_with(b"HEAD ")).await
}
