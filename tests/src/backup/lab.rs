//! A backup lab for `tests/backup.rs`: one PostgreSQL 15 archiving through
//! `pgpilot archive-push` into a repository (a posix directory, or moto's
//! S3 server), its member configuration file, and restored copies started
//! on their own ports. Everything lives in one temporary directory;
//! servers are stopped by pid when the lab is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Client;

use super::moto::MotoServer;
use super::standalone::Standalone;
use super::{run_pgpilot, Outcome};
use crate::wait_until;

pub const BUCKET: &str = "pgpilot-backup-e2e";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Posix,
    S3,
}

pub struct Lab {
    /// Restored servers first: they are dropped (stopped) before the rest.
    restored: Vec<Standalone>,
    pub server: Standalone,
    pub config: PathBuf,
    pub kind: RepoKind,
    /// The posix repository directory.
    pub repo_dir: Option<PathBuf>,
    pub moto: Option<MotoServer>,
    /// The `[backup]` section of the configuration.
    pub backup_section: String,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.restored.clear();
        if crate::keep_test_dir() {
            if let Some(dir) = self.dir.take() {
                eprintln!("keeping {}", dir.keep().display());
            }
        }
    }
}

/// A member configuration whose PostgreSQL is `server` and whose
/// repository is `backup` (a `[backup]` section).
pub fn write_config(path: &Path, server: &Standalone, backup: &str) -> anyhow::Result<()> {
    super::write_config_file(
        path,
        "backup-lab",
        server.data_dir(),
        Some((server.port(), server.socket_dir())),
        backup,
    )
}

impl Lab {
    /// A repository of `kind` and a running PostgreSQL archiving into it.
    /// `extra_backup`: more `[backup]` keys (`part_mib = 1`).
    pub async fn start(kind: RepoKind, extra_backup: &str) -> anyhow::Result<Lab> {
        Self::start_with(kind, extra_backup, &[]).await
    }

    /// [`Lab::start`] with more initdb arguments (`--data-checksums`).
    pub async fn start_with(
        kind: RepoKind,
        extra_backup: &str,
        initdb_args: &[&str],
    ) -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let (moto, repo_dir, mut backup_section) = match kind {
            RepoKind::Posix => {
                let repo = root.join("repo");
                let section = super::posix_section(&repo, extra_backup)?;
                (None, Some(repo), section)
            }
            RepoKind::S3 => {
                let moto = MotoServer::start(&root)?;
                moto.create_bucket(BUCKET).await?;
                let section = super::s3_section(&moto, BUCKET, "lab", extra_backup);
                (Some(moto), None, section)
            }
        };
        if !backup_section.contains("archive_timeout") {
            backup_section =
                backup_section.replace("[backup]\n", "[backup]\narchive_timeout = 60\n");
        }
        let server = Standalone::init_with(&root, "primary", initdb_args)?;
        let config = root.join("primary.toml");
        write_config(&config, &server, &backup_section)?;
        let command = format!(
            "'{} archive-push --config {} %p'",
            crate::pgpilot_bin()?.display(),
            config.display()
        );
        server.configure(&[
            ("archive_mode", "on".into()),
            ("archive_command", command),
            ("wal_level", "replica".into()),
            ("track_commit_timestamp", "on".into()),
            ("max_wal_size", "'256MB'".into()),
            ("fsync", "off".into()),
        ])?;
        server.start()?;
        Ok(Lab {
            restored: Vec::new(),
            server,
            config,
            kind,
            repo_dir,
            moto,
            backup_section,
            dir: Some(dir),
            root,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `pgpilot <command> --config <lab config> <args>`.
    pub fn pgpilot(&self, command: &str, args: &[&str]) -> anyhow::Result<Outcome> {
        let config = self.config.display().to_string();
        let mut all = vec![command, "--config", config.as_str()];
        all.extend_from_slice(args);
        run_pgpilot(&all)
    }

    /// `pgpilot backup list --config ...` and the like.
    pub fn pgpilot_sub(&self, command: &str, sub: &str, args: &[&str]) -> anyhow::Result<Outcome> {
        let config = self.config.display().to_string();
        let mut all = vec![command, sub, "--config", config.as_str()];
        all.extend_from_slice(args);
        run_pgpilot(&all)
    }

    /// Take a backup; its label (the line `new backup label = ...`).
    pub fn backup(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.pgpilot("backup", args)?;
        anyhow::ensure!(out.code == 0, "backup {args:?} failed: {}", show(&out));
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("new backup label = "))
            .map(|l| l.trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("no label printed: {}", show(&out)))
    }

    /// A place for a restored data directory, and the server to start on it.
    pub fn restore_target(&mut self, name: &str) -> anyhow::Result<usize> {
        self.restored.push(Standalone::adopt(&self.root, name)?);
        Ok(self.restored.len() - 1)
    }

    pub fn restored(&self, index: usize) -> &Standalone {
        &self.restored[index]
    }

    /// `pgpilot restore --data-dir <target's data dir> <args>`.
    pub fn restore(&self, index: usize, args: &[&str]) -> anyhow::Result<Outcome> {
        let data = self.restored[index].data_dir().display().to_string();
        let mut all = vec!["--data-dir", data.as_str()];
        all.extend_from_slice(args);
        self.pgpilot("restore", &all)
    }

    /// Restore into a new directory and start it (no archiving), waiting
    /// until recovery has ended (restore with `--target-action promote`
    /// when a target is given).
    pub async fn restore_and_start(&mut self, name: &str, args: &[&str]) -> anyhow::Result<usize> {
        let index = self.restore_target(name)?;
        let out = self.restore(index, args)?;
        anyhow::ensure!(out.code == 0, "restore {args:?} failed: {}", show(&out));
        self.start_restored(index)
            .await
            .map_err(|e| e.context(format!("restore output: {}", show(&out))))?;
        Ok(index)
    }

    /// Start a restored server (no archiving) and wait until recovery ended.
    pub async fn start_restored(&self, index: usize) -> anyhow::Result<()> {
        let server = &self.restored[index];
        server.start_with("-c archive_mode=off")?;
        let client = server.connect().await?;
        wait_until("recovery to end", Duration::from_secs(120), async || {
            let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
            anyhow::ensure!(!row.get::<_, bool>(0), "still in recovery");
            Ok(())
        })
        .await
        .map_err(|e| e.context(crate::file_tail(server.log(), 30)))?;
        Ok(())
    }

    /// Switch WAL segments and wait until the completed one is archived.
    pub async fn switch_and_archive(&self) -> anyhow::Result<String> {
        let client = self.server.connect().await?;
        let row = client
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await?;
        let segment: String = row.get(0);
        wait_until(
            &format!("{segment} archived"),
            Duration::from_secs(60),
            async || {
                let row = client
                    .query_one(
                        "SELECT last_archived_wal, failed_count FROM pg_stat_archiver",
                        &[],
                    )
                    .await?;
                let last: Option<String> = row.get(0);
                match last {
                    Some(last) if last >= segment => Ok(()),
                    other => {
                        anyhow::bail!("last archived {other:?}, failures {}", row.get::<_, i64>(1))
                    }
                }
            },
        )
        .await?;
        Ok(segment)
    }
}

pub fn show(out: &Outcome) -> String {
    format!(
        "exit {} after {:.1}s\n--- stderr ---\n{}--- stdout ---\n{}",
        out.code,
        out.elapsed.as_secs_f64(),
        out.stderr,
        out.stdout
    )
}

/// md5 of every row of every table in the public schema, by table name.
pub async fn table_checksums(client: &Client) -> anyhow::Result<BTreeMap<String, String>> {
    let tables = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await?;
    let mut sums = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        let sum: Option<String> = client
            .query_one(
                &format!(
                    "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM \"{table}\" t"
                ),
                &[],
            )
            .await?
            .get(0);
        sums.insert(table, sum.unwrap_or_else(|| "empty".into()));
    }
    Ok(sums)
}
