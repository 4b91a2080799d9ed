//! Carrying out the `database` relations' steps: the snap's psql as the
//! superuser (password in PGPASSWORD, SQL on stdin, nothing on a command
//! line; a relation user's password goes as its SCRAM verifier, made here
//! with a random salt), and the relation secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ApplyError, Target};
use crate::client;
use crate::extensions;
use crate::plan::Step;
use crate::snap::SnapError;
use crate::tools::{NewSecret, SecretOwner};

/// The superuser the charm's SQL runs as.
const SUPERUSER: &str = "operator";

fn psql(
    t: &Target<'_>,
    host: &str,
    port: u16,
    database: &str,
    sql: &str,
    password: &str,
    timeout: Duration,
) -> Result<String, SnapError> {
    let args = extensions::psql_args(host, port, database);
    let env = [("PGPASSWORD".to_string(), password.to_string())];
    t.snap.run_app_with("psql", &args, Some(sql), &env, timeout)
}

pub(super) fn apply(t: &Target<'_>, step: &Step, timeout: Duration) -> Result<(), ApplyError> {
    match step {
        Step::EnsureClientUser {
            host,
            port,
            user,
            password,
            database,
            spec,
            leave,
            superuser_password,
        } => {
            let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
            let sql = client::ensure_user_sql(user, &verifier, spec, leave, database);
            let r = psql(
                t,
                host,
                *port,
                "postgres",
                &sql,
                superuser_password,
                timeout,
            );
            t.snapped(step, r)?;
            let sql = client::database_grants_sql(user);
            let r = psql(t, host, *port, database, &sql, superuser_password, timeout);
            t.snapped(step, r)?;
        }
        Step::DropClientUser {
            host,
            port,
            user,
            replicas,
            superuser_password,
        } => {
            let run = |h: &str, p: u16, db: &str, sql: &str| {
                psql(t, h, p, db, sql, superuser_password, timeout)
            };
            let out = t.snapped(
                step,
                run(host, *port, "postgres", &client::drop_prepare_sql(user)),
            )?;
            let last = out
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("[]");
            let databases = extensions::parse_databases(last).map_err(|e| ApplyError::Snap {
                step: step.describe(),
                source: SnapError::Parse {
                    command: "psql".into(),
                    output: last.to_string(),
                    error: e.to_string(),
                },
            })?;
            // A replica's read-only sessions: best effort (a member that is
            // down has none).
            for (h, p) in replicas {
                let _ = run(h, *p, "postgres", &client::terminate_sql(user));
            }
            for db in &databases {
                let sql = client::drop_owned_sql(user, SUPERUSER);
                t.snapped(step, run(host, *port, db, &sql))?;
            }
            t.snapped(
                step,
                run(host, *port, "postgres", &client::drop_role_sql(user)),
            )?;
        }
        Step::CreateRelationSecret {
            relation_id,
            label,
            key,
            content,
        } => {
            let secret = NewSecret {
                label: Some(label.clone()),
                description: Some(format!("credentials of {relation_id}")),
                owner: SecretOwner::Application,
                content: content.clone(),
            };
            let uri = t.tool(step, t.tools.secret_add(&secret))?;
            t.tool(step, t.tools.secret_grant(&uri, relation_id, None))?;
            let data: BTreeMap<String, String> = [(key.clone(), uri)].into();
            t.tool(step, t.tools.relation_set(relation_id, true, &data))?;
        }
        Step::RemoveSecret { id } => t.tool(step, t.tools.secret_remove(id, None))?,
        _ => unreachable!("called for the client steps only"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::apply::apply_step;
    use crate::client::UserSpec;
    use crate::snap::SnapCli;
    use crate::tools::ProcessTools;

    /// A `snap` that records each call (argv, PGPASSWORD, stdin) in
    /// `calls/N.*` and prints `out` (the drop's database list).
    fn fake_snap(dir: &std::path::Path, out: &str) -> SnapCli {
        let snap = dir.join("snap");
        std::fs::create_dir_all(dir.join("calls")).unwrap();
        std::fs::write(
            &snap,
            format!(
                "#!/bin/sh\nn=$(ls {d}/calls | grep -c argv)\nprintf '%s\\n' \"$@\" > {d}/calls/$n.argv\nprintf '%s' \"$PGPASSWORD\" > {d}/calls/$n.password\ncat > {d}/calls/$n.stdin\nprintf '%s\\n' '{out}'\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&snap, std::fs::Permissions::from_mode(0o755)).unwrap();
        SnapCli {
            program: snap,
            timeout: Duration::from_secs(10),
        }
    }

    /// The first line of a script after the synchronous_commit setting.
    fn first_change(script: &str) -> String {
        let rest = script.strip_prefix(client::LOCAL_COMMIT).unwrap_or(script);
        rest.lines().next().unwrap_or("").to_string()
    }

    /// (argv, password, stdin) of each call, in order.
    fn calls(dir: &std::path::Path) -> Vec<(String, String, String)> {
        let read = |n: usize, ext: &str| {
            std::fs::read_to_string(dir.join(format!("calls/{n}.{ext}"))).unwrap()
        };
        let count = std::fs::read_dir(dir.join("calls")).unwrap().count() / 3;
        (0..count)
            .map(|n| (read(n, "argv"), read(n, "password"), read(n, "stdin")))
            .collect()
    }

    #[test]
    fn a_user_is_made_with_its_verifier_never_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let cli = fake_snap(dir.path(), "");
        let tools = ProcessTools::in_dir(dir.path());
        let t = Target {
            tools: &tools,
            snap: &cli,
            relation_id: None,
        };
        let step = Step::EnsureClientUser {
            host: "10.0.0.1".into(),
            port: 5432,
            user: "relation-7".into(),
            password: "Client0password1".into(),
            database: "mydb".into(),
            spec: UserSpec::default(),
            leave: BTreeSet::new(),
            superuser_password: "su-pw".into(),
        };
        apply_step(&t, &step).unwrap();
        let c = calls(dir.path());
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].0.contains("\n-d\ndbname='postgres'\n"), "{}", c[0].0);
        assert!(c[1].0.contains("\n-d\ndbname='mydb'\n"), "{}", c[1].0);
        for (argv, password, stdin) in &c {
            assert_eq!(password, "su-pw");
            assert!(!argv.contains("Client0password1") && !argv.contains("su-pw"));
            assert!(!stdin.contains("Client0password1"), "{stdin}");
        }
        assert!(
            c[0].2.contains("PASSWORD 'SCRAM-SHA-256$4096:"),
            "{}",
            c[0].2
        );
        assert!(first_change(&c[1].2).starts_with("GRANT ALL ON SCHEMA public"));
    }

    #[test]
    fn a_drop_cleans_every_database_then_drops_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let cli = fake_snap(dir.path(), r#"["mydb","postgres"]"#);
        let tools = ProcessTools::in_dir(dir.path());
        let t = Target {
            tools: &tools,
            snap: &cli,
            relation_id: None,
        };
        let step = Step::DropClientUser {
            host: "10.0.0.1".into(),
            port: 5432,
            user: "relation-7".into(),
            replicas: vec![("10.0.0.2".into(), 5432)],
            superuser_password: "su-pw".into(),
        };
        apply_step(&t, &step).unwrap();
        let c = calls(dir.path());
        let target = |argv: &str| {
            let host = argv
                .lines()
                .skip_while(|l| *l != "-h")
                .nth(1)
                .unwrap()
                .to_string();
            let db = argv
                .lines()
                .skip_while(|l| *l != "-d")
                .nth(1)
                .unwrap()
                .to_string();
            format!("{host} {db}")
        };
        let got: Vec<(String, String)> = c
            .iter()
            .map(|(argv, _, stdin)| (target(argv), first_change(stdin)))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "10.0.0.1 dbname='postgres'".to_string(),
                    first_change(&client::drop_prepare_sql("relation-7"))
                ),
                (
                    "10.0.0.2 dbname='postgres'".to_string(),
                    client::terminate_sql("relation-7").trim_end().to_string()
                ),
                (
                    "10.0.0.1 dbname='mydb'".to_string(),
                    "REASSIGN OWNED BY \"relation-7\" TO \"operator\";".to_string()
                ),
                (
                    "10.0.0.1 dbname='postgres'".to_string(),
                    "REASSIGN OWNED BY \"relation-7\" TO \"operator\";".to_string()
                ),
                (
                    "10.0.0.1 dbname='postgres'".to_string(),
                    "DROP ROLE IF EXISTS \"relation-7\";".to_string()
                ),
            ]
        );
    }
}
