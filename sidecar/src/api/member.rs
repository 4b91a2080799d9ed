//! `POST /restart`, `DELETE /restart`, `POST /reload`, `POST /reinitialize`:
//! operator commands for this member. The API checks the request, queues
//! the command for the HA loop ([`Shared::submit`]) and answers once the
//! loop has carried it out (one command at a time: a second one gets 503
//! `<action> already in progress`).
//!
//! [`Shared::submit`]: crate::state::Shared::submit

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ApiState;
use crate::cluster::Role;
use crate::dcs::Dcs;
use crate::state::MemberCommand;

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// An optional JSON object body: empty means `{}`.
fn optional_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

/// What `POST /restart` may ask for (Patroni's filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartFilter {
    /// Only if this member has this role.
    pub role: Option<Role>,
    /// Only if PostgreSQL says a restart is pending.
    pub restart_pending: bool,
    /// Only if the running server is older than this (`server_version` form, e.g. 150004).
    pub postgres_version: Option<i32>,
}

/// `15.2` → 150002, `9.6.3` → 90603 (PostgreSQL's `server_version_num`).
pub fn postgres_version_to_int(text: &str) -> Option<i32> {
    let parts: Vec<i32> = text
        .trim()
        .split('.')
        .map(|p| p.parse::<i32>().ok().filter(|n| *n >= 0))
        .collect::<Option<Vec<_>>>()?;
    match parts.as_slice() {
        [major, minor] if *major >= 10 => Some(major * 10000 + minor),
        [major] if *major >= 10 => Some(major * 10000),
        [major, minor, patch] if *major < 10 => Some(major * 10000 + minor * 100 + patch),
        _ => None,
    }
}

fn parse_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Some(true),
            "false" | "off" | "no" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// Check a restart request: `Err((status, message))` to refuse it.
pub fn parse_restart(
    body: &serde_json::Map<String, Value>,
    paused: bool,
) -> Result<RestartFilter, (StatusCode, String)> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_string());
    if paused && body.contains_key("schedule") {
        return Err(bad("Can't schedule restart in the paused state"));
    }
    let mut filter = RestartFilter::default();
    for (key, value) in body {
        match key.as_str() {
            // Its time is read by the caller ([`schedule_restart`]).
            "schedule" => {}
            "timeout" => {
                return Err(bad(
                    "timeout is not supported by pgpilot: a restart waits up to postgresql.pg_ctl_timeout",
                ))
            }
            "role" => {
                filter.role = match value {
                    Value::Null => None,
                    Value::String(s) if s == "any" => None,
                    Value::String(s) if s == "primary" || s == "master" => Some(Role::Primary),
                    Value::String(s) if s == "replica" => Some(Role::Replica),
                    Value::String(s) if s == "standby_leader" => Some(Role::StandbyLeader),
                    _ => {
                        return Err(bad(
                            "PostgreSQL role should be either primary, standby_leader, or replica",
                        ))
                    }
                }
            }
            "restart_pending" => {
                filter.restart_pending = parse_bool(value)
                    .ok_or_else(|| bad("restart_pending must be true or false"))?
            }
            "postgres_version" => {
                let v = value.as_str().and_then(postgres_version_to_int).ok_or_else(|| {
                    bad("postgres_version must be a PostgreSQL version such as \"15.4\"")
                })?;
                filter.postgres_version = Some(v);
            }
            other => {
                return Err(bad(&format!(
                    "Unknown filter for the scheduled restart: {other}"
                )))
            }
        }
    }
    Ok(filter)
}

/// Does this member match the filter? (Patroni: `restart_matches`.)
pub fn restart_matches(
    filter: &RestartFilter,
    role: Role,
    pending_restart: bool,
    server_version: Option<i32>,
) -> bool {
    if filter.role.is_some_and(|r| r != role) {
        return false;
    }
    if filter.restart_pending && !pending_restart {
        return false;
    }
    if let Some(wanted) = filter.postgres_version {
        if server_version.is_none_or(|v| v >= wanted) {
            return false;
        }
    }
    true
}

/// Queue `command` and wait (at most `limit`) for the HA loop's outcome.
async fn run<D: Dcs>(
    state: &ApiState<D>,
    command: MemberCommand,
    limit: Duration,
    ok_status: StatusCode,
) -> Response {
    let name = command.name();
    let receiver = match state.shared.submit(command) {
        Ok(r) => r,
        Err(busy) => return text(StatusCode::SERVICE_UNAVAILABLE, busy),
    };
    match tokio::time::timeout(limit, receiver).await {
        Ok(Ok(Ok(message))) => text(ok_status, message),
        Ok(Ok(Err(message))) => text(StatusCode::SERVICE_UNAVAILABLE, message),
        Ok(Err(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the HA loop stopped before carrying out the {name}"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{name} did not finish within {}s; it goes on in the background",
                limit.as_secs()
            ),
        ),
    }
}

/// How long to wait for a command: a busy HA cycle, then a stop and a start.
fn command_limit<D: Dcs>(state: &ApiState<D>) -> Duration {
    let loop_wait = state.shared.dynamic().loop_wait.max(10);
    let pg_ctl = state.shared.config().postgresql.pg_ctl_timeout;
    Duration::from_secs(2 * loop_wait + 2 * pg_ctl)
}

pub async fn restart<D: Dcs>(State(state): State<ApiState<D>>, body: Bytes) -> Response {
    let body = match optional_object(&body) {
        Ok(b) => b,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let paused = state.shared.dynamic().pause;
    let filter = match parse_restart(&body, paused) {
        Ok(f) => f,
        Err((status, m)) => return text(status, m),
    };
    if filter != RestartFilter::default() {
        let status = state.node_status().await;
        if !restart_matches(
            &filter,
            status.role,
            status.pending_restart,
            status.server_version,
        ) {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "restart conditions are not satisfied",
            );
        }
    }
    if let Some(when) = body.get("schedule").filter(|v| !v.is_null()) {
        return schedule_restart(&state, when, filter, &body);
    }
    tracing::info!(?filter, "restart requested through the REST API");
    let limit = command_limit(&state);
    run(&state, MemberCommand::Restart, limit, StatusCode::OK).await
}

/// `POST /restart` with `schedule`: 202, and the restart runs at that time
/// if the conditions still hold then (as in Patroni: one scheduled restart
/// per member, 409 for another; `DELETE /restart` cancels it).
fn schedule_restart<D: Dcs>(
    state: &ApiState<D>,
    when: &Value,
    filter: RestartFilter,
    body: &serde_json::Map<String, Value>,
) -> Response {
    use crate::timestamp::{parse_timestamp, TimestampError};
    let unprocessable = |m: &str| text(StatusCode::UNPROCESSABLE_ENTITY, m.to_string());
    let Some(when) = when.as_str() else {
        return text(
            StatusCode::BAD_REQUEST,
            "schedule must be a timestamp such as \"2026-12-07T18:00:00+00:00\"",
        );
    };
    let at = match parse_timestamp(when) {
        Err(TimestampError::NoTimezone) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Timezone information is mandatory for the scheduled restart",
            )
        }
        Err(TimestampError::Unparsable) => return unprocessable(
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        ),
        Ok(at) if at < epoch_now() => return unprocessable("Cannot schedule restart in the past"),
        Ok(at) => at,
    };
    let mut slot = state.shared.scheduled_restart();
    if slot.is_some() {
        return text(StatusCode::CONFLICT, "Another restart is already scheduled");
    }
    let mut conditions = body.clone();
    conditions.remove("schedule");
    let task = tokio::spawn(run_scheduled(state.clone(), at, filter));
    *slot = Some(crate::state::ScheduledRestart {
        at,
        conditions,
        task: task.abort_handle(),
    });
    tracing::info!(schedule = %when, "restart scheduled through the REST API");
    text(StatusCode::ACCEPTED, "Restart scheduled")
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Wait for `at`, then restart if the conditions hold.
async fn run_scheduled<D: Dcs>(state: ApiState<D>, at: u64, filter: RestartFilter) {
    tokio::time::sleep(Duration::from_secs(at.saturating_sub(epoch_now()))).await;
    let taken = state.shared.scheduled_restart().take();
    if taken.is_none() {
        return;
    }
    let status = state.node_status().await;
    let paused = state.shared.dynamic().pause;
    if paused
        || !restart_matches(
            &filter,
            status.role,
            status.pending_restart,
            status.server_version,
        )
    {
        tracing::info!(
            paused,
            "the scheduled restart is skipped: its conditions do not hold now"
        );
        return;
    }
    tracing::info!("carrying out the scheduled restart");
    match state.shared.submit(MemberCommand::Restart) {
        Ok(receiver) => match receiver.await {
            Ok(Ok(m)) => tracing::info!("scheduled restart: {m}"),
            Ok(Err(m)) => tracing::warn!("scheduled restart failed: {m}"),
            Err(_) => tracing::warn!("scheduled restart: the HA loop stopped"),
        },
        Err(busy) => tracing::warn!("scheduled restart not carried out: {busy}"),
    }
}

/// `DELETE /restart`: cancel the scheduled restart.
pub async fn delete_restart<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    let taken = state.shared.scheduled_restart().take();
    match taken {
        Some(scheduled) => {
            scheduled.task.abort();
            tracing::info!("the scheduled restart was cancelled through the REST API");
            text(StatusCode::OK, "scheduled restart deleted")
        }
        None => text(StatusCode::NOT_FOUND, "no restarts are scheduled"),
    }
}

/// Re-read the member file as SIGHUP does (Patroni's `/reload` re-reads
/// its configuration too), then re-render postgresql.conf and reload
/// PostgreSQL; 200 once done (Patroni answers 202 "reload scheduled"
/// before doing it). An invalid member file: 503 naming the key, and
/// nothing changes.
pub async fn reload<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    tracing::info!("reload requested through the REST API");
    let plan = match crate::ha::reload::member_file(&state.shared) {
        Ok(plan) => plan,
        Err(message) => return text(StatusCode::SERVICE_UNAVAILABLE, message),
    };
    let limit = command_limit(&state);
    let response = run(&state, MemberCommand::Reload, limit, StatusCode::OK).await;
    if plan.is_empty() || !response.status().is_success() {
        return response;
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    text(
        status,
        format!(
            "{}; {}",
            String::from_utf8_lossy(&body),
            crate::ha::reload::summary(&plan)
        ),
    )
}

pub async fn reinitialize<D: Dcs>(State(state): State<ApiState<D>>, body: Bytes) -> Response {
    let body = match optional_object(&body) {
        Ok(b) => b,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let force = match body.get("force") {
        None | Some(Value::Null) => false,
        Some(v) => match parse_bool(v) {
            Some(b) => b,
            None => return text(StatusCode::BAD_REQUEST, "force must be true or false"),
        },
    };
    // The HA loop checks this too; answering here is quicker and queues nothing.
    let view = super::cluster::fresh_view(&state).await;
    let me = &state.shared.config().cluster.name.clone();
    match view.leader_name() {
        None => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Cluster has no leader, can not reinitialize",
            )
        }
        Some(leader) if leader == me => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "I am the leader, can not reinitialize",
            )
        }
        Some(_) => {}
    }
    tracing::info!(force, "reinitialize requested through the REST API");
    let limit = command_limit(&state);
    run(&state, MemberCommand::Reinitialize, limit, StatusCode::OK).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn versions() {
        assert_eq!(postgres_version_to_int("15.2"), Some(150002));
        assert_eq!(postgres_version_to_int("16"), Some(160000));
        assert_eq!(postgres_version_to_int("9.6.3"), Some(90603));
        assert_eq!(postgres_version_to_int("9.6"), None);
        assert_eq!(postgres_version_to_int("x"), None);
    }

    #[test]
    fn restart_filters_parse() {
        let f = parse_restart(
            &obj(json!({"role": "replica", "restart_pending": true})),
            false,
        )
        .unwrap();
        assert_eq!(f.role, Some(Role::Replica));
        assert!(f.restart_pending);
        assert_eq!(
            parse_restart(&obj(json!({"role": "master"})), false)
                .unwrap()
                .role,
            Some(Role::Primary)
        );
        assert_eq!(
            parse_restart(&obj(json!({"role": "any"})), false).unwrap(),
            RestartFilter::default()
        );
        let (status, m) = parse_restart(&obj(json!({"role": "boss"})), false).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(m.starts_with("PostgreSQL role should be"), "{m}");
        let (_, m) = parse_restart(&obj(json!({"colour": 1})), false).unwrap_err();
        assert_eq!(m, "Unknown filter for the scheduled restart: colour");
        let (_, m) =
            parse_restart(&obj(json!({"schedule": "2030-01-01T00:00:00Z"})), true).unwrap_err();
        assert_eq!(m, "Can't schedule restart in the paused state");
        // The time itself is read by schedule_restart.
        let f = parse_restart(
            &obj(json!({"schedule": "2030-01-01T00:00:00Z", "role": "replica"})),
            false,
        )
        .unwrap();
        assert_eq!(f.role, Some(Role::Replica));
    }

    #[test]
    fn restart_conditions() {
        let pending = RestartFilter {
            restart_pending: true,
            ..Default::default()
        };
        assert!(!restart_matches(
            &pending,
            Role::Replica,
            false,
            Some(150004)
        ));
        assert!(restart_matches(&pending, Role::Replica, true, Some(150004)));
        let primary = RestartFilter {
            role: Some(Role::Primary),
            ..Default::default()
        };
        assert!(!restart_matches(&primary, Role::Replica, true, None));
        let older = RestartFilter {
            postgres_version: Some(150005),
            ..Default::default()
        };
        assert!(restart_matches(&older, Role::Replica, false, Some(150004)));
        assert!(!restart_matches(&older, Role::Replica, false, Some(150005)));
    }
}
