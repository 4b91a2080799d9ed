//! What a hook reads for backups: the S3 provider's `secret-extra` secret,
//! `pgpilot check` when the leader is due to check the repository
//! ([`crate::backup::check_due`]), `pgpilot info --output json` for
//! list-backups and restore.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Observed;
use crate::backup::{check_due, BackupView, CommandOutcome};
use crate::context::{Event, S3_ENDPOINT};
use crate::snap::{exit_code, SnapDriver, SnapError};
use crate::tools::HookTools;

/// `pgpilot check` waits up to `backup.archive_timeout` (60 s) for WAL;
/// an unreachable S3 is retried for about 20 s.
const CHECK_TIMEOUT: Duration = Duration::from_secs(150);
const INFO_TIMEOUT: Duration = Duration::from_secs(120);

/// A command's result as the decision needs it.
pub fn outcome(result: Result<String, SnapError>) -> CommandOutcome {
    match result {
        Ok(out) => CommandOutcome {
            code: 0,
            output: out,
        },
        Err(SnapError::Failed { status, stderr, .. }) => CommandOutcome {
            code: exit_code(&status),
            output: stderr,
        },
        Err(other) => CommandOutcome {
            code: -1,
            output: other.to_string(),
        },
    }
}

/// The provider's `secret-extra` secret, when it names one.
pub(super) fn read_secret(
    o: &Observed,
    tools: &dyn HookTools,
) -> Option<Result<BTreeMap<String, String>, String>> {
    let uri = o
        .relations_on(S3_ENDPOINT)
        .first()
        .and_then(|r| r.remote("secret-extra"))?;
    Some(
        tools
            .secret_get(uri, true)
            .map_err(|e| e.stderr().map(str::to_string).unwrap_or(e.to_string())),
    )
}

/// `pgpilot check` (when due) and `pgpilot info` (for the actions that
/// list backups), once the snap is installed; `o.backup.s3_secret` is read.
pub(super) fn read_commands(o: &Observed, snap: &dyn SnapDriver) -> BackupView {
    let mut view = BackupView {
        s3_secret: o.backup.s3_secret.clone(),
        ..Default::default()
    };
    if o.snap.is_none() {
        return view;
    }
    if check_due(o) {
        view.check = Some(outcome(snap.run_app(
            "pgpilot",
            &["check".to_string()],
            CHECK_TIMEOUT,
        )));
    }
    if matches!(&o.event, Event::Action { name, .. } if name == "list-backups" || name == "restore")
    {
        view.info = Some(outcome(snap.run_app(
            "pgpilot",
            &["info".to_string(), "--output".into(), "json".into()],
            INFO_TIMEOUT,
        )));
    }
    view
}
