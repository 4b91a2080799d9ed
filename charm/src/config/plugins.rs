//! The `plugin_<name>_enable` options (today's charm's names and defaults):
//! which extensions each one creates, and whether the snap's PostgreSQL has
//! them. The snap ships Debian's (Ubuntu's) server package, which carries
//! contrib; the rest (PostGIS, TimescaleDB, pgvector, pgaudit, the
//! procedural languages, ...) are separate packages the snap does not stage.
//!
//! The decision: an extension the snap has is created (option true) or
//! dropped (false) in every database ([`crate::reconcile`]); one it lacks
//! blocks when enabled — unless `true` is the option's default
//! (`plugin_audit_enable`), which is accepted with a note so that a default
//! deploy is not blocked.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{shown, ConfigError};

/// extension → should it exist, for every extension the snap ships that an
/// option manages.
pub type Extensions = BTreeMap<&'static str, bool>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plugin {
    pub option: &'static str,
    /// The extensions it creates, in creation order.
    pub extensions: &'static [&'static str],
    /// The snap's PostgreSQL has them.
    pub in_snap: bool,
    /// Plugin options that must be true with it (its extension needs theirs).
    pub requires: &'static [&'static str],
}

const fn has(option: &'static str, extensions: &'static [&'static str]) -> Plugin {
    Plugin {
        option,
        extensions,
        in_snap: true,
        requires: &[],
    }
}

const fn lacks(option: &'static str, extension: &'static [&'static str]) -> Plugin {
    Plugin {
        option,
        extensions: extension,
        in_snap: false,
        requires: &[],
    }
}

/// Every plugin option, in charmcraft.yaml's order, which is also the order
/// extensions are created in (one another needs comes first: cube before
/// earthdistance) and the reverse of the order they are dropped in.
#[rustfmt::skip]
pub const PLUGINS: &[Plugin] = &[
    lacks("plugin_address_standardizer_data_us_enable", &["address_standardizer_data_us"]),
    lacks("plugin_address_standardizer_enable", &["address_standardizer"]),
    lacks("plugin_audit_enable", &["pgaudit"]),
    has("plugin_bloom_enable", &["bloom"]),
    lacks("plugin_bool_plperl_enable", &["bool_plperl"]),
    has("plugin_btree_gin_enable", &["btree_gin"]),
    has("plugin_btree_gist_enable", &["btree_gist"]),
    has("plugin_citext_enable", &["citext"]),
    has("plugin_cube_enable", &["cube"]),
    lacks("plugin_debversion_enable", &["debversion"]),
    has("plugin_dict_int_enable", &["dict_int"]),
    has("plugin_dict_xsyn_enable", &["dict_xsyn"]),
    Plugin { requires: &["plugin_cube_enable"], ..has("plugin_earthdistance_enable", &["earthdistance"]) },
    has("plugin_fuzzystrmatch_enable", &["fuzzystrmatch"]),
    lacks("plugin_hll_enable", &["hll"]),
    has("plugin_hstore_enable", &["hstore"]),
    lacks("plugin_hypopg_enable", &["hypopg"]),
    lacks("plugin_icu_ext_enable", &["icu_ext"]),
    has("plugin_intarray_enable", &["intarray"]),
    lacks("plugin_ip4r_enable", &["ip4r"]),
    has("plugin_isn_enable", &["isn"]),
    lacks("plugin_jsonb_plperl_enable", &["jsonb_plperl"]),
    has("plugin_lo_enable", &["lo"]),
    has("plugin_ltree_enable", &["ltree"]),
    has("plugin_old_snapshot_enable", &["old_snapshot"]),
    lacks("plugin_orafce_enable", &["orafce"]),
    has("plugin_pg_freespacemap_enable", &["pg_freespacemap"]),
    lacks("plugin_pg_similarity_enable", &["pg_similarity"]),
    has("plugin_pg_trgm_enable", &["pg_trgm"]),
    has("plugin_pg_visibility_enable", &["pg_visibility"]),
    has("plugin_pgrowlocks_enable", &["pgrowlocks"]),
    has("plugin_pgstattuple_enable", &["pgstattuple"]),
    has("plugin_pg_stat_statements_enable", &["pg_stat_statements"]),
    lacks("plugin_plperl_enable", &["plperl"]),
    lacks("plugin_plpython3u_enable", &["plpython3u"]),
    lacks("plugin_pltcl_enable", &["pltcl"]),
    lacks("plugin_postgis_enable", &["postgis"]),
    lacks("plugin_postgis_raster_enable", &["postgis_raster"]),
    lacks("plugin_postgis_tiger_geocoder_enable", &["postgis_tiger_geocoder"]),
    lacks("plugin_postgis_topology_enable", &["postgis_topology"]),
    lacks("plugin_prefix_enable", &["prefix"]),
    lacks("plugin_rdkit_enable", &["rdkit"]),
    has("plugin_seg_enable", &["seg"]),
    has("plugin_spi_enable", &["refint", "autoinc", "insert_username", "moddatetime"]),
    has("plugin_tablefunc_enable", &["tablefunc"]),
    has("plugin_tcn_enable", &["tcn"]),
    lacks("plugin_tds_fdw_enable", &["tds_fdw"]),
    lacks("plugin_timescaledb_enable", &["timescaledb"]),
    has("plugin_tsm_system_rows_enable", &["tsm_system_rows"]),
    has("plugin_tsm_system_time_enable", &["tsm_system_time"]),
    has("plugin_unaccent_enable", &["unaccent"]),
    has("plugin_uuid_ossp_enable", &["uuid-ossp"]),
    lacks("plugin_vector_enable", &["vector"]),
];

pub fn plugin(option: &str) -> Option<&'static Plugin> {
    PLUGINS.iter().find(|p| p.option == option)
}

/// The option that manages an extension.
pub fn option_of(extension: &str) -> Option<&'static str> {
    PLUGINS
        .iter()
        .find(|p| p.extensions.contains(&extension))
        .map(|p| p.option)
}

/// Every extension the charm manages, in creation order.
pub fn creation_order() -> impl Iterator<Item = &'static str> {
    PLUGINS
        .iter()
        .filter(|p| p.in_snap)
        .flat_map(|p| p.extensions.iter().copied())
}

/// What the plugin options ask for, given each option's (type-checked)
/// value: the extensions that should and should not exist, and notes for
/// values accepted although they do nothing.
pub fn desired(value: &dyn Fn(&str) -> Value) -> Result<(Extensions, Vec<String>), ConfigError> {
    let enabled = |option: &str| value(option).as_bool().unwrap_or(false);
    let mut extensions = Extensions::new();
    let mut notes = Vec::new();
    for p in PLUGINS {
        let v = value(p.option);
        let on = enabled(p.option);
        let err = |requirement: String| ConfigError {
            option: p.option.to_string(),
            value: shown(&v),
            requirement,
        };
        let names = p.extensions.join(", ");
        if !p.in_snap {
            let default_on =
                super::spec(p.option).is_some_and(|o| o.default == super::DefaultValue::Bool(true));
            match (on, default_on) {
                (false, _) => {}
                (true, true) => notes.push(format!(
                    "{}=true: extension {names} is not in this snap; nothing is created (set it to false to say so)",
                    p.option
                )),
                (true, false) => {
                    return Err(err(format!("extension {names} is not in this snap")));
                }
            }
            continue;
        }
        if on {
            if let Some(missing) = p.requires.iter().find(|r| !enabled(r)) {
                return Err(err(format!("needs {missing}=true as well")));
            }
        }
        for e in p.extensions {
            extensions.insert(e, on);
        }
    }
    Ok((extensions, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OptionType, OPTIONS};
    use serde_json::json;

    fn with<'a>(pairs: &'a [(&'a str, bool)]) -> impl Fn(&str) -> Value + 'a {
        move |name: &str| {
            let default = crate::config::spec(name).map(|o| o.default.to_json());
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| json!(v))
                .or(default)
                .unwrap_or(Value::Null)
        }
    }

    #[test]
    fn every_plugin_option_has_a_row_and_every_row_an_option() {
        let options: Vec<&str> = OPTIONS
            .iter()
            .filter(|o| o.name.starts_with("plugin_"))
            .map(|o| o.name)
            .collect();
        let rows: Vec<&str> = PLUGINS.iter().map(|p| p.option).collect();
        assert_eq!(options, rows, "same options, same order");
        for o in OPTIONS.iter().filter(|o| o.name.starts_with("plugin_")) {
            assert_eq!(o.kind, OptionType::Boolean, "{}", o.name);
        }
        for p in PLUGINS {
            for r in p.requires {
                let needed = plugin(r).expect(r);
                let first = PLUGINS.iter().position(|x| x == needed).unwrap();
                let me = PLUGINS.iter().position(|x| x == p).unwrap();
                assert!(first < me, "{} is created before {}", r, p.option);
            }
        }
    }

    #[test]
    fn the_defaults_create_nothing_and_block_nothing() {
        let (extensions, notes) = desired(&with(&[])).unwrap();
        assert!(extensions.values().all(|on| !on), "{extensions:?}");
        // pgaudit is not in the snap; its option's default (true) is noted.
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("plugin_audit_enable=true: extension pgaudit is not in this snap")
        );
        let (_, notes) = desired(&with(&[("plugin_audit_enable", false)])).unwrap();
        assert!(notes.is_empty());
    }

    #[test]
    fn options_map_to_their_extensions() {
        let (e, _) = desired(&with(&[
            ("plugin_uuid_ossp_enable", true),
            ("plugin_spi_enable", true),
            ("plugin_pg_trgm_enable", true),
        ]))
        .unwrap();
        let on: Vec<&str> = e.iter().filter(|(_, on)| **on).map(|(k, _)| *k).collect();
        assert_eq!(
            on,
            [
                "autoinc",
                "insert_username",
                "moddatetime",
                "pg_trgm",
                "refint",
                "uuid-ossp"
            ]
        );
        assert!(!e["citext"], "a disabled extension is managed too: dropped");
        assert!(!e.contains_key("postgis"), "not in the snap: not managed");
    }

    #[test]
    fn an_extension_the_snap_lacks_blocks_when_enabled() {
        for option in [
            "plugin_postgis_enable",
            "plugin_timescaledb_enable",
            "plugin_vector_enable",
        ] {
            let e = desired(&with(&[(option, true)])).unwrap_err();
            let name = plugin(option).unwrap().extensions[0];
            assert_eq!(
                e.to_string(),
                format!("config {option}=true: extension {name} is not in this snap")
            );
        }
    }

    #[test]
    fn an_extension_needs_the_one_it_is_built_on() {
        let e = desired(&with(&[("plugin_earthdistance_enable", true)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config plugin_earthdistance_enable=true: needs plugin_cube_enable=true as well"
        );
        let (e, _) = desired(&with(&[
            ("plugin_earthdistance_enable", true),
            ("plugin_cube_enable", true),
        ]))
        .unwrap();
        assert!(e["earthdistance"] && e["cube"]);
        let order: Vec<&str> = creation_order().collect();
        let pos = |x: &str| order.iter().position(|e| *e == x).unwrap();
        assert!(pos("cube") < pos("earthdistance"));
        assert_eq!(option_of("moddatetime"), Some("plugin_spi_enable"));
    }
}
