//! Page checksums verified while a backup copies the data directory,
//! against a real PostgreSQL 15 initdb'd with `--data-checksums` and a
//! posix repository:
//!
//! - one page damaged on disk (bytes flipped in the middle of block 1 of a
//!   table while PostgreSQL is stopped): the backup completes with exit 0,
//!   its log names the file and the block, `info` flags it (`error: true`,
//!   the file in the text and in `error-list`), `verify` warns about it;
//!   the clean backup taken before is not flagged; an incremental that
//!   refers to the unchanged damaged file is flagged too (the copy it
//!   restores from is damaged);
//! - pgbench writing and checkpoints flushing pages all through a backup:
//!   no false alarm (pages changed after the start are left to WAL replay,
//!   a failed page is read again before it counts), nor when that backup
//!   is restored;
//! - a restore checks the pages as it writes them: a clean backup restores
//!   with exit 0; one holding the damaged page is restored in full and the
//!   restore names the file, the block and both checksums, exit 8.

use std::time::{Duration, Instant};

use pgpilot_e2e::backup::lab::{show, Lab, RepoKind};
use pgpilot_e2e::backup::Outcome;
use serde_json::{json, Value};

const CHECKSUMS: &[&str] = &["--data-checksums"];

/// Take a backup that must succeed; its label and what it printed.
fn backup(lab: &Lab, args: &[&str]) -> anyhow::Result<(String, Outcome)> {
    let out = lab.pgpilot("backup", args)?;
    anyhow::ensure!(out.code == 0, "backup {args:?} failed: {}", show(&out));
    let label = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("new backup label = "))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no label printed: {}", show(&out)))?;
    Ok((label, out))
}

/// `pgpilot info --output json`: the entry of backup `label`.
fn info_entry(lab: &Lab, label: &str) -> anyhow::Result<Value> {
    let out = lab.pgpilot("info", &["--output", "json"])?;
    anyhow::ensure!(out.code == 0, "info failed: {}", show(&out));
    let info: Value = serde_json::from_str(&out.stdout)?;
    info[0]["backup"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["label"] == label))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("backup {label} not in info: {}", out.stdout))
}

/// The counts of the backup's "page checksums: ..." log line: verified,
/// new, changed during the backup, failed.
fn page_counts(out: &Outcome) -> anyhow::Result<[u64; 4]> {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("page checksums: "))
        .ok_or_else(|| anyhow::anyhow!("no page checksum summary: {}", show(out)))?;
    let numbers: Vec<u64> = line
        .split("page checksums: ")
        .nth(1)
        .unwrap_or("")
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    anyhow::ensure!(numbers.len() == 4, "cannot read {line:?}");
    Ok([numbers[0], numbers[1], numbers[2], numbers[3]])
}

/// A table of about 60 pages, checkpointed; autovacuum kept away so that
/// nothing reads it once it is damaged. Its file's path.
async fn victim_table(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    client
        .batch_execute(
            "CREATE TABLE victim (id int, pad text) WITH (autovacuum_enabled = false); \
             INSERT INTO victim SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g; \
             SELECT count(*) FROM victim; CHECKPOINT",
        )
        .await?;
    let row = client
        .query_one("SELECT pg_relation_filepath('victim')", &[])
        .await?;
    Ok(row.get(0))
}

/// Damage block 1 of `path` on disk (16 bytes in the middle of the page,
/// not its header), PostgreSQL stopped cleanly so that no WAL replay
/// rewrites the page at the next start; the file's new content.
fn damage_block_1(lab: &Lab, path: &str) -> anyhow::Result<Vec<u8>> {
    lab.server.shutdown()?;
    let file = lab.server.data_dir().join(path);
    let mut bytes = std::fs::read(&file)?;
    anyhow::ensure!(bytes.len() >= 3 * 8192, "{} bytes", bytes.len());
    for b in &mut bytes[8192 + 4000..8192 + 4016] {
        *b ^= 0xA5;
    }
    std::fs::write(&file, &bytes)?;
    lab.server.start()?;
    Ok(bytes)
}

#[tokio::test]
async fn a_damaged_page_flags_the_backup_which_still_completes() -> anyhow::Result<()> {
    let lab = Lab::start_with(RepoKind::Posix, "", CHECKSUMS).await?;
    let client = lab.server.connect().await?;
    let on: String = client.query_one("SHOW data_checksums", &[]).await?.get(0);
    assert_eq!(on, "on");
    client
        .batch_execute("CREATE TABLE bystander AS SELECT g AS id FROM generate_series(1, 10000) g")
        .await?;
    let path = victim_table(&client).await?;

    // A clean cluster: every page verifies, nothing flagged.
    let (clean, out) = backup(&lab, &[])?;
    let [verified, _, _, failed] = page_counts(&out)?;
    assert!(verified > 100, "{}", show(&out));
    assert_eq!(failed, 0, "{}", show(&out));
    let entry = info_entry(&lab, &clean)?;
    assert_eq!(entry["error"], json!(false), "{entry}");
    assert!(entry.get("error-list").is_none(), "{entry}");

    drop(client);
    damage_block_1(&lab, &path)?;

    let (damaged, out) = backup(&lab, &[])?;
    assert!(
        out.stderr
            .contains(&format!("page checksum failure in {path}, blocks: 1 ")),
        "{}",
        show(&out)
    );
    assert_eq!(page_counts(&out)?[3], 1, "{}", show(&out));
    let entry = info_entry(&lab, &damaged)?;
    assert_eq!(entry["error"], json!(true), "{entry}");
    assert_eq!(entry["error-list"], json!([path]), "{entry}");
    assert_eq!(entry["page-errors"][0]["blocks"], json!([1]), "{entry}");
    assert_eq!(info_entry(&lab, &clean)?["error"], json!(false));
    let text = lab.pgpilot("info", &[])?;
    assert_eq!(text.code, 0, "{}", show(&text));
    assert!(
        text.stdout.contains(&format!(
            "backup {damaged}: error(s) detected during backup"
        )) && text.stdout.contains(&format!("  {path}: blocks 1\n")),
        "{}",
        text.stdout
    );

    // verify: the repository is intact; the damaged pages are a warning.
    let verify = lab.pgpilot("verify", &[])?;
    assert_eq!(verify.code, 0, "{}", show(&verify));
    assert!(
        verify
            .stdout
            .contains(&format!("WARNING: backup {damaged}: {path} holds pages")),
        "{}",
        show(&verify)
    );

    // An incremental refers to the unchanged file: it is flagged too, and
    // names the backup whose copy is damaged.
    lab.server
        .connect()
        .await?
        .batch_execute("INSERT INTO bystander SELECT g FROM generate_series(1, 1000) g")
        .await?;
    let (incr, out) = backup(&lab, &["--type", "incr"])?;
    assert!(
        out.stderr.contains(&format!(
            "page checksum failure in {path}, blocks: 1 (the unchanged copy stored by backup {damaged}"
        )),
        "{}",
        show(&out)
    );
    let entry = info_entry(&lab, &incr)?;
    assert_eq!(entry["type"], json!("incr"));
    assert_eq!(entry["error"], json!(true), "{entry}");
    assert_eq!(entry["error-list"], json!([path]), "{entry}");
    assert_eq!(entry["page-errors"][0]["stored-by"], json!(damaged));
    Ok(())
}

#[tokio::test]
async fn pages_written_during_the_backup_raise_no_false_alarm() -> anyhow::Result<()> {
    let mut lab =
        Lab::start_with(RepoKind::Posix, "part_mib = 4\nparallelism = 2", CHECKSUMS).await?;
    lab.server
        .run_program("pgbench", &["-i", "-s", "5", "-q", "postgres"])?;

    // pgbench for 20 s, and a checkpoint every 200 ms, so that
    // pages are written to the files while the backup reads them.
    let stop_at = Instant::now() + Duration::from_secs(20);
    let writer = {
        let server_socket = lab.server.socket_dir().display().to_string();
        let port = lab.server.port().to_string();
        std::thread::spawn(move || {
            std::process::Command::new(
                std::path::Path::new(pgpilot_e2e::PG_BIN_DIR).join("pgbench"),
            )
            .args(["-h", &server_socket, "-p", &port, "-U", "postgres"])
            .args(["-n", "-c", "4", "-T", "20", "postgres"])
            .output()
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let config = lab.config.clone();
    let taking = tokio::task::spawn_blocking(move || {
        let config = config.display().to_string();
        pgpilot_e2e::backup::run_pgpilot(&["backup", "--config", &config])
    });
    let client = lab.server.connect().await?;
    while !taking.is_finished() && Instant::now() < stop_at {
        client.batch_execute("CHECKPOINT").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = taking.await??;
    let pgbench = writer
        .join()
        .map_err(|_| anyhow::anyhow!("pgbench thread panicked"))??;
    assert!(
        pgbench.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&pgbench.stderr)
    );
    assert_eq!(out.code, 0, "{}", show(&out));
    let [verified, new, recent, failed] = page_counts(&out)?;
    eprintln!(
        "backup in {:.1} s under pgbench and checkpoints: {verified} pages verified, {new} new, \
         {recent} changed during the backup, {failed} failed",
        out.elapsed.as_secs_f64()
    );
    assert_eq!(failed, 0, "{}", show(&out));
    assert!(verified > 1000, "{}", show(&out));
    // Pages written after the start were met, and left to WAL replay.
    assert!(recent > 0, "{}", show(&out));
    let label = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("new backup label = "))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no label: {}", show(&out)))?;
    assert_eq!(info_entry(&lab, &label)?["error"], json!(false));

    // Its restore checks the pages again: no false alarm either.
    let index = lab.restore_target("loaded")?;
    let out = lab.restore(index, &["--set", &label])?;
    assert_eq!(out.code, 0, "{}", show(&out));
    let [verified, _, recent, failed] = page_counts(&out)?;
    eprintln!("its restore: {verified} pages verified, {recent} changed during the backup");
    assert_eq!(failed, 0, "{}", show(&out));
    assert!(verified > 1000, "{}", show(&out));
    Ok(())
}

/// A restore verifies the pages of relation files as it writes them: a
/// clean backup restores with exit 0 and every page verified; a backup
/// holding a page damaged on the source (bytes flipped in block 1 of a
/// table, where neither the repository's SHA-256 nor the manifest can see
/// it) is restored in full, and the restore names the file, the block and
/// both checksums, and exits 8.
#[tokio::test]
async fn a_restore_names_pages_that_fail_their_checksum() -> anyhow::Result<()> {
    let mut lab = Lab::start_with(RepoKind::Posix, "", CHECKSUMS).await?;
    let client = lab.server.connect().await?;
    let path = victim_table(&client).await?;
    let (clean, _) = backup(&lab, &[])?;
    let index = lab.restore_target("clean")?;
    let out = lab.restore(index, &["--set", &clean])?;
    assert_eq!(out.code, 0, "{}", show(&out));
    let [verified, _, _, failed] = page_counts(&out)?;
    assert!(verified > 50, "{}", show(&out));
    assert_eq!(failed, 0, "{}", show(&out));

    drop(client);
    let bytes = damage_block_1(&lab, &path)?;
    let (damaged, _) = backup(&lab, &[])?;

    let index = lab.restore_target("damaged")?;
    let out = lab.restore(index, &["--set", &damaged])?;
    eprintln!("the restore of the damaged backup: {}", show(&out));
    assert_eq!(out.code, 8, "{}", show(&out));
    assert_eq!(page_counts(&out)?[3], 1, "{}", show(&out));
    let all = format!("{}\n{}", out.stdout, out.stderr);
    let line = all
        .lines()
        .find(|l| l.contains(&format!("{path} block 1:")))
        .ok_or_else(|| anyhow::anyhow!("block 1 of {path} not named: {}", show(&out)))?;
    assert!(
        line.contains("checksum expected 0x") && line.contains("found 0x"),
        "{line}"
    );
    assert!(
        out.stdout.contains("1 page failed its checksum"),
        "{}",
        show(&out)
    );
    // Restored in full: the other files are there, pg_control in place.
    let restored = lab.restored(index).data_dir();
    assert!(restored.join("global/pg_control").is_file());
    assert_eq!(std::fs::read(restored.join(&path))?, bytes);
    Ok(())
}
