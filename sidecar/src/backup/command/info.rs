//! `pgpilot info [--output text|json]` (also `pgpilot backup list`): the
//! complete backups of the stanza and the WAL range of its archive.
//!
//! `--output json` has the shape of `pgbackrest info --output=json`, with
//! the fields the charm reads: `name`, `db[0].system-id`, and per backup
//! `label`, `type`, `prior`, `reference`, `lsn.start/stop`,
//! `timestamp.start/stop` (epoch seconds), `archive.start/stop`,
//! `info.size/delta`, `info.repository.size/delta` and `error`.
//!
//! A backup whose `error` is set holds pages that failed their checksum
//! when copied: the text output names the files and blocks under the
//! table, the JSON adds `error-list` (the files, as pgBackRest) and
//! `page-errors` (files, blocks, counts), read from its manifest.

use serde_json::{json, Value};

use std::collections::BTreeMap;

use crate::backup::data::pagecheck::describe_blocks;
use crate::backup::data::progress::mib;
use crate::backup::model::catalog::{Catalog, Entry};
use crate::backup::model::manifest::{self, Manifest};
use crate::backup::model::walrange::Archive;
use crate::backup::{code, ConfigArg, Context, Result};
use crate::repo::identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// `text` (a table) or `json` (pgBackRest's shape).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Show only this backup.
    #[arg(long)]
    pub set: Option<String>,
}

pub fn main(args: InfoArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = args.config.config.clone();
    super::run(runtime, "info", &config, async |context| {
        let report = gather(&context).await?;
        let backups: Vec<&Entry> = report
            .catalog
            .backups
            .iter()
            .filter(|b| args.set.as_ref().is_none_or(|s| *s == b.label))
            .collect();
        if let Some(set) = &args.set {
            if backups.is_empty() {
                return Err(crate::backup::BackupError::NotFound(format!(
                    "no complete backup is labelled {set:?}"
                )));
            }
        }
        match args.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&to_json(&context, &report, &backups))
                    .expect("serializable")
            ),
            Output::Text => print!("{}", to_text(&context, &report, &backups)),
        }
        Ok(code::OK)
    })
}

/// What `info` shows.
pub struct Report {
    pub catalog: Catalog,
    pub system_identifier: Option<String>,
    pub pg_version: Option<String>,
    pub wal_min_max: Option<(String, String)>,
    /// For each backup flagged `error`: its files with damaged pages, or
    /// why its manifest could not be read.
    pub page_errors: BTreeMap<String, std::result::Result<Vec<manifest::File>, String>>,
}

pub async fn gather(context: &Context) -> Result<Report> {
    let storage = context.storage();
    let stored = identity::read(storage, &context.layout)
        .await
        .map_err(|e| crate::backup::BackupError::identity(storage, e))?;
    let catalog = crate::backup::model::catalog::load_or_rebuild(context).await?;
    let segment_size = catalog
        .latest()
        .map(|b| b.wal_segment_size)
        .unwrap_or(16 << 20);
    let archive = Archive::list(storage, &context.layout, segment_size)
        .await
        .map_err(|e| context.repo_err(e))?;
    let mut page_errors = BTreeMap::new();
    for entry in catalog.backups.iter().filter(|b| b.error) {
        let files = Manifest::load(storage, &context.layout, &entry.label)
            .await
            .map(|m| m.damaged_files().cloned().collect())
            .map_err(|e| format!("its manifest cannot be read: {e}"));
        page_errors.insert(entry.label.clone(), files);
    }
    Ok(Report {
        system_identifier: stored.as_ref().map(|s| s.system_identifier.clone()),
        pg_version: stored.as_ref().map(|s| s.pg_version.clone()),
        wal_min_max: archive.min_max(segment_size),
        catalog,
        page_errors,
    })
}

fn secs(us: i64) -> i64 {
    us.div_euclid(1_000_000)
}

pub fn backup_json(b: &Entry) -> Value {
    json!({
        "label": b.label,
        "type": b.backup_type.as_str(),
        "prior": b.prior,
        "reference": if b.reference.is_empty() { Value::Null } else { json!(b.reference) },
        "archive": {"start": b.start_wal, "stop": b.stop_wal},
        "database": {"id": 1, "repo-key": 1},
        "info": {
            "size": b.size,
            "delta": b.delta,
            "repository": {"size": b.repo_size, "delta": b.repo_delta},
        },
        "timestamp": {"start": secs(b.start_time_us), "stop": secs(b.stop_time_us)},
        "lsn": {"start": b.start_lsn, "stop": b.stop_lsn},
        "timeline": b.timeline,
        "backup-standby": b.from_standby,
        "error": b.error,
    })
}

/// Add `error-list` and `page-errors` to a flagged backup's JSON.
fn with_page_errors(
    mut backup: Value,
    errors: Option<&std::result::Result<Vec<manifest::File>, String>>,
) -> Value {
    let Some(object) = backup.as_object_mut() else {
        return backup;
    };
    match errors {
        None => {}
        Some(Ok(files)) => {
            object.insert(
                "error-list".into(),
                json!(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>()),
            );
            object.insert(
                "page-errors".into(),
                json!(files
                    .iter()
                    .map(|f| json!({
                        "file": f.path,
                        "blocks": f.checksum_errors,
                        "count": f.checksum_error_count,
                        "stored-by": f.reference,
                    }))
                    .collect::<Vec<_>>()),
            );
        }
        Some(Err(why)) => {
            object.insert("error-list".into(), Value::Null);
            object.insert("page-errors".into(), json!({ "unavailable": why }));
        }
    }
    backup
}

fn to_json(context: &Context, report: &Report, backups: &[&Entry]) -> Value {
    let (code, message) = match (&report.system_identifier, backups.is_empty()) {
        (None, _) => (1, "missing stanza path"),
        (Some(_), true) => (2, "no valid backups"),
        (Some(_), false) => (0, "ok"),
    };
    let db = match (&report.system_identifier, &report.pg_version) {
        (Some(id), Some(version)) => json!([{
            "id": 1,
            "repo-key": 1,
            "system-id": id.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(id)),
            "version": version,
        }]),
        _ => json!([]),
    };
    let archive = match (&report.wal_min_max, &report.pg_version) {
        (Some((min, max)), Some(version)) => json!([{
            "database": {"id": 1, "repo-key": 1},
            "id": format!("{version}-1"),
            "min": min,
            "max": max,
        }]),
        _ => json!([]),
    };
    json!([{
        "name": context.layout.stanza(),
        "status": {"code": code, "message": message},
        "cipher": "none",
        "db": db,
        "archive": archive,
        "backup": backups
            .iter()
            .map(|b| with_page_errors(backup_json(b), report.page_errors.get(&b.label)))
            .collect::<Vec<_>>(),
        "repo": [{
            "key": 1,
            "cipher": "none",
            "status": {"code": code, "message": message},
        }],
    }])
}

fn to_text(context: &Context, report: &Report, backups: &[&Entry]) -> String {
    let mut out = format!(
        "stanza {} in {}",
        context.layout.stanza(),
        context.storage().location()
    );
    match (&report.system_identifier, &report.pg_version) {
        (Some(id), Some(version)) => {
            out.push_str(&format!(": system identifier {id}, PostgreSQL {version}\n"))
        }
        _ => out.push_str(": nothing archived yet\n"),
    }
    match &report.wal_min_max {
        Some((min, max)) => out.push_str(&format!("WAL archive: {min} .. {max}\n")),
        None => out.push_str("WAL archive: empty\n"),
    }
    if backups.is_empty() {
        out.push_str("no complete backup\n");
        return out;
    }
    let header = [
        "label",
        "type",
        "prior",
        "start (UTC)",
        "secs",
        "size",
        "stored",
        "start LSN",
        "stop LSN",
        "WAL start",
        "WAL stop",
    ];
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            vec![
                b.label.clone(),
                b.backup_type.as_str().to_string(),
                b.prior.clone().unwrap_or_else(|| "-".into()),
                crate::backup::pg_time(b.start_time_us)
                    .trim_end_matches("+00")
                    .to_string(),
                format!("{:.0}", (b.stop_time_us - b.start_time_us) as f64 / 1e6),
                mib(b.size),
                mib(b.repo_delta),
                b.start_lsn.clone(),
                b.stop_lsn.clone(),
                b.start_wal.clone(),
                b.stop_wal.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        out.push_str(&line(row));
    }
    for b in backups.iter().filter(|b| b.error) {
        out.push_str(&page_error_text(&b.label, report.page_errors.get(&b.label)));
    }
    out
}

/// The lines under the table for a backup flagged `error`.
fn page_error_text(
    label: &str,
    errors: Option<&std::result::Result<Vec<manifest::File>, String>>,
) -> String {
    match errors {
        Some(Ok(files)) => {
            let mut out = format!(
                "backup {label}: error(s) detected during backup: pages failed their checksum \
                 in {} file(s):\n",
                files.len()
            );
            for f in files {
                out.push_str(&format!(
                    "  {}: blocks {}{}\n",
                    f.path,
                    describe_blocks(&f.checksum_errors, f.checksum_error_count),
                    f.reference
                        .as_ref()
                        .map(|r| format!(" (copy stored by {r})"))
                        .unwrap_or_default()
                ));
            }
            out
        }
        Some(Err(why)) => format!(
            "backup {label}: error(s) detected during backup (pages failed their checksum); \
             {why}\n"
        ),
        None => format!("backup {label}: error(s) detected during backup\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::model::manifest::tests::sample;

    #[test]
    fn flagged_backups_name_their_damaged_files() {
        let mut m = sample();
        m.error = true;
        m.files[1].checksum_errors = vec![1, 2, 3, 9];
        m.files[1].checksum_error_count = 4;
        m.files[1].reference = Some("20250101-000000F".into());
        let files: Vec<manifest::File> = m.damaged_files().cloned().collect();
        let text = page_error_text(&m.label, Some(&Ok(files.clone())));
        assert!(text.contains("error(s) detected during backup"), "{text}");
        assert!(
            text.contains("  base/1/1: blocks 1-3, 9 (copy stored by 20250101-000000F)"),
            "{text}"
        );
        let entry = crate::backup::model::catalog::Entry::from_manifest(&m, 1);
        assert!(entry.error);
        let value = with_page_errors(backup_json(&entry), Some(&Ok(files)));
        assert_eq!(value["error"], json!(true));
        assert_eq!(value["error-list"], json!(["base/1/1"]));
        assert_eq!(value["page-errors"][0]["blocks"], json!([1, 2, 3, 9]));
        assert_eq!(value["page-errors"][0]["count"], json!(4));
        // A clean backup gets neither key.
        let clean = with_page_errors(backup_json(&entry), None);
        assert!(clean.get("error-list").is_none());
    }
}
