//! The `initialize` claim dies with its owner (issue 13): a member that
//! dies after winning the bootstrap race and before the cluster exists does
//! not leave the others waiting forever; another member bootstraps.

use std::time::{Duration, Instant};

use pgpilot_e2e::Cluster;
use serde_json::Value;

/// The `initialize` key: `None` when absent, else its value.
fn initialize(c: &Cluster) -> anyhow::Result<Option<String>> {
    let key = format!("/pgpilot/{}/initialize", pgpilot_e2e::SCOPE);
    let out = c.etcd().ctl(&["get", &key, "-w", "json"])?;
    anyhow::ensure!(out.status.success(), "etcdctl get: {out:?}");
    let json: Value = serde_json::from_slice(&out.stdout)?;
    Ok(json["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .map(|kv| {
            // etcdctl's JSON has the value in base64; an empty value has none.
            kv["value"].as_str().unwrap_or("").to_string()
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_claim_of_a_dead_member_expires() -> anyhow::Result<()> {
    let mut c = Cluster::builder().members(0).start().await?;
    let first = c.add_member(c.member_options("m1"))?;
    c.start_member(first)?;
    // Kill m1 in the middle of its bootstrap: it has claimed `initialize`
    // (empty value) and runs initdb.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "m1 never claimed initialize: {}",
            c.logs(40)
        );
        if initialize(&c)?.as_deref() == Some("") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.member(first).kill_sidecar();
    if let Some(pid) = c.member(first).postmaster_pid() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    anyhow::ensure!(
        initialize(&c)?.as_deref() == Some(""),
        "m1 finished its bootstrap before it was killed (too fast to test): {}",
        c.logs(40)
    );

    let second = c.add_member(c.member_options("m2"))?;
    c.start_member(second)?;
    // m1's lease runs out within a ttl; m2 then bootstraps.
    let leader = c
        .wait_leader(Duration::from_secs(120))
        .await
        .map_err(|e| c.with_logs(e))?;
    assert_eq!(leader, second, "{}", c.logs(40));
    // The leader key comes first, the system identifier once initdb is
    // done and PostgreSQL runs.
    pgpilot_e2e::wait_until(
        "initialize to hold the new cluster's system identifier",
        Duration::from_secs(120),
        async || {
            let claim = initialize(&c)?;
            anyhow::ensure!(claim.as_deref().is_some_and(|v| !v.is_empty()), "{claim:?}");
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;
    Ok(())
}
