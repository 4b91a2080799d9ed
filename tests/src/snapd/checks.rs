//! Checks the snap tests and the charm tests share: pgpilot's view of the
//! cluster through a machine's `patronictl`, a command's output for
//! failure messages, a test directory the snap's daemons can enter.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Machine;

/// A directory every user can enter (the daemons run as `_daemon_`).
pub fn open_tempdir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(tmp)
}

/// A command's exit code, stdout and stderr, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `charmed-postgresql.patronictl list --format json`.
pub fn members(m: &Machine) -> anyhow::Result<Vec<Value>> {
    let out = m.run_app("patronictl", &["list", "--format", "json"], &[])?;
    anyhow::ensure!(out.status.success(), "patronictl list: {}", text(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The leader's name once one leader runs and `replicas` members stream.
pub fn wait_cluster(m: &Machine, replicas: usize, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(list) = members(m) {
            let role = |v: &Value| v["Role"].as_str().unwrap_or("").to_lowercase();
            let state = |v: &Value| v["State"].as_str().unwrap_or("").to_lowercase();
            let leaders: Vec<&Value> = list
                .iter()
                .filter(|v| role(v) == "leader" && state(v) == "running")
                .collect();
            let streaming = list
                .iter()
                .filter(|v| role(v) != "leader" && state(v) == "streaming")
                .count();
            if leaders.len() == 1 && streaming == replicas && list.len() == replicas + 1 {
                return Ok(leaders[0]["Member"].as_str().unwrap_or("").to_string());
            }
            last = serde_json::to_string(&list)?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no leader with {replicas} streaming replicas within {timeout:?}; last: {last}\n\
             --- pgpilot journal ---\n{}",
            m.journal("pgpilot")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
