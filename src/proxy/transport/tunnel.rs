//! Upgraded connections (WebSocket and other `Upgrade:` protocols): bytes copied both ways.
//!
//! Tunnels do not hold a routing table, so they survive every reload. On shutdown they get the
//! drain period to finish and are then closed.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Shared;

/// Joins the client's and the upstream's upgraded connections once both are ready.
pub(crate) fn spawn(shared: &Shared, client: OnUpgrade, upstream: OnUpgrade) {
    let stop = shared.hard_stop.clone();
    shared.tunnels.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
            }
            () = stop.cancelled() => tracing::debug!("tunnel closed at the end of the drain period"),
        }
    });
}
