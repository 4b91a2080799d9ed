//! Self-test of the Juju model fixture (src/juju): a tiny shell `dispatch`,
//! written into a temporary charm directory, calls the hook tools through
//! the fixture's `juju-tool` and prints what they answer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgpilot_e2e::juju::{HookRun, Model};
use serde_json::{json, Map, Value};

const METADATA: &str = "name: tiny\npeers:\n  database-peers:\n    interface: tiny_peers\n";
const CONFIG: &str = "options:\n  profile:\n    type: string\n    default: production\n  \
                      port:\n    type: int\n    default: 5432\n  plugin:\n    type: string\n";
const ACTIONS: &str = "backup:\n  params:\n    kind:\n      type: string\n      default: full\n\
                       crash: {}\n";

const DISPATCH: &str = r#"#!/bin/sh
set -e
rid=$(relation-ids database-peers --format=json | tr -d '[]"')
case "$JUJU_DISPATCH_PATH" in
hooks/config-changed)
    echo "config=$(config-get --format=json --all)"
    echo "leader=$(is-leader --format=json)"
    echo "env=$JUJU_UNIT_NAME $JUJU_MODEL_NAME $JUJU_HOOK_NAME $(pwd) $CHARM_DIR"
    ;;
hooks/database-peers-relation-changed)
    echo '{"seen": "'"$JUJU_REMOTE_UNIT"'"}' | relation-set -r "$JUJU_RELATION_ID" --file -
    status-set --application=False maintenance -- "writing"
    echo "own=$(relation-get --format=json -r "$JUJU_RELATION_ID" seen "$JUJU_UNIT_NAME")"
    if [ "$FAIL" = 1 ]; then exit 1; fi
    ;;
hooks/peek)
    echo "peers=$(relation-list --format=json -r "$rid")"
    echo "bag=$(relation-get --format=json -r "$rid" - "$PEEK_UNIT")"
    ;;
hooks/make-secret)
    printf 'one' > /tmp/juju-fixture-secret-$$
    uri=$(secret-add --owner unit --label pw "password#file=/tmp/juju-fixture-secret-$$")
    rm -f /tmp/juju-fixture-secret-$$
    relation-set -r "$rid" --app "secret-uri=$uri"
    open-port 5432/tcp
    echo "ports=$(opened-ports --format=json)"
    ;;
hooks/grant-secret)
    uri=$(relation-get -r "$rid" --app secret-uri tiny)
    secret-grant --relation "${rid#*:}" --unit tiny/1 "$uri"
    ;;
hooks/read-secret)
    uri=$(relation-get -r "$rid" --app secret-uri tiny)
    content=$(secret-get --format=json "$uri")
    echo "secret=$content"
    ;;
hooks/update-status)
    status-set active "all good"
    juju-log --log-level WARNING -- "about to fail"
    exit 1
    ;;
actions/backup)
    kind=$(action-get kind)
    action-log -- "backing up"
    action-set "kind=$kind" result.size=42
    if [ "$kind" = bad ]; then action-fail -- "bad kind: $kind"; fi
    ;;
actions/crash)
    exit 3
    ;;
esac
"#;

fn charm(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("metadata.yaml"), METADATA).unwrap();
    std::fs::write(dir.join("config.yaml"), CONFIG).unwrap();
    std::fs::write(dir.join("actions.yaml"), ACTIONS).unwrap();
    let dispatch = dir.join("dispatch");
    std::fs::write(&dispatch, DISPATCH).unwrap();
    std::fs::set_permissions(&dispatch, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The value printed as `key=...` by the dispatch script.
fn printed(run: &HookRun, key: &str) -> String {
    let prefix = format!("{key}=");
    run.output
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in the output of {run:#?}"))
        .to_string()
}

fn json_printed(run: &HookRun, key: &str) -> Value {
    serde_json::from_str(&printed(run, key)).unwrap_or_else(|e| panic!("{key}: {e}: {run:#?}"))
}

fn ok(run: HookRun) -> HookRun {
    assert_eq!(run.code, 0, "{run:#?}");
    run
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn hooks_tools_and_commit_on_success() {
    let tmp = tempfile::tempdir().unwrap();
    let charm_dir = tmp.path().join("charm");
    charm(&charm_dir);
    let model = Model::new(&tmp.path().join("model"), &charm_dir, "tiny").unwrap();
    let u0 = model.add_unit("10.1.0.1").unwrap();
    let u1 = model.add_unit("10.1.0.2").unwrap();
    assert_eq!((u0.as_str(), u1.as_str()), ("tiny/0", "tiny/1"));
    model.set_leader(&u0).unwrap();
    let rid = model.relation_id("database-peers").unwrap();
    let rkey = format!("database-peers:{rid}");

    // config-get --all (charm defaults, user values, nulls), is-leader, env.
    model
        .set_config(&map(json!({"profile": "testing"})))
        .unwrap();
    let run = ok(model.run_hook(&u0, "config-changed", &[]).unwrap());
    assert_eq!(
        json_printed(&run, "config"),
        json!({"plugin": null, "port": 5432, "profile": "testing"})
    );
    assert_eq!(printed(&run, "leader"), "true");
    let charm_path = model.unit_charm_dir(&u0).display().to_string();
    assert_eq!(
        printed(&run, "env"),
        format!("tiny/0 test config-changed {charm_path} {charm_path}")
    );
    let run = ok(model.run_hook(&u1, "config-changed", &[]).unwrap());
    assert_eq!(printed(&run, "leader"), "false");
    // Each unit has its own charm directory.
    std::fs::write(
        model.unit_charm_dir(&u1).join("dispatch"),
        "#!/bin/sh\nexit 7\n",
    )
    .unwrap();
    assert_eq!(model.run_hook(&u1, "install", &[]).unwrap().code, 7);
    ok(model.run_hook(&u0, "install", &[]).unwrap());
    std::fs::copy(
        charm_dir.join("dispatch"),
        model.unit_charm_dir(&u1).join("dispatch"),
    )
    .unwrap();

    // relation-set then exit 1: the hook saw its write, nobody else does.
    let relation_env = [
        ("JUJU_RELATION_ID", rkey.as_str()),
        ("JUJU_REMOTE_UNIT", "tiny/1"),
        ("FAIL", "1"),
    ];
    let run = model
        .run_hook(&u0, "database-peers-relation-changed", &relation_env)
        .unwrap();
    assert_eq!((run.code, run.committed), (1, false), "{run:#?}");
    assert_eq!(printed(&run, "own"), "\"tiny/1\"");
    // status-set is immediate, even though the hook failed.
    assert_eq!(run.status_changes.len(), 1);
    assert_eq!(run.status_changes[0].to.status, "maintenance");
    assert_eq!(model.state().units[&u0].status.message, "writing");
    let peek = [("PEEK_UNIT", "tiny/0")];
    let run = ok(model.run_hook(&u1, "peek", &peek).unwrap());
    assert_eq!(json_printed(&run, "peers"), json!(["tiny/0"]));
    let bag = json_printed(&run, "bag");
    assert_eq!(bag["private-address"], "10.1.0.1");
    assert!(bag.get("seen").is_none(), "{bag}");

    // The same hook exiting 0: committed, visible from the other unit.
    let relation_env = [
        ("JUJU_RELATION_ID", rkey.as_str()),
        ("JUJU_REMOTE_UNIT", "tiny/1"),
        ("FAIL", "0"),
    ];
    let run = ok(model
        .run_hook(&u0, "database-peers-relation-changed", &relation_env)
        .unwrap());
    assert!(run.committed);
    let run = ok(model.run_hook(&u1, "peek", &peek).unwrap());
    assert_eq!(json_printed(&run, "bag")["seen"], "tiny/1");

    // A secret of the leader's unit: readable by tiny/1 only after a grant.
    let run = ok(model.run_hook(&u0, "make-secret", &[]).unwrap());
    assert_eq!(json_printed(&run, "ports"), json!(["5432/tcp"]));
    assert!(model.state().units[&u0].opened_ports.contains("5432/tcp"));
    let run = model.run_hook(&u1, "read-secret", &[]).unwrap();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.output.contains("ERROR permission denied"), "{run:#?}");
    ok(model.run_hook(&u0, "grant-secret", &[]).unwrap());
    let run = ok(model.run_hook(&u1, "read-secret", &[]).unwrap());
    assert_eq!(json_printed(&run, "secret"), json!({"password": "one"}));
    let state = model.state();
    let secret = state.secrets.values().next().unwrap();
    assert_eq!(secret.label.as_deref(), Some("pw"));
    assert_eq!(secret.tracked.get(&u1), Some(&1));

    // status-set and juju-log stay even though the hook fails.
    let run = model.run_hook(&u1, "update-status", &[]).unwrap();
    assert_eq!(run.code, 1);
    assert_eq!(run.logs, vec!["WARNING about to fail".to_string()]);
    let unit = &model.state().units[&u1];
    assert_eq!(
        (unit.status.status.as_str(), unit.status.message.as_str()),
        ("active", "all good")
    );
    let debug_log = std::fs::read_to_string(model.debug_log_path()).unwrap();
    assert!(debug_log.contains("about to fail"), "{debug_log}");

    // Actions: defaults from actions.yaml, results nested, action-fail, a crash.
    let run = model.run_action(&u0, "backup", &Map::new()).unwrap();
    assert_eq!(run.status, "completed", "{run:#?}");
    assert_eq!(
        Value::Object(run.results.clone()),
        json!({"kind": "full", "result": {"size": "42"}})
    );
    assert_eq!(run.logs, vec!["backing up".to_string()]);
    let run = model
        .run_action(&u0, "backup", &map(json!({"kind": "bad"})))
        .unwrap();
    assert_eq!(run.hook.code, 0);
    assert_eq!(
        (run.status.as_str(), run.message.as_str()),
        ("failed", "bad kind: bad")
    );
    let run = model.run_action(&u1, "crash", &Map::new()).unwrap();
    assert_eq!(
        (run.status.as_str(), run.message.as_str()),
        ("failed", "exit status 3")
    );

    // The readable log of every run.
    let log = model.hooks_log();
    assert!(
        log.contains(
            "=== tiny/0 hooks/database-peers-relation-changed exit 1: 1 buffered writes discarded"
        ),
        "{log}"
    );
    assert!(
        log.contains("status tiny/0: unknown \"\" -> maintenance \"writing\""),
        "{log}"
    );
    assert!(log.contains("=== tiny/1 actions/crash exit 3"), "{log}");
}

#[test]
fn missing_hooks_are_skipped_and_missing_actions_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let charm_dir = tmp.path().join("charm");
    std::fs::create_dir_all(&charm_dir).unwrap();
    std::fs::write(charm_dir.join("metadata.yaml"), METADATA).unwrap();
    let model = Model::new(&tmp.path().join("model"), &charm_dir, "tiny").unwrap();
    let u0 = model.add_unit("10.1.0.1").unwrap();
    let run = model.run_hook(&u0, "install", &[]).unwrap();
    assert_eq!((run.code, run.output.as_str()), (0, ""));
    let run = model.run_action(&u0, "backup", &Map::new()).unwrap();
    assert_eq!(
        (run.status.as_str(), run.message.as_str()),
        ("failed", "action not implemented on unit")
    );
}
