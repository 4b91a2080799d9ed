//! Backups in pgbackrest_exporter's names, v0.20–v0.22 spelling (what the
//! charm's pgBackRest dashboard queries), plus the v0.23 renames of the
//! lock and progress gauges, plus pgpilot's WAL archiving counters.
//!
//! All pgbackrest_* families are gauges, as in pgbackrest_exporter. Ages
//! are computed from `now` at each scrape, so they never freeze between
//! catalog reads.

use std::time::SystemTime;

use crate::family::{Family, Kind};
use crate::ha::epoch_seconds;

/// The repository as the sidecar last read it, filled at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInput {
    /// The `stanza` label (the cluster's backup name).
    pub stanza: String,
    /// `repo_key`, `cipher`, `database_id`, `pg_version` labels
    /// (defaults 1, "none", 1, "").
    pub repo_key: u32,
    pub cipher: String,
    pub database_id: u32,
    pub pg_version: String,
    /// The last read of the repository succeeded (false: it failed, and
    /// `backups` is what an earlier read found, if any).
    pub repo_ok: bool,
    /// The complete backups of the catalog.
    pub backups: Vec<BackupRecord>,
    /// Oldest and newest WAL segment in the archive.
    pub wal_min_max: Option<(String, String)>,
    /// A backup runs now (it holds the stanza's lock).
    pub running: Option<BackupProgress>,
    /// WAL archiving as this member saw it, when known.
    pub archive: Option<ArchiveStats>,
}

impl BackupInput {
    /// An input with the default labels, a reachable repository and no
    /// backups yet.
    pub fn new(stanza: impl Into<String>) -> BackupInput {
        BackupInput {
            stanza: stanza.into(),
            repo_key: 1,
            cipher: "none".into(),
            database_id: 1,
            pg_version: String::new(),
            repo_ok: true,
            backups: Vec::new(),
            wal_min_max: None,
            running: None,
            archive: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }

    /// The kinds whose newest backup counts as the last `self` backup: a
    /// full backup also counts as the last diff and incr, a diff as the
    /// last incr (pgbackrest_exporter's rule).
    fn counts_as_last(self, other: BackupKind) -> bool {
        matches!(
            (self, other),
            (BackupKind::Full, BackupKind::Full)
                | (BackupKind::Diff, BackupKind::Full | BackupKind::Diff)
                | (BackupKind::Incr, _)
        )
    }
}

/// One complete backup.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    pub label: String,
    pub kind: BackupKind,
    /// Block-level incremental (`block_incr` label "y"/"n").
    pub block_incr: bool,
    /// The backup it depends on (incremental and differential).
    pub prior: Option<String>,
    pub start_time: SystemTime,
    pub stop_time: SystemTime,
    /// Bytes of the database, and of the files this backup copied.
    pub size: u64,
    pub delta: u64,
    /// Bytes in the repository needed to restore it, and stored by it.
    pub repo_size: u64,
    pub repo_delta: u64,
    /// Errors were found while copying (page checksums).
    pub error: bool,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal: String,
    pub stop_wal: String,
    /// Version of the program that took it (`backrest_ver` label).
    pub version: String,
}

/// A running backup's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// WAL archiving counted by this member.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArchiveStats {
    pub pushed: u64,
    pub failed: u64,
    pub last_push: Option<SystemTime>,
    pub last_failure: Option<SystemTime>,
}

/// pgBackRest's status codes (stanza and repository).
const STATUS_OK: f64 = 0.0;
const STATUS_NO_BACKUP: f64 = 2.0;
const STATUS_OTHER: f64 = 99.0;

fn yes_no(b: bool) -> &'static str {
    if b {
        "y"
    } else {
        "n"
    }
}

/// `2006-01-02 15:04:05`, UTC (pgbackrest_exporter's label layout).
fn label_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

/// The architecture in Go's words (`goarch` label).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn seconds_between(start: SystemTime, stop: SystemTime) -> f64 {
    epoch_seconds(stop) - epoch_seconds(start)
}

pub fn families(input: &BackupInput, now: SystemTime) -> Vec<Family> {
    let stanza = input.stanza.as_str();
    let repo_key = input.repo_key.to_string();
    let database_id = input.database_id.to_string();
    let mut out = Vec::new();
    let single = |name: &str, help: &str, value: f64| {
        let mut f = Family::with_labels(name, help, Kind::Gauge, &["stanza"]);
        f.push(&[stanza], value);
        f
    };

    let mut build = Family::with_labels(
        "pgbackrest_exporter_build_info",
        "A metric with a constant '1' value labeled by version, revision, branch, goversion from which pgbackrest_exporter was built, and the goos and goarch for the build.",
        Kind::Gauge,
        &["branch", "goarch", "goos", "goversion", "revision", "tags", "version"],
    );
    build.push(
        &[
            "",
            go_arch(),
            std::env::consts::OS,
            "",
            "",
            "",
            env!("CARGO_PKG_VERSION"),
        ],
        1.0,
    );
    out.push(build);
    out.push(single(
        "pgbackrest_exporter_status",
        "pgBackRest exporter status: 1 if the last read of the repository succeeded, 0 otherwise.",
        if input.repo_ok { 1.0 } else { 0.0 },
    ));

    let status = match (input.repo_ok, input.backups.is_empty()) {
        (false, _) => STATUS_OTHER,
        (true, true) => STATUS_NO_BACKUP,
        (true, false) => STATUS_OK,
    };
    out.push(single(
        "pgbackrest_stanza_status",
        "Current stanza status: 0 ok, 2 no valid backups, 99 other (the repository could not be read).",
        status,
    ));
    let mut repo = Family::with_labels(
        "pgbackrest_repo_status",
        "Current repository status, codes as pgbackrest_stanza_status.",
        Kind::Gauge,
        &["cipher", "repo_key", "stanza"],
    );
    repo.push(&[&input.cipher, &repo_key, stanza], status);
    out.push(repo);

    let locked = if input.running.is_some() { 1.0 } else { 0.0 };
    let progress = input.running.unwrap_or_default();
    for (name, help, value) in [
        ("pgbackrest_stanza_lock_status", "Current stanza lock status: 1 while a backup runs.", locked),
        ("pgbackrest_stanza_backup_lock_status", "Current stanza backup lock status: 1 while a backup runs.", locked),
        ("pgbackrest_stanza_backup_compete_bytes", "Bytes of the running backup already copied (pgbackrest_exporter up to v0.22 spelling).", progress.done_bytes as f64),
        ("pgbackrest_stanza_backup_complete_bytes", "Bytes of the running backup already copied.", progress.done_bytes as f64),
        ("pgbackrest_stanza_backup_total_bytes", "Bytes the running backup will copy.", progress.total_bytes as f64),
    ] {
        out.push(single(name, help, value));
    }

    let mut wal = Family::with_labels(
        "pgbackrest_wal_archive_status",
        "Current WAL archive status: 1 if both the oldest and newest archived WAL are known.",
        Kind::Gauge,
        &["database_id", "pg_version", "repo_key", "stanza"],
    );
    let wal_known = input
        .wal_min_max
        .as_ref()
        .is_some_and(|(min, max)| !min.is_empty() && !max.is_empty());
    wal.push(
        &[&database_id, &input.pg_version, &repo_key, stanza],
        if wal_known { 1.0 } else { 0.0 },
    );
    out.push(wal);

    out.extend(per_backup(input, &repo_key, &database_id));
    out.extend(last_backups(input, now));

    if let Some(archive) = &input.archive {
        let counter = |name: &str, help: &str, value: u64| {
            let mut f = Family::with_labels(name, help, Kind::Counter, &["stanza"]);
            f.push(&[stanza], value as f64);
            f
        };
        out.push(counter(
            "pgpilot_wal_archive_pushes_total",
            "WAL files archived by this member.",
            archive.pushed,
        ));
        out.push(counter(
            "pgpilot_wal_archive_push_failures_total",
            "Failed attempts to archive a WAL file on this member.",
            archive.failed,
        ));
        if let Some(t) = archive.last_push {
            out.push(single(
                "pgpilot_wal_archive_last_push_timestamp_seconds",
                "When this member last archived a WAL file, epoch seconds.",
                epoch_seconds(t),
            ));
        }
        if let Some(t) = archive.last_failure {
            out.push(single(
                "pgpilot_wal_archive_last_failure_timestamp_seconds",
                "When archiving a WAL file last failed on this member, epoch seconds.",
                epoch_seconds(t),
            ));
        }
    }
    out
}

/// One series per backup of the catalog (bounded by retention).
fn per_backup(input: &BackupInput, repo_key: &str, database_id: &str) -> Vec<Family> {
    const LABELS: &[&str] = &[
        "backup_name",
        "backup_type",
        "block_incr",
        "database_id",
        "repo_key",
        "stanza",
    ];
    let mut info = Family::with_labels(
        "pgbackrest_backup_info",
        "Backup info.",
        Kind::Gauge,
        &[
            "backrest_ver",
            "backup_name",
            "backup_type",
            "block_incr",
            "database_id",
            "lsn_start",
            "lsn_stop",
            "pg_version",
            "prior",
            "repo_key",
            "stanza",
            "wal_start",
            "wal_stop",
        ],
    );
    let mut duration = Family::with_labels(
        "pgbackrest_backup_duration_seconds",
        "Backup duration.",
        Kind::Gauge,
        &[
            "backup_name",
            "backup_type",
            "block_incr",
            "database_id",
            "repo_key",
            "stanza",
            "start_time",
            "stop_time",
        ],
    );
    let mut size = Family::with_labels(
        "pgbackrest_backup_size_bytes",
        "Full uncompressed size of the database.",
        Kind::Gauge,
        LABELS,
    );
    let mut delta = Family::with_labels(
        "pgbackrest_backup_delta_bytes",
        "Amount of data in the database to actually backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut repo_size = Family::with_labels(
        "pgbackrest_backup_repo_size_bytes",
        "Full compressed files size to restore the database from backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut repo_delta = Family::with_labels(
        "pgbackrest_backup_repo_delta_bytes",
        "Compressed files size in backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut error = Family::with_labels(
        "pgbackrest_backup_error_status",
        "Backup error status.",
        Kind::Gauge,
        LABELS,
    );
    for b in &input.backups {
        let kind = b.kind.as_str();
        let incr = yes_no(b.block_incr);
        info.push(
            &[
                &b.version,
                &b.label,
                kind,
                incr,
                database_id,
                &b.start_lsn,
                &b.stop_lsn,
                &input.pg_version,
                b.prior.as_deref().unwrap_or(""),
                repo_key,
                &input.stanza,
                &b.start_wal,
                &b.stop_wal,
            ],
            1.0,
        );
        duration.push(
            &[
                &b.label,
                kind,
                incr,
                database_id,
                repo_key,
                &input.stanza,
                &label_time(b.start_time),
                &label_time(b.stop_time),
            ],
            seconds_between(b.start_time, b.stop_time),
        );
        let labels = [
            b.label.as_str(),
            kind,
            incr,
            database_id,
            repo_key,
            input.stanza.as_str(),
        ];
        size.push(&labels, b.size as f64);
        delta.push(&labels, b.delta as f64);
        repo_size.push(&labels, b.repo_size as f64);
        repo_delta.push(&labels, b.repo_delta as f64);
        error.push(&labels, if b.error { 1.0 } else { 0.0 });
    }
    let rows: Vec<Vec<String>> = input
        .backups
        .iter()
        .map(|b| {
            vec![
                b.label.clone(),
                b.kind.as_str().to_string(),
                yes_no(b.block_incr).to_string(),
                database_id.to_string(),
                repo_key.to_string(),
                input.stanza.clone(),
            ]
        })
        .collect();
    let mut out = vec![info, duration, size, delta, repo_size, repo_delta, error];
    out.extend(without_maps_or_annotations(
        "pgbackrest_backup",
        LABELS,
        &rows,
    ));
    out
}

/// pgBackRest's block-incremental map sizes and annotation counts, which
/// the charm's dashboard charts: pgpilot backups have neither (incrementals
/// are file-level, no annotations), so each backup reports 0 rather than
/// leaving the panels without series.
fn without_maps_or_annotations(
    prefix: &str,
    labels: &[&'static str],
    rows: &[Vec<String>],
) -> Vec<Family> {
    let specs = [
        ("repo_size_map_bytes", "Size of the block-incremental map (0: pgpilot backups have none)."),
        ("repo_delta_map_bytes", "Size of the block-incremental map stored by this backup (0: pgpilot backups have none)."),
        ("annotations", "Number of annotations of the backup (0: pgpilot backups have none)."),
    ];
    let mut out = Vec::new();
    for (suffix, help) in specs {
        let mut family =
            Family::with_labels(format!("{prefix}_{suffix}"), help, Kind::Gauge, labels);
        for row in rows {
            let values: Vec<&str> = row.iter().map(String::as_str).collect();
            family.push(&values, 0.0);
        }
        out.push(family);
    }
    out
}

/// The newest backup counting as full, diff and incr (see
/// [`BackupKind::counts_as_last`]).
fn last_of(backups: &[BackupRecord], kind: BackupKind) -> Option<&BackupRecord> {
    backups
        .iter()
        .filter(|b| kind.counts_as_last(b.kind))
        .max_by(|a, b| a.stop_time.cmp(&b.stop_time))
}

fn last_backups(input: &BackupInput, now: SystemTime) -> Vec<Family> {
    const LABELS: &[&str] = &["backup_type", "block_incr", "stanza"];
    let mut since = Family::with_labels(
        "pgbackrest_backup_since_last_completion_seconds",
        "Seconds since the last completed full, differential or incremental backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut duration = Family::with_labels(
        "pgbackrest_backup_last_duration_seconds",
        "Backup duration for the last full, differential or incremental backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut size = Family::with_labels("pgbackrest_backup_last_size_bytes", "Full uncompressed size of the database in the last full, differential or incremental backup.", Kind::Gauge, LABELS);
    let mut delta = Family::with_labels("pgbackrest_backup_last_delta_bytes", "Amount of data in the database to actually backup in the last full, differential or incremental backup.", Kind::Gauge, LABELS);
    let mut repo_size = Family::with_labels("pgbackrest_backup_last_repo_size_bytes", "Full compressed files size to restore the database from the last full, differential or incremental backup.", Kind::Gauge, LABELS);
    let mut repo_delta = Family::with_labels(
        "pgbackrest_backup_last_repo_delta_bytes",
        "Compressed files size in the last full, differential or incremental backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut error = Family::with_labels(
        "pgbackrest_backup_last_error_status",
        "Error status in the last full, differential or incremental backup.",
        Kind::Gauge,
        LABELS,
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    for kind in [BackupKind::Full, BackupKind::Diff, BackupKind::Incr] {
        let Some(b) = last_of(&input.backups, kind) else {
            continue;
        };
        let labels = [kind.as_str(), yes_no(b.block_incr), input.stanza.as_str()];
        since.push(&labels, seconds_between(b.stop_time, now));
        duration.push(&labels, seconds_between(b.start_time, b.stop_time));
        size.push(&labels, b.size as f64);
        delta.push(&labels, b.delta as f64);
        repo_size.push(&labels, b.repo_size as f64);
        repo_delta.push(&labels, b.repo_delta as f64);
        error.push(&labels, if b.error { 1.0 } else { 0.0 });
        rows.push(labels.iter().map(|l| l.to_string()).collect());
    }
    let mut out = vec![since, duration, size, delta, repo_size, repo_delta, error];
    out.extend(without_maps_or_annotations(
        "pgbackrest_backup_last",
        LABELS,
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn backup(label: &str, kind: BackupKind, start: u64, stop: u64, size: u64) -> BackupRecord {
        BackupRecord {
            label: label.into(),
            kind,
            block_incr: false,
            prior: None,
            start_time: at(start),
            stop_time: at(stop),
            size,
            delta: size / 2,
            repo_size: size / 3,
            repo_delta: size / 4,
            error: false,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            version: "0.1.0".into(),
        }
    }

    /// `name{labels} value` lines of the rendered families.
    fn text(input: &BackupInput, now: SystemTime) -> String {
        let families: Vec<_> = families(input, now)
            .into_iter()
            .map(Family::into_proto)
            .collect();
        crate::text::encode(&families)
    }

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line}\nin:\n{text}"
        );
    }

    #[test]
    fn last_backup_per_type_follows_pgbackrest_exporter() {
        let mut input = BackupInput::new("main");
        input.backups = vec![
            backup("F1", BackupKind::Full, 1_000, 1_100, 900),
            backup("I1", BackupKind::Incr, 2_000, 2_030, 90),
            backup("F2", BackupKind::Full, 3_000, 3_200, 1_000),
        ];
        let t = text(&input, at(10_000));
        // The newest full (F2) is also the last diff and the last incr.
        has(
            &t,
            r#"pgbackrest_backup_since_last_completion_seconds{backup_type="full",block_incr="n",stanza="main"} 6800"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_since_last_completion_seconds{backup_type="diff",block_incr="n",stanza="main"} 6800"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_since_last_completion_seconds{backup_type="incr",block_incr="n",stanza="main"} 6800"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_last_duration_seconds{backup_type="incr",block_incr="n",stanza="main"} 200"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_last_size_bytes{backup_type="full",block_incr="n",stanza="main"} 1000"#,
        );
        has(&t, r#"pgbackrest_stanza_status{stanza="main"} 0"#);

        // An incremental after F2 becomes the last incr only.
        input
            .backups
            .push(backup("I2", BackupKind::Incr, 5_000, 5_010, 50));
        let t = text(&input, at(10_000));
        has(
            &t,
            r#"pgbackrest_backup_since_last_completion_seconds{backup_type="incr",block_incr="n",stanza="main"} 4990"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_last_size_bytes{backup_type="incr",block_incr="n",stanza="main"} 50"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_since_last_completion_seconds{backup_type="diff",block_incr="n",stanza="main"} 6800"#,
        );
        // The age moves with the clock, not with catalog reads.
        let later = text(&input, at(10_060));
        has(
            &later,
            r#"pgbackrest_backup_since_last_completion_seconds{backup_type="full",block_incr="n",stanza="main"} 6860"#,
        );
    }

    #[test]
    fn per_backup_series_carry_pgbackrest_exporter_labels() {
        let mut input = BackupInput::new("main");
        input.pg_version = "15".into();
        let mut b = backup(
            "20260101-000000F",
            BackupKind::Full,
            1_767_225_600,
            1_767_225_660,
            300,
        );
        b.block_incr = true;
        input.backups = vec![b];
        let t = text(&input, at(1_767_300_000));
        has(
            &t,
            r#"pgbackrest_backup_duration_seconds{backup_name="20260101-000000F",backup_type="full",block_incr="y",database_id="1",repo_key="1",stanza="main",start_time="2026-01-01 00:00:00",stop_time="2026-01-01 00:01:00"} 60"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_info{backrest_ver="0.1.0",backup_name="20260101-000000F",backup_type="full",block_incr="y",database_id="1",lsn_start="0/2000028",lsn_stop="0/2000100",pg_version="15",prior="",repo_key="1",stanza="main",wal_start="000000010000000000000002",wal_stop="000000010000000000000002"} 1"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_repo_size_bytes{backup_name="20260101-000000F",backup_type="full",block_incr="y",database_id="1",repo_key="1",stanza="main"} 100"#,
        );
        has(
            &t,
            r#"pgbackrest_backup_error_status{backup_name="20260101-000000F",backup_type="full",block_incr="y",database_id="1",repo_key="1",stanza="main"} 0"#,
        );
    }

    #[test]
    fn statuses_without_backups_and_with_a_failing_repository() {
        let mut input = BackupInput::new("main");
        let t = text(&input, at(0));
        has(&t, r#"pgbackrest_stanza_status{stanza="main"} 2"#);
        has(&t, r#"pgbackrest_exporter_status{stanza="main"} 1"#);
        has(
            &t,
            r#"pgbackrest_wal_archive_status{database_id="1",pg_version="",repo_key="1",stanza="main"} 0"#,
        );
        assert!(!t.contains("pgbackrest_backup_since_last_completion_seconds{"));

        input.repo_ok = false;
        input.running = Some(BackupProgress {
            done_bytes: 10,
            total_bytes: 40,
        });
        input.wal_min_max = Some((
            "000000010000000000000001".into(),
            "000000010000000000000009".into(),
        ));
        let t = text(&input, at(0));
        has(&t, r#"pgbackrest_stanza_status{stanza="main"} 99"#);
        has(
            &t,
            r#"pgbackrest_repo_status{cipher="none",repo_key="1",stanza="main"} 99"#,
        );
        has(&t, r#"pgbackrest_exporter_status{stanza="main"} 0"#);
        has(&t, r#"pgbackrest_stanza_lock_status{stanza="main"} 1"#);
        has(
            &t,
            r#"pgbackrest_stanza_backup_compete_bytes{stanza="main"} 10"#,
        );
        has(
            &t,
            r#"pgbackrest_stanza_backup_total_bytes{stanza="main"} 40"#,
        );
        has(
            &t,
            r#"pgbackrest_wal_archive_status{database_id="1",pg_version="",repo_key="1",stanza="main"} 1"#,
        );
    }

    #[test]
    fn archive_counters() {
        let mut input = BackupInput::new("main");
        input.archive = Some(ArchiveStats {
            pushed: 7,
            failed: 1,
            last_push: Some(at(500)),
            last_failure: None,
        });
        let t = text(&input, at(600));
        has(&t, r#"pgpilot_wal_archive_pushes_total{stanza="main"} 7"#);
        has(
            &t,
            r#"pgpilot_wal_archive_push_failures_total{stanza="main"} 1"#,
        );
        has(
            &t,
            r#"pgpilot_wal_archive_last_push_timestamp_seconds{stanza="main"} 500"#,
        );
        assert!(!t.contains("pgpilot_wal_archive_last_failure_timestamp_seconds"));
    }

    #[test]
    fn label_time_layout() {
        assert_eq!(label_time(at(1_767_225_661)), "2026-01-01 00:01:01");
    }
}
