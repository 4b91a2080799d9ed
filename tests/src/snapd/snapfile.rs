//! The snap file under test and the fixture's `snapctl` binary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A packed snap (`NAME_VERSION_ARCH.snap`).
#[derive(Debug, Clone)]
pub struct SnapFile {
    path: PathBuf,
}

impl SnapFile {
    /// The snap in `$PGPILOT_SNAP` (a `charmed-postgresql_*.snap`).
    pub fn from_env() -> anyhow::Result<SnapFile> {
        let path = std::env::var_os("PGPILOT_SNAP").context(
            "PGPILOT_SNAP is not set: build the snap with `bash scripts/build-snap.sh` and set \
             PGPILOT_SNAP to the charmed-postgresql_*.snap it writes",
        )?;
        SnapFile::new(Path::new(&path)).context(
            "PGPILOT_SNAP does not name a snap file: build it with `bash scripts/build-snap.sh`",
        )
    }

    pub fn new(path: &Path) -> anyhow::Result<SnapFile> {
        anyhow::ensure!(path.is_file(), "{} is not a file", path.display());
        Ok(SnapFile {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The fixture's `snapctl`: `$PGPILOT_SNAPCTL_BIN`, else `snapctl` next to
/// the test binary's directory (`target/debug/deps/..`).
pub fn snapctl_bin() -> anyhow::Result<PathBuf> {
    crate::fixture_bin("snapctl", "PGPILOT_SNAPCTL_BIN")
}
