//! Table tests of the backup decisions: the flowcharts' branches, one row
//! each, from a settled three-unit cluster related to s3-integrator whose
//! settings every unit runs and the leader has checked ([`fixture`]).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::cluster::Role;
use crate::config::Machine;
use crate::context::{HookContext, RelationKind};
use crate::observe::{HostFacts, Observed};
use crate::peer::PeerView;
use crate::relation::RelationView;
use crate::snap::{ServiceState, SnapInfo};
use crate::testing::member;

pub(crate) const S3_DATA: &[(&str, &str)] = &[
    ("bucket", "backups"),
    ("access-key", "AK"),
    ("secret-key", "SK"),
    ("endpoint", "http://127.0.8.250:9000"),
    ("region", "us-east-1"),
    ("path", "pg"),
];

pub(crate) fn s3_relation(data: &[(&str, &str)]) -> RelationView {
    RelationView {
        id: "s3-parameters:9".into(),
        endpoint: "s3-parameters".into(),
        remote_app: "s3-integrator".into(),
        remote_app_data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// `me` of a settled 3-unit cluster (postgresql-0 leads), running the S3
/// settings the leader has checked, in the hook `event`.
pub(crate) fn fixture(me: usize, event: Event, leader: bool) -> Observed {
    let ctx = HookContext {
        event,
        dispatch_path: "hooks/test".into(),
        unit: format!("postgresql/{me}"),
        app: "postgresql".into(),
        model: "dev".into(),
        model_uuid: None,
        charm_dir: "/charm".into(),
        juju_version: Some("3.6.8".into()),
    };
    let host = HostFacts {
        now: 1_800_000_000,
        machine: Machine {
            memory_mb: 8192,
            cpus: 4,
        },
        arch: "amd64".into(),
        fresh_passwords: BTreeMap::new(),
        fresh_client_passwords: Vec::new(),
        wake_command: None,
    };
    let mut o = Observed::empty(&ctx, host);
    o.is_leader = leader;
    o.snap = Some(SnapInfo {
        version: "15.20".into(),
        revision: "x1".into(),
        held: true,
    });
    o.services = vec![ServiceState {
        name: "pgpilot".into(),
        enabled: true,
        active: true,
    }];
    o.cluster = Some(vec![
        member(0, Role::Leader, "running"),
        member(1, Role::SyncStandby, "streaming"),
        member(2, Role::Replica, "streaming"),
    ]);
    o.relations
        .insert("s3-parameters".into(), vec![s3_relation(S3_DATA)]);
    let settings = settings(&o);
    let p = settings.ready().expect("complete settings");
    let mut config = json!({});
    for (k, v) in s3::snap_keys(Some(p), &s3::stanza("dev", "postgresql")) {
        if v.is_null() {
            continue;
        }
        let mut node = &mut config;
        let parts: Vec<&str> = k.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            node = node
                .as_object_mut()
                .unwrap()
                .entry(part.to_string())
                .or_insert(json!({}));
        }
        node[parts[parts.len() - 1]] = v;
    }
    o.snap_config = config;
    let fp = fingerprint(&o, p);
    o.peer = Some(PeerView {
        relation_id: "database-peers:1".into(),
        app_data: [(APP_S3_CHECKED.to_string(), fp)].into(),
        unit_data: (0..3)
            .map(|n| (format!("postgresql/{n}"), BTreeMap::new()))
            .collect(),
    });
    o.unit_status = Some(crate::status::Status::active(if me == 0 {
        "Primary"
    } else {
        ""
    }));
    o
}

pub(crate) fn set_app(o: &mut Observed, key: &str, value: &str) {
    o.peer
        .as_mut()
        .unwrap()
        .app_data
        .insert(key.into(), value.into());
}

fn outcome(code: i32, output: &str) -> CommandOutcome {
    CommandOutcome {
        code,
        output: output.into(),
    }
}

#[test]
fn backup_ids_and_times() {
    assert_eq!(backup_id("20260301-020000F"), "2026-03-01T02:00:00Z");
    assert_eq!(
        backup_id("20260301-020000F_20260302-031500I"),
        "2026-03-02T03:15:00Z"
    );
    assert_eq!(backup_id("nightly"), "nightly");
    assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso_time(1_772_330_400), "2026-03-01T02:00:00Z");
    assert_eq!(iso_time(951_825_600), "2000-02-29T12:00:00Z");
}

#[test]
fn restore_times() {
    let rows = [
        ("2026-03-01 12:00:00", Some("2026-03-01 12:00:00")),
        ("2026-03-01T12:00:00Z", Some("2026-03-01 12:00:00+00")),
        (
            "2026-03-01 12:00:00.123456+02:00",
            Some("2026-03-01 12:00:00.123456+02:00"),
        ),
        ("2026-03-01 12:00:00-0530", Some("2026-03-01 12:00:00-0530")),
        ("2026-03-01 12:00:00+02", Some("2026-03-01 12:00:00+02")),
        ("2026-13-01 12:00:00", None),
        ("2026-03-01 25:00:00", None),
        ("2026-03-01 12:00", None),
        ("yesterday", None),
        ("2026-03-01 12:00:00.1234567", None),
        ("2026-03-01 12:00:00 UTC", None),
    ];
    for (input, expected) in rows {
        assert_eq!(restore_time(input).as_deref(), expected, "{input}");
    }
}

fn info_json() -> Value {
    json!([{
        "name": "dev.postgresql",
        "db": [{"system-id": 7301234567890123456u64, "version": "15"}],
        "backup": [
            {"label": "20260301-020000F", "type": "full", "prior": null, "reference": null,
             "lsn": {"start": "0/2000028", "stop": "0/2000100"},
             "timestamp": {"start": 1_772_330_400, "stop": 1_772_330_403},
             "timeline": 1, "error": false},
            {"label": "20260301-020000F_20260302-020000I", "type": "incr",
             "prior": "20260301-020000F", "reference": ["20260301-020000F"],
             "lsn": {"start": "0/9000028", "stop": "0/9000138"},
             "timestamp": {"start": 1_772_416_800, "stop": 1_772_416_801},
             "timeline": 1, "error": true},
        ]
    }])
}

#[test]
fn the_list_of_backups() {
    let rows = listed(&info_json(), "/pg/dev.postgresql/backup/").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].id, "2026-03-02T02:00:00Z");
    assert_eq!(rows[1].kind, "incremental");
    assert_eq!(rows[1].reference, "2026-03-01T02:00:00Z");
    assert_eq!(rows[1].status, "finished, pages failed their checksum");
    assert_eq!(rows[0].lsn, "0/2000028 / 0/2000100");
    assert_eq!(rows[0].finish, "2026-03-01T02:00:03Z");
    assert_eq!(rows[0].path, "/pg/dev.postgresql/backup/20260301-020000F");
    let text = table("backups", "/pg/dev.postgresql/backup/", &rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Storage bucket name: backups");
    assert_eq!(lines[1], "Backups base path: /pg/dev.postgresql/backup/");
    assert!(
        lines[3].starts_with("backup-id            | type        | status"),
        "{}",
        lines[3]
    );
    assert!(
        lines[5].starts_with("2026-03-01T02:00:00Z | full        | finished"),
        "{}",
        lines[5]
    );
    assert!(listed(&json!({}), "").is_err());
}

#[test]
fn what_a_check_means() {
    let p = settings(&fixture(0, Event::UpdateStatus, true))
        .ready()
        .cloned()
        .unwrap();
    type Meaning<'a> = Result<Option<&'a str>, &'a str>;
    let rows: &[(i32, &str, Meaning)] = &[
        (0, "check: archiving works", Ok(None)),
        (
            44,
            "pgpilot check: ERROR [044]: stanza dev.postgresql belongs to system 1",
            Ok(Some("the S3 repository has backups from another cluster (bucket backups path pg): relate to another bucket or path")),
        ),
        (
            3,
            "pgpilot check: ERROR [003]: repository s3://backups/pg: connection refused",
            Ok(Some("failed to access the bucket, check your S3 settings (bucket backups path pg): repository s3://backups/pg: connection refused")),
        ),
        (
            82,
            "pgpilot check: ERROR [082]: WAL segment 0000000100000000000000A1 was not archived",
            Ok(Some("WAL archiving to S3 is not working (bucket backups path pg): WAL segment 0000000100000000000000A1 was not archived")),
        ),
        (
            -1,
            "snap run ... did not finish within 150 s (stopped)",
            Ok(Some("failed to initialise the S3 repository (bucket backups path pg): snap run ... did not finish within 150 s (stopped)")),
        ),
        (6, "pgpilot check: ERROR [006]: cannot connect", Err("cannot connect")),
    ];
    for (code, output, expected) in rows {
        let got = check_status(&outcome(*code, output), &p);
        let got = got.as_ref().map(|o| o.as_deref()).map_err(String::as_str);
        assert_eq!(got, *expected, "exit {code}");
    }
}

#[test]
fn when_the_leader_checks() {
    type Change = fn(&mut Observed);
    let rows: &[(&str, Event, bool, Change, bool)] = &[
        (
            "update-status re-checks",
            Event::UpdateStatus,
            true,
            |_| {},
            true,
        ),
        (
            "not on a replica unit's hook",
            Event::UpdateStatus,
            false,
            |_| {},
            false,
        ),
        (
            "config-changed: already checked",
            Event::ConfigChanged,
            true,
            |_| {},
            false,
        ),
        (
            "new settings are checked in any hook",
            Event::ConfigChanged,
            true,
            |o| set_app(o, APP_S3_CHECKED, "old"),
            true,
        ),
        (
            "the relation's hooks re-check",
            Event::Relation {
                endpoint: "s3-parameters".into(),
                kind: RelationKind::Changed,
                relation_id: "s3-parameters:9".into(),
                remote_unit: None,
                remote_app: Some("s3-integrator".into()),
                departing_unit: None,
            },
            true,
            |_| {},
            true,
        ),
        (
            "not before the settings run on this unit",
            Event::UpdateStatus,
            true,
            |o| o.snap_config = json!({}),
            false,
        ),
        (
            "not while pgpilot is down",
            Event::UpdateStatus,
            true,
            |o| o.services.clear(),
            false,
        ),
        (
            "not without a healthy primary",
            Event::UpdateStatus,
            true,
            |o| o.cluster.as_mut().unwrap()[0].state = "stopped".into(),
            false,
        ),
        (
            "not during a restore",
            Event::UpdateStatus,
            true,
            |o| set_app(o, APP_RESTORING, "latest"),
            false,
        ),
        (
            "not without complete settings",
            Event::UpdateStatus,
            true,
            |o| {
                o.relations
                    .insert(
                        "s3-parameters".into(),
                        vec![s3_relation(&[("bucket", "b")])],
                    )
                    .map(drop)
                    .unwrap_or(())
            },
            false,
        ),
        (
            "not in an action",
            Event::Action {
                name: "get-primary".into(),
                id: Some("1".into()),
            },
            true,
            |_| {},
            false,
        ),
    ];
    for (what, event, leader, change, expected) in rows {
        let mut o = fixture(0, event.clone(), *leader);
        change(&mut o);
        assert_eq!(check_due(&o), *expected, "{what}");
    }
}

#[test]
fn a_broken_relation_is_gone() {
    let broken = Event::Relation {
        endpoint: "s3-parameters".into(),
        kind: RelationKind::Broken,
        relation_id: "s3-parameters:9".into(),
        remote_unit: None,
        remote_app: Some("s3-integrator".into()),
        departing_unit: None,
    };
    let mut o = fixture(1, Event::UpdateStatus, false);
    o.event = broken;
    o.relations
        .insert("s3-parameters".into(), vec![s3_relation(&[])]);
    assert_eq!(settings(&o), S3Settings::Unrelated);
    let keys = desired_keys(&o, &settings(&o));
    assert_eq!(
        keys[0],
        ("pgpilot.backup.repository".into(), json!("posix"))
    );
}

#[test]
fn the_keys_follow_the_relation() {
    let o = fixture(1, Event::UpdateStatus, false);
    let keys: BTreeMap<String, Value> = desired_keys(&o, &settings(&o)).into_iter().collect();
    assert_eq!(keys["pgpilot.backup.repository"], json!("s3"));
    assert_eq!(keys["pgpilot.backup.stanza"], json!("dev.postgresql"));
    assert!(applied(&o, settings(&o).ready().unwrap()));
    let mut o = o;
    o.relations.insert("s3-parameters".into(), vec![]);
    let keys = desired_keys(&o, &settings(&o));
    assert_eq!(
        keys[0],
        ("pgpilot.backup.repository".into(), json!("posix"))
    );
    assert!(keys[1..].iter().all(|(_, v)| v.is_null()));
    // Never related: the snap's default repository stays as it is.
    o.snap_config = json!({"pgpilot": {"backup": {"repository": "posix"}}});
    let keys = desired_keys(&o, &settings(&o));
    assert!(keys
        .iter()
        .all(|(k, v)| k != "pgpilot.backup.repository" && v.is_null()));
    o.relations
        .insert("s3-parameters".into(), vec![s3_relation(&[])]);
    assert!(desired_keys(&o, &settings(&o)).is_empty());
}
