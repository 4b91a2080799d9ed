//! `pgpilot restore` without `--target-timeline` follows the timeline a
//! bootstrap from the backup would (issue 13): the newest archived timeline
//! that runs through the backup's end, not PostgreSQL's `latest`, which
//! picks a branch that forked off before the backup ended and then refuses
//! to start ("requested timeline 2 is not a child of this server's history").

use std::time::Duration;

use pgpilot_e2e::backup::lab::{show, Lab, RepoKind};
use pgpilot_e2e::wait_until;

#[tokio::test]
async fn restore_follows_the_backups_own_timeline_by_default() -> anyhow::Result<()> {
    let mut lab = Lab::start(RepoKind::Posix, "").await?;
    let client = lab.server.connect().await?;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await?;
    let first = lab.backup(&[])?;
    client.batch_execute("INSERT INTO t VALUES (1)").await?;
    let fork: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    lab.switch_and_archive().await?;
    client.batch_execute("INSERT INTO t VALUES (2)").await?;
    lab.switch_and_archive().await?;
    let second = lab.backup(&[])?;

    // A branch off the first backup at `fork`, before the second backup
    // ended: timeline 2, its history file archived into the same repository.
    let branch = lab.restore_target("branch")?;
    let out = lab.restore(
        branch,
        &[
            "--set",
            &first,
            "--target-lsn",
            &fork,
            "--target-action",
            "promote",
        ],
    )?;
    anyhow::ensure!(out.code == 0, "restore of the branch: {}", show(&out));
    lab.restored(branch).start()?;
    let on_branch = lab.restored(branch).connect().await?;
    wait_until(
        "timeline 2's history archived",
        Duration::from_secs(120),
        async || {
            let row = on_branch
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver",
                    &[],
                )
                .await?;
            let last: String = row.get(0);
            anyhow::ensure!(
                last.starts_with("00000002"),
                "last archived {last:?}, failures {}",
                row.get::<_, i64>(1)
            );
            Ok(())
        },
    )
    .await?;

    // The second backup, no timeline asked for: it must recover on its own
    // timeline 1 and hold both rows.
    let index = lab.restore_target("second")?;
    let out = lab.restore(index, &["--set", &second])?;
    assert_eq!(out.code, 0, "{}", show(&out));
    assert!(out.stdout.contains("on timeline 1"), "{}", show(&out));
    lab.start_restored(index).await?;
    let restored = lab.restored(index).connect().await?;
    let ids: Vec<i32> = restored
        .query("SELECT id FROM t ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2]);
    Ok(())
}
