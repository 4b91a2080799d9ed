//! WAL archiving as PostgreSQL reports it (`pg_stat_archiver`), and making
//! it produce segments, for the archiving tests.

use std::time::Duration;

use crate::wait_until;

#[derive(Debug, Clone, Default)]
pub struct Archiver {
    pub archived: i64,
    pub failed: i64,
    pub last_archived: Option<String>,
    pub last_failed: Option<String>,
}

pub async fn archiver(client: &tokio_postgres::Client) -> anyhow::Result<Archiver> {
    let row = client
        .query_one(
            "SELECT archived_count, failed_count, last_archived_wal, last_failed_wal \
             FROM pg_stat_archiver",
            &[],
        )
        .await?;
    Ok(Archiver {
        archived: row.get(0),
        failed: row.get(1),
        last_archived: row.get(2),
        last_failed: row.get(3),
    })
}

/// Write some rows and switch to a new segment; the name of the completed one.
pub async fn switch_segment(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS filler (i int, t text); \
             INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
        )
        .await?;
    let row = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?;
    Ok(row.get(0))
}

/// Wait until `segment` (or a later one of its timeline) is archived.
pub async fn wait_archived(
    client: &tokio_postgres::Client,
    segment: &str,
    timeout: Duration,
) -> anyhow::Result<Archiver> {
    wait_until(&format!("{segment} archived"), timeout, async || {
        let state = archiver(client).await?;
        // Names sort in WAL order within a timeline.
        match &state.last_archived {
            Some(last) if last.as_str() >= segment => Ok(state),
            _ => anyhow::bail!("archiver: {state:?}"),
        }
    })
    .await
}
