//! snapd's configuration rules, without any process: option names, how
//! `snap set` / `snapctl set` read a value, nested set and unset, what
//! `snapctl get` prints, and the `snapctl services` table.
//!
//! Each function follows the snapd code named in its comment
//! (overlord/configstate/config, client/clientutil, overlord/hookstate/ctlcmd).

use serde_json::{Map, Value};

/// One segment of an option name (config.validKey):
/// `^(?:[a-z0-9]+-?)*[a-z](?:-?[a-z0-9])*$` — lowercase letters, digits and
/// single dashes, at least one letter, no dash at either end.
pub fn valid_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.iter().any(|b| b.is_ascii_lowercase())
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !segment.contains("--")
}

/// config.ParseKey: the dotted segments of `key`, each checked.
pub fn parse_key(key: &str) -> Result<Vec<&str>, String> {
    if key.is_empty() {
        return Ok(Vec::new());
    }
    let segments: Vec<&str> = key.split('.').collect();
    for segment in &segments {
        if !valid_segment(segment) {
            return Err(format!("invalid option name: {segment:?}"));
        }
    }
    Ok(segments)
}

/// The first object key nested in `value` that is not a valid segment
/// (config.validateMapKeys). snapd refuses such values for core26+ snaps
/// and only warns for older bases.
pub fn invalid_map_key(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if valid_segment(k) {
                invalid_map_key(v)
            } else {
                Some(k.clone())
            }
        }),
        Value::Array(items) => items.iter().find_map(invalid_map_key),
        _ => None,
    }
}

/// How a value given on the command line is read (clientutil.ParseConfigOptions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValueMode {
    /// The default: JSON if the whole text is one JSON document, else the
    /// text as a string.
    #[default]
    JsonOrString,
    /// `-s`: always the text as a string.
    String,
    /// `-t`: JSON or an error.
    Typed,
}

/// The value of `key=VALUE` as snapd stores it. `null` means "unset".
pub fn parse_value(text: &str, mode: ValueMode) -> Result<Value, String> {
    match mode {
        ValueMode::String => Ok(Value::String(text.to_string())),
        // jsonutil.DecodeWithNumber: one JSON document, nothing after it
        // (whitespace around it is fine).
        ValueMode::JsonOrString => {
            Ok(serde_json::from_str::<Value>(text)
                .unwrap_or_else(|_| Value::String(text.to_string())))
        }
        ValueMode::Typed => {
            serde_json::from_str::<Value>(text).map_err(|e| format!("failed to parse JSON: {e}"))
        }
    }
}

/// clientutil.ParseConfigValues: `key=value` sets, `key!` unsets (a null).
pub fn parse_assignments(args: &[String], mode: ValueMode) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        match arg.split_once('=') {
            None if arg.ends_with('!') => {
                // One "!" comes off: "k!!" is the key "k!" (an invalid name).
                let key = &arg[..arg.len() - 1];
                if key.is_empty() {
                    return Err(
                        "configuration keys cannot be empty (use key! to unset a key)".to_string(),
                    );
                }
                out.push((key.to_string(), Value::Null));
            }
            None => return Err(format!("invalid configuration: {arg:?} (want key=value)")),
            Some(("", _)) => return Err("configuration keys cannot be empty".to_string()),
            Some((key, value)) => out.push((key.to_string(), parse_value(value, mode)?)),
        }
    }
    Ok(out)
}

/// Set (or, with `Value::Null`, unset) `key` in `config`, a JSON object,
/// the way a snapd transaction does: missing or null parents become
/// objects; a parent that holds anything else is an error; unsetting
/// leaves the (possibly empty) parent objects in place.
pub fn apply(config: &mut Value, snap: &str, key: &str, value: Value) -> Result<(), String> {
    let segments = parse_key(key)?;
    if segments.is_empty() {
        return Err("internal error: key cannot be an empty string".to_string());
    }
    if !config.is_object() {
        *config = Value::Object(Map::new());
    }
    let mut node = config;
    for (i, segment) in segments[..segments.len() - 1].iter().enumerate() {
        let Value::Object(map) = node else {
            unreachable!("checked below")
        };
        let child = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if child.is_null() {
            *child = Value::Object(Map::new());
        }
        if !child.is_object() {
            return Err(format!(
                "snap {snap:?} option {:?} is not a map",
                segments[..=i].join(".")
            ));
        }
        node = child;
    }
    let Value::Object(map) = node else {
        unreachable!("parents are objects")
    };
    let last = segments[segments.len() - 1].to_string();
    if value.is_null() {
        map.remove(&last);
    } else {
        map.insert(last, value);
    }
    Ok(())
}

/// The value at `key` (config.Transaction.Get): `None` when not set, an
/// error when a parent is not an object or the name is invalid.
pub fn lookup<'a>(config: &'a Value, snap: &str, key: &str) -> Result<Option<&'a Value>, String> {
    let segments = parse_key(key)?;
    let mut node = config;
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 && !node.is_object() {
            return Err(format!(
                "snap {snap:?} option {:?} is not a map",
                segments[..i].join(".")
            ));
        }
        match node.get(*segment) {
            Some(v) => node = v,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// What `snapctl get [-d] [-t] KEY...` prints (getCommand.printPatch):
/// `found` holds the values of the requested keys that are set. One key
/// without `-d`: a string raw, anything else as indented JSON, an unset
/// key as an empty line; otherwise (or with `-d`) an object of the
/// requested keys that are set.
pub fn format_get(
    keys: &[String],
    found: &Map<String, Value>,
    document: bool,
    typed: bool,
) -> String {
    let single = !document && keys.len() == 1;
    let value: Option<Value> = if single {
        found.get(&keys[0]).cloned()
    } else {
        let patch: Map<String, Value> = keys
            .iter()
            .filter_map(|k| found.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        Some(Value::Object(patch))
    };
    match value {
        None if typed => "null\n".to_string(),
        None => "\n".to_string(),
        Some(Value::String(s)) if !typed => format!("{s}\n"),
        Some(v) => format!("{}\n", go_json_indent(&v)),
    }
}

/// Go's `json.MarshalIndent(v, "", "\t")`: keys sorted, a tab per level,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped as Go's encoder does.
pub fn go_json_indent(value: &Value) -> String {
    let mut out = String::new();
    write_go_json(value, 0, &mut out);
    out
}

fn write_go_json(value: &Value, depth: usize, out: &mut String) {
    let indent = |out: &mut String, depth: usize| out.extend(std::iter::repeat_n('\t', depth));
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                indent(out, depth + 1);
                write_go_json(item, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                indent(out, depth + 1);
                out.push_str(&go_string(key));
                out.push_str(": ");
                write_go_json(&map[*key], depth + 1, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push('}');
        }
        Value::String(s) => out.push_str(&go_string(s)),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Go's encoder writes it (HTML-safe escaping).
fn go_string(s: &str) -> String {
    let plain = serde_json::to_string(s).unwrap_or_default();
    // These characters only ever occur inside the string's content.
    plain
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `snapctl services`' table (tabwriter minwidth 5, padding 2), rows
/// `(snap.app, enabled, active)` already sorted by app; nothing at all when
/// there is no row.
pub fn services_table(rows: &[(String, bool, bool)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut lines: Vec<[String; 4]> = vec![[
        "Service".into(),
        "Startup".into(),
        "Current".into(),
        "Notes".into(),
    ]];
    for (name, enabled, active) in rows {
        lines.push([
            name.clone(),
            if *enabled { "enabled" } else { "disabled" }.into(),
            if *active { "active" } else { "inactive" }.into(),
            "-".into(),
        ]);
    }
    let mut widths = [0usize; 3];
    for (col, width) in widths.iter_mut().enumerate() {
        let longest = lines
            .iter()
            .map(|l| l[col].chars().count())
            .max()
            .unwrap_or(0);
        *width = (longest + 2).max(5);
    }
    let mut out = String::new();
    for line in &lines {
        for (col, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}", line[col]));
        }
        out.push_str(&line[3]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn option_names_follow_snapds_pattern() {
        for good in [
            "a",
            "foo",
            "foo-bar",
            "a1",
            "1a",
            "9-x",
            "listen-port",
            "x-1-y",
        ] {
            assert!(valid_segment(good), "{good} should be valid");
        }
        for bad in [
            "", "Foo", "-a", "a-", "a--b", "123", "a_b", "a b", "é", "1-2",
        ] {
            assert!(!valid_segment(bad), "{bad} should be invalid");
        }
        assert_eq!(parse_key("a.b-c.d").unwrap(), vec!["a", "b-c", "d"]);
        assert_eq!(
            parse_key("pgpilot.Port").unwrap_err(),
            r#"invalid option name: "Port""#
        );
        assert_eq!(parse_key("a..b").unwrap_err(), r#"invalid option name: """#);
        assert_eq!(invalid_map_key(&json!({"a": {"B": 1}})), Some("B".into()));
        assert_eq!(
            invalid_map_key(&json!([{"ok": {"x_y": 1}}])),
            Some("x_y".into())
        );
        assert_eq!(invalid_map_key(&json!({"a": [1, "B"]})), None);
    }

    #[test]
    fn values_are_json_when_they_parse_else_strings() {
        let p = |t: &str| parse_value(t, ValueMode::JsonOrString).unwrap();
        assert_eq!(p("5432"), json!(5432));
        assert_eq!(p("true"), json!(true));
        assert_eq!(p("null"), Value::Null);
        assert_eq!(p(r#""quoted""#), json!("quoted"));
        assert_eq!(p(r#"{"a": [1, 2]}"#), json!({"a": [1, 2]}));
        assert_eq!(p(" 7 "), json!(7));
        assert_eq!(p("hello"), json!("hello"));
        assert_eq!(p("10.0.0.1"), json!("10.0.0.1"));
        assert_eq!(p("1 2"), json!("1 2"));
        assert_eq!(p(""), json!(""));
        assert_eq!(p("[1,"), json!("[1,"));
        assert_eq!(parse_value("5", ValueMode::String).unwrap(), json!("5"));
        assert!(parse_value("x", ValueMode::Typed)
            .unwrap_err()
            .starts_with("failed to parse JSON: "));
    }

    #[test]
    fn assignments_set_and_unset() {
        let parsed = parse_assignments(
            &strings(&["a=1", "b.c=x=y", "d!", "e=", "f=null"]),
            ValueMode::JsonOrString,
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                ("a".into(), json!(1)),
                ("b.c".into(), json!("x=y")),
                ("d".into(), Value::Null),
                ("e".into(), json!("")),
                ("f".into(), Value::Null),
            ]
        );
        assert_eq!(
            parse_assignments(&strings(&["novalue"]), ValueMode::default()).unwrap_err(),
            r#"invalid configuration: "novalue" (want key=value)"#
        );
        assert_eq!(
            parse_assignments(&strings(&["=1"]), ValueMode::default()).unwrap_err(),
            "configuration keys cannot be empty"
        );
        assert!(parse_assignments(&strings(&["!"]), ValueMode::default())
            .unwrap_err()
            .starts_with("configuration keys cannot be empty (use key! to unset"));
    }

    #[test]
    fn nested_set_and_unset() {
        let mut c = json!({});
        apply(&mut c, "s", "a.b.c", json!(1)).unwrap();
        apply(&mut c, "s", "a.d", json!("x")).unwrap();
        assert_eq!(c, json!({"a": {"b": {"c": 1}, "d": "x"}}));
        // Unsetting a leaf keeps its (now empty) parent, as snapd does.
        apply(&mut c, "s", "a.b.c", Value::Null).unwrap();
        assert_eq!(c, json!({"a": {"b": {}, "d": "x"}}));
        // Unsetting under a missing parent creates the parent.
        apply(&mut c, "s", "z.y", Value::Null).unwrap();
        assert_eq!(c["z"], json!({}));
        // A whole object replaces what was there.
        apply(&mut c, "s", "a", json!({"k": 2})).unwrap();
        assert_eq!(c["a"], json!({"k": 2}));
        // A scalar parent is an error naming the parent path.
        assert_eq!(
            apply(&mut c, "s", "a.k.x", json!(1)).unwrap_err(),
            r#"snap "s" option "a.k" is not a map"#
        );
        apply(&mut c, "s", "a", Value::Null).unwrap();
        assert!(c.get("a").is_none());
        assert_eq!(
            apply(&mut c, "s", "Bad", json!(1)).unwrap_err(),
            r#"invalid option name: "Bad""#
        );
    }

    #[test]
    fn lookup_reads_nested_values() {
        let c = json!({"a": {"b": 1, "s": "t"}});
        assert_eq!(lookup(&c, "s", "a.b").unwrap(), Some(&json!(1)));
        assert_eq!(lookup(&c, "s", "a.x").unwrap(), None);
        assert_eq!(lookup(&c, "s", "q.x").unwrap(), None);
        assert_eq!(
            lookup(&c, "s", "a.s.x").unwrap_err(),
            r#"snap "s" option "a.s" is not a map"#
        );
    }

    #[test]
    fn get_output_shapes() {
        let found: Map<String, Value> = json!({
            "name": "frank",
            "port": 5432,
            "tree": {"b": [1, "<x>"], "a": {}}
        })
        .as_object()
        .unwrap()
        .clone();
        let keys = |k: &[&str]| strings(k);
        // One key: strings raw, other values as JSON.
        assert_eq!(
            format_get(&keys(&["name"]), &found, false, false),
            "frank\n"
        );
        assert_eq!(format_get(&keys(&["port"]), &found, false, false), "5432\n");
        assert_eq!(
            format_get(&keys(&["tree"]), &found, false, false),
            "{\n\t\"a\": {},\n\t\"b\": [\n\t\t1,\n\t\t\"\\u003cx\\u003e\"\n\t]\n}\n"
        );
        // An unset key alone: an empty line (null with -t).
        assert_eq!(
            format_get(&keys(&["nope"]), &Map::new(), false, false),
            "\n"
        );
        assert_eq!(
            format_get(&keys(&["nope"]), &Map::new(), false, true),
            "null\n"
        );
        // -t quotes strings.
        assert_eq!(
            format_get(&keys(&["name"]), &found, false, true),
            "\"frank\"\n"
        );
        // -d: always a document, also for one key; unset keys are left out.
        let one: Map<String, Value> = json!({"name": "frank"}).as_object().unwrap().clone();
        assert_eq!(
            format_get(&keys(&["name", "nope"]), &one, true, false),
            "{\n\t\"name\": \"frank\"\n}\n"
        );
        assert_eq!(
            format_get(&keys(&["nope"]), &Map::new(), true, false),
            "{}\n"
        );
        // Several keys without -d: a document too.
        assert_eq!(
            format_get(&keys(&["name", "port"]), &found, false, false),
            "{\n\t\"name\": \"frank\",\n\t\"port\": 5432\n}\n"
        );
    }

    #[test]
    fn services_table_is_snapds() {
        let rows = vec![
            ("charmed-postgresql.etcd".to_string(), true, true),
            ("charmed-postgresql.pgbouncer".to_string(), false, false),
        ];
        assert_eq!(
            services_table(&rows),
            "Service                       Startup   Current   Notes\n\
             charmed-postgresql.etcd       enabled   active    -\n\
             charmed-postgresql.pgbouncer  disabled  inactive  -\n"
        );
        assert_eq!(services_table(&[]), "");
        // Columns never get narrower than "Startup"/"Current" plus padding.
        assert_eq!(
            services_table(&[("s.a".to_string(), true, false)]),
            "Service  Startup  Current   Notes\ns.a      enabled  inactive  -\n"
        );
    }
}
