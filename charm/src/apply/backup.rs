//! Carrying out [`Step::CreateBackup`] and [`Step::Restore`]: the branches
//! of the flowcharts that come after the work started. A backup's output
//! goes to the repository as a log (`pgpilot put-log`), failed or not; a
//! restore that fails before the data directory is emptied starts the
//! database again on its data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ApplyError, Target};
use crate::actions::{CREATING, RESTORING};
use crate::backup::CommandOutcome;
use crate::etcd;
use crate::plan::Step;
use crate::snap::{Captured, SERVICE_PGPILOT};
use crate::status::Status;

/// A backup may take hours (`juju run --wait` decides how long to wait).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
const SHORT: Duration = Duration::from_secs(120);
const WIPE_TIMEOUT: Duration = Duration::from_secs(1800);

fn show(t: &Target<'_>, status: &Option<Status>) {
    if let Some(s) = status {
        let _ = t.tools.status_set(false, s);
    }
}

/// The label in `pgpilot backup`'s output (`new backup label = L`).
pub fn label_of(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("new backup label = "))
        .map(|l| l.trim().to_string())
}

/// The log stored for a backup run.
pub fn log_text(command: &str, run: &Captured) -> String {
    format!(
        "$ {command}\nexit status {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
        run.code,
        run.stdout.trim_end(),
        run.stderr.trim_end()
    )
}

/// Store `text` as `<stanza>/log/<name>`: where it went, or why not.
fn put_log(t: &Target<'_>, name: &str, text: &str) -> Result<String, String> {
    let args = ["put-log", "--name", name].map(String::from);
    t.snap
        .run_app_with("pgpilot", &args, Some(text), &[], SHORT)
        .map(|out| out.trim().to_string())
        .map_err(|e| e.to_string())
}

pub(super) fn create_backup(t: &Target<'_>, step: &Step) -> Result<(), ApplyError> {
    let Step::CreateBackup { kind, status_after } = step else {
        unreachable!("called for CreateBackup only")
    };
    let _ = t.tools.status_set(false, &Status::maintenance(CREATING));
    let args = ["backup", "--type", kind].map(String::from);
    let run = t.snap.run_app_captured("pgpilot", &args, BACKUP_TIMEOUT);
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            show(t, status_after);
            return Err(ApplyError::Failed(format!(
                "Failed to backup PostgreSQL with error: {e}"
            )));
        }
    };
    let label = label_of(&run.stdout).filter(|_| run.code == 0);
    let name = match &label {
        Some(l) => format!("backup-{l}.log"),
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("backup-failed-{now}.log")
        }
    };
    let stored = put_log(
        t,
        &name,
        &log_text(&format!("pgpilot {}", args.join(" ")), &run),
    );
    show(t, status_after);
    let Some(label) = label else {
        let reason = CommandOutcome {
            code: run.code,
            output: run.stderr.clone(),
        }
        .reason();
        let log = match &stored {
            Ok(where_) => format!("; the log: {where_}"),
            Err(e) => format!("; Error uploading logs to S3: {e}"),
        };
        return Err(ApplyError::Failed(format!(
            "Failed to backup PostgreSQL with error: {reason}{log}"
        )));
    };
    match stored {
        Ok(where_) => {
            let _ = t
                .tools
                .action_log(&format!("backup {label} created; the log: {where_}"));
            Ok(())
        }
        Err(e) => Err(ApplyError::Failed(format!(
            "backup {label} created, but Error uploading logs to S3: {e}"
        ))),
    }
}

pub(super) fn restore(t: &Target<'_>, step: &Step) -> Result<(), ApplyError> {
    let Step::Restore {
        scope,
        etcd_endpoints,
        bootstrap,
        status_after,
    } = step
    else {
        unreachable!("called for Restore only")
    };
    let pgpilot = [SERVICE_PGPILOT.to_string()];
    let fail = |what: String| {
        show(t, status_after);
        ApplyError::Failed(what)
    };
    let start_again = |what: &str, e: String| {
        let again = match t.snap.start(&pgpilot, true) {
            Ok(()) => "the database was started again on its data".to_string(),
            Err(s) => format!("starting the database again failed too: {s}"),
        };
        fail(format!("{what}: {e}; {again}"))
    };
    if let Err(e) = t.snap.stop(&pgpilot, true) {
        return Err(fail(format!("Failed to stop database service: {e}")));
    }
    let prefix = format!("/pgpilot/{scope}/");
    let args = etcd::del_prefix_args(etcd_endpoints, &prefix);
    if let Err(e) = t.snap.run_app("etcdctl", &args, SHORT) {
        return Err(start_again(
            "Failed to remove previous cluster information with error",
            e.to_string(),
        ));
    }
    if let Err(e) = t.snap.set(bootstrap) {
        return Err(start_again(
            "Failed to configure the restore",
            e.to_string(),
        ));
    }
    let wipe = ["wipe-data-dir", "--yes"].map(String::from);
    if let Err(e) = t.snap.run_app("pgpilot", &wipe, WIPE_TIMEOUT) {
        return Err(start_again(
            "Failed to empty the data directory",
            e.to_string(),
        ));
    }
    if let Err(e) = t.snap.start(&pgpilot, true) {
        return Err(ApplyError::Failed(format!(
            "the data directory is empty and the restore is configured, but the database did not start: {e}; run: snap start --enable charmed-postgresql.pgpilot"
        )));
    }
    let _ = t.tools.status_set(false, &Status::maintenance(RESTORING));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_and_the_log() {
        assert_eq!(
            label_of("something\nnew backup label = 20260301-020000F\n").as_deref(),
            Some("20260301-020000F")
        );
        assert_eq!(label_of("nothing"), None);
        let run = Captured {
            code: 3,
            stdout: String::new(),
            stderr: "pgpilot backup: ERROR [003]: repository s3://b: refused\n".into(),
        };
        let log = log_text("pgpilot backup --type full", &run);
        assert!(log.starts_with("$ pgpilot backup --type full\nexit status 3\n"));
        assert!(log.contains("ERROR [003]"));
    }
}
