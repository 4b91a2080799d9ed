//! The `dcs-tls.*` snap keys → the files of pgpilot's TLS towards an
//! external etcd, and the `[dcs.tls]` section that names them. Pure: the
//! PEM text is checked in memory, nothing is read from disk.
//!
//! | key | value |
//! |---|---|
//! | `dcs-tls.ca` | the CA certificate(s) (PEM) of etcd's client-facing certificates |
//! | `dcs-tls.cert` | this member's client certificate (PEM), with `dcs-tls.key` |
//! | `dcs-tls.key` | its private key (PEM: PKCS#8, PKCS#1 or SEC1) |
//!
//! `ca` alone (server verification) or all three (mutual TLS); none: off.
//! The files go beside the member file (`$SNAP_DATA/etc/pgpilot`, 0600,
//! `_daemon_`), written before it; pgpilot builds its etcd client at
//! start, so a change restarts a running pgpilot.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::{SnapError, SnapPaths};

/// The tree's name.
pub const TREE: &str = "dcs-tls";
const KEYS: [&str; 3] = ["ca", "cert", "key"];

/// Checked PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct DcsTlsFiles {
    pub ca: String,
    /// (certificate, key) for mutual TLS.
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for DcsTlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcsTlsFiles")
            .field("ca", &format!("{} bytes", self.ca.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where the hook writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcsTlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DcsTlsPaths {
    pub fn new(paths: &SnapPaths) -> Self {
        let dir = paths.etc("pgpilot");
        DcsTlsPaths {
            ca: dir.join("dcs-ca.pem"),
            cert: dir.join("dcs-cert.pem"),
            key: dir.join("dcs-key.pem"),
        }
    }

    /// (path, content) for each file; `None` content: remove it.
    pub fn files(&self, tls: Option<&DcsTlsFiles>) -> Vec<(PathBuf, Option<String>)> {
        let identity = tls.and_then(|t| t.identity.as_ref());
        vec![
            (self.ca.clone(), tls.map(|t| t.ca.clone())),
            (self.cert.clone(), identity.map(|(c, _)| c.clone())),
            (self.key.clone(), identity.map(|(_, k)| k.clone())),
        ]
    }

    /// `[dcs.tls]` as snap keys of the `pgpilot` tree (`dcs.tls.ca-file`, ...).
    pub fn section(&self, tls: &DcsTlsFiles) -> Value {
        let s = |p: &PathBuf| Value::String(p.to_string_lossy().into_owned());
        let mut section = json!({"ca-file": s(&self.ca)});
        if tls.identity.is_some() {
            section["cert-file"] = s(&self.cert);
            section["key-file"] = s(&self.key);
        }
        section
    }
}

/// The `pgpilot` tree with `dcs.tls` naming the files, unless it sets
/// `dcs.tls` itself.
pub fn with_section(mut pgpilot: Value, paths: &DcsTlsPaths, tls: &DcsTlsFiles) -> Value {
    if let Some(root) = pgpilot.as_object_mut() {
        let dcs = root
            .entry("dcs")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(dcs) = dcs.as_object_mut() {
            dcs.entry("tls").or_insert_with(|| paths.section(tls));
        }
    }
    pgpilot
}

/// The `dcs-tls` tree: `None` when unset, the checked files, or an error
/// naming the key at fault. A private key's text is never quoted.
pub fn render(tree: &Value) -> Result<Option<DcsTlsFiles>, SnapError> {
    let all = "dcs-tls.ca (and dcs-tls.cert with dcs-tls.key)";
    let Some(pems) = super::tls::PemTree::read(tree, TREE, &KEYS, all)? else {
        return Ok(None);
    };
    let text = |k: &str| pems.text(k);
    let (ca, cert, key) = (text("ca")?, text("cert")?, text("key")?);
    let Some(ca) = ca else {
        return match (cert, key) {
            (None, None) => Ok(None),
            _ => Err(SnapError::new(
                "dcs-tls.ca",
                "missing: a client certificate needs the CA of etcd's certificates",
            )),
        };
    };
    super::tls::certs("dcs-tls.ca", &ca)?;
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let chain = super::tls::certs("dcs-tls.cert", &cert)?;
            let private = super::tls::private_key("dcs-tls.key", &key)?;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| SnapError::new(TREE, e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(chain, private)
                .map_err(|e| {
                    SnapError::new("dcs-tls.key", format!("does not fit dcs-tls.cert: {e}"))
                })?;
            Some((cert, key))
        }
        (c, _) => {
            let unset = if c.is_none() {
                "dcs-tls.cert"
            } else {
                "dcs-tls.key"
            };
            return Err(SnapError::new(
                unset,
                "missing: dcs-tls.cert and dcs-tls.key are set together",
            ));
        }
    };
    Ok(Some(DcsTlsFiles { ca, identity }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("testdata/cert.pem");
    const KEY: &str = include_str!("testdata/key.pem");
    const OTHER_KEY: &str = include_str!("testdata/other-key.pem");

    #[test]
    fn unset_is_off_ca_alone_or_with_an_identity() {
        assert_eq!(render(&Value::Null).unwrap(), None);
        assert_eq!(render(&json!({})).unwrap(), None);
        let ca_only = render(&json!({"ca": CERT})).unwrap().unwrap();
        assert_eq!(ca_only.identity, None);
        let full = render(&json!({"ca": CERT, "cert": CERT, "key": KEY}))
            .unwrap()
            .unwrap();
        assert!(full.identity.is_some());
        assert!(!format!("{full:?}").contains("PRIVATE"));
    }

    #[test]
    fn refusals_name_the_snap_key() {
        let rows = [
            (
                "a cert without a CA",
                json!({"cert": CERT, "key": KEY}),
                "dcs-tls.ca",
            ),
            (
                "a cert without a key",
                json!({"ca": CERT, "cert": CERT}),
                "dcs-tls.key",
            ),
            (
                "a key without a cert",
                json!({"ca": CERT, "key": KEY}),
                "dcs-tls.cert",
            ),
            ("a CA that is not PEM", json!({"ca": "hello"}), "dcs-tls.ca"),
            (
                "a key of another certificate",
                json!({"ca": CERT, "cert": CERT, "key": OTHER_KEY}),
                "dcs-tls.key",
            ),
            (
                "a key that is not PEM",
                json!({"ca": CERT, "cert": CERT, "key": "secret-ish"}),
                "dcs-tls.key",
            ),
            ("an unknown key", json!({"chain": "x"}), "dcs-tls.chain"),
            ("not a tree", json!("x"), "dcs-tls"),
        ];
        for (name, tree, key) in rows {
            let e = render(&tree).expect_err(name);
            assert_eq!(e.key, key, "{name}: {e}");
            assert!(!e.to_string().contains("secret-ish"), "{name}: {e}");
            assert!(!e.to_string().contains("PRIVATE KEY-----\n"), "{name}: {e}");
        }
    }

    #[test]
    fn the_section_names_the_files_unless_the_tree_sets_it() {
        let paths = DcsTlsPaths::new(&crate::snap::test_paths());
        let full = render(&json!({"ca": CERT, "cert": CERT, "key": KEY}))
            .unwrap()
            .unwrap();
        let tree = with_section(
            json!({"dcs": {"endpoints": ["https://e:2379"]}}),
            &paths,
            &full,
        );
        assert_eq!(
            tree["dcs"]["tls"],
            json!({
                "ca-file": "/var/snap/charmed-postgresql/x1/etc/pgpilot/dcs-ca.pem",
                "cert-file": "/var/snap/charmed-postgresql/x1/etc/pgpilot/dcs-cert.pem",
                "key-file": "/var/snap/charmed-postgresql/x1/etc/pgpilot/dcs-key.pem",
            })
        );
        assert_eq!(tree["dcs"]["endpoints"], json!(["https://e:2379"]));
        let own = json!({"dcs": {"tls": {"ca-file": "/mine.pem"}}});
        assert_eq!(with_section(own.clone(), &paths, &full), own);
        let ca_only = render(&json!({"ca": CERT})).unwrap().unwrap();
        let files = paths.files(Some(&ca_only));
        assert!(files[0].1.is_some() && files[1].1.is_none() && files[2].1.is_none());
        assert!(paths.files(None).iter().all(|(_, c)| c.is_none()));
    }
}
