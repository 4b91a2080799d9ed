//! The fence: a writable PostgreSQL stops accepting writes before this
//! member's leader lease could be taken by another (invariant 1), and then
//! comes back read-only. Two layers, neither needing the store or SQL:
//! - this task, apart from the HA loop, so a stuck cycle or a hung etcd call
//!   cannot delay it;
//! - the guard process (`guard.rs`), which this task keeps informed of the
//!   hard point, so even a frozen sidecar (SIGSTOP) cannot keep PostgreSQL
//!   writable past it.
//!
//! The hard point is the lease deadline minus the fence margin, as it always
//! was: by then PostgreSQL has stopped, immediately if need be. A little
//! before it ([`demote_grace`]) this task demotes: a fast shutdown (clients
//! are cut off and refused at once; the replicas get everything up to the
//! shutdown checkpoint, so the member usually rejoins without pg_rewind),
//! made immediate if it is still running at the hard point; then PostgreSQL
//! starts again as a standby with the configuration it had (no upstream on
//! a former primary), so reads keep working while the store is out of
//! reach. The HA loop points it at a new leader once one is known, after a
//! rewind if its history diverged (`decide`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::callbacks::Event;
use super::guard::{to_monotonic_ns, Guard};
use crate::cluster::{PgState, Role};
use crate::postgres::StopMode;
use crate::state::Shared;

/// How often the fence looks. Small against the demotion grace (≥ 333 ms).
const TICK: Duration = Duration::from_millis(50);

/// What the fence does at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Nothing to guard: PostgreSQL is stopped or a standby, or the cluster
    /// is in maintenance mode. The guard is disarmed.
    Idle,
    /// Writable, and the lease holds past the hard point: the guard vouches
    /// until then.
    Vouch { hard: Instant },
    /// The hard point is near: demote now (fast shutdown), immediately at
    /// `hard` at the latest.
    Demote { hard: Instant },
    /// Writable with no lease to show (another member's key, no key, the
    /// lease lost) or past the hard point: stop immediately.
    Stop,
}

/// How long before the hard point the fence starts a demotion: a third of
/// the fence margin, at most one second (a fast shutdown of a primary whose
/// dirty pages a checkpoint keeps few takes well under that).
pub fn demote_grace(margin: Duration) -> Duration {
    (margin / 3).min(Duration::from_secs(1))
}

/// Decide what to do at `now`. `lease` is the deadline of this member's
/// lease while the leader key is its own (`None` otherwise).
pub fn look(
    writable: bool,
    paused: bool,
    lease: Option<Instant>,
    now: Instant,
    margin: Duration,
) -> Look {
    if !writable || paused {
        return Look::Idle;
    }
    let Some(hard) = lease.and_then(|d| d.checked_sub(margin)) else {
        return Look::Stop;
    };
    if now >= hard {
        Look::Stop
    } else if now + demote_grace(margin) >= hard {
        Look::Demote { hard }
    } else {
        Look::Vouch { hard }
    }
}

pub async fn guard(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut guard = GuardLink::spawn(&shared);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        let pg = &shared.postgres;
        // A running instance without standby.signal accepts (or is about to
        // accept) writes; promotions and primary starts happen only with the lease.
        let writable = pg.is_running() && !pg.is_standby_configured();
        // Only the settings, not the whole snapshot (cluster view and all)
        // at every tick.
        let dynamic = shared.dynamic();
        let now = Instant::now();
        let margin = dynamic.fence_margin();
        let lease = shared.own_lease_deadline();
        let stopped = match look(writable, dynamic.pause, lease, now, margin) {
            Look::Idle => {
                guard.vouch(&shared, None);
                continue;
            }
            Look::Vouch { hard } => {
                guard.vouch(&shared, Some(hard));
                continue;
            }
            Look::Demote { hard } => {
                // The guard keeps vouching only up to the hard point.
                guard.vouch(&shared, Some(hard));
                tracing::warn!(
                    "fencing: my leader lease could not be renewed and expires within the \
                     fence margin soon; demoting (fast shutdown, then read-only)"
                );
                shared.update(|s| s.pg_state = PgState::Stopping);
                pg.stop_by(StopMode::Fast, hard).await
            }
            Look::Stop => {
                tracing::warn!(
                    "fencing: PostgreSQL is writable but my leader lease is not provably mine \
                     for the safety margin; stopping it immediately"
                );
                shared.update(|s| s.pg_state = PgState::Stopping);
                // SIGQUIT now; SIGKILL (which would leave its backends
                // running) only if it is still there pg_ctl_timeout later.
                pg.stop(StopMode::Immediate)
                    .await
                    .map(|()| StopMode::Immediate)
            }
        };
        match stopped {
            Ok(how) => {
                guard.vouch(&shared, None);
                shared.callbacks.notify(Event::Stopped(Role::Primary));
                tracing::info!(
                    clean = how == StopMode::Fast,
                    "fencing: PostgreSQL no longer accepts writes; starting it read-only"
                );
                come_back_read_only(&shared).await;
            }
            Err(e) => tracing::error!(error = %e, "fencing failed to stop PostgreSQL"),
        }
    }
    guard.stop();
}

/// Start the fenced former primary again as a standby with no upstream.
async fn come_back_read_only(shared: &Shared) {
    let pg = &shared.postgres;
    if pg.is_running() {
        // Someone (the HA loop) started it again meanwhile: it decided.
        return;
    }
    shared.update(|s| {
        s.pg_state = PgState::Starting;
        s.role = Role::Replica;
    });
    let started = match pg.mark_standby() {
        Ok(()) => pg.start().await,
        Err(e) => Err(e),
    };
    match started {
        Ok(()) => {
            shared.update(|s| s.pg_state = PgState::Running);
            shared.callbacks.notify(Event::Started(Role::Replica));
            tracing::info!("fencing: PostgreSQL serves reads again, as a standby");
        }
        Err(e) => {
            // The HA loop starts it in a later cycle (or reports why not).
            shared.update(|s| s.pg_state = PgState::Stopped);
            tracing::warn!(error = %e, "fencing: cannot start PostgreSQL read-only");
        }
    }
}

/// The guard process and what it was last told.
struct GuardLink(Option<Guard>);

impl GuardLink {
    fn spawn(shared: &Shared) -> Self {
        match Guard::spawn(shared.postgres.data_dir()) {
            Ok(g) => GuardLink(Some(g)),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the fence guard process");
                GuardLink(None)
            }
        }
    }

    /// Vouch for PostgreSQL until `hard`, or withdraw; a guard that is gone
    /// is replaced.
    fn vouch(&mut self, shared: &Shared, hard: Option<Instant>) {
        let ns = hard.map(to_monotonic_ns);
        let Some(g) = self.0.as_mut() else { return };
        if let Err(e) = g.set(ns) {
            tracing::warn!(error = %e, "fence guard process is gone; starting a new one");
            *self = GuardLink::spawn(shared);
            if let Some(g) = self.0.as_mut() {
                let _ = g.set(ns);
            }
        }
    }

    fn stop(self) {
        if let Some(g) = self.0 {
            g.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demote_before_the_hard_point_stop_at_it() {
        let now = Instant::now();
        let margin = Duration::from_millis(3333); // ttl 10
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let deadline = |left| Some(now + left);
        let rows = [
            (
                "stopped or a standby",
                false,
                false,
                deadline(s(10)),
                Look::Idle,
            ),
            ("maintenance mode", true, true, None, Look::Idle),
            (
                "lease well ahead",
                true,
                false,
                deadline(s(9)),
                Look::Vouch {
                    hard: now + s(9) - margin,
                },
            ),
            (
                "grace not yet reached",
                true,
                false,
                deadline(margin + ms(1001)),
                Look::Vouch {
                    hard: now + ms(1001),
                },
            ),
            (
                "within the grace: demote, immediate at the hard point",
                true,
                false,
                deadline(margin + ms(1000)),
                Look::Demote {
                    hard: now + ms(1000),
                },
            ),
            (
                "just before the hard point",
                true,
                false,
                deadline(margin + ms(10)),
                Look::Demote { hard: now + ms(10) },
            ),
            (
                "at the hard point",
                true,
                false,
                deadline(margin),
                Look::Stop,
            ),
            (
                "past the deadline",
                true,
                false,
                Some(now - ms(1)),
                Look::Stop,
            ),
            ("no lease of mine", true, false, None, Look::Stop),
        ];
        for (why, writable, paused, lease, want) in rows {
            assert_eq!(look(writable, paused, lease, now, margin), want, "{why}");
        }
    }

    #[test]
    fn grace_is_a_third_of_the_margin_at_most_a_second() {
        assert_eq!(
            demote_grace(Duration::from_secs(1)),
            Duration::from_millis(333) + Duration::from_nanos(333_333)
        );
        assert_eq!(
            demote_grace(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }
}
