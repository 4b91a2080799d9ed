//! Becoming the primary: starting as one with the key held, and promoting
//! the local standby (the sync key first in synchronous mode, the switch
//! point in the store's history before the new timeline is published).

use std::time::SystemTime;

use super::callbacks::Event;
use super::{Ha, HaError};
use crate::cluster::{ClusterView, HistoryEntry, PgState, Role};
use crate::dcs::Dcs;
use crate::dynamic::DynamicConfig;
use crate::postgres::PgError;

impl<D: Dcs> Ha<D> {
    /// Start PostgreSQL as the primary (the key is held).
    pub(super) async fn start_primary(&mut self, dynamic: &DynamicConfig) -> Result<bool, HaError> {
        let pg = self.shared.postgres.clone();
        self.set_pg_state(PgState::Starting, Role::Primary);
        pg.write_config(&self.cluster_parameters(dynamic), None, false)?;
        self.following = None;
        match pg.start().await {
            Ok(()) => {
                self.set_pg_state(PgState::Running, Role::Primary);
                self.announce(Event::Started(Role::Primary));
                Ok(true)
            }
            Err(e) => {
                // Let a healthy replica take over rather than hold the key uselessly.
                self.set_pg_state(PgState::StartFailed, Role::Primary);
                self.announce(Event::StartFailed(Role::Primary));
                let _ = self.dcs.release_leader().await;
                Err(e.into())
            }
        }
    }

    /// Promote the local standby (the key is held).
    pub(super) async fn promote(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<bool, HaError> {
        let pg = self.shared.postgres.clone();
        let before = pg
            .observe()
            .await
            .ok()
            .and_then(|o| o.timeline)
            .unwrap_or(1);
        if dynamic.synchronous_mode {
            // Invariant 2: from the first commit this leader
            // acknowledges, `sync` must name it, so the former leader
            // can no longer take the key back.
            let fresh = crate::cluster::SyncState::new(self.me(), &[]);
            let expected = view.sync.as_ref().map(|_| view.sync_revision);
            if !self.dcs.write_sync(&fresh, expected).await? {
                tracing::warn!("the sync key changed concurrently; not promoting this cycle");
                return Ok(false);
            }
            self.sync_standbys.clear();
        }
        tracing::info!("promoting PostgreSQL");
        pg.promote().await?;
        // Before anything else: scripts moving a virtual IP or
        // repointing a pooler should not wait for the bookkeeping.
        self.announce(Event::Promoted);
        let counter = if view.failover.is_some() {
            &self.shared.counters.switchovers
        } else {
            &self.shared.counters.failovers
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.following = None;
        self.set_pg_state(PgState::Running, Role::Primary);
        // The switch point first: a former primary that sees the new
        // timeline published compares its WAL with it (ha::rejoin).
        if let Err(e) = self.record_history(view, before).await {
            tracing::warn!(error = %e, "cannot record the timeline history");
        }
        // Publish the new role and timeline at once (rejoining
        // members wait for it).
        if let Ok(observation) = pg.observe().await {
            self.shared.update(|s| s.observation = Some(observation));
        }
        self.publish(None).await;
        // A checkpoint right away puts the new timeline in pg_control,
        // which pg_rewind of the old primary relies on.
        if let Err(e) = pg
            .with_client(async |c| {
                c.batch_execute("CHECKPOINT")
                    .await
                    .map_err(|e| PgError::Sql(e.to_string()))
            })
            .await
        {
            tracing::warn!(error = %e, "checkpoint after promotion failed");
        }
        Ok(true)
    }

    /// After a promotion, append the switch from PostgreSQL's timeline history file.
    pub(super) async fn record_history(
        &self,
        view: &ClusterView,
        old_timeline: u32,
    ) -> Result<(), HaError> {
        let obs = self.shared.postgres.observe().await?;
        let new_timeline = obs.timeline.unwrap_or(old_timeline);
        let path = self
            .shared
            .postgres
            .data_dir()
            .join("pg_wal")
            .join(format!("{new_timeline:08X}.history"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut history = view.history.clone();
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        for line in text.lines() {
            let mut parts = line.split('\t');
            let (Some(tl), Some(lsn)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(tl), Some(lsn)) = (tl.trim().parse::<u32>(), crate::lsn::parse_lsn(lsn)) else {
                continue;
            };
            if history.iter().any(|h| h.0 == tl) {
                continue;
            }
            let reason = parts.next().unwrap_or("").trim().to_string();
            history.push(HistoryEntry(
                tl,
                lsn,
                reason,
                now.clone(),
                self.me().to_string(),
            ));
        }
        history.sort_by_key(|h| h.0);
        self.dcs.write_history(&history).await?;
        Ok(())
    }
}
