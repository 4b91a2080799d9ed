//! A certificate request: the private key (new, or this unit's), the CSR
//! for what the unit wants (rcgen, ECDSA P-256 with SHA-256, a random
//! `x500UniqueIdentifier` in the subject as the v4 library adds, so a new
//! request always differs from the last), the key's secret when new, and
//! the request into our unit bag.

use std::collections::BTreeMap;
use std::io::Read;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, KeyPair,
    SanType,
};

use super::{ApplyError, Target};
use crate::peer;
use crate::plan::Step;
use crate::tls::{self, PrivateKey, Wanted};
use crate::tools::{NewSecret, SecretOwner};

/// `x500UniqueIdentifier` (2.5.4.45).
const UNIQUE_ID_OID: [u64; 4] = [2, 5, 4, 45];

/// A new private key (PEM, PKCS#8).
pub fn new_key() -> Result<PrivateKey, String> {
    let pair = KeyPair::generate().map_err(|e| format!("cannot make a private key: {e}"))?;
    Ok(PrivateKey(pair.serialize_pem()))
}

/// The CSR (PEM) for `wanted`, signed with `key`; `unique_id` goes in the
/// subject.
pub fn csr(key: &PrivateKey, wanted: &Wanted, unique_id: &str) -> Result<String, String> {
    let pair = KeyPair::from_pem(&key.0)
        .map_err(|e| format!("this unit's private key cannot be read: {e}"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, wanted.common_name.as_str());
    name.push(
        DnType::CustomDnType(UNIQUE_ID_OID.to_vec()),
        DnValue::Utf8String(unique_id.to_string()),
    );
    params.distinguished_name = name;
    let ip = wanted
        .ip
        .parse()
        .map_err(|_| format!("{:?} is not an IP address", wanted.ip))?;
    params.subject_alt_names = vec![SanType::IpAddress(ip)];
    for dns in &wanted.dns {
        let dns = dns
            .as_str()
            .try_into()
            .map_err(|e| format!("{dns:?} is not a DNS name: {e}"))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    // Both usages: the certificate serves PostgreSQL, the API and etcd
    // (server), and etcd's peers present it when they connect (client); a
    // provider that copies the request's extensions (the v4 library does)
    // keeps them (docs/charm-relations.md: etcd over TLS).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let request = params
        .serialize_request(&pair)
        .map_err(|e| format!("cannot make the certificate request: {e}"))?;
    request
        .pem()
        .map(|p| p.trim().to_string())
        .map_err(|e| format!("cannot write the certificate request: {e}"))
}

/// A random UUID (version 4) from the kernel's random source.
pub fn unique_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

pub(super) fn request_certificate(t: &Target<'_>, step: &Step) -> Result<(), ApplyError> {
    let Step::RequestCertificate {
        relation_id,
        wanted,
        key,
    } = step
    else {
        unreachable!("a certificate request");
    };
    let failed = |message: String| ApplyError::Tls {
        step: step.describe(),
        message,
    };
    let (key, new) = match key {
        Some(k) => (k.clone(), false),
        None => (new_key().map_err(failed)?, true),
    };
    let pem = csr(&key, wanted, &unique_id().map_err(failed)?).map_err(failed)?;
    if new {
        let peer_relation = t.relation(step)?;
        let secret = NewSecret {
            label: Some(tls::KEY_SECRET_LABEL.to_string()),
            description: Some("this unit's TLS private key (certificates relation)".into()),
            owner: SecretOwner::Unit,
            content: BTreeMap::from([(tls::KEY_SECRET_FIELD.to_string(), key.0.clone())]),
        };
        let uri = t.tool(step, t.tools.secret_add(&secret))?;
        let data = BTreeMap::from([(peer::UNIT_TLS_SECRET.to_string(), uri)]);
        t.tool(step, t.tools.relation_set(peer_relation, false, &data))?;
    }
    let data = BTreeMap::from([(tls::CSRS_KEY.to_string(), tls::encode_request(&pem))]);
    t.tool(step, t.tools.relation_set(relation_id, false, &data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_from_a_new_key_and_from_the_same_key_again() {
        let key = new_key().unwrap();
        assert!(key.0.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        let wanted = Wanted::for_unit("postgresql/1", "10.0.0.2");
        let first = csr(&key, &wanted, &unique_id().unwrap()).unwrap();
        assert!(first.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(first.ends_with("-----END CERTIFICATE REQUEST-----"));
        // The extended key usages serverAuth and clientAuth are requested.
        let b64: String = first.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
        let usage = |last: u8| [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, last];
        for last in [1u8, 2] {
            assert!(der.windows(10).any(|w| w == usage(last)), "usage {last}");
        }
        // The unique id makes each request new (a renewal is seen).
        let second = csr(&key, &wanted, &unique_id().unwrap()).unwrap();
        assert_ne!(first, second);
        let bad = Wanted {
            ip: "not-an-ip".into(),
            ..wanted.clone()
        };
        assert!(csr(&key, &bad, "x").unwrap_err().contains("not an IP"));
        assert!(csr(&PrivateKey("junk".into()), &wanted, "x").is_err());
    }

    #[test]
    fn unique_ids_are_version_4_uuids() {
        let id = unique_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, unique_id().unwrap());
    }
}
