//! The lease keeper: renews this member's lease on its own task, several
//! times per TTL, so a slow HA cycle never costs the leader its lease
//! (invariant 7). Each success moves the deadline to the *send* time of the
//! renewal plus the TTL, an instant the store cannot have passed yet
//! (invariant 1 builds its fencing on that).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::dcs::Dcs;
use crate::state::Shared;

pub async fn keep_lease<D: Dcs>(
    dcs: Arc<D>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let dynamic = shared.dynamic();
        let sent = Instant::now();
        match tokio::time::timeout(dynamic.retry_timeout(), dcs.keepalive()).await {
            Ok(Ok(Some(ttl))) => {
                shared.lease.renewed(sent, ttl);
                if failures > 0 {
                    tracing::info!(failures, "lease renewals work again");
                    // etcd answers again: the HA loop looks now, not at its
                    // next tick (a fenced member rejoins at once).
                    shared.wake.notify_one();
                }
                failures = 0;
            }
            Ok(Ok(None)) => {
                tracing::warn!("the lease had expired; a new one is granted");
                shared.lease.lost();
                shared.wake.notify_one();
                failures = 0;
                continue;
            }
            Ok(Err(e)) => {
                failures += 1;
                shared.counters.lease_renewal_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, failures, "lease renewal failed");
            }
            Err(_) => {
                failures += 1;
                shared.counters.lease_renewal_failures.fetch_add(1, Relaxed);
                tracing::warn!(
                    failures,
                    "lease renewal timed out after {:?}",
                    dynamic.retry_timeout()
                );
            }
        }
        let interval = if failures > 0 {
            // Retry soon, but do not hammer a struggling store.
            std::time::Duration::from_millis(500)
        } else {
            dynamic.lease_renew_interval()
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
