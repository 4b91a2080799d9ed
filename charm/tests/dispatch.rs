//! The `dispatch` binary against stand-in hook tools: the exact argv it
//! runs at the edges of dispatch (unknown hook, unknown action, the disable
//! switch, a failing tool). Full hook behaviour is the model simulator's job.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A directory of scripts named like Juju's tools (and `snap`); each
/// appends its argv, words joined by `|`, to `calls`.
fn tool(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\nprintf '%s' \"{name}\" >> \"{calls}\"\nfor a in \"$@\"; do printf '|%s' \"$a\" >> \"{calls}\"; done\necho >> \"{calls}\"\n{body}\n",
        calls = dir.join("calls").display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Unit {
    bin: tempfile::TempDir,
    charm: tempfile::TempDir,
}

impl Unit {
    fn new() -> Self {
        let u = Unit {
            bin: tempfile::tempdir().unwrap(),
            charm: tempfile::tempdir().unwrap(),
        };
        for t in [
            "juju-log",
            "status-set",
            "action-fail",
            "snap",
            "config-get",
            "relation-ids",
            "status-get",
            "opened-ports",
            "action-get",
            "resource-get",
            "network-get",
        ] {
            tool(u.bin.path(), t, "exit 0");
        }
        u
    }

    fn dispatch(&self, path: &str) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_pgpilot-charm"))
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.bin.path().display()),
            )
            .env("JUJU_DISPATCH_PATH", path)
            .env("JUJU_UNIT_NAME", "postgresql/0")
            .env("JUJU_MODEL_NAME", "dev")
            .env("JUJU_CHARM_DIR", self.charm.path())
            .output()
            .unwrap()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn an_unknown_hook_logs_and_exits_0() {
    let u = Unit::new();
    let out = u.dispatch("hooks/db-admin-relation-joined");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        u.calls(),
        vec!["juju-log|--log-level|INFO|--|hook db-admin-relation-joined: not handled by this charm, nothing to do"]
    );
}

#[test]
fn an_unknown_action_fails_with_a_clear_message() {
    let u = Unit::new();
    let out = u.dispatch("actions/make-coffee");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        u.calls(),
        vec!["action-fail|--|unknown action \"make-coffee\": this charm's actions are create-backup, get-password, get-primary, list-backups, promote-to-primary, restore, set-password"]
    );
}

#[test]
fn the_disable_file_blocks_every_hook_and_touches_nothing() {
    let u = Unit::new();
    std::fs::write(u.charm.path().join("disable"), "").unwrap();
    for hook in [
        "hooks/install",
        "hooks/config-changed",
        "hooks/update-status",
        "hooks/foo-relation-joined",
    ] {
        std::fs::remove_file(u.bin.path().join("calls")).ok();
        let out = u.dispatch(hook);
        assert_eq!(out.status.code(), Some(0), "{hook}");
        assert_eq!(
            u.calls(),
            vec!["status-set|--application=False|blocked|--|Disabled"],
            "{hook}: no snap command, no other tool"
        );
    }
}

#[test]
fn a_failing_tool_fails_the_hook_with_its_stderr() {
    let u = Unit::new();
    tool(
        u.bin.path(),
        "is-leader",
        "echo 'ERROR cannot reach the unit agent' >&2; exit 1",
    );
    let out = u.dispatch("hooks/config-changed");
    assert_eq!(out.status.code(), Some(1), "Juju retries the hook");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "is-leader --format=json failed (exit status 1): ERROR cannot reach the unit agent"
        ),
        "{stderr}"
    );
}

#[test]
fn without_juju_environment_dispatch_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgpilot-charm"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JUJU_DISPATCH_PATH is not set"));
}
