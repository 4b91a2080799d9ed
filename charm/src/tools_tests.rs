//! argv of every tool and parsing of the reference's sample outputs
//! (charm-snap.md §2.3), then [`ProcessTools`] against small scripts that
//! stand in for the tools (argv recorded, stdin captured, exit status).

use super::*;

fn argv_of(call: &ToolCall) -> Vec<String> {
    let mut v = vec![call.tool.to_string()];
    v.extend(call.args.iter().cloned());
    v
}

fn words(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

#[test]
fn argv_of_reading_tools() {
    let rows: Vec<(ToolCall, &str)> = vec![
        (argv::config_get(), "config-get --format=json --all"),
        (argv::is_leader(), "is-leader --format=json"),
        (
            argv::relation_ids("database-peers"),
            "relation-ids database-peers --format=json",
        ),
        (
            argv::relation_list("database-peers:3"),
            "relation-list --format=json -r database-peers:3",
        ),
        (
            argv::relation_get("database-peers:3", Bag::Unit("postgresql/1")),
            "relation-get --format=json -r database-peers:3 - postgresql/1",
        ),
        (
            argv::relation_get("database-peers:3", Bag::App("postgresql")),
            "relation-get --format=json -r database-peers:3 --app - postgresql",
        ),
        (
            argv::secret_get("secret:cn8fk1ffhcmc79f7r5l0", false),
            "secret-get --format=json secret:cn8fk1ffhcmc79f7r5l0",
        ),
        (
            argv::secret_get("secret:cn8fk1ffhcmc79f7r5l0", true),
            "secret-get --format=json secret:cn8fk1ffhcmc79f7r5l0 --refresh",
        ),
        (argv::secret_ids(), "secret-ids --format=json"),
        (
            argv::status_get(false),
            "status-get --include-data --format=json --application=false",
        ),
        (
            argv::status_get(true),
            "status-get --include-data --format=json --application=true",
        ),
        (argv::opened_ports(), "opened-ports --format=json"),
        (argv::action_get(), "action-get --format=json"),
        (argv::storage_get(None), "storage-get --format=json"),
        (
            argv::storage_get(Some("pgdata/0")),
            "storage-get --format=json -s pgdata/0",
        ),
        (
            argv::network_get("database-peers"),
            "network-get --format=json database-peers",
        ),
        (
            argv::resource_get("charmed-postgresql-snap"),
            "resource-get charmed-postgresql-snap",
        ),
    ];
    for (call, expected) in rows {
        assert_eq!(argv_of(&call), words(expected));
        assert_eq!(call.stdin, None, "{expected}");
    }
}

#[test]
fn argv_of_writing_tools() {
    let rows: Vec<(ToolCall, Vec<&str>)> = vec![
        (
            argv::status_set(false, &Status::active("Primary")),
            vec![
                "status-set",
                "--application=False",
                "active",
                "--",
                "Primary",
            ],
        ),
        (
            argv::status_set(false, &Status::active("")),
            vec!["status-set", "--application=False", "active"],
        ),
        (
            argv::status_set(true, &Status::blocked("-x starts with a dash")),
            vec![
                "status-set",
                "--application=True",
                "blocked",
                "--",
                "-x starts with a dash",
            ],
        ),
        (
            argv::application_version_set("16.4"),
            vec!["application-version-set", "--", "16.4"],
        ),
        (argv::open_port("5432/tcp"), vec!["open-port", "5432/tcp"]),
        (
            argv::action_fail("Unit is not sync standby"),
            vec!["action-fail", "--", "Unit is not sync standby"],
        ),
        (
            argv::action_log("switching over"),
            vec!["action-log", "--", "switching over"],
        ),
        (
            argv::juju_log(LogLevel::Warning, "unknown hook foo"),
            vec![
                "juju-log",
                "--log-level",
                "WARNING",
                "--",
                "unknown hook foo",
            ],
        ),
        (
            argv::secret_grant("secret:abc", "database-peers:3", None),
            vec!["secret-grant", "--relation", "3", "secret:abc"],
        ),
        (
            argv::secret_grant("secret:abc", "database-peers:3", Some("postgresql/1")),
            vec![
                "secret-grant",
                "--relation",
                "3",
                "--unit",
                "postgresql/1",
                "secret:abc",
            ],
        ),
        (
            argv::secret_remove("secret:abc", Some(2)),
            vec!["secret-remove", "secret:abc", "--revision", "2"],
        ),
        (
            argv::secret_remove("secret:abc", None),
            vec!["secret-remove", "secret:abc"],
        ),
    ];
    for (call, expected) in rows {
        assert_eq!(argv_of(&call), expected);
    }
}

#[test]
fn relation_set_sends_json_on_stdin() {
    let data: BTreeMap<String, String> = [
        ("ip".to_string(), "10.0.0.6".to_string()),
        ("gone".to_string(), String::new()),
    ]
    .into();
    let unit = argv::relation_set("database-peers:3", false, &data);
    assert_eq!(
        argv_of(&unit),
        words("relation-set -r database-peers:3 --file -")
    );
    assert_eq!(
        unit.stdin.as_deref(),
        Some(r#"{"gone":"","ip":"10.0.0.6"}"#)
    );
    let app = argv::relation_set("database-peers:3", true, &data);
    assert_eq!(
        argv_of(&app),
        words("relation-set -r database-peers:3 --app --file -")
    );
}

#[test]
fn secret_values_go_through_files() {
    let secret = NewSecret {
        label: Some("database-peers.postgresql.app".into()),
        description: None,
        owner: SecretOwner::Application,
        content: [
            ("operator-password".to_string(), "s3cret".to_string()),
            ("replication-password".to_string(), "other".to_string()),
        ]
        .into(),
    };
    let call = argv::secret_add(&secret, Path::new("/tmp/x"));
    assert_eq!(
        argv_of(&call),
        vec![
            "secret-add",
            "--label",
            "database-peers.postgresql.app",
            "--owner",
            "application",
            "operator-password#file=/tmp/x/operator-password",
            "replication-password#file=/tmp/x/replication-password",
        ]
    );
    assert!(!call.display().contains("s3cret"));
    let set = argv::secret_set("secret:abc", secret.content.keys(), Path::new("/tmp/y"));
    assert_eq!(
        argv_of(&set),
        vec![
            "secret-set",
            "secret:abc",
            "operator-password#file=/tmp/y/operator-password",
            "replication-password#file=/tmp/y/replication-password",
        ]
    );
}

#[test]
fn action_set_is_redacted_in_messages() {
    let results: BTreeMap<String, String> =
        [("password".to_string(), "hunter2".to_string())].into();
    let call = argv::action_set(&results);
    assert_eq!(argv_of(&call), vec!["action-set", "password=hunter2"]);
    assert_eq!(call.display(), "action-set password=<redacted>");
    // Flags keep their values.
    assert_eq!(
        argv::config_get().display(),
        "config-get --format=json --all"
    );
}

#[test]
fn parse_reference_samples() {
    let config = parse::config(
        r#"{"profile":"production","synchronous_node_count":"all","memory_work_mem":4096,"memory_shared_buffers":null}"#,
    )
    .unwrap();
    assert_eq!(config["memory_work_mem"], 4096);
    assert!(config["memory_shared_buffers"].is_null());
    assert!(parse::is_leader("true\n").unwrap());
    assert!(!parse::is_leader("false").unwrap());
    assert_eq!(
        parse::string_list("relation-ids", r#"["database-peers:3"]"#).unwrap(),
        vec!["database-peers:3"]
    );
    assert_eq!(
        parse::string_list("relation-list", r#"["postgresql/1","postgresql/2"]"#).unwrap(),
        vec!["postgresql/1", "postgresql/2"]
    );
    assert!(parse::string_list("relation-list", "null")
        .unwrap()
        .is_empty());
    let bag = parse::databag(
        r#"{"private-address":"10.0.0.6","ingress-address":"10.0.0.6","egress-subnets":"10.0.0.6/32","ip":"10.0.0.6"}"#,
    )
    .unwrap();
    assert_eq!(bag["ip"], "10.0.0.6");
    assert!(parse::databag("{}").unwrap().is_empty());
    assert!(parse::databag("null").unwrap().is_empty());
    assert_eq!(
        parse::secret_content(r#"{"operator-password":"x"}"#).unwrap()["operator-password"],
        "x"
    );
    assert_eq!(
        parse::secret_uri("secret:cn8fk1ffhcmc79f7r5l0\n").unwrap(),
        "secret:cn8fk1ffhcmc79f7r5l0"
    );
    assert_eq!(
        parse::status(
            r#"{"status":"active","message":"Primary","status-data":{}}"#,
            false
        )
        .unwrap(),
        Status::active("Primary")
    );
    assert_eq!(
        parse::status(
            r#"{"application-status":{"status":"blocked","message":"bad","status-data":{}},"units":{"postgresql/0":{"status":"active","message":"","status-data":{}}}}"#,
            true
        )
        .unwrap(),
        Status::blocked("bad")
    );
    assert_eq!(
        parse::status(r#"{"status":"maintenance","message":""}"#, false)
            .unwrap()
            .kind,
        StatusKind::Maintenance
    );
    assert_eq!(
        parse::string_list("opened-ports", r#"["5432/tcp"]"#).unwrap(),
        vec!["5432/tcp"]
    );
    assert_eq!(
        parse::action_params(r#"{"type":"full"}"#).unwrap()["type"],
        "full"
    );
    assert_eq!(
        parse::storage(r#"{"kind":"filesystem","location":"/var/snap/charmed-postgresql/common"}"#)
            .unwrap(),
        StorageInfo {
            kind: "filesystem".into(),
            location: "/var/snap/charmed-postgresql/common".into()
        }
    );
    assert_eq!(
        parse::network_address(
            r#"{"bind-addresses":[{"mac-address":"aa:bb:cc:dd:ee:ff","interface-name":"eth0","addresses":[{"hostname":"","value":"10.0.0.5","cidr":"10.0.0.0/24"}]}],"egress-subnets":["10.0.0.5/32"],"ingress-addresses":["10.0.0.5"]}"#
        )
        .unwrap()
        .as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(
        parse::network_address(r#"{"bind-addresses":[],"ingress-addresses":["10.0.0.9"]}"#)
            .unwrap()
            .as_deref(),
        Some("10.0.0.9")
    );
}

#[test]
fn parse_errors_quote_the_output() {
    let err = parse::is_leader("yes").unwrap_err();
    assert!(
        err.to_string().contains("is-leader printed \"yes\""),
        "{err}"
    );
    assert!(parse::status(r#"{"message":"x"}"#, false).is_err());
    assert!(parse::secret_uri("").is_err());
}

// --- ProcessTools against stand-in scripts -------------------------------

/// A directory of scripts named like the tools. Each appends its argv (one
/// line, words separated by `|`) to `calls`, saves stdin to `stdin.<tool>`,
/// then prints `out` / fails as told.
struct FakeBin {
    dir: tempfile::TempDir,
}

impl FakeBin {
    fn new() -> Self {
        FakeBin {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn tool(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        let script = format!(
            "#!/bin/sh\nprintf '%s' \"{name}\" >> \"$(dirname \"$0\")/calls\"\nfor a in \"$@\"; do printf '|%s' \"$a\" >> \"$(dirname \"$0\")/calls\"; done\necho >> \"$(dirname \"$0\")/calls\"\n{body}\n"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tools(&self) -> ProcessTools {
        ProcessTools::in_dir(self.dir.path())
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }
}

#[test]
fn process_tools_run_and_parse() {
    let bin = FakeBin::new();
    bin.tool("is-leader", "echo true");
    bin.tool(
        "config-get",
        r#"echo '{"profile":"testing","memory_shared_buffers":null}'"#,
    );
    bin.tool(
        "relation-set",
        r#"cat > "$(dirname "$0")/stdin.relation-set""#,
    );
    let tools = bin.tools();
    assert!(tools.is_leader().unwrap());
    assert_eq!(tools.config_get().unwrap()["profile"], "testing");
    let data: BTreeMap<String, String> = [("ip".to_string(), "10.0.0.1".to_string())].into();
    tools.relation_set("database-peers:0", true, &data).unwrap();
    assert_eq!(bin.file("stdin.relation-set"), r#"{"ip":"10.0.0.1"}"#);
    assert_eq!(
        bin.calls(),
        vec![
            "is-leader|--format=json",
            "config-get|--format=json|--all",
            "relation-set|-r|database-peers:0|--app|--file|-",
        ]
    );
}

#[test]
fn a_failing_tool_carries_its_stderr() {
    let bin = FakeBin::new();
    bin.tool("relation-get", "echo 'ERROR permission denied' >&2; exit 2");
    let err = bin
        .tools()
        .relation_get("database-peers:0", Bag::App("postgresql"))
        .unwrap_err();
    assert_eq!(err.stderr(), Some("ERROR permission denied"));
    assert_eq!(
        err.to_string(),
        "relation-get --format=json -r database-peers:0 --app - postgresql failed (exit status 2): ERROR permission denied"
    );
}

#[test]
fn a_missing_tool_is_a_spawn_error() {
    let bin = FakeBin::new();
    let err = bin.tools().is_leader().unwrap_err();
    assert!(matches!(err, ToolError::Spawn { .. }), "{err}");
}

#[test]
fn secret_files_exist_during_the_call_only() {
    let bin = FakeBin::new();
    // Copy each key#file= argument's file next to the script, then print a URI.
    bin.tool(
        "secret-add",
        r#"for a in "$@"; do case "$a" in *'#file='*) f="${a#*#file=}"; k="${a%%#*}"; cat "$f" > "$(dirname "$0")/got.$k"; echo "$f" >> "$(dirname "$0")/paths";; esac; done; echo secret:cn8fk1ffhcmc79f7r5l0"#,
    );
    let secret = NewSecret {
        label: None,
        description: Some("system users".into()),
        owner: SecretOwner::Application,
        content: [("operator-password".to_string(), "p4ss word".to_string())].into(),
    };
    let uri = bin.tools().secret_add(&secret).unwrap();
    assert_eq!(uri, "secret:cn8fk1ffhcmc79f7r5l0");
    assert_eq!(bin.file("got.operator-password"), "p4ss word");
    let path = bin.file("paths");
    assert!(
        !Path::new(path.trim()).exists(),
        "the secret file is removed after the call"
    );
    assert!(!bin.calls()[0].contains("p4ss"));
}
