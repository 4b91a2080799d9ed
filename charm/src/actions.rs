//! Actions, decided as pure functions of the [`Observed`] snapshot (which
//! holds the action's parameters): get-primary, promote-to-primary,
//! get-password, set-password, and the backup actions (create-backup,
//! list-backups, restore: [`backup`]). An unknown action fails with the
//! list of known ones.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::{self, ClusterMember};
use crate::context::{unit_of_member, Event};
use crate::observe::{secret_key, Observed, Passwords, SYSTEM_USERS};
use crate::plan::{ActionPlan, Step};
use crate::reconcile::PG_PORT_NUMBER;

mod backup;

pub use backup::{CREATING, NO_RELATION, RESTORING};

pub const ACTIONS: &[&str] = &[
    "create-backup",
    "get-password",
    "get-primary",
    "list-backups",
    "promote-to-primary",
    "restore",
    "set-password",
];

pub fn plan_action(o: &Observed) -> ActionPlan {
    let Event::Action { name, .. } = &o.event else {
        return ActionPlan::default();
    };
    if o.disabled {
        return ActionPlan::fail("the charm is disabled on this unit (the disable file exists)");
    }
    match name.as_str() {
        "get-primary" => get_primary(o),
        "promote-to-primary" => promote_to_primary(o),
        "get-password" => get_password(o),
        "set-password" => set_password(o),
        "create-backup" => backup::create_backup(o),
        "list-backups" => backup::list_backups(o),
        "restore" => backup::restore(o),
        other => ActionPlan::fail(format!(
            "unknown action {other:?}: this charm's actions are {}",
            ACTIONS.join(", ")
        )),
    }
}

fn param_str<'a>(o: &'a Observed, key: &str) -> Option<&'a str> {
    o.action_params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn cluster_view(o: &Observed) -> Result<&[ClusterMember], ActionPlan> {
    o.cluster.as_deref().ok_or_else(|| {
        ActionPlan::fail(
            "the cluster's state cannot be read on this unit (is pgpilot running? see juju status)",
        )
    })
}

fn get_primary(o: &Observed) -> ActionPlan {
    let members = match cluster_view(o) {
        Ok(m) => m,
        Err(p) => return p,
    };
    match cluster::leader(members) {
        Some(l) => ActionPlan::result("primary", unit_of_member(&l.name)),
        None => ActionPlan::fail("the cluster has no primary right now"),
    }
}

fn promote_to_primary(o: &Observed) -> ActionPlan {
    let scope = param_str(o, "scope").unwrap_or("unit");
    let force = o
        .action_params
        .get("force")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match scope {
        "unit" => {}
        "cluster" => {
            return ActionPlan::fail(
                "scope=cluster promotes a standby cluster (asynchronous replication), which this charm does not support yet",
            )
        }
        _ => return ActionPlan::fail("Scope should be either cluster or unit"),
    }
    let members = match cluster_view(o) {
        Ok(m) => m,
        Err(p) => return p,
    };
    let me = o.member();
    let Some(mine) = members.iter().find(|m| m.name == me) else {
        return ActionPlan::fail(format!("{} is not a member of the cluster yet", o.unit));
    };
    if mine.is_leader() {
        return ActionPlan::result("result", format!("{} is already the primary", o.unit));
    }
    let mut plan = ActionPlan::default();
    if force {
        plan.progress
            .push(format!("failing over to {} (force)", o.unit));
        plan.steps.push(Step::Failover { candidate: me });
    } else {
        let Some(leader) = cluster::leader(members) else {
            return ActionPlan::fail(
                "the cluster has no primary to switch over from: run with force=true to fail over",
            );
        };
        if !mine.is_healthy() {
            return ActionPlan::fail(format!(
                "{} is {}, not a healthy replica: wait, or run with force=true",
                o.unit, mine.state
            ));
        }
        plan.progress.push(format!(
            "switching over from {} to {}",
            unit_of_member(&leader.name),
            o.unit
        ));
        plan.steps.push(Step::Switchover {
            leader: leader.name.clone(),
            candidate: me,
        });
    }
    plan.results
        .insert("result".into(), format!("{} is the primary", o.unit));
    plan
}

/// The passwords in force: the application secret, `system-users` over it.
pub fn effective_passwords(o: &Observed) -> Result<Passwords, String> {
    let content =
        o.secrets.app_secret.as_ref().ok_or(
            "the passwords are not generated yet (the leader does that first)".to_string(),
        )?;
    let mut passwords: Passwords = SYSTEM_USERS
        .iter()
        .filter_map(|u| Some((u.to_string(), content.get(&secret_key(u))?.clone())))
        .collect();
    if let Some(Ok(user)) = &o.secrets.user_secret {
        for (k, v) in user {
            passwords.insert(k.clone(), v.clone());
        }
    }
    Ok(passwords)
}

fn username(o: &Observed) -> Result<String, ActionPlan> {
    let user = param_str(o, "username").unwrap_or("operator");
    if SYSTEM_USERS.contains(&user) {
        Ok(user.to_string())
    } else {
        Err(ActionPlan::fail(format!(
            "The action can be run only for system users: {}",
            SYSTEM_USERS.join(", ")
        )))
    }
}

fn get_password(o: &Observed) -> ActionPlan {
    let user = match username(o) {
        Ok(u) => u,
        Err(p) => return p,
    };
    match effective_passwords(o) {
        Ok(p) => match p.get(&user) {
            Some(pw) => ActionPlan::result("password", pw.clone()),
            None => ActionPlan::fail(format!("no password for {user} yet")),
        },
        Err(e) => ActionPlan::fail(e),
    }
}

fn set_password(o: &Observed) -> ActionPlan {
    if !o.is_leader {
        return ActionPlan::fail("The action can be run only on leader unit");
    }
    if o.config
        .get("system-users")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return ActionPlan::fail(
            "the passwords come from the system-users secret (config option): update that secret instead",
        );
    }
    let user = match username(o) {
        Ok(u) => u,
        Err(p) => return p,
    };
    let (Some(id), Some(content)) = (&o.secrets.app_secret_id, &o.secrets.app_secret) else {
        return ActionPlan::fail("the passwords are not generated yet");
    };
    let new = param_str(o, "password")
        .map(str::to_string)
        .or_else(|| o.host.fresh_passwords.get(&user).cloned())
        .unwrap_or_default();
    if new.is_empty() {
        return ActionPlan::fail("The action requires a password");
    }
    let key = secret_key(&user);
    if content.get(&key) == Some(&new) {
        let mut plan = ActionPlan::result("password", new);
        plan.progress
            .push("The old and new passwords are equal.".into());
        return plan;
    }
    let mut plan = ActionPlan::default();
    // Roles in PostgreSQL change first (as the superuser, with its current
    // password); the secret, then every unit's pgpilot (rolling), follow.
    if matches!(user.as_str(), "operator" | "replication") {
        let members = match cluster_view(o) {
            Ok(m) => m,
            Err(p) => return p,
        };
        let Some(primary) = cluster::leader(members).filter(|l| l.is_healthy()) else {
            return ActionPlan::fail(
                "Failed changing the password: the cluster has no healthy primary right now",
            );
        };
        let Some(superuser_password) = content.get(&secret_key("operator")).cloned() else {
            return ActionPlan::fail("the operator's password is missing from the secret");
        };
        plan.steps.push(Step::AlterRolePassword {
            host: primary.host_only().to_string(),
            port: primary
                .host
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(PG_PORT_NUMBER),
            role: user.clone(),
            password: new.clone(),
            superuser_password,
        });
    }
    let mut updated: BTreeMap<String, String> = content.clone();
    updated.insert(key, new.clone());
    plan.steps.push(Step::UpdateAppSecret {
        id: id.clone(),
        content: updated,
    });
    plan.results.insert("password".into(), new);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Role;
    use crate::config::Machine;
    use crate::context::HookContext;
    use crate::observe::HostFacts;
    use crate::testing::member;
    use serde_json::json;

    fn observed(action: &str, params: Value, leader: bool) -> Observed {
        let env: BTreeMap<String, String> = [
            ("JUJU_DISPATCH_PATH", format!("actions/{action}")),
            ("JUJU_UNIT_NAME", "postgresql/1".to_string()),
            ("JUJU_CHARM_DIR", "/charm".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let ctx = HookContext::from_env(&env).unwrap();
        let host = HostFacts {
            now: 0,
            machine: Machine {
                memory_mb: 4096,
                cpus: 2,
            },
            arch: "amd64".into(),
            fresh_passwords: SYSTEM_USERS
                .iter()
                .map(|u| (u.to_string(), format!("fresh-{u}")))
                .collect(),
            fresh_client_passwords: vec!["Fresh0client0pw0".into()],
            wake_command: None,
        };
        let mut o = Observed::empty(&ctx, host);
        o.is_leader = leader;
        o.action_params = params.as_object().cloned().unwrap_or_default();
        o.secrets.app_secret_id = Some("secret:app".into());
        o.secrets.app_secret = Some(
            SYSTEM_USERS
                .iter()
                .map(|u| (secret_key(u), format!("{u}-pw")))
                .collect(),
        );
        o.cluster = Some(vec![
            member(0, Role::Leader, "running"),
            member(1, Role::SyncStandby, "streaming"),
            member(2, Role::Replica, "streaming"),
        ]);
        o
    }

    fn steps(p: &ActionPlan) -> Vec<String> {
        p.steps.iter().map(Step::describe).collect()
    }

    #[test]
    fn get_primary_names_the_unit() {
        let p = plan_action(&observed("get-primary", json!({}), false));
        assert_eq!(p.results["primary"], "postgresql/0");
        let mut o = observed("get-primary", json!({}), false);
        o.cluster = None;
        assert!(plan_action(&o).failure.unwrap().contains("cannot be read"));
    }

    #[test]
    fn promote_switches_over_or_fails_over() {
        let p = plan_action(&observed(
            "promote-to-primary",
            json!({"scope": "unit"}),
            false,
        ));
        assert_eq!(
            p.steps,
            vec![Step::Switchover {
                leader: "postgresql-0".into(),
                candidate: "postgresql-1".into()
            }]
        );
        let p = plan_action(&observed(
            "promote-to-primary",
            json!({"scope": "unit", "force": true}),
            false,
        ));
        assert_eq!(
            p.steps,
            vec![Step::Failover {
                candidate: "postgresql-1".into()
            }]
        );
        let p = plan_action(&observed(
            "promote-to-primary",
            json!({"scope": "x"}),
            false,
        ));
        assert_eq!(
            p.failure.as_deref(),
            Some("Scope should be either cluster or unit")
        );
        assert!(p.steps.is_empty());
        let mut o = observed("promote-to-primary", json!({}), false);
        o.cluster.as_mut().unwrap()[1].state = "creating replica".into();
        let p = plan_action(&o);
        assert!(
            p.failure
                .as_deref()
                .unwrap()
                .contains("creating replica, not a healthy replica"),
            "{p:?}"
        );
    }

    #[test]
    fn passwords() {
        let p = plan_action(&observed("get-password", json!({}), false));
        assert_eq!(p.results["password"], "operator-pw");
        let p = plan_action(&observed(
            "get-password",
            json!({"username": "postgres"}),
            false,
        ));
        assert!(p
            .failure
            .unwrap()
            .starts_with("The action can be run only for system users"));
        let mut o = observed("get-password", json!({"username": "replication"}), false);
        o.secrets.user_secret = Some(Ok([("replication".to_string(), "mine".to_string())].into()));
        assert_eq!(plan_action(&o).results["password"], "mine");

        let p = plan_action(&observed("set-password", json!({}), false));
        assert_eq!(
            p.failure.as_deref(),
            Some("The action can be run only on leader unit")
        );
        let p = plan_action(&observed("set-password", json!({"password": "n3w"}), true));
        assert_eq!(
            steps(&p),
            vec![
                "ALTER ROLE operator PASSWORD <redacted> on 10.0.0.1",
                "secret-set secret:app (4 keys)"
            ]
        );
        assert_eq!(p.results["password"], "n3w");
        let p = plan_action(&observed(
            "set-password",
            json!({"username": "patroni", "password": "patroni-pw"}),
            true,
        ));
        assert!(p.steps.is_empty());
        assert_eq!(p.progress, vec!["The old and new passwords are equal."]);
        let p = plan_action(&observed(
            "set-password",
            json!({"username": "patroni"}),
            true,
        ));
        assert_eq!(steps(&p), vec!["secret-set secret:app (4 keys)"]);
    }

    #[test]
    fn unknown_action_fails_with_the_list() {
        let p = plan_action(&observed("make-coffee", json!({}), false));
        assert_eq!(
            p.failure.as_deref(),
            Some("unknown action \"make-coffee\": this charm's actions are create-backup, get-password, get-primary, list-backups, promote-to-primary, restore, set-password")
        );
    }
}
