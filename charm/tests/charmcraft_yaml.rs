//! charmcraft.yaml, the recipe Juju reads, agrees with the code: options
//! (names, order, types, defaults, descriptions), actions, the peer
//! endpoint, the storage, the resource, and the part that installs the binary
//! as `dispatch`.
//!
//! The `config:` section is config.rs's table rendered; after changing the
//! table, `PGPILOT_CHARM_BLESS=1 cargo nextest run -p pgpilot-charm` writes it.

use pgpilot_charm::actions::ACTIONS;
use pgpilot_charm::config::{DefaultValue, OPTIONS};
use pgpilot_charm::context::{DATA_STORAGE, PEER_ENDPOINT};
use pgpilot_charm::observe::SNAP_RESOURCE;
use serde_norway::Value;

const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charmcraft.yaml");
const CONFIG_SECTION: &str = "\nconfig:\n  options:\n";

fn recipe() -> Value {
    let text = std::fs::read_to_string(RECIPE).expect("charm/charmcraft.yaml");
    serde_norway::from_str(&text).expect("charmcraft.yaml is YAML")
}

/// The options as charmcraft.yaml writes them: JSON's quoting is YAML's
/// double-quoted style; floats keep their point (`100000.0`), so that
/// charmcraft reads a float default for a float option.
fn rendered_options() -> String {
    let mut out = String::new();
    for o in OPTIONS {
        out.push_str(&format!(
            "    {}:\n      type: {}\n",
            o.name,
            o.kind.as_str()
        ));
        let default = match o.default {
            DefaultValue::None => None,
            DefaultValue::Str(v) => Some(serde_json::to_string(v).unwrap()),
            DefaultValue::Int(v) => Some(v.to_string()),
            DefaultValue::Float(v) => Some(format!("{v:?}")),
            DefaultValue::Bool(v) => Some(v.to_string()),
        };
        if let Some(d) = default {
            out.push_str(&format!("      default: {d}\n"));
        }
        let description = serde_json::to_string(o.description).unwrap();
        out.push_str(&format!("      description: {description}\n"));
    }
    out
}

#[test]
fn the_config_section_is_the_table_rendered() {
    let text = std::fs::read_to_string(RECIPE).expect("charm/charmcraft.yaml");
    let at = text
        .find(CONFIG_SECTION)
        .expect("a config: options: section")
        + CONFIG_SECTION.len();
    let want = rendered_options();
    if std::env::var_os("PGPILOT_CHARM_BLESS").is_some() {
        std::fs::write(RECIPE, format!("{}{want}", &text[..at])).expect("write charmcraft.yaml");
        return;
    }
    assert!(
        text[at..] == want,
        "charmcraft.yaml's options differ from config.rs: run PGPILOT_CHARM_BLESS=1 cargo nextest run -p pgpilot-charm"
    );
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |node, key| {
        node.get(*key)
            .unwrap_or_else(|| panic!("charmcraft.yaml lacks {}", path.join(".")))
    })
}

#[test]
fn identity_and_build() {
    let r = recipe();
    assert_eq!(s(&r, &["name"]).as_str(), Some("postgresql"));
    assert_eq!(s(&r, &["type"]).as_str(), Some("charm"));
    assert_eq!(s(&r, &["base"]).as_str(), Some("ubuntu@24.04"));
    let platforms = s(&r, &["platforms"]).as_mapping().unwrap();
    let names: Vec<&str> = platforms.keys().filter_map(Value::as_str).collect();
    assert_eq!(names, vec!["amd64", "arm64"]);
    let part = s(&r, &["parts", "charm"]);
    assert_eq!(s(part, &["plugin"]).as_str(), Some("rust"));
    assert_eq!(
        s(part, &["rust-path"]).as_sequence().unwrap()[0].as_str(),
        Some("charm")
    );
    // The binary cargo installs is the one organized to `dispatch`.
    assert_eq!(
        s(part, &["organize", "bin/pgpilot-charm"]).as_str(),
        Some("dispatch")
    );
    assert_eq!(env!("CARGO_PKG_NAME"), "pgpilot-charm");
}

#[test]
fn options_match_config_rs() {
    let r = recipe();
    let options = s(&r, &["config", "options"]).as_mapping().unwrap();
    let names: Vec<&str> = options.keys().filter_map(Value::as_str).collect();
    let expected: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
    assert_eq!(names, expected, "same options, same order");
    for o in OPTIONS {
        let y = &options[o.name];
        assert_eq!(
            s(y, &["type"]).as_str(),
            Some(o.kind.as_str()),
            "{}",
            o.name
        );
        let d = y.get("default");
        match o.default {
            DefaultValue::None => assert!(d.is_none(), "{} has no default", o.name),
            DefaultValue::Str(v) => assert_eq!(d.and_then(Value::as_str), Some(v), "{}", o.name),
            DefaultValue::Int(v) => assert_eq!(d.and_then(Value::as_i64), Some(v), "{}", o.name),
            DefaultValue::Float(v) => assert_eq!(d.and_then(Value::as_f64), Some(v), "{}", o.name),
            DefaultValue::Bool(v) => assert_eq!(d.and_then(Value::as_bool), Some(v), "{}", o.name),
        }
        assert_eq!(
            y.get("description").and_then(Value::as_str),
            Some(o.description),
            "{}",
            o.name
        );
    }
    // Today's names that existing bundles set.
    for kept in [
        "synchronous_node_count",
        "profile",
        "memory_shared_buffers",
        "system-users",
        "plugin_audit_enable",
        "optimizer_pg_stat_statements_track",
        "ldap_map",
    ] {
        assert!(names.contains(&kept), "{kept}");
    }
}

#[test]
fn actions_relations_storage_resources() {
    let r = recipe();
    let actions = s(&r, &["actions"]).as_mapping().unwrap();
    let mut names: Vec<&str> = actions.keys().filter_map(Value::as_str).collect();
    names.sort();
    assert_eq!(names, ACTIONS);
    let promote = s(&r, &["actions", "promote-to-primary", "params"]);
    assert_eq!(s(promote, &["scope", "default"]).as_str(), Some("unit"));
    assert_eq!(s(promote, &["force", "type"]).as_str(), Some("boolean"));
    assert_eq!(
        s(&r, &["peers", PEER_ENDPOINT, "interface"]).as_str(),
        Some("postgresql_peers")
    );
    assert_eq!(
        s(&r, &["storage", DATA_STORAGE, "type"]).as_str(),
        Some("filesystem")
    );
    assert_eq!(
        s(&r, &["storage", DATA_STORAGE, "location"]).as_str(),
        Some("/var/snap/charmed-postgresql/common/var/lib/postgresql")
    );
    assert_eq!(
        s(&r, &["resources", SNAP_RESOURCE, "type"]).as_str(),
        Some("file")
    );
    assert_eq!(
        s(&r, &["resources", SNAP_RESOURCE, "filename"]).as_str(),
        Some("charmed-postgresql.snap")
    );
}
