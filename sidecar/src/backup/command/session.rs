//! The SQL a backup needs, on one session held open from pg_backup_start to
//! pg_backup_stop (PostgreSQL ends a non-exclusive backup when its session
//! ends, so a crashed pgpilot never leaves the server in backup mode).

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::backup::model::walrange::parse_segment;
use crate::backup::{BackupError, Result};
use crate::config::Config;
use crate::lsn::parse_lsn;

pub struct Session {
    client: Client,
    pub settings: Settings,
}

/// What the backup needs to know about the server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub version_num: i32,
    pub in_recovery: bool,
    pub data_directory: String,
    pub archive_mode: String,
    pub archive_command: String,
    pub wal_level: String,
    pub segment_size: u64,
    pub system_identifier: String,
}

/// What pg_backup_stop returned.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub lsn: u64,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
}

fn sql_err(what: &str, e: tokio_postgres::Error) -> BackupError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    };
    BackupError::Postgres(format!("{what}: {detail}"))
}

pub async fn connect_with(config: tokio_postgres::Config, what: &str) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| sql_err(what, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backup session ended");
        }
    });
    Ok(client)
}

impl Session {
    /// Connect as the superuser over the local socket.
    pub async fn connect(config: &Config) -> Result<Session> {
        let mut conninfo = crate::postgres::probe::local_conninfo(config, "postgres");
        conninfo.connect_timeout(Duration::from_secs(10));
        let client = connect_with(
            conninfo,
            &format!(
                "cannot connect to PostgreSQL through {} port {} as {}",
                config.postgresql.socket_dir.display(),
                config.postgresql.port,
                config.postgresql.authentication.superuser.username
            ),
        )
        .await?;
        // Nothing may end this session while the backup runs.
        client
            .batch_execute(
                "SET statement_timeout = 0; SET lock_timeout = 0; \
                 SET idle_in_transaction_session_timeout = 0",
            )
            .await
            .map_err(|e| sql_err("setting session timeouts", e))?;
        let _ = client.batch_execute("SET idle_session_timeout = 0").await;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, pg_is_in_recovery(), \
                 current_setting('data_directory'), current_setting('archive_mode'), \
                 current_setting('archive_command'), current_setting('wal_level'), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                 (SELECT system_identifier::text FROM pg_control_system())",
                &[],
            )
            .await
            .map_err(|e| sql_err("reading the server's settings", e))?;
        let version_num: i32 = row.get(0);
        let mut segment_size = row.get::<_, i64>(6) as u64;
        if version_num < 110_000 {
            // Before PostgreSQL 11 the setting counts 8 kB blocks.
            segment_size *= 8192;
        }
        Ok(Session {
            client,
            settings: Settings {
                version_num,
                in_recovery: row.get(1),
                data_directory: row.get(2),
                archive_mode: row.get(3),
                archive_command: row.get(4),
                wal_level: row.get(5),
                segment_size,
                system_identifier: row.get(7),
            },
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// pg_backup_start (pg_start_backup before 15), asking for an
    /// immediate checkpoint. Returns the start LSN.
    pub async fn start(&self, label: &str) -> Result<u64> {
        let sql = if self.settings.version_num >= 150_000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let row = self
            .client
            .query_one(sql, &[&label])
            .await
            .map_err(|e| sql_err("pg_backup_start", e))?;
        let text: String = row.get(0);
        parse_lsn(&text)
            .ok_or_else(|| BackupError::Postgres(format!("pg_backup_start returned {text:?}")))
    }

    /// pg_backup_stop (pg_stop_backup before 15) without waiting for the
    /// archiver: pgpilot waits for the WAL in the repository itself, with
    /// its own time limit, also on a standby where PostgreSQL would not.
    pub async fn stop(&self) -> Result<Stopped> {
        let sql = if self.settings.version_num >= 150_000 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| sql_err("pg_backup_stop", e))?;
        let text: String = row.get(0);
        let lsn = parse_lsn(&text)
            .ok_or_else(|| BackupError::Postgres(format!("pg_backup_stop returned {text:?}")))?;
        let spcmap: Option<String> = row.get(2);
        Ok(Stopped {
            lsn,
            backup_label: row.get(1),
            tablespace_map: spcmap.filter(|s| !s.is_empty()),
        })
    }

    /// The timeline the stop position is on.
    pub async fn stop_timeline(&self, stop_lsn: u64) -> Result<u32> {
        if self.settings.in_recovery {
            let row = self
                .client
                .query_one(
                    "SELECT min_recovery_end_timeline FROM pg_control_recovery()",
                    &[],
                )
                .await
                .map_err(|e| sql_err("reading the recovery timeline", e))?;
            return Ok(row.get::<_, i32>(0) as u32);
        }
        let row = self
            .client
            .query_one(
                "SELECT pg_walfile_name($1::text::pg_lsn)",
                &[&crate::lsn::format_lsn(stop_lsn)],
            )
            .await
            .map_err(|e| sql_err("naming the stop segment", e))?;
        let name: String = row.get(0);
        parse_segment(&name, self.settings.segment_size)
            .map(|(t, _)| t)
            .ok_or_else(|| BackupError::Postgres(format!("unexpected segment name {name:?}")))
    }

    /// Where this standby streams from, if it does: (host, port).
    pub async fn upstream(&self) -> Option<(String, u16)> {
        let row = self
            .client
            .query_opt(
                "SELECT sender_host, sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                &[],
            )
            .await
            .ok()??;
        let host: Option<String> = row.get(0);
        let port: Option<i32> = row.get(1);
        Some((host?, u16::try_from(port?).ok()?))
    }
}

/// A WAL record and a segment switch on a primary: the segment holding
/// everything written so far is complete and goes to the archive. Returns
/// the name of that segment.
pub async fn switch_wal(client: &Client) -> Result<String> {
    let row = client
        .query_one(
            "SELECT pg_walfile_name(lsn) FROM \
             (SELECT pg_create_restore_point('pgpilot archive check'), pg_switch_wal() AS lsn) s",
            &[],
        )
        .await
        .map_err(|e| sql_err("pg_switch_wal", e))?;
    Ok(row.get(0))
}

/// Parse `START TIMELINE: n` from a backup_label.
pub fn label_timeline(backup_label: &str) -> Option<u32> {
    backup_label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Ask the primary a standby streams from to switch WAL segments, so that
/// the segment holding a standby backup's stop position gets archived
/// without waiting for more writes. Best effort: the superuser of this
/// member's file must be able to log in there over TCP.
pub async fn nudge_primary(config: &Config, host: &str, port: u16) -> Result<String> {
    let su = &config.postgresql.authentication.superuser;
    let mut conninfo = tokio_postgres::Config::new();
    conninfo
        .host(host)
        .port(port)
        .user(&su.username)
        .password(&su.password)
        .dbname("postgres")
        .application_name("pgpilot")
        .connect_timeout(Duration::from_secs(5));
    let client = connect_with(
        conninfo,
        &format!("connecting to the primary {host}:{port}"),
    )
    .await?;
    switch_wal(&client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_parsing() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-01-01 00:00:00 UTC\n\
                     LABEL: x\nSTART TIMELINE: 3\n";
        assert_eq!(label_timeline(label), Some(3));
        assert_eq!(label_timeline("nothing"), None);
    }
}
