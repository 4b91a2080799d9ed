//! The Patroni-compatible REST API answers each check with the right status
//! on the leader and on a replica.

use std::time::Duration;

use pgpilot_e2e::http::Method;
use pgpilot_e2e::{wait_until, Cluster};
use serde_json::Value;

const READY: Duration = Duration::from_secs(120);

const LEADER_EXPECTS: &[(&str, u16)] = &[
    ("/", 200),
    ("/primary", 200),
    ("/leader", 200),
    ("/master", 200),
    ("/read-write", 200),
    ("/replica", 503),
    ("/replica?lag=16MB", 503),
    ("/read-only", 200),
    ("/standby-leader", 503),
    ("/asynchronous", 503),
    ("/health", 200),
    ("/liveness", 200),
    ("/readiness", 200),
    ("/patroni", 200),
];

const REPLICA_EXPECTS: &[(&str, u16)] = &[
    ("/", 503),
    ("/primary", 503),
    ("/leader", 503),
    ("/master", 503),
    ("/read-write", 503),
    ("/replica", 200),
    ("/replica?lag=16MB", 200),
    ("/read-only", 200),
    ("/standby-leader", 503),
    ("/asynchronous", 200),
    ("/health", 200),
    ("/liveness", 200),
    ("/readiness", 200),
    ("/patroni", 200),
];

/// Every check with GET, HEAD and OPTIONS on member `i`: the mismatches.
async fn mismatches(c: &Cluster, i: usize, expects: &[(&str, u16)]) -> Vec<String> {
    let name = &c.member(i).name;
    let mut wrong = Vec::new();
    for &(path, want) in expects {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            match c.request(i, method.clone(), path).await {
                Err(e) => wrong.push(format!("{name}: {e:#}")),
                Ok(reply) => {
                    if reply.status != want {
                        wrong.push(format!(
                            "{name}: {method} {path} -> {}, want {want}",
                            reply.status
                        ));
                    }
                    if method == Method::GET {
                        if let Err(e) = reply.json() {
                            wrong.push(format!("{name}: GET {path}: {e:#}"));
                        }
                    } else if !reply.body.is_empty() {
                        wrong.push(format!(
                            "{name}: {method} {path}: body should be empty: {:?}",
                            reply.body
                        ));
                    }
                }
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_endpoints_answer_by_role() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let replica = (0..3).find(|&i| i != leader).expect("a replica");

    // Statuses can flicker while the cluster settles: poll until all are
    // right, then report what was still wrong.
    wait_until(
        "every endpoint to answer as expected",
        Duration::from_secs(30),
        async || {
            let mut wrong = mismatches(&c, leader, LEADER_EXPECTS).await;
            wrong.extend(mismatches(&c, replica, REPLICA_EXPECTS).await);
            anyhow::ensure!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;

    // /patroni: the member status, with Patroni 4's role names.
    let status = c.get(leader, "/patroni").await?.json()?;
    assert_eq!(status["role"], "primary", "leader's /patroni: {status}");
    assert_eq!(status["state"], "running", "leader's /patroni: {status}");
    let status = c.get(replica, "/patroni").await?.json()?;
    assert_eq!(status["role"], "replica", "replica's /patroni: {status}");
    assert_eq!(status["state"], "running", "replica's /patroni: {status}");

    // /cluster, asked of either member: one leader, two streaming replicas.
    for i in [leader, replica] {
        let json = c.cluster_json(i).await?;
        assert_eq!(json["scope"], pgpilot_e2e::SCOPE, "/cluster: {json}");
        let mut listed = c.listed(i).await?;
        listed.sort_by(|a, b| a.role.cmp(&b.role));
        let summary: Vec<(String, String)> = listed
            .iter()
            .map(|l| (l.role.clone(), l.state.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("leader".to_string(), "running".to_string()),
                ("replica".to_string(), "streaming".to_string()),
                ("replica".to_string(), "streaming".to_string()),
            ],
            "/cluster on {}: {json}",
            c.member(i).name
        );
        let leader_entry = listed
            .iter()
            .find(|l| l.role == "leader")
            .expect("a leader entry");
        assert_eq!(leader_entry.name, c.member(leader).name);
        for m in json["members"].as_array().expect("members") {
            let port = m["port"].as_u64();
            let name = m["name"].as_str().unwrap_or_default();
            let member = &c.members()[c.index_of(name).expect("a known member")];
            assert_eq!(m["host"], "127.0.0.1", "/cluster entry {m}");
            assert_eq!(port, Some(u64::from(member.pg_port)), "/cluster entry {m}");
        }
    }

    // /history: a JSON array (empty before any failover).
    for i in [leader, replica] {
        let reply = c.get(i, "/history").await?;
        assert_eq!(reply.status, 200, "/history: {}", reply.body);
        let json = reply.json()?;
        assert!(json.is_array(), "/history is not an array: {json}");
    }

    // /config: the cluster-wide settings seeded from [bootstrap].
    for i in [leader, replica] {
        let reply = c.get(i, "/config").await?;
        assert_eq!(reply.status, 200, "/config: {}", reply.body);
        let json = reply.json()?;
        assert_eq!(
            json.get("ttl").and_then(Value::as_u64),
            Some(10),
            "/config: {json}"
        );
        assert_eq!(
            json.get("loop_wait").and_then(Value::as_u64),
            Some(1),
            "/config: {json}"
        );
        assert_eq!(
            json.get("retry_timeout").and_then(Value::as_u64),
            Some(3),
            "/config: {json}"
        );
    }

    // Unknown paths are 404, not a check that answers 200.
    assert_eq!(c.status(leader, "/no-such-endpoint").await, Some(404));
    Ok(())
}

/// 300 connections opened at once while the sidecar accepts none (stopped):
/// the kernel queues them all (listen backlog 1024), so none waits for a SYN
/// retry. With tokio's default backlog of 128 the 130th connect hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_listener_queues_a_burst_of_connections() -> anyhow::Result<()> {
    const BURST: usize = 300;
    let c = Cluster::builder().members(1).start().await?;
    let leader = c.wait_ready(READY).await?;
    let address = format!("127.0.0.1:{}", c.member(leader).api_port);
    anyhow::ensure!(c.member(leader).pause_sidecar(), "cannot stop the sidecar");
    let connects: Vec<_> = (0..BURST)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio::net::TcpStream::connect(address),
                )
                .await
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut waited = 0;
    for connect in connects {
        match connect.await? {
            Ok(stream) => streams.push(stream?),
            Err(_) => waited += 1,
        }
    }
    c.member(leader).resume_sidecar();
    assert_eq!(
        waited, 0,
        "{waited} of {BURST} connections waited more than 3 s for the listener"
    );
    drop(streams);
    // And the API still answers afterwards.
    assert_eq!(c.status(leader, "/liveness").await, Some(200));
    Ok(())
}
