//! Running PostgreSQL's programs as the configured OS user, and reading the
//! postmaster's pid file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Gid, Pid, Uid, User};
use tokio::process::Command;

use super::PgError;

/// Who PostgreSQL runs as. When pgpilot is root it switches to `os_user`,
/// because PostgreSQL refuses to run as root.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub switch_to: Option<(Uid, Gid)>,
    pub home: Option<PathBuf>,
}

impl RunAs {
    pub fn resolve(os_user: &str) -> Result<Self, PgError> {
        if !Uid::effective().is_root() {
            return Ok(RunAs {
                switch_to: None,
                home: None,
            });
        }
        let user = User::from_name(os_user)
            .map_err(|e| PgError::Setup(format!("cannot look up OS user {os_user:?}: {e}")))?
            .ok_or_else(|| {
                PgError::Setup(format!(
                    "OS user {os_user:?} (postgresql.os_user) does not exist; create it or \
                     install PostgreSQL's package, which creates `postgres`"
                ))
            })?;
        Ok(RunAs {
            switch_to: Some((user.uid, user.gid)),
            home: Some(user.dir),
        })
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.switch_to {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
            if let Some(home) = &self.home {
                cmd.env("HOME", home);
            }
        }
        // Keep PostgreSQL programs away from the operator's libpq settings.
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSFILE",
            "PGSERVICE",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Hand a file or directory to the PostgreSQL user.
    pub fn give(&self, path: &Path) -> Result<(), PgError> {
        if let Some((uid, gid)) = self.switch_to {
            chown(path, Some(uid), Some(gid))
                .map_err(|e| PgError::Setup(format!("cannot chown {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Create a directory (and parents) owned by the PostgreSQL user with `mode`.
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<(), PgError> {
        if !path.exists() {
            std::fs::create_dir_all(path)
                .map_err(|e| PgError::Setup(format!("cannot create {}: {e}", path.display())))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| PgError::Setup(format!("cannot chmod {}: {e}", path.display())))?;
        self.give(path)
    }

    /// Write a file owned by the PostgreSQL user, readable only by it.
    pub fn write_private(&self, path: &Path, contents: &str) -> Result<(), PgError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = path.with_extension("pgpilot-tmp");
        // Created 0600: these files hold passwords, never readable by others
        // even for a moment.
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| PgError::Setup(format!("cannot write {}: {e}", path.display())))?;
        self.give(&tmp)?;
        std::fs::rename(&tmp, path)
            .map_err(|e| PgError::Setup(format!("cannot write {}: {e}", path.display())))
    }
}

/// Run a PostgreSQL program to completion within `timeout`; its output goes
/// into the error when it fails.
pub async fn run(mut cmd: Command, what: &str, timeout: Duration) -> Result<String, PgError> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| PgError::Command(format!("{what}: cannot start: {e}")))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| PgError::Command(format!("{what}: did not finish within {timeout:?}")))?
        .map_err(|e| PgError::Command(format!("{what}: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(PgError::Command(format!(
            "{what} failed ({}): {}",
            output.status,
            last_lines(&format!("{stdout}{stderr}"), 8)
        )))
    }
}

/// Run `cmd` and keep the last value `parse` finds in a line of its
/// output, read as it comes (the output may be large); its exit status does
/// not matter. An error only when it cannot start or outlives `timeout`.
pub async fn last_line_matching<T>(
    mut cmd: Command,
    what: &str,
    timeout: Duration,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, PgError> {
    use tokio::io::AsyncBufReadExt;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| PgError::Command(format!("{what}: cannot start: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| PgError::Command(format!("{what}: no output pipe")))?;
    let read = async {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut last = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(v) = parse(&line) {
                last = Some(v);
            }
        }
        let _ = child.wait().await;
        last
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| PgError::Command(format!("{what}: did not finish within {timeout:?}")))
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// What postmaster.pid says (see PostgreSQL's pidfile.h for the line layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    pub pid: i32,
    /// Epoch seconds.
    pub start_time: Option<i64>,
    /// "starting", "stopping", "ready", "standby" (PostgreSQL 10+).
    pub status: Option<String>,
}

pub fn read_pid_file(data_dir: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    Some(PidFile {
        pid,
        start_time: lines.get(2).and_then(|l| l.trim().parse().ok()),
        status: lines
            .get(7)
            .map(|l| l.trim().to_string())
            .filter(|s| !s.is_empty()),
    })
}

pub fn process_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => !is_zombie(pid),
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Is this pid a postmaster for `data_dir`? Guards against a recycled pid.
pub fn is_postmaster_of(pid: i32, data_dir: &Path) -> bool {
    if !process_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return true; // cannot tell: assume it is, the safe side for "is it running"
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let first = args
        .first()
        .map(|a| String::from_utf8_lossy(a))
        .unwrap_or_default();
    if !(first.ends_with("postgres") || first.ends_with("postmaster")) {
        return false;
    }
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    args.contains(&wanted)
        || std::fs::canonicalize(format!("/proc/{pid}/cwd"))
            .map(|cwd| cwd == data_dir)
            .unwrap_or(false)
}

pub fn signal(pid: i32, sig: Signal) -> Result<(), PgError> {
    kill(Pid::from_raw(pid), sig)
        .map_err(|e| PgError::Command(format!("cannot send {sig} to postmaster {pid}: {e}")))
}

/// No orphaned primary (invariant 6), by construction: the postmaster gets
/// SIGQUIT (immediate shutdown: every backend ends, no further commit) the
/// moment the pgpilot process that started it dies, however it dies
/// (SIGKILL, OOM, crash). Its lease outlives it by up to ttl, so PostgreSQL
/// has stopped long before another member can become leader.
pub fn bind_to_parent_life(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            // After the uid switch (done before pre_exec hooks), which would clear it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                // pgpilot died between fork and prctl: do not start at all.
                return Err(std::io::Error::other(
                    "pgpilot exited while starting PostgreSQL",
                ));
            }
            Ok(())
        });
    }
}
