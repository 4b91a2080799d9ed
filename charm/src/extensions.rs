//! The extensions of the `plugin_<x>_enable` options, as the primary's
//! PostgreSQL has them: what is read (which databases, which extensions each
//! has, which of those other objects depend on), the SQL that reads and
//! changes them, and `psql`'s argv. Plain data and text: [`crate::observe`]
//! reads, [`crate::reconcile`] decides, [`crate::apply`] runs the SQL.
//!
//! As today's charm does, the options own the extensions they name in every
//! database that is not a template: enabled, created where missing; disabled,
//! dropped where present (never with CASCADE: an extension other objects
//! still use is left, and the unit says so).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::config::Extensions;
use crate::context::Event;

/// What the leader read on the primary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtensionsView {
    /// database → the extensions it has (`pg_extension`).
    pub installed: BTreeMap<String, BTreeSet<String>>,
    /// database → its extensions that objects outside them depend on: a
    /// `DROP EXTENSION` of one would fail.
    pub in_use: BTreeMap<String, BTreeSet<String>>,
}

/// The databases the extensions go in: every one that is not a template and
/// accepts connections (today's charm: every non-template database).
pub const DATABASES_SQL: &str = "SELECT coalesce(json_agg(datname ORDER BY datname), '[]') \
FROM pg_database WHERE NOT datistemplate AND datallowconn;\n";

/// One database's extensions, and those that other objects use: objects
/// that depend (normally) on one of its members or on what belongs to a
/// member (an array type, an index). Objects of other extensions do not
/// count: the decision orders the drops of the extensions it manages
/// (earthdistance before cube).
pub const STATE_SQL: &str = "\
WITH RECURSIVE owned(extname, classid, objid) AS (
    SELECT e.extname, d.classid, d.objid
      FROM pg_extension e
      JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass
                      AND d.refobjid = e.oid AND d.deptype = 'e'
    UNION
    SELECT o.extname, d.classid, d.objid
      FROM owned o
      JOIN pg_depend d ON d.refclassid = o.classid AND d.refobjid = o.objid
                      AND d.deptype IN ('i', 'a')
), used AS (
    SELECT o.extname
      FROM owned o
      JOIN pg_depend d ON d.refclassid = o.classid AND d.refobjid = o.objid
                      AND d.deptype = 'n'
     WHERE NOT EXISTS (SELECT 1 FROM owned x WHERE x.classid = d.classid AND x.objid = d.objid)
)
SELECT json_build_object(
    'installed', (SELECT coalesce(json_agg(extname ORDER BY extname), '[]') FROM pg_extension),
    'in_use', (SELECT coalesce(json_agg(DISTINCT extname), '[]') FROM used));
";

/// `psql`'s argv for `database` on the primary, as the superuser (its
/// password goes in PGPASSWORD, the SQL on stdin). The database is given as
/// a connection string, so that no name is read as one.
pub fn psql_args(host: &str, port: u16, database: &str) -> Vec<String> {
    let quoted = database.replace('\\', "\\\\").replace('\'', "\\'");
    [
        "-h",
        host,
        "-p",
        &port.to_string(),
        "-U",
        "operator",
        "-d",
        &format!("dbname='{quoted}'"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("psql printed something else than the JSON asked for: {0}")]
pub struct ParseError(String);

pub fn parse_databases(out: &str) -> Result<Vec<String>, ParseError> {
    serde_json::from_str(out.trim()).map_err(|e| ParseError(e.to_string()))
}

/// One database's (installed, in use) extensions.
pub fn parse_state(out: &str) -> Result<(BTreeSet<String>, BTreeSet<String>), ParseError> {
    #[derive(Deserialize)]
    struct State {
        installed: BTreeSet<String>,
        in_use: BTreeSet<String>,
    }
    let s: State = serde_json::from_str(out.trim()).map_err(|e| ParseError(e.to_string()))?;
    Ok((s.installed, s.in_use))
}

/// The SQL that makes one database's extensions right: one transaction,
/// drops first (dependents before what they need), then creates.
pub fn change_sql(create: &[String], drop: &[String]) -> String {
    let ident = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut sql = String::from("BEGIN;\n");
    for e in drop {
        sql.push_str(&format!("DROP EXTENSION IF EXISTS {};\n", ident(e)));
    }
    for e in create {
        sql.push_str(&format!("CREATE EXTENSION IF NOT EXISTS {};\n", ident(e)));
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// How the app bag ([`crate::peer::APP_EXTENSIONS`]) records that every
/// database has what `desired` asks: the JSON list of the extensions that
/// exist (`[]` when none; never empty, as an empty value deletes the key).
/// The key is absent until the leader has seen the databases agree, and
/// removed while they do not (a drop waits for objects that use it).
pub fn record(desired: &Extensions) -> String {
    let on: Vec<&str> = desired
        .iter()
        .filter(|(_, on)| **on)
        .map(|(name, _)| *name)
        .collect();
    serde_json::to_string(&on).expect("a list of names")
}

/// Are the databases worth reading in this hook? Only the leader changes
/// extensions, and it reads only until it has seen them agree with what the
/// options ask (the record) — and again at config-changed, when an operator
/// acted (a database created since gets its extensions then).
pub fn worth_reading(
    is_leader: bool,
    event: &Event,
    desired: Option<&Extensions>,
    recorded: Option<&str>,
) -> bool {
    let Some(desired) = desired else {
        return false; // a bad config: nothing is applied
    };
    is_leader
        && (matches!(event, Event::ConfigChanged) || recorded != Some(record(desired).as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_names_the_database_by_a_connection_string() {
        let args = psql_args("10.0.0.1", 5432, "it's a \\ db=x");
        let d = args.iter().position(|a| a == "-d").unwrap();
        assert_eq!(args[d + 1], r"dbname='it\'s a \\ db=x'");
        assert!(args.contains(&"ON_ERROR_STOP=1".to_string()));
        assert!(args.contains(&"-X".to_string()), "no psqlrc");
    }

    #[test]
    fn change_sql_is_one_transaction_drops_first() {
        assert_eq!(
            change_sql(&["cube".into(), "uuid-ossp".into()], &["pg_trgm".into()]),
            "BEGIN;\nDROP EXTENSION IF EXISTS \"pg_trgm\";\nCREATE EXTENSION IF NOT EXISTS \"cube\";\nCREATE EXTENSION IF NOT EXISTS \"uuid-ossp\";\nCOMMIT;\n"
        );
    }

    #[test]
    fn parses_what_psql_prints() {
        assert_eq!(
            parse_databases("[\"app\", \"postgres\"]\n").unwrap(),
            ["app", "postgres"]
        );
        let (installed, in_use) =
            parse_state("{\"installed\" : [\"citext\", \"plpgsql\"], \"in_use\" : [\"citext\"]}\n")
                .unwrap();
        assert_eq!(installed.len(), 2);
        assert!(in_use.contains("citext"));
        assert!(parse_state("psql: error: connection refused").is_err());
    }

    #[test]
    fn reading_is_for_the_leader_until_the_databases_agree() {
        let none = Extensions::from([("citext", false)]);
        let citext = Extensions::from([("citext", true)]);
        assert_eq!(record(&none), "[]");
        assert_eq!(record(&citext), "[\"citext\"]");
        let update = Event::UpdateStatus;
        let config = Event::ConfigChanged;
        let rows = [
            (
                "agreeing databases are not read at update-status",
                true,
                &update,
                Some(&none),
                Some("[]"),
                false,
            ),
            (
                "not seen agreeing yet (a new cluster): read once",
                true,
                &update,
                Some(&none),
                None,
                true,
            ),
            (
                "the options ask for an extension: read",
                true,
                &update,
                Some(&citext),
                Some("[]"),
                true,
            ),
            (
                "what the leader made exist is what is asked",
                true,
                &update,
                Some(&citext),
                Some("[\"citext\"]"),
                false,
            ),
            (
                "an option turned off: read",
                true,
                &update,
                Some(&none),
                Some("[\"citext\"]"),
                true,
            ),
            (
                "config-changed reads (new databases)",
                true,
                &config,
                Some(&none),
                Some("[]"),
                true,
            ),
            (
                "a non-leader never reads",
                false,
                &config,
                Some(&citext),
                None,
                false,
            ),
            (
                "a bad config reads nothing",
                true,
                &config,
                None,
                None,
                false,
            ),
        ];
        for (name, leader, event, desired, recorded, want) in rows {
            assert_eq!(
                worth_reading(leader, event, desired, recorded),
                want,
                "{name}"
            );
        }
    }
}
