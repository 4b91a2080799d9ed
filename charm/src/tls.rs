//! The `certificates` relation (interface `tls-certificates`, the v4
//! library's databags, UNIT mode) as plain data: what this unit asks for,
//! the provider's answer, the certificate that answers our request, when
//! it is due for renewal, and the `tls.*` snap keys that put it in force.
//! docs/charm-relations.md "certificates".
//!
//! Our unit bag: `certificate_signing_requests` = JSON list of
//! `{"certificate_signing_request": PEM, "ca": false}` (one request: the
//! unit's server certificate). The provider's application bag:
//! `certificates` = JSON list of `{certificate, certificate_signing_request,
//! ca, chain, revoked?}`; ours is the entry whose request is our PEM, byte
//! for byte once trimmed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::CERTIFICATES_ENDPOINT;
use crate::observe::Observed;
use crate::peer;
use crate::relation::Databag;
use crate::snap;
use crate::tools::HookTools;

/// Our unit bag's key (the v4 library's).
pub const CSRS_KEY: &str = "certificate_signing_requests";
/// The provider's application bag's key.
pub const CERTIFICATES_KEY: &str = "certificates";
/// The snap keys that turn TLS on (docs/snap.md): PEM text.
pub const SNAP_CERT: &str = "tls.cert";
pub const SNAP_KEY: &str = "tls.key";
pub const SNAP_CA: &str = "tls.ca";
/// The unit-owned secret that holds this unit's private key.
pub const KEY_SECRET_LABEL: &str = "tls-private-key";
/// Its content key (the v4 library's).
pub const KEY_SECRET_FIELD: &str = "private-key";
/// Renew once this share of the certificate's lifetime has passed (the v4
/// library's default `renewal_relative_time`).
pub const RENEW_AT: f64 = 0.9;

/// A private key's PEM text: never shown (Debug says `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(pub String);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// This unit's private key from its unit secret (URI in its peer bag),
/// read only while a `certificates` relation exists.
pub fn read_key(o: &Observed, tools: &dyn HookTools) -> Option<Result<PrivateKey, String>> {
    if o.relations_on(CERTIFICATES_ENDPOINT).is_empty() {
        return None;
    }
    let uri = o.peer.as_ref()?.unit(&o.unit, peer::UNIT_TLS_SECRET)?;
    Some(
        tools
            .secret_get(uri, false)
            .map_err(|e| e.to_string())
            .and_then(|content| {
                content
                    .get(KEY_SECRET_FIELD)
                    .filter(|k| !k.trim().is_empty())
                    .map(|k| PrivateKey(k.clone()))
                    .ok_or_else(|| format!("the secret {uri} has no {KEY_SECRET_FIELD}"))
            }),
    )
}

/// One request of ours, as the v4 library writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrEntry {
    pub certificate_signing_request: String,
    #[serde(default)]
    pub ca: bool,
}

/// One certificate in the provider's bag.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderCertificate {
    pub certificate: String,
    pub certificate_signing_request: String,
    pub ca: String,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub revoked: bool,
}

/// What this unit's certificate must say: CN and subject alternative names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The unit's address (today's charm on machines).
    pub common_name: String,
    /// IP SAN: the unit's address.
    pub ip: String,
    /// DNS SAN: `<app>-<unit number>`.
    pub dns: Vec<String>,
}

impl Wanted {
    pub fn for_unit(unit: &str, ip: &str) -> Self {
        Wanted {
            common_name: ip.to_string(),
            ip: ip.to_string(),
            dns: vec![crate::context::member_name(unit)],
        }
    }

    /// One line that changes when the request must: recorded beside the
    /// request (peer unit bag), so a new address asks again.
    pub fn fingerprint(&self) -> String {
        format!(
            "CN={};IP={};DNS={}",
            self.common_name,
            self.ip,
            self.dns.join(",")
        )
    }
}

/// The request in our unit bag (the first; we send one).
pub fn our_request(bag: &Databag) -> Option<String> {
    let text = bag.get(CSRS_KEY)?;
    let list: Vec<CsrEntry> = serde_json::from_str(text).ok()?;
    list.into_iter()
        .map(|e| e.certificate_signing_request.trim().to_string())
        .find(|c| !c.is_empty())
}

/// Our unit bag's value for one request.
pub fn encode_request(csr_pem: &str) -> String {
    serde_json::to_string(&[CsrEntry {
        certificate_signing_request: csr_pem.trim().to_string(),
        ca: false,
    }])
    .expect("requests serialize")
}

/// Why the provider's bag could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the certificates provider's `certificates` is not a JSON list of certificates: {0}")]
pub struct BagError(String);

/// The provider's entry for `csr`, if it has issued one.
pub fn certificate_for<'a>(
    certificates: &'a [ProviderCertificate],
    csr: &str,
) -> Option<&'a ProviderCertificate> {
    certificates
        .iter()
        .find(|c| c.certificate_signing_request.trim() == csr.trim())
}

/// Every certificate in the provider's application bag (none when unset).
pub fn provider_certificates(bag: &Databag) -> Result<Vec<ProviderCertificate>, BagError> {
    match bag.get(CERTIFICATES_KEY).filter(|v| !v.trim().is_empty()) {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| BagError(e.to_string())),
    }
}

/// The `tls.*` snap values for an issued certificate: the leaf, then the
/// chain's intermediates (neither the leaf nor the CA); its CA.
pub fn snap_values(cert: &ProviderCertificate, key_pem: &str) -> [(String, Value); 3] {
    let leaf = cert.certificate.trim();
    let ca = cert.ca.trim();
    let mut chain = vec![leaf.to_string()];
    for c in cert.chain.iter().map(|c| c.trim()) {
        if c != leaf && c != ca && !c.is_empty() && !chain.iter().any(|x| x == c) {
            chain.push(c.to_string());
        }
    }
    [
        (SNAP_CERT.to_string(), Value::from(chain.join("\n"))),
        (SNAP_KEY.to_string(), Value::from(key_pem.trim())),
        (SNAP_CA.to_string(), Value::from(ca)),
    ]
}

/// The keys that turn TLS off.
pub fn snap_off() -> [(String, Value); 3] {
    [SNAP_CERT, SNAP_KEY, SNAP_CA].map(|k| (k.to_string(), Value::Null))
}

/// The snap keys TLS uses, as the snap holds them now.
pub fn snap_current(snap_config: &Value) -> Option<[(String, Value); 3]> {
    let get = |k: &str| {
        snap::lookup(snap_config, k).filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    };
    Some([
        (SNAP_CERT.to_string(), get(SNAP_CERT)?.clone()),
        (SNAP_KEY.to_string(), get(SNAP_KEY)?.clone()),
        (SNAP_CA.to_string(), get(SNAP_CA)?.clone()),
    ])
}

/// The CA clients should trust when this unit's PostgreSQL serves TLS
/// (`tls.ca` is in force in the snap): what the `database` relation
/// publishes as `tls-ca` (with `tls` = `"True"`); `None`: TLS is off.
pub fn active_ca(o: &Observed) -> Option<&str> {
    snap::text(&o.snap_config, SNAP_CA)
}

/// The notBefore and notAfter of the first certificate in `pem`, in
/// seconds since the epoch; `None` when it cannot be read.
pub fn validity(pem: &str) -> Option<(i64, i64)> {
    let der = pem_body(pem)?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
    // serialNumber, signature, issuer, validity SEQUENCE { notBefore,
    // notAfter }, ... } ... }
    let (_, cert, _) = der_item(&der)?;
    let (_, mut tbs, _) = der_item(cert)?;
    let field = |tbs: &mut &[u8]| -> Option<(u8, Vec<u8>)> {
        let (tag, body, rest) = der_item(tbs)?;
        *tbs = rest;
        Some((tag, body.to_vec()))
    };
    let (mut tag, _) = field(&mut tbs)?;
    if tag == 0xa0 {
        // The version: the serial number follows.
        (tag, _) = field(&mut tbs)?;
    }
    if tag != 0x02 {
        return None;
    }
    field(&mut tbs)?; // signature algorithm
    field(&mut tbs)?; // issuer
    let (tag, validity) = field(&mut tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (t1, not_before, rest) = der_item(&validity)?;
    let (t2, not_after, _) = der_item(rest)?;
    Some((asn1_time(t1, not_before)?, asn1_time(t2, not_after)?))
}

/// Is a certificate valid from `not_before` to `not_after` due for renewal at `now`?
pub fn due_for_renewal(now: u64, not_before: i64, not_after: i64) -> bool {
    let life = (not_after - not_before).max(0) as f64;
    now as f64 >= not_before as f64 + RENEW_AT * life
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One DER item: (tag, contents, what follows).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18,
/// `YYYYMMDDHHMMSSZ`) → seconds since the epoch.
fn asn1_time(tag: u8, body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?.strip_suffix('Z')?;
    let digits = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let n = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
