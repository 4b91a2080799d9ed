//! Idle memory of the packed charmed-postgresql snap's daemons, for
//! `scripts/bench-snap.sh` (ignored: a benchmark, not a test):
//!
//! ```sh
//! PGPILOT_SNAP=/var/tmp/pgpilot-snap/charmed-postgresql_..._amd64.snap \
//! PGPILOT_BENCH_OUT=/tmp/snap-memory.json \
//! cargo nextest run -p pgpilot-e2e --run-ignored only -E 'test(snap_idle_memory)'
//! ```
//!
//! One machine of the snapd fixture with the install defaults (no
//! `snap set`), `snap start --enable etcd pgpilot`, wait until
//! `charmed-postgresql.patronictl list` shows the member as the running
//! leader, idle `PGPILOT_BENCH_IDLE_S` seconds (default 60), then read
//! VmRSS (/proc/PID/status) and Pss, Private_Clean + Private_Dirty
//! (/proc/PID/smaps_rollup) of every process of the snap's services, each
//! classified by its command line: `pgpilot run`, `pgpilot fence-guard`,
//! `etcd`, PostgreSQL (`postgres` and its `postgres: ...` children), other.
//! The figures go to `PGPILOT_BENCH_OUT` as JSON, with the .snap's size.
//! `PGPILOT_BENCH_MACHINE_DIR` (optional) is where the machine goes (a new
//! or empty directory that every user can traverse, short enough for
//! PostgreSQL's socket `DIR/var/snap/charmed-postgresql/common/var/run/
//! postgresql/.s.PGSQL.5432` to fit in 107 bytes); default: a temporary
//! directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pgpilot_e2e::snapd::{Machine, SnapFile};
use serde_json::{json, Value};

/// Start to running leader, on a loaded 2-core machine: generous.
const READY: Duration = Duration::from_secs(240);

fn env_u64(key: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{key}={v:?} is not a whole number of seconds")),
        _ => Ok(default),
    }
}

/// The arguments of `pid`'s command line.
fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One `KEY:  N kB` line of /proc/PID/FILE, in kB.
fn proc_kb(pid: i32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a process of the snap's services is, from its command line.
fn role(args: &[String]) -> &'static str {
    let first = args.first().map(String::as_str).unwrap_or("");
    let base = first
        .split_whitespace()
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(':');
    if args.iter().any(|a| a == "fence-guard") {
        "pgpilot fence-guard"
    } else if base == "pgpilot" && args.get(1).is_some_and(|a| a == "run") {
        "pgpilot run"
    } else if base == "etcd" {
        "etcd"
    } else if base == "postgres" || base == "postmaster" {
        // The postmaster, and its children that rename themselves
        // "postgres: <cluster>: checkpointer" and so on.
        "postgresql"
    } else {
        "other"
    }
}

/// `charmed-postgresql.patronictl list --format json`.
fn members(m: &Machine) -> anyhow::Result<Vec<Value>> {
    let out = m.run_app("patronictl", &["list", "--format", "json"], &[])?;
    anyhow::ensure!(
        out.status.success(),
        "patronictl list: exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The member's name once it is the one running leader.
fn wait_leader(m: &Machine, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match members(m) {
            Ok(list) => {
                let field = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_lowercase();
                if list.len() == 1
                    && field(&list[0], "Role") == "leader"
                    && field(&list[0], "State") == "running"
                {
                    return Ok(list[0]["Member"].as_str().unwrap_or("").to_string());
                }
                serde_json::to_string(&list)?
            }
            Err(e) => format!("{e:#}"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "no running leader within {timeout:?}; last patronictl list: {last}\n\
             --- pgpilot journal ---\n{}\n--- etcd journal ---\n{}",
            pgpilot_e2e::file_tail(&m.journal_path("pgpilot"), 40),
            pgpilot_e2e::file_tail(&m.journal_path("etcd"), 20),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The machine's root: `PGPILOT_BENCH_MACHINE_DIR`, or a temporary
/// directory every user can enter (the daemons run as `_daemon_`).
fn machine_root() -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(dir) = std::env::var_os("PGPILOT_BENCH_MACHINE_DIR").filter(|d| !d.is_empty()) {
        return Ok((PathBuf::from(dir), None));
    }
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok((tmp.path().join("bench"), Some(tmp)))
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[test]
#[ignore = "benchmark: run by scripts/bench-snap.sh (needs PGPILOT_SNAP and PGPILOT_BENCH_OUT)"]
fn snap_idle_memory() -> anyhow::Result<()> {
    let snap = SnapFile::from_env()?;
    let out_path = PathBuf::from(
        std::env::var_os("PGPILOT_BENCH_OUT")
            .context("PGPILOT_BENCH_OUT is not set: the JSON file to write the figures to")?,
    );
    let idle = env_u64("PGPILOT_BENCH_IDLE_S", 60)?;
    let snap_bytes = std::fs::metadata(snap.path())?.len();

    let (root, _tmp) = machine_root()?;
    let t0 = Instant::now();
    let m = Machine::install(&snap, "bench", &root)?;
    let installed_s = t0.elapsed().as_secs_f64();
    m.start(&["etcd", "pgpilot"], true)?;
    let t1 = Instant::now();
    let leader = wait_leader(&m, READY)?;
    let ready_s = t1.elapsed().as_secs_f64();
    let mains_before = (m.main_pid("pgpilot"), m.main_pid("etcd"));
    eprintln!(
        "snap_idle_memory: {leader} is the running leader after {ready_s:.1} s; idling {idle} s"
    );

    std::thread::sleep(Duration::from_secs(idle));

    // Still the same main processes: a restart during the idle time would
    // make the figures those of a younger process.
    let mains_after = (m.main_pid("pgpilot"), m.main_pid("etcd"));
    anyhow::ensure!(
        mains_before == mains_after && mains_after.0.is_some() && mains_after.1.is_some(),
        "a service restarted or stopped while idling (main pids pgpilot, etcd: {mains_before:?} \
         -> {mains_after:?})\n--- pgpilot journal ---\n{}\n--- etcd journal ---\n{}",
        pgpilot_e2e::file_tail(&m.journal_path("pgpilot"), 40),
        pgpilot_e2e::file_tail(&m.journal_path("etcd"), 20),
    );

    // Every process of the two units, and anything else of the machine's
    // (by SNAP_COMMON in its environment) the units' tracking missed.
    let mut pids: Vec<(i32, &str)> = Vec::new();
    for app in ["pgpilot", "etcd"] {
        for pid in m.pids(app) {
            pids.push((pid, app));
        }
    }
    for pid in m.leftover_pids() {
        if !pids.iter().any(|(p, _)| *p == pid) {
            pids.push((pid, "machine"));
        }
    }
    pids.sort();
    let mut processes = Vec::new();
    for (pid, unit) in pids {
        let args = argv(pid);
        let (Some(rss), Some(pss)) = (
            proc_kb(pid, "status", "VmRSS"),
            proc_kb(pid, "smaps_rollup", "Pss"),
        ) else {
            continue; // gone meanwhile, or a kernel thread
        };
        let private = proc_kb(pid, "smaps_rollup", "Private_Clean").unwrap_or(0)
            + proc_kb(pid, "smaps_rollup", "Private_Dirty").unwrap_or(0);
        let uid = proc_kb(pid, "status", "Uid");
        processes.push(json!({
            "pid": pid,
            "unit": unit,
            "role": role(&args),
            "cmdline": args.join(" "),
            "uid": uid,
            "rss_kb": rss,
            "pss_kb": pss,
            "private_kb": private,
            "threads": proc_kb(pid, "status", "Threads"),
        }));
    }
    for wanted in ["pgpilot run", "pgpilot fence-guard", "etcd", "postgresql"] {
        anyhow::ensure!(
            processes.iter().any(|p| p["role"] == wanted),
            "no {wanted} process among the snap's processes: {}",
            serde_json::to_string_pretty(&processes)?
        );
    }

    let result = json!({
        "snap": {
            "path": snap.path().display().to_string(),
            "bytes": snap_bytes,
            "name": m.snap_name(),
            "version": m.version(),
        },
        "idle_s": idle,
        "install_s": installed_s,
        "start_to_leader_s": ready_s,
        "leader": leader,
        "main_pids": {"pgpilot": mains_after.0, "etcd": mains_after.1},
        "processes": processes,
    });
    write_json(&out_path, &result)?;
    eprintln!("snap_idle_memory: wrote {}", out_path.display());
    Ok(())
}
