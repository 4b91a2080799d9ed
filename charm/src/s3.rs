//! The `s3-parameters` relation (interface `s3`; this charm requires it,
//! s3-integrator provides it): what the provider's application bag holds,
//! what this charm writes on its side, and the `pgpilot.backup.*` snap keys
//! that make every unit archive WAL and take backups there. Plain data.
//!
//! Provider fields (charm-interfaces.md §4.1), all in its application bag:
//! `bucket`, `access-key`, `secret-key` (required; a v1 provider puts the
//! two keys in the secret named by `secret-extra` when the requirer asked
//! with `requested-secrets`), `endpoint`, `region`, `path`, `s3-uri-style`
//! (or `uri-style`), `storage-class`, `s3-api-version`, `tls-ca-chain` (a
//! JSON list of PEM certificates), `delete-older-than-days`.
//!
//! Requirer fields (the leader writes them on its side): `bucket`
//! (`relation-<id>`, s3 lib v0's default, which a v0 provider waits for)
//! and `requested-secrets`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::relation::{Databag, RelationView};

/// What the provider must send.
pub const REQUIRED: &[&str] = &["bucket", "access-key", "secret-key"];
/// Every provider field this charm reads (to tell "nothing sent yet" from
/// "sent, but incomplete").
const KNOWN: &[&str] = &[
    "bucket",
    "access-key",
    "secret-key",
    "endpoint",
    "region",
    "path",
    "s3-uri-style",
    "uri-style",
    "storage-class",
    "s3-api-version",
    "tls-ca-chain",
    "delete-older-than-days",
    "secret-extra",
];

/// The snap keys this module owns (a missing relation unsets them).
pub const SNAP_KEYS: &[&str] = &[
    "pgpilot.backup.stanza",
    "pgpilot.backup.retention-days",
    "pgpilot.backup.s3.endpoint",
    "pgpilot.backup.s3.region",
    "pgpilot.backup.s3.bucket",
    "pgpilot.backup.s3.prefix",
    "pgpilot.backup.s3.uri-style",
    "pgpilot.backup.s3.access-key",
    "pgpilot.backup.s3.secret-key",
    "pgpilot.backup.s3.storage-class",
    // The endpoint's CA (tls-ca-chain), written by the snap beside the
    // member file and named by `[backup.s3] ca_file`.
    "s3-tls.ca",
];

/// Usable S3 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Params {
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// `http(s)://host[:port]`, no trailing `/`; `None`: AWS's for the region.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// The key prefix inside the bucket, without leading or trailing `/`.
    pub path: String,
    /// `host` or `path`.
    pub uri_style: Option<String>,
    pub storage_class: Option<String>,
    pub retention_days: Option<u64>,
    /// PEM certificates to trust for the endpoint (`s3-tls.ca`).
    pub tls_ca_chain: Vec<String>,
}

/// What the relation gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Settings {
    /// Not related to s3-integrator.
    Unrelated,
    /// Related; the provider has sent nothing yet.
    Pending,
    /// The provider sent some fields but not these required ones.
    Missing(Vec<String>),
    /// Unusable: the message says what is wrong and what to do.
    Invalid(String),
    Ready(Box<S3Params>),
}

impl S3Settings {
    pub fn ready(&self) -> Option<&S3Params> {
        match self {
            S3Settings::Ready(p) => Some(p.as_ref()),
            _ => None,
        }
    }
}

fn value(bag: &Databag, key: &str) -> Option<String> {
    bag.get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The settings from the relation (the first one: `limit: 1`) and the
/// content of its `secret-extra` secret, when the provider named one
/// (`Err`: why it could not be read).
pub fn settings(
    relations: &[RelationView],
    extra_secret: Option<&Result<BTreeMap<String, String>, String>>,
) -> S3Settings {
    let Some(rel) = relations.first() else {
        return S3Settings::Unrelated;
    };
    let mut bag = rel.remote_app_data.clone();
    if !KNOWN.iter().any(|k| value(&bag, k).is_some()) {
        return S3Settings::Pending;
    }
    match extra_secret {
        Some(Ok(content)) => {
            for key in ["access-key", "secret-key"] {
                if let Some(v) = value(content, key) {
                    bag.insert(key.to_string(), v);
                }
            }
        }
        Some(Err(why)) if value(&bag, "access-key").is_none() => {
            return S3Settings::Invalid(format!(
                "cannot read the S3 credentials secret from {} ({why}): check the relation with juju show-unit",
                rel.remote_app
            ));
        }
        _ => {}
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|k| value(&bag, k).is_none())
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return S3Settings::Missing(missing);
    }
    match parse(&bag) {
        Ok(p) => S3Settings::Ready(Box::new(p)),
        Err(e) => S3Settings::Invalid(e),
    }
}

fn parse(bag: &Databag) -> Result<S3Params, String> {
    let get = |k: &str| value(bag, k);
    let bucket = get("bucket").unwrap_or_default();
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(format!(
            "S3 bucket {bucket:?} is not a valid bucket name (3-63 lower-case letters, digits, '-', '.'): set another bucket on s3-integrator"
        ));
    }
    let endpoint = get("endpoint").map(|e| e.trim_end_matches('/').to_string());
    let mut host = None;
    if let Some(e) = &endpoint {
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"));
        let h = rest
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .map(|r| r.rsplit_once(':').map_or(r, |(h, _)| h).to_string());
        match h {
            Some(h) if !h.is_empty() => host = Some(h),
            _ => {
                let fix = "set the endpoint on s3-integrator";
                return Err(format!(
                    "S3 endpoint {e:?} is not http(s)://host[:port]: {fix}"
                ));
            }
        }
    }
    let ip_endpoint = host
        .as_deref()
        .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('['));
    let uri_style = match get("s3-uri-style").or_else(|| get("uri-style")) {
        None if ip_endpoint => Some("path".to_string()),
        None => None,
        Some(s) if s == "path" => Some(s),
        Some(s) if s == "host" && ip_endpoint => {
            return Err(format!(
                "s3-uri-style host cannot address a bucket at the IP address {}: set s3-uri-style=path on s3-integrator",
                host.unwrap_or_default()
            ))
        }
        Some(s) if s == "host" => Some(s),
        Some(s) => {
            return Err(format!(
                "s3-uri-style {s:?} is neither host nor path: set it on s3-integrator"
            ))
        }
    };
    if let Some(v) = get("s3-api-version") {
        if v.trim_matches('"') != "4" {
            return Err(format!(
                "s3-api-version {v} is not supported (requests are signed with AWS Signature Version 4): set s3-api-version=4 on s3-integrator"
            ));
        }
    }
    let path = get("path")
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_default();
    let path_ok = path.is_empty()
        || path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if !path_ok {
        return Err(format!(
            "S3 path {path:?}: use segments of letters, digits, '-', '_', '.' separated by '/': set another path on s3-integrator"
        ));
    }
    let storage_class = get("storage-class");
    if let Some(c) = &storage_class {
        if !c
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "S3 storage-class {c:?} is not a storage class (upper-case letters, digits, '_'): set it on s3-integrator"
            ));
        }
    }
    let retention_days = match get("delete-older-than-days") {
        None => None,
        Some(d) => match d.trim_matches('"').parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(format!(
                    "delete-older-than-days {d:?} is not a number of days (1 or more): set it on s3-integrator"
                ))
            }
        },
    };
    let tls_ca_chain = match get("tls-ca-chain") {
        None => Vec::new(),
        Some(text) => serde_json::from_str::<Vec<String>>(&text).map_err(|e| {
            format!("tls-ca-chain is not a JSON list of PEM certificates ({e}): set it on s3-integrator")
        })?,
    };
    Ok(S3Params {
        bucket,
        access_key: get("access-key").unwrap_or_default(),
        secret_key: get("secret-key").unwrap_or_default(),
        endpoint,
        region: get("region"),
        path,
        uri_style,
        storage_class,
        retention_days,
        tls_ca_chain,
    })
}

/// This cluster's area in the repository: `<model>.<application>`, as
/// today's charm names its pgBackRest stanza.
pub fn stanza(model: &str, app: &str) -> String {
    format!("{model}.{app}")
}

/// The `pgpilot.backup.*` keys: the S3 repository, or (`None`) the snap's
/// default posix repository with every S3 key unset.
pub fn snap_keys(params: Option<&S3Params>, stanza: &str) -> Vec<(String, Value)> {
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::from);
    let mut keys = vec![(
        "pgpilot.backup.repository".to_string(),
        Value::from(if params.is_some() { "s3" } else { "posix" }),
    )];
    let values: Vec<Value> = match params {
        None => vec![Value::Null; SNAP_KEYS.len()],
        Some(p) => vec![
            Value::from(stanza),
            p.retention_days.map_or(Value::Null, Value::from),
            opt(&p.endpoint),
            opt(&p.region),
            Value::from(p.bucket.clone()),
            if p.path.is_empty() {
                Value::Null
            } else {
                Value::from(p.path.clone())
            },
            opt(&p.uri_style),
            Value::from(p.access_key.clone()),
            Value::from(p.secret_key.clone()),
            opt(&p.storage_class),
            if p.tls_ca_chain.is_empty() {
                Value::Null
            } else {
                Value::from(p.tls_ca_chain.join("\n"))
            },
        ],
    };
    keys.extend(SNAP_KEYS.iter().map(|k| k.to_string()).zip(values));
    keys
}

/// What the leader writes on its side of the relation.
pub fn requirer_bag(rel: &RelationView) -> Databag {
    let mut bag = rel.local_app_data.clone();
    bag.insert("bucket".into(), format!("relation-{}", rel.number()));
    bag.insert(
        "requested-secrets".into(),
        r#"["access-key","secret-key"]"#.into(),
    );
    bag
}

/// A stable fingerprint of the settings (FNV-1a over the snap keys): the
/// leader records which settings it checked.
pub fn fingerprint(keys: &[(String, Value)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in keys {
        for byte in k.bytes().chain(v.to_string().bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rel(pairs: &[(&str, &str)]) -> Vec<RelationView> {
        vec![RelationView {
            id: "s3-parameters:7".into(),
            endpoint: "s3-parameters".into(),
            remote_app: "s3-integrator".into(),
            remote_app_data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }]
    }

    const MOTO: &[(&str, &str)] = &[
        ("bucket", "backups"),
        ("access-key", "AK"),
        ("secret-key", "SK"),
        ("endpoint", "http://127.0.8.250:9000/"),
        ("region", "us-east-1"),
        ("path", "/pg/cluster1/"),
    ];

    #[test]
    fn settings_by_relation_state() {
        assert_eq!(settings(&[], None), S3Settings::Unrelated);
        assert_eq!(settings(&rel(&[]), None), S3Settings::Pending);
        assert_eq!(
            settings(&rel(&[("endpoint", "https://s3.example")]), None),
            S3Settings::Missing(vec![
                "bucket".into(),
                "access-key".into(),
                "secret-key".into()
            ])
        );
        let p = settings(&rel(MOTO), None);
        let S3Settings::Ready(p) = p else {
            panic!("{p:?}")
        };
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.8.250:9000"));
        assert_eq!(p.path, "pg/cluster1");
        // An IP endpoint needs path-style requests.
        assert_eq!(p.uri_style.as_deref(), Some("path"));
    }

    #[test]
    fn credentials_from_the_extra_secret() {
        let bag = [
            ("bucket", "backups"),
            ("secret-extra", "secret:abc"),
            ("endpoint", "https://s3.example.com"),
        ];
        let content: BTreeMap<String, String> = [
            ("access-key".to_string(), "AK".to_string()),
            ("secret-key".to_string(), "SK".to_string()),
        ]
        .into();
        let p = settings(&rel(&bag), Some(&Ok(content)));
        assert_eq!(p.ready().unwrap().secret_key, "SK");
        assert_eq!(p.ready().unwrap().uri_style, None);
        let p = settings(&rel(&bag), Some(&Err("permission denied".into())));
        assert!(
            matches!(&p, S3Settings::Invalid(m) if m.contains("permission denied")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_values_say_what_to_set() {
        let rows: &[(&str, &str, &str)] = &[
            ("bucket", "Bad_Bucket", "is not a valid bucket name"),
            ("endpoint", "s3.example.com", "is not http(s)://host[:port]"),
            (
                "s3-uri-style",
                "host",
                "set s3-uri-style=path on s3-integrator",
            ),
            ("s3-uri-style", "virtual", "neither host nor path"),
            ("s3-api-version", "2", "set s3-api-version=4"),
            ("path", "a b", "set another path"),
            ("storage-class", "cold", "is not a storage class"),
            ("delete-older-than-days", "0", "not a number of days"),
            ("tls-ca-chain", "PEM", "not a JSON list"),
        ];
        for (key, value, expected) in rows {
            let mut bag: Vec<(&str, &str)> =
                MOTO.iter().copied().filter(|(k, _)| k != key).collect();
            bag.push((key, value));
            match settings(&rel(&bag), None) {
                S3Settings::Invalid(m) => assert!(m.contains(expected), "{key}: {m}"),
                other => panic!("{key}={value}: {other:?}"),
            }
        }
        let mut bag = MOTO.to_vec();
        bag.push(("s3-api-version", "4"));
        bag.push(("delete-older-than-days", "30"));
        let p = settings(&rel(&bag), None);
        assert_eq!(p.ready().unwrap().retention_days, Some(30));
    }

    #[test]
    fn snap_keys_set_and_unset() {
        let p = settings(&rel(MOTO), None).ready().cloned().unwrap();
        let keys: BTreeMap<String, Value> =
            snap_keys(Some(&p), "test.postgresql").into_iter().collect();
        assert_eq!(keys["pgpilot.backup.repository"], json!("s3"));
        assert_eq!(keys["pgpilot.backup.stanza"], json!("test.postgresql"));
        assert_eq!(keys["pgpilot.backup.s3.prefix"], json!("pg/cluster1"));
        assert_eq!(keys["pgpilot.backup.s3.uri-style"], json!("path"));
        assert_eq!(keys["pgpilot.backup.s3.secret-key"], json!("SK"));
        assert_eq!(keys["pgpilot.backup.s3.storage-class"], Value::Null);
        assert_eq!(keys["s3-tls.ca"], Value::Null);
        let mut with_ca = p.clone();
        with_ca.tls_ca_chain = vec!["PEM1".into(), "PEM2".into()];
        let keys: BTreeMap<String, Value> = snap_keys(Some(&with_ca), "test.postgresql")
            .into_iter()
            .collect();
        assert_eq!(keys["s3-tls.ca"], json!("PEM1\nPEM2"));
        let none = snap_keys(None, "test.postgresql");
        assert_eq!(
            none[0],
            ("pgpilot.backup.repository".into(), json!("posix"))
        );
        assert!(none[1..].iter().all(|(_, v)| v.is_null()));
        assert_eq!(none.len(), SNAP_KEYS.len() + 1);
        assert_ne!(
            fingerprint(&snap_keys(Some(&p), "a")),
            fingerprint(&snap_keys(Some(&p), "b"))
        );
    }

    #[test]
    fn the_requirer_asks_for_a_bucket_and_secrets() {
        let bag = requirer_bag(&rel(&[])[0]);
        assert_eq!(bag["bucket"], "relation-7");
        assert_eq!(bag["requested-secrets"], r#"["access-key","secret-key"]"#);
    }
}
