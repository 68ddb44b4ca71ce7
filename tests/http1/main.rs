//! The native HTTP/1.1 path (`Http1Codec::Native`) through real sockets: a differential run
//! against hyper (`Http1Codec::Hyper`) over a corpus of raw requests, the request-smuggling
//! shapes the native codec must refuse, and edge cases of response framing, connection pooling
//! and the hand-off to hyper (h2c, upgrades).
//!
//! Upstreams are raw TCP servers ([`Recorder`]) that parse requests themselves, record exactly
//! what reached them, and answer with the bytes each test chooses. Clients are raw sockets
//! ([`Wire`]) too, so every byte on both sides is the test's.

#[path = "../common/mod.rs"]
mod common;
mod differential;
mod edges;
mod gateways;
mod recorder;
mod smuggling;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ConfigDir, HttpClient, Upstream};
use futures::{SinkExt, StreamExt};
use tidegate::proxy::{Http1Codec, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// The longest a client read waits for the gateway.
const WAIT: Duration = Duration::from_secs(5);

/// What the recording upstream answers by default.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A request hidden where a correct parser sees body bytes (or nothing at all).
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

use gateways::*;
use recorder::*;
use wire::*;
