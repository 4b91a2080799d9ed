//! Table tests of the plugin options' extensions: [`extension_changes`] on
//! its own, then [`reconcile`] on a settled three-unit cluster (unit 0 is
//! the Juju leader and the primary) with what the leader read. One row per
//! situation, named after what it defends.

use std::collections::BTreeSet;

use serde_json::json;

use super::super::tests::{check, row, set_app_bag, settled, summary, with_config, with_event};
use super::*;
use crate::config::Extensions;
use crate::context::Event;
use crate::extensions::ExtensionsView;
use crate::observe::Observed;
use crate::peer::APP_EXTENSIONS;
use crate::reconcile::reconcile;
use crate::status::{msg, Status};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// database → (installed, in use).
fn view(dbs: &[(&str, &[&str], &[&str])]) -> ExtensionsView {
    let mut v = ExtensionsView::default();
    for (db, installed, used) in dbs {
        v.installed.insert(db.to_string(), set(installed));
        v.in_use.insert(db.to_string(), set(used));
    }
    v
}

fn desired(on: &[&str]) -> Extensions {
    plugins::creation_order()
        .map(|e| (e, on.contains(&e)))
        .collect()
}

fn change(db: &str, create: &[&str], drop: &[&str]) -> DatabaseChange {
    DatabaseChange {
        database: db.into(),
        create: create.iter().map(|s| s.to_string()).collect(),
        drop: drop.iter().map(|s| s.to_string()).collect(),
    }
}

/// A row: name, what the options ask, what the databases have, the
/// changes and the drops that wait.
type Case = (
    &'static str,
    Extensions,
    ExtensionsView,
    Vec<DatabaseChange>,
    Vec<StillUsed>,
);

#[test]
fn what_each_database_needs() {
    let used = |db: &str, e: &str| StillUsed {
        database: db.into(),
        extension: e.into(),
    };
    let rows: Vec<Case> = vec![
        (
            "databases that have what is asked need nothing (no SQL)",
            desired(&["citext"]),
            view(&[
                ("app", &["citext", "plpgsql"], &["citext"]),
                ("postgres", &["citext", "plpgsql"], &[]),
            ]),
            vec![],
            vec![],
        ),
        (
            "an enabled extension is created only where it is missing",
            desired(&["citext"]),
            view(&[
                ("app", &["citext", "plpgsql"], &[]),
                ("postgres", &["plpgsql"], &[]),
            ]),
            vec![change("postgres", &["citext"], &[])],
            vec![],
        ),
        (
            "a disabled extension is dropped where it is",
            desired(&[]),
            view(&[
                ("app", &["pg_trgm", "plpgsql"], &[]),
                ("postgres", &["plpgsql"], &[]),
            ]),
            vec![change("app", &[], &["pg_trgm"])],
            vec![],
        ),
        (
            "extensions no option manages are never touched",
            desired(&[]),
            view(&[("app", &["plpgsql", "pgcrypto", "postgis"], &[])]),
            vec![],
            vec![],
        ),
        (
            "an extension is created after the one it needs, dropped before it",
            desired(&["cube", "earthdistance"]),
            view(&[("app", &[], &[]), ("old", &[], &[])]),
            vec![
                change("app", &["cube", "earthdistance"], &[]),
                change("old", &["cube", "earthdistance"], &[]),
            ],
            vec![],
        ),
        (
            "a dependent and its dependency go in one transaction, dependent first",
            desired(&[]),
            view(&[("app", &["cube", "earthdistance"], &[])]),
            vec![change("app", &[], &["earthdistance", "cube"])],
            vec![],
        ),
        (
            "an extension objects still use is not dropped (no CASCADE); the rest proceed",
            desired(&["hstore"]),
            view(&[("app", &["citext", "pg_trgm"], &["citext"])]),
            vec![change("app", &["hstore"], &["pg_trgm"])],
            vec![used("app", "citext")],
        ),
        (
            "a dependency stays while its still-used dependent stays",
            desired(&[]),
            view(&[("app", &["cube", "earthdistance"], &["earthdistance"])]),
            vec![],
            vec![used("app", "earthdistance")],
        ),
        (
            "spi's four modules follow one option",
            desired(&["refint", "autoinc", "insert_username", "moddatetime"]),
            view(&[("app", &["autoinc"], &[])]),
            vec![change(
                "app",
                &["refint", "insert_username", "moddatetime"],
                &[],
            )],
            vec![],
        ),
    ];
    for (name, want, have, changes, still_used) in rows {
        assert_eq!(
            extension_changes(&want, &have),
            (changes, still_used),
            "{name}"
        );
    }
}

const CITEXT_USED: &str = "config plugin_citext_enable=false: extension citext is still used in database \"app\"; drop what uses it, or set plugin_citext_enable=true";

#[test]
fn the_leader_makes_the_databases_agree() {
    let citext = || with_config(settled(3, 0), &[("plugin_citext_enable", json!(true))]);
    let read = |mut o: Observed, v: ExtensionsView| {
        o.extensions = Some(v);
        o
    };
    let recorded = |mut o: Observed, value: &str| {
        set_app_bag(&mut o, APP_EXTENSIONS, value);
        o
    };
    let both = |installed: &'static [&'static str], used: &'static [&'static str]| {
        view(&[("app", installed, used), ("postgres", &["plpgsql"], &[])])
    };
    let mut primary_down = read(citext(), both(&[], &[]));
    primary_down.cluster.as_mut().unwrap()[0].state = "crashed".into();
    let mut blocked = read(settled(3, 0), both(&["citext"], &["citext"]));
    blocked.unit_status = Some(Status::blocked(CITEXT_USED));
    blocked.app_status = Some(Status::blocked(CITEXT_USED));
    check(
        "extensions",
        vec![
            row(
                "an enabled extension is created, on the primary, in every database that lacks it; then recorded",
                read(citext(), both(&["plpgsql"], &[])),
                &[
                    "extensions in \"app\" on 10.0.0.1: create [citext] drop []",
                    "extensions in \"postgres\" on 10.0.0.1: create [citext] drop []",
                    "app-data extensions=[\"citext\"]",
                ],
                None,
            ),
            row(
                "databases that already agree get no SQL, only the record",
                read(citext(), view(&[("app", &["citext"], &[]), ("postgres", &["citext"], &[])])),
                &["app-data extensions=[\"citext\"]"],
                None,
            ),
            row(
                "agreeing and recorded: nothing (idempotent)",
                recorded(
                    read(citext(), view(&[("app", &["citext"], &[]), ("postgres", &["citext"], &[])])),
                    r#"["citext"]"#,
                ),
                &[],
                None,
            ),
            row(
                "an option turned off drops its extension and records none",
                recorded(read(settled(3, 0), both(&["citext"], &[])), r#"["citext"]"#),
                &[
                    "extensions in \"app\" on 10.0.0.1: create [] drop [citext]",
                    "app-data extensions=[]",
                ],
                None,
            ),
            row(
                "an extension still in use is not dropped: blocked, naming the option; the record goes, so the databases are read at every hook until they agree",
                recorded(read(settled(3, 0), both(&["citext"], &["citext"])), r#"["citext"]"#),
                &["app-data extensions="],
                Some(Status::blocked(CITEXT_USED)),
            ),
            row(
                "the block clears once nothing uses it",
                {
                    let mut o = blocked.clone();
                    o.extensions = Some(both(&["citext"], &[]));
                    o
                },
                &[
                    "extensions in \"app\" on 10.0.0.1: create [] drop [citext]",
                    "app-data extensions=[]",
                ],
                Some(Status::active(msg::PRIMARY)),
            ),
            row(
                "a non-leader never changes extensions",
                read(with_config(settled(3, 1), &[("plugin_citext_enable", json!(true))]), both(&[], &[])),
                &[],
                None,
            ),
            row(
                "without a healthy primary nothing is created",
                primary_down,
                &["unit-data member-state=leader crashed"],
                Some(Status::waiting(
                    "member crashed: reinitialised if it stays so for 10 minutes",
                )),
            ),
            row(
                "an extension the snap lacks blocks before anything is applied",
                read(
                    with_config(settled(3, 0), &[("plugin_vector_enable", json!(true))]),
                    both(&[], &[]),
                ),
                &[],
                Some(Status::blocked(
                    "config plugin_vector_enable=true: extension vector is not in this snap",
                )),
            ),
            row(
                "not read (nothing changed since the record): nothing",
                recorded(citext(), r#"["citext"]"#),
                &[],
                None,
            ),
        ],
    );
}

#[test]
fn the_block_is_shown_on_the_application_too() {
    let mut o = settled(3, 0);
    o.extensions = Some(view(&[("app", &["citext"], &["citext"])]));
    let plan = reconcile(&o);
    assert_eq!(plan.app_status, Some(Status::blocked(CITEXT_USED)));
}

#[test]
fn the_sql_runs_as_the_superuser_with_its_password() {
    let mut o = with_config(settled(3, 0), &[("plugin_pg_trgm_enable", json!(true))]);
    o.extensions = Some(view(&[("postgres", &[], &[])]));
    let plan = reconcile(&o);
    let Step::SetExtensions {
        host,
        port,
        superuser_password,
        ..
    } = &plan.steps[0]
    else {
        panic!("{:?}", plan.steps.iter().map(summary).collect::<Vec<_>>());
    };
    assert_eq!((host.as_str(), *port), ("10.0.0.1", 5432));
    assert_eq!(superuser_password, "operator-pw");
    assert!(
        !plan.steps[0].describe().contains("operator-pw"),
        "never logged"
    );
}

#[test]
fn config_changed_says_on_the_leader_what_is_accepted_but_does_nothing() {
    let logs =
        |o: &Observed| -> Vec<String> { reconcile(o).logs.into_iter().map(|(_, m)| m).collect() };
    let leader = with_event(settled(3, 0), Event::ConfigChanged);
    assert!(
        logs(&leader)
            .iter()
            .any(|m| m
                .starts_with("plugin_audit_enable=true: extension pgaudit is not in this snap")),
        "{:?}",
        logs(&leader)
    );
    assert!(logs(&settled(3, 0)).is_empty(), "not at update-status");
    let off = with_config(leader.clone(), &[("plugin_audit_enable", json!(false))]);
    assert!(logs(&off).is_empty());
}
