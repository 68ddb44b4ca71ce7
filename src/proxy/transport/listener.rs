//! Listeners and connections: HTTP/1.1 and h2c on one port, idle timeouts, graceful drain.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::body::ClientBody;
use super::conn::{Activity, ConnCtx};
use super::{Http1Codec, Shared, h1, handler};
use crate::telemetry::metrics::ListenerLabels;

/// Accepts connections until `shared.draining` is cancelled.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let open = shared
        .telemetry
        .metrics
        .open_connections
        .get_or_create(&ListenerLabels {
            listener: "http",
            protocol: "http",
        })
        .clone();
    loop {
        let accepted = tokio::select! {
            () = shared.draining.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared2 = shared.clone();
                let open = open.clone();
                open.inc();
                let native = shared.config.http1_codec == Http1Codec::Native;
                shared.connections.spawn(async move {
                    if native {
                        h1::serve(shared2, stream, peer).await;
                    } else {
                        let _ = stream.set_nodelay(true);
                        Box::pin(serve_hyper(shared2, stream, peer)).await;
                    }
                    open.dec();
                });
            }
            Err(e) => {
                // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves a connection with hyper (HTTP/2, and HTTP/1.1 when the native codec hands over).
pub(crate) async fn serve_hyper<I>(shared: Arc<Shared>, stream: I, peer: std::net::SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let ctx = Arc::new(ConnCtx {
        peer,
        scheme: "http",
        activity: activity.clone(),
    });
    let svc_shared = shared.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        handler::handle(svc_shared.clone(), ctx.clone(), req.map(ClientBody::Hyper))
    });
    let conn = shared
        .server
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);

    let idle = shared.config.idle_timeout;
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = shared.draining.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut timer, if !closing => {
                match activity.idle_deadline(idle) {
                    Some(deadline) if deadline <= Instant::now() => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Some(deadline) => timer.as_mut().reset(deadline),
                    None => timer.as_mut().reset(Instant::now() + idle),
                }
            }
        }
    }
}
