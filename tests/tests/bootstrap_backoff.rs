//! A bootstrap that fails (issue 13) is tried again less and less often —
//! loop_wait, then twice that, and so on up to five minutes — and the
//! member says why it waits, instead of running initdb every loop_wait.

use std::time::Duration;

use pgpilot_e2e::{wait_until, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_bootstraps_back_off_and_say_why() -> anyhow::Result<()> {
    // initdb works; PostgreSQL then refuses to start on this parameter.
    let c = Cluster::builder()
        .members(1)
        .extra_toml("\n[postgresql.parameters]\nno_such_setting = 1\n")
        .start()
        .await?;
    let log = || c.member(0).log();
    wait_until(
        "three failed bootstraps, each waiting twice as long",
        Duration::from_secs(150),
        async || {
            let log = log();
            for wait in ["1s", "2s", "4s"] {
                anyhow::ensure!(
                    log.contains(&format!("next bootstrap attempt in {wait}")),
                    "no wait of {wait} yet"
                );
            }
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;
    let log = log();
    assert!(
        log.contains("my last bootstrap failed (") && log.contains("trying again in"),
        "the member should say why it waits: {}",
        c.logs(40)
    );
    // Between two attempts it waited: fewer attempts than loop_wait allows.
    let attempts = log.matches("won the bootstrap race").count();
    assert!(
        (3..=5).contains(&attempts),
        "{attempts} attempts: {}",
        c.logs(60)
    );
    Ok(())
}
