//! An upstream that records what reached it, and answers with the bytes each test chooses.

use super::*;

/// A request as an upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: String,
    /// Lower-case names, in the order received.
    pub(crate) headers: Headers,
    pub(crate) body: Blob,
    pub(crate) trailers: Headers,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// What a [`Recorder`] does with a request.
pub(crate) enum Answer {
    /// Writes these bytes and waits for the next request.
    Keep(Vec<u8>),
    /// Writes these bytes and closes.
    Close(Vec<u8>),
    /// Writes these bytes, then closes the connection after it sat idle this long.
    CloseIdle(Vec<u8>, Duration),
    /// Closes without answering, as if the connection had been closed just before the request
    /// arrived (the keep-alive race); the request is not recorded.
    Hangup,
}

/// Decides the answer from the request and its index on its connection (0 for the first).
pub(crate) type Responder = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

/// A raw HTTP/1.1 upstream: parses each request itself (`Content-Length` or chunked body),
/// records it once it is complete, and answers as its responder says, with keep-alive.
pub(crate) struct Recorder {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Log,
    /// Requests received whole and met with [`Answer::Hangup`].
    pub(crate) hung_up: Log,
    pub(crate) connections: Arc<AtomicUsize>,
}

impl Recorder {
    /// Answers every request with [`OK`].
    pub(crate) async fn start() -> Self {
        Self::answering(|s, _| Answer::Keep(ok_for(s))).await
    }

    pub(crate) async fn answering(
        respond: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hung_up = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let respond: Arc<Responder> = Arc::new(respond);
        let logs = (seen.clone(), hung_up.clone());
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let wire = Wire {
                    io,
                    buf: Vec::new(),
                    wait: None,
                };
                tokio::spawn(record(wire, logs.clone(), respond.clone()));
            }
        });
        Self {
            addr,
            seen,
            hung_up,
            connections,
        }
    }

    /// What was recorded since the last call.
    pub(crate) fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// [`OK`], without its body for a HEAD request.
pub(crate) fn ok_for(seen: &Seen) -> Vec<u8> {
    if seen.method == "HEAD" {
        OK[..OK.len() - 2].to_vec()
    } else {
        OK.to_vec()
    }
}

pub(crate) type Log = Arc<Mutex<Vec<Seen>>>;

pub(crate) async fn record(mut w: Wire, (log, hung_up): (Log, Log), respond: Arc<Responder>) {
    for n in 0.. {
        // An incomplete request (the proxy gave up mid-body) is never recorded.
        let Ok(Some(seen)) = read_request(&mut w).await else {
            return;
        };
        let answer = respond(&seen, n);
        match answer {
            Answer::Hangup => hung_up.lock().unwrap().push(seen),
            _ => log.lock().unwrap().push(seen),
        }
        let (bytes, close_after) = match answer {
            Answer::Keep(b) => (b, None),
            Answer::Close(b) => (b, Some(Duration::ZERO)),
            Answer::CloseIdle(b, d) => (b, Some(d)),
            Answer::Hangup => return,
        };
        if w.io.write_all(&bytes).await.is_err() {
            return;
        }
        if let Some(d) = close_after {
            tokio::time::sleep(d).await;
            let _ = w.io.shutdown().await;
            return;
        }
    }
}

pub(crate) async fn read_request(w: &mut Wire) -> Result<Option<Seen>, Cut> {
    let Some((start, headers)) = w.head().await? else {
        return Ok(None);
    };
    let mut parts = start.splitn(3, ' ');
    let mut part = || parts.next().unwrap_or_default().to_owned();
    let (method, target, version) = (part(), part(), part());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let (body, trailers) = if chunked {
        w.chunked().await?
    } else if let Some(n) = header(&headers, "content-length") {
        let n = n.parse().map_err(|_| Cut::Garbled(n.to_owned()))?;
        (w.take(n).await?, Vec::new())
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Some(Seen {
        method,
        target,
        version,
        headers,
        body: Blob(body),
        trailers,
    }))
}
