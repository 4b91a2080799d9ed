//! `pgpilot archive-push` and `pgpilot archive-get`: PostgreSQL's
//! `archive_command` and `restore_command`.
//!
//! ```text
//! archive_command = '/usr/bin/pgpilot archive-push --config /etc/pgpilot/pgpilot.toml %p'
//! restore_command = '/usr/bin/pgpilot archive-get --config /etc/pgpilot/pgpilot.toml %f "%p"'
//! ```
//!
//! Contract with PostgreSQL (docs/design.md, invariant 4): `archive-push` exits 0
//! only once the file is durably stored in the repository and checked there
//! (or was already stored with the same content); on any doubt it exits
//! non-zero, and PostgreSQL keeps the file and calls again later. It never
//! replaces a stored file with different content. Both commands give up
//! within `backup.archive_timeout`, so a hung repository never hangs the
//! archiver or recovery. Each run handles one file on a current-thread
//! runtime, a posix repository's file system calls inline ([`run`]):
//! start-up is a few milliseconds.
//!
//! Exit codes ([`code`]) are stable; they follow pgBackRest's where one exists.
//!
//! Async mode (`backup.archive_async`): the sidecar's push-ahead worker
//! ([`ahead`]) stores ready WAL before PostgreSQL asks and acknowledges it in
//! the spool ([`spool`]); archive-push trusts an acknowledgement only for
//! the exact bytes it records ([`async_push`]) and otherwise pushes the file
//! itself. archive-get serves segments a detached prefetcher fetched ahead
//! ([`prefetch`]).

pub mod ahead;
pub mod async_push;
pub mod get;
pub mod prefetch;
pub mod push;
pub mod spool;
pub mod wal;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::repo::config::BackupSection;
use crate::repo::identity::IdentityError;
use crate::repo::layout::Layout;
use crate::repo::retry::{RetryPolicy, Retrying};
use crate::repo::{Storage, StorageError};

/// Exit codes of `archive-push` and `archive-get`.
pub mod code {
    /// Stored and verified (push); restored and verified (get).
    pub const OK: i32 = 0;
    /// archive-get only: the file is not in the repository. PostgreSQL
    /// expects this at the end of the archive; nothing is printed.
    pub const NOT_FOUND: i32 = 1;
    /// Bad arguments or configuration (no `[backup]` section, bad file name).
    pub const USAGE: i32 = 2;
    /// The repository failed: unreachable, refused the request (credentials,
    /// permissions, missing bucket), or an I/O error.
    pub const REPOSITORY: i32 = 3;
    /// A stored object is corrupt (checksum mismatch) or ambiguous (two
    /// different copies of one file).
    pub const CORRUPT: i32 = 4;
    /// A local file problem: the file to push cannot be read or does not
    /// match its name; the destination cannot be written; the data
    /// directory cannot be read.
    pub const LOCAL: i32 = 5;
    /// The repository (or the WAL file) belongs to another cluster (pgBackRest [044]).
    pub const WRONG_CLUSTER: i32 = 44;
    /// The file is already archived with different content (pgBackRest [045]).
    pub const DUPLICATE: i32 = 45;
    /// No result within `backup.archive_timeout` (pgBackRest [082]).
    pub const TIMEOUT: i32 = 82;
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Usage(String),
    #[error("not found in the repository")]
    NotFound,
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
    WrongCluster(String),
    #[error("{0}")]
    Duplicate(String),
    #[error("{0}")]
    Timeout(String),
    /// A failure another process (the push-ahead worker) met and recorded
    /// in the spool, with its exit code.
    #[error("{message}")]
    Reported { code: i32, message: String },
}

impl ArchiveError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ArchiveError::Usage(_) => code::USAGE,
            ArchiveError::NotFound => code::NOT_FOUND,
            ArchiveError::Repository { .. } => code::REPOSITORY,
            ArchiveError::Corrupt(_) => code::CORRUPT,
            ArchiveError::Local(_) => code::LOCAL,
            ArchiveError::WrongCluster(_) => code::WRONG_CLUSTER,
            ArchiveError::Duplicate(_) => code::DUPLICATE,
            ArchiveError::Timeout(_) => code::TIMEOUT,
            ArchiveError::Reported { code, .. } => *code,
        }
    }

    fn repository(storage: &dyn Storage, error: StorageError) -> Self {
        ArchiveError::Repository {
            location: storage.location(),
            error,
        }
    }

    fn identity(storage: &dyn Storage, error: IdentityError) -> Self {
        match error {
            IdentityError::Mismatch { .. } => ArchiveError::WrongCluster(error.to_string()),
            IdentityError::Corrupt { .. } => ArchiveError::Corrupt(error.to_string()),
            IdentityError::Storage(e) => ArchiveError::repository(storage, e),
        }
    }
}

/// What stays the same from one call to the next: the configuration and
/// one repository client. A command builds one; the push-ahead worker keeps
/// one for its whole life and makes a [`Context`] per file.
#[derive(Clone)]
pub struct Archive {
    pub config: Arc<Config>,
    pub backup: Arc<BackupSection>,
    pub layout: Layout,
    pub storage: Arc<dyn Storage>,
}

impl Archive {
    /// Open the repository of a loaded configuration (which must have a
    /// `[backup]` section). Only configuration and local problems are
    /// reported here: nothing is sent yet.
    pub fn new(config: Arc<Config>) -> Result<Archive, ArchiveError> {
        Self::with_io(config, false)
    }

    /// [`Archive::new`] for one WAL command: a posix repository's file
    /// system calls run on the calling thread ([`run`] bounds them from
    /// another).
    fn for_one_call(config: Arc<Config>) -> Result<Archive, ArchiveError> {
        Self::with_io(config, true)
    }

    fn with_io(config: Arc<Config>, inline: bool) -> Result<Archive, ArchiveError> {
        let backup = config.backup.clone().ok_or_else(|| {
            ArchiveError::Usage(
                "no [backup] section: no backup repository (and no WAL archiving) is configured"
                    .into(),
            )
        })?;
        let layout = Layout::new(backup.stanza(&config.cluster.scope));
        let opened = match (&backup.repository, &backup.posix) {
            (crate::repo::config::RepositoryType::Posix, Some(posix)) if inline => {
                crate::repo::posix::PosixStorage::open(&posix.path)
                    .map(|storage| Arc::new(storage.inline()) as Arc<dyn Storage>)
            }
            _ => crate::repo::open(&backup),
        };
        let storage = opened.map_err(|error| ArchiveError::Repository {
            location: backup.location(),
            error,
        })?;
        Ok(Archive {
            config,
            backup: Arc::new(backup),
            layout,
            storage,
        })
    }

    pub fn open(config_path: &Path) -> Result<Archive, ArchiveError> {
        let (config, _) = BackupSection::load(config_path).map_err(ArchiveError::Usage)?;
        Archive::new(Arc::new(config))
    }

    /// The context of one call started at `started`: it gives up
    /// `backup.archive_timeout` later.
    pub fn call(&self, started: Instant) -> Context {
        let deadline = started + self.backup.archive_timeout();
        let policy = RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        };
        Context {
            config: self.config.clone(),
            backup: self.backup.clone(),
            layout: self.layout.clone(),
            storage: Retrying::new(self.storage.clone(), policy).with_deadline(deadline),
            deadline,
        }
    }
}

/// What one call (one file) works with.
pub struct Context {
    pub config: Arc<Config>,
    pub backup: Arc<BackupSection>,
    pub layout: Layout,
    /// The repository, retrying transient errors until `deadline`.
    pub storage: Retrying<Arc<dyn Storage>>,
    /// When the call gives up (`backup.archive_timeout` after its start).
    pub deadline: Instant,
}

impl Context {
    /// Load the configuration and open the repository for one call.
    pub fn open(config_path: &Path, started: Instant) -> Result<Context, ArchiveError> {
        Ok(Archive::open(config_path)?.call(started))
    }

    /// Run `work` until the deadline; past it, a time-out error that names
    /// the last repository error seen.
    pub async fn within_deadline<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ArchiveError>>,
    ) -> Result<T, ArchiveError> {
        match tokio::time::timeout_at(self.deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(
                self.backup.archive_timeout(),
                Some(&self.storage),
            )),
        }
    }
}

fn timed_out(budget: Duration, storage: Option<&Retrying<Arc<dyn Storage>>>) -> ArchiveError {
    let (location, last) = match storage {
        Some(s) => (
            format!(" {}", s.location()),
            s.last_error()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    ArchiveError::Timeout(format!(
        "no result within backup.archive_timeout ({} s): the repository{location} is slow \
         or unreachable{last}",
        budget.as_secs()
    ))
}

/// One run of a command: the configuration, loaded at start, and the
/// repository, opened only when the command needs it (an async push that
/// finds its acknowledgement never does).
pub struct Call {
    pub config: Arc<Config>,
    pub backup: Arc<BackupSection>,
    pub started: Instant,
    context: std::cell::OnceCell<Context>,
}

impl Call {
    pub fn load(config_path: &Path, started: Instant) -> Result<Call, ArchiveError> {
        let (config, backup) = BackupSection::load(config_path).map_err(ArchiveError::Usage)?;
        Ok(Call {
            config: Arc::new(config),
            backup: Arc::new(backup),
            started,
            context: std::cell::OnceCell::new(),
        })
    }

    /// When the command gives up.
    pub fn deadline(&self) -> Instant {
        self.started + self.backup.archive_timeout()
    }

    /// The repository context, opened on first use.
    pub fn context(&self) -> Result<&Context, ArchiveError> {
        if let Some(context) = self.context.get() {
            return Ok(context);
        }
        let context = Archive::for_one_call(self.config.clone())?.call(self.started);
        Ok(self.context.get_or_init(|| context))
    }
}

/// How long past `backup.archive_timeout` a command waits for a file system
/// call that does not return before it answers anyway.
const HUNG_GRACE: Duration = Duration::from_secs(2);

/// Run one command: load the configuration, set up logging on stderr (which
/// PostgreSQL puts in its log), run `work` on a current-thread runtime
/// within the time budget, print the error if any, return the exit code.
///
/// The work runs on a thread of its own, with a posix repository's file
/// system calls inline (no hand-over to a blocking pool per call); this
/// thread answers [`code::TIMEOUT`] if it has not finished shortly after
/// the budget (a hung mount blocks a file system call where the runtime's
/// timer cannot interrupt it), and the process exits with the thread still
/// stuck.
pub(crate) fn run<W>(command: &str, config_path: &Path, work: W) -> i32
where
    W: AsyncFnOnce(&Call) -> Result<(), ArchiveError> + Send + 'static,
{
    let result = match Call::load(config_path, Instant::now()) {
        Ok(call) => {
            crate::logging::set_up(&call.config.log.level, call.config.log.json);
            let budget = call.backup.archive_timeout();
            let location = call.backup.location();
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("wal-command".into())
                .spawn(move || {
                    let _ = tx.send(execute(call, work));
                });
            match spawned {
                Err(e) => Err(ArchiveError::Local(format!("cannot start a thread: {e}"))),
                Ok(_) => match rx.recv_timeout(budget + HUNG_GRACE) {
                    Ok(result) => result,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(
                        ArchiveError::Local("the command's thread stopped (a panic)".into()),
                    ),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        Err(ArchiveError::Timeout(format!(
                            "no result within backup.archive_timeout ({} s): a file system \
                             call on {location} does not return (a hung mount?)",
                            budget.as_secs()
                        )))
                    }
                },
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => code::OK,
        Err(ArchiveError::NotFound) => code::NOT_FOUND,
        Err(e) => {
            eprintln!("pgpilot {command}: ERROR [{:03}]: {e}", e.exit_code());
            e.exit_code()
        }
    }
}

/// The work of [`run`], on its thread.
fn execute(
    call: Call,
    work: impl AsyncFnOnce(&Call) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ArchiveError::Local(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(async {
        match tokio::time::timeout_at(call.deadline(), work(&call)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(
                call.backup.archive_timeout(),
                call.context.get().map(|c| &c.storage),
            )),
        }
    });
    // Nothing is left to wait for (requests still pending after a time-out
    // are dropped): do not join idle pool threads on the way out.
    runtime.shutdown_background();
    result
}

/// The config file from `--config` or `PGPILOT_CONFIG` (clap reads both).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The member's TOML configuration file.
    #[arg(short, long, env = "PGPILOT_CONFIG")]
    pub config: PathBuf,
}
