//! Two small verbs for whoever drives a member from outside (the charm's
//! backup actions, an operator):
//!
//! - `pgpilot put-log --name NAME < FILE`: store a log in the repository,
//!   as `<stanza>/log/NAME`, beside the stanza's backups (the output of a
//!   `pgpilot backup` run, of a restore);
//! - `pgpilot wipe-data-dir --yes`: empty `postgresql.data_dir` (the
//!   directory itself stays), so that the member creates it again: from a
//!   backup with `[bootstrap_from]`, by initdb, or as a replica. Refused
//!   while a pgpilot or a PostgreSQL runs on it.

use std::io::Read;

use crate::backup::{code, BackupError, ConfigArg, Result};
use crate::repo::PutMode;

#[derive(Debug, Clone, clap::Args)]
pub struct PutLogArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The object's name under `<stanza>/log/`: letters, digits, `-`,
    /// `_`, `.` (not first).
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WipeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Required: the data directory's content is deleted.
    #[arg(long)]
    pub yes: bool,
}

/// Longest log stored (the tail is kept).
const MAX_LOG: usize = 16 << 20;

/// A log's name: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn check_log_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name {name:?}: use 1-200 letters, digits, '-', '_', '.' (not first)"
        ))
    }
}

/// The key of a log: `<stanza>/log/<name>`.
pub fn log_key(stanza: &str, name: &str) -> String {
    format!("{stanza}/log/{name}")
}

pub fn put_log_main(args: PutLogArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    if let Err(e) = check_log_name(&args.name) {
        eprintln!("pgpilot put-log: {e}");
        return code::USAGE;
    }
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("pgpilot put-log: cannot read stdin: {e}");
        return code::LOCAL;
    }
    if body.len() > MAX_LOG {
        body.drain(..body.len() - MAX_LOG);
    }
    let config = args.config.config.clone();
    super::run(runtime, "put-log", &config, async |context| {
        let key = log_key(context.layout.stanza(), &args.name);
        let size = body.len();
        context
            .storage()
            .put(&key, body.into(), PutMode::Overwrite)
            .await
            .map_err(|e| context.repo_err(e))?;
        println!(
            "stored {key} ({size} bytes) in {}",
            context.storage().location()
        );
        Ok(code::OK)
    })
}

pub fn wipe_main(args: WipeArgs) -> i32 {
    let config = match crate::config::Config::load(&args.config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgpilot wipe-data-dir: {e}");
            return code::USAGE;
        }
    };
    if !args.yes {
        eprintln!(
            "pgpilot wipe-data-dir: this deletes everything in {}: pass --yes",
            config.postgresql.data_dir.display()
        );
        return code::USAGE;
    }
    match wipe(&config) {
        Ok(n) => {
            println!(
                "emptied {} ({n} entries removed)",
                config.postgresql.data_dir.display()
            );
            code::OK
        }
        Err(e) => {
            eprintln!("pgpilot wipe-data-dir: ERROR [{:03}]: {e}", e.exit_code());
            e.exit_code()
        }
    }
}

/// Empty the data directory unless something runs on it; the number of
/// entries removed.
pub fn wipe(config: &crate::config::Config) -> Result<usize> {
    let dir = &config.postgresql.data_dir;
    if let Some(pid) = crate::pidfile::live_pid(&config.pid_file()) {
        return Err(BackupError::Local(format!(
            "pgpilot (pid {pid}) runs on {}: stop it first",
            dir.display()
        )));
    }
    if let Some(pid) = crate::postgres::process::read_pid_file(dir)
        .map(|p| p.pid)
        .filter(|pid| crate::postgres::process::is_postmaster_of(*pid, dir))
    {
        return Err(BackupError::Local(format!(
            "PostgreSQL (pid {pid}) runs on {}: stop it first",
            dir.display()
        )));
    }
    crate::postgres::files::empty_dir(dir).map_err(BackupError::Local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names() {
        assert!(check_log_name("backup-20260301-020000F.log").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(201)] {
            assert!(check_log_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(log_key("m.pg", "x.log"), "m.pg/log/x.log");
    }
}
