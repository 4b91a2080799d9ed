//! The `[bootstrap_from]` section of the member's file: how the member
//! that wins the bootstrap race creates the cluster, with `initdb` or by
//! restoring a backup (optionally to a point in time). `docs/configuration.md`
//! documents the same keys for operators; [`crate::backup::model::bootstrap`]
//! builds the restore.
//!
//! It is a section of its own because `[bootstrap]` is the cluster-wide
//! configuration seeded into the store, and this is not: it is read only
//! by the member that creates the cluster, at that moment.

use serde::{Deserialize, Serialize};

use super::target::{check_timeline, Target, TargetText};
use super::Invalid;

/// How a new cluster is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapMethod {
    /// An empty cluster (initdb).
    #[default]
    Initdb,
    /// A backup from the `[backup]` repository, recovered and promoted.
    Backup,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapFrom {
    /// `"initdb"` (default) or `"backup"`.
    #[serde(default)]
    pub method: BootstrapMethod,
    /// With `backup`: a backup label, or `"latest"` (default; with a time
    /// or LSN target, the newest backup that finished before it).
    #[serde(default)]
    pub set: Option<String>,
    /// Recover until this time (`YYYY-MM-DD HH:MM:SS[.ffffff]+TZ`).
    #[serde(default)]
    pub target_time: Option<String>,
    /// Recover until this WAL position (`X/Y`).
    #[serde(default)]
    pub target_lsn: Option<String>,
    /// Recover until this transaction id has committed.
    #[serde(default)]
    pub target_xid: Option<String>,
    /// Recover until this restore point (pg_create_restore_point).
    #[serde(default)]
    pub target_name: Option<String>,
    /// `"immediate"`: stop as soon as the backup is consistent.
    #[serde(default)]
    pub target: Option<String>,
    /// Stop just before the target instead of just after it.
    #[serde(default)]
    pub target_exclusive: bool,
    /// recovery_target_timeline: `"current"`, `"latest"` or a number;
    /// default: the newest archived timeline that passes through the backup.
    #[serde(default)]
    pub target_timeline: Option<String>,
}

impl BootstrapFrom {
    pub(crate) fn target_text(&self) -> TargetText<'_> {
        TargetText {
            time: self.target_time.as_deref(),
            lsn: self.target_lsn.as_deref(),
            xid: self.target_xid.as_deref(),
            name: self.target_name.as_deref(),
            immediate: self.target.is_some(),
        }
    }

    /// The backup label asked for, `latest` by default.
    pub fn set(&self) -> &str {
        self.set.as_deref().unwrap_or("latest")
    }

    /// Checks serde cannot express; the error names the key.
    /// `backup_configured`: the file has a `[backup]` section.
    pub fn validate(&self, backup_configured: bool) -> Result<(), Invalid> {
        if self.method == BootstrapMethod::Initdb {
            let restore_keys = [
                ("set", self.set.is_some()),
                ("target_time", self.target_time.is_some()),
                ("target_lsn", self.target_lsn.is_some()),
                ("target_xid", self.target_xid.is_some()),
                ("target_name", self.target_name.is_some()),
                ("target", self.target.is_some()),
                ("target_exclusive", self.target_exclusive),
                ("target_timeline", self.target_timeline.is_some()),
            ];
            if let Some((key, _)) = restore_keys.iter().find(|(_, set)| *set) {
                return Err(Invalid::new(
                    format!("bootstrap_from.{key}"),
                    "is only used with method = \"backup\"",
                ));
            }
            return Ok(());
        }
        if !backup_configured {
            return Err(Invalid::new(
                "bootstrap_from.method",
                "\"backup\" needs a [backup] section: the repository to restore from",
            ));
        }
        if self.set().trim().is_empty() {
            return Err(Invalid::new(
                "bootstrap_from.set",
                "must be a backup label or \"latest\"",
            ));
        }
        if let Some(keyword) = &self.target {
            if keyword != "immediate" {
                return Err(Invalid::new(
                    "bootstrap_from.target",
                    format!("{keyword:?}: the only keyword is \"immediate\""),
                ));
            }
        }
        let target = Target::parse(&self.target_text()).map_err(|(field, message)| {
            let key = if field.is_empty() {
                "bootstrap_from".to_string()
            } else {
                format!("bootstrap_from.target_{field}")
            };
            Invalid::new(key, message)
        })?;
        if self.target_exclusive && matches!(target, Target::End | Target::Immediate) {
            return Err(Invalid::new(
                "bootstrap_from.target_exclusive",
                "needs a time, LSN, xid or name target",
            ));
        }
        if let Some(tl) = &self.target_timeline {
            check_timeline(tl).map_err(|m| Invalid::new("bootstrap_from.target_timeline", m))?;
        }
        Ok(())
    }
}
