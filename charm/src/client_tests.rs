//! Table tests of the `database` endpoint's plain data.

use super::*;
use crate::cluster::Role;
use crate::testing::{bag, member};

pub(crate) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn names_and_labels() {
    assert_eq!(username("database:7"), "relation-7");
    assert_eq!(username("12"), "relation-12");
    assert_eq!(relation_of_user("relation-7"), Some("7"));
    for other in ["relation-", "relation-7a", "relation_id_7", "operator"] {
        assert_eq!(relation_of_user(other), None, "{other}");
    }
    assert_eq!(
        SecretGroup::User.label("database:14"),
        "database.14.user.secret"
    );
    assert_eq!(SecretGroup::Tls.bag_key(), "secret-tls");
    assert_eq!(SecretGroup::of("read-only-uris"), Some(SecretGroup::User));
    assert_eq!(SecretGroup::of("tls-ca"), Some(SecretGroup::Tls));
    assert_eq!(SecretGroup::of("endpoints"), None);
}

#[test]
fn requests() {
    type Row = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Result<Option<Request>, RequestError>,
    );
    let req = |db: &str, secrets: Option<&[&str]>, user: &[&str], group: &[&str]| Request {
        database: db.into(),
        secrets: secrets.map(set),
        user_roles: user.iter().map(|s| s.to_string()).collect(),
        group_roles: group.iter().map(|s| s.to_string()).collect(),
    };
    let rows: Vec<Row> = vec![
        (
            "nothing asked yet",
            vec![("requested-secrets", "[\"username\"]")],
            Ok(None),
        ),
        (
            "an empty database is not a request",
            vec![("database", " ")],
            Ok(None),
        ),
        (
            "a plain v0 request",
            vec![("database", "mydb")],
            Ok(Some(req("mydb", None, &[], &[]))),
        ),
        (
            "secrets, roles lower-cased, tags and repeats dropped, data ignored",
            vec![
                ("database", "mydb"),
                (
                    "requested-secrets",
                    r#"["username","password","read-only-uris"]"#,
                ),
                (
                    "extra-user-roles",
                    "SUPERUSER, createdb,relation_access,createdb",
                ),
                ("extra-group-roles", "Charmed_Read"),
                ("data", "{\"database\": \"other\"}"),
            ],
            Ok(Some(req(
                "mydb",
                Some(&["password", "read-only-uris", "username"]),
                &["superuser", "createdb"],
                &["charmed_read"],
            ))),
        ),
        (
            "an empty requested-secrets list means plain text",
            vec![("database", "mydb"), ("requested-secrets", "[]")],
            Ok(Some(req("mydb", None, &[], &[]))),
        ),
        (
            "v1 is refused",
            vec![("version", "v1"), ("requests", "[]")],
            Err(RequestError::V1),
        ),
        (
            "prefix requests are refused",
            vec![("database", "app*")],
            Err(RequestError::Prefix("app*".into())),
        ),
        (
            "a reserved name",
            vec![("database", "postgres")],
            Err(RequestError::InvalidDatabase {
                name: "postgres".into(),
                why: "reserved by the charm".into(),
            }),
        ),
    ];
    for (name, pairs, want) in rows {
        assert_eq!(parse_request(&bag(&pairs)), want, "{name}");
    }
    let e = parse_request(&bag(&[
        ("database", "mydb"),
        ("requested-secrets", "username"),
    ]));
    assert!(matches!(e, Err(RequestError::RequestedSecrets(_))), "{e:?}");
}

#[test]
fn database_names() {
    let ok = "a".repeat(MAX_DATABASE_NAME);
    let long = "a".repeat(MAX_DATABASE_NAME + 1);
    for good in ["mydb", "My-App.db", "a b", ok.as_str()] {
        assert_eq!(check_database_name(good), Ok(()), "{good}");
    }
    for bad in [
        "postgres",
        "template0",
        "template1",
        "databases",
        long.as_str(),
        "a\nb",
    ] {
        assert!(check_database_name(bad).is_err(), "{bad}");
    }
    let e = parse_request(&bag(&[("database", &long)])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("invalid database name {long:?}: longer than 49 bytes; ask for another name")
    );
}

fn view() -> ClientsView {
    let group = RoleInfo::default();
    let user = RoleInfo {
        login: true,
        ..Default::default()
    };
    let roles = [
        ("pg_read_all_data", &group),
        ("charmed_read", &group),
        ("pg_database_owner", &group),
        ("admin", &group),
        ("operator", &user),
        ("alice", &user),
        ("relation-3", &user),
    ];
    ClientsView {
        version: "16.4".into(),
        databases: set(&["postgres", "mydb"]),
        roles: roles
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

#[test]
fn roles() {
    let spec = |su: bool, db: bool, cr: bool, groups: &[&str]| UserSpec {
        superuser: su,
        createdb: db,
        createrole: cr,
        member_of: set(groups),
    };
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        Result<UserSpec, &'static str>,
    );
    let rows: Vec<Row> = vec![
        ("none", &[], &[], Ok(spec(false, false, false, &[]))),
        (
            "attributes",
            &["superuser", "createdb", "createrole"],
            &[],
            Ok(spec(true, true, true, &[])),
        ),
        ("admin: its group and createdb", &["admin"], &[], Ok(spec(false, true, false, &["admin"]))),
        (
            "existing groups, in both lists",
            &["pg_read_all_data"],
            &["charmed_read"],
            Ok(spec(false, false, false, &["charmed_read", "pg_read_all_data"])),
        ),
        (
            "unknown",
            &["createdb", "wizard"],
            &[],
            Err("extra-user-roles asks for \"wizard\", which is not a role of this cluster; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "a system user",
            &["operator"],
            &[],
            Err("extra-user-roles asks for \"operator\", a system or relation user, which no relation may join; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "another relation's user",
            &[],
            &["relation-3"],
            Err("extra-group-roles asks for \"relation-3\", a system or relation user, which no relation may join; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "pg_database_owner cannot be granted",
            &["pg_database_owner"],
            &[],
            Err("extra-user-roles asks for \"pg_database_owner\", a system or relation user, which no relation may join; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "a user is not a group",
            &["alice"],
            &[],
            Err("extra-user-roles asks for \"alice\", which is a user (it can log in), not a group role; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "attributes are not group roles",
            &[],
            &["superuser"],
            Err("extra-group-roles asks for \"superuser\", which is not a role of this cluster; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
    ];
    for (name, user, group, want) in rows {
        let request = Request {
            database: "mydb".into(),
            user_roles: user.iter().map(|s| s.to_string()).collect(),
            group_roles: group.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let got = user_spec(&request, &view()).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_string), "{name}");
    }
}

#[test]
fn a_role_matches_its_spec_only_when_it_can_log_in_with_the_same_groups() {
    let spec = UserSpec {
        createdb: true,
        member_of: set(&["admin"]),
        ..Default::default()
    };
    let mut info = RoleInfo {
        login: true,
        createdb: true,
        member_of: set(&["admin"]),
        ..Default::default()
    };
    assert!(info.matches(&spec));
    info.member_of.insert("pg_monitor".into());
    assert!(!info.matches(&spec));
    info.member_of.remove("pg_monitor");
    info.login = false;
    assert!(!info.matches(&spec));
}

#[test]
fn the_view_parses_and_keeps_the_version_number() {
    let out = r#"{"version": "16.4 (Ubuntu 16.4-0ubuntu0.24.04.2)", "databases": ["mydb", "postgres"],
        "roles": {"relation-7": {"login": true, "superuser": false, "createdb": true, "createrole": false, "member_of": ["admin"]},
                  "admin": {"login": false, "superuser": false, "createdb": false, "createrole": false, "member_of": []}}}"#;
    let v = parse_view(out).unwrap();
    assert_eq!(v.version, "16.4");
    assert_eq!(v.databases, set(&["mydb", "postgres"]));
    assert_eq!(v.relation_users().collect::<Vec<_>>(), vec!["7"]);
    assert_eq!(v.roles["relation-7"].member_of, set(&["admin"]));
    assert!(parse_view("ERROR: permission denied").is_err());
}

#[test]
fn ensure_sql_quotes_and_logs_nothing() {
    let spec = UserSpec {
        createdb: true,
        member_of: set(&["admin"]),
        ..Default::default()
    };
    let sql = ensure_user_sql(
        "relation-7",
        "pa'ss",
        &spec,
        &set(&["admin", "pg_monitor"]),
        "my\"db",
    );
    assert_eq!(
        sql,
        "SET synchronous_commit = local;
BEGIN;
SET LOCAL log_statement = 'none';
SET LOCAL log_min_duration_statement = -1;
SET LOCAL log_min_error_statement = 'panic';
SET LOCAL pg_stat_statements.track_utility = off;
DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'admin') THEN CREATE ROLE \"admin\" NOLOGIN; END IF; END $do$;
DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'relation-7') THEN CREATE ROLE \"relation-7\"; END IF; END $do$;
ALTER ROLE \"relation-7\" WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE PASSWORD 'pa''ss';
GRANT \"admin\" TO \"relation-7\";
REVOKE \"pg_monitor\" FROM \"relation-7\";
COMMIT;
SELECT format('CREATE DATABASE %I', 'my\"db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'my\"db')\\gexec
REVOKE ALL ON DATABASE \"my\"\"db\" FROM PUBLIC;
GRANT ALL ON DATABASE \"my\"\"db\" TO \"relation-7\", \"admin\";
"
    );
    assert!(database_grants_sql("relation-7").starts_with(
        "SET synchronous_commit = local;\nGRANT ALL ON SCHEMA public TO \"relation-7\";\n"
    ));
    assert_eq!(
        drop_owned_sql("relation-7", "operator"),
        "SET synchronous_commit = local;\nREASSIGN OWNED BY \"relation-7\" TO \"operator\";\nDROP OWNED BY \"relation-7\";\n"
    );
    assert_eq!(
        drop_role_sql("relation-7"),
        "SET synchronous_commit = local;\nDROP ROLE IF EXISTS \"relation-7\";\n"
    );
    let prepare = drop_prepare_sql("relation-7");
    // Every script that changes something commits without waiting for a
    // synchronous standby.
    for script in [
        ensure_user_sql("u", "v", &UserSpec::default(), &set(&[]), "db"),
        database_grants_sql("u"),
        prepare.clone(),
        drop_owned_sql("u", "operator"),
        drop_role_sql("u"),
    ] {
        assert!(script.starts_with(LOCAL_COMMIT), "{script}");
    }
    assert!(prepare.contains("ALTER ROLE \"relation-7\" NOLOGIN"));
    assert!(prepare
        .contains("pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'relation-7'"));
}

#[test]
fn endpoints_follow_the_cluster() {
    let e = |primary: &str, ro: &[&str]| {
        Some(Endpoints {
            primary: primary.into(),
            read_only: ro.iter().map(|s| s.to_string()).collect(),
        })
    };
    type Row = (&'static str, Vec<ClusterMember>, Option<Endpoints>);
    let rows: Vec<Row> = vec![
        (
            "primary and healthy replicas, sorted",
            vec![
                member(2, Role::Replica, "streaming"),
                member(0, Role::Leader, "running"),
                member(1, Role::SyncStandby, "streaming"),
            ],
            e("10.0.0.1:5432", &["10.0.0.2:5432", "10.0.0.3:5432"]),
        ),
        (
            "a replica that is not streaming is left out",
            vec![
                member(0, Role::Leader, "running"),
                member(1, Role::Replica, "starting"),
                member(2, Role::Replica, "streaming"),
            ],
            e("10.0.0.1:5432", &["10.0.0.3:5432"]),
        ),
        (
            "no healthy replica: the primary",
            vec![
                member(0, Role::Leader, "running"),
                member(1, Role::Replica, "stopped"),
            ],
            e("10.0.0.1:5432", &["10.0.0.1:5432"]),
        ),
        (
            "no primary: nothing to say",
            vec![
                member(0, Role::Leader, "stopped"),
                member(1, Role::Replica, "streaming"),
            ],
            None,
        ),
    ];
    for (name, cluster, want) in rows {
        assert_eq!(endpoints(&cluster), want, "{name}");
    }
}

#[test]
fn uris_join_hosts_and_write_the_port_once() {
    let hosts = vec!["10.0.0.2:5432".to_string(), "10.0.0.3:5432".to_string()];
    assert_eq!(
        uri("relation-7", "Pw1", &hosts, "mydb"),
        "postgresql://relation-7:Pw1@10.0.0.2,10.0.0.3:5432/mydb"
    );
    assert_eq!(
        uri("relation-7", "Pw1", &hosts[..1], "my db/x"),
        "postgresql://relation-7:Pw1@10.0.0.2:5432/my%20db%2Fx"
    );
}

#[test]
fn answers_split_between_secrets_and_plain_text() {
    let endpoints = Endpoints {
        primary: "10.0.0.1:5432".into(),
        read_only: vec!["10.0.0.2:5432".into()],
    };
    let fields = answer_fields(&AnswerInput {
        user: "relation-7",
        password: "Pw1",
        database: "mydb",
        version: "16.4",
        endpoints: &endpoints,
        tls_ca: None,
    });
    let all = set(&[
        "username",
        "password",
        "uris",
        "read-only-uris",
        "tls",
        "tls-ca",
    ]);
    let (plain, secrets) = split(&fields, Some(&all));
    assert_eq!(
        plain,
        bag(&[
            ("database", "mydb"),
            ("endpoints", "10.0.0.1:5432"),
            ("read-only-endpoints", "10.0.0.2:5432"),
            ("version", "16.4"),
        ])
    );
    assert_eq!(
        secrets[&SecretGroup::User],
        bag(&[
            ("username", "relation-7"),
            ("password", "Pw1"),
            ("uris", "postgresql://relation-7:Pw1@10.0.0.1:5432/mydb"),
            (
                "read-only-uris",
                "postgresql://relation-7:Pw1@10.0.0.2:5432/mydb"
            ),
        ])
    );
    // TLS off: tls-ca is empty, so left out.
    assert_eq!(secrets[&SecretGroup::Tls], bag(&[("tls", "False")]));

    // Without requested-secrets: plain text, no read-only-uris.
    let (plain, secrets) = split(&fields, None);
    assert!(secrets.is_empty());
    assert_eq!(plain["password"], "Pw1");
    assert_eq!(plain["tls"], "False");
    assert!(!plain.contains_key("read-only-uris") && !plain.contains_key("tls-ca"));

    // Only some fields requested: the others plain.
    let (plain, secrets) = split(&fields, Some(&set(&["password"])));
    assert_eq!(secrets[&SecretGroup::User], bag(&[("password", "Pw1")]));
    assert_eq!(plain["username"], "relation-7");
    assert!(!secrets.contains_key(&SecretGroup::Tls));

    // TLS on: the CA goes too.
    assert_eq!(tls_fields(Some("PEM"))[1], ("tls-ca", "PEM".to_string()));
}
