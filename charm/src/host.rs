//! Facts about the machine the unit runs on, read once by the binary:
//! the clock, memory and CPUs, the architecture, and fresh random
//! passwords (used only if the leader has to create them in this hook).

use std::io::Read;

use crate::config::Machine;
use crate::observe::{HostFacts, Passwords, SYSTEM_USERS};

const PASSWORD_LEN: usize = 24;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn gather() -> std::io::Result<HostFacts> {
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
    Ok(HostFacts {
        now,
        machine: Machine { memory_mb, cpus },
        arch: arch(std::env::consts::ARCH).to_string(),
        fresh_passwords,
    })
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
    let mut source = std::fs::File::open("/dev/urandom")?;
    Ok(password_from(|buf| source.read_exact(buf)))
}

fn password_from(mut fill: impl FnMut(&mut [u8]) -> std::io::Result<()>) -> String {
    let limit = 256 - (256 % ALPHABET.len());
    let mut out = String::with_capacity(PASSWORD_LEN);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LEN {
        if fill(&mut buf).is_err() {
            break;
        }
        for b in buf {
            if (b as usize) < limit && out.len() < PASSWORD_LEN {
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
        let h = gather().unwrap();
        assert_eq!(h.fresh_passwords.len(), SYSTEM_USERS.len());
    }
}
