//! The charmed-postgresql snap's hooks: `pgpilot snap install-hook` and
//! `pgpilot snap configure-hook` (docs/snap.md).
//!
//! Layers: `member`, `etcd` and `pgbouncer` turn the snap's key trees into
//! files (pure); `snapctl` and `files` are the drivers (snapd's `snapctl`,
//! atomic writes); `hooks` runs the two hooks with them.

pub(crate) mod dcs_tls;
pub(crate) mod etcd;
pub(crate) mod files;
pub(crate) mod hooks;
pub(crate) mod member;
pub(crate) mod pgbouncer;
pub(crate) mod s3_tls;
pub(crate) mod snapctl;
pub(crate) mod tls;

use std::path::PathBuf;

/// The snap's daemon user (`system-usernames: {_daemon_: shared}`).
pub const DAEMON_USER: &str = "_daemon_";
/// Its uid and gid, fixed by snapd.
pub const DAEMON_UID: u32 = 584792;

/// A refused setting: the snap key and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SnapError {
    pub key: String,
    pub message: String,
}

impl SnapError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        SnapError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A service's files, or the settings it still lacks (the service then
/// refuses to start and says which `snap set` is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Ready(T),
    Missing(Vec<String>),
}

/// Where the snap's files live, from the environment snapd gives hooks.
#[derive(Debug, Clone)]
pub struct SnapPaths {
    /// `$SNAP_INSTANCE_NAME` (service names are `<instance>.<app>`).
    pub instance: String,
    pub snap: PathBuf,
    pub snap_data: PathBuf,
    pub snap_common: PathBuf,
    /// `$SNAP/usr/lib/postgresql/<major>/bin`.
    pub pg_bin_dir: PathBuf,
}

impl SnapPaths {
    /// From `$SNAP`, `$SNAP_DATA`, `$SNAP_COMMON`, `$SNAP_INSTANCE_NAME`.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| format!("${name} is not set: this command runs as a snap hook"))
        };
        let snap = var("SNAP")?;
        let instance = var("SNAP_INSTANCE_NAME")?.to_string_lossy().into_owned();
        let pg_root = snap.join("usr/lib/postgresql");
        let mut majors: Vec<PathBuf> = std::fs::read_dir(&pg_root)
            .map_err(|e| format!("cannot read {}: {e}", pg_root.display()))?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("postgres").is_file())
            .collect();
        majors.sort();
        let pg_bin_dir = majors
            .pop()
            .ok_or_else(|| format!("no PostgreSQL under {}", pg_root.display()))?;
        Ok(SnapPaths {
            instance,
            snap,
            snap_data: var("SNAP_DATA")?,
            snap_common: var("SNAP_COMMON")?,
            pg_bin_dir,
        })
    }

    pub fn etc(&self, service: &str) -> PathBuf {
        self.snap_data.join("etc").join(service)
    }
    pub fn member_file(&self) -> PathBuf {
        self.etc("pgpilot").join("pgpilot.toml")
    }
    pub fn etcd_file(&self) -> PathBuf {
        self.etc("etcd").join("etcd.conf.yml")
    }
    pub fn etcdctl_env(&self) -> PathBuf {
        self.etc("etcd").join("etcdctl.env")
    }
    pub fn pgbouncer_ini(&self) -> PathBuf {
        self.etc("pgbouncer").join("pgbouncer.ini")
    }
    pub fn pgbouncer_userlist(&self) -> PathBuf {
        self.etc("pgbouncer").join("userlist.txt")
    }
    fn var(&self, rest: &str) -> PathBuf {
        self.snap_common.join("var").join(rest)
    }
    pub fn pg_data_dir(&self) -> PathBuf {
        self.var("lib/postgresql/data")
    }
    pub fn pg_socket_dir(&self) -> PathBuf {
        self.var("run/postgresql")
    }
    pub fn pg_log_file(&self) -> PathBuf {
        self.var("log/postgresql/postgresql.log")
    }
    pub fn pgpilot_log_file(&self) -> PathBuf {
        self.var("log/pgpilot/pgpilot.log")
    }
    pub fn backup_repo(&self) -> PathBuf {
        self.var("lib/pgpilot/repo")
    }
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.var("lib/etcd")
    }
    pub fn etcd_log_file(&self) -> PathBuf {
        self.var("log/etcd/etcd.log")
    }
    pub fn pgbouncer_socket_dir(&self) -> PathBuf {
        self.var("run/pgbouncer")
    }
    pub fn pgbouncer_log_file(&self) -> PathBuf {
        self.var("log/pgbouncer/pgbouncer.log")
    }

    /// Directories the install hook creates: path, mode, owned by `_daemon_`.
    pub fn directories(&self) -> Vec<(PathBuf, u32)> {
        let mut dirs = vec![(self.snap_data.join("etc"), 0o755)];
        for service in ["pgpilot", "etcd", "pgbouncer", "tls"] {
            dirs.push((self.etc(service), 0o700));
        }
        for (rest, mode) in [
            ("lib", 0o755),
            ("lib/postgresql", 0o700),
            ("lib/etcd", 0o700),
            ("lib/pgpilot", 0o750),
            ("lib/pgpilot/repo", 0o750),
            ("log", 0o755),
            ("log/pgpilot", 0o750),
            ("log/postgresql", 0o750),
            ("log/etcd", 0o750),
            ("log/pgbouncer", 0o750),
            // Sockets: clients run as other users and must reach them.
            ("run", 0o755),
            ("run/postgresql", 0o755),
            ("run/pgbouncer", 0o755),
        ] {
            dirs.push((self.var(rest), mode));
        }
        dirs
    }
}

/// The paths of a snap installed at revision x1, for the renderers' tests.
#[cfg(test)]
pub(crate) fn test_paths() -> SnapPaths {
    SnapPaths {
        instance: "charmed-postgresql".into(),
        snap: PathBuf::from("/snap/charmed-postgresql/x1"),
        snap_data: PathBuf::from("/var/snap/charmed-postgresql/x1"),
        snap_common: PathBuf::from("/var/snap/charmed-postgresql/common"),
        pg_bin_dir: PathBuf::from("/snap/charmed-postgresql/x1/usr/lib/postgresql/15/bin"),
    }
}

/// `pgpilot snap ...`
#[derive(Debug, clap::Args)]
pub struct SnapArgs {
    #[command(subcommand)]
    pub command: SnapCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapCommand {
    /// The snap's install hook: directories and single-machine defaults.
    InstallHook,
    /// The snap's configure hook: check `snap set` values, render the files,
    /// restart the running services whose files changed (reload pgpilot
    /// when only its credentials or callbacks changed).
    ConfigureHook,
    /// Internal (run by the configure hook as the daemon user): SIGHUP to
    /// the running pgpilot that holds PID_FILE; prints its pid, exit 3 when
    /// none does.
    #[command(hide = true)]
    SignalMember { pid_file: PathBuf },
}

/// Entry point of `pgpilot snap`; returns the exit code.
pub fn main(args: SnapArgs) -> i32 {
    let result = match args.command {
        SnapCommand::InstallHook => hooks::install(),
        SnapCommand::ConfigureHook => hooks::configure(),
        SnapCommand::SignalMember { pid_file } => return hooks::signal_member_main(&pid_file),
    };
    match result {
        Ok(()) => crate::exit::OK,
        Err(message) => {
            eprintln!("{message}");
            crate::exit::FAILURE
        }
    }
}
