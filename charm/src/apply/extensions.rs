//! Carrying out [`Step::SetExtensions`]: the snap's psql on the primary, as
//! the superuser (password in PGPASSWORD), the SQL on stdin.

use std::time::Duration;

use super::{ApplyError, Target};
use crate::extensions;
use crate::plan::Step;

pub(super) fn set_extensions(
    t: &Target<'_>,
    step: &Step,
    timeout: Duration,
) -> Result<(), ApplyError> {
    let Step::SetExtensions {
        host,
        port,
        database,
        create,
        drop,
        superuser_password,
    } = step
    else {
        unreachable!("called for SetExtensions only")
    };
    let args = extensions::psql_args(host, *port, database);
    let sql = extensions::change_sql(create, drop);
    let env = [("PGPASSWORD".to_string(), superuser_password.clone())];
    let r = t
        .snap
        .run_app_with("psql", &args, Some(&sql), &env, timeout);
    t.snapped(step, r).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::apply::apply_step;
    use crate::snap::SnapCli;
    use crate::tools::ProcessTools;

    #[test]
    fn psql_gets_the_sql_on_stdin_and_the_password_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        let out = dir.path();
        std::fs::write(
            &snap,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {o}/argv\nprintf '%s' \"$PGPASSWORD\" > {o}/password\ncat > {o}/stdin\n",
                o = out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&snap, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = SnapCli {
            program: snap,
            timeout: Duration::from_secs(10),
        };
        let tools = ProcessTools::in_dir(dir.path());
        let t = Target {
            tools: &tools,
            snap: &cli,
            relation_id: None,
        };
        let step = Step::SetExtensions {
            host: "10.0.0.1".into(),
            port: 5432,
            database: "app".into(),
            create: vec!["uuid-ossp".into()],
            drop: vec!["pg_trgm".into()],
            superuser_password: "s3cret".into(),
        };
        apply_step(&t, &step).unwrap();
        let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
        let argv = read("argv");
        assert!(argv.starts_with("run\ncharmed-postgresql.psql\n-h\n10.0.0.1\n-p\n5432\n-U\noperator\n-d\ndbname='app'\n"), "{argv}");
        assert!(!argv.contains("s3cret") && !argv.contains("EXTENSION"));
        assert_eq!(read("password"), "s3cret");
        assert_eq!(
            read("stdin"),
            extensions::change_sql(&["uuid-ossp".into()], &["pg_trgm".into()])
        );
    }
}
