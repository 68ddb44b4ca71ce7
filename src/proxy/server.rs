//! Listeners and connections: HTTP/1.1 and h2c on one port, idle timeouts, graceful drain.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::Shared;
use super::conn::{Activity, ConnCtx};
use super::handler;
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
                shared.connections.spawn(async move {
                    serve_connection(shared2, stream, peer).await;
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

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: std::net::SocketAddr) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let ctx = Arc::new(ConnCtx {
        peer,
        scheme: "http",
        activity: activity.clone(),
    });
    let svc_shared = shared.clone();
    let service = service_fn(move |req| handler::handle(svc_shared.clone(), ctx.clone(), req));
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
