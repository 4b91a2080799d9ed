//! docs/charm.md's option tables agree with config.rs: every option is
//! there, and the ones that restart PostgreSQL are marked **restart** (and
//! only those).

use pgpilot_charm::config::OPTIONS;

fn charm_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/charm.md"))
        .expect("docs/charm.md")
}

/// What a table says about `option`: from its name to the next entry of a
/// grouped row (`; `), or to the end of its row.
fn entry<'a>(doc: &'a str, option: &str) -> Option<&'a str> {
    let name = format!("`{option}`");
    doc.lines().filter(|l| l.starts_with('|')).find_map(|line| {
        let at = line.find(&name)?;
        let rest = &line[at + name.len()..];
        let end = rest.find("; `").unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

#[test]
fn every_option_is_in_the_tables_and_restarts_are_marked() {
    let doc = charm_md();
    for o in OPTIONS {
        let Some(e) = entry(&doc, o.name) else {
            panic!("docs/charm.md has no table entry for `{}`", o.name);
        };
        if !o.name.starts_with("plugin_") && !o.name.starts_with("optimizer_enable_") {
            assert_eq!(
                e.contains("**restart**"),
                o.restart,
                "{}: docs/charm.md says whether it restarts PostgreSQL",
                o.name
            );
        }
    }
}

#[test]
fn not_built_yet_names_what_is_accepted_but_not_honoured() {
    let doc = charm_md();
    let at = doc
        .find("## Not built yet")
        .expect("a Not built yet section");
    let section = &doc[at..];
    for what in [
        "LDAP",
        "pgaudit",
        "PostGIS",
        "TimescaleDB",
        "pgvector",
        "Locales",
    ] {
        assert!(section.contains(what), "Not built yet mentions {what}");
    }
}
