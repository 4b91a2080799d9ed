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

/// Segment names (24 hex digits) stored in the test repository's archive
/// (stanza `SCOPE`), sorted; a name stored twice appears twice.
pub async fn stored_segments(storage: &dyn pgpilot::repo::Storage) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = storage
        .list(&format!("{}/archive/", crate::SCOPE))
        .await?
        .into_iter()
        .filter_map(|m| {
            let file = m.key.rsplit('/').next()?.to_string();
            let name = file.split('-').next()?.to_string();
            (name.len() == 24).then_some(name)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Number of a segment (16 MiB segments) from its name.
pub fn segment_number(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    log * 256 + seg
}

/// Every segment from the cluster's first one to `last` is stored exactly
/// once, with no gap; the stored names.
pub async fn assert_no_gap(
    storage: &dyn pgpilot::repo::Storage,
    last: &str,
) -> anyhow::Result<Vec<String>> {
    let names = stored_segments(storage).await?;
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "a segment is stored twice: {names:?}"
    );
    assert_eq!(
        names.first().map(String::as_str),
        Some("000000010000000000000001"),
        "{names:?}"
    );
    assert_eq!(names.last().map(String::as_str), Some(last), "{names:?}");
    for pair in names.windows(2) {
        assert_eq!(
            segment_number(&pair[0]) + 1,
            segment_number(&pair[1]),
            "gap between {} and {}: {names:?}",
            pair[0],
            pair[1]
        );
    }
    Ok(names)
}

/// Start `pgpilot archive-ahead --config CONFIG` (the push-ahead worker
/// alone), its output appended to `log`.
pub fn start_push_ahead(
    config: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<std::process::Child> {
    use std::process::{Command, Stdio};
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(crate::pgpilot_bin()?)
        .args(["archive-ahead", "--config"])
        .arg(config)
        .env_remove("PGPILOT_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}
