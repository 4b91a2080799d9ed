//! `pgpilot run`'s pid file, beside the data directory
//! (`<postgresql.data_dir>.pgpilot.pid`, [`crate::config::Config::pid_file`]).
//!
//! The running pgpilot holds an exclusive lock (`flock`) on it for as long
//! as it lives, and the kernel drops the lock when the process ends, however
//! it ends. A reader therefore trusts the pid only while the file is
//! locked: a file left by a dead pgpilot is never mistaken for a live one,
//! even when its pid was reused. The snap's configure hook uses it to send
//! the running member `SIGHUP` (docs/snap.md).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The locked pid file of this process; the lock goes with the process.
pub struct PidFile {
    _lock: Flock<File>,
}

/// Write this process's pid to `path` and hold the lock on it. `Err` when
/// it cannot be written, or another live process holds it (its pid is in
/// the message).
pub fn hold(path: &Path) -> Result<PidFile, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(format!(
                "{} is held by another running pgpilot (pid {})",
                path.display(),
                text.trim()
            ));
        }
        Err((_, e)) => return Err(format!("cannot lock {}: {e}", path.display())),
    };
    let written = lock
        .set_len(0)
        .and_then(|_| lock.rewind())
        .and_then(|_| writeln!(lock, "{}", std::process::id()))
        .and_then(|_| lock.sync_all());
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(PidFile { _lock: lock })
}

/// The pid of the live pgpilot that holds `path`, if one does: the file is
/// locked, holds a pid, and that process is named `pgpilot`.
pub fn live_pid(path: &Path) -> Option<i32> {
    let file = File::open(path).ok()?;
    let mut file = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it: whatever pid it names is not a running pgpilot.
        Ok(_) => return None,
        Err((file, Errno::EWOULDBLOCK)) => file,
        Err(_) => return None,
    };
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1)?;
    (process_name(pid)?.as_str() == "pgpilot").then_some(pid)
}

/// The command name of `pid` (`comm`, from /proc/PID/stat, which a
/// confined snap may read for any process).
fn process_name(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat.find('(')?;
    let end = stat.rfind(')')?;
    Some(stat.get(start + 1..end)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_file_names_the_live_process_and_a_released_one_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.pgpilot.pid");
        let held = hold(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // A second holder is refused and told who holds it.
        let err = hold(&path).err().unwrap();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        // This test binary is not named pgpilot: a live lock alone is not enough.
        assert_eq!(live_pid(&path), None);
        drop(held);
        assert_eq!(live_pid(&path), None, "nobody holds it any more");
        // Held again after a release: the file is rewritten, not appended.
        let again = hold(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        drop(again);
        assert_eq!(live_pid(&dir.path().join("missing.pid")), None);
    }

    #[test]
    fn process_names_come_from_proc() {
        let me = std::process::id() as i32;
        let name = process_name(me).unwrap();
        assert!(!name.is_empty());
        assert_eq!(process_name(i32::MAX), None);
    }
}
