//! What is run: one module per verb, and what only the verbs use.
//!
//! | module | does |
//! |---|---|
//! | [`take`] | `pgpilot backup`: the order of steps, the parent of an incremental, the catalog entry |
//! | [`restore`] | `pgpilot restore`: choice of backup, the order of steps, the report |
//! | [`info`] | `pgpilot info` (`backup list`): the backups and the WAL range, text or pgBackRest's JSON |
//! | [`expire`] | `pgpilot expire`: the retention plan (pure) and its removals |
//! | [`verify`] | `pgpilot verify`: read everything back, WAL continuity |
//! | [`check`] | `pgpilot check`: a WAL segment switched and archived within the timeout |
//! | [`chores`] | `put-log` (a log into the repository) and `wipe-data-dir` |
//! | [`session`] | the SQL of `backup` and `check`: pg_backup_start/stop, settings, pg_switch_wal |
//! | [`watch`] | the daemon's summary of the repository for `/metrics` (built on `info`'s report) |
//!
//! May import [`super::data`], [`super::model`] and the shared items of
//! [`super`]; nothing in `data` or `model` imports from here. A function
//! two verbs need that is not about running a verb belongs in `data` or
//! `model` (loading the catalog is [`super::model::catalog::load_or_rebuild`]).

pub mod check;
pub mod chores;
pub mod expire;
pub mod info;
pub mod restore;
mod session;
pub mod take;
pub mod verify;
pub(crate) mod watch;

use std::path::Path;

use super::data::progress;
use super::{Context, Result};

/// Run a command on the runtime the binary made: load the configuration,
/// set up logging on stderr, run `work`, print the error if any, return
/// the exit code.
fn run(
    runtime: &tokio::runtime::Runtime,
    command: &str,
    config_path: &Path,
    work: impl AsyncFnOnce(Context) -> Result<i32>,
) -> i32 {
    let result = runtime.block_on(async {
        let context = Context::open(config_path)?;
        crate::logging::set_up(&context.config.log.level, context.config.log.json);
        work(context).await
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            progress::clear_line();
            eprintln!("pgpilot {command}: ERROR [{:03}]: {e}", e.exit_code());
            e.exit_code()
        }
    }
}
