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

/// A self-signed CA for the tests (EC P-256, valid 30 days): `NAME.key` and
/// `NAME.pem` in `dir`.
pub fn self_signed_ca(dir: &Path, name: &str, cn: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    )?;
    Ok(())
}

/// A certificate `NAME.pem` with its key `NAME.key` (EC P-256) for
/// `subject` (`/CN=...`), signed by the CA `ca.pem`/`ca.key` in `dir`, with
/// the extension lines `ext` (`subjectAltName=IP:...`, ...).
pub fn issue(dir: &Path, name: &str, subject: &str, ext: &str) -> anyhow::Result<()> {
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext)?;
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            &pem,
            "-extfile",
            &ext_file,
        ],
    )?;
    Ok(())
}
