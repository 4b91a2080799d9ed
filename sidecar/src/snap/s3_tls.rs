//! The `s3-tls.ca` snap key → the CA file pgpilot trusts for an S3
//! endpoint with a private CA (`[backup.s3] ca_file`). Pure: the PEM text is
//! checked in memory.
//!
//! | key | value |
//! |---|---|
//! | `s3-tls.ca` | the CA certificate(s) (PEM, one or more) of the S3 endpoint |
//!
//! The file goes beside the member file (`$SNAP_DATA/etc/pgpilot/s3-ca.pem`,
//! 0600, `_daemon_`), written before it; the member file's `[backup.s3]`
//! names it unless it sets `ca_file` itself. Without `[backup.s3]` (a posix
//! repository) the file is written and not named.

use std::path::PathBuf;

use serde_json::Value;

use super::{SnapError, SnapPaths};

/// The tree's name.
pub const TREE: &str = "s3-tls";

/// Where the hook writes the CA.
pub fn ca_path(paths: &SnapPaths) -> PathBuf {
    paths.etc("pgpilot").join("s3-ca.pem")
}

/// The `s3-tls` tree: `None` when unset, the checked PEM text, or an error
/// naming the key at fault.
pub fn render(tree: &Value) -> Result<Option<String>, SnapError> {
    let Some(pems) = super::tls::PemTree::read(tree, TREE, &["ca"], "s3-tls.ca")? else {
        return Ok(None);
    };
    let Some(ca) = pems.text("ca")? else {
        return Ok(None);
    };
    super::tls::certs("s3-tls.ca", &ca)?;
    Ok(Some(ca))
}

/// The `pgpilot` tree with `backup.s3.ca-file` naming the CA file, when it
/// has a `backup.s3` table without its own `ca-file`.
pub fn with_ca_file(mut pgpilot: Value, path: &std::path::Path) -> Value {
    let s3 = pgpilot
        .get_mut("backup")
        .and_then(|b| b.get_mut("s3"))
        .and_then(Value::as_object_mut);
    if let Some(s3) = s3 {
        s3.entry("ca-file")
            .or_insert_with(|| Value::String(path.to_string_lossy().into_owned()));
    }
    pgpilot
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CERT: &str = include_str!("testdata/cert.pem");

    #[test]
    fn unset_or_a_checked_ca() {
        assert_eq!(render(&Value::Null).unwrap(), None);
        assert_eq!(render(&json!({})).unwrap(), None);
        assert_eq!(render(&json!({"ca": ""})).unwrap(), None);
        let ca = render(&json!({ "ca": CERT })).unwrap().unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        for (tree, key) in [
            (json!({"ca": "hello"}), "s3-tls.ca"),
            (json!({"ca": 5}), "s3-tls.ca"),
            (json!({"chain": CERT}), "s3-tls.chain"),
            (json!("x"), "s3-tls"),
        ] {
            assert_eq!(render(&tree).unwrap_err().key, key, "{tree}");
        }
    }

    #[test]
    fn the_s3_section_names_the_file_unless_it_has_one() {
        let path = ca_path(&crate::snap::test_paths());
        let tree = with_ca_file(json!({"backup": {"s3": {"bucket": "b"}}}), &path);
        assert_eq!(
            tree["backup"]["s3"]["ca-file"],
            "/var/snap/charmed-postgresql/x1/etc/pgpilot/s3-ca.pem"
        );
        let own = json!({"backup": {"s3": {"ca-file": "/mine.pem"}}});
        assert_eq!(with_ca_file(own.clone(), &path), own);
        let posix = json!({"backup": {"repository": "posix"}});
        assert_eq!(with_ca_file(posix.clone(), &path), posix);
    }
}
