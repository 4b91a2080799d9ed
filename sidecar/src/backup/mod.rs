//! Base backups and what is done with them: `pgpilot backup`, `restore`,
//! `info` (`backup list`), `expire`, `verify`, `check`, `put-log`,
//! `wipe-data-dir`, and the repository summary behind `/metrics`.
//!
//! Three groups, one direction between them:
//!
//! | group | holds | may import from backup |
//! |---|---|---|
//! | [`command`] | what is run: one module per verb (the order of steps, the choices, the output), the backup's SQL session, the daemon's repository watch | `data`, `model`, this module |
//! | [`data`] | the data path: which files, tar parts, read + hash + compress + upload, download + check + write, page checksums, the restore's target directory, progress | `model`, this module |
//! | [`model`] | what is in the repository and what a restore is asked to do: the manifest, the catalog, WAL names and timelines, the restore request and its recovery settings | this module only |
//!
//! The manifest ([`model::manifest`]) is what restore and verify depend
//! on: they read a backup only through it, and check every byte against it.
//!
//! This module holds what all three share: [`BackupError`] and the exit
//! [`code`]s, the [`Context`] a command works with, and the time formats
//! of labels and reports.
//!
//! The guarantees (docs/design.md, invariant 5): a backup is listed in the catalog
//! only once its data, its manifest and the WAL from its start to its stop
//! are in the repository; a restore writes every byte checked against the
//! manifest's SHA-256 or refuses, and a refused restore leaves a data
//! directory that PostgreSQL cannot start.

pub mod command;
mod data;
pub(crate) mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::repo::config::BackupSection;

use crate::repo::identity::IdentityError;
use crate::repo::layout::Layout;
use crate::repo::retry::{RetryPolicy, Retrying};
use crate::repo::{Storage, StorageError};

/// Recovery target times are parsed with the rest of the target.
pub use crate::config::target::parse_time;

/// Exit codes of the backup commands. Stable; shared with `archive-push`
/// and `archive-get` where the class is the same.
pub mod code {
    /// Classes shared with archive-push/get keep one number everywhere.
    pub use crate::archive::code::{CORRUPT, LOCAL, OK, REPOSITORY, TIMEOUT, USAGE, WRONG_CLUSTER};
    /// An unexpected internal failure (a bug): the message says where.
    pub const INTERNAL: i32 = 1;
    /// PostgreSQL: cannot connect, an SQL error, or a setting that makes a
    /// backup impossible (archive_mode off, wal_level minimal).
    pub const POSTGRES: i32 = 6;
    /// The backup asked for does not exist, or none fits the target.
    pub const NOT_FOUND: i32 = 7;
    /// `restore`: done, but pages of the restored files failed their
    /// checksum (the message lists them and says what to do).
    pub const DAMAGED_PAGES: i32 = 8;
}

/// An error of a backup command: its class gives the exit code.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Usage(String),
    #[error("repository {location}: {error}")]
    Repository {
        location: String,
        error: StorageError,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Local(String),
    #[error("{0}")]
    Postgres(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    WrongCluster(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl BackupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BackupError::Usage(_) => code::USAGE,
            BackupError::Repository { .. } => code::REPOSITORY,
            BackupError::Corrupt(_) => code::CORRUPT,
            BackupError::Local(_) => code::LOCAL,
            BackupError::Postgres(_) => code::POSTGRES,
            BackupError::NotFound(_) => code::NOT_FOUND,
            BackupError::WrongCluster(_) => code::WRONG_CLUSTER,
            BackupError::Timeout(_) => code::TIMEOUT,
            BackupError::Internal(_) => code::INTERNAL,
        }
    }

    pub fn repository(storage: &dyn Storage, error: StorageError) -> Self {
        BackupError::Repository {
            location: storage.location(),
            error,
        }
    }

    pub fn identity(storage: &dyn Storage, error: IdentityError) -> Self {
        match error {
            IdentityError::Mismatch { .. } => BackupError::WrongCluster(error.to_string()),
            IdentityError::Corrupt { .. } => BackupError::Corrupt(error.to_string()),
            IdentityError::Storage(e) => BackupError::repository(storage, e),
        }
    }

    /// Prefix the message with what was being done.
    pub fn context(self, what: &str) -> Self {
        match self {
            BackupError::Usage(m) => BackupError::Usage(format!("{what}: {m}")),
            BackupError::Corrupt(m) => BackupError::Corrupt(format!("{what}: {m}")),
            BackupError::Local(m) => BackupError::Local(format!("{what}: {m}")),
            BackupError::Postgres(m) => BackupError::Postgres(format!("{what}: {m}")),
            BackupError::NotFound(m) => BackupError::NotFound(format!("{what}: {m}")),
            BackupError::WrongCluster(m) => BackupError::WrongCluster(format!("{what}: {m}")),
            BackupError::Timeout(m) => BackupError::Timeout(format!("{what}: {m}")),
            BackupError::Internal(m) => BackupError::Internal(format!("{what}: {m}")),
            other => other,
        }
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// What every backup command works with.
pub struct Context {
    pub config: Config,
    pub backup: BackupSection,
    pub layout: Layout,
    /// The repository, retrying transient errors.
    pub storage: Arc<Retrying<Arc<dyn Storage>>>,
    /// The configuration file, absolute (for restore_command).
    pub config_path: PathBuf,
}

impl Context {
    /// Load the configuration and open the repository; nothing is sent yet.
    pub fn open(config_path: &Path) -> Result<Context> {
        let (config, backup) = BackupSection::load(config_path).map_err(BackupError::Usage)?;
        Self::with(config, backup, config_path)
    }

    /// The same from a loaded configuration (the daemon's).
    pub fn with(config: Config, backup: BackupSection, config_path: &Path) -> Result<Context> {
        let layout = Layout::new(backup.stanza(&config.cluster.scope));
        let storage = crate::repo::open(&backup).map_err(|error| BackupError::Repository {
            location: backup.location(),
            error,
        })?;
        let policy = RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        };
        let config_path = config
            .source
            .clone()
            .unwrap_or_else(|| config_path.to_path_buf());
        Ok(Context {
            config,
            backup,
            layout,
            storage: Arc::new(Retrying::new(storage, policy)),
            config_path,
        })
    }

    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    pub fn repo_err(&self, error: StorageError) -> BackupError {
        BackupError::repository(self.storage(), error)
    }
}

/// The config file from `--config` or `PGPILOT_CONFIG`.
pub use crate::archive::ConfigArg;

/// Seconds and microseconds since the epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// UTC broken-down time of epoch seconds.
fn utc_parts(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    (
        y,
        mo,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `20260101-093000`: the time part of a backup label (UTC).
pub fn label_time(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// `2026-01-01 09:30:00+00`: a time as PostgreSQL prints it (UTC).
pub fn pg_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}+00")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::target::days_from_civil;

    #[test]
    fn times() {
        assert_eq!(label_time(0), "19700101-000000");
        assert_eq!(label_time(1_767_225_600 + 3723), "20260101-010203");
        assert_eq!(pg_time(1_767_225_600_000_000), "2026-01-01 00:00:00+00");
        assert_eq!(
            parse_time("2026-01-01 00:00:00+00"),
            Some((1_767_225_600_000_000, true))
        );
        assert_eq!(
            parse_time("2026-01-01T01:00:00.25+01:00"),
            Some((1_767_225_600_250_000, true))
        );
        assert_eq!(
            parse_time("2026-01-01 00:00:01.123456789Z"),
            Some((1_767_225_601_123_456, true))
        );
        assert_eq!(
            parse_time("2025-12-31 19:00:00-0500"),
            Some((1_767_225_600_000_000, true))
        );
        assert_eq!(
            parse_time("2026-01-01 00:00"),
            Some((1_767_225_600_000_000, false))
        );
        assert_eq!(
            parse_time("@1767225600"),
            Some((1_767_225_600_000_000, true))
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01 00:00:00",
            "2026-01-01 00:00:00 CET",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for days in [-1000, 0, 19_000, 20_454, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
