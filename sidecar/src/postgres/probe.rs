//! SQL against the local instance: one observation per HA cycle, and the few
//! statements pgpilot runs (roles, slots, checkpoint).

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use super::PgError;
use crate::config::Config;

/// What one query round tells about the running instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    pub in_recovery: bool,
    /// Primary: flushed WAL position.
    pub flush_lsn: Option<u64>,
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    pub timeline: Option<u32>,
    /// Replica: the WAL receiver is streaming.
    pub streaming: bool,
    /// Replica: host the WAL receiver is connected to.
    pub upstream_host: Option<String>,
    pub server_version: i32,
    pub pending_restart: bool,
    pub system_id: String,
    pub replication: Vec<ReplicationInfo>,
    pub replay_paused: bool,
    /// Replica: commit time of the last transaction replayed (epoch seconds).
    pub last_replay_epoch: Option<f64>,
}

/// One row of pg_stat_replication, with Patroni's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationInfo {
    pub usename: Option<String>,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub sync_priority: Option<i32>,
    /// Bytes replayed on that standby (our addition, used for "has it got X?").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_lsn: Option<u64>,
}

const OBSERVE_SQL: &str = "
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE (pg_current_wal_flush_lsn() - '0/0')::bigint END,
       (pg_last_wal_receive_lsn() - '0/0')::bigint,
       (pg_last_wal_replay_lsn() - '0/0')::bigint,
       CASE WHEN pg_is_in_recovery()
            THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),
                          (pg_control_checkpoint()).timeline_id)
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       COALESCE((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
       (SELECT sender_host FROM pg_stat_wal_receiver),
       current_setting('server_version_num')::int,
       EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart),
       (SELECT system_identifier::text FROM pg_control_system()),
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
       extract(epoch FROM pg_last_xact_replay_timestamp())::float8";

const REPLICATION_SQL: &str = "
SELECT usename::text, application_name, client_addr::text, state, sync_state, sync_priority,
       (replay_lsn - '0/0')::bigint, (flush_lsn - '0/0')::bigint
  FROM pg_stat_replication ORDER BY application_name";

/// Connection string for the superuser over the local socket.
pub fn local_conninfo(config: &Config, dbname: &str) -> tokio_postgres::Config {
    let pg = &config.postgresql;
    let mut c = tokio_postgres::Config::new();
    c.host_path(&pg.socket_dir)
        .port(pg.port)
        .user(&pg.authentication.superuser.username)
        .password(&pg.authentication.superuser.password)
        .dbname(dbname)
        .application_name("pgpilot")
        .connect_timeout(std::time::Duration::from_secs(3));
    c
}

pub async fn connect(config: &Config) -> Result<Client, PgError> {
    let (client, connection) = local_conninfo(config, "postgres")
        .connect(NoTls)
        .await
        .map_err(|e| {
            let message = format!("cannot connect to the local PostgreSQL: {e}");
            if is_auth_failure(&e) {
                PgError::Auth(message)
            } else {
                PgError::Sql(message)
            }
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "local PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A refused login: wrong password (28P01) or a role that may not log in (28000).
pub fn is_auth_failure(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

fn sql_err(e: tokio_postgres::Error) -> PgError {
    PgError::Sql(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    })
}

pub async fn observe(client: &Client) -> Result<Observation, PgError> {
    let row = client.query_one(OBSERVE_SQL, &[]).await.map_err(sql_err)?;
    let as_u64 = |v: Option<i64>| v.map(|x| x.max(0) as u64);
    let mut obs = Observation {
        in_recovery: row.get(0),
        flush_lsn: as_u64(row.get(1)),
        received_lsn: as_u64(row.get(2)),
        replayed_lsn: as_u64(row.get(3)),
        timeline: row.get::<_, Option<i32>>(4).map(|t| t as u32),
        streaming: row.get(5),
        upstream_host: row.get(6),
        server_version: row.get(7),
        pending_restart: row.get(8),
        system_id: row.get(9),
        replication: Vec::new(),
        replay_paused: row.get(10),
        last_replay_epoch: row.get(11),
    };
    if !obs.in_recovery {
        obs.replication = client
            .query(REPLICATION_SQL, &[])
            .await
            .map_err(sql_err)?
            .iter()
            .map(|r| ReplicationInfo {
                usename: r.get(0),
                application_name: r.get(1),
                client_addr: r.get(2),
                state: r.get(3),
                sync_state: r.get(4),
                sync_priority: r.get(5),
                replay_lsn: as_u64(r.get(6)),
                flush_lsn: as_u64(r.get(7)),
            })
            .collect();
    }
    Ok(obs)
}

/// Create the replication role if missing, and give it the configured
/// password; with `superuser`, give the superuser its configured password
/// too. Idempotent: a role that already has that password (a charm may
/// have changed it first) is set to it again.
///
/// No password reaches the server in clear: the statement carries a
/// SCRAM-SHA-256 verifier computed here (as psql's `\password` does), and
/// runs in a transaction that logs no statement (`log_statement`,
/// `log_min_duration_statement`, `log_min_error_statement`), set by an
/// earlier query since PostgreSQL decides about logging a query before
/// running it.
pub async fn ensure_roles(
    client: &Client,
    config: &Config,
    superuser: bool,
) -> Result<(), PgError> {
    let auth = &config.postgresql.authentication;
    let repl = &auth.replication;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&repl.username],
        )
        .await
        .map_err(sql_err)?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let mut statements = vec![format!(
        "{verb} ROLE {} WITH LOGIN REPLICATION PASSWORD {}",
        quote_ident(&repl.username),
        quote_literal(&scram_verifier(&repl.password))
    )];
    if superuser {
        statements.push(format!(
            "ALTER ROLE {} WITH PASSWORD {}",
            quote_ident(&auth.superuser.username),
            quote_literal(&scram_verifier(&auth.superuser.password))
        ));
    }
    client
        .batch_execute(
            "BEGIN; SET LOCAL log_statement = 'none'; \
             SET LOCAL log_min_duration_statement = -1; \
             SET LOCAL log_min_error_statement = 'panic'",
        )
        .await
        .map_err(sql_err)?;
    for statement in &statements {
        if let Err(e) = client.batch_execute(statement).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(sql_err(e));
        }
    }
    client.batch_execute("COMMIT").await.map_err(sql_err)
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (random
/// salt, 4096 iterations, SASLprep as libpq applies it).
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// The physical slots: name, active (a WAL sender uses it), lost
/// (invalidated by `max_slot_wal_keep_size`).
pub async fn physical_slots(client: &Client) -> Result<Vec<(String, bool, bool)>, PgError> {
    let rows = client
        .query(
            "SELECT slot_name::text, active, coalesce(wal_status = 'lost', false) \
             FROM pg_replication_slots WHERE slot_type = 'physical'",
            &[],
        )
        .await
        .map_err(sql_err)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Create a physical slot that reserves WAL from now on; one created
/// concurrently (by the member itself, over replication) is fine.
pub async fn create_physical_slot(client: &Client, name: &str) -> Result<(), PgError> {
    let created = client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&name],
        )
        .await;
    match created {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(()),
        other => other.map(drop).map_err(sql_err),
    }
}

/// Drop a slot no WAL sender uses (one that became active since is kept).
pub async fn drop_inactive_slot(client: &Client, name: &str) -> Result<bool, PgError> {
    let dropped = client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND NOT active",
            &[&name],
        )
        .await
        .map_err(sql_err)?;
    Ok(dropped > 0)
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
