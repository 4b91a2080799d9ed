//! Scheduled restarts (issue 13), as Patroni has them: `POST /restart` with
//! `schedule` answers 202 and restarts PostgreSQL at that time; one per
//! member (409 for another); a time in the past is 422; `/patroni` shows
//! it; `DELETE /restart` cancels it (404 when there is none).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgpilot::timestamp::format_timestamp;
use pgpilot_e2e::http::Method;
use pgpilot_e2e::ops::call;
use pgpilot_e2e::{wait_until, Cluster};
use serde_json::json;

const READY: Duration = Duration::from_secs(120);

fn in_seconds(secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format_timestamp(now + secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_restart_runs_at_its_time_and_can_be_cancelled() -> anyhow::Result<()> {
    let c = Cluster::builder().members(1).start().await?;
    let leader = c.wait_ready(READY).await?;
    let restart = |body| call(&c, leader, Method::POST, "/restart", Some(body));

    let (status, body) = restart(json!({"schedule": "2001-01-01T00:00:00Z"})).await?;
    assert_eq!(
        (status, body.as_str()),
        (422, "Cannot schedule restart in the past")
    );
    let (status, body) = restart(json!({"schedule": "2030-01-01T00:00:00"})).await?;
    assert_eq!(status, 400, "{body}");

    let before = c.member(leader).postmaster_pid();
    let at = in_seconds(6);
    let (status, body) = restart(json!({"schedule": at, "role": "primary"})).await?;
    assert_eq!((status, body.as_str()), (202, "Restart scheduled"));
    let shown = c.get(leader, "/patroni").await?.json()?;
    assert_eq!(
        shown["scheduled_restart"]["schedule"],
        at.as_str(),
        "{shown}"
    );
    assert_eq!(shown["scheduled_restart"]["role"], "primary", "{shown}");
    let (status, body) = restart(json!({"schedule": in_seconds(3600)})).await?;
    assert_eq!(
        (status, body.as_str()),
        (409, "Another restart is already scheduled")
    );

    wait_until(
        "the scheduled restart to happen",
        Duration::from_secs(90),
        async || {
            let pid = c.member(leader).postmaster_pid();
            anyhow::ensure!(pid.is_some() && pid != before, "postmaster {pid:?}");
            let status = c.get(leader, "/patroni").await?.json()?;
            anyhow::ensure!(status["state"] == "running", "{status}");
            anyhow::ensure!(status.get("scheduled_restart").is_none(), "{status}");
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;

    // Cancelled: nothing happens at its time.
    let pid = c.member(leader).postmaster_pid();
    let (status, _) = restart(json!({"schedule": in_seconds(4)})).await?;
    assert_eq!(status, 202);
    let (status, body) = call(&c, leader, Method::DELETE, "/restart", None).await?;
    assert_eq!((status, body.as_str()), (200, "scheduled restart deleted"));
    let (status, body) = call(&c, leader, Method::DELETE, "/restart", None).await?;
    assert_eq!((status, body.as_str()), (404, "no restarts are scheduled"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(c.member(leader).postmaster_pid(), pid, "{}", c.logs(30));
    let status = c.get(leader, "/patroni").await?.json()?;
    assert!(status.get("scheduled_restart").is_none(), "{status}");
    Ok(())
}
