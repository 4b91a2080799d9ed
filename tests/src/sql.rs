//! SQL on a member over TCP (127.0.0.1:port) as the superuser; pg_hba asks
//! for scram-sha-256, so the password goes over the wire as a SCRAM exchange.

use std::time::Duration;

use tokio_postgres::{Client, NoTls, Row};

use crate::{SUPERUSER, SUPERUSER_PASSWORD};

/// Connect to the `postgres` database of the instance on 127.0.0.1:`port`.
pub async fn connect(port: u16) -> anyhow::Result<Client> {
    connect_db(port, "postgres").await
}

/// Connect to database `dbname` of the instance on 127.0.0.1:`port`.
pub async fn connect_db(port: u16, dbname: &str) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(SUPERUSER_PASSWORD)
        .dbname(dbname)
        .application_name("pgpilot-e2e")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to PostgreSQL on port {port} timed out"))?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL on port {port}: {}",
                describe(&e)
            )
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Run one statement (no parameters) and return its rows.
pub async fn query(port: u16, sql: &str) -> anyhow::Result<Vec<Row>> {
    let client = connect(port).await?;
    tokio::time::timeout(Duration::from_secs(30), client.query(sql, &[]))
        .await
        .map_err(|_| anyhow::anyhow!("{sql:?} on port {port} timed out"))?
        .map_err(|e| anyhow::anyhow!("{sql:?} on port {port}: {}", describe(&e)))
}

/// Run statements (several separated by `;` are fine) for their effect.
pub async fn execute(port: u16, sql: &str) -> anyhow::Result<()> {
    let client = connect(port).await?;
    tokio::time::timeout(Duration::from_secs(30), client.batch_execute(sql))
        .await
        .map_err(|_| anyhow::anyhow!("{sql:?} on port {port} timed out"))?
        .map_err(|e| anyhow::anyhow!("{sql:?} on port {port}: {}", describe(&e)))
}

/// Every column of every row rendered as text (NULL as "NULL"); the query
/// should cast non-text columns (`::text`).
pub async fn query_strings(port: u16, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let rows = query(port, sql).await?;
    Ok(rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<_, Option<String>>(i)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "NULL".to_string())
                })
                .collect()
        })
        .collect())
}

/// The server's message for a database error, the error itself otherwise.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}
