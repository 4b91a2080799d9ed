//! Backups to S3, as plain data and pure decisions: what a hook reads of
//! the repository ([`BackupView`]), when the leader checks the repository
//! ([`check_due`]), what the check's outcome means ([`check_status`]), the
//! list-backups table ([`table`]) and the restore's parameters. The
//! actions are in `actions/backup.rs`, the steps' I/O in `apply/backup.rs`.
//!
//! Peer application bag keys (the leader writes them):
//!
//! | key | value |
//! |---|---|
//! | `s3-checked` | fingerprint of the S3 settings the leader last checked |
//! | `s3-status` | why the repository cannot be used (the leader is blocked), or empty |
//! | `restoring-backup` | the backup (label or time) a restore started from, until it is seen to finish |
//! | `restore-failed` | why the last restore failed, until another one starts |

use std::collections::BTreeMap;

use serde_json::Value;

use crate::context::{Event, RelationKind};
use crate::observe::Observed;
use crate::reconcile::snap_diff;
use crate::s3::{self, S3Params, S3Settings};
use crate::snap::SERVICE_PGPILOT;

pub const APP_S3_CHECKED: &str = "s3-checked";
pub const APP_S3_STATUS: &str = "s3-status";
pub const APP_RESTORING: &str = "restoring-backup";
pub const APP_RESTORE_FAILED: &str = "restore-failed";

/// pgpilot's exit codes the charm tells apart (docs/backup.md).
pub mod code {
    pub const REPOSITORY: i32 = 3;
    pub const POSTGRES: i32 = 6;
    pub const NOT_FOUND: i32 = 7;
    pub const WRONG_CLUSTER: i32 = 44;
    pub const TIMEOUT: i32 = 82;
}

/// How a pgpilot command ended: its exit code (-1: it did not finish or
/// could not run) and its output (stdout on success, stderr otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub code: i32,
    pub output: String,
}

impl CommandOutcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// The last line that says something (pgpilot's `ERROR [...]: ...`).
    pub fn reason(&self) -> String {
        let line = self
            .output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim();
        line.split_once("]: ").map_or(line, |(_, m)| m).to_string()
    }
}

/// What a hook read of backups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupView {
    /// The content of the provider's `secret-extra` secret, when it names
    /// one (`Err`: why it could not be read).
    pub s3_secret: Option<Result<BTreeMap<String, String>, String>>,
    /// `pgpilot check`, when [`check_due`].
    pub check: Option<CommandOutcome>,
    /// `pgpilot info --output json`, for list-backups and restore.
    pub info: Option<CommandOutcome>,
}

/// The S3 settings of this hook (a relation being broken counts as gone).
pub fn settings(o: &Observed) -> S3Settings {
    let relations: Vec<_> = o
        .relations_on(crate::context::S3_ENDPOINT)
        .iter()
        .filter(|r| {
            !matches!(&o.event, Event::Relation { relation_id, kind: RelationKind::Broken, .. }
                if *relation_id == r.id)
        })
        .cloned()
        .collect();
    s3::settings(&relations, o.backup.s3_secret.as_ref())
}

/// The `pgpilot.backup.*` keys this unit should hold: the S3 repository
/// when the settings are complete; without the relation, no S3 key and
/// (when this charm had set S3) the snap's default posix repository;
/// nothing (keep what is set) while the provider has not sent usable
/// settings.
pub fn desired_keys(o: &Observed, settings: &S3Settings) -> Vec<(String, Value)> {
    let stanza = s3::stanza(&o.model, &o.app);
    match settings {
        S3Settings::Ready(p) => s3::snap_keys(Some(p), &stanza),
        S3Settings::Unrelated => {
            let mut keys = s3::snap_keys(None, &stanza);
            let repository = crate::snap::lookup(&o.snap_config, "pgpilot.backup.repository");
            if repository != Some(&Value::from("s3")) {
                keys.remove(0);
            }
            keys
        }
        _ => Vec::new(),
    }
}

/// The settings are in this unit's snap configuration.
pub fn applied(o: &Observed, p: &S3Params) -> bool {
    let keys = s3::snap_keys(Some(p), &s3::stanza(&o.model, &o.app));
    snap_diff(&o.snap_config, &keys).is_empty()
}

/// The fingerprint of complete settings (what `s3-checked` records).
pub fn fingerprint(o: &Observed, p: &S3Params) -> String {
    s3::fingerprint(&s3::snap_keys(Some(p), &s3::stanza(&o.model, &o.app)))
}

fn app_value<'a>(o: &'a Observed, key: &str) -> Option<&'a str> {
    o.peer.as_ref()?.app(key)
}

/// Does the leader run `pgpilot check` in this hook? When the settings are
/// complete and applied on its unit, its pgpilot runs a healthy member of a
/// cluster with a healthy primary, no restore is under way, and either
/// these settings were not checked yet, or the hook is one that re-checks
/// (update-status, the relation, leadership).
pub fn check_due(o: &Observed) -> bool {
    if !o.is_leader || o.event.is_action() || !o.service_active(SERVICE_PGPILOT) {
        return false;
    }
    let settings = settings(o);
    let Some(p) = settings.ready() else {
        return false;
    };
    if !applied(o, p) || app_value(o, APP_RESTORING).is_some() {
        return false;
    }
    let healthy_primary = o
        .cluster
        .as_deref()
        .and_then(crate::cluster::leader)
        .is_some_and(|l| l.is_healthy());
    if !healthy_primary || !o.my_cluster_member().is_some_and(|m| m.is_healthy()) {
        return false;
    }
    if app_value(o, APP_S3_CHECKED) != Some(fingerprint(o, p).as_str()) {
        return true;
    }
    match &o.event {
        Event::UpdateStatus | Event::LeaderElected => true,
        Event::Relation { endpoint, .. } => endpoint == crate::context::S3_ENDPOINT,
        _ => false,
    }
}

/// What a check's outcome means: `Ok(None)` the repository works,
/// `Ok(Some(message))` it cannot be used (blocked), `Err(reason)` the
/// check says nothing about S3 (PostgreSQL was not ready): keep the last.
pub fn check_status(outcome: &CommandOutcome, p: &S3Params) -> Result<Option<String>, String> {
    let reason = outcome.reason();
    let place = if p.path.is_empty() {
        format!("bucket {}", p.bucket)
    } else {
        format!("bucket {} path {}", p.bucket, p.path)
    };
    Ok(Some(match outcome.code {
        0 => return Ok(None),
        code::POSTGRES => return Err(reason),
        code::WRONG_CLUSTER => format!(
            "the S3 repository has backups from another cluster ({place}): relate to another bucket or path"
        ),
        code::REPOSITORY => format!(
            "failed to access the bucket, check your S3 settings ({place}): {reason}"
        ),
        code::TIMEOUT => format!("WAL archiving to S3 is not working ({place}): {reason}"),
        _ => format!("failed to initialise the S3 repository ({place}): {reason}"),
    }))
}

/// pgBackRest-style label → today's backup id: `20260301-020000F` and
/// `20260301-020000F_20260302-020000I` → `2026-03-01T02:00:00Z`,
/// `2026-03-02T02:00:00Z`; another label is its own id.
pub fn backup_id(label: &str) -> String {
    let own = label.rsplit('_').next().unwrap_or(label);
    let b = own.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 16 && digits(0..8) && b[8] == b'-' && digits(9..15) && b"FDI".contains(&b[15]) {
        return format!(
            "{}-{}-{}T{}:{}:{}Z",
            &own[0..4],
            &own[4..6],
            &own[6..8],
            &own[9..11],
            &own[11..13],
            &own[13..15]
        );
    }
    label.to_string()
}

/// Epoch seconds → `2026-03-01T02:00:00Z`.
pub fn iso_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One backup of `pgpilot info --output json`, as list-backups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub label: String,
    pub kind: String,
    pub status: String,
    pub reference: String,
    pub lsn: String,
    pub start: String,
    pub finish: String,
    pub timeline: String,
    pub path: String,
}

/// The backups in `info` (pgpilot's JSON), oldest first.
pub fn listed(info: &Value, base: &str) -> Result<Vec<Listed>, String> {
    let stanza = info
        .as_array()
        .and_then(|a| a.first())
        .ok_or("pgpilot info printed no stanza")?;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_string(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    for b in stanza["backup"].as_array().cloned().unwrap_or_default() {
        let label = text(&b["label"]);
        let kind = match b["type"].as_str() {
            Some("incr") => "incremental",
            Some("diff") => "differential",
            Some(other) => other,
            None => "full",
        };
        out.push(Listed {
            id: backup_id(&label),
            kind: kind.to_string(),
            status: if b["error"].as_bool() == Some(true) {
                "finished, pages failed their checksum".into()
            } else {
                "finished".into()
            },
            reference: b["prior"]
                .as_str()
                .map(backup_id)
                .unwrap_or_else(|| "None".into()),
            lsn: format!("{} / {}", text(&b["lsn"]["start"]), text(&b["lsn"]["stop"])),
            start: b["timestamp"]["start"]
                .as_i64()
                .map(iso_time)
                .unwrap_or_default(),
            finish: b["timestamp"]["stop"]
                .as_i64()
                .map(iso_time)
                .unwrap_or_default(),
            timeline: text(&b["timeline"]),
            path: format!("{base}{label}"),
            label,
        });
    }
    Ok(out)
}

/// The list-backups text: where, then one row per backup.
pub fn table(bucket: &str, base: &str, rows: &[Listed]) -> String {
    let header = [
        "backup-id",
        "type",
        "status",
        "reference-backup-id",
        "LSN start/stop",
        "start-time",
        "finish-time",
        "timeline",
        "backup-path",
    ];
    let cells: Vec<[&str; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.id.as_str(),
                r.kind.as_str(),
                r.status.as_str(),
                r.reference.as_str(),
                r.lsn.as_str(),
                r.start.as_str(),
                r.finish.as_str(),
                r.timeline.as_str(),
                r.path.as_str(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..9)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: &[&str]| {
        c.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = format!("Storage bucket name: {bucket}\nBackups base path: {base}\n\n");
    out.push_str(&line(&header));
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 3 * 8));
    for c in &cells {
        out.push('\n');
        out.push_str(&line(c));
    }
    out
}

/// Where the stanza's backups are: `/<path>/<stanza>/backup/`.
pub fn base_path(p: &S3Params, stanza: &str) -> String {
    if p.path.is_empty() {
        format!("/{stanza}/backup/")
    } else {
        format!("/{}/{stanza}/backup/", p.path)
    }
}

/// A restore-to-time PostgreSQL and pgpilot accept:
/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]|-HH[:MM]|Z]` (a `T` between
/// date and time is read as a space); `None`: not that.
pub fn restore_time(text: &str) -> Option<String> {
    let t = text.trim().replacen('T', " ", 1);
    let b = t.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if b.len() < 19 {
        return None;
    }
    let fixed = (0..19).all(|i| match i {
        4 | 7 => b[i] == b'-',
        10 => b[i] == b' ',
        13 | 16 => b[i] == b':',
        _ => digit(i),
    });
    if !fixed {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t[r].parse::<u32>().ok();
    let (month, day, hour, minute, second) = (
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 6 {
            return None;
        }
        rest = &frac[n..];
    }
    let zone_ok = match rest {
        "" | "Z" => true,
        z => {
            let z = z.strip_prefix(['+', '-']).unwrap_or("x");
            let zb = z.as_bytes();
            let d = |i: usize| zb.get(i).is_some_and(u8::is_ascii_digit);
            match zb.len() {
                2 => d(0) && d(1),
                4 => (0..4).all(d),
                5 => d(0) && d(1) && zb[2] == b':' && d(3) && d(4),
                _ => false,
            }
        }
    };
    zone_ok.then(|| {
        if rest == "Z" {
            format!("{}+00", &t[..t.len() - 1])
        } else {
            t.clone()
        }
    })
}

#[cfg(test)]
#[path = "backup_tests.rs"]
pub(crate) mod tests;
