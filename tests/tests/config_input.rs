//! Bad values for the cluster configuration (issue 13): refused before they
//! are stored, with the reason PostgreSQL (or etcd) would give, through
//! PATCH /config, PUT /config and `pgpilot ctl edit-config`; and a
//! configuration written around those checks (straight into etcd) is not
//! applied: the leader keeps its lease and PostgreSQL keeps running.

use std::time::Duration;

use pgpilot_e2e::http::Method;
use pgpilot_e2e::ops::{call, ctl};
use pgpilot_e2e::{wait_until, Cluster};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_values_are_refused_before_they_are_stored() -> anyhow::Result<()> {
    let c = Cluster::builder().members(1).start().await?;
    let leader = c.wait_ready(READY).await?;
    let before = c.get(leader, "/config").await?.json()?;
    let params = |name: &str, value: Value| json!({"postgresql": {"parameters": {name: value}}});
    // A number too large for any integer type arrives as a float.
    let huge: Value = serde_json::from_str("99999999999999999999999")?;
    let cases = [
        (
            params("shared_buffers", json!("-1GB")),
            "-131072 8kB is outside the valid range for parameter \"shared_buffers\" (16 .. 1073741823)",
        ),
        (
            params("work_mem", json!("99999999999999TB")),
            "Value exceeds integer range",
        ),
        (
            params("max_connections", huge),
            "invalid value for parameter \"max_connections\"",
        ),
        (
            params("max_connections", json!(300_000)),
            "outside the valid range for parameter \"max_connections\"",
        ),
        (
            params("wal_level", json!("archive")),
            "Available values: minimal, replica, logical",
        ),
        (
            params("statement_timeout", json!("5 parsecs")),
            "Valid units for this parameter",
        ),
        (json!({"loop_wait": u64::MAX}), "key `loop_wait`"),
        (
            json!({"loop_wait": 3, "retry_timeout": i64::MAX}),
            "key `retry_timeout`",
        ),
        (json!({"ttl": i64::MAX}), "key `ttl`"),
        (json!({"ttl": 9_000_000_001u64}), "9000000000"),
    ];
    for (body, want) in &cases {
        let (status, text) = call(&c, leader, Method::PATCH, "/config", Some(body.clone())).await?;
        assert_eq!(status, 400, "PATCH {body}: {text}");
        assert!(text.contains(want), "PATCH {body}: {text}");
        let mut full = before.clone();
        pgpilot::api::config::merge_patch(&mut full, body);
        let (status, text) = call(&c, leader, Method::PUT, "/config", Some(full)).await?;
        assert_eq!(status, 400, "PUT with {body}: {text}");
        assert!(text.contains(want), "PUT with {body}: {text}");
    }
    let out = ctl(
        &c,
        leader,
        &["edit-config", "-p", "shared_buffers=-1GB", "--force"],
    )
    .await?;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr
            .contains("outside the valid range for parameter \"shared_buffers\""),
        "{out:?}"
    );
    assert_eq!(c.get(leader, "/config").await?.json()?, before);

    // Written straight into etcd, past every check: not applied.
    let pid = c.member(leader).postmaster_pid();
    let mut bad = before.clone();
    bad["ttl"] = json!(i64::MAX);
    let key = format!("/pgpilot/{}/config", pgpilot_e2e::SCOPE);
    let put = c.etcd().ctl(&["put", &key, &bad.to_string()])?;
    anyhow::ensure!(put.status.success(), "etcdctl put: {put:?}");
    let from = c.member(leader).log().len();
    wait_until(
        "the invalid configuration to be ignored",
        READY,
        async || {
            let log = c.member(leader).log();
            anyhow::ensure!(
                log[from..].contains("ignoring the configuration in etcd"),
                "not yet"
            );
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;
    // Several HA cycles later the leader still leads the same PostgreSQL.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(c.leader().await, Some(leader), "{}", c.logs(40));
    assert_eq!(c.member(leader).postmaster_pid(), pid, "{}", c.logs(40));
    let log = c.member(leader).log();
    assert!(
        !log[from..].contains("too large lease TTL"),
        "{}",
        &log[from..]
    );
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}
