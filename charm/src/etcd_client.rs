//! The `etcd` relation (interface `etcd_client`, charm-interfaces.md §6):
//! an external etcd (charmed-etcd's `etcd-client`) holding the cluster's
//! state instead of the units' own. Plain data: the fields we write, what
//! we read of the provider, and the choice recorded in the peer
//! application bag.
//!
//! The choice is made once, when the cluster is created (the leader's first
//! convergence): with an `etcd` relation then, the cluster lives in that
//! etcd (`dcs=external`), otherwise in the units' own (their members are
//! recorded, `etcd-members`). It is
//! never changed afterwards: a relation added to a cluster of the units' own
//! etcd, or removed from a cluster living in an external one, blocks with a
//! status that says what to do (docs/charm-relations.md "etcd").

use std::collections::BTreeMap;

use crate::relation::{Databag, RelationView};

/// Peer application bag: `external` when the cluster keeps its state in
/// the external etcd (absent: the units' own).
pub const APP_DCS: &str = "dcs";
pub const DCS_EXTERNAL: &str = "external";

/// Keys of the application secret (beside the passwords) holding the
/// client identity every unit presents to etcd: one key pair for the
/// application, since the provider makes one etcd user of its CN.
pub const SECRET_CLIENT_KEY: &str = "etcd-client-key";
pub const SECRET_CLIENT_CERT: &str = "etcd-client-cert";

/// Requirer fields (our application bag).
pub const FIELD_PREFIX: &str = "prefix";
pub const FIELD_SECRET_MTLS: &str = "secret-mtls";
/// The field of our `mtls` secret the provider reads.
pub const MTLS_CERT: &str = "mtls-cert";

/// The key range the cluster uses: pgpilot's `/<namespace>/<scope>/`.
pub fn prefix(app: &str) -> String {
    format!("/pgpilot/{app}/")
}

/// The client certificate's CN, which the provider makes the etcd user:
/// unique per model and application.
pub fn client_cn(model: &str, app: &str) -> String {
    format!("pgpilot.{model}.{app}")
}

/// The label of our `mtls` secret, as the data-interfaces library names it.
pub fn mtls_label(relation: &RelationView) -> String {
    format!("{}.{}.mtls.secret", relation.endpoint, relation.number())
}

/// The requirer's fields, `secret-mtls` aside.
pub fn requirer_fields(app: &str) -> Databag {
    [
        (FIELD_PREFIX, prefix(app)),
        (
            "requested-secrets",
            r#"["username","uris","tls","tls-ca"]"#.to_string(),
        ),
        ("provided-secrets", r#"["mtls-cert"]"#.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The application's client identity (PEM), from the application secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert", &format!("{} bytes", self.cert.len()))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    pub fn from_secret(content: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| content.get(k).filter(|v| !v.trim().is_empty()).cloned();
        Some(ClientIdentity {
            cert: get(SECRET_CLIENT_CERT)?,
            key: get(SECRET_CLIENT_KEY)?,
        })
    }
}

/// What pgpilot needs to reach the external etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalEtcd {
    /// `https://host:port`, sorted (the provider's order is not stable).
    pub uris: Vec<String>,
    /// The CA of etcd's client-facing certificates (PEM).
    pub ca: String,
}

/// The provider's answer: `uris` from its `user` secret, `tls-ca` from its
/// `tls` secret (secrets: URI → content, as observed). `Err`: what is not
/// there yet, for the waiting status.
pub fn provider_answer(
    relation: &RelationView,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<ExternalEtcd, String> {
    let content = |field: &str| {
        relation
            .remote(field)
            .ok_or_else(|| format!("no {field} from {} yet", relation.remote_app))
            .and_then(|uri| {
                secrets
                    .get(uri)
                    .ok_or_else(|| format!("{field} {uri} cannot be read"))
            })
    };
    let user = content("secret-user")?;
    let tls = content("secret-tls")?;
    let mut uris: Vec<String> = user
        .get("uris")
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if uris.is_empty() {
        return Err(format!("no uris from {} yet", relation.remote_app));
    }
    if let Some(bad) = uris.iter().find(|u| !u.starts_with("https://")) {
        return Err(format!(
            "{} gave {bad:?}: the etcd relation needs https:// URLs (etcd with client TLS)",
            relation.remote_app
        ));
    }
    uris.sort();
    uris.dedup();
    let ca = tls
        .get("tls-ca")
        .filter(|c| !c.trim().is_empty())
        .cloned()
        .ok_or_else(|| format!("no tls-ca from {} yet", relation.remote_app))?;
    Ok(ExternalEtcd { uris, ca })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::bag;

    fn relation(app: &[(&str, &str)]) -> RelationView {
        RelationView {
            id: "etcd:12".into(),
            endpoint: "etcd".into(),
            remote_app: "charmed-etcd".into(),
            remote_app_data: app
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn names_and_fields() {
        assert_eq!(prefix("pg"), "/pgpilot/pg/");
        assert_eq!(client_cn("prod", "pg"), "pgpilot.prod.pg");
        assert_eq!(mtls_label(&relation(&[])), "etcd.12.mtls.secret");
        let f = requirer_fields("pg");
        assert_eq!(f["prefix"], "/pgpilot/pg/");
        assert_eq!(f["provided-secrets"], r#"["mtls-cert"]"#);
        let requested: Vec<String> = serde_json::from_str(&f["requested-secrets"]).unwrap();
        assert_eq!(requested, ["username", "uris", "tls", "tls-ca"]);
    }

    #[test]
    fn the_answer_is_read_from_both_secrets() {
        let rel = relation(&[
            ("endpoints", "10.0.0.2:2379,10.0.0.1:2379"),
            ("secret-user", "secret:u"),
            ("secret-tls", "secret:t"),
        ]);
        let mut secrets = BTreeMap::from([
            (
                "secret:u".to_string(),
                bag(&[
                    ("username", "pgpilot.prod.pg"),
                    ("uris", "https://10.0.0.2:2379, https://10.0.0.1:2379"),
                ]),
            ),
            (
                "secret:t".to_string(),
                bag(&[("tls", "True"), ("tls-ca", "CA")]),
            ),
        ]);
        assert_eq!(
            provider_answer(&rel, &secrets).unwrap(),
            ExternalEtcd {
                uris: vec![
                    "https://10.0.0.1:2379".into(),
                    "https://10.0.0.2:2379".into()
                ],
                ca: "CA".into()
            }
        );
        secrets.remove("secret:t");
        let why = provider_answer(&rel, &secrets).unwrap_err();
        assert!(why.contains("secret-tls"), "{why}");
        let why = provider_answer(&relation(&[]), &secrets).unwrap_err();
        assert_eq!(why, "no secret-user from charmed-etcd yet");
        secrets.insert("secret:t".into(), bag(&[("tls", "True"), ("tls-ca", "CA")]));
        secrets.insert("secret:u".into(), bag(&[("uris", "http://10.0.0.1:2379")]));
        let why = provider_answer(&rel, &secrets).unwrap_err();
        assert!(why.contains("https://"), "{why}");
    }

    #[test]
    fn the_identity_needs_both_keys() {
        let full = bag(&[
            ("etcd-client-cert", "CERT"),
            ("etcd-client-key", "KEY"),
            ("operator-password", "x"),
        ]);
        let id = ClientIdentity::from_secret(&full).unwrap();
        assert_eq!(id.cert, "CERT");
        assert!(!format!("{id:?}").contains("KEY"));
        assert_eq!(
            ClientIdentity::from_secret(&bag(&[("etcd-client-cert", "CERT")])),
            None
        );
    }
}
