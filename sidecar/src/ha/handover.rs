//! Planned ends of leadership: hand-over to a successor at switchover and
//! at shutdown, without waiting for the lease to expire.

use super::callbacks::Event;
use super::decide::PeerReport;
use super::Ha;
use super::HaError;
use crate::cluster::ClusterView;
use crate::cluster::LeaderStatus;
use crate::cluster::PgState;
use crate::cluster::Role;
use crate::dcs::Dcs;
use crate::postgres::StopMode;
use std::time::Duration;
use tokio::time::Instant;

impl<D: Dcs> Ha<D> {
    /// SIGTERM/SIGINT: a leader stops PostgreSQL, waits until a replica has
    /// its shutdown checkpoint, then releases the key so a replica takes
    /// over at once; a replica just stops.
    pub(super) async fn shutdown(&mut self) {
        let snap = self.shared.snapshot();
        let leading = snap.view.leader_name() == Some(self.me());
        tracing::info!(leader = leading, "shutting down");
        if leading {
            if let Err(e) = self.handover(&snap.view, None).await {
                tracing::error!(error = %e, "hand-over at shutdown failed");
            }
        } else {
            self.set_pg_state(PgState::Stopping, snap.role);
            let (was_running, role) = (self.shared.postgres.is_running(), self.pg_role());
            match self.shared.postgres.stop(StopMode::Fast).await {
                Ok(()) if was_running => self.announce(Event::Stopped(role)),
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "cannot stop PostgreSQL"),
            }
            self.set_pg_state(PgState::Stopped, Role::Demoted);
        }
        if let Err(e) = self.dcs.delete_member().await {
            tracing::warn!(error = %e, "cannot remove the member key; it expires with the lease");
        }
    }

    /// Planned end of leadership (switchover, shutdown): stop PostgreSQL
    /// cleanly, wait until the candidate (or any replica) has received the
    /// shutdown checkpoint so no commit is left behind, then release the key
    /// so the successor takes over at once instead of after a TTL.
    pub(super) async fn handover(
        &mut self,
        view: &ClusterView,
        candidate: Option<&str>,
    ) -> Result<(), HaError> {
        let pg = self.shared.postgres.clone();
        self.set_pg_state(PgState::Stopping, Role::Primary);
        let (was_running, role) = (pg.is_running(), self.pg_role());
        let stopped = pg.stop(StopMode::Fast).await;
        if was_running && stopped.is_ok() {
            self.announce(Event::Stopped(role));
        }
        self.following = None;
        self.set_pg_state(PgState::Stopped, Role::Demoted);
        self.shared.update(|s| s.observation = None);
        stopped?;
        match pg.controldata().await {
            Ok(cd) => {
                let _ = self
                    .dcs
                    .write_status(&LeaderStatus {
                        optime: cd.checkpoint_lsn,
                    })
                    .await;
                self.wait_for_checkpoint(view, candidate, cd.checkpoint_lsn)
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the shutdown checkpoint"),
        }
        match self.dcs.release_leader().await {
            Ok(_) => {
                tracing::info!("released the leader key");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the leader key; it expires with the lease");
                Err(e.into())
            }
        }
    }

    pub(super) async fn wait_for_checkpoint(
        &self,
        view: &ClusterView,
        candidate: Option<&str>,
        checkpoint: u64,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let peers = self.poll_peers(view).await;
            let eligible: Vec<&PeerReport> = peers
                .iter()
                .filter(|p| candidate.is_none_or(|c| c == p.name))
                .collect();
            if eligible.is_empty() {
                tracing::info!("no replica reachable; releasing the key without waiting");
                return;
            }
            if let Some(p) = eligible.iter().find(|p| p.wal_position > checkpoint) {
                tracing::info!(replica = %p.name, "a replica has the shutdown checkpoint");
                return;
            }
            if Instant::now() > deadline {
                tracing::warn!("no replica received the shutdown checkpoint within 10s");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
