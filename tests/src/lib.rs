//! End-to-end harness for pgpilot: real etcd, real PostgreSQL, the real
//! `pgpilot` binary, all on 127.0.0.1, each test in its own temporary
//! directory with its own ports.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pgpilot_e2e::Cluster;
//! let cluster = Cluster::builder().members(3).start().await?;
//! let leader = cluster.wait_ready(std::time::Duration::from_secs(120)).await?;
//! cluster.execute(leader, "CREATE TABLE t (v int)").await?;
//! # Ok(()) }
//! ```
//!
//! Everything the harness starts is stopped when the [`Cluster`] is dropped,
//! also when the test panics; set `PGPILOT_KEEP_TEST_DIR=1` to keep the
//! temporary directory (logs, data directories) for a post-mortem.

pub mod backup;
pub mod checker;
pub mod cluster;
pub mod etcd;
pub mod exposition;
pub mod faults;
pub mod http;
pub mod juju;
pub mod member;
pub mod monitoring;
pub mod netcut;
pub mod netdrop;
pub mod openssl;
pub mod ops;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod reads;
pub mod snapd;
pub mod sql;
pub mod toolsock;
pub mod wait;
pub mod writer;

use std::path::PathBuf;

pub use cluster::{Cluster, ClusterBuilder};
pub use etcd::Etcd;
pub use member::{Member, MemberOptions, RunOutput};
pub use wait::wait_until;

/// Credentials every member is configured with.
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "pw-super";
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "pw-repl";
/// The cluster scope of every test cluster.
pub const SCOPE: &str = "e2e";
/// PostgreSQL's programs.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// OS user PostgreSQL runs as (the tests run as root).
pub const PG_OS_USER: &str = "postgres";

/// A binary of this crate (`src/bin/NAME.rs`) a fixture installs as a
/// stand-in tool: `$ENV_VAR`, else NAME next to the test binary's
/// directory (`target/debug/deps/..`), where cargo builds it for the
/// integration tests.
pub fn fixture_bin(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "{env_var}={} is not a file", path.display());
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    for candidate in exe
        .parent()
        .into_iter()
        .flat_map(|d| [d.join("..").join(name), d.join(name)])
    {
        if candidate.is_file() {
            return Ok(candidate.canonicalize().unwrap_or(candidate));
        }
    }
    anyhow::bail!(
        "the fixture's {name} was not found next to {}: run `cargo build -p pgpilot-e2e --bins` \
         (cargo builds it for the integration tests), or set {env_var}",
        exe.display()
    )
}

/// The `pgpilot` binary under test: `$PGPILOT_BIN`, else `pgpilot` next to
/// the test binary's directory (`target/debug/deps/..`).
pub fn pgpilot_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PGPILOT_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "PGPILOT_BIN={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    if let Some(candidate) = exe.parent().map(|dir| dir.join("../pgpilot")) {
        if candidate.is_file() {
            let path = candidate.canonicalize().unwrap_or(candidate);
            warn_if_stale(&path);
            return Ok(path);
        }
    }
    anyhow::bail!(
        "the pgpilot binary was not found next to {}: run `cargo build -p pgpilot` first, \
         or set PGPILOT_BIN",
        exe.display()
    )
}

/// Say so (once) when a source file of the sidecar is newer than the binary:
/// `cargo nextest run -p pgpilot-e2e` does not rebuild it.
fn warn_if_stale(binary: &std::path::Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
            return;
        };
        let sidecar = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sidecar");
        let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
        let mut stack = vec![sidecar.join("src"), sidecar.join("Cargo.toml")];
        while let Some(path) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            } else if let Ok(modified) = meta.modified() {
                if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                    newest = Some((modified, path));
                }
            }
        }
        if let Some((modified, path)) = newest {
            if modified > built {
                eprintln!(
                    "warning: {} is newer than {}: run `cargo build -p pgpilot` to test the current code",
                    path.display(),
                    binary.display()
                );
            }
        }
    });
}

/// Keep the test directory after the test? (`PGPILOT_KEEP_TEST_DIR` set and not "0")
pub fn keep_test_dir() -> bool {
    std::env::var_os("PGPILOT_KEEP_TEST_DIR").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The last `n` lines of a file, or a note saying why there are none.
pub fn file_tail(path: &std::path::Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
