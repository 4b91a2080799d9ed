//! The local PostgreSQL instance: create it (initdb or pg_basebackup), start
//! it as primary or replica, stop, promote, reload, and observe it over SQL.

pub mod conf;
pub mod files;
pub mod guc;
pub mod probe;
pub mod process;
mod streamed;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::Mutex;

use crate::config::{Config, LiveConfig};
use crate::lsn::{format_lsn, parse_lsn};
use conf::Upstream;
pub use probe::{Observation, ReplicationInfo};
use process::{read_pid_file, RunAs};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Command(String),
    #[error("{0}")]
    Sql(String),
    /// PostgreSQL refused the login (wrong password, unknown role).
    #[error("{0}")]
    Auth(String),
    #[error("PostgreSQL did not start: {0}")]
    StartFailed(String),
}

/// How to stop the postmaster (PostgreSQL's shutdown modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, write a shutdown checkpoint.
    Fast,
    /// No checkpoint; crash recovery on next start.
    Immediate,
}

/// Fields of pg_controldata pgpilot reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlData {
    pub system_id: String,
    pub cluster_state: String,
    pub checkpoint_lsn: u64,
    pub timeline: u32,
}

/// How often a session opened with an older superuser password (after a
/// reload, before PostgreSQL has the new one) is replaced by a try with
/// the current password.
const FALLBACK_RETRY: Duration = Duration::from_secs(3);

/// The local superuser session.
struct Session {
    client: tokio_postgres::Client,
    /// The reload generation it logged in for: after a reload it is
    /// replaced, so that the new password is tried (and, once it works,
    /// known to work: [`LiveConfig::superuser_accepted`]).
    generation: u64,
    /// Opened with an older superuser password, at this time.
    fallback_since: Option<tokio::time::Instant>,
}

impl Session {
    fn usable(&self, generation: u64) -> bool {
        !self.client.is_closed()
            && self.generation == generation
            && self
                .fallback_since
                .is_none_or(|since| since.elapsed() < FALLBACK_RETRY)
    }
}

pub struct Postgres {
    /// The configuration in force: credentials change with a reload, the
    /// rest (paths, ports, programs) is what pgpilot started with.
    live: Arc<LiveConfig>,
    /// `postgresql.data_dir` (never changes while pgpilot runs).
    data_dir: PathBuf,
    run_as: RunAs,
    client: Mutex<Option<Session>>,
    /// Held while a postmaster is being started: the HA loop and the fence
    /// (which brings a demoted primary back read-only) never start two.
    starting: Mutex<()>,
    /// The reload generation whose superuser password was last reported
    /// as not accepted yet (logged once per reload).
    fallback_logged: std::sync::atomic::AtomicU64,
    /// Signalled whenever a postmaster this process started exits, so the
    /// HA loop reacts to a crash at once instead of at its next tick.
    pub exited: Arc<tokio::sync::Notify>,
}

impl Postgres {
    pub fn new(live: Arc<LiveConfig>) -> Result<Self, PgError> {
        let config = live.get();
        let run_as = RunAs::resolve(&config.postgresql.os_user)?;
        Ok(Postgres {
            data_dir: config.postgresql.data_dir.clone(),
            live,
            run_as,
            client: Mutex::new(None),
            starting: Mutex::new(()),
            fallback_logged: std::sync::atomic::AtomicU64::new(u64::MAX),
            exited: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The configuration in force now (one consistent value).
    pub fn config(&self) -> Arc<Config> {
        self.live.get()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn bin(&self, program: &str) -> PathBuf {
        self.config().postgresql.bin_dir.join(program)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config().postgresql.pg_ctl_timeout)
    }

    /// Check the binaries exist before anything else happens.
    pub fn check_binaries(&self) -> Result<(), PgError> {
        for program in [
            "postgres",
            "initdb",
            "pg_ctl",
            "pg_basebackup",
            "pg_controldata",
        ] {
            let path = self.bin(program);
            if !path.is_file() {
                return Err(PgError::Setup(format!(
                    "{} not found: set postgresql.bin_dir to the directory with PostgreSQL's programs",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// The data directory holds a cluster (PG_VERSION and global/pg_control).
    pub fn is_initialized(&self) -> bool {
        let d = self.data_dir();
        d.join("PG_VERSION").is_file() && d.join("global/pg_control").is_file()
    }

    /// Pid of the postmaster serving our data directory, if one runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let pid_file = read_pid_file(self.data_dir())?;
        process::is_postmaster_of(pid_file.pid, self.data_dir()).then_some(pid_file.pid)
    }

    pub fn postmaster_start_time(&self) -> Option<i64> {
        read_pid_file(self.data_dir())?.start_time
    }

    /// The data directory is set up as a standby (standby.signal present).
    pub fn is_standby_configured(&self) -> bool {
        self.data_dir().join("standby.signal").exists()
    }

    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Empty or missing data directory: safe to initdb or clone into.
    pub fn data_dir_is_empty(&self) -> bool {
        match std::fs::read_dir(self.data_dir()) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => true,
        }
    }

    /// Marks a data directory pgpilot is filling (initdb, clone): a sibling
    /// file, since PostgreSQL's tools insist on an empty directory.
    fn creation_marker(&self) -> PathBuf {
        self.data_dir().with_extension("pgpilot-incomplete")
    }

    /// Make sure the data directory is either a cluster or empty. A copy left
    /// half-done by an interrupted initdb or clone (the marker says it is
    /// ours) is wiped; anything else non-empty is refused, never deleted.
    pub fn check_data_dir(&self) -> Result<(), PgError> {
        // The directory, or the first of its parents that exists, must be a
        // directory: initdb into a regular file fails, and would again each cycle.
        if let Some(found) = self.data_dir().ancestors().find(|p| p.exists()) {
            if !found.is_dir() {
                return Err(PgError::Setup(format!(
                    "postgresql.data_dir {}: {} is not a directory; point \
                     postgresql.data_dir at a directory (or where one can be created)",
                    self.data_dir().display(),
                    found.display()
                )));
            }
        }
        if self.creation_marker().exists() {
            tracing::warn!(dir = %self.data_dir().display(), "removing an interrupted initdb or clone");
            self.wipe_data_dir()?;
            let _ = std::fs::remove_file(self.creation_marker());
            return Ok(());
        }
        if self.is_initialized() || self.data_dir_is_empty() {
            return Ok(());
        }
        Err(PgError::Setup(format!(
            "the data directory {} is not empty but holds no PostgreSQL cluster; \
             empty it or point postgresql.data_dir elsewhere",
            self.data_dir().display()
        )))
    }

    /// Mark the data directory as being filled (see [`Self::check_data_dir`]).
    pub fn begin_creation(&self) -> Result<(), PgError> {
        std::fs::write(self.creation_marker(), b"").map_err(|e| {
            PgError::Setup(format!(
                "cannot write {}: {e}",
                self.creation_marker().display()
            ))
        })
    }

    pub fn end_creation(&self) {
        let _ = std::fs::remove_file(self.creation_marker());
    }

    /// Create the data directory (empty, mode 0700) and the socket directory.
    pub fn prepare_dirs(&self) -> Result<(), PgError> {
        let config = self.config();
        let pg = &config.postgresql;
        self.run_as.create_dir(&pg.data_dir, 0o700)?;
        if !pg.socket_dir.exists() {
            self.run_as.create_dir(&pg.socket_dir, 0o2775)?;
        }
        Ok(())
    }

    /// initdb with data checksums and the superuser's password.
    pub async fn initdb(&self) -> Result<(), PgError> {
        self.prepare_dirs()?;
        let config = self.config();
        let pg = &config.postgresql;
        let pwfile = pg.data_dir.with_extension("pwfile");
        self.run_as.write_private(
            &pwfile,
            &format!("{}\n", pg.authentication.superuser.password),
        )?;
        let mut cmd = self.run_as.command(&self.bin("initdb"));
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .arg("-U")
            .arg(&pg.authentication.superuser.username)
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--data-checksums")
            .arg("--auth-local=scram-sha-256")
            .arg("--auth-host=scram-sha-256")
            .args(&pg.initdb);
        self.begin_creation()?;
        let result = process::run(cmd, "initdb", self.timeout() * 2).await;
        let _ = std::fs::remove_file(&pwfile);
        if let Err(e) = result {
            self.wipe_data_dir()?;
            self.end_creation();
            return Err(e);
        }
        let base = pg.data_dir.join(conf::BASE_CONF);
        std::fs::rename(pg.data_dir.join("postgresql.conf"), &base)
            .map_err(|e| PgError::Setup(format!("cannot keep initdb's postgresql.conf: {e}")))?;
        self.end_creation();
        Ok(())
    }

    /// Clone a running member with pg_basebackup into the (empty) data directory.
    pub async fn basebackup(&self, source: &Upstream) -> Result<(), PgError> {
        self.prepare_dirs()?;
        let config = self.config();
        let pg = &config.postgresql;
        let mut cmd = self.as_replication_role("pg_basebackup", source, "clone");
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .arg("--wal-method=stream")
            .arg("--checkpoint=fast")
            .args(&pg.basebackup);
        self.begin_creation()?;
        let result = process::run(cmd, "pg_basebackup", Duration::from_secs(3600)).await;
        if result.is_err() {
            // A partial copy must not be mistaken for a data directory.
            self.wipe_data_dir()?;
        }
        self.end_creation();
        result.map(|_| ())
    }

    /// `program` logging in to `source` as the replication role (password
    /// in the environment, application name `pgpilot-<what>-<member>`).
    fn as_replication_role(
        &self,
        program: &str,
        source: &Upstream,
        what: &str,
    ) -> tokio::process::Command {
        let config = self.config();
        let repl = &config.postgresql.authentication.replication;
        let mut cmd = self.run_as.command(&self.bin(program));
        cmd.arg("-h")
            .arg(&source.host)
            .arg("-p")
            .arg(source.port.to_string())
            .arg("-U")
            .arg(&repl.username)
            .arg("--no-password")
            .env("PGPASSWORD", &repl.password)
            .env(
                "PGAPPNAME",
                format!("pgpilot-{what}-{}", config.cluster.name),
            );
        cmd
    }

    /// Make sure the physical slot `slot` exists on `source`, over a
    /// replication connection as the replication role (the login the WAL
    /// receiver uses): `CREATE_REPLICATION_SLOT ... RESERVE_WAL`, so the
    /// WAL from now on waits for this member. `true` when it was created,
    /// `false` when it existed.
    pub async fn ensure_slot_on(&self, source: &Upstream, slot: &str) -> Result<bool, PgError> {
        let mut cmd = self.as_replication_role("psql", source, "slot");
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=sqlstate",
        ])
        .arg("-d")
        .arg("dbname=replication replication=true sslmode=prefer connect_timeout=5")
        .arg("-c")
        .arg(format!(
            "CREATE_REPLICATION_SLOT \"{slot}\" PHYSICAL RESERVE_WAL"
        ));
        match process::run(cmd, "psql CREATE_REPLICATION_SLOT", Duration::from_secs(15)).await {
            Ok(_) => Ok(true),
            // 42710 duplicate_object: "replication slot ... already exists".
            Err(PgError::Command(m)) if m.contains("42710") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where the last valid WAL record on `timeline` starts, read with
    /// pg_waldump from the checkpoint at `from` on, for a former primary
    /// that stopped without a shutdown checkpoint. `None` when it cannot be
    /// told for sure: the instance had moved to a later timeline than its
    /// checkpoint's (a timeline history file newer than `timeline` is in
    /// pg_wal), or no record could be read.
    pub async fn last_wal_record(&self, timeline: u32, from: u64) -> Result<Option<u64>, PgError> {
        let wal = self.data_dir().join("pg_wal");
        let later = std::fs::read_dir(&wal)
            .map_err(|e| PgError::Setup(format!("cannot list {}: {e}", wal.display())))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let tl = name.strip_suffix(".history")?;
                u32::from_str_radix(tl, 16).ok()
            })
            .any(|tl| tl > timeline);
        if later {
            return Ok(None);
        }
        let mut cmd = self.run_as.command(&self.bin("pg_waldump"));
        cmd.arg("--path")
            .arg(&wal)
            .arg("--timeline")
            .arg(timeline.to_string())
            .arg("--start")
            .arg(format_lsn(from));
        // It reads until the first invalid record (the end of the WAL) and
        // then exits with an error: the records printed are what counts.
        process::last_line_matching(
            cmd,
            "pg_waldump",
            Duration::from_secs(120),
            parse_waldump_lsn,
        )
        .await
    }

    /// Rewind this stopped former primary onto `source`'s timeline. One that
    /// crashed first goes through crash recovery in single-user mode, since
    /// pg_rewind needs a cleanly shut down target.
    pub async fn rewind(&self, source: &Upstream) -> Result<(), PgError> {
        let (config, _, fallbacks) = self.live.superuser_view();
        let pg = &config.postgresql;
        if !self
            .controldata()
            .await?
            .cluster_state
            .starts_with("shut down")
        {
            tracing::info!("running crash recovery in single-user mode before pg_rewind");
            let mut cmd = self.run_as.command(&self.bin("postgres"));
            cmd.arg("--single")
                .arg("-D")
                .arg(&pg.data_dir)
                .args(["-c", "archive_mode=off", "-c", "hot_standby=off"])
                .arg("postgres");
            process::run(cmd, "single-user crash recovery", self.timeout() * 5).await?;
        }
        // The leader may not have the superuser's new password yet (a
        // reload moments ago): a refused login changes nothing in the data
        // directory, so the previous passwords are tried in turn.
        let attempts: Vec<_> = std::iter::once(&pg.authentication.superuser)
            .chain(&fallbacks)
            .collect();
        for (i, superuser) in attempts.iter().enumerate() {
            let last = i + 1 == attempts.len();
            let mut cmd = self.run_as.command(&self.bin("pg_rewind"));
            cmd.arg("-D")
                .arg(&pg.data_dir)
                .arg(format!(
                    "--source-server=host={} port={} user={} dbname=postgres connect_timeout=5",
                    source.host, source.port, superuser.username
                ))
                .env("PGPASSWORD", &superuser.password);
            match process::run(cmd, "pg_rewind", Duration::from_secs(3600)).await {
                Err(PgError::Command(m))
                    if m.contains("password authentication failed") && !last =>
                {
                    tracing::info!(
                        "pg_rewind: the leader refused the superuser's password; trying the previous one"
                    );
                }
                outcome => return outcome.map(|_| ()),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Remove everything inside the data directory (never the directory itself).
    pub fn wipe_data_dir(&self) -> Result<(), PgError> {
        files::empty_dir(self.data_dir())
            .map(drop)
            .map_err(PgError::Setup)
    }

    /// Write postgresql.conf, pg_hba.conf and the standby signal for the role.
    pub fn write_config(
        &self,
        parameters: &conf::Parameters,
        upstream: Option<&Upstream>,
        standby: bool,
    ) -> Result<(), PgError> {
        let dir = self.data_dir();
        if !dir.join(conf::BASE_CONF).exists() {
            // A clone from a non-pgpilot primary: keep what came with it as the base.
            if dir.join("postgresql.conf").exists() {
                std::fs::rename(dir.join("postgresql.conf"), dir.join(conf::BASE_CONF))
                    .map_err(|e| PgError::Setup(format!("cannot keep postgresql.conf: {e}")))?;
            } else {
                self.run_as.write_private(&dir.join(conf::BASE_CONF), "")?;
            }
        }
        let config = self.config();
        if upstream.is_some() {
            self.sync_passfile()?;
        }
        let text = conf::render_postgresql_conf(&config, parameters, upstream);
        self.run_as
            .write_private(&dir.join("postgresql.conf"), &text)?;
        self.run_as
            .write_private(&dir.join("pg_hba.conf"), &conf::render_pg_hba(&config))?;
        let signal = dir.join("standby.signal");
        if standby {
            self.run_as.write_private(&signal, "")?;
        } else if signal.exists() {
            std::fs::remove_file(&signal)
                .map_err(|e| PgError::Setup(format!("cannot remove standby.signal: {e}")))?;
        }
        Ok(())
    }

    /// Keep the replication password file `primary_conninfo` names in step
    /// with the configuration in force; `true` when it was rewritten. The
    /// WAL receiver reads it at its next connection: a new password takes
    /// no reload, and an open replication session goes on.
    pub fn sync_passfile(&self) -> Result<bool, PgError> {
        let config = self.config();
        let path = config.replication_passfile();
        let wanted = conf::render_pgpass(&config);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(wanted.as_str()) {
            return Ok(false);
        }
        self.run_as.write_private(&path, &wanted)?;
        Ok(true)
    }

    /// Comment out the recovery settings a restore appended to
    /// postgresql.auto.conf, once recovery is over: a former primary that
    /// later starts as a standby, or a clone of it, must not stop at that
    /// target again.
    pub fn clear_recovery_settings(&self) -> Result<(), PgError> {
        let path = self.data_dir().join("postgresql.auto.conf");
        let existing = std::fs::read_to_string(&path)
            .map_err(|e| PgError::Setup(format!("cannot read {}: {e}", path.display())))?;
        let cleared = conf::comment_out_recovery_settings(
            &existing,
            "recovery from a backup is over (pgpilot)",
        );
        if cleared != existing {
            self.run_as.write_private(&path, &cleared)?;
        }
        Ok(())
    }

    /// Start the postmaster (configuration already written) and wait until it
    /// accepts connections, or fail with the end of its log.
    pub async fn start(&self) -> Result<(), PgError> {
        let _starting = self.starting.lock().await;
        if self.is_running() {
            return Ok(());
        }
        let config = self.config();
        let pg = &config.postgresql;
        if !pg.socket_dir.exists() {
            self.run_as.create_dir(&pg.socket_dir, 0o2775)?;
        }
        // A pid file left by a killed postmaster whose pid is now someone else's.
        let stale = pg.data_dir.join("postmaster.pid");
        if stale.exists() && self.postmaster_pid().is_none() {
            let _ = std::fs::remove_file(&stale);
        }
        let log_path = config.postgres_log_file();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| PgError::Setup(format!("cannot open {}: {e}", log_path.display())))?;
        self.run_as.give(&log_path)?;
        let log_err = log
            .try_clone()
            .map_err(|e| PgError::Setup(format!("cannot open {}: {e}", log_path.display())))?;
        let mut cmd = self.run_as.command(&self.bin("postgres"));
        cmd.arg("-D").arg(&pg.data_dir).stdout(log).stderr(log_err);
        // Own process group: a Ctrl-C meant for pgpilot must not reach PostgreSQL,
        // whose shutdown pgpilot orders itself.
        cmd.process_group(0);
        process::bind_to_parent_life(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| PgError::StartFailed(format!("cannot run postgres: {e}")))?;
        let child_pid = child.id().unwrap_or(0) as i32;
        // Reap the postmaster whenever it exits so it never lingers as a zombie.
        let (exited_tx, mut exited_rx) = tokio::sync::oneshot::channel();
        let exited = self.exited.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            exited.notify_one();
            let _ = exited_tx.send(status);
        });
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            if let Ok(status) = exited_rx.try_recv() {
                return Err(PgError::StartFailed(format!(
                    "postgres exited ({}); last log lines: {}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    self.log_tail()
                )));
            }
            if let Some(pid_file) = read_pid_file(&pg.data_dir) {
                if pid_file.pid == child_pid
                    && matches!(pid_file.status.as_deref(), Some("ready") | Some("standby"))
                {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PgError::StartFailed(format!(
                    "not ready within {:?}; last log lines: {}",
                    self.timeout(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the postmaster's log, for error messages.
    pub fn log_tail(&self) -> String {
        std::fs::read_to_string(self.config().postgres_log_file())
            .map(|t| process::last_lines(&t, 5))
            .unwrap_or_default()
    }

    /// Stop the postmaster and wait until it is gone.
    pub async fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        let escalate_at = tokio::time::Instant::now() + self.timeout();
        self.stop_by(mode, escalate_at).await.map(drop)
    }

    /// Stop the postmaster with `mode` and wait until it is gone; if it is
    /// still there at `escalate_at`, a fast shutdown becomes immediate and
    /// an immediate one is killed (then again `pg_ctl_timeout` later).
    /// Returns how it ended. The signal goes out before anything else, so
    /// a statement in flight on the local session cannot delay it.
    pub async fn stop_by(
        &self,
        mode: StopMode,
        escalate_at: tokio::time::Instant,
    ) -> Result<StopMode, PgError> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(mode);
        };
        let signal_for = |mode| match mode {
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        process::signal(pid, signal_for(mode))?;
        if let Ok(mut session) = self.client.try_lock() {
            *session = None;
        }
        let (mut mode, mut escalate_at) = (mode, escalate_at);
        while process::process_alive(pid) {
            let now = tokio::time::Instant::now();
            if now >= escalate_at {
                escalate_at = now + self.timeout();
                if mode == StopMode::Fast {
                    tracing::warn!(
                        pid,
                        "fast shutdown is taking too long, stopping immediately"
                    );
                    mode = StopMode::Immediate;
                    process::signal(pid, signal_for(mode))?;
                } else {
                    process::signal(pid, Signal::SIGKILL)?;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *self.client.lock().await = None;
        Ok(mode)
    }

    /// Mark the stopped data directory a standby (standby.signal), keeping
    /// its configuration: it starts read-only, with whatever upstream its
    /// postgresql.conf names (none on a former primary).
    pub fn mark_standby(&self) -> Result<(), PgError> {
        self.run_as
            .write_private(&self.data_dir().join("standby.signal"), "")
    }

    pub async fn reload(&self) -> Result<(), PgError> {
        self.reload_now()
    }

    /// SIGHUP to the postmaster, if it runs.
    pub fn reload_now(&self) -> Result<(), PgError> {
        match self.postmaster_pid() {
            Some(pid) => process::signal(pid, Signal::SIGHUP),
            None => Ok(()),
        }
    }

    /// Promote a standby and wait until it accepts writes.
    pub async fn promote(&self) -> Result<(), PgError> {
        let mut cmd = self.run_as.command(&self.bin("pg_ctl"));
        cmd.arg("promote")
            .arg("-w")
            .arg("-t")
            .arg(self.config().postgresql.pg_ctl_timeout.to_string())
            .arg("-D")
            .arg(self.data_dir());
        process::run(
            cmd,
            "pg_ctl promote",
            self.timeout() + Duration::from_secs(5),
        )
        .await?;
        // pg_ctl may already have seen recovery end; make sure SQL sees it too.
        *self.client.lock().await = None;
        Ok(())
    }

    pub async fn controldata(&self) -> Result<ControlData, PgError> {
        let mut cmd = self.run_as.command(&self.bin("pg_controldata"));
        cmd.arg("-D").arg(self.data_dir()).env("LC_ALL", "C");
        let text = process::run(cmd, "pg_controldata", Duration::from_secs(30)).await?;
        Ok(parse_controldata(&text))
    }

    /// Observe the running instance over SQL (one reused connection).
    pub async fn observe(&self) -> Result<Observation, PgError> {
        let mut guard = self.client.lock().await;
        let generation = self.live.generation();
        if !guard.as_ref().is_some_and(|s| s.usable(generation)) {
            *guard = Some(self.connect().await?);
        }
        let client = &guard.as_ref().expect("connected above").client;
        match tokio::time::timeout(Duration::from_secs(5), probe::observe(client)).await {
            Ok(Ok(obs)) => Ok(obs),
            Ok(Err(e)) => {
                *guard = None;
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(PgError::Sql("observation query timed out after 5s".into()))
            }
        }
    }

    /// Run a closure with the local superuser connection.
    pub async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let mut guard = self.client.lock().await;
        let generation = self.live.generation();
        if !guard.as_ref().is_some_and(|s| s.usable(generation)) {
            *guard = Some(self.connect().await?);
        }
        let client = &guard.as_ref().expect("connected above").client;
        let result = f(client).await;
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// A superuser session over the local socket with the current
    /// password; when PostgreSQL refuses it and the password changed at a
    /// recent reload, with a previous one (PostgreSQL learns the new one
    /// from the primary's `ALTER ROLE`). Such a session is replaced by a
    /// new try every few seconds.
    async fn connect(&self) -> Result<Session, PgError> {
        let (config, generation, fallbacks) = self.live.superuser_view();
        let refused = match probe::connect(&config).await {
            Ok(client) => {
                self.live.superuser_accepted(generation);
                return Ok(Session {
                    client,
                    generation,
                    fallback_since: None,
                });
            }
            Err(e @ PgError::Auth(_)) if !fallbacks.is_empty() => e,
            Err(e) => return Err(e),
        };
        for superuser in fallbacks {
            let mut older = (*config).clone();
            older.postgresql.authentication.superuser = superuser;
            if let Ok(client) = probe::connect(&older).await {
                use std::sync::atomic::Ordering::Relaxed;
                if self.fallback_logged.swap(generation, Relaxed) != generation {
                    tracing::warn!(
                        "PostgreSQL does not accept the superuser's new password yet (the primary \
                         changes it, and a replica gets it by replication): using the previous \
                         password until it does"
                    );
                }
                return Ok(Session {
                    client,
                    generation,
                    fallback_since: Some(tokio::time::Instant::now()),
                });
            }
        }
        Err(refused)
    }

    /// Drop a session opened with an older superuser password, so the
    /// next statement tries the current one (after the roles changed).
    pub async fn retry_current_password(&self) {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_some_and(|s| s.fallback_since.is_some()) {
            *guard = None;
        }
    }
}

/// The start of the record a pg_waldump line describes (`... lsn: 0/0301A2B8, prev ...`).
pub fn parse_waldump_lsn(line: &str) -> Option<u64> {
    let rest = &line[line.find("lsn: ")? + 5..];
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    parse_lsn(&rest[..end])
}

pub fn parse_controldata(text: &str) -> ControlData {
    let mut cd = ControlData::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Database system identifier" => cd.system_id = value.to_string(),
            "Database cluster state" => cd.cluster_state = value.to_string(),
            "Latest checkpoint location" => cd.checkpoint_lsn = parse_lsn(value).unwrap_or(0),
            "Latest checkpoint's TimeLineID" => cd.timeline = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    cd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waldump_lines() {
        let line = "rmgr: Heap        len (rec/tot):     59/    59, tx:        735, \
                    lsn: 0/0301A2B8, prev 0/0301A280, desc: INSERT off 3 flags 0x00";
        assert_eq!(parse_waldump_lsn(line), Some(0x0301_A2B8));
        assert_eq!(
            parse_waldump_lsn(
                "rmgr: XLOG len (rec/tot): 114/114, tx: 0, lsn: 1/00000028, prev 0/0"
            ),
            Some((1 << 32) | 0x28)
        );
        assert_eq!(
            parse_waldump_lsn("pg_waldump: error: error in WAL record at 0/3000148"),
            None
        );
        assert_eq!(parse_waldump_lsn("lsn: junk, prev"), None);
    }

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("1/2A"), Some((1 << 32) | 0x2a));
        assert_eq!(format_lsn((1 << 32) | 0x2a), "1/2A");
        assert_eq!(parse_lsn("junk"), None);
    }

    #[test]
    fn controldata_fields() {
        let cd = parse_controldata(
            "pg_control version number:            1300\n\
             Database system identifier:           7301234567890123456\n\
             Database cluster state:               shut down\n\
             Latest checkpoint location:           0/3000028\n\
             Latest checkpoint's TimeLineID:       2\n",
        );
        assert_eq!(cd.system_id, "7301234567890123456");
        assert_eq!(cd.cluster_state, "shut down");
        assert_eq!(cd.checkpoint_lsn, 0x3000028);
        assert_eq!(cd.timeline, 2);
    }
}
