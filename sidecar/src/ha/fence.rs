//! The fence: stops a writable PostgreSQL the moment this member can no
//! longer prove it holds the leader lease with the safety margin left
//! (invariant 1). Two layers, neither needing the store or SQL:
//! - this task, apart from the HA loop, so a stuck cycle or a hung etcd call
//!   cannot delay it;
//! - the guard process (`guard.rs`), which this task keeps informed of the
//!   deadline, so even a frozen sidecar (SIGSTOP) cannot keep PostgreSQL
//!   writable past it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::guard::{to_monotonic_ns, Guard};
use crate::postgres::StopMode;
use crate::state::Shared;

/// How often the fence looks. Small against the fence margin (≥ 1 s).
const TICK: Duration = Duration::from_millis(100);

pub async fn guard(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut guard = spawn_guard(&shared);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        let pg = &shared.postgres;
        // A running instance without standby.signal accepts (or is about to
        // accept) writes; promotions and primary starts happen only with the lease.
        let writable = pg.is_running() && !pg.is_standby_configured();
        let snap = shared.snapshot();
        let now = Instant::now();
        let vouch = if writable && !snap.dynamic.pause && shared.holds_leader_lease(now) {
            shared
                .lease
                .deadline()
                .map(|d| to_monotonic_ns(d - snap.dynamic.fence_margin()))
        } else {
            None
        };
        if let Some(g) = guard.as_mut() {
            if let Err(e) = g.set(vouch) {
                tracing::warn!(error = %e, "fence guard process is gone; starting a new one");
                guard = spawn_guard(&shared);
                if let Some(g) = guard.as_mut() {
                    let _ = g.set(vouch);
                }
            }
        }
        if !writable || vouch.is_some() || snap.dynamic.pause {
            continue;
        }
        tracing::warn!(
            "fencing: PostgreSQL is writable but my leader lease is not provably mine \
             for the safety margin; stopping it immediately"
        );
        match pg.stop(StopMode::Immediate).await {
            Ok(()) => shared.callbacks.notify(super::callbacks::Event::Stopped(
                crate::cluster::Role::Primary,
            )),
            Err(e) => tracing::error!(error = %e, "fencing failed to stop PostgreSQL"),
        }
    }
    if let Some(g) = guard {
        g.stop();
    }
}

fn spawn_guard(shared: &Shared) -> Option<Guard> {
    match Guard::spawn(shared.postgres.data_dir()) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the fence guard process");
            None
        }
    }
}
