//! The `openssl` command for the tests' certificate authorities.

use std::path::Path;
use std::process::Command;

/// `openssl ARGS` in `dir`: its standard output, or an error with its
/// standard error.
pub fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run openssl: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
