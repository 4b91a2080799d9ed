//! `pgpilot ctl switchover` and `pgpilot ctl failover`: patronictl's
//! counterparts. They check the arguments against the cluster read from
//! etcd, ask for confirmation, send `POST /switchover` (or `/failover`) to
//! the leader's REST API (another member's if the leader does not answer),
//! print the answer and, once done, the member table.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use super::rest::{self, body_text, call_first, confirm, print};
use super::{CtlError, Target};
use crate::cluster::{ClusterView, Member};
use crate::timestamp::{parse_timestamp, TimestampError};

#[derive(clap::Args, Debug)]
pub struct SwitchoverArgs {
    /// The current leader [default: the member holding the leader key].
    #[arg(long, visible_alias = "primary", alias = "master", value_name = "NAME")]
    pub leader: Option<String>,
    /// The member to hand over to [default: the most suitable replica].
    #[arg(long, value_name = "NAME")]
    pub candidate: Option<String>,
    /// When: ISO 8601 with a time zone (2030-01-01T10:00+00:00), or "now" [default: now].
    #[arg(long, value_name = "TIMESTAMP")]
    pub scheduled: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// The member to promote (it may be an asynchronous replica when there is no leader).
    #[arg(long, value_name = "NAME")]
    pub candidate: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

/// `--scheduled`: `None` for now, else the timestamp as given.
pub fn parse_scheduled(text: Option<&str>) -> Result<Option<String>, CtlError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) if t.eq_ignore_ascii_case("now") => Ok(None),
        Some(t) => match parse_timestamp(t) {
            Ok(_) => Ok(Some(t.to_string())),
            Err(TimestampError::NoTimezone) => Err(CtlError::usage(format!(
                "--scheduled {t:?} needs a time zone, e.g. {t}+00:00 or {t}Z"
            ))),
            Err(TimestampError::Unparsable) => Err(CtlError::usage(format!(
                "--scheduled {t:?} is not an ISO 8601 timestamp such as 2030-01-01T10:00:00+00:00"
            ))),
        },
    }
}

/// The request body for `POST /switchover`.
pub fn switchover_body(
    leader: &str,
    candidate: Option<&str>,
    scheduled: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({ "leader": leader });
    if let Some(c) = candidate {
        body["candidate"] = json!(c);
    }
    if let Some(s) = scheduled {
        body["scheduled_at"] = json!(s);
    }
    body
}

/// Members to send the request to: the leader, then the candidate, then the rest.
fn recipients<'a>(view: &'a ClusterView, candidate: Option<&str>) -> Vec<&'a Member> {
    let mut members = rest::leader_first(view);
    if let Some(c) = candidate {
        if let Some(pos) = members.iter().position(|m| m.name == c) {
            let m = members.remove(pos);
            let at = usize::from(view.leader_member().is_some());
            members.insert(at.min(members.len()), m);
        }
    }
    members
}

/// Long enough for the member to wait for the hand-over (2 × max(10, loop_wait) s).
fn request_timeout(view: &ClusterView) -> Duration {
    let loop_wait = view.config.as_ref().map(|c| c.loop_wait).unwrap_or(10);
    Duration::from_secs(2 * loop_wait.max(10) + 30)
}

pub async fn run_switchover(target: &Target, args: &SwitchoverArgs) -> Result<(), CtlError> {
    let scheduled = parse_scheduled(args.scheduled.as_deref())?;
    async {
        let (_, view) = super::fetch_view(target).await?;
        let leader = match (&args.leader, view.leader_name()) {
            (Some(given), Some(now)) if given != now => {
                return Err(CtlError::failure(format!(
                    "{given} is not the leader of cluster {}: {now} is",
                    target.scope
                )))
            }
            (_, Some(now)) => now.to_string(),
            (_, None) => {
                return Err(CtlError::failure(format!(
                    "cluster {} has no leader: use `pgpilot ctl failover --candidate NAME`",
                    target.scope
                )))
            }
        };
        if let Some(candidate) = &args.candidate {
            rest::member(&view, candidate, &target.scope)?;
            if *candidate == leader {
                return Err(CtlError::failure(format!(
                    "{candidate} is already the leader"
                )));
            }
        } else if view.members.iter().all(|m| m.name == leader) {
            return Err(CtlError::failure("No candidates found to switchover to"));
        }
        let when = match &scheduled {
            Some(at) => format!(" at {at}"),
            None => String::new(),
        };
        confirm(
            &format!(
                "Are you sure you want to switchover cluster {}, demoting current leader {leader}{when}?",
                target.scope
            ),
            args.force,
        )?;
        let body = switchover_body(&leader, args.candidate.as_deref(), scheduled.as_deref());
        let client = rest::client(target, request_timeout(&view))?;
        let members = recipients(&view, args.candidate.as_deref());
        let (_, reply) =
            call_first(&client, &members, Method::POST, "/switchover", Some(&body)).await?;
        finish(target, "Switchover", &reply).await
    }.await
}

pub async fn run_failover(target: &Target, args: &FailoverArgs) -> Result<(), CtlError> {
    async {
        let (_, view) = super::fetch_view(target).await?;
        rest::member(&view, &args.candidate, &target.scope)?;
        let question = match view.leader_name() {
            Some(leader) if leader == args.candidate => {
                return Err(CtlError::failure(format!("{leader} is already the leader")))
            }
            Some(leader) => format!(
                "Are you sure you want to failover cluster {}, demoting current leader {leader}?",
                target.scope
            ),
            None => format!(
                "Are you sure you want to failover cluster {} to {}?",
                target.scope, args.candidate
            ),
        };
        confirm(&question, args.force)?;
        let body = json!({ "candidate": args.candidate });
        let client = rest::client(target, request_timeout(&view))?;
        let members = recipients(&view, Some(&args.candidate));
        let (_, reply) =
            call_first(&client, &members, Method::POST, "/failover", Some(&body)).await?;
        finish(target, "Failover", &reply).await
    }
    .await
}

/// Print the member's answer; on success also the member table.
async fn finish(target: &Target, what: &str, reply: &crate::client::Reply) -> Result<(), CtlError> {
    if !reply.is_success() {
        return Err(CtlError::failure(format!(
            "{what} failed, details: {}, {}",
            reply.status,
            body_text(reply)
        )));
    }
    print(&format!("{}\n", body_text(reply)))?;
    // Give the table the new roles: the report is read from etcd.
    if let Ok(report) = super::fetch_report(target).await {
        print(&super::list::render(&report, super::list::Format::Pretty))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_argument() {
        assert_eq!(parse_scheduled(None).unwrap(), None);
        assert_eq!(parse_scheduled(Some("now")).unwrap(), None);
        assert_eq!(
            parse_scheduled(Some("2030-01-01T10:00+02:00")).unwrap(),
            Some("2030-01-01T10:00+02:00".to_string())
        );
        let e = parse_scheduled(Some("2030-01-01T10:00")).unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        assert!(e.message.contains("time zone"), "{}", e.message);
        assert!(parse_scheduled(Some("soon")).is_err());
    }

    #[test]
    fn request_body() {
        assert_eq!(
            switchover_body("m1", Some("m2"), None),
            json!({"leader": "m1", "candidate": "m2"})
        );
        assert_eq!(
            switchover_body("m1", None, Some("2030-01-01T10:00:00Z")),
            json!({"leader": "m1", "scheduled_at": "2030-01-01T10:00:00Z"})
        );
    }
}
