//! Carrying out [`Step::PublishEtcdClient`]: the application's etcd client
//! identity (rcgen: an ECDSA P-256 key and a self-signed leaf certificate,
//! CA false, client authentication, as charmed-etcd accepts), kept in the
//! application secret; its certificate in a secret granted to the relation;
//! the requirer's fields with that secret's URI.

use std::collections::BTreeMap;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::{ApplyError, Target};
use crate::etcd_client::{FIELD_SECRET_MTLS, MTLS_CERT, SECRET_CLIENT_CERT, SECRET_CLIENT_KEY};
use crate::plan::Step;
use crate::tools::{NewSecret, SecretOwner};

/// A new identity for `cn`: (key PEM, certificate PEM).
pub fn new_identity(cn: &str) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key)?;
    Ok((key.serialize_pem(), cert.pem()))
}

pub(super) fn publish(t: &Target<'_>, step: &Step) -> Result<(), ApplyError> {
    let Step::PublishEtcdClient {
        relation_id,
        label,
        cn,
        app_secret_id,
        app_secret,
        cert,
        fields,
    } = step
    else {
        unreachable!("called for PublishEtcdClient only")
    };
    let cert = match cert {
        Some(cert) => cert.clone(),
        None => {
            let (key, cert) = new_identity(cn).map_err(|e| {
                ApplyError::Failed(format!(
                    "{}: cannot make the etcd client certificate: {e}",
                    step.describe()
                ))
            })?;
            let mut content = app_secret.clone();
            content.insert(SECRET_CLIENT_KEY.into(), key);
            content.insert(SECRET_CLIENT_CERT.into(), cert.clone());
            t.tool(step, t.tools.secret_set(app_secret_id, &content))?;
            cert
        }
    };
    let secret = NewSecret {
        label: Some(label.clone()),
        description: Some("the etcd client certificate of this application".into()),
        owner: SecretOwner::Application,
        content: BTreeMap::from([(MTLS_CERT.to_string(), cert)]),
    };
    let uri = t.tool(step, t.tools.secret_add(&secret))?;
    t.tool(step, t.tools.secret_grant(&uri, relation_id, None))?;
    let mut data = fields.clone();
    data.insert(FIELD_SECRET_MTLS.into(), uri);
    t.tool(step, t.tools.relation_set(relation_id, true, &data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_a_client_leaf_with_the_cn() {
        let (key, cert) = new_identity("pgpilot.dev.postgresql").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        // openssl says what the provider will check: CA false, client auth.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        std::fs::write(&path, &cert).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-ext"])
            .arg("basicConstraints,extendedKeyUsage,keyUsage")
            .arg("-in")
            .arg(&path)
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("CN = pgpilot.dev.postgresql"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(!text.contains("Certificate Sign"), "{text}");
    }
}
