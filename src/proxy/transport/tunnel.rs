//! Upgraded connections (WebSocket and other `Upgrade:` protocols): bytes copied both ways.
//!
//! Tunnels do not hold a routing table, so they survive every reload. On shutdown they get the
//! drain period to finish and are then closed.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tunnels of one proxy: tracked, so a drain can wait for them, and closed at `hard_stop`.
#[derive(Clone, Default)]
pub struct Tunnels {
    tracker: TaskTracker,
    hard_stop: CancellationToken,
}

impl Tunnels {
    /// Tunnels that close when `hard_stop` is cancelled.
    pub fn new(hard_stop: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            hard_stop,
        }
    }

    /// Joins the client's and the upstream's upgraded connections once both are ready.
    pub fn spawn(&self, client: OnUpgrade, upstream: OnUpgrade) {
        let stop = self.hard_stop.clone();
        self.tracker.spawn(async move {
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

    /// No new tunnels; [`Tunnels::wait`] then ends when the last one closes.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Waits for every tunnel to close (after [`Tunnels::close`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}
