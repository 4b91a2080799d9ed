//! Property tests (issue 13): every parser of outside input, fed arbitrary
//! and mutated input, answers with a value or a clear error — never a panic
//! (and, being pure, never a hang) — and a value it accepts holds up: a
//! configuration it accepts validates, its durations fit in an `Instant`.
//!
//! Case counts are fixed so the suite stays fast (about 1-3 s for all of
//! them in a debug build): [`CASES`] per property, [`FEW`] for the ones that
//! build a whole member file or JSON document per case.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::config::tests_support::EXAMPLE;
use crate::config::{Config, ParamValue};
use crate::dynamic::DynamicConfig;

/// Cases per property.
const CASES: u32 = 512;
/// Cases per property that parses a whole document.
const FEW: u32 = 256;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No files: shrinking output goes to the test's failure message.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep, with the numbers that break
/// arithmetic (0, negative, 2^63-1, 2^64-1, huge floats).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(i64::MAX as u64), Just(u64::MAX)]
            .prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("-1GB"),
            Just("99999999999999TB"),
            Just("0x7fffffff"),
            Just("1e308"),
            Just("on"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys of the dynamic configuration, some parameters, and anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "ttl",
            "loop_wait",
            "retry_timeout",
            "maximum_lag_on_failover",
            "primary_start_timeout",
            "synchronous_mode",
            "synchronous_mode_strict",
            "synchronous_node_count",
            "pause",
            "postgresql",
            "parameters",
            "use_pg_rewind",
            "shared_buffers",
            "work_mem",
            "max_connections",
            "port",
        ])
        .prop_map(str::to_string),
        "[a-z_.]{1,10}",
    ]
}

/// What PostgreSQL's pg_settings could say about a parameter.
fn setting() -> impl Strategy<Value = crate::postgres::guc::Setting> {
    (
        prop::sample::select(vec!["bool", "integer", "real", "string", "enum", "?"]),
        prop::option::of(prop_oneof![
            Just("8kB".to_string()),
            "[0-9]{0,3}[a-zA-Z]{0,3}"
        ]),
        prop::option::of("-?[0-9.e+]{1,12}"),
        prop::option::of("-?[0-9.e+]{1,12}"),
        prop::collection::vec("[a-z]{1,6}", 0..4),
    )
        .prop_map(|(vartype, unit, min_val, max_val, enumvals)| {
            crate::postgres::guc::Setting {
                name: "p".into(),
                vartype: vartype.into(),
                enumvals,
                min_val,
                max_val,
                unit,
            }
        })
}

/// `text` with a byte range replaced by `insert` (both positions taken
/// modulo the length, snapped to character boundaries).
fn mutate(text: &str, at: usize, len: usize, insert: &str) -> String {
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at % (text.len() + 1));
    let end = floor(start + len % 16);
    format!("{}{insert}{}", &text[..start], &text[end..])
}

/// Every duration of an accepted dynamic configuration fits after now.
fn durations_fit(d: &DynamicConfig) {
    let now = Instant::now();
    for t in [
        d.ttl(),
        d.loop_wait(),
        d.retry_timeout(),
        d.fence_margin(),
        d.lease_renew_interval(),
        Duration::from_secs(d.primary_start_timeout),
    ] {
        assert!(now.checked_add(t).is_some(), "{t:?} overflows an Instant");
    }
}

proptest! {
    #![proptest_config(config(FEW))]

    /// The member file: arbitrary text, and the example with a slice
    /// replaced by arbitrary text or by a value that breaks arithmetic.
    #[test]
    fn member_file_never_panics(
        at in any::<usize>(),
        len in any::<usize>(),
        insert in prop_oneof![
            ".{0,20}",
            Just("\nttl = 9223372036854775807\n".to_string()),
            Just("\n[bootstrap]\nloop_wait = 3\nretry_timeout = 9223372036854775807\n".to_string()),
            Just("\"\"\"".to_string()),
            Just("[[".to_string()),
        ],
        arbitrary in ".{0,200}",
    ) {
        for text in [mutate(EXAMPLE, at, len, &insert), arbitrary] {
            if let Ok(config) = Config::from_toml(&text, Path::new("m.toml")) {
                prop_assert!(config.validate().is_ok());
                durations_fit(&config.bootstrap);
            }
        }
    }

    /// [bootstrap] with any integers for its durations: accepted only when
    /// the timing rule holds and nothing overflows.
    #[test]
    fn bootstrap_timings(
        ttl in any::<i64>(),
        loop_wait in any::<i64>(),
        retry in prop_oneof![any::<i64>(), Just(i64::MAX), 0i64..20],
    ) {
        let text = format!(
            "{EXAMPLE}\n[bootstrap]\nttl = {ttl}\nloop_wait = {loop_wait}\nretry_timeout = {retry}\n"
        );
        if let Ok(config) = Config::from_toml(&text, Path::new("m.toml")) {
            let b = &config.bootstrap;
            prop_assert!(u128::from(b.loop_wait) + 2 * u128::from(b.retry_timeout) <= u128::from(b.ttl));
            durations_fit(b);
        }
    }

    /// The dynamic configuration as PATCH /config builds it: the current
    /// one merged with any patch, then parsed and validated.
    #[test]
    fn dynamic_configuration_patch(patch in any_json()) {
        let mut doc = serde_json::to_value(DynamicConfig::default()).unwrap();
        crate::api::config::merge_patch(&mut doc, &patch);
        match crate::api::config::parse_config(doc) {
            Ok(c) => {
                prop_assert!(c.validate("").is_ok());
                durations_fit(&c);
            }
            Err(m) => prop_assert!(m.starts_with("invalid configuration: key `"), "{}", m),
        }
    }

    /// PUT /config: any JSON document.
    #[test]
    fn dynamic_configuration_document(doc in any_json()) {
        if let Ok(c) = crate::api::config::parse_config(doc) {
            prop_assert!(c.validate("").is_ok());
            durations_fit(&c);
        }
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Request bodies: any bytes; a JSON object or a clear error.
    #[test]
    fn request_body_bytes(body in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(v) = crate::api::config::parse_body(&body) {
            prop_assert!(v.as_object().is_some_and(|m| !m.is_empty()));
        }
    }

    /// POST /switchover, /failover and /restart bodies, and the times in them.
    #[test]
    fn operator_request_bodies(body in any_json(), paused in any::<bool>(), time in ".{0,40}") {
        let _ = crate::api::switchover::parse_ask(&body);
        if let Value::Object(map) = &body {
            let _ = crate::api::member::parse_restart(map, paused);
        }
        let ask = json!({"leader": "m1", "candidate": "m2", "scheduled_at": time});
        let _ = crate::api::switchover::parse_ask(&ask);
        if let Ok(epoch) = crate::timestamp::parse_timestamp(&time) {
            let _ = crate::timestamp::format_timestamp(epoch);
        }
        let _ = crate::timestamp::parse_timestamp(&time);
        let _ = crate::api::health::parse_size(&time);
        let _ = crate::backup::parse_time(&time);
    }

    /// Timestamps in the forms people write them, around the edges of
    /// what a calendar (and humantime) can hold.
    #[test]
    fn timestamps_at_the_edges(
        year in prop_oneof![0u32..3, 1969u32..1971, 9998u32..10001, any::<u32>()],
        month in prop_oneof![0u32..14, Just(12)],
        day in prop_oneof![0u32..33, Just(31)],
        hour in prop_oneof![0u32..25, Just(23)],
        offset in prop_oneof![Just("Z".to_string()), "[+-][0-9]{2}:[0-9]{2}"],
    ) {
        let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:59:59{offset}");
        if let Ok(epoch) = crate::timestamp::parse_timestamp(&text) {
            let _ = crate::timestamp::format_timestamp(epoch);
        }
        let _ = crate::timestamp::parse_timestamp(&text);
        let _ = crate::backup::parse_time(&text);
    }

    /// The Authorization header: any bytes, with and without credentials
    /// configured; only the right user:password passes.
    #[test]
    fn authorization_header(header in prop::collection::vec(any::<u8>(), 0..48), ascii in "[ -~]{0,40}") {
        use axum::http::Method;
        use crate::api::security::check;
        let text = EXAMPLE.replace("[api]\n", "[api]\nusername = \"u\"\npassword = \"p\"\n");
        let api = Config::from_toml(&text, Path::new("m.toml")).unwrap().api;
        for h in [header.as_slice(), ascii.as_bytes(), format!("Basic {ascii}").as_bytes()] {
            let verdict = check(&api, &Method::POST, Some(h), false);
            // base64("u:p") = dTpw
            if verdict.is_ok() {
                prop_assert!(String::from_utf8_lossy(h).contains("dTpw"), "{:?}", h);
            }
        }
    }

    /// `If-Match` on PATCH/PUT /config: any bytes; a revision only when the
    /// header holds one.
    #[test]
    fn if_match_header(value in prop::collection::vec(any::<u8>(), 0..24), revision in any::<i64>()) {
        use axum::http::{header, HeaderMap, HeaderValue};
        use crate::api::config::expected_revision;
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, v);
            if let Ok(Some(r)) = expected_revision(&headers) {
                prop_assert!(String::from_utf8_lossy(&value).contains(&r.to_string()));
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(&format!("\"{revision}\"")).unwrap());
        prop_assert_eq!(expected_revision(&headers), Ok(Some(revision)));
    }

    /// A parameter value against any pg_settings row.
    #[test]
    fn parameter_values(s in setting(), text in ".{0,24}", int in any::<i64>(), float in any::<f64>(), b in any::<bool>()) {
        for value in [ParamValue::Text(text.clone()), ParamValue::Int(int), ParamValue::Float(float), ParamValue::Bool(b)] {
            let _ = crate::postgres::guc::check_value(&s, &value);
        }
    }

    /// Sealed repository objects (manifests, the catalog): any bytes, and a
    /// sealed document with a slice replaced, never pass the checksum
    /// unless unchanged.
    #[test]
    fn manifest_and_catalog(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        at in any::<usize>(),
        len in any::<usize>(),
        insert in ".{0,8}",
    ) {
        use crate::backup::model::{catalog::Catalog, manifest};
        let _ = manifest::unseal::<manifest::Manifest>(&bytes);
        let _ = manifest::unseal::<Catalog>(&bytes);
        let sealed = String::from_utf8(manifest::seal(&Catalog::default())).unwrap();
        let changed = mutate(&sealed, at, len, &insert);
        let read = manifest::unseal::<Catalog>(changed.as_bytes());
        if changed != sealed && read.is_ok() {
            // Only changes outside the checksummed body may pass (white space,
            // the order of the envelope's keys).
            let v: Value = serde_json::from_str(&changed).unwrap();
            prop_assert_eq!(&v["manifest"], &json!({"backups": []}));
        }
        if let Ok(m) = manifest::unseal::<manifest::Manifest>(changed.as_bytes()) {
            let _ = m.validate();
        }
    }

    /// Names found in the repository and in pg_wal.
    #[test]
    fn repository_object_names(name in ".{0,40}", hexish in "[0-9A-Fa-f.\\-_]{0,48}", lsn in ".{0,20}") {
        use crate::repo::layout::{is_sha256_hex, Layout, WalName};
        let layout = Layout::new("main");
        for n in [name.as_str(), hexish.as_str()] {
            if let Some(w) = WalName::parse(n) {
                let _ = (w.kind(), w.timeline(), w.as_str());
            }
            let _ = is_sha256_hex(n);
            let _ = layout.parse_wal_key(n);
            let _ = layout.parse_wal_key(&format!("main/archive/{n}"));
            let _ = crate::backup::model::manifest::check_label(n);
            let _ = crate::backup::model::manifest::check_path(n);
            for size in [0, 1, 16 << 20, u64::MAX] {
                let _ = crate::backup::model::walrange::parse_segment(n, size);
            }
        }
        let _ = crate::lsn::parse_lsn(&lsn);
        let _ = crate::lsn::parse_lsn(&lsn);
        let _ = crate::backup::model::walrange::parse_history(&name);
    }

    /// etcd values as another (buggy or hostile) member may write them: a
    /// bad member key is skipped, never fatal, and the view stays usable.
    #[test]
    fn etcd_values(
        members in prop::collection::btree_map("[a-z0-9]{1,6}", prop_oneof![
            any_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..32),
        ], 0..4),
        other_key in prop::sample::select(vec!["leader", "initialize", "config", "failover", "sync", "status", "history", "optime/leader", "x"]),
        other_value in prop_oneof![
            any_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..32),
        ],
        revision in any::<i64>(),
        lease in any::<i64>(),
    ) {
        use crate::dcs::{keys, view_from_entries, RawEntry};
        let good = serde_json::to_vec(&DynamicConfig::default()).unwrap();
        let member_keys: BTreeMap<String, Vec<u8>> = members
            .into_iter()
            .map(|(k, v)| (format!("{}{k}", keys::MEMBERS), v))
            .collect();
        let mut entries: Vec<RawEntry<'_>> = member_keys
            .iter()
            .map(|(k, v)| RawEntry { key: k, value: v, revision, lease })
            .collect();
        entries.push(RawEntry { key: keys::CONFIG, value: &good, revision, lease: 0 });
        // Member keys alone never make the view unreadable.
        let view = view_from_entries(entries.iter().map(|e| RawEntry { ..*e }));
        prop_assert!(view.is_ok(), "{:?}", view.err());
        let view = view.unwrap();
        prop_assert!(view.config.is_some());
        let _ = (view.leader_name(), view.timeline());
        for m in &view.members {
            let _ = view.member(&m.name);
        }
        // Any value in a cluster key: a view or an error naming the key.
        entries.push(RawEntry { key: other_key, value: &other_value, revision, lease });
        if let Ok(view) = view_from_entries(entries.iter().map(|e| RawEntry { ..*e })) {
            let _ = (view.leader_name(), view.timeline());
            if let Some(c) = &view.config {
                let _ = c.validate("");
            }
        }
    }
}

/// The inputs the properties above found, kept as plain cases.
#[test]
fn found_by_the_properties() {
    // A non-ASCII offset in a failover key's scheduled_at (panicked).
    assert_eq!(
        crate::timestamp::parse_timestamp("2026-01-01T00:00:00+ࠀ").ok(),
        None
    );
    assert_eq!(
        crate::timestamp::parse_timestamp("2026-01-01T00:00:00+99999999999999999:00").ok(),
        None
    );
    assert!(crate::timestamp::parse_timestamp("2026-01-01T00:00:00+02:00").is_ok());
    // A time an offset pushes past year 9999 (formatting it panicked).
    assert!(crate::timestamp::parse_timestamp("9999-12-31T23:59:59-01:00").is_err());
    assert!(crate::timestamp::parse_timestamp("9999-12-31T22:59:59-01:00").is_ok());
    // A WAL-like name with multi-byte characters, a zero segment size (panicked).
    let parse = crate::backup::model::walrange::parse_segment;
    assert_eq!(parse("¡A0 𐀀ࠀ0  0 ࠀ0ࠀ0ࠀ0ࠀ0ࠀ0ࠀ0", 16 << 20), None);
    assert_eq!(parse("000000010000000000000001", 0), None);
    assert_eq!(parse("000000010000000000000001", 16 << 20), Some((1, 1)));
    // A member key that is not UTF-8 made the whole cluster unreadable.
    use crate::dcs::{keys, view_from_entries, RawEntry};
    let key = format!("{}m1", keys::MEMBERS);
    let view = view_from_entries([RawEntry {
        key: &key,
        value: &[128],
        revision: 1,
        lease: 1,
    }])
    .unwrap();
    assert!(view.members.is_empty());
}
