//! Carrying out the `database` relations' steps: the snap's psql as the
//! superuser (password in PGPASSWORD, SQL on stdin, nothing on a command
//! line), and the relation secrets.

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
            let sql = client::ensure_user_sql(user, password, spec, leave, database);
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
