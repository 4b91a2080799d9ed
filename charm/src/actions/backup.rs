//! create-backup, list-backups and restore: the seed's flowcharts, one
//! branch per check, as pure functions of the [`Observed`] snapshot. The
//! long work is one step each ([`Step::CreateBackup`], [`Step::Restore`]),
//! carried out by `apply/backup.rs`, which also takes the failure branches
//! that come after a step started (logs uploaded, the database started
//! again).

use std::collections::BTreeMap;

use serde_json::Value;

use super::param_str;
use crate::backup::{self as b, CommandOutcome};
use crate::cluster;
use crate::context::unit_of_member;
use crate::observe::Observed;
use crate::plan::{ActionPlan, Step};
use crate::s3::{self, S3Params, S3Settings};
use crate::snap::SERVICE_PGPILOT;
use crate::status::{Status, StatusKind};

pub const NO_RELATION: &str =
    "Relation with s3-integrator charm missing, cannot create/restore backup.";
pub const CREATING: &str = "creating backup";
pub const RESTORING: &str = "restoring backup";

/// The S3 settings an action needs: complete, and (`initialised`) checked
/// by the leader on this cluster.
fn s3_ready(o: &Observed, initialised: bool) -> Result<S3Params, ActionPlan> {
    let p = match b::settings(o) {
        S3Settings::Unrelated => return Err(ActionPlan::fail(NO_RELATION)),
        S3Settings::Pending => {
            return Err(ActionPlan::fail(
                "s3-integrator has not sent its settings yet: configure it (juju config s3-integrator bucket=... endpoint=...; juju run s3-integrator/leader sync-s3-credentials access-key=... secret-key=...)",
            ))
        }
        S3Settings::Missing(keys) => {
            return Err(ActionPlan::fail(format!(
                "Missing S3 parameters: {keys:?}: set them on s3-integrator"
            )))
        }
        S3Settings::Invalid(why) => return Err(ActionPlan::fail(why)),
        S3Settings::Ready(p) => *p,
    };
    if initialised {
        let checked = o.peer.as_ref().and_then(|peer| peer.app(b::APP_S3_CHECKED));
        if !b::applied(o, &p) || checked != Some(b::fingerprint(o, &p).as_str()) {
            return Err(ActionPlan::fail(
                "the S3 repository is not initialised yet: every unit takes the S3 settings (a rolling restart), then the leader checks the repository; wait until juju status shows no S3 message and run the action again",
            ));
        }
    }
    Ok(p)
}

/// Blocked: this unit, or the repository (the leader's finding).
fn blocked(o: &Observed) -> Option<String> {
    if let Some(s) = o
        .unit_status
        .as_ref()
        .filter(|s| s.kind == StatusKind::Blocked)
    {
        return Some(s.message.clone());
    }
    o.peer
        .as_ref()
        .and_then(|p| p.app(b::APP_S3_STATUS))
        .map(str::to_string)
}

pub fn create_backup(o: &Observed) -> ActionPlan {
    let kind = match param_str(o, "type").unwrap_or("full") {
        "full" => "full",
        "incremental" => "incr",
        other => {
            return ActionPlan::fail(format!(
                "Invalid backup type: {other}. Possible values: full, incremental."
            ))
        }
    };
    if let Some(why) = blocked(o) {
        return ActionPlan::fail(format!(
            "Unit is in a blocking state: {why}. Resolve it first (juju status)."
        ));
    }
    if let Err(p) = s3_ready(o, true) {
        return p;
    }
    let members = match super::cluster_view(o) {
        Ok(m) => m,
        Err(p) => return p,
    };
    let Some(mine) = o.my_cluster_member() else {
        return ActionPlan::fail(format!("{} is not a member of the cluster yet", o.unit));
    };
    if !mine.is_healthy() {
        return ActionPlan::fail(format!(
            "Unit cannot perform backups as it's not in running state (its member is {}): wait, or run create-backup on another unit",
            mine.state
        ));
    }
    let replicas: Vec<&cluster::ClusterMember> = members
        .iter()
        .filter(|m| !m.is_leader() && m.is_healthy())
        .collect();
    if mine.is_leader() && !replicas.is_empty() {
        return ActionPlan::fail(format!(
            "Unit cannot perform backups as it is the cluster primary: backups are taken on a replica so that the primary is not loaded; run juju run {} create-backup",
            unit_of_member(&replicas[0].name)
        ));
    }
    let role = if mine.is_leader() {
        "primary"
    } else {
        "replica"
    };
    let mut plan = ActionPlan::default();
    plan.progress.push(format!(
        "taking a {} backup of {}'s data directory ({role})",
        if kind == "incr" {
            "incremental"
        } else {
            "full"
        },
        o.unit
    ));
    plan.steps.push(Step::CreateBackup {
        kind: kind.to_string(),
        status_after: o.unit_status.clone(),
    });
    plan.results
        .insert("backup-status".into(), "backup created".into());
    plan
}

/// The info pgpilot printed, or the action's failure.
fn info(o: &Observed) -> Result<Value, ActionPlan> {
    let fail = |why: String| {
        ActionPlan::fail(format!(
            "Failed to list PostgreSQL backups with error: {why}"
        ))
    };
    match &o.backup.info {
        None => Err(fail(
            "the repository was not asked (is the snap installed and pgpilot configured? see juju status)"
                .into(),
        )),
        Some(CommandOutcome { code: 0, output }) => {
            serde_json::from_str(output).map_err(|e| fail(format!("pgpilot info printed no JSON: {e}")))
        }
        Some(other) => Err(fail(other.reason())),
    }
}

pub fn list_backups(o: &Observed) -> ActionPlan {
    let p = match s3_ready(o, false) {
        Ok(p) => p,
        Err(plan) => return plan,
    };
    let doc = match info(o) {
        Ok(d) => d,
        Err(plan) => return plan,
    };
    let base = b::base_path(&p, &s3::stanza(&o.model, &o.app));
    let rows = match b::listed(&doc, &base) {
        Ok(r) => r,
        Err(e) => {
            return ActionPlan::fail(format!("Failed to list PostgreSQL backups with error: {e}"))
        }
    };
    let json: Vec<Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "backup-id": r.id, "label": r.label, "type": r.kind, "status": r.status,
                "reference-backup-id": r.reference, "lsn": r.lsn, "start-time": r.start,
                "finish-time": r.finish, "timeline": r.timeline, "backup-path": r.path,
            })
        })
        .collect();
    let mut plan = ActionPlan::result("backups", b::table(&p.bucket, &base, &rows));
    plan.results
        .insert("backups-json".into(), Value::from(json).to_string());
    plan
}

pub fn restore(o: &Observed) -> ActionPlan {
    let id = param_str(o, "backup-id");
    let time = param_str(o, "restore-to-time");
    if id.is_none() && time.is_none() {
        return ActionPlan::fail(
            "Either backup-id or restore-to-time parameters need to be provided to be able to do restore",
        );
    }
    let target_time = match time {
        None | Some("latest") => None,
        Some(t) => match b::restore_time(t) {
            Some(t) => Some(t),
            None => {
                return ActionPlan::fail(format!(
                    "Bad restore-to-time format: {t:?}; use YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM] (UTC without a zone), or latest"
                ))
            }
        },
    };
    if !o.service_active(SERVICE_PGPILOT) || o.cluster.is_none() {
        return ActionPlan::fail(
            "the database is not reachable on this unit (pgpilot is not running or does not answer): see juju status",
        );
    }
    let restore_failed = o.peer.as_ref().and_then(|p| p.app(b::APP_RESTORE_FAILED));
    if let Some(why) = blocked(o).filter(|w| Some(w.as_str()) != restore_failed) {
        return ActionPlan::fail(format!(
            "Cluster or unit is in a blocking state: {why}. Resolve it first (juju status)."
        ));
    }
    let units = o.peer.as_ref().map_or(1, |p| p.units().len());
    if units > 1 {
        return ActionPlan::fail(format!(
            "Unit cannot restore backup as there are more than one unit in the cluster: scale down to one unit (juju remove-unit), restore, then add units ({units} units now)"
        ));
    }
    if !o.is_leader {
        return ActionPlan::fail(
            "Unit cannot restore backup as it was not elected the leader unit yet",
        );
    }
    if let Err(plan) = s3_ready(o, false) {
        return plan;
    }
    let doc = match info(o) {
        Ok(d) => d,
        Err(plan) => return plan,
    };
    let rows = match b::listed(&doc, "") {
        Ok(r) => r,
        Err(e) => {
            return ActionPlan::fail(format!("Failed to list PostgreSQL backups with error: {e}"))
        }
    };
    let label = match id {
        None => None,
        Some(id) => match rows.iter().find(|r| r.id == id || r.label == id) {
            Some(r) => Some(r.label.clone()),
            None => {
                return ActionPlan::fail(format!(
                    "Invalid backup-id: {id} (list-backups shows the backups of this cluster)"
                ))
            }
        },
    };
    if label.is_none() && rows.is_empty() {
        return ActionPlan::fail(
            "there is no backup of this cluster to restore: run create-backup first",
        );
    }
    let what = match (&label, &target_time) {
        (Some(l), Some(t)) => format!("{l} to {t}"),
        (Some(l), None) => l.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    let set = |k: &str, v: Option<String>| {
        (
            format!("pgpilot.bootstrap-from.{k}"),
            v.map_or(Value::Null, Value::from),
        )
    };
    // A backup alone: its own state (recovery stops once consistent);
    // `latest`: all the archived WAL.
    let immediate = label.is_some() && target_time.is_none() && time != Some("latest");
    let bootstrap = vec![
        set("method", Some("backup".into())),
        set("set", label.clone().or(Some("latest".into()))),
        set("target-time", target_time),
        set("target-lsn", None),
        set("target-xid", None),
        set("target-name", None),
        set("target", immediate.then(|| "immediate".to_string())),
        set("target-timeline", None),
    ];
    let mut plan = ActionPlan::default();
    plan.progress.push(format!("restoring {what}"));
    plan.steps
        .push(Step::ShowStatus(Status::maintenance(RESTORING)));
    plan.steps.push(Step::Restore {
        scope: o.app.clone(),
        etcd_endpoints: crate::observe::etcd_endpoints(o),
        bootstrap,
        status_after: o.unit_status.clone(),
    });
    let bag: BTreeMap<String, String> = [
        (b::APP_RESTORING.to_string(), what),
        (b::APP_RESTORE_FAILED.to_string(), String::new()),
        (b::APP_S3_CHECKED.to_string(), String::new()),
    ]
    .into();
    plan.steps.push(Step::SetAppData(bag));
    plan.results
        .insert("restore-status".into(), "restore started".into());
    plan
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
