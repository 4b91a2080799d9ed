//! The `tls.*` snap keys → the unit's certificate files, and what turning
//! TLS on adds to the member file. Pure: the PEM text is checked in memory
//! (rustls parses it), nothing is read from disk.
//!
//! | key | value |
//! |---|---|
//! | `tls.cert` | the server certificate (PEM), intermediates after it |
//! | `tls.key` | its private key (PEM: PKCS#8, PKCS#1 or SEC1) |
//! | `tls.ca` | the CA certificate(s) (PEM) that signed it |
//!
//! All three or none. With them, PostgreSQL gets `[postgresql.tls]`
//! (`ssl = on`, `hostssl` rules for TCP) and the REST API `[api.tls]`
//! unless the `pgpilot` tree sets those sections itself.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Map, Value};

use super::{SnapError, SnapPaths};

/// The three keys, in the order they are checked.
pub const KEYS: [&str; 3] = ["cert", "key", "ca"];

/// Checked PEM text of the three keys.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &format!("{} bytes", self.cert.len()))
            .field("key", &"<redacted>")
            .field("ca", &format!("{} bytes", self.ca.len()))
            .finish()
    }
}

/// Where the hook writes them (0600, owned by `_daemon_`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsPaths {
    pub fn new(paths: &SnapPaths) -> Self {
        Self::in_dir(&paths.etc("tls"))
    }

    /// `cert.pem`, `key.pem` and `ca.pem` in `dir`.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        TlsPaths {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        }
    }

    /// (path, content) for each file; `None` content: remove it.
    pub fn files(&self, tls: Option<&TlsFiles>) -> Vec<(PathBuf, Option<String>)> {
        vec![
            (self.cert.clone(), tls.map(|t| t.cert.clone())),
            (self.key.clone(), tls.map(|t| t.key.clone())),
            (self.ca.clone(), tls.map(|t| t.ca.clone())),
        ]
    }
}

pub(super) fn certs(key: &str, text: &str) -> Result<Vec<CertificateDer<'static>>, SnapError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SnapError::new(key, format!("is not PEM certificate text: {e}")))?;
    if certs.is_empty() {
        return Err(SnapError::new(
            key,
            "holds no certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// A snap tree of PEM texts (`tls`, `dcs-tls`, `s3-tls`) as snapctl gives
/// it: unset or empty is `None`; a key outside `keys` or a value that is not
/// text is refused naming the snap key.
pub(super) struct PemTree<'a> {
    name: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> PemTree<'a> {
    /// `all_keys` names the keys for the error messages.
    pub(super) fn read(
        tree: &'a Value,
        name: &'static str,
        keys: &[&str],
        all_keys: &str,
    ) -> Result<Option<Self>, SnapError> {
        let map = match tree {
            Value::Null => return Ok(None),
            Value::String(s) if s.is_empty() => return Ok(None),
            Value::Object(m) => m,
            _ => {
                return Err(SnapError::new(
                    name,
                    format!("must be a tree: set {all_keys}"),
                ))
            }
        };
        if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(SnapError::new(
                format!("{name}.{k}"),
                format!("unknown key: the keys are {all_keys}"),
            ));
        }
        Ok(Some(PemTree { name, map }))
    }

    /// A key's text, trimmed with one final newline; `None` when unset or
    /// blank.
    pub(super) fn text(&self, key: &str) -> Result<Option<String>, SnapError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(format!("{}\n", s.trim()))),
            Some(_) => Err(SnapError::new(
                format!("{}.{key}", self.name),
                "must be PEM text",
            )),
        }
    }
}

/// A PEM private key; the error names the snap key, never the text.
pub(super) fn private_key(key: &str, text: &str) -> Result<PrivateKeyDer<'static>, SnapError> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
            }
            _ => "is not a PEM private key (value not shown)",
        };
        SnapError::new(key, why)
    })
}

/// The `tls` tree: `None` when unset (TLS off), the checked files, or an
/// error naming the key at fault. A private key's text is never quoted.
pub fn render(tree: &Value) -> Result<Option<TlsFiles>, SnapError> {
    render_tree(tree, "tls")
}

/// A tree of the same three keys (`tls`, `etcd-tls`) named `name`.
pub fn render_tree(tree: &Value, name: &'static str) -> Result<Option<TlsFiles>, SnapError> {
    let key = |k: &str| format!("{name}.{k}");
    let all = format!("{}, {} and {}", key("cert"), key("key"), key("ca"));
    let Some(pems) = PemTree::read(tree, name, &KEYS, &all)? else {
        return Ok(None);
    };
    let text = |k: &str| pems.text(k);
    let (cert, key_text, ca) = (text("cert")?, text("key")?, text("ca")?);
    let (cert, key_text, ca) = match (cert, key_text, ca) {
        (None, None, None) => return Ok(None),
        (Some(c), Some(k), Some(a)) => (c, k, a),
        (c, k, a) => {
            let missing = [
                (key("cert"), c.is_none()),
                (key("key"), k.is_none()),
                (key("ca"), a.is_none()),
            ]
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| n)
            .collect::<Vec<_>>();
            return Err(SnapError::new(
                missing[0].clone(),
                format!(
                    "missing: {all} are set together (unset: {})",
                    missing.join(", ")
                ),
            ));
        }
    };
    let chain = certs(&key("cert"), &cert)?;
    let private = private_key(&key("key"), &key_text)?;
    certs(&key("ca"), &ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SnapError::new(name, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| SnapError::new(key("key"), format!("does not fit {}: {e}", key("cert"))))?;
    Ok(Some(TlsFiles {
        cert,
        key: key_text,
        ca,
    }))
}

/// The member-file sections TLS turns on (file keys, the snap's paths),
/// for the sections the `pgpilot` tree does not set itself.
pub fn member_sections(paths: &TlsPaths) -> Vec<(&'static str, Value)> {
    let s = |p: &PathBuf| Value::String(p.to_string_lossy().into_owned());
    let files = json!({
        "cert_file": s(&paths.cert),
        "key_file": s(&paths.key),
        "ca_file": s(&paths.ca),
    });
    vec![("postgresql.tls", files.clone()), ("api.tls", files)]
}

/// PostgreSQL parameters `[postgresql.tls]` owns: refused in the
/// `pgpilot` tree while TLS is on, naming the snap key.
pub fn check_parameters(root: &Map<String, Value>) -> Result<(), SnapError> {
    let parameters = root
        .get("postgresql")
        .and_then(|p| p.get("parameters"))
        .and_then(Value::as_object);
    for name in crate::config::managed::TLS_PARAMETERS {
        if parameters.is_some_and(|p| p.contains_key(name)) {
            return Err(SnapError::new(
                super::member::snap_key(&format!("postgresql.parameters.{name}")),
                "is set from tls.* while TLS is on: unset it",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate and its key, and another key (rcgen is not a
    /// dependency: fixed test material made once with openssl).
    const CERT: &str = include_str!("testdata/cert.pem");
    const KEY: &str = include_str!("testdata/key.pem");
    const OTHER_KEY: &str = include_str!("testdata/other-key.pem");

    fn tree(cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> Value {
        let mut m = Map::new();
        for (k, v) in [("cert", cert), ("key", key), ("ca", ca)] {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.into()));
            }
        }
        Value::Object(m)
    }

    #[test]
    fn unset_is_off_and_a_full_set_is_on() {
        assert_eq!(render(&Value::Null).unwrap(), None);
        assert_eq!(render(&tree(None, None, None)).unwrap(), None);
        let files = render(&tree(Some(CERT), Some(KEY), Some(CERT)))
            .unwrap()
            .unwrap();
        assert_eq!(files.cert, format!("{}\n", CERT.trim()));
        assert!(!format!("{files:?}").contains("PRIVATE"));
    }

    /// One row per refusal: the snap key named, and never the key's text.
    #[test]
    fn refusals_name_the_snap_key() {
        let rows: Vec<(&str, Value, &str)> = vec![
            (
                "a key without a cert",
                tree(None, Some(KEY), Some(CERT)),
                "tls.cert",
            ),
            (
                "a cert without a key",
                tree(Some(CERT), None, Some(CERT)),
                "tls.key",
            ),
            ("no CA", tree(Some(CERT), Some(KEY), None), "tls.ca"),
            (
                "a malformed certificate",
                tree(
                    Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----"),
                    Some(KEY),
                    Some(CERT),
                ),
                "tls.cert",
            ),
            (
                "not PEM at all",
                tree(Some("hello"), Some(KEY), Some(CERT)),
                "tls.cert",
            ),
            (
                "a key that is not PEM",
                tree(Some(CERT), Some("secret-ish"), Some(CERT)),
                "tls.key",
            ),
            (
                "a key of another certificate",
                tree(Some(CERT), Some(OTHER_KEY), Some(CERT)),
                "tls.key",
            ),
            (
                "a CA that is a key",
                tree(Some(CERT), Some(KEY), Some(KEY)),
                "tls.ca",
            ),
            ("an unknown key", json!({"chain": "x"}), "tls.chain"),
            ("not a tree", json!("x"), "tls"),
        ];
        for (name, t, key) in rows {
            let e = render(&t).expect_err(name);
            assert_eq!(e.key, key, "{name}: {e}");
            assert!(!e.to_string().contains("PRIVATE KEY-----\n"), "{name}: {e}");
            assert!(!e.to_string().contains("secret-ish"), "{name}: {e}");
        }
    }

    #[test]
    fn tls_parameters_are_refused_while_tls_is_on() {
        let root = json!({"postgresql": {"parameters": {"ssl_cert_file": "/x"}}});
        let e = check_parameters(root.as_object().unwrap()).unwrap_err();
        assert_eq!(e.key, "pgpilot.postgresql.parameters.ssl-cert-file");
        let root = json!({"postgresql": {"parameters": {"work_mem": "8MB"}}});
        assert!(check_parameters(root.as_object().unwrap()).is_ok());
    }
}
