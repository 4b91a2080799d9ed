//! The packed snap file itself (`$PGPILOT_SNAP`): `unsquashfs -l` lists the
//! metadata, hooks and programs; its meta/snap.yaml declares exactly the
//! apps, hooks and plugs of snapcraft.yaml; `snap pack` accepts the tree;
//! and the checker of scripts/check-snap.sh notices a tree that drifted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use pgpilot_e2e::snapd::SnapFile;
use serde_norway::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn keys(v: &Value, key: &str) -> BTreeSet<String> {
    v.get(key)
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every plug named anywhere: top level, apps, hooks.
fn plugs(v: &Value) -> BTreeSet<String> {
    let mut out = keys(v, "plugs");
    for section in ["apps", "hooks"] {
        if let Some(map) = v.get(section).and_then(Value::as_mapping) {
            for (name, entry) in map {
                for plug in entry
                    .get("plugs")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    out.insert(format!(
                        "{section}.{}:{}",
                        name.as_str().unwrap_or(""),
                        plug.as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_packed_snap_is_what_snapcraft_yaml_declares() -> anyhow::Result<()> {
    let snap = SnapFile::from_env()?;
    let listing = run(Command::new("unsquashfs").arg("-l").arg(snap.path()))?;
    for path in [
        "meta/snap.yaml",
        "meta/hooks/install",
        "meta/hooks/configure",
        "bin/pgpilot",
        "bin/drop-privileges",
        "bin/start-pgpilot",
        "bin/psql",
        "bin/patronictl",
        "bin/etcdctl",
        "usr/bin/etcd",
        "usr/bin/etcdctl",
        "usr/sbin/pgbouncer",
        "usr/bin/setpriv",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l == format!("squashfs-root/{path}")),
            "unsquashfs -l does not list {path}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("squashfs-root/usr/lib/postgresql/")
                && l.ends_with("/bin/postgres")),
        "no PostgreSQL server in the snap"
    );

    let meta: Value = serde_norway::from_str(&run(Command::new("unsquashfs")
        .args(["-cat"])
        .arg(snap.path())
        .arg("meta/snap.yaml"))?)?;
    let recipe: Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("snapcraft.yaml"))?)?;
    for section in ["apps", "hooks"] {
        assert_eq!(
            keys(&meta, section),
            keys(&recipe, section),
            "{section} differ"
        );
    }
    assert_eq!(plugs(&meta), plugs(&recipe), "plugs differ");
    let wanted: BTreeSet<String> = [
        "pgpilot",
        "etcd",
        "pgbouncer",
        "psql",
        "patronictl",
        "etcdctl",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys(&meta, "apps"), wanted);
    for daemon in ["pgpilot", "etcd", "pgbouncer"] {
        let app = &meta["apps"][daemon];
        assert_eq!(app["daemon"].as_str(), Some("simple"), "{daemon}");
        assert_eq!(app["install-mode"].as_str(), Some("disable"), "{daemon}");
        assert!(
            app["restart-condition"].as_str().is_some(),
            "{daemon}: no restart policy"
        );
    }
    for (key, want) in [
        ("confinement", "strict"),
        ("grade", "stable"),
        ("base", "core24"),
    ] {
        assert_eq!(meta[key].as_str(), Some(want), "{key}");
    }
    assert!(meta["system-usernames"].get("_daemon_").is_some());
    Ok(())
}

#[test]
fn snap_pack_accepts_the_tree_and_the_checker_catches_drift() -> anyhow::Result<()> {
    let snap = SnapFile::from_env()?;
    let tmp = tempfile::tempdir()?;
    let tree = tmp.path().join("tree");
    run(Command::new("unsquashfs")
        .arg("-q")
        .arg("-d")
        .arg(&tree)
        .arg(snap.path()))?;
    let snap_yaml = tree.join("meta/snap.yaml");
    let original = std::fs::read_to_string(&snap_yaml)?;

    // Debian's snapd (2.57) predates the _daemon_ user (snapd 2.61): let its
    // `snap pack` validate the rest with the older shared user in its place.
    std::fs::write(&snap_yaml, original.replace("_daemon_:", "snap_daemon:"))?;
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir)?;
    run(Command::new("snap").arg("pack").arg(&tree).arg(&out_dir))?;
    assert_eq!(
        std::fs::read_dir(&out_dir)?.count(),
        1,
        "snap pack wrote no snap"
    );

    // The checker that build-snap.sh runs refuses a tree whose snap.yaml
    // lost an app snapcraft.yaml declares.
    std::fs::write(&snap_yaml, &original)?;
    run(Command::new("python3")
        .arg(repo().join("scripts/snap-yaml.py"))
        .arg("--check")
        .arg(&tree))?;
    let drifted = original.replacen("  etcdctl:", "  etcdctl-renamed:", 1);
    assert_ne!(drifted, original, "snap.yaml has no etcdctl app to rename");
    std::fs::write(&snap_yaml, drifted)?;
    let out = Command::new("python3")
        .arg(repo().join("scripts/snap-yaml.py"))
        .arg("--check")
        .arg(&tree)
        .output()?;
    assert!(
        !out.status.success(),
        "a drifted snap.yaml passed the check"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("etcdctl"), "{stderr}");
    Ok(())
}
