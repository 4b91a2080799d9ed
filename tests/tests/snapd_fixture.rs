//! The snapd fixture (src/snapd) on a tiny hand-made snap: install runs
//! the hooks, `snap set` commits or rolls back, services start, stop and
//! restart as snapd's units, a refresh copies $SNAP_DATA and keeps
//! $SNAP_COMMON, and dropping the machine leaves no process behind.
//! Needs `mksquashfs`/`unsquashfs` (squashfs-tools), `setpriv` and root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgpilot_e2e::process::alive;
use pgpilot_e2e::snapd::{ChangeError, Machine, SnapFile};

const NAME: &str = "snapd-fixture-demo";

const SNAP_YAML: &str = r#"name: snapd-fixture-demo
version: 'VERSION'
summary: The snapd fixture's self-test snap
description: A tiny snap for tests/tests/snapd_fixture.rs.
base: core24
grade: devel
confinement: strict
system-usernames:
  _daemon_: shared
environment:
  DEMO_TOP: $SNAP/top
  PATH: $SNAP/usr/sbin:$SNAP/usr/bin:$SNAP/sbin:$SNAP/bin:$PATH
apps:
  sleeper:
    command: bin/sleeper --data $SNAP_DATA $UNSET
    command-chain: [bin/drop-privileges]
    daemon: simple
    install-mode: disable
    restart-condition: always
    stop-timeout: 5s
    environment:
      SLEEPER_OUT: $SNAP_COMMON/out
  ticker:
    command: bin/ticker
    daemon: simple
    stop-mode: sigterm
  flaky:
    command: bin/flaky
    daemon: simple
    install-mode: disable
  hello:
    command: bin/hello
"#;

const INSTALL: &str = r#"#!/bin/sh
set -eu
mkdir -p "$SNAP_COMMON/out"
chown 584792:584792 "$SNAP_COMMON/out"
snapctl set foo.default=1 greeting="hello world"
env | sort > "$SNAP_COMMON/install.env"
pwd > "$SNAP_COMMON/install.cwd"
if ( : > "$SNAP/written-by-install" ) 2>/dev/null; then echo writable; else echo read-only; fi > "$SNAP_COMMON/snap-write"
"#;

const CONFIGURE: &str = r#"#!/bin/sh
set -eu
if [ "$(snapctl get restart-sleeper)" = true ]; then
  snapctl unset restart-sleeper
  snapctl restart snapd-fixture-demo.sleeper
fi
if [ "$(snapctl get foo.bar)" = bad ]; then
  echo "invalid foo.bar: bad" >&2
  exit 1
fi
snapctl get -d foo > "$SNAP_DATA/seen.json"
snapctl services > "$SNAP_DATA/services.txt"
echo "configured $SNAP_REVISION"
"#;

const POST_REFRESH: &str = r#"#!/bin/sh
echo "$SNAP_REVISION" > "$SNAP_DATA/post-refresh"
"#;

const DROP_PRIVILEGES: &str = r#"#!/bin/sh
exec /usr/bin/setpriv --reuid=584792 --regid=584792 --clear-groups -- "$@"
"#;

const SLEEPER: &str = r#"#!/bin/sh
echo "sleeper $SNAP_REVISION as $(id -u): $*"
out="$SLEEPER_OUT"
snapctl get greeting > "$out/get" 2>&1
snapctl set foo.x=1 > "$out/set" 2>&1 || echo "exit $?" >> "$out/set"
pwd > "$out/cwd"
echo "$*" > "$out/args"
env -i /usr/bin/setsid /bin/sleep 1001 &
/bin/sleep 1000 &
wait
"#;

const TICKER: &str = "#!/bin/sh\nexec /bin/sleep 1000\n";

const FLAKY: &str = "#!/bin/sh\necho run >> \"$SNAP_COMMON/flaky.log\"\nexit 3\n";

const HELLO: &str = r#"#!/bin/sh
echo "rev=$SNAP_REVISION top=$DEMO_TOP cwd=$(pwd) caller=$CALLER uid=$(id -u) app=$SNAP_APP_NAME"
snapctl get greeting
"#;

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Pack a version of the demo snap into DIR/NAME_VERSION_amd64.snap.
fn pack(dir: &Path, version: &str, extra_hooks: &[(&str, &str)]) -> anyhow::Result<SnapFile> {
    let tree = dir.join(format!("tree-{version}"));
    write(
        &tree.join("meta/snap.yaml"),
        &SNAP_YAML.replace("VERSION", version),
        0o644,
    )?;
    write(&tree.join("meta/hooks/install"), INSTALL, 0o755)?;
    write(&tree.join("meta/hooks/configure"), CONFIGURE, 0o755)?;
    for (hook, text) in extra_hooks {
        write(&tree.join("meta/hooks").join(hook), text, 0o755)?;
    }
    write(&tree.join("bin/drop-privileges"), DROP_PRIVILEGES, 0o755)?;
    write(&tree.join("bin/sleeper"), SLEEPER, 0o755)?;
    write(&tree.join("bin/ticker"), TICKER, 0o755)?;
    write(&tree.join("bin/flaky"), FLAKY, 0o755)?;
    write(&tree.join("bin/hello"), HELLO, 0o755)?;
    let file = dir.join(format!("{NAME}_{version}_amd64.snap"));
    let out = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&file)
        .args([
            "-noappend",
            "-comp",
            "xz",
            "-all-root",
            "-no-progress",
            "-quiet",
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run mksquashfs ({e}): install squashfs-tools"))?;
    anyhow::ensure!(
        out.status.success(),
        "mksquashfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    SnapFile::new(&file)
}

/// A temporary directory for the test, mode 0755 (the snap's daemons run
/// as `_daemon_`), kept with PGPILOT_KEEP_TEST_DIR=1.
fn test_dir() -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    let tmp = tempfile::Builder::new()
        .prefix("snapd-fixture-")
        .tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    if pgpilot_e2e::keep_test_dir() {
        let path = tmp.keep();
        eprintln!("keeping {}", path.display());
        return Ok((None, path));
    }
    let path = tmp.path().to_path_buf();
    Ok((Some(tmp), path))
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

fn environ(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn snapd_fixture_runs_a_snap_like_snapd() -> anyhow::Result<()> {
    let (_tmp, dir) = test_dir()?;
    let v1 = pack(&dir, "1.0", &[])?;
    let v2 = pack(&dir, "2.0", &[("post-refresh", POST_REFRESH)])?;
    let root = dir.join("m1");
    let m = Machine::install(&v1, "m1", &root)?;

    // Install: hooks ran in order, with snapd's environment.
    assert_eq!(m.revision(), "x1");
    assert_eq!(m.get("foo.default")?, serde_json::json!(1));
    assert_eq!(m.get("greeting")?, serde_json::json!("hello world"));
    assert_eq!(
        read(m.data_dir().join("seen.json")),
        "{\n\t\"foo\": {\n\t\t\"default\": 1\n\t}\n}\n"
    );
    let env = read(m.common_dir().join("install.env"));
    let snap = m.snap_dir().display().to_string();
    for wanted in [
        format!("SNAP={snap}"),
        format!("SNAP_DATA={}", m.data_dir().display()),
        format!("SNAP_COMMON={}", m.common_dir().display()),
        "SNAP_REVISION=x1".to_string(),
        format!("SNAP_NAME={NAME}"),
        "SNAP_VERSION=1.0".to_string(),
        "LANG=C.UTF-8".to_string(),
        format!("DEMO_TOP={snap}/top"),
        format!("HOME={}/home-root/snap/{NAME}/x1", root.display()),
    ] {
        assert!(
            env.lines().any(|l| l == wanted),
            "install hook env lacks {wanted}:\n{env}"
        );
    }
    assert!(
        env.lines()
            .any(|l| l.starts_with("SNAP_COOKIE=") && l.len() > 20),
        "{env}"
    );
    assert_eq!(read(m.common_dir().join("install.cwd")), "/\n");
    if m.snap_read_only() {
        assert_eq!(read(m.common_dir().join("snap-write")), "read-only\n");
    }
    // The service without install-mode: disable was enabled and started
    // before the configure hook ran.
    let table = read(m.data_dir().join("services.txt"));
    assert!(table.starts_with("Service  "), "{table}");
    assert!(
        table.contains(&format!("{NAME}.ticker   enabled   active    -")),
        "{table}"
    );
    assert!(
        table.contains(&format!("{NAME}.sleeper  disabled  inactive  -")),
        "{table}"
    );
    let services = |m: &Machine| m.services();
    assert_eq!(
        services(&m),
        vec![
            ("flaky".to_string(), false, false),
            ("sleeper".to_string(), false, false),
            ("ticker".to_string(), true, true)
        ]
    );

    // snap set: committed when the hook exits 0.
    let outcome = m.set(&[("foo.bar", "good"), ("foo.n", "5")])?;
    assert!(
        outcome.hook_output.contains("configured x1"),
        "{}",
        outcome.hook_output
    );
    assert_eq!(m.get("foo.n")?, serde_json::json!(5));
    assert_eq!(
        read(m.data_dir().join("seen.json")),
        "{\n\t\"foo\": {\n\t\t\"bar\": \"good\",\n\t\t\"default\": 1,\n\t\t\"n\": 5\n\t}\n}\n"
    );

    // A service: _daemon_ through its command-chain, cwd $SNAP_DATA, snapctl get only.
    m.start(&["sleeper"], true)?;
    m.wait_active("sleeper", true, Duration::from_secs(10))?;
    wait_for("sleeper's three processes", Duration::from_secs(10), || {
        m.pids("sleeper").len() == 3
    })?;
    let first = m.main_pid("sleeper").unwrap();
    assert_eq!(uid_of(first), Some(584792));
    let out = m.common_dir().join("out");
    wait_for("sleeper's files", Duration::from_secs(10), || {
        out.join("args").exists()
    })?;
    assert_eq!(read(out.join("get")), "hello world\n");
    assert_eq!(
        read(out.join("set")),
        "error: cannot use \"set\" with uid 584792, try with sudo\nexit 1\n"
    );
    assert_eq!(
        read(out.join("cwd")),
        format!("{}\n", m.data_dir().display())
    );
    assert_eq!(
        read(out.join("args")),
        format!("--data {}\n", m.data_dir().display())
    );

    // A failing configure hook: nothing committed, the queued restart dropped.
    let before = m.pids("sleeper");
    let err = m
        .set(&[("restart-sleeper", "true"), ("foo.bar", "bad")])
        .unwrap_err();
    let change = ChangeError::of(&err).expect("a ChangeError");
    assert_eq!(
        change.task,
        format!("Run configure hook of \"{NAME}\" snap")
    );
    assert_eq!(
        change.reason,
        "run hook \"configure\": invalid foo.bar: bad"
    );
    assert_eq!(
        change.cli_message(),
        format!(
            "error: cannot perform the following tasks:\n- Run configure hook of \"{NAME}\" snap \
             (run hook \"configure\": invalid foo.bar: bad)"
        )
    );
    assert_eq!(
        change.hook_output.as_deref(),
        Some("invalid foo.bar: bad\n")
    );
    assert_eq!(m.get("foo.bar")?, serde_json::json!("good"));
    assert_eq!(m.get("restart-sleeper")?, serde_json::Value::Null);
    assert_eq!(m.main_pid("sleeper"), Some(first));

    // A succeeding one: committed, then its queued restart carried out.
    let outcome = m.set(&[("restart-sleeper", "true")])?;
    assert_eq!(outcome.services, vec!["restart sleeper".to_string()]);
    assert_eq!(m.get("restart-sleeper")?, serde_json::Value::Null);
    m.wait_active("sleeper", true, Duration::from_secs(10))?;
    let second = m.main_pid("sleeper").unwrap();
    assert_ne!(second, first);
    for pid in &before {
        assert!(
            !alive(*pid),
            "{pid} of the old sleeper survived its restart"
        );
    }

    // stop / start / restart.
    m.restart(&["sleeper"])?;
    let third = m.main_pid("sleeper").unwrap();
    assert_ne!(third, second);
    wait_for("sleeper's three processes", Duration::from_secs(10), || {
        m.pids("sleeper").len() == 3
    })?;
    let running = m.pids("sleeper");
    m.stop(&[&format!("{NAME}.sleeper")], false)?;
    assert!(m.services().contains(&("sleeper".to_string(), true, false)));
    assert!(m.pids("sleeper").is_empty());
    for pid in &running {
        assert!(!alive(*pid), "{pid} survived the stop");
    }
    m.start(&["sleeper"], false)?;
    m.wait_active("sleeper", true, Duration::from_secs(10))?;

    // snapctl from an app (root): commits at once; snapd's errors.
    let out = m.snapctl(&["get", "-d", "foo.bar"])?;
    assert_eq!(stdout(&out), "{\n\t\"foo.bar\": \"good\"\n}\n");
    assert!(m.snapctl(&["set", "x.y=2"])?.status.success());
    assert_eq!(m.get("x.y")?, serde_json::json!(2));
    let out = m.snapctl(&["get"])?;
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(1), "error: snapctl: get which option?\n".to_string())
    );
    let out = m.snapctl(&["set", "Bad=1"])?;
    assert_eq!(
        stderr(&out),
        "error: snapctl: invalid option name: \"Bad\"\n"
    );
    let out = m.snapctl(&["services", &format!("{NAME}.nope")])?;
    assert_eq!(
        stderr(&out),
        format!("error: snapctl: unknown service: \"{NAME}.nope\"\n")
    );
    assert!(stderr(&m.snapctl(&["frobnicate"])?)
        .starts_with("error: snapctl: Unknown command `frobnicate'"));

    // A command app.
    let out = m.run_app("hello", &[], &[("CALLER", "me")])?;
    assert_eq!(
        stdout(&out),
        format!("rev=x1 top={snap}/top cwd=/ caller=me uid=0 app=hello\nhello world\n"),
        "{}",
        stderr(&out)
    );

    // restart-condition on-failure and systemd's start limit: 5 starts, then failed.
    m.start(&["flaky"], false)?;
    let flaky_log = m.common_dir().join("flaky.log");
    wait_for("flaky to fail 5 times", Duration::from_secs(10), || {
        read(flaky_log.clone()).lines().count() == 5 && m.main_pid("flaky").is_none()
    })?;
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(read(flaky_log.clone()).lines().count(), 5);
    assert!(m
        .journal("flaky")
        .contains("Start request repeated too quickly."));

    // Refresh: $SNAP_DATA copied, $SNAP_COMMON kept, enabled services back.
    std::fs::write(m.data_dir().join("data-marker"), "x1 data")?;
    std::fs::write(m.common_dir().join("common-marker"), "common")?;
    let ticker_before = m.main_pid("ticker").unwrap();
    let sleeper_before = m.main_pid("sleeper").unwrap();
    m.refresh(&v2)?;
    assert_eq!(
        (m.revision(), m.version()),
        ("x2".to_string(), "2.0".to_string())
    );
    assert_eq!(m.revisions(), vec!["x1".to_string(), "x2".to_string()]);
    assert_eq!(read(m.data_dir().join("data-marker")), "x1 data");
    assert_eq!(read(m.data_dir().join("post-refresh")), "x2\n");
    assert_eq!(read(m.common_dir().join("common-marker")), "common");
    assert!(m.data_dir_of("x1").join("data-marker").exists());
    assert_eq!(
        std::fs::read_link(root.join(format!("snap/{NAME}/current")))?,
        Path::new("x2")
    );
    assert_eq!(
        std::fs::read_link(root.join(format!("var/snap/{NAME}/current")))?,
        Path::new("x2")
    );
    for app in ["ticker", "sleeper"] {
        m.wait_active(app, true, Duration::from_secs(10))?;
        let pid = m.main_pid(app).unwrap();
        assert!(
            environ(pid).contains("SNAP_REVISION=x2\n"),
            "{app} runs the old revision"
        );
    }
    assert!(!alive(ticker_before) && !alive(sleeper_before));
    assert!(
        m.main_pid("flaky").is_none(),
        "a disabled service was started"
    );
    assert!(read(m.data_dir().join("seen.json")).contains("\"good\""));

    // Dropping the machine: every process gone, the root removed.
    wait_for("sleeper's three processes", Duration::from_secs(10), || {
        m.pids("sleeper").len() == 3
    })?;
    let mut pids = m.pids("sleeper");
    pids.extend(m.pids("ticker"));
    assert!(m.leftover_pids().len() >= pids.len());
    drop(m);
    for pid in pids {
        assert!(!alive(pid), "{pid} survived the machine");
    }
    if !pgpilot_e2e::keep_test_dir() {
        assert!(!root.exists());
    }
    Ok(())
}

#[test]
fn a_failing_install_hook_fails_the_install() -> anyhow::Result<()> {
    let (_tmp, dir) = test_dir()?;
    let tree = dir.join("tree");
    write(
        &tree.join("meta/snap.yaml"),
        "name: snapd-fixture-bad\nversion: '1'\nsummary: s\ndescription: d\n",
        0o644,
    )?;
    write(
        &tree.join("meta/hooks/install"),
        "#!/bin/sh\necho one\necho 'no way' >&2\nexit 1\n",
        0o755,
    )?;
    let file = dir.join("bad.snap");
    let status = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&file)
        .args([
            "-noappend",
            "-comp",
            "xz",
            "-all-root",
            "-no-progress",
            "-quiet",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "mksquashfs failed");
    let root = dir.join("m");
    let err = match Machine::install(&SnapFile::new(&file)?, "bad", &root) {
        Ok(_) => anyhow::bail!("the install succeeded"),
        Err(e) => e,
    };
    let change = ChangeError::of(&err).expect("a ChangeError");
    assert_eq!(
        change.to_string(),
        "cannot perform the following tasks:\n- Run install hook of \"snapd-fixture-bad\" snap if \
         present (run hook \"install\": \n-----\none\nno way\n-----)"
    );
    if !pgpilot_e2e::keep_test_dir() {
        assert!(!root.exists());
    }
    Ok(())
}

#[test]
fn a_failing_refresh_is_undone() -> anyhow::Result<()> {
    let (_tmp, dir) = test_dir()?;
    let v1 = pack(&dir, "1.0", &[])?;
    let broken = pack(
        &dir,
        "2.0",
        &[("post-refresh", "#!/bin/sh\necho broken >&2\nexit 1\n")],
    )?;
    let root = dir.join("m");
    let m = Machine::install(&v1, "m", &root)?;
    m.start(&["sleeper"], true)?;
    m.wait_active("sleeper", true, Duration::from_secs(10))?;
    let err = m.refresh(&broken).unwrap_err();
    let change = ChangeError::of(&err).expect("a ChangeError");
    assert_eq!(
        change.to_string(),
        format!(
            "cannot perform the following tasks:\n- Run post-refresh hook of \"{NAME}\" snap if \
             present (run hook \"post-refresh\": broken)"
        )
    );
    assert_eq!(
        (m.revision(), m.revisions()),
        ("x1".to_string(), vec!["x1".to_string()])
    );
    assert_eq!(
        std::fs::read_link(root.join(format!("snap/{NAME}/current")))?,
        Path::new("x1")
    );
    assert!(!root.join(format!("snap/{NAME}/x2")).exists());
    assert!(!m.data_dir_of("x2").exists());
    m.wait_active("sleeper", true, Duration::from_secs(10))?;
    let pid = m.main_pid("sleeper").unwrap();
    assert!(environ(pid).contains("SNAP_REVISION=x1\n"));
    Ok(())
}
