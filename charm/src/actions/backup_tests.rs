//! The three flowcharts' branches, one row each, with the exact message.

use serde_json::{json, Value};

use super::*;
use crate::backup::tests::{fixture, s3_relation, set_app};
use crate::backup::{APP_RESTORE_FAILED, APP_S3_CHECKED, APP_S3_STATUS};
use crate::context::Event;
use crate::plan::Step;

fn action(name: &str, me: usize, leader: bool, params: Value) -> Observed {
    let mut o = fixture(
        me,
        Event::Action {
            name: name.into(),
            id: Some("1".into()),
        },
        leader,
    );
    o.action_params = params.as_object().cloned().unwrap_or_default();
    o
}

fn info_ok() -> CommandOutcome {
    CommandOutcome {
        code: 0,
        output: json!([{"name": "dev.postgresql", "backup": [
            {"label": "20260301-020000F", "type": "full", "prior": null,
             "lsn": {"start": "0/2000028", "stop": "0/2000100"},
             "timestamp": {"start": 1_772_330_400, "stop": 1_772_330_403},
             "timeline": 1, "error": false}]}])
        .to_string(),
    }
}

/// One unit: the leader, alone (restore's precondition).
fn alone(o: &mut Observed) {
    o.cluster.as_mut().unwrap().truncate(1);
    o.peer
        .as_mut()
        .unwrap()
        .unit_data
        .retain(|u, _| u == "postgresql/0");
}

type Change = fn(&mut Observed);

fn no_relation(o: &mut Observed) {
    o.relations.insert("s3-parameters".into(), vec![]);
}

fn missing(o: &mut Observed) {
    o.relations.insert(
        "s3-parameters".into(),
        vec![s3_relation(&[("endpoint", "http://127.0.8.250:9000")])],
    );
}

#[test]
fn create_backup_branches() {
    let rows: &[(&str, usize, Value, Change, &str)] = &[
        ("differential", 1, json!({"type": "differential"}), |_| {},
         "Invalid backup type: differential. Possible values: full, incremental."),
        ("blocked unit", 1, json!({}), |o| o.unit_status = Some(Status::blocked("Disabled")),
         "Unit is in a blocking state: Disabled. Resolve it first (juju status)."),
        ("blocked repository", 1, json!({}), |o| set_app(o, APP_S3_STATUS, "the S3 repository has backups from another cluster"),
         "Unit is in a blocking state: the S3 repository has backups from another cluster. Resolve it first (juju status)."),
        ("no relation", 1, json!({}), no_relation, NO_RELATION),
        ("parameters missing", 1, json!({}), missing,
         "Missing S3 parameters: [\"bucket\", \"access-key\", \"secret-key\"]: set them on s3-integrator"),
        ("nothing sent yet", 1, json!({}), |o| { o.relations.insert("s3-parameters".into(), vec![s3_relation(&[])]); },
         "s3-integrator has not sent its settings yet: configure it (juju config s3-integrator bucket=... endpoint=...; juju run s3-integrator/leader sync-s3-credentials access-key=... secret-key=...)"),
        ("repository not initialised", 1, json!({}), |o| set_app(o, APP_S3_CHECKED, "other"),
         "the S3 repository is not initialised yet: every unit takes the S3 settings (a rolling restart), then the leader checks the repository; wait until juju status shows no S3 message and run the action again"),
        ("not running", 2, json!({}), |o| o.cluster.as_mut().unwrap()[2].state = "starting".into(),
         "Unit cannot perform backups as it's not in running state (its member is starting): wait, or run create-backup on another unit"),
        ("the primary with replicas", 0, json!({}), |_| {},
         "Unit cannot perform backups as it is the cluster primary: backups are taken on a replica so that the primary is not loaded; run juju run postgresql/1 create-backup"),
    ];
    for (what, me, params, change, expected) in rows {
        let mut o = action("create-backup", *me, false, params.clone());
        change(&mut o);
        let p = crate::actions::plan_action(&o);
        assert_eq!(p.failure.as_deref(), Some(*expected), "{what}");
        assert!(p.steps.is_empty(), "{what}");
    }
    let p = crate::actions::plan_action(&action(
        "create-backup",
        2,
        false,
        json!({"type": "incremental"}),
    ));
    assert_eq!(p.failure, None);
    assert_eq!(
        p.steps,
        vec![Step::CreateBackup {
            kind: "incr".into(),
            status_after: Some(Status::active("")),
        }]
    );
    assert_eq!(p.results["backup-status"], "backup created");
    assert_eq!(
        p.progress,
        vec!["taking a incremental backup of postgresql/2's data directory (replica)"]
    );
    // A single unit backs itself up.
    let mut o = action("create-backup", 0, true, json!({}));
    alone(&mut o);
    assert_eq!(crate::actions::plan_action(&o).failure, None);
}

#[test]
fn list_backups_branches() {
    let rows: &[(&str, Change, &str)] = &[
        ("no relation", no_relation, NO_RELATION),
        ("parameters missing", missing,
         "Missing S3 parameters: [\"bucket\", \"access-key\", \"secret-key\"]: set them on s3-integrator"),
        ("not asked", |o| o.backup.info = None,
         "Failed to list PostgreSQL backups with error: the repository was not asked (is the snap installed and pgpilot configured? see juju status)"),
        ("no answer", |o| o.backup.info = Some(CommandOutcome { code: 3, output: "pgpilot info: ERROR [003]: repository s3://backups/pg: connection refused".into() }),
         "Failed to list PostgreSQL backups with error: repository s3://backups/pg: connection refused"),
    ];
    for (what, change, expected) in rows {
        let mut o = action("list-backups", 1, false, json!({}));
        o.backup.info = Some(info_ok());
        change(&mut o);
        let p = crate::actions::plan_action(&o);
        assert_eq!(p.failure.as_deref(), Some(*expected), "{what}");
    }
    let mut o = action("list-backups", 1, false, json!({}));
    o.backup.info = Some(info_ok());
    let p = crate::actions::plan_action(&o);
    assert!(
        p.results["backups"].contains("2026-03-01T02:00:00Z | full | finished"),
        "{}",
        p.results["backups"]
    );
    let listed: Value = serde_json::from_str(&p.results["backups-json"]).unwrap();
    assert_eq!(listed[0]["backup-id"], "2026-03-01T02:00:00Z");
    assert_eq!(
        listed[0]["backup-path"],
        "/pg/dev.postgresql/backup/20260301-020000F"
    );
}

#[test]
fn restore_branches() {
    let rows: &[(&str, Value, Change, &str)] = &[
        ("nothing to restore", json!({}), |_| {},
         "Either backup-id or restore-to-time parameters need to be provided to be able to do restore"),
        ("a bad time", json!({"restore-to-time": "yesterday"}), |_| {},
         "Bad restore-to-time format: \"yesterday\"; use YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM] (UTC without a zone), or latest"),
        ("workload down", json!({"backup-id": "2026-03-01T02:00:00Z"}), |o| o.services.clear(),
         "the database is not reachable on this unit (pgpilot is not running or does not answer): see juju status"),
        ("blocked", json!({"backup-id": "2026-03-01T02:00:00Z"}), |o| set_app(o, APP_S3_STATUS, "failed to access the bucket"),
         "Cluster or unit is in a blocking state: failed to access the bucket. Resolve it first (juju status)."),
        ("more than one unit", json!({"backup-id": "2026-03-01T02:00:00Z"}), |o| o.peer.as_mut().unwrap().unit_data.insert("postgresql/1".into(), Default::default()).map(drop).unwrap_or(()),
         "Unit cannot restore backup as there are more than one unit in the cluster: scale down to one unit (juju remove-unit), restore, then add units (2 units now)"),
        ("not the leader", json!({"backup-id": "2026-03-01T02:00:00Z"}), |o| o.is_leader = false,
         "Unit cannot restore backup as it was not elected the leader unit yet"),
        ("no relation", json!({"backup-id": "2026-03-01T02:00:00Z"}), no_relation, NO_RELATION),
        ("an invalid id", json!({"backup-id": "2026-03-09T00:00:00Z"}), |_| {},
         "Invalid backup-id: 2026-03-09T00:00:00Z (list-backups shows the backups of this cluster)"),
    ];
    for (what, params, change, expected) in rows {
        let mut o = action("restore", 0, true, params.clone());
        alone(&mut o);
        o.backup.info = Some(info_ok());
        change(&mut o);
        let p = crate::actions::plan_action(&o);
        assert_eq!(p.failure.as_deref(), Some(*expected), "{what}");
        assert!(p.steps.is_empty(), "{what}");
    }
    let mut o = action(
        "restore",
        0,
        true,
        json!({"backup-id": "2026-03-01T02:00:00Z", "restore-to-time": "2026-03-01 03:00:00+00"}),
    );
    alone(&mut o);
    o.backup.info = Some(info_ok());
    // A failed restore does not stand in the way of another one.
    set_app(&mut o, APP_RESTORE_FAILED, "Failed to restore backup x");
    o.unit_status = Some(Status::blocked("Failed to restore backup x"));
    let p = crate::actions::plan_action(&o);
    assert_eq!(p.failure, None);
    assert_eq!(p.results["restore-status"], "restore started");
    let Step::Restore {
        scope, bootstrap, ..
    } = &p.steps[1]
    else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(scope, "postgresql");
    let keys: std::collections::BTreeMap<&str, &Value> =
        bootstrap.iter().map(|(k, v)| (k.as_str(), v)).collect();
    assert_eq!(keys["pgpilot.bootstrap-from.method"], "backup");
    assert_eq!(keys["pgpilot.bootstrap-from.set"], "20260301-020000F");
    assert_eq!(
        keys["pgpilot.bootstrap-from.target-time"],
        "2026-03-01 03:00:00+00"
    );
    assert_eq!(p.steps[0], Step::ShowStatus(Status::maintenance(RESTORING)));
    let Step::SetAppData(bag) = &p.steps[2] else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(
        bag["restoring-backup"],
        "20260301-020000F to 2026-03-01 03:00:00+00"
    );
    // A time alone: the newest backup before it.
    let mut o = action(
        "restore",
        0,
        true,
        json!({"restore-to-time": "2026-03-01 03:00:00"}),
    );
    alone(&mut o);
    o.backup.info = Some(info_ok());
    let p = crate::actions::plan_action(&o);
    let Step::Restore { bootstrap, .. } = &p.steps[1] else {
        panic!("{:?}", p.steps)
    };
    assert!(bootstrap.contains(&("pgpilot.bootstrap-from.set".into(), json!("latest"))));
    assert!(bootstrap.contains(&("pgpilot.bootstrap-from.target".into(), Value::Null)));
    // A backup alone: its own state.
    let mut o = action("restore", 0, true, json!({"backup-id": "20260301-020000F"}));
    alone(&mut o);
    o.backup.info = Some(info_ok());
    let p = crate::actions::plan_action(&o);
    let Step::Restore { bootstrap, .. } = &p.steps[1] else {
        panic!("{:?}", p.steps)
    };
    assert!(bootstrap.contains(&("pgpilot.bootstrap-from.target".into(), json!("immediate"))));
    assert!(bootstrap.contains(&("pgpilot.bootstrap-from.target-time".into(), Value::Null)));
}
