//! Operator requests from the REST API (restart, reload, reinitialize),
//! carried out by the HA loop between cycles.

use super::callbacks::Event;
use super::Ha;
use crate::cluster::PgState;
use crate::cluster::Role;
use crate::dcs::Dcs;
use crate::postgres::StopMode;
use crate::state::CommandResult;
use crate::state::MemberCommand;
use tokio::time::Instant;

impl<D: Dcs> Ha<D> {
    /// Carry out an operator command queued through the API.
    pub(super) async fn run_command(&mut self, command: &MemberCommand) -> CommandResult {
        let pg = self.shared.postgres.clone();
        let snap = self.shared.snapshot();
        match command {
            MemberCommand::Reload => {
                let params = self.cluster_parameters(&snap.dynamic);
                let upstream = Self::upstream_of(&snap.view, self.following.as_deref());
                let standby = pg.is_standby_configured();
                pg.write_config(&params, upstream.as_ref(), standby)
                    .map_err(|e| e.to_string())?;
                pg.reload().await.map_err(|e| e.to_string())?;
                if pg.is_running() {
                    self.announce(Event::Reloaded(self.pg_role()));
                }
                Ok("reloaded PostgreSQL's configuration".into())
            }
            MemberCommand::Restart => {
                if !pg.is_running() {
                    return Err("PostgreSQL is not running".into());
                }
                let primary = !pg.is_standby_configured();
                self.set_pg_state(PgState::Restarting, snap.role);
                pg.stop(StopMode::Fast).await.map_err(|e| e.to_string())?;
                let params = self.cluster_parameters(&snap.dynamic);
                let leading = snap.view.leader_name() == Some(self.me());
                let lease_ok = self.shared.holds_leader_lease(Instant::now());
                let started = if super::decide::restart_as_primary(primary, leading, lease_ok) {
                    pg.write_config(&params, None, false)
                        .map_err(|e| e.to_string())?;
                    pg.start().await
                } else {
                    let upstream = Self::upstream_of(&snap.view, self.following.as_deref());
                    pg.write_config(&params, upstream.as_ref(), true)
                        .map_err(|e| e.to_string())?;
                    pg.start().await
                };
                // Not a stop and a start for the callbacks: one on_restart
                // (or a role change, if it came back as a standby).
                match started {
                    Ok(()) => {
                        self.set_pg_state(PgState::Running, snap.role);
                        self.announce(Event::Restarted(self.pg_role()));
                        Ok("restarted successfully".into())
                    }
                    Err(e) => {
                        self.set_pg_state(PgState::StartFailed, snap.role);
                        self.announce(Event::StartFailed(self.pg_role()));
                        Err(format!("restart failed: {e}"))
                    }
                }
            }
            MemberCommand::Reinitialize => {
                if snap.view.leader_name() == Some(self.me()) {
                    return Err("I am the leader, can not reinitialize".into());
                }
                if snap.view.leader.is_none() {
                    return Err("Cluster has no leader, can not reinitialize".into());
                }
                let (was_running, role) = (pg.is_running(), self.pg_role());
                pg.stop(StopMode::Immediate)
                    .await
                    .map_err(|e| e.to_string())?;
                if was_running {
                    self.announce(Event::Stopped(role));
                }
                pg.wipe_data_dir().map_err(|e| e.to_string())?;
                self.system_id = None;
                self.rewind_failed = false;
                self.following = None;
                self.set_pg_state(PgState::Stopped, Role::Uninitialized);
                Ok("reinitialize started".into())
            }
        }
    }
}
