//! Operator actions through the REST API and `pgpilot ctl` (issue 3, items
//! 5, 8 and 9): switchover and manual failover (to a named candidate, to
//! the best replica, scheduled, cancelled, and the refused cases with
//! Patroni's codes and messages), maintenance mode, dynamic configuration
//! (PATCH/PUT /config, edit-config), restart of a pending parameter,
//! reinitialize and reload.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgpilot_e2e::http::Method;
use pgpilot_e2e::ops::{call, call_with, ctl};
use pgpilot_e2e::{wait_until, Cluster};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(120);
const SWITCH: Duration = Duration::from_secs(60);

fn name(c: &Cluster, i: usize) -> String {
    c.member(i).name.clone()
}

/// The leader key holder as `/cluster` of member `asked` reports it.
async fn leader_name(c: &Cluster, asked: usize) -> anyhow::Result<Option<String>> {
    Ok(c.listed(asked)
        .await?
        .into_iter()
        .find(|l| l.role == "leader")
        .map(|l| l.name))
}

/// Wait until the cluster is ready with `want` as its leader.
async fn wait_leader_is(c: &Cluster, want: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{} to lead with streaming replicas", name(c, want)),
        SWITCH,
        async || {
            let leader = c.wait_ready(Duration::from_secs(5)).await?;
            anyhow::ensure!(leader == want, "{} leads", name(c, leader));
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))
}

fn assert_refused(got: (u16, String), status: u16, message: &str, what: &str) {
    assert_eq!(
        got,
        (status, message.to_string()),
        "{what}: want {status} {message:?}"
    );
}

/// RFC 3339 (UTC, `+00:00`) for epoch seconds.
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn rfc3339_of_known_instants() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20+00:00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_through_rest_and_refused_requests() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (l, r1, r2) = (
        name(&c, leader),
        name(&c, replicas[0]),
        name(&c, replicas[1]),
    );
    let post =
        |path: &'static str, body: Value| call(&c, replicas[0], Method::POST, path, Some(body));

    // 400: what Patroni answers 400 to.
    assert_refused(
        post("/switchover", json!({"candidate": r1})).await?,
        400,
        "Switchover could be performed only from a specific leader",
        "no leader given",
    );
    assert_refused(
        post("/failover", json!({"leader": l})).await?,
        400,
        "Failover could be performed only to a specific candidate",
        "failover without candidate",
    );
    assert_refused(
        post("/switchover", json!({"leader": l, "candidate": l})).await?,
        400,
        "Switchover target and source are the same",
        "candidate is the leader named",
    );
    assert_refused(
        post(
            "/switchover",
            json!({"leader": l, "scheduled_at": "2030-01-01T10:00:00"}),
        )
        .await?,
        400,
        "Timezone information is mandatory for the scheduled switchover",
        "schedule without time zone",
    );
    assert_refused(
        post(
            "/failover",
            json!({"candidate": r1, "scheduled_at": "2030-01-01T10:00:00Z"}),
        )
        .await?,
        400,
        "Failover can't be scheduled",
        "scheduled failover",
    );
    let (status, body) = post(
        "/switchover",
        json!({"leader": l, "scheduled_at": "next week"}),
    )
    .await?;
    assert_eq!(status, 422, "unparsable schedule: {body}");
    assert!(
        body.starts_with("Unable to parse scheduled timestamp"),
        "{body}"
    );
    assert_refused(
        post(
            "/switchover",
            json!({"leader": l, "scheduled_at": "2001-01-01T00:00:00+00:00"}),
        )
        .await?,
        422,
        "Cannot schedule switchover in the past",
        "schedule in the past",
    );
    let (status, body) = call(&c, leader, Method::POST, "/switchover", None).await?;
    assert_eq!(status, 400, "no body: {body}");

    // 412: not possible in this cluster.
    assert_refused(
        post("/switchover", json!({"leader": r1})).await?,
        412,
        "leader name does not match",
        "wrong leader",
    );
    assert_refused(
        post("/switchover", json!({"leader": l, "candidate": "nobody"})).await?,
        412,
        "candidate does not exists",
        "candidate not a member",
    );
    assert_refused(
        post("/failover", json!({"candidate": l})).await?,
        412,
        &format!("failover is not possible: {l} is already the leader"),
        "failover to the leader itself",
    );
    // A candidate whose API does not answer (its sidecar is stopped) is not
    // a good candidate, though its member key is still there.
    assert!(c.member(replicas[1]).pause_sidecar());
    let refused = post("/switchover", json!({"leader": l, "candidate": r2})).await;
    assert!(c.member(replicas[1]).resume_sidecar());
    let (status, body) = refused?;
    assert_eq!(status, 412, "candidate not running: {body}");
    assert!(
        body.starts_with("switchover is not possible: no good candidates have been found"),
        "{body}"
    );
    assert!(body.contains(&r2), "{body}");
    // Nothing of the above moved the leader or left a request behind.
    assert_eq!(leader_name(&c, leader).await?, Some(l.clone()));
    let cluster = c.cluster_json(leader).await?;
    assert!(cluster.get("scheduled_switchover").is_none(), "{cluster}");

    // To a named candidate.
    let started = Instant::now();
    let (status, body) = post("/switchover", json!({"leader": l, "candidate": r1})).await?;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            format!("Successfully switched over to \"{r1}\"").as_str()
        ),
        "{}",
        c.logs(40)
    );
    eprintln!(
        "switchover to {r1} answered in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    wait_leader_is(&c, replicas[0]).await?;

    // To the best replica: anyone but the current leader.
    let (status, body) = call(
        &c,
        leader,
        Method::POST,
        "/switchover",
        Some(json!({"leader": r1})),
    )
    .await?;
    assert_eq!(status, 200, "{body}\n{}", c.logs(40));
    assert!(
        body.starts_with("Successfully switched over to \""),
        "{body}"
    );
    let now = c.wait_ready(READY).await?;
    assert_ne!(now, replicas[0], "the leader did not change");
    assert!(body.contains(&format!("\"{}\"", name(&c, now))), "{body}");

    // Each switch is a new timeline in the history.
    let history = c.get(now, "/history").await?.json()?;
    let entries = history.as_array().cloned().unwrap_or_default();
    assert!(entries.len() >= 2, "history: {history}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_failover_through_ctl() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let target = name(&c, replicas[1]);

    // Without a terminal and without --force nothing happens.
    let out = ctl(&c, leader, &["switchover", "--candidate", &target]).await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--force"), "{out:?}");
    let out = ctl(
        &c,
        leader,
        &["switchover", "--candidate", "nobody", "--force"],
    )
    .await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("nobody is not a member"), "{out:?}");
    let out = ctl(
        &c,
        leader,
        &["switchover", "--scheduled", "2030-01-01T10:00", "--force"],
    )
    .await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("time zone"), "{out:?}");
    assert_eq!(leader_name(&c, leader).await?, Some(name(&c, leader)));

    let out = ctl(
        &c,
        replicas[0],
        &["switchover", "--candidate", &target, "--force"],
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", c.logs(40));
    assert!(
        out.stdout
            .contains(&format!("Successfully switched over to \"{target}\"")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("| Member |"),
        "the table follows: {out:?}"
    );
    wait_leader_is(&c, replicas[1]).await?;

    // Manual failover to a named replica (the old leader).
    let back = name(&c, leader);
    let out = ctl(&c, leader, &["failover", "--candidate", &back, "--force"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", c.logs(40));
    assert!(
        out.stdout
            .contains(&format!("Successfully failed over to \"{back}\"")),
        "{out:?}"
    );
    wait_leader_is(&c, leader).await?;

    let out = ctl(&c, leader, &["history"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("| TL |"), "{out:?}");
    assert!(out.stdout.contains("New Leader"), "{out:?}");
    assert!(
        out.stdout.contains(&target) && out.stdout.contains(&back),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_switchover_happens_after_its_time_and_can_be_cancelled() -> anyhow::Result<()> {
    let c = Cluster::builder().members(2).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replica = 1 - leader;
    let (l, r) = (name(&c, leader), name(&c, replica));

    // Scheduled far ahead, shown in /cluster, then cancelled.
    let later = rfc3339(now_epoch() + 3600);
    let (status, body) = call(
        &c,
        leader,
        Method::POST,
        "/switchover",
        Some(json!({"leader": l, "candidate": r, "scheduled_at": later})),
    )
    .await?;
    assert_eq!((status, body.as_str()), (202, "Switchover scheduled"));
    let cluster = c.cluster_json(replica).await?;
    assert_eq!(cluster["scheduled_switchover"]["from"], l, "{cluster}");
    assert_eq!(cluster["scheduled_switchover"]["to"], r, "{cluster}");
    let out = ctl(&c, leader, &["list"]).await?;
    assert!(out.stdout.contains("Switchover scheduled at:"), "{out:?}");
    assert_eq!(
        call(&c, replica, Method::DELETE, "/switchover", None).await?,
        (200, "scheduled switchover deleted".to_string())
    );
    assert_eq!(
        call(&c, replica, Method::DELETE, "/switchover", None).await?,
        (404, "no switchover is scheduled".to_string())
    );
    let cluster = c.cluster_json(replica).await?;
    assert!(cluster.get("scheduled_switchover").is_none(), "{cluster}");

    // Scheduled a few seconds ahead: nothing before, the switch after.
    let at = now_epoch() + 8;
    let (status, body) = call(
        &c,
        replica,
        Method::POST,
        "/switchover",
        Some(json!({"leader": l, "candidate": r, "scheduled_at": rfc3339(at)})),
    )
    .await?;
    assert_eq!((status, body.as_str()), (202, "Switchover scheduled"));
    let changed_at = wait_until("the scheduled switchover", SWITCH, async || {
        let now = now_epoch();
        let leader_now = leader_name(&c, replica).await?;
        if leader_now.as_deref() == Some(r.as_str()) {
            return Ok(now);
        }
        anyhow::bail!("leader is {leader_now:?}")
    })
    .await
    .map_err(|e| c.with_logs(e))?;
    assert!(
        changed_at >= at,
        "the switchover happened at {changed_at}, before its time {at}"
    );
    wait_leader_is(&c, replica).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_leaves_a_dead_primary_alone_until_resume() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let l = name(&c, leader);

    let out = ctl(&c, leader, &["pause", "--wait"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("Success: cluster management is paused"),
        "{out:?}"
    );
    for i in 0..3 {
        let status = c.get(i, "/patroni").await?.json()?;
        assert_eq!(status["pause"], true, "{}: {status}", name(&c, i));
    }
    assert_eq!(c.cluster_json(leader).await?["pause"], true);
    let out = ctl(&c, leader, &["pause"]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("Cluster is already paused"), "{out:?}");

    // Switchover rules in maintenance mode.
    assert_refused(
        call(
            &c,
            leader,
            Method::POST,
            "/switchover",
            Some(json!({"leader": l})),
        )
        .await?,
        400,
        "Switchover is possible only to a specific candidate in a paused state",
        "paused switchover without candidate",
    );
    let other = name(&c, (leader + 1) % 3);
    assert_refused(
        call(
            &c,
            leader,
            Method::POST,
            "/switchover",
            Some(json!({"leader": l, "candidate": other, "scheduled_at": rfc3339(now_epoch() + 600)})),
        )
        .await?,
        400,
        "Can't schedule switchover in the paused state",
        "paused scheduled switchover",
    );

    // The leader's PostgreSQL dies: nobody restarts it, nobody promotes.
    let killed = c.member(leader).kill_postmaster().await?;
    assert!(killed.is_some(), "the leader had no postmaster");
    let watch_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < watch_until {
        assert!(
            c.member(leader).postmaster_pid().is_none(),
            "PostgreSQL was restarted on {l} in maintenance mode\n{}",
            c.logs(40)
        );
        for i in (0..3).filter(|&i| i != leader) {
            let in_recovery = c.query_one(i, "SELECT pg_is_in_recovery()::text").await?;
            assert_eq!(
                in_recovery,
                "true",
                "{} was promoted in maintenance mode\n{}",
                name(&c, i),
                c.logs(40)
            );
        }
        assert!(
            c.leaders().await.is_empty(),
            "a member answers /primary with 200"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let out = ctl(&c, leader, &["resume", "--wait"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("Success: cluster management is resumed"),
        "{out:?}"
    );
    c.wait_ready(READY).await?;
    assert_eq!(c.cluster_json(leader).await?.get("pause"), None);
    Ok(())
}

/// The leader key's lease as etcd granted it (seconds).
async fn leader_lease_granted_ttl(c: &Cluster) -> anyhow::Result<i64> {
    let endpoint = c.etcd().endpoint();
    let key = format!("/pgpilot/{}/leader", pgpilot_e2e::SCOPE);
    let (_, lease) = pgpilot_e2e::faults::etcdctl::get_with_lease(&endpoint, &key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader key"))?;
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["lease", "timetolive", &format!("{lease:x}"), "-w", "json"])
        .output()
        .await?;
    let json: Value = serde_json::from_slice(&out.stdout)?;
    json.get("granted-ttl")
        .and_then(Value::as_i64)
        .ok_or_else(|| anyhow::anyhow!("no granted-ttl in {json}"))
}

/// How many HA cycles member `i` logged as leader since byte `from` of its log.
fn leader_cycles(c: &Cluster, i: usize, from: usize) -> usize {
    let log = c.member(i).log();
    log.get(from..)
        .unwrap_or("")
        .matches("I am the leader with the lock")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_apply_by_reload_and_restart_on_every_member() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replica = (leader + 1) % 3;
    let before = c.get(leader, "/config").await?.json()?;

    // Refused edits change nothing.
    let patch = |body: Value| call(&c, replica, Method::PATCH, "/config", Some(body));
    let (status, body) = patch(json!({"tll": 20})).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("key `tll`"), "{body}");
    let (status, body) = patch(json!({"ttl": 3})).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("key `ttl`"), "{body}");
    let (status, body) = patch(json!({"postgresql": {"parameters": {"wrok_mem": "1MB"}}})).await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("PostgreSQL has no parameter \"wrok_mem\""),
        "{body}"
    );
    let (status, body) =
        patch(json!({"postgresql": {"parameters": {"wal_level": "archive"}}})).await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call_with(
        &c,
        replica,
        Method::PATCH,
        "/config",
        Some(json!({"ttl": 20})),
        &[("If-Match", "\"1\"")],
    )
    .await?;
    assert_eq!(status, 409, "stale If-Match: {body}");
    assert_eq!(c.get(leader, "/config").await?.json()?, before);

    // A reloadable parameter reaches every member.
    let (status, body) = patch(json!({"postgresql": {"parameters": {"work_mem": "12MB"}}})).await?;
    assert_eq!(status, 200, "{body}");
    let returned: Value = serde_json::from_str(&body)?;
    assert_eq!(returned["postgresql"]["parameters"]["work_mem"], "12MB");
    for i in 0..3 {
        c.wait_value(i, "SHOW work_mem", "12MB", SWITCH).await?;
    }
    // PUT replaces the whole configuration (same checks).
    let mut full = c.get(leader, "/config").await?.json()?;
    full["postgresql"]["parameters"]["work_mem"] = json!("16MB");
    full["maximum_lag_on_failover"] = json!(2_097_152);
    let (status, body) = call(&c, replica, Method::PUT, "/config", Some(full.clone())).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.get(leader, "/config").await?.json()?, full);
    let (status, body) = call(
        &c,
        replica,
        Method::PUT,
        "/config",
        Some(json!({"ttl": "x"})),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    for i in 0..3 {
        c.wait_value(i, "SHOW work_mem", "16MB", SWITCH).await?;
    }

    // A restart-only parameter: pending_restart until each member restarts.
    // (An increase: replicas restart before the leader, as ctl does.)
    let out = ctl(
        &c,
        leader,
        &["edit-config", "-p", "max_connections=110", "--force"],
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("+max_connections = 110"),
        "diff: {out:?}"
    );
    assert!(out.stdout.contains("Configuration changed"), "{out:?}");
    wait_until("pending_restart on every member", SWITCH, async || {
        for i in 0..3 {
            let status = c.get(i, "/patroni").await?.json()?;
            anyhow::ensure!(
                status["pending_restart"] == true,
                "{}: {status}",
                name(&c, i)
            );
        }
        let cluster = c.cluster_json(leader).await?;
        let flagged = cluster["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["pending_restart"] == true).count())
            .unwrap_or(0);
        anyhow::ensure!(flagged == 3, "/cluster: {cluster}");
        Ok(())
    })
    .await
    .map_err(|e| c.with_logs(e))?;
    let lead_now = c.wait_leader(READY).await?;
    let first = (lead_now + 1) % 3;
    let (status, body) = call(
        &c,
        first,
        Method::POST,
        "/restart",
        Some(json!({"restart_pending": true, "role": "replica"})),
    )
    .await?;
    assert_eq!((status, body.as_str()), (200, "restarted successfully"));
    c.wait_value(first, "SHOW max_connections", "110", SWITCH)
        .await?;
    let first_name = name(&c, first);
    wait_until(
        "the restarted member to publish no pending restart",
        SWITCH,
        async || {
            let cluster = c.cluster_json(leader).await?;
            let me = cluster["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == first_name.as_str()).cloned())
                .ok_or_else(|| anyhow::anyhow!("not listed: {cluster}"))?;
            anyhow::ensure!(me.get("pending_restart").is_none(), "{me}");
            Ok(())
        },
    )
    .await?;
    assert_refused(
        call(
            &c,
            first,
            Method::POST,
            "/restart",
            Some(json!({"restart_pending": true})),
        )
        .await?,
        503,
        "restart conditions are not satisfied",
        "nothing pending any more",
    );
    let (status, body) = call(
        &c,
        first,
        Method::POST,
        "/restart",
        Some(json!({"role": "boss"})),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    let out = ctl(&c, leader, &["restart", "--pending", "--force"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", c.logs(40));
    assert_eq!(
        out.stdout.matches("Success: restart on member").count(),
        2,
        "{out:?}"
    );
    for i in 0..3 {
        c.wait_value(i, "SHOW max_connections", "110", SWITCH)
            .await?;
        let status = c.get(i, "/patroni").await?.json()?;
        assert!(
            status.get("pending_restart").is_none(),
            "{}: {status}",
            name(&c, i)
        );
    }
    c.wait_ready(READY).await?;

    let out = ctl(&c, leader, &["show-config"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("max_connections = 110"), "{out:?}");
    assert!(out.stdout.contains("work_mem = \"16MB\""), "{out:?}");
    let out = ctl(&c, leader, &["edit-config", "-s", "tll=3", "--force"]).await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("key `tll`"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinitialize_reclones_a_replica_and_is_refused_on_the_leader() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    assert_refused(
        call(
            &c,
            leader,
            Method::POST,
            "/reinitialize",
            Some(json!({"force": true})),
        )
        .await?,
        503,
        "I am the leader, can not reinitialize",
        "reinitialize on the leader",
    );
    assert_eq!(
        call(&c, leader, Method::POST, "/reload", None).await?.0,
        200,
        "reload"
    );

    c.execute(
        leader,
        "CREATE TABLE reinit_t AS SELECT generate_series(1, 1000) AS v",
    )
    .await?;
    // A file only the old data directory has: gone after a re-clone.
    let marker = c.member(replicas[0]).data_dir.join("pgpilot-e2e-marker");
    std::fs::write(&marker, "old data directory")?;
    let (status, body) = call(&c, replicas[0], Method::POST, "/reinitialize", None).await?;
    assert_eq!(
        (status, body.as_str()),
        (200, "reinitialize started"),
        "{}",
        c.logs(40)
    );
    c.wait_streaming_to(leader, replicas[0], READY).await?;
    c.wait_value(
        replicas[0],
        "SELECT count(*)::text FROM reinit_t",
        "1000",
        SWITCH,
    )
    .await?;
    assert!(!marker.exists(), "the data directory was not re-created");

    let r2 = name(&c, replicas[1]);
    let out = ctl(&c, leader, &["reinit", &r2, "--force", "--wait"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", c.logs(40));
    assert!(
        out.stdout
            .contains(&format!("Success: reinitialize for member {r2}")),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("Reinitialize is completed on: {r2}")),
        "{out:?}"
    );
    c.wait_ready(READY).await?;
    c.wait_value(
        replicas[1],
        "SELECT count(*)::text FROM reinit_t",
        "1000",
        SWITCH,
    )
    .await?;
    let out = ctl(&c, leader, &["reload", "--force"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.matches("Success: reload on member").count(),
        3,
        "{out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_loop_wait_apply_without_restart() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replica = (leader + 1) % 3;
    let pid = c.member(leader).postmaster_pid();
    assert!(pid.is_some());
    let mark = c.member(leader).log().len();

    let (status, body) = call(
        &c,
        replica,
        Method::PATCH,
        "/config",
        Some(json!({"ttl": 20, "loop_wait": 4})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    // The leader's lease is granted again with the new ttl ...
    wait_until("the leader lease granted with ttl 20", SWITCH, async || {
        let ttl = leader_lease_granted_ttl(&c).await?;
        anyhow::ensure!(ttl == 20, "granted ttl {ttl}");
        Ok(())
    })
    .await
    .map_err(|e| c.with_logs(e))?;
    // ... and its cycles come every 4 s instead of every second.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = c.member(leader).log().len();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let cycles = leader_cycles(&c, leader, from);
    assert!(
        (1..=6).contains(&cycles),
        "with loop_wait 4, 12 s should hold about 3 leader cycles, saw {cycles}"
    );
    // Without a restart: same leader, same postmaster, never fenced.
    assert_eq!(c.wait_ready(READY).await?, leader);
    let log = c.member(leader).log();
    assert_eq!(
        c.member(leader).postmaster_pid(),
        pid,
        "the leader's PostgreSQL was restarted by a ttl change:\n{}",
        log.get(mark..).unwrap_or("")
    );
    assert!(
        !log.get(mark..).unwrap_or("").contains("fencing"),
        "the leader fenced itself over a ttl change:\n{}",
        log.get(mark..).unwrap_or("")
    );
    Ok(())
}

/// `pgpilot ctl` given an etcd endpoint that is down (a unit removed, an
/// etcd restarting) beside one that answers reads the cluster every time:
/// the balanced client sent some calls to the dead member and failed
/// ("etcd is unreachable: tcp connect error"), which stalled the charm's
/// hooks after a unit's removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reads_through_a_dead_endpoint_beside_a_live_one() -> anyhow::Result<()> {
    let c = Cluster::builder().members(1).start().await?;
    c.wait_ready(READY).await?;
    let dead = format!("http://127.0.0.1:{}", pgpilot_e2e::ports::free_port());
    let live = c.etcd().endpoint();
    for order in [[&dead, &live], [&live, &dead]] {
        for _ in 0..6 {
            let out = tokio::process::Command::new(pgpilot_e2e::pgpilot_bin()?)
                .args(["ctl", "--etcd", order[0], "--etcd", order[1]])
                .args(["--scope", pgpilot_e2e::SCOPE, "list", "-f", "json"])
                .env_remove("PGPILOT_CONFIG")
                .stdin(std::process::Stdio::null())
                .output()
                .await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{order:?}: {stderr}");
            let list: Value = serde_json::from_slice(&out.stdout)?;
            assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
        }
    }
    Ok(())
}
