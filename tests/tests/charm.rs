//! The packed charm (`$PGPILOT_CHARM`) deployed with the packed snap
//! (`$PGPILOT_SNAP`) on the model simulator (tests/src/juju/driver.rs):
//! the Must-shows of issue 11.

use std::time::Duration;

use pgpilot_e2e::juju::checks::{self, cluster_shape, etcd_members, DEPLOY};
use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};

fn active_cluster(d: &Deployment, units: usize) -> anyhow::Result<String> {
    d.wait_for("every unit active, one Primary", DEPLOY, |d| {
        let statuses = d.statuses();
        anyhow::ensure!(statuses.len() == units, "{} units", statuses.len());
        let primaries: Vec<&String> = statuses
            .iter()
            .filter(|(_, s)| s.0 == "active" && s.1 == "Primary")
            .map(|(u, _)| u)
            .collect();
        let replicas = statuses
            .values()
            .filter(|s| s.0 == "active" && s.1.is_empty())
            .count();
        anyhow::ensure!(
            primaries.len() == 1 && replicas == units - 1,
            "statuses {statuses:?}"
        );
        Ok(primaries[0].clone())
    })
}

#[test]
fn deploy_three_units() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(&tmp, "127.0.2", DriverOptions::default())?;
    d.add_units(3)?;
    let primary = active_cluster(&d, 3)?;
    let m = d.machine(&primary).expect("machine");
    let (leader, streaming) = cluster_shape(&m)?;
    assert!(leader.is_some(), "no leader");
    assert_eq!(streaming.len(), 2, "streaming: {streaming:?}");
    let etcd = etcd_members(&m)?;
    assert_eq!(etcd.len(), 3, "{etcd:?}");
    assert!(etcd.iter().all(|(_, learner)| !learner), "{etcd:?}");
    let app = d.model().state().app_status;
    assert_eq!(app.status, "active", "{app:?}");
    let _ = Duration::from_secs(1);
    Ok(())
}

#[test]
#[ignore]
fn debug_one_unit() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(
        &tmp,
        "127.0.7",
        DriverOptions {
            update_status_interval: None,
            ..DriverOptions::default()
        },
    )?;
    d.add_units(1)?;
    d.settle(DEPLOY)?;
    let u = "postgresql/0";
    let m = d.machine(u).expect("machine");
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for args in [
        s(&["get", "-d", "charmed-postgresql"]),
        s(&["services", "charmed-postgresql"]),
        s(&["list", "charmed-postgresql"]),
    ] {
        let r = m.cli(&args, None, &[]);
        eprintln!("--- snap {args:?}: {r:?}");
    }
    for _ in 0..2 {
        let run = d.model().run_hook(u, "update-status", &[])?;
        eprintln!(
            "--- update-status: {} {:?} {:?}",
            run.code, run.output, run.logs
        );
    }
    eprintln!("statuses: {:?}", d.statuses());
    eprintln!("patronictl: {:?}", checks::members(&m));
    eprintln!("--- pgpilot journal\n{}", m.journal("pgpilot"));
    eprintln!("{}", d.log_tail(200));
    eprintln!(
        "--- host.log\n{}",
        std::fs::read_to_string(d.dir().join("host.log")).unwrap_or_default()
    );
    Ok(())
}
