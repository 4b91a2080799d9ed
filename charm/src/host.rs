//! Facts about the machine the unit runs on, read once by the binary:
//! the clock, memory and CPUs, the architecture, and fresh random
//! passwords (used only if the leader has to create them in this hook).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::Machine;
use crate::observe::{HostFacts, Passwords, SYSTEM_USERS};

const PASSWORD_LEN: usize = 24;
/// Passwords of the `database` relations' users: 16 letters and digits
/// (today's length).
pub const CLIENT_PASSWORD_LEN: usize = 16;
/// How many relation users one hook may create.
pub const FRESH_CLIENT_PASSWORDS: usize = 4;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn gather(unit: &str, charm_dir: &Path) -> std::io::Result<HostFacts> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| memory_mb(&t))
        .unwrap_or(1024);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mut fresh_passwords = Passwords::new();
    for user in SYSTEM_USERS {
        fresh_passwords.insert(user.to_string(), random_password()?);
    }
    let fresh_client_passwords = (0..FRESH_CLIENT_PASSWORDS)
        .map(|_| random_password_of(CLIENT_PASSWORD_LEN))
        .collect::<std::io::Result<_>>()?;
    Ok(HostFacts {
        now,
        machine: Machine { memory_mb, cpus },
        arch: arch(std::env::consts::ARCH).to_string(),
        fresh_passwords,
        fresh_client_passwords,
        wake_command: std::env::var_os("PATH")
            .and_then(|path| find_program(&path, JUJU_EXEC))
            .map(|exec| wake_command(&exec, unit, charm_dir)),
    })
}

/// The unit agent's command that runs commands in a hook context.
pub const JUJU_EXEC: &str = "juju-exec";

/// The hook name pgpilot's callbacks dispatch (`hooks/role-changed`): a
/// convergence like update-status, run at once after a role change.
pub const WAKE_HOOK: &str = "role-changed";

/// The first executable `name` in a PATH-style list, as an absolute path.
pub fn find_program(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `juju-exec -u UNIT "JUJU_DISPATCH_PATH=hooks/role-changed CHARM/dispatch"`:
/// pgpilot appends `<action> <role> <scope>`, which juju-exec joins to the
/// command line (dispatch ignores its arguments).
pub fn wake_command(juju_exec: &Path, unit: &str, charm_dir: &Path) -> Vec<String> {
    vec![
        juju_exec.display().to_string(),
        "-u".to_string(),
        unit.to_string(),
        format!(
            "JUJU_DISPATCH_PATH=hooks/{WAKE_HOOK} {}",
            charm_dir.join("dispatch").display()
        ),
    ]
}

/// `MemTotal:  8048576 kB` → MB.
pub fn memory_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Debian/snap architecture names.
pub fn arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Letters and digits from the kernel's random source, without modulo bias.
pub fn random_password() -> std::io::Result<String> {
    random_password_of(PASSWORD_LEN)
}

/// `len` letters and digits from the kernel's random source.
pub fn random_password_of(len: usize) -> std::io::Result<String> {
    let mut source = std::fs::File::open("/dev/urandom")?;
    Ok(password_from(len, |buf| source.read_exact(buf)))
}

fn password_from(len: usize, mut fill: impl FnMut(&mut [u8]) -> std::io::Result<()>) -> String {
    let limit = 256 - (256 % ALPHABET.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        if fill(&mut buf).is_err() {
            break;
        }
        for b in buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn juju_exec_is_found_on_path_and_runs_dispatch() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exec = dir.path().join(JUJU_EXEC);
        std::fs::write(&exec, "#!/bin/sh\n").unwrap();
        let path =
            std::env::join_paths([Path::new("relative"), Path::new("/nonexistent"), dir.path()])
                .unwrap();
        // Not executable: not a program.
        assert_eq!(find_program(&path, JUJU_EXEC), None);
        std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = find_program(&path, JUJU_EXEC).unwrap();
        assert_eq!(found, exec);
        let charm = Path::new("/var/lib/juju/agents/unit-postgresql-2/charm");
        assert_eq!(
            wake_command(&found, "postgresql/2", charm),
            vec![
                exec.display().to_string(),
                "-u".to_string(),
                "postgresql/2".to_string(),
                format!(
                    "JUJU_DISPATCH_PATH=hooks/role-changed {}/dispatch",
                    charm.display()
                ),
            ]
        );
    }

    #[test]
    fn facts() {
        assert_eq!(
            memory_mb("MemTotal:        8048576 kB\nMemFree: 1 kB\n"),
            Some(7859)
        );
        assert_eq!(memory_mb("nothing"), None);
        assert_eq!(arch("x86_64"), "amd64");
        assert_eq!(arch("aarch64"), "arm64");
        let p = random_password().unwrap();
        assert_eq!(p.len(), PASSWORD_LEN);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(p, random_password().unwrap());
        let h = gather("postgresql/0", Path::new("/charm")).unwrap();
        assert_eq!(h.fresh_passwords.len(), SYSTEM_USERS.len());
        assert_eq!(h.fresh_client_passwords.len(), FRESH_CLIENT_PASSWORDS);
        assert!(h.fresh_client_passwords.iter().all(
            |p| p.len() == CLIENT_PASSWORD_LEN && p.bytes().all(|b| b.is_ascii_alphanumeric())
        ));
    }
}
