//! The repository as `/metrics` reports it. A background task keeps a
//! summary of the catalog so that a scrape never waits on the repository (a
//! hung repository hung pgbackrest_exporter's whole collection): it checks
//! `backup.json` with one HEAD every [`CHECK_EVERY`] and reloads the summary
//! when that object changed — a backup or an expire, run on any member — or
//! after [`RELOAD_EVERY`] (for the WAL range, which every push moves).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::info::{self, Report};
use crate::backup::Context;

pub const CHECK_EVERY: Duration = Duration::from_secs(10);
pub const RELOAD_EVERY: Duration = Duration::from_secs(300);
/// Longest one check or reload may take before it counts as a failure.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the watcher last learnt.
#[derive(Clone, Default)]
pub struct RepoState {
    /// When the repository last answered a check.
    pub last_ok: Option<SystemTime>,
    /// The last check's error; `None` once a check succeeds again.
    pub error: Option<String>,
    /// The newest summary (kept while the repository fails, with `error` set).
    pub report: Option<Arc<Report>>,
    /// When `report` was loaded.
    pub loaded: Option<SystemTime>,
}

#[derive(Default)]
pub struct RepoWatch {
    state: RwLock<RepoState>,
    /// Asks for a reload before the next check is due.
    poke: tokio::sync::Notify,
}

impl RepoWatch {
    pub fn state(&self) -> RepoState {
        self.state.read().unwrap().clone()
    }

    /// Reload now (after something on this member changed the repository).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    fn answered(&self, report: Option<Report>) {
        let now = SystemTime::now();
        let mut state = self.state.write().unwrap();
        state.last_ok = Some(now);
        state.error = None;
        if let Some(report) = report {
            state.report = Some(Arc::new(report));
            state.loaded = Some(now);
        }
    }

    fn failed(&self, error: String) {
        self.state.write().unwrap().error = Some(error);
    }
}

/// The catalog object's identity: changes when a backup or expire rewrites it.
type Stamp = Option<(u64, Option<SystemTime>)>;

/// Run until `shutdown` flips.
pub async fn keep_watching(
    context: Context,
    repo: Arc<RepoWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let catalog_key = context.layout.catalog_key();
    let mut seen: Option<Stamp> = None;
    let mut loaded_at: Option<Instant> = None;
    let mut poked = false;
    loop {
        match tokio::time::timeout(TIMEOUT, context.storage().head(&catalog_key)).await {
            Ok(Ok(meta)) => {
                let stamp: Stamp = meta.map(|m| (m.size, m.modified));
                let due = loaded_at.is_none_or(|t| t.elapsed() >= RELOAD_EVERY);
                if poked || due || seen != Some(stamp) {
                    match tokio::time::timeout(TIMEOUT, info::gather(&context)).await {
                        Ok(Ok(report)) => {
                            repo.answered(Some(report));
                            seen = Some(stamp);
                            loaded_at = Some(Instant::now());
                        }
                        Ok(Err(e)) => fail(&repo, e.to_string()),
                        Err(_) => fail(&repo, timed_out(&context)),
                    }
                } else {
                    repo.answered(None);
                }
            }
            Ok(Err(e)) => fail(&repo, context.repo_err(e).to_string()),
            Err(_) => fail(&repo, timed_out(&context)),
        }
        poked = tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => false,
            _ = repo.poke.notified() => true,
        };
    }
}

fn fail(repo: &RepoWatch, error: String) {
    tracing::warn!(%error, "backup repository check failed (metrics keep the last summary)");
    repo.failed(error);
}

fn timed_out(context: &Context) -> String {
    format!(
        "repository {} did not answer within {} s",
        context.storage().location(),
        TIMEOUT.as_secs()
    )
}
