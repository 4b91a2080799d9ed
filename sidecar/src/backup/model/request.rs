//! What a restore is asked to do: the request `pgpilot restore`'s flags,
//! the HA loop (a replica from a backup) and `[bootstrap_from]` build, and
//! [`super::recovery`] turns into PostgreSQL's settings.

use std::path::PathBuf;

use crate::config::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

/// How the restored directory is set up to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAs {
    /// Archive recovery to the target: `recovery.signal` and the recovery
    /// settings in `postgresql.auto.conf`.
    Recovery,
    /// A standby of a running cluster: `standby.signal` and no recovery
    /// settings (the member's postgresql.conf carries restore_command and
    /// primary_conninfo; it replays the archive, then streams).
    Standby,
}

/// A restore as the CLI or the HA loop asks for it.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// A backup label, or `latest` (`pgpilot restore` chooses the backup).
    pub set: String,
    pub target: Target,
    pub target_action: Option<TargetAction>,
    /// Stop just before the target instead of just after it.
    pub target_exclusive: bool,
    /// recovery_target_timeline (`current`, `latest` or a number); `None`: PostgreSQL's default.
    pub target_timeline: Option<String>,
    /// Restore over an existing data directory.
    pub delta: bool,
    pub data_dir: PathBuf,
    pub start_as: StartAs,
}
