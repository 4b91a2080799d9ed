//! Carry out a [`Plan`] (or an [`ActionPlan`]) in order through the two
//! seams. The first step that fails stops the rest; etcd refusing to
//! promote a learner that has not caught up stops them quietly (the next
//! hook tries again) instead of failing the hook.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::etcd;
use crate::peer;
use crate::plan::{ActionPlan, Plan, Step};
use crate::snap::{SnapDriver, SnapError};
use crate::tools::{HookTools, LogLevel, NewSecret, SecretOwner, ToolError};

mod backup;
mod client;
mod etcd_client;
mod extensions;
mod tls;

const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a hook waits for its etcd to answer after a restart.
const ETCD_HEALTHY_WAIT: Duration = Duration::from_secs(60);
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{step}: {source}")]
    Tool {
        step: String,
        #[source]
        source: ToolError,
    },
    #[error("{step}: {source}")]
    Snap {
        step: String,
        #[source]
        source: SnapError,
    },
    #[error("{step}: there is no peer relation to write to")]
    NoRelation { step: String },
    #[error("{step}: {message}")]
    Tls { step: String, message: String },
    /// A step that says itself what went wrong (the backup actions).
    #[error("{0}")]
    Failed(String),
}

/// How far a plan got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Stopped early without an error: the next hook goes on.
    NotYet(String),
}

/// Where the plan writes.
pub struct Target<'a> {
    pub tools: &'a dyn HookTools,
    pub snap: &'a dyn SnapDriver,
    /// The peer relation (`database-peers:3`), if there is one.
    pub relation_id: Option<&'a str>,
}

impl Target<'_> {
    fn relation(&self, step: &Step) -> Result<&str, ApplyError> {
        self.relation_id.ok_or_else(|| ApplyError::NoRelation {
            step: step.describe(),
        })
    }

    fn tool<T>(&self, step: &Step, r: Result<T, ToolError>) -> Result<T, ApplyError> {
        r.map_err(|source| ApplyError::Tool {
            step: step.describe(),
            source,
        })
    }

    fn snapped<T>(&self, step: &Step, r: Result<T, SnapError>) -> Result<T, ApplyError> {
        r.map_err(|source| ApplyError::Snap {
            step: step.describe(),
            source,
        })
    }

    fn ctl(&self, step: &Step, args: Vec<String>, timeout: Duration) -> Result<(), ApplyError> {
        let r = self.snap.run_app("patronictl", &args, timeout);
        self.snapped(step, r).map(drop)
    }
}

/// `edit-config` takes values as text: JSON for non-strings.
fn ctl_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The SQL that changes a role's password without logging it.
pub fn alter_role_sql(role: &str, password: &str) -> String {
    let ident = role.replace('"', "\"\"");
    let literal = password.replace('\'', "''");
    format!(
        "BEGIN;\nSET LOCAL log_statement = 'none';\nALTER ROLE \"{ident}\" WITH PASSWORD '{literal}';\nCOMMIT;\n"
    )
}

/// The `patronictl` argv of the pgpilot steps.
pub fn ctl_args(step: &Step) -> Option<Vec<String>> {
    let s = |items: &[&str]| items.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Some(match step {
        Step::PatchClusterConfig {
            settings,
            parameters,
        } => {
            let mut a = s(&["edit-config", "--force", "--quiet"]);
            for (k, v) in settings {
                a.extend(["-s".to_string(), format!("{k}={}", ctl_value(v))]);
            }
            for (k, v) in parameters {
                a.extend(["-p".to_string(), format!("{k}={}", ctl_value(v))]);
            }
            a
        }
        Step::RestartMember(m) => s(&["restart", m, "--pending", "--force"]),
        Step::ReinitMember(m) => s(&["reinit", m, "--force"]),
        Step::Switchover { leader, candidate } => s(&[
            "switchover",
            "--leader",
            leader,
            "--candidate",
            candidate,
            "--force",
        ]),
        Step::Failover { candidate } => s(&["failover", "--candidate", candidate, "--force"]),
        _ => return None,
    })
}

pub fn apply_step(t: &Target<'_>, step: &Step) -> Result<Applied, ApplyError> {
    match step {
        Step::ShowStatus(s) => t.tool(step, t.tools.status_set(false, s))?,
        Step::InstallSnapFile(path) => t.snapped(step, t.snap.install_file(path))?,
        Step::InstallSnapRevision(rev) => t.snapped(step, t.snap.install_revision(rev))?,
        Step::HoldSnap => t.snapped(step, t.snap.hold())?,
        Step::SetWorkloadVersion(v) => t.tool(step, t.tools.application_version_set(v))?,
        Step::OpenPort(p) => t.tool(step, t.tools.open_port(p))?,
        Step::SetUnitData(data) => {
            let rid = t.relation(step)?;
            t.tool(step, t.tools.relation_set(rid, false, data))?
        }
        Step::SetAppData(data) => {
            let rid = t.relation(step)?;
            t.tool(step, t.tools.relation_set(rid, true, data))?
        }
        Step::SetRelationData {
            relation_id,
            app,
            data,
        } => t.tool(step, t.tools.relation_set(relation_id, *app, data))?,
        Step::CreateAppSecret { label, content } => {
            let rid = t.relation(step)?;
            let secret = NewSecret {
                label: Some(label.clone()),
                description: Some("passwords of the system users".into()),
                owner: SecretOwner::Application,
                content: content.clone(),
            };
            let uri = t.tool(step, t.tools.secret_add(&secret))?;
            let data: BTreeMap<String, String> = [(peer::APP_SECRET_ID.to_string(), uri)].into();
            t.tool(step, t.tools.relation_set(rid, true, &data))?
        }
        Step::UpdateAppSecret { id, content } => t.tool(step, t.tools.secret_set(id, content))?,
        Step::RemoveSecretRevision { id, revision } => {
            t.tool(step, t.tools.secret_remove(id, Some(*revision)))?
        }
        Step::EtcdAddLearner {
            name,
            peer_url,
            endpoints,
        } => {
            let args = etcd::member_add_learner_args(endpoints, name, peer_url);
            let r = t.snap.run_app("etcdctl", &args, ETCD_TIMEOUT);
            t.snapped(step, r)?;
        }
        Step::EtcdPromote {
            id,
            name,
            endpoints,
        } => {
            let args = etcd::member_promote_args(endpoints, *id);
            match t.snap.run_app("etcdctl", &args, ETCD_TIMEOUT) {
                Ok(_) => {}
                Err(e) if e.stderr().is_some_and(etcd::is_not_caught_up) => {
                    return Ok(Applied::NotYet(format!(
                        "etcd member {name} has not caught up yet: promoted by a later hook"
                    )))
                }
                Err(e) => {
                    return Err(ApplyError::Snap {
                        step: step.describe(),
                        source: e,
                    })
                }
            }
        }
        Step::EtcdRemove { id, endpoints, .. } => {
            let args = etcd::member_remove_args(endpoints, *id);
            match t.snap.run_app("etcdctl", &args, ETCD_TIMEOUT) {
                Ok(_) => {}
                // Gone already (another unit removed it): done.
                Err(e) if e.stderr().is_some_and(|s| s.contains("member not found")) => {}
                Err(e) => {
                    return Err(ApplyError::Snap {
                        step: step.describe(),
                        source: e,
                    })
                }
            }
        }
        Step::EtcdUpdatePeer {
            id,
            peer_url,
            endpoints,
            ..
        } => {
            let args = etcd::member_update_args(endpoints, *id, peer_url);
            let r = t.snap.run_app("etcdctl", &args, ETCD_TIMEOUT);
            t.snapped(step, r)?;
        }
        Step::EtcdWaitHealthy { endpoint } => {
            let args = etcd::endpoint_health_args(endpoint);
            let deadline = std::time::Instant::now() + ETCD_HEALTHY_WAIT;
            while t.snap.run_app("etcdctl", &args, ETCD_TIMEOUT).is_err() {
                if std::time::Instant::now() >= deadline {
                    return Ok(Applied::NotYet(format!(
                        "etcd at {endpoint} is not healthy {}s after its restart: checked again by a later hook",
                        ETCD_HEALTHY_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Step::SnapSet(pairs) => t.snapped(step, t.snap.set(pairs))?,
        Step::StartServices(services) => t.snapped(step, t.snap.start(services, true))?,
        Step::StopServices(services) => t.snapped(step, t.snap.stop(services, true))?,
        Step::PatchClusterConfig { .. }
        | Step::RestartMember(_)
        | Step::ReinitMember(_)
        | Step::Failover { .. } => {
            t.ctl(step, ctl_args(step).expect("a pgpilot step"), CTL_TIMEOUT)?
        }
        Step::Switchover { .. } => t.ctl(
            step,
            ctl_args(step).expect("a pgpilot step"),
            SWITCHOVER_TIMEOUT,
        )?,
        Step::SetExtensions { .. } => extensions::set_extensions(t, step, CTL_TIMEOUT)?,
        Step::PublishEtcdClient { .. } => etcd_client::publish(t, step)?,
        Step::RequestCertificate { .. } => tls::request_certificate(t, step)?,
        Step::EnsureClientUser { .. }
        | Step::DropClientUser { .. }
        | Step::CreateRelationSecret { .. }
        | Step::RemoveSecret { .. } => client::apply(t, step, CTL_TIMEOUT)?,
        Step::CreateBackup { .. } => backup::create_backup(t, step)?,
        Step::Restore { .. } => backup::restore(t, step)?,
        Step::AlterRolePassword {
            host,
            port,
            role,
            password,
            superuser_password,
        } => {
            let args: Vec<String> = [
                "-h",
                host,
                "-p",
                &port.to_string(),
                "-U",
                "operator",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let env = [("PGPASSWORD".to_string(), superuser_password.clone())];
            let sql = alter_role_sql(role, password);
            let r = t
                .snap
                .run_app_with("psql", &args, Some(&sql), &env, CTL_TIMEOUT);
            t.snapped(step, r)?;
        }
    }
    Ok(Applied::Done)
}

/// Logs, steps in order, then the statuses (also after a quiet stop).
pub fn apply(t: &Target<'_>, plan: &Plan) -> Result<Applied, ApplyError> {
    for (level, message) in &plan.logs {
        let _ = t.tools.juju_log(*level, message);
    }
    let mut outcome = Applied::Done;
    for step in &plan.steps {
        let _ = t.tools.juju_log(LogLevel::Debug, &step.describe());
        if let Applied::NotYet(reason) = apply_step(t, step)? {
            let _ = t.tools.juju_log(LogLevel::Info, &reason);
            outcome = Applied::NotYet(reason);
            break;
        }
    }
    if let Some(s) = &plan.unit_status {
        t.tool(&Step::ShowStatus(s.clone()), t.tools.status_set(false, s))?;
    }
    if let Some(s) = &plan.app_status {
        t.tool(&Step::ShowStatus(s.clone()), t.tools.status_set(true, s))?;
    }
    Ok(outcome)
}

/// An action: progress, steps, then results or action-fail. Never an
/// error: a failing step fails the action with its message.
pub fn apply_action(t: &Target<'_>, plan: &ActionPlan) -> Result<(), ToolError> {
    if let Some(message) = &plan.failure {
        return t.tools.action_fail(message);
    }
    for line in &plan.progress {
        t.tools.action_log(line)?;
    }
    for step in &plan.steps {
        match apply_step(t, step) {
            Ok(Applied::Done) => {}
            Ok(Applied::NotYet(reason)) => return t.tools.action_fail(&reason),
            Err(e) => return t.tools.action_fail(&e.to_string()),
        }
    }
    if !plan.results.is_empty() {
        t.tools.action_set(&plan.results)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pgpilot_steps_argv() {
        let patch = Step::PatchClusterConfig {
            settings: vec![
                ("synchronous_node_count".into(), json!(2)),
                ("synchronous_mode".into(), json!(true)),
            ],
            parameters: vec![
                ("work_mem".into(), json!(8192)),
                ("DateStyle".into(), json!("ISO, DMY")),
                ("max_connections".into(), Value::Null),
            ],
        };
        assert_eq!(
            ctl_args(&patch).unwrap(),
            vec![
                "edit-config",
                "--force",
                "--quiet",
                "-s",
                "synchronous_node_count=2",
                "-s",
                "synchronous_mode=true",
                "-p",
                "work_mem=8192",
                "-p",
                "DateStyle=ISO, DMY",
                "-p",
                "max_connections=null",
            ]
        );
        assert_eq!(
            ctl_args(&Step::RestartMember("postgresql-1".into())).unwrap(),
            vec!["restart", "postgresql-1", "--pending", "--force"]
        );
        assert_eq!(
            ctl_args(&Step::ReinitMember("postgresql-1".into())).unwrap(),
            vec!["reinit", "postgresql-1", "--force"]
        );
        assert_eq!(
            ctl_args(&Step::Switchover {
                leader: "postgresql-0".into(),
                candidate: "postgresql-1".into()
            })
            .unwrap()
            .join(" "),
            "switchover --leader postgresql-0 --candidate postgresql-1 --force"
        );
        assert_eq!(
            ctl_args(&Step::Failover {
                candidate: "postgresql-1".into()
            })
            .unwrap()
            .join(" "),
            "failover --candidate postgresql-1 --force"
        );
        assert_eq!(ctl_args(&Step::HoldSnap), None);
    }

    #[test]
    fn alter_role_quotes_the_password() {
        assert_eq!(
            alter_role_sql("operator", "it's"),
            "BEGIN;\nSET LOCAL log_statement = 'none';\nALTER ROLE \"operator\" WITH PASSWORD 'it''s';\nCOMMIT;\n"
        );
    }
}
