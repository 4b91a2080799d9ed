//! Installing and refreshing a snap file as snapd does, and the on-disk
//! chores around it: unsquashfs, read-only $SNAP, `current` links, the
//! system user of `system-usernames`, copying $SNAP_DATA.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::exec::LaunchSpec;
use super::meta::SnapMeta;
use super::services::Unit;
use super::shared::{Revision, Shared};
use super::state::{Action, ServiceOp, State};
use super::{Machine, SnapFile};

/// `system-usernames` snapd knows: name → uid (= gid).
const SYSTEM_USERS: &[(&str, u32)] = &[("_daemon_", 584792), ("snap_daemon", 584788)];
/// snapd's `refresh.retain` on classic systems: revisions kept on disk.
const RETAIN: usize = 2;

impl Machine {
    /// Install `snap` on a new machine under `root` (which must not exist
    /// or be empty) as `snap install --dangerous` would: revision x1, the
    /// `install` hook, the services without `install-mode: disable`
    /// enabled and started, then the `configure` hook. A failing hook fails
    /// the install (a [`super::ChangeError`]) and the machine is removed.
    /// `name` labels the machine in messages.
    pub fn install(snap: &SnapFile, name: &str, root: &Path) -> anyhow::Result<Machine> {
        prepare_root(root)?;
        for dir in [
            "snap",
            "var/snap",
            "var/lib/snapd",
            "run",
            "journal",
            "usr/bin",
            "home-root",
        ] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let bin_dir = root.join("usr/bin");
        let snapctl = bin_dir.join("snapctl");
        std::fs::copy(super::snapctl_bin()?, &snapctl).context("copying snapctl")?;
        std::fs::set_permissions(&snapctl, std::fs::Permissions::from_mode(0o755))?;

        let (snap_dir, meta) = unpack(root, snap.path(), "x1")?;
        ensure_system_users(&meta)?;
        let snap_name = meta.name.clone();
        let common_dir = root.join("var/snap").join(&snap_name).join("common");
        let rev = Revision {
            rev: "x1".to_string(),
            meta: Arc::new(meta),
            data_dir: root.join("var/snap").join(&snap_name).join("x1"),
            snap_dir,
        };
        create_dirs(&[&rev.data_dir, &common_dir])?;
        let home = root.join("home-root");
        create_dirs(&[
            &home.join("snap").join(&snap_name).join("x1"),
            &home.join("snap").join(&snap_name).join("common"),
            &root.join(format!("run/user/0/snap.{snap_name}")),
        ])?;
        link_current(root, &snap_name, "x1")?;
        make_writable(&rev.snap_dir, false)?;

        let state = State::new(&snap_name, root.join("var/lib/snapd/state.json"))?;
        let units = new_units(&rev, &root.join("journal"), None);
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            snap_name: snap_name.clone(),
            bin_dir,
            journal_dir: root.join("journal"),
            home,
            common_dir,
            current: Mutex::new(rev.clone()),
            previous: Mutex::new(Vec::new()),
            state: Mutex::new(state),
            units: Mutex::new(units),
            ro_snap: Default::default(),
        });
        let mut machine = Machine {
            name: name.to_string(),
            root: root.to_path_buf(),
            shared: Arc::clone(&shared),
            server: None,
            held: Default::default(),
        };
        // From here on, Drop undoes everything.
        machine.server = Some(super::server::Server::start(
            Arc::clone(&shared),
            &root.join("run/snapd-snap.socket"),
        )?);
        shared
            .ro_snap
            .store(probe_read_only(&shared, &rev), Ordering::Relaxed);

        if shared.hook_exists(&rev, "install") {
            let summary = format!("Run install hook of {snap_name:?} snap if present");
            shared.run_hook(&rev, "install", &summary, &[])?;
        }
        let autostart: Vec<String> = rev
            .meta
            .services()
            .filter(|a| !a.install_disabled)
            .map(|a| a.name.clone())
            .collect();
        if !autostart.is_empty() {
            shared.control(&ServiceOp {
                action: Action::Start { enable: true },
                apps: autostart,
                explicit: Vec::new(),
            })?;
        }
        if shared.hook_exists(&rev, "configure") {
            machine.configure(
                &[],
                &format!("Run configure hook of {snap_name:?} snap if present"),
            )?;
        }
        Ok(machine)
    }

    /// `snap install --dangerous NEW.snap` over the installed one (a
    /// refresh): the old revision's `pre-refresh` hook, services stopped,
    /// the new revision unpacked as the next xN, $SNAP_DATA copied into
    /// it (`cp -a`), the `current` links moved, its `post-refresh` hook,
    /// the enabled services started, its `configure` hook. A failing hook
    /// puts the old revision back (snapd's undo). Two revisions stay on disk.
    pub fn refresh(&self, snap: &SnapFile) -> anyhow::Result<()> {
        let shared = &self.shared;
        let old = shared.current();
        let name = shared.snap_name.clone();
        let number = std::iter::once(old.rev.clone())
            .chain(
                shared
                    .previous
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|r| r.rev.clone()),
            )
            .filter_map(|r| r.strip_prefix('x').and_then(|n| n.parse::<u32>().ok()))
            .max()
            .unwrap_or(0)
            + 1;
        let rev_name = format!("x{number}");
        let (snap_dir, meta) = unpack(&self.root, snap.path(), &rev_name)?;
        if meta.name != name {
            make_writable(&snap_dir, true)?;
            std::fs::remove_dir_all(&snap_dir)?;
            anyhow::bail!(
                "cannot refresh snap {name:?} with a snap named {:?}",
                meta.name
            );
        }
        ensure_system_users(&meta)?;
        let new = Revision {
            rev: rev_name.clone(),
            meta: Arc::new(meta),
            data_dir: self.root.join("var/snap").join(&name).join(&rev_name),
            snap_dir,
        };
        make_writable(&new.snap_dir, false)?;
        if shared.hook_exists(&old, "pre-refresh") {
            let summary = format!("Run pre-refresh hook of {name:?} snap if present");
            if let Err(e) = shared.run_hook(&old, "pre-refresh", &summary, &[]) {
                remove_revision(&self.root, &name, &new)?;
                return Err(e.into());
            }
        }
        stop_all(shared);
        let enabled: BTreeMap<String, bool> = shared
            .units()
            .iter()
            .map(|u| (u.app.name.clone(), u.enabled()))
            .collect();
        let old_units = std::mem::replace(
            &mut *shared.units.lock().unwrap_or_else(|e| e.into_inner()),
            new_units(&new, &shared.journal_dir, Some(&enabled)),
        );
        let result = (|| -> anyhow::Result<()> {
            let home_snap = shared.home.join("snap").join(&name);
            copy_tree(&old.data_dir, &new.data_dir)?;
            copy_tree(&home_snap.join(&old.rev), &home_snap.join(&rev_name))?;
            link_current(&self.root, &name, &rev_name)?;
            *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
            if shared.hook_exists(&new, "post-refresh") {
                let summary = format!("Run post-refresh hook of {name:?} snap if present");
                shared.run_hook(&new, "post-refresh", &summary, &[])?;
            }
            start_enabled(shared)?;
            if shared.hook_exists(&new, "configure") {
                let summary = format!("Run configure hook of {name:?} snap if present");
                self.configure(&[], &summary)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // snapd's undo: back to the old revision and its services.
            stop_all(shared);
            *shared.units.lock().unwrap_or_else(|e| e.into_inner()) = old_units;
            link_current(&self.root, &name, &old.rev)?;
            *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = old;
            remove_revision(&self.root, &name, &new)?;
            start_enabled(shared)?;
            return Err(e);
        }
        let mut previous = shared.previous.lock().unwrap_or_else(|e| e.into_inner());
        previous.push(old);
        while previous.len() + 1 > RETAIN {
            let gone = previous.remove(0);
            remove_revision(&self.root, &name, &gone)?;
        }
        Ok(())
    }
}

/// The machine's root: new or empty, mode 0755, reachable by every user
/// (the snap's daemons run as `_daemon_` and must reach $SNAP).
fn prepare_root(root: &Path) -> anyhow::Result<()> {
    if root.exists() {
        anyhow::ensure!(
            std::fs::read_dir(root)?.next().is_none(),
            "{} is not empty: a machine needs a new directory",
            root.display()
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    let root = root.canonicalize()?;
    for dir in root.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        anyhow::ensure!(
            mode & 0o001 != 0,
            "{} (mode {:o}) cannot be traversed by other users: the snap's daemons run as \
             _daemon_ and must reach {}; chmod o+x it or put the machine elsewhere",
            dir.display(),
            mode & 0o7777,
            root.display()
        );
    }
    Ok(())
}

fn create_dirs(dirs: &[&Path]) -> anyhow::Result<()> {
    for dir in dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// unsquashfs `file` into ROOT/snap/NAME/REV; its meta/snap.yaml.
fn unpack(root: &Path, file: &Path, rev: &str) -> anyhow::Result<(PathBuf, SnapMeta)> {
    let tmp = root.join("snap").join(format!(".unpack-{rev}"));
    let out = Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-d")
        .arg(&tmp)
        .arg(file)
        .output()
        .context("cannot run unsquashfs: install squashfs-tools")?;
    anyhow::ensure!(
        out.status.success(),
        "unsquashfs {} failed ({}): {}{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = SnapMeta::read(&tmp)?;
    let dir = root.join("snap").join(&meta.name).join(rev);
    std::fs::create_dir_all(dir.parent().unwrap_or(root))?;
    std::fs::rename(&tmp, &dir)?;
    Ok((dir, meta))
}

/// `chmod -R a-w` (`writable` false) or `u+w` back, not following symlinks.
pub(super) fn make_writable(dir: &Path, writable: bool) -> anyhow::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
        let mode = meta.permissions().mode();
        let mode = if writable {
            mode | 0o200
        } else {
            mode & !0o222
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Point the `current` links (ROOT/snap/NAME, ROOT/var/snap/NAME, root's
/// ~/snap/NAME) at `rev`, each replaced atomically.
fn link_current(root: &Path, name: &str, rev: &str) -> anyhow::Result<()> {
    for parent in [
        root.join("snap").join(name),
        root.join("var/snap").join(name),
        root.join("home-root/snap").join(name),
    ] {
        let tmp = parent.join(".current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(rev, &tmp)?;
        std::fs::rename(&tmp, parent.join("current"))?;
    }
    Ok(())
}

/// `cp -a FROM TO` (TO new): owners, modes, times, links kept.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.exists() {
        return Ok(());
    }
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output()?;
    anyhow::ensure!(
        out.status.success(),
        "cp -a {} {} failed: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn remove_revision(root: &Path, name: &str, rev: &Revision) -> anyhow::Result<()> {
    make_writable(&rev.snap_dir, true)?;
    for dir in [
        rev.snap_dir.clone(),
        rev.data_dir.clone(),
        root.join("home-root/snap").join(name).join(&rev.rev),
    ] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(())
}

/// A unit per service of `rev`. At install (`enabled` None) all start
/// disabled (the install enables some). At a refresh a service keeps its
/// state, and a new one is enabled unless `install-mode: disable`.
fn new_units(
    rev: &Revision,
    journal_dir: &Path,
    enabled: Option<&BTreeMap<String, bool>>,
) -> BTreeMap<String, Arc<Unit>> {
    rev.meta
        .services()
        .map(|app| {
            let on = match enabled {
                None => false,
                Some(map) => map.get(&app.name).copied().unwrap_or(!app.install_disabled),
            };
            let journal = journal_dir.join(format!("{}.log", app.name));
            (
                app.name.clone(),
                Unit::new(app.clone(), &rev.meta.name, journal, on),
            )
        })
        .collect()
}

/// Stop every service at once (each within its stop timeout).
pub(super) fn stop_all(shared: &Shared) {
    let units = shared.units();
    std::thread::scope(|s| {
        for unit in &units {
            s.spawn(move || unit.stop());
        }
    });
}

pub(super) fn start_enabled(shared: &Shared) -> anyhow::Result<()> {
    let apps: Vec<String> = shared
        .units()
        .iter()
        .filter(|u| u.enabled())
        .map(|u| u.app.name.clone())
        .collect();
    if apps.is_empty() {
        return Ok(());
    }
    shared.control(&ServiceOp {
        action: Action::Start { enable: false },
        apps,
        explicit: Vec::new(),
    })
}

/// Can a process of the snap write into $SNAP? Tried once, as root.
fn probe_read_only(shared: &Shared, rev: &Revision) -> bool {
    let probe = rev.snap_dir.join(".pgpilot-e2e-write-probe");
    let spec = LaunchSpec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            ": > \"$0\" 2>/dev/null".into(),
            probe.to_string_lossy().into_owned(),
        ],
        env: shared.base_env(rev, "", None),
        cwd: PathBuf::from("/"),
        ro_snap: Some(rev.snap_dir.clone()),
        session: false,
    };
    let _ = spec.command().output();
    if probe.exists() {
        let _ = std::fs::remove_file(&probe);
        eprintln!(
            "warning: the snapd fixture cannot make $SNAP read-only for root here (no private \
             mount namespace); writes into {} succeed",
            rev.snap_dir.display()
        );
        return false;
    }
    true
}

/// The users of `system-usernames`, created as snapd does (with a lock:
/// tests in other processes may do the same at the same time).
fn ensure_system_users(meta: &SnapMeta) -> anyhow::Result<()> {
    for wanted in &meta.system_usernames {
        let Some((name, id)) = SYSTEM_USERS.iter().find(|(n, _)| n == wanted) else {
            anyhow::bail!("system-usernames: snapd knows no user {wanted:?}");
        };
        let lock_path = std::env::temp_dir().join("pgpilot-snapd-users.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock().context("locking the user lock")?;
        if nix::unistd::Group::from_name(name)?.is_none() {
            run_tool("groupadd", &["--system", "--gid", &id.to_string(), name])?;
        }
        if nix::unistd::User::from_name(name)?.is_none() {
            let id = id.to_string();
            run_tool(
                "useradd",
                &[
                    "--system",
                    "--uid",
                    &id,
                    "--gid",
                    &id,
                    "--no-user-group",
                    "--home-dir",
                    "/nonexistent",
                    "--no-create-home",
                    "--shell",
                    "/bin/false",
                    name,
                ],
            )?;
        }
        let user = nix::unistd::User::from_name(name)?.context("the user is missing")?;
        anyhow::ensure!(
            user.uid.as_raw() == *id && user.gid.as_raw() == *id,
            "user {name} exists with uid {} gid {}, snapd needs {id}",
            user.uid,
            user.gid
        );
    }
    Ok(())
}

fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
