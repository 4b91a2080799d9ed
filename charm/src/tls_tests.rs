use super::*;
use crate::testing::bag;
use serde_json::json;

/// A 30-day certificate made with openssl (dates below from
/// `openssl x509 -noout -startdate -enddate`).
const CERT: &str = include_str!("testdata/cert.pem");
const NOT_BEFORE: i64 = 1_796_647_268; // Dec  7 12:41:08 2026 GMT
const NOT_AFTER: i64 = 1_799_239_268; // Jan  6 12:41:08 2027 GMT

#[test]
fn what_a_unit_asks_for() {
    let w = Wanted::for_unit("postgresql/2", "10.0.0.3");
    assert_eq!(w.common_name, "10.0.0.3");
    assert_eq!(w.ip, "10.0.0.3");
    assert_eq!(w.dns, vec!["postgresql-2"]);
    assert_eq!(w.fingerprint(), "CN=10.0.0.3;IP=10.0.0.3;DNS=postgresql-2");
    assert_ne!(
        w.fingerprint(),
        Wanted::for_unit("postgresql/2", "10.0.0.4").fingerprint()
    );
}

#[test]
fn our_request_round_trips_in_the_v4_format() {
    let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    let value = encode_request(csr);
    assert_eq!(
        serde_json::from_str::<Value>(&value).unwrap(),
        json!([{"certificate_signing_request": csr.trim(), "ca": false}])
    );
    assert_eq!(
        our_request(&bag(&[(CSRS_KEY, &value)])).as_deref(),
        Some(csr.trim())
    );
    // What the library writes: the same list, maybe without `ca`.
    let theirs = json!([{"certificate_signing_request": csr}]).to_string();
    assert_eq!(
        our_request(&bag(&[(CSRS_KEY, &theirs)])).as_deref(),
        Some(csr.trim())
    );
    assert_eq!(our_request(&bag(&[])), None);
    assert_eq!(our_request(&bag(&[(CSRS_KEY, "not json")])), None);
}

/// One row per provider bag: which certificate answers our request.
#[test]
fn the_certificate_for_our_exact_request() {
    let ours = "-----BEGIN CERTIFICATE REQUEST-----\nOURS\n-----END CERTIFICATE REQUEST-----";
    let entry = |csr: &str, cert: &str, revoked: bool| {
        json!({"certificate": cert, "certificate_signing_request": csr,
               "ca": "CA", "chain": [cert, "CA"], "revoked": revoked})
    };
    type Row<'a> = (&'a str, Value, Option<&'a str>);
    let rows: Vec<Row> = vec![
        ("no certificates yet", json!([]), None),
        (
            "another unit's only",
            json!([entry(
                "-----BEGIN CERTIFICATE REQUEST-----\nOTHER\n-----END CERTIFICATE REQUEST-----",
                "C1",
                false
            )]),
            None,
        ),
        (
            "ours among others, with a trailing newline",
            json!([
                entry("x", "C1", false),
                entry(&format!("{ours}\n"), "C2", false)
            ]),
            Some("C2"),
        ),
        (
            "a request that only starts like ours",
            json!([entry(&ours.replace("OURS", "OURS2"), "C3", false)]),
            None,
        ),
    ];
    for (name, certificates, want) in rows {
        let b = bag(&[(CERTIFICATES_KEY, &certificates.to_string())]);
        let list = provider_certificates(&b).unwrap();
        let got = certificate_for(&list, ours).map(|c| c.certificate.as_str());
        assert_eq!(got, want, "{name}");
    }
    let revoked = json!([entry(ours, "C4", true)]).to_string();
    let list = provider_certificates(&bag(&[(CERTIFICATES_KEY, &revoked)])).unwrap();
    assert!(certificate_for(&list, ours).unwrap().revoked);
    assert!(provider_certificates(&bag(&[])).unwrap().is_empty());
    let e = provider_certificates(&bag(&[(CERTIFICATES_KEY, "{\"a\":1}")])).unwrap_err();
    assert!(e.to_string().contains("certificates"), "{e}");
}

#[test]
fn snap_values_serve_the_leaf_then_intermediates() {
    let cert = ProviderCertificate {
        certificate: "LEAF\n".into(),
        certificate_signing_request: "CSR".into(),
        ca: "ROOT".into(),
        chain: vec!["LEAF".into(), "INTERMEDIATE".into(), "ROOT".into()],
        revoked: false,
    };
    let values = snap_values(&cert, "KEY\n");
    assert_eq!(values[0], (SNAP_CERT.into(), json!("LEAF\nINTERMEDIATE")));
    assert_eq!(values[1], (SNAP_KEY.into(), json!("KEY")));
    assert_eq!(values[2], (SNAP_CA.into(), json!("ROOT")));
    assert!(snap_off().iter().all(|(_, v)| v.is_null()));
    let doc = json!({"tls": {"cert": "LEAF", "key": "KEY", "ca": "ROOT"}});
    assert_eq!(snap_current(&doc).unwrap()[2].1, json!("ROOT"));
    assert!(snap_current(&json!({"tls": {"cert": "LEAF"}})).is_none());
}

#[test]
fn validity_of_a_real_certificate() {
    assert_eq!(validity(CERT), Some((NOT_BEFORE, NOT_AFTER)));
    assert_eq!(validity("not a certificate"), None);
    // GeneralizedTime (years from 2050 on).
    assert_eq!(asn1_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
    assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
    assert_eq!(asn1_time(0x17, b"7001010000Z"), None);
}

#[test]
fn renewal_at_nine_tenths_of_the_lifetime() {
    let life = NOT_AFTER - NOT_BEFORE;
    let at = |share: f64| (NOT_BEFORE as f64 + share * life as f64) as u64;
    assert!(!due_for_renewal(at(0.5), NOT_BEFORE, NOT_AFTER));
    assert!(!due_for_renewal(at(0.89), NOT_BEFORE, NOT_AFTER));
    assert!(due_for_renewal(at(0.9) + 1, NOT_BEFORE, NOT_AFTER));
    assert!(due_for_renewal(
        NOT_AFTER as u64 + 10,
        NOT_BEFORE,
        NOT_AFTER
    ));
}
