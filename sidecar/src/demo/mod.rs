//! `pgpilot demo up|down`: a local cluster (etcd + N members) on loopback.
//!
//! Everything lives in one directory (default `/tmp/pgpilot-demo`):
//!
//! ```text
//! DIR/demo.pids            JSON: the processes `up` started (read by `down`)
//! DIR/etcd/, DIR/etcd.log  the demo's own etcd
//! DIR/pgN/pgpilot.toml     member N's configuration (generated passwords inside)
//! DIR/pgN/pgpilot.log      the sidecar's output
//! DIR/pgN/data/            PostgreSQL's data directory; DIR/pgN/data.log its log
//! DIR/repo/                the members' posix backup repository (WAL archive, base backups)
//! DIR/bin/pgpilot          the copy of pgpilot the members run (PostgreSQL's user reaches it)
//! ```
//!
//! Ports derive from `--base-port` B: etcd client B, etcd peer B+1,
//! PostgreSQL of member N B+10+N, its REST API B+20+N. Demos with base
//! ports 30 apart run side by side.

/// `println!` that never panics: a closed stdout (`| head`) must not
/// abort `up` half-way with processes started.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod down;
mod procs;
mod up;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit;

/// The cluster name every demo uses (each demo has its own etcd).
pub const SCOPE: &str = "demo";
/// Most members a demo can have: ports B+11..B+19 and B+21..B+29.
pub const MAX_MEMBERS: u8 = 9;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(subcommand)]
    pub command: DemoCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DemoCommand {
    /// Start etcd and N members in DIR and wait until the cluster is healthy.
    Up(UpArgs),
    /// Stop the demo in DIR (sidecars first, then etcd).
    Down(DownArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of members (pg1 .. pgN).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=MAX_MEMBERS as i64))]
    pub members: u8,
    /// Directory for every file of the demo.
    #[arg(long, value_name = "DIR", default_value = "/tmp/pgpilot-demo")]
    pub dir: PathBuf,
    /// First of the 30 ports the demo uses (etcd B and B+1, PostgreSQL B+10+N, API B+20+N).
    #[arg(long, value_name = "PORT", default_value_t = 7000,
          value_parser = clap::value_parser!(u16).range(1024..=65500))]
    pub base_port: u16,
    /// Directory with PostgreSQL's programs (initdb, postgres, pg_ctl, ...).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pub bin_dir: PathBuf,
    /// Seconds to wait for every member to be healthy.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DownArgs {
    /// Directory of the demo to stop.
    #[arg(long, value_name = "DIR", default_value = "/tmp/pgpilot-demo")]
    pub dir: PathBuf,
    /// Remove the directory once everything has stopped.
    #[arg(long)]
    pub clean: bool,
}

/// Paths and ports of one demo, all derived from the directory and base port.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub base_port: u16,
    pub members: u8,
}

impl Layout {
    pub fn etcd_client_port(&self) -> u16 {
        self.base_port
    }
    pub fn etcd_peer_port(&self) -> u16 {
        self.base_port + 1
    }
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client_port())
    }
    pub fn etcd_dir(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn etcd_log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }
    pub fn pids_file(&self) -> PathBuf {
        pids_path(&self.dir)
    }
    /// Member numbers, 1-based.
    pub fn numbers(&self) -> impl Iterator<Item = u8> {
        1..=self.members
    }
    pub fn name(&self, n: u8) -> String {
        format!("pg{n}")
    }
    pub fn pg_port(&self, n: u8) -> u16 {
        self.base_port + 10 + u16::from(n)
    }
    pub fn api_port(&self, n: u8) -> u16 {
        self.base_port + 20 + u16::from(n)
    }
    pub fn member_dir(&self, n: u8) -> PathBuf {
        self.dir.join(self.name(n))
    }
    pub fn config_path(&self, n: u8) -> PathBuf {
        self.member_dir(n).join("pgpilot.toml")
    }
    pub fn log_path(&self, n: u8) -> PathBuf {
        self.member_dir(n).join("pgpilot.log")
    }
    pub fn data_dir(&self, n: u8) -> PathBuf {
        self.member_dir(n).join("data")
    }
    /// The copy of pgpilot the members run (PostgreSQL's user can reach it).
    pub fn bin_path(&self) -> PathBuf {
        self.dir.join("bin").join("pgpilot")
    }
    /// The posix backup repository every member archives WAL to.
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.join("repo")
    }
    /// Every port with what it is for, for the "port in use" check.
    pub fn ports(&self) -> Vec<(u16, String)> {
        let mut ports = vec![
            (self.etcd_client_port(), "etcd client".to_string()),
            (self.etcd_peer_port(), "etcd peer".to_string()),
        ];
        for n in self.numbers() {
            ports.push((self.pg_port(n), format!("{} PostgreSQL", self.name(n))));
            ports.push((self.api_port(n), format!("{} REST API", self.name(n))));
        }
        ports
    }
}

/// A process the demo started, as recorded in `demo.pids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// `etcd` or the member name.
    pub name: String,
    pub pid: i32,
    /// File name of the program (`etcd`, `pgpilot`): /proc/PID/cmdline must show it.
    pub program: String,
    /// An argument only this process has (its data dir or config file).
    pub marker: String,
    /// A member's PostgreSQL data directory, to stop a postmaster left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// `DIR/demo.pids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsFile {
    pub etcd_url: String,
    pub namespace: String,
    pub scope: String,
    pub processes: Vec<Recorded>,
}

pub fn pids_path(dir: &Path) -> PathBuf {
    dir.join("demo.pids")
}

impl PidsFile {
    pub fn read(dir: &Path) -> Result<Option<PidsFile>, String> {
        let path = pids_path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not a demo pids file: {e}", path.display()))
    }

    /// Write atomically (temporary file, then rename).
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = pids_path(dir);
        let tmp = path.with_extension("pids.tmp");
        let text = serde_json::to_string_pretty(self).expect("pids file serializes") + "\n";
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Is this directory entry one the demo creates (`demo.pids`, `etcd`,
/// `etcd.log`, `pg<N>`)?
pub fn is_demo_entry(name: &str) -> bool {
    matches!(
        name,
        "demo.pids" | "demo.pids.tmp" | "etcd" | "etcd.log" | "repo" | "bin"
    ) || name
        .strip_prefix("pg")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Remove what a demo created in `dir`, then `dir` itself if nothing else is left.
/// Returns whether `dir` itself was removed.
pub fn remove_demo_files(dir: &Path) -> Result<bool, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_demo_entry(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if empty {
        std::fs::remove_dir(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    Ok(empty)
}

/// A failure: message and exit code.
#[derive(Debug)]
pub struct DemoError {
    pub code: i32,
    pub message: String,
}

impl DemoError {
    pub fn usage(message: impl Into<String>) -> Self {
        DemoError {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    pub fn failure(message: impl Into<String>) -> Self {
        DemoError {
            code: exit::FAILURE,
            message: message.into(),
        }
    }
}

/// `--dir` as an absolute path (the member files need absolute paths).
fn absolute_dir(dir: &Path) -> Result<PathBuf, DemoError> {
    if dir.as_os_str().is_empty() {
        return Err(DemoError::usage("--dir must not be empty"));
    }
    std::path::absolute(dir).map_err(|e| DemoError::usage(format!("--dir {}: {e}", dir.display())))
}

/// Entry point of `pgpilot demo` on the runtime the binary made; returns
/// the process exit code.
pub fn main(args: DemoArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let result = match args.command {
        DemoCommand::Up(up_args) => runtime.block_on(up::up(up_args)),
        DemoCommand::Down(down_args) => runtime.block_on(down::down(down_args)),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("pgpilot demo: {}", e.message);
            e.code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_derive_from_the_base_and_do_not_overlap() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/d"),
            base_port: 7000,
            members: MAX_MEMBERS,
        };
        assert_eq!(layout.pg_port(1), 7011);
        assert_eq!(layout.api_port(1), 7021);
        let mut ports: Vec<u16> = layout.ports().into_iter().map(|(p, _)| p).collect();
        let count = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), count);
        assert!(ports.iter().all(|p| (7000..7030).contains(p)));
    }

    #[test]
    fn clean_removes_only_demo_files() {
        let dir = tempfile::tempdir().unwrap();
        let demo = dir.path().join("demo");
        std::fs::create_dir_all(demo.join("pg1/data")).unwrap();
        std::fs::create_dir_all(demo.join("etcd/member")).unwrap();
        std::fs::write(demo.join("demo.pids"), "{}").unwrap();
        std::fs::write(demo.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(demo.join("pgdata")).unwrap();
        assert!(!remove_demo_files(&demo).unwrap());
        let mut left: Vec<String> = std::fs::read_dir(&demo)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["notes.txt", "pgdata"]);
        std::fs::remove_file(demo.join("notes.txt")).unwrap();
        std::fs::remove_dir(demo.join("pgdata")).unwrap();
        assert!(remove_demo_files(&demo).unwrap());
        assert!(!demo.exists());
    }

    #[test]
    fn pids_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PidsFile::read(dir.path()).unwrap(), None);
        let file = PidsFile {
            etcd_url: "http://127.0.0.1:7000".into(),
            namespace: "pgpilot".into(),
            scope: SCOPE.into(),
            processes: vec![Recorded {
                name: "pg1".into(),
                pid: 42,
                program: "pgpilot".into(),
                marker: "/tmp/d/pg1/pgpilot.toml".into(),
                data_dir: Some("/tmp/d/pg1/data".into()),
            }],
        };
        file.write(dir.path()).unwrap();
        assert_eq!(PidsFile::read(dir.path()).unwrap(), Some(file));
    }
}
