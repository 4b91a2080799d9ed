//! One monitoring session: connected with a time limit, set up once
//! (timeouts, no JIT), statements prepared once and reused, every statement
//! bounded on the client side too.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("connecting to PostgreSQL did not finish within {0:?} (is it running and reachable?)")]
    ConnectTimeout(Duration),
    #[error("PostgreSQL did not answer within {0:?}; the session is closed and reopened at the next scrape")]
    Timeout(Duration),
    #[error("the scrape's time budget was spent before this query ran")]
    NoTimeLeft,
    #[error("the monitoring session broke earlier in this scrape")]
    SessionLost,
    #[error("not retried yet after a failed connection (retried every 30 s)")]
    RetryLater,
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("unexpected value in column {column}: {source}")]
    Decode {
        column: usize,
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// The session cannot be trusted any more (closed, timed out, I/O).
    pub fn breaks_session(&self) -> bool {
        match self {
            PgError::ConnectTimeout(_) | PgError::Timeout(_) => true,
            PgError::Postgres(e) => e.is_closed() || e.as_db_error().is_none(),
            PgError::NoTimeLeft
            | PgError::SessionLost
            | PgError::RetryLater
            | PgError::Decode { .. } => false,
        }
    }

    /// For logs: PostgreSQL's message (with its SQLSTATE), else the error.
    pub fn describe(&self) -> String {
        if let PgError::Postgres(e) = self {
            if let Some(db) = e.as_db_error() {
                return format!("{} (SQLSTATE {})", db.message(), db.code().code());
            }
        }
        self.to_string()
    }
}

/// Session settings of every monitoring connection.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

pub struct Conn {
    client: Client,
    /// The backend's pid, to leave our own sessions out of pg_stat_activity.
    pub pid: i32,
    pub opened: Instant,
    statements: HashMap<String, Statement>,
    task: JoinHandle<()>,
    statement_timeout: Duration,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The connection task would otherwise outlive a hung socket.
        self.task.abort();
    }
}

impl Conn {
    pub async fn open(
        config: &tokio_postgres::Config,
        limits: &SessionLimits,
    ) -> Result<Conn, PgError> {
        let mut config = config.clone();
        config.connect_timeout(limits.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("pgpilot-metrics");
        }
        let (client, connection) =
            tokio::time::timeout(limits.connect_timeout, config.connect(NoTls))
                .await
                .map_err(|_| PgError::ConnectTimeout(limits.connect_timeout))??;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics session ended");
            }
        });
        let mut conn = Conn {
            client,
            pid: 0,
            opened: Instant::now(),
            statements: HashMap::new(),
            task,
            statement_timeout: limits.statement_timeout,
        };
        // One round trip: the pid and the session's limits. JIT off: the
        // catalog queries are cheap, compiling them is not.
        let setup = "SELECT pg_backend_pid(), \
                     set_config('statement_timeout', $1, false), \
                     set_config('lock_timeout', $2, false), \
                     set_config('jit', 'off', false)";
        let statement_ms = limits.statement_timeout.as_millis().to_string();
        let lock_ms = limits.lock_timeout.as_millis().to_string();
        let deadline = Instant::now() + limits.statement_timeout + limits.connect_timeout;
        let rows = conn
            .query(setup, &[&statement_ms, &lock_ms], deadline)
            .await?;
        conn.pid = rows
            .first()
            .map(|row| row.try_get::<_, i32>(0))
            .transpose()
            .map_err(|source| PgError::Decode { column: 0, source })?
            .unwrap_or(0);
        Ok(conn)
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Run `sql` (prepared once per session), within the statement timeout
    /// plus a second and never past `deadline`.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        deadline: Instant,
    ) -> Result<Vec<Row>, PgError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(PgError::NoTimeLeft);
        }
        let limit = (self.statement_timeout + Duration::from_secs(1)).min(deadline - now);
        let client = &self.client;
        let statements = &mut self.statements;
        let run = async {
            let statement = match statements.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = client.prepare(sql).await?;
                    statements.insert(sql.to_string(), s.clone());
                    s
                }
            };
            client.query(&statement, params).await
        };
        match tokio::time::timeout(limit, run).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PgError::Timeout(limit)),
        }
    }
}

/// Column readers: NULL is `None` / "", a type mismatch is an error (a bug
/// in our SQL, reported as a failed collector rather than a panic).
pub fn float(row: &Row, column: usize) -> Result<Option<f64>, PgError> {
    row.try_get(column)
        .map_err(|source| PgError::Decode { column, source })
}

pub fn text(row: &Row, column: usize) -> Result<String, PgError> {
    row.try_get::<_, Option<String>>(column)
        .map(Option::unwrap_or_default)
        .map_err(|source| PgError::Decode { column, source })
}

pub fn boolean(row: &Row, column: usize) -> Result<Option<bool>, PgError> {
    row.try_get(column)
        .map_err(|source| PgError::Decode { column, source })
}
