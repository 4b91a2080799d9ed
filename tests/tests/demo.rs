//! `pgpilot demo up` shows the whole product: its members archive WAL to a
//! posix repository, so a backup and `info` work right after `up`, and
//! `demo down --clean` stops every process it started and removes its files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pgpilot_e2e::backup::{run_pgpilot, Outcome};
use pgpilot_e2e::ports::free_port_block;
use pgpilot_e2e::process::alive;

/// A demo uses `--base-port` .. `--base-port` + 29.
const DEMO_PORTS: u16 = 30;

fn show(what: &str, out: &Outcome) -> String {
    format!(
        "{what}: exit {} after {:.1}s\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.code,
        out.elapsed.as_secs_f64(),
        out.stdout,
        out.stderr
    )
}

/// Stops the demo in `dir` when the test ends, also when it fails.
struct DemoGuard {
    dir: PathBuf,
    down: bool,
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        if !self.down {
            let dir = self.dir.to_string_lossy().into_owned();
            let _ = run_pgpilot(&["demo", "down", "--dir", &dir, "--clean"]);
        }
    }
}

/// The pids `up` recorded in DIR/demo.pids.
fn recorded_pids(dir: &Path) -> anyhow::Result<Vec<i32>> {
    let text = std::fs::read_to_string(dir.join("demo.pids"))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let pids = json["processes"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("demo.pids has no processes: {text}"))?
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    Ok(pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_up_backup_info_down() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // PostgreSQL runs as `postgres` when the tests run as root: it must reach DIR.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let dir = tmp.path().join("demo");
    let dir_s = dir.to_string_lossy().into_owned();
    let base = free_port_block(DEMO_PORTS).to_string();
    let mut guard = DemoGuard {
        dir: dir.clone(),
        down: false,
    };

    // Run `up` from a binary in a directory only root can enter, as after
    // a clone in /root (mode 0700): PostgreSQL's archive and restore
    // commands run as `postgres` and must still find pgpilot.
    let private = tmp.path().join("private");
    std::fs::create_dir(&private)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    let private_bin = private.join("pgpilot");
    std::fs::copy(pgpilot_e2e::pgpilot_bin()?, &private_bin)?;
    let up = tokio::task::spawn_blocking({
        let (dir_s, base, bin) = (dir_s.clone(), base.clone(), private_bin.clone());
        move || -> anyhow::Result<Outcome> {
            let started = std::time::Instant::now();
            let out = std::process::Command::new(&bin)
                .args(["demo", "up", "--dir", &dir_s, "--base-port", &base])
                .env_remove("PGPILOT_CONFIG")
                .output()?;
            Ok(Outcome {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                elapsed: started.elapsed(),
            })
        }
    })
    .await??;
    assert_eq!(up.code, 0, "{}", show("demo up", &up));
    assert!(
        up.stdout.contains("The cluster is healthy"),
        "{}",
        show("demo up", &up)
    );
    // It tells the user how to back up, list and restore.
    for verb in [" backup -c ", " info -c ", " restore -c "] {
        assert!(
            up.stdout.contains(verb),
            "demo up does not print `{verb}`: {}",
            show("demo up", &up)
        );
    }
    let pids = recorded_pids(&dir)?;
    assert_eq!(pids.len(), 4, "etcd and 3 members: {pids:?}");

    let config = dir.join("pg1").join("pgpilot.toml");
    let config_s = config.to_string_lossy().into_owned();
    let backup = tokio::task::spawn_blocking({
        let config_s = config_s.clone();
        move || run_pgpilot(&["backup", "-c", &config_s])
    })
    .await??;
    assert_eq!(backup.code, 0, "{}", show("pgpilot backup", &backup));
    let combined = format!("{}{}", backup.stdout, backup.stderr);
    let label = combined
        .lines()
        .find_map(|l| l.split("new backup label = ").nth(1))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no label printed: {}", show("backup", &backup)))?;

    let info = run_pgpilot(&["info", "-c", &config_s, "--output", "json"])?;
    assert_eq!(info.code, 0, "{}", show("pgpilot info", &info));
    let json: serde_json::Value = serde_json::from_str(&info.stdout)?;
    let labels: Vec<String> = json[0]["backup"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["label"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(labels, vec![label.clone()], "{}", show("info", &info));
    let text = run_pgpilot(&["info", "-c", &config_s])?;
    assert!(text.stdout.contains(&label), "{}", show("info", &text));

    let down = run_pgpilot(&["demo", "down", "--dir", &dir_s, "--clean"])?;
    guard.down = true;
    assert_eq!(down.code, 0, "{}", show("demo down", &down));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still runs after demo down");
    }
    assert!(!dir.exists(), "demo down --clean left {}", dir.display());
    Ok(())
}
