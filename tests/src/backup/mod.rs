//! Helpers for the backup and WAL-archiving tests (`tests/archive.rs`,
//! `tests/backup.rs`):
//!
//! - [`lab::Lab`]: a PostgreSQL archiving into a repository, with restored
//!   copies, for the base backup tests;
//! - [`moto::MotoServer`]: a real S3-compatible server (moto, from PyPI) on
//!   a free loopback port, killed by pid when dropped;
//! - [`standalone::Standalone`]: one plain PostgreSQL 15 (no pgpilot
//!   sidecar) in a temporary directory, stopped by pid when dropped;
//! - [`fake_segment`]: a WAL segment with a valid first page header, for
//!   tests that do not need a server;
//! - [`run_pgpilot`]: run the `pgpilot` binary and capture what it did;
//! - [`posix_section`], [`s3_section`]: `[backup]` sections for member files
//!   (the lab's, and clusters' in `tests/backup_cluster.rs`).

pub mod archiver;
pub mod lab;
pub mod moto;
pub mod standalone;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A `[backup]` section for a posix repository in `repo` (created here
/// and given to PostgreSQL's user, who runs archive_command), with more
/// `[backup]` keys in `extra` (`"part_mib = 4"`).
pub fn posix_section(repo: &Path, extra: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(repo)?;
    standalone::give_to_postgres(repo)?;
    Ok(format!(
        "[backup]\nrepository = \"posix\"\n{extra}\n[backup.posix]\npath = \"{}\"\n",
        repo.display()
    ))
}

/// A `[backup]` section for `bucket` (which must exist) on moto's S3
/// server, objects under `prefix`, with more `[backup]` keys in `extra`.
pub fn s3_section(moto: &moto::MotoServer, bucket: &str, prefix: &str, extra: &str) -> String {
    format!(
        r#"[backup]
repository = "s3"
{extra}
[backup.s3]
endpoint = "{endpoint}"
uri_style = "path"
region = "us-east-1"
bucket = "{bucket}"
prefix = "{prefix}"
access_key = "testing"
secret_key = "testing"
part_size_mib = 5
"#,
        endpoint = moto.endpoint()
    )
}

/// What a `pgpilot` run did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `pgpilot <args>` (the binary under test) and wait for it.
pub fn run_pgpilot(args: &[&str]) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let output = Command::new(crate::pgpilot_bin()?)
        .args(args)
        .env_remove("PGPILOT_CONFIG")
        .output()?;
    Ok(Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// `len` bytes of a 16 MiB-segment WAL file `name` of the cluster `sysid`:
/// a valid long page header (the fields archive-push checks), then `fill`.
pub fn fake_segment(sysid: u64, name: &str, len: usize, fill: u8) -> Vec<u8> {
    let seg_size: u64 = 16 << 20;
    let log = u64::from_str_radix(&name[8..16], 16).expect("hex log");
    let seg = u64::from_str_radix(&name[16..24], 16).expect("hex segment");
    let timeline = u32::from_str_radix(&name[..8], 16).expect("hex timeline");
    let address = (log * (0x1_0000_0000 / seg_size) + seg) * seg_size;
    let mut data = vec![fill; len.max(40)];
    data[0..2].copy_from_slice(&0xD110u16.to_ne_bytes()); // PostgreSQL 15's magic
    data[2..4].copy_from_slice(&0x0002u16.to_ne_bytes()); // XLP_LONG_HEADER
    data[4..8].copy_from_slice(&timeline.to_ne_bytes());
    data[8..16].copy_from_slice(&address.to_ne_bytes());
    data[16..24].copy_from_slice(&[0; 8]);
    data[24..32].copy_from_slice(&sysid.to_ne_bytes());
    data[32..36].copy_from_slice(&(seg_size as u32).to_ne_bytes());
    data[36..40].copy_from_slice(&8192u32.to_ne_bytes());
    data
}

/// A data directory stand-in with just what archive-push reads:
/// `global/pg_control` (system identifier first) and `PG_VERSION`.
pub fn fake_data_dir(dir: &Path, sysid: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("global"))?;
    let mut control = sysid.to_ne_bytes().to_vec();
    control.resize(8192, 0);
    std::fs::write(dir.join("global/pg_control"), control)?;
    std::fs::write(dir.join("PG_VERSION"), "15\n")?;
    Ok(())
}

/// A member configuration file whose `[backup]` section is `backup`
/// (TOML text starting with `[backup]`). Only `postgresql.data_dir` and
/// `[backup]` matter to archive-push/get; the rest is valid filler.
pub fn write_member_config(path: &Path, data_dir: &Path, backup: &str) -> anyhow::Result<()> {
    write_config_file(path, "archiver", data_dir, None, backup)
}

/// The same for a member called `name` whose PostgreSQL listens on
/// `listen` (port, socket directory) when it runs.
pub fn write_config_file(
    path: &Path,
    name: &str,
    data_dir: &Path,
    listen: Option<(u16, &Path)>,
    backup: &str,
) -> anyhow::Result<()> {
    let (port, socket) = match listen {
        Some((port, socket)) => (port, format!("socket_dir = \"{}\"\n", socket.display())),
        None => (5432, String::new()),
    };
    let text = format!(
        r#"[cluster]
scope = "{scope}"
name = "{name}"

[dcs]
endpoints = ["http://127.0.0.1:2379"]

[postgresql]
data_dir = "{data}"
port = {port}
{socket}connect_address = "127.0.0.1:{port}"

[postgresql.authentication.superuser]
username = "postgres"
password = "unused"

[postgresql.authentication.replication]
username = "replicator"
password = "unused"

[api]
listen = "127.0.0.1:8008"

[log]
level = "info"

{backup}
"#,
        scope = crate::SCOPE,
        data = data_dir.display(),
    );
    std::fs::write(path, text)?;
    // PostgreSQL's user runs archive_command: it must read the file.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(())
}
