//! `pgpilot run` refuses to start — exit code 2, a message naming the
//! problem, nothing left running — on a bad configuration file, an
//! unreachable etcd, or a member name that is already in use.

use std::time::Duration;

use pgpilot_e2e::member::{Member, RunOutput};
use pgpilot_e2e::Cluster;

/// A refused start must not take longer than this.
const QUICK: Duration = Duration::from_secs(10);

fn describe(out: &RunOutput) -> String {
    format!(
        "exit code {:?} after {:.1}s{}\n--- stderr ---\n{}\n--- stdout ---\n{}",
        out.code,
        out.elapsed.as_secs_f64(),
        if out.timed_out {
            " (killed at the time-out)"
        } else {
            ""
        },
        out.stderr,
        out.stdout
    )
}

/// Exit code 2, quickly, and nothing of the member left running.
fn assert_refused(m: &Member, out: &RunOutput, within: Duration) {
    assert_eq!(out.code, Some(2), "{}", describe(out));
    assert!(out.elapsed < within, "took too long: {}", describe(out));
    assert!(
        m.postmaster_pid().is_none(),
        "a postmaster runs: {}",
        describe(out)
    );
    assert!(
        !m.data_dir.join("postmaster.pid").exists(),
        "PostgreSQL was started: {}",
        describe(out)
    );
    assert!(
        !m.pg_listening(),
        "something listens on the PostgreSQL port"
    );
    assert!(!m.api_listening(), "something listens on the API port");
}

/// Run member m1 with its configuration file edited by `edit`; the run
/// must be refused and stderr must name one of `keys`.
async fn refused_config(
    edit: impl Fn(&Member, &str) -> String,
    keys: &[&str],
) -> anyhow::Result<()> {
    let mut c = Cluster::builder().members(0).start().await?;
    let i = c.add_member(c.member_options("m1"))?;
    let m = c.member(i);
    let text = edit(m, &m.default_config());
    assert_ne!(text, m.default_config(), "the edit changed nothing");
    m.write_config(&text)?;
    let out = m.run_once(Duration::from_secs(60)).await?;
    assert_refused(m, &out, QUICK);
    assert!(
        keys.iter().any(|k| out.stderr.contains(k)),
        "stderr should name {keys:?}: {}",
        describe(&out)
    );
    assert!(!out.stderr.contains("panicked"), "{}", describe(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_refused() -> anyhow::Result<()> {
    refused_config(
        |_, t| t.replace("[api]\n", "[api]\nlisten_port = 3\n"),
        &["api.listen_port"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_is_refused() -> anyhow::Result<()> {
    refused_config(
        |m, t| t.replace(&format!("\nport = {}\n", m.pg_port), "\nport = \"five\"\n"),
        &["postgresql.port"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_value_is_refused() -> anyhow::Result<()> {
    refused_config(|_, t| t.replace("name = \"m1\"\n", ""), &["cluster.name"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_timing_is_refused() -> anyhow::Result<()> {
    // loop_wait + 2 * retry_timeout = 5 + 6 > ttl = 10
    refused_config(
        |_, t| t.replace("loop_wait = 1\n", "loop_wait = 5\n"),
        &[
            "bootstrap.ttl",
            "bootstrap.loop_wait",
            "bootstrap.retry_timeout",
        ],
    )
    .await
}

/// A data directory that is a regular file (or lies under one) is refused
/// at start, naming the key, instead of failing initdb every cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_that_is_a_file_is_refused() -> anyhow::Result<()> {
    for under in [false, true] {
        refused_config(
            |m, t| {
                let file = m.data_dir.with_extension("file");
                std::fs::write(&file, "not a directory\n").expect("write the file");
                let target = if under { file.join("pgdata") } else { file };
                t.replace(
                    &format!("data_dir = \"{}\"", m.data_dir.display()),
                    &format!("data_dir = \"{}\"", target.display()),
                )
            },
            &["postgresql.data_dir"],
        )
        .await?;
    }
    Ok(())
}

/// A refusal found after the log is set up is printed once, not as a log
/// line and again as a `pgpilot:` line.
fn printed_once(out: &RunOutput, needle: &str) {
    let lines = out.stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines, 1, "{needle:?} on {lines} lines: {}", describe(out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_refused() -> anyhow::Result<()> {
    let mut c = Cluster::builder().members(0).start().await?;
    // A port nothing listens on.
    let closed = format!("http://127.0.0.1:{}", pgpilot_e2e::ports::free_port());
    let mut options = c.member_options("m1");
    options.endpoints = vec![closed.clone()];
    let i = c.add_member(options)?;
    let m = c.member(i);
    let out = m.run_once(Duration::from_secs(90)).await?;
    assert_refused(m, &out, Duration::from_secs(30));
    assert!(
        out.stderr.contains("etcd") && out.stderr.contains(closed.trim_start_matches("http://")),
        "stderr should say etcd at {closed} cannot be reached: {}",
        describe(&out)
    );
    printed_once(&out, "cannot reach etcd");
    Ok(())
}

/// A second `pgpilot run` with the name of a running member is refused and
/// the running member carries on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_member_name_is_refused() -> anyhow::Result<()> {
    let mut c = Cluster::builder().members(1).start().await?;
    let first = c.wait_ready(Duration::from_secs(120)).await?;
    c.execute(
        first,
        "CREATE TABLE e2e_dup (id int PRIMARY KEY); INSERT INTO e2e_dup VALUES (1)",
    )
    .await?;
    let first_api = c.member(first).api_url("/patroni");

    let mut options = c.member_options("m1");
    options.label = Some("m1-duplicate".to_string());
    let d = c.add_member(options)?;
    let out = c.member(d).run_once(Duration::from_secs(60)).await?;
    assert_refused(c.member(d), &out, Duration::from_secs(30));
    let stderr = out.stderr.to_lowercase();
    assert!(
        stderr.contains("already") && stderr.contains("m1") && stderr.contains("running"),
        "stderr should say a member named m1 is already running: {}",
        describe(&out)
    );

    // The first member: still running, still the leader, still listed with
    // its own API, still writable — now and a few HA cycles later.
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        assert!(
            c.member(first).is_running(),
            "the first member's sidecar exited\n{}",
            c.logs(40)
        );
        assert_eq!(
            c.status(first, "/primary").await,
            Some(200),
            "{}",
            c.logs(40)
        );
        let json = c.cluster_json(first).await?;
        let members = json["members"].as_array().expect("members");
        assert_eq!(members.len(), 1, "/cluster: {json}");
        assert_eq!(members[0]["name"], "m1", "/cluster: {json}");
        assert_eq!(members[0]["role"], "leader", "/cluster: {json}");
        assert_eq!(
            members[0]["api_url"],
            first_api.as_str(),
            "/cluster: {json}"
        );
        c.execute(
            first,
            &format!("INSERT INTO e2e_dup VALUES ({})", round + 2),
        )
        .await?;
    }
    assert_eq!(
        c.query_one(first, "SELECT count(*)::text FROM e2e_dup")
            .await?,
        "3"
    );
    Ok(())
}
