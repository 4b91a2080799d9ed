//! The charm benchmark (scripts/bench-charm.sh): on the model simulator
//! with the packed charm and snap, seconds from `juju deploy -n 3` to every
//! unit active, the hooks that took and their CPU time, then seconds from
//! the primary machine's loss to a survivor's unit showing `Primary`
//! (update-status every 5 minutes, Juju's default: the status comes from
//! pgpilot's callback). Ignored in the suite; prints one JSON line
//! `charm-bench: {...}`.

use std::time::{Duration, Instant};

use pgpilot_e2e::juju::checks::{self, cluster_shape, DEPLOY};
use pgpilot_e2e::juju::driver::DriverOptions;

#[test]
#[ignore]
fn charm_deploy_and_failover() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let net = std::env::var("PGPILOT_BENCH_NET").unwrap_or_else(|_| "127.0.9".into());
    let d = checks::deployment(&tmp, &net, DriverOptions::default())?;
    let started = Instant::now();
    d.add_units(3)?;
    let primary = d.wait_for("3 units active", DEPLOY, |d| {
        let st = d.statuses();
        let primary = st
            .iter()
            .find(|(_, s)| s.0 == "active" && s.1 == "Primary")
            .map(|(u, _)| u.clone());
        let replicas = st
            .values()
            .filter(|s| s.0 == "active" && s.1.is_empty())
            .count();
        anyhow::ensure!(st.len() == 3 && replicas == 2, "{st:?}");
        primary.ok_or_else(|| anyhow::anyhow!("no Primary: {st:?}"))
    })?;
    let deploy_s = started.elapsed().as_secs_f64();
    let (hooks_to_active, cpu_to_active) = d.model().hook_totals();
    d.settle(DEPLOY)?;
    let (hooks_settled, cpu_settled) = d.model().hook_totals();
    let settled_s = started.elapsed().as_secs_f64();

    let survivors: Vec<String> = d.units().into_iter().filter(|u| *u != primary).collect();
    let lost = Instant::now();
    d.power_off(&primary)?;
    let probe = d.machine(&survivors[0]).expect("machine");
    let leader_s = d.wait_for(
        "pgpilot elects a new leader",
        Duration::from_secs(120),
        |_| {
            let (leader, _) = cluster_shape(&probe)?;
            anyhow::ensure!(
                leader
                    .as_deref()
                    .is_some_and(|l| l != primary.replace('/', "-")),
                "leader {leader:?}"
            );
            Ok(lost.elapsed().as_secs_f64())
        },
    )?;
    let status_s = d.wait_for("a survivor shows Primary", Duration::from_secs(120), |d| {
        let st = d.statuses();
        anyhow::ensure!(
            survivors
                .iter()
                .any(|u| st[u].0 == "active" && st[u].1.starts_with("Primary")),
            "{st:?}"
        );
        Ok(lost.elapsed().as_secs_f64())
    })?;
    println!(
        "charm-bench: {}",
        serde_json::json!({
            "deploy_to_active_s": (deploy_s * 10.0).round() / 10.0,
            "hooks_to_active": hooks_to_active,
            "hook_cpu_to_active_s": (cpu_to_active.as_secs_f64() * 100.0).round() / 100.0,
            "deploy_to_settled_s": (settled_s * 10.0).round() / 10.0,
            "hooks_to_settled": hooks_settled,
            "hook_cpu_to_settled_s": (cpu_settled.as_secs_f64() * 100.0).round() / 100.0,
            "loss_to_new_leader_s": (leader_s * 10.0).round() / 10.0,
            "loss_to_primary_status_s": (status_s * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
