//! `pgpilot ctl restart`, `reload` and `reinit`: one REST call per member
//! (`POST /restart`, `/reload`, `/reinitialize`), with patronictl's output
//! (`Success: restart on member m1` / `Failed: ...`).

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use super::rest::{self, body_text, confirm, print};
use super::{CtlError, Target};
use crate::api::member::postgres_version_to_int;
use crate::cluster::{ClusterView, Member};
use crate::status::NodeStatus;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleFilter {
    /// The leader.
    #[value(alias = "leader", alias = "master")]
    Primary,
    Replica,
    Any,
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// Members to restart [default: every member].
    #[arg(value_name = "MEMBER")]
    pub members: Vec<String>,
    /// Only members with this role.
    #[arg(short, long, value_enum, default_value_t = RoleFilter::Any)]
    pub role: RoleFilter,
    /// Only members whose PostgreSQL has a changed parameter that needs a restart.
    #[arg(long)]
    pub pending: bool,
    /// Only members running a PostgreSQL older than this version (e.g. 15.6).
    #[arg(long = "pg-version", value_name = "VERSION")]
    pub pg_version: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReloadArgs {
    /// Members to reload [default: every member].
    #[arg(value_name = "MEMBER")]
    pub members: Vec<String>,
    /// Only members with this role.
    #[arg(short, long, value_enum, default_value_t = RoleFilter::Any)]
    pub role: RoleFilter,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReinitArgs {
    /// Replicas to reinitialize.
    #[arg(value_name = "MEMBER", required = true)]
    pub members: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
    /// Wait until each member runs again, cloned afresh.
    #[arg(long)]
    pub wait: bool,
}

/// The members named (all when none), filtered by role; replicas first,
/// the leader last (a restart of the leader interrupts writes).
pub fn select<'a>(
    view: &'a ClusterView,
    names: &[String],
    role: RoleFilter,
    scope: &str,
) -> Result<Vec<&'a Member>, CtlError> {
    let mut chosen: Vec<&Member> = if names.is_empty() {
        view.members.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in names {
            let m = rest::member(view, name, scope)?;
            if !v.iter().any(|x: &&Member| x.name == m.name) {
                v.push(m);
            }
        }
        v
    };
    let leader = view.leader_name();
    chosen.retain(|m| {
        let is_leader = Some(m.name.as_str()) == leader;
        match role {
            RoleFilter::Any => true,
            RoleFilter::Primary => is_leader,
            RoleFilter::Replica => !is_leader,
        }
    });
    chosen.sort_by_key(|m| (Some(m.name.as_str()) == leader, m.name.clone()));
    Ok(chosen)
}

fn names(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A restart or reinitialize waits for a stop and a start on the member.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

pub fn restart_body(args: &RestartArgs) -> Result<serde_json::Value, CtlError> {
    let mut body = json!({});
    if args.pending {
        body["restart_pending"] = json!(true);
    }
    match args.role {
        RoleFilter::Primary => body["role"] = json!("primary"),
        RoleFilter::Replica => body["role"] = json!("replica"),
        RoleFilter::Any => {}
    }
    if let Some(v) = &args.pg_version {
        if postgres_version_to_int(v).is_none() {
            return Err(CtlError::usage(format!(
                "--pg-version {v:?} is not a PostgreSQL version such as 15.6"
            )));
        }
        body["postgres_version"] = json!(v);
    }
    Ok(body)
}

pub async fn run_restart(target: &Target, args: &RestartArgs) -> Result<(), CtlError> {
    let body = restart_body(args)?;
    async {
        let (_, view) = super::fetch_view(target).await?;
        let mut members = select(&view, &args.members, args.role, &target.scope)?;
        if args.pending {
            members.retain(|m| m.status.pending_restart);
        }
        if members.is_empty() {
            return print("No member matches: nothing to restart\n");
        }
        confirm(
            &format!(
                "Are you sure you want to restart members {}?",
                names(&members)
            ),
            args.force,
        )?;
        let client = rest::client(target, COMMAND_TIMEOUT)?;
        let mut failed = 0;
        for member in members {
            match client
                .request(Method::POST, &rest::url(member, "/restart"), Some(&body))
                .await
            {
                Ok(reply) if reply.is_success() => {
                    print(&format!("Success: restart on member {}\n", member.name))?
                }
                Ok(reply) => {
                    failed += 1;
                    print(&format!(
                        "Failed: restart for member {}, status code={}, ({})\n",
                        member.name,
                        reply.status,
                        body_text(&reply)
                    ))?
                }
                Err(e) => {
                    failed += 1;
                    print(&format!(
                        "Failed: restart for member {}, ({e})\n",
                        member.name
                    ))?
                }
            }
        }
        outcome("restart", failed)
    }
    .await
}

fn outcome(what: &str, failed: usize) -> Result<(), CtlError> {
    if failed == 0 {
        Ok(())
    } else {
        Err(CtlError::failure(format!(
            "{what} failed on {failed} member{}",
            if failed == 1 { "" } else { "s" }
        )))
    }
}

pub async fn run_reload(target: &Target, args: &ReloadArgs) -> Result<(), CtlError> {
    async {
        let (_, view) = super::fetch_view(target).await?;
        let members = select(&view, &args.members, args.role, &target.scope)?;
        if members.is_empty() {
            return print("No member matches: nothing to reload\n");
        }
        confirm(
            &format!(
                "Are you sure you want to reload members {}?",
                names(&members)
            ),
            args.force,
        )?;
        let client = rest::client(target, COMMAND_TIMEOUT)?;
        let mut failed = 0;
        for member in members {
            match client
                .request(Method::POST, &rest::url(member, "/reload"), None)
                .await
            {
                Ok(reply) if reply.is_success() => {
                    print(&format!("Success: reload on member {}\n", member.name))?
                }
                Ok(reply) => {
                    failed += 1;
                    print(&format!(
                        "Failed: reload for member {}, status code={}, ({})\n",
                        member.name,
                        reply.status,
                        body_text(&reply)
                    ))?
                }
                Err(e) => {
                    failed += 1;
                    print(&format!(
                        "Failed: reload for member {}, ({e})\n",
                        member.name
                    ))?
                }
            }
        }
        outcome("reload", failed)
    }
    .await
}

pub async fn run_reinit(target: &Target, args: &ReinitArgs) -> Result<(), CtlError> {
    async {
        let (_, view) = super::fetch_view(target).await?;
        let members = select(&view, &args.members, RoleFilter::Any, &target.scope)?;
        confirm(
            &format!(
                "Are you sure you want to reinitialize members {}?",
                names(&members)
            ),
            args.force,
        )?;
        let client = rest::client(target, COMMAND_TIMEOUT)?;
        let probe = rest::client(target, Duration::from_secs(3))?;
        let body = json!({ "force": args.force });
        let mut failed = 0;
        let mut started = Vec::new();
        for member in members {
            let status_url = rest::url(member, "/patroni");
            let before = probe
                .get_json::<NodeStatus>(&status_url)
                .await
                .ok()
                .and_then(|s| s.postmaster_start_time);
            match client
                .request(
                    Method::POST,
                    &rest::url(member, "/reinitialize"),
                    Some(&body),
                )
                .await
            {
                Ok(reply) if reply.is_success() => {
                    print(&format!(
                        "Success: reinitialize for member {}\n",
                        member.name
                    ))?;
                    started.push((member, status_url, before));
                }
                Ok(reply) => {
                    failed += 1;
                    print(&format!(
                        "Failed: reinitialize for member {}, status code={}, ({})\n",
                        member.name,
                        reply.status,
                        body_text(&reply)
                    ))?
                }
                Err(e) => {
                    failed += 1;
                    print(&format!(
                        "Failed: reinitialize for member {}, ({e})\n",
                        member.name
                    ))?
                }
            }
        }
        if args.wait && !started.is_empty() {
            let waiting: Vec<&Member> = started.iter().map(|(m, _, _)| *m).collect();
            print(&format!(
                "Waiting for reinitialize to complete on: {}\n",
                names(&waiting)
            ))?;
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            for (member, url, before) in &started {
                loop {
                    let done = probe
                        .get_json::<NodeStatus>(url)
                        .await
                        .ok()
                        .is_some_and(|s| {
                            s.state == crate::cluster::PgState::Running
                                && s.postmaster_start_time.is_some()
                                && s.postmaster_start_time != *before
                        });
                    if done {
                        print(&format!("Reinitialize is completed on: {}\n", member.name))?;
                        break;
                    }
                    if Instant::now() > deadline {
                        failed += 1;
                        print(&format!(
                            "Failed: reinitialize of member {} did not complete within {}s\n",
                            member.name,
                            COMMAND_TIMEOUT.as_secs()
                        ))?;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        outcome("reinitialize", failed)
    }
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{LeaderKey, MemberStatus, PgState, Role};
    use crate::config::Tags;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            status: MemberStatus {
                conn_url: "postgres://127.0.0.1:5432/postgres".into(),
                api_url: "http://127.0.0.1:8008/patroni".into(),
                state: PgState::Running,
                role: Role::Replica,
                version: "x".into(),
                xlog_location: None,
                received_location: None,
                replayed_location: None,
                timeline: Some(1),
                replication_state: None,
                tags: Tags::default(),
                pending_restart: false,
                postmaster_start_time: None,
            },
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            leader: Some(LeaderKey {
                name: "m1".into(),
                revision: 1,
                lease: 1,
            }),
            members: vec![member("m1"), member("m2"), member("m3")],
            ..Default::default()
        }
    }

    fn picked(names: &[&str], role: RoleFilter) -> Result<Vec<String>, CtlError> {
        let v = view();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        Ok(select(&v, &names, role, "e2e")?
            .into_iter()
            .map(|m| m.name.clone())
            .collect())
    }

    #[test]
    fn replicas_first_leader_last() {
        assert_eq!(picked(&[], RoleFilter::Any).unwrap(), ["m2", "m3", "m1"]);
        assert_eq!(picked(&[], RoleFilter::Primary).unwrap(), ["m1"]);
        assert_eq!(picked(&[], RoleFilter::Replica).unwrap(), ["m2", "m3"]);
        assert_eq!(
            picked(&["m1", "m3", "m3"], RoleFilter::Any).unwrap(),
            ["m3", "m1"]
        );
        assert_eq!(
            picked(&["m1"], RoleFilter::Replica).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_member_is_named() {
        let e = picked(&["m9"], RoleFilter::Any).unwrap_err();
        assert_eq!(e.code, crate::exit::FAILURE);
        assert!(
            e.message.contains("m9 is not a member of cluster e2e"),
            "{}",
            e.message
        );
    }

    #[test]
    fn restart_request_body() {
        let args = RestartArgs {
            members: vec![],
            role: RoleFilter::Replica,
            pending: true,
            pg_version: Some("15.99".into()),
            force: true,
        };
        assert_eq!(
            restart_body(&args).unwrap(),
            json!({"restart_pending": true, "role": "replica", "postgres_version": "15.99"})
        );
        let bad = RestartArgs {
            pg_version: Some("fifteen".into()),
            ..args
        };
        assert_eq!(restart_body(&bad).unwrap_err().code, crate::exit::USAGE);
    }
}
