//! The `s3-parameters` relation and backups in a hook: the seed's
//! s3-credentials-changed flowchart, and a restore's progress.
//!
//! - every unit renders the repository through `snap set` (the S3 keys go
//!   with pgpilot's other keys: one transaction, a rolling restart);
//! - the leader writes `bucket` and `requested-secrets` on its side;
//! - the leader checks the repository with `pgpilot check` once the
//!   settings run on its unit (and again in update-status): a repository
//!   that cannot be reached or initialised, archiving that does not work, or
//!   another cluster's stanza block the leader with a message that says so;
//!   the next check that passes clears it;
//! - while a restore runs the unit shows `restoring backup`, then active
//!   once its member leads, or blocked when pgpilot gave the restore up.

use serde_json::Value;

use super::Reconciler;
use crate::actions::RESTORING;
use crate::backup::{self as b, APP_RESTORE_FAILED, APP_RESTORING, APP_S3_CHECKED, APP_S3_STATUS};
use crate::context::S3_ENDPOINT;
use crate::observe::Observed;
use crate::plan::Step;
use crate::relation::bag_changes;
use crate::s3::{self, S3Settings};
use crate::status::{Status, StatusKind};
use crate::tools::LogLevel;

/// pgpilot's member state after a bootstrap (here: the restore) failed.
const BOOTSTRAP_FAILED: &str = "initdb failed";

/// The part of the configuration fingerprint the S3 settings make (empty
/// without them): every pgpilot runs with the same repository.
pub(super) fn s3_fingerprint(o: &Observed) -> String {
    b::settings(o)
        .ready()
        .map(|p| format!("-s3-{}", b::fingerprint(o, p)))
        .unwrap_or_default()
}

impl Reconciler<'_> {
    /// The relation's side the leader writes; the `pgpilot.backup.*` keys
    /// this unit should hold, and what of them the rolling restarts'
    /// fingerprint must cover.
    pub(super) fn s3_keys(&mut self) -> (Vec<(String, Value)>, String) {
        let o = self.o;
        let settings = b::settings(o);
        if o.is_leader {
            if let Some(rel) = o.relations_on(S3_ENDPOINT).first() {
                let changes = bag_changes(&rel.local_app_data, &s3::requirer_bag(rel));
                if !changes.is_empty() {
                    self.plan.push(Step::SetRelationData {
                        relation_id: rel.id.clone(),
                        app: true,
                        data: changes,
                    });
                }
            }
            if settings == S3Settings::Unrelated {
                self.set_app(APP_S3_CHECKED, "");
                self.set_app(APP_S3_STATUS, "");
            }
        }
        (b::desired_keys(o, &settings), s3_fingerprint(o))
    }

    /// The unit's status with backups considered: a restore's progress,
    /// then (leader) what the S3 settings and the check say.
    pub(super) fn backup_status(&mut self, status: Status) -> Status {
        let o = self.o;
        if let Some(what) = self.app_value(APP_RESTORING).map(str::to_string) {
            return self.restore_status(&what, status);
        }
        if !o.is_leader {
            return status;
        }
        let blocked = match b::settings(o) {
            S3Settings::Unrelated | S3Settings::Pending => None,
            S3Settings::Missing(keys) => Some(format!(
                "Missing S3 parameters: {keys:?}: set them on s3-integrator"
            )),
            S3Settings::Invalid(why) => Some(why),
            S3Settings::Ready(p) => {
                let fingerprint = b::fingerprint(o, &p);
                if let Some(outcome) = &o.backup.check {
                    match b::check_status(outcome, &p) {
                        Ok(found) => {
                            self.set_app(APP_S3_CHECKED, fingerprint.clone());
                            self.set_app(APP_S3_STATUS, found.clone().unwrap_or_default());
                            if let Some(m) = &found {
                                self.plan
                                    .log(LogLevel::Warning, format!("pgpilot check: {m}"));
                            }
                        }
                        Err(reason) => self.plan.log(
                            LogLevel::Info,
                            format!("pgpilot check said nothing about S3: {reason}"),
                        ),
                    }
                }
                if self.app_value(APP_S3_CHECKED) == Some(fingerprint.as_str()) {
                    self.app_value(APP_S3_STATUS).map(str::to_string)
                } else {
                    None
                }
            }
        };
        match blocked {
            Some(m) if status.kind == StatusKind::Active => Status::blocked(m),
            _ => status,
        }
    }

    fn restore_status(&mut self, what: &str, status: Status) -> Status {
        let o = self.o;
        let mine = o.my_cluster_member();
        if mine.is_some_and(|m| m.is_leader() && m.is_healthy()) {
            if o.is_leader {
                self.set_app(APP_RESTORING, "");
                self.set_app(APP_RESTORE_FAILED, "");
                self.plan
                    .log(LogLevel::Info, format!("the restore of {what} finished"));
            }
            return status;
        }
        if mine.is_some_and(|m| m.state == BOOTSTRAP_FAILED) && o.is_leader {
            let why = format!(
                "Failed to restore backup {what}: pgpilot could not restore it (snap logs charmed-postgresql.pgpilot says why); run restore again with another backup-id or restore-to-time"
            );
            self.set_app(APP_RESTORE_FAILED, why);
        }
        match self.app_value(APP_RESTORE_FAILED) {
            Some(why) => Status::blocked(why),
            None => Status::maintenance(RESTORING),
        }
    }
}
