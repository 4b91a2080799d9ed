//! Rendering of postgresql.conf, pg_hba.conf and the standby settings.
//!
//! initdb's own postgresql.conf is kept as `postgresql.base.conf` and included
//! first; pgpilot's file then sets defaults, cluster-wide and local parameters,
//! and last the values pgpilot owns (ports, sockets, replication source).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::{Config, ParamValue};

pub const BASE_CONF: &str = "postgresql.base.conf";

/// Defaults an HA member needs; the operator may override any of them.
fn defaults() -> BTreeMap<String, ParamValue> {
    let mut d = BTreeMap::new();
    let mut set = |k: &str, v: ParamValue| {
        d.insert(k.to_string(), v);
    };
    set("wal_level", ParamValue::Text("replica".into()));
    set("hot_standby", ParamValue::Bool(true));
    set("max_wal_senders", ParamValue::Int(10));
    set("max_replication_slots", ParamValue::Int(10));
    set("wal_log_hints", ParamValue::Bool(true));
    set("wal_keep_size", ParamValue::Text("128MB".into()));
    // The most WAL a replication slot may hold: the leader keeps a departed
    // member's slot for member_slots_ttl, and a dead member must not fill
    // the disk meanwhile (PostgreSQL invalidates a slot past it).
    set("max_slot_wal_keep_size", ParamValue::Text("8GB".into()));
    set(
        "password_encryption",
        ParamValue::Text("scram-sha-256".into()),
    );
    set("max_connections", ParamValue::Int(100));
    d
}

/// Parameters from outside the member file, in order of precedence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters {
    /// Cluster-wide settings from the store; the member file overrides them.
    pub cluster: BTreeMap<String, ParamValue>,
    /// What the HA state dictates (synchronous_standby_names); overrides the file.
    pub ha: BTreeMap<String, ParamValue>,
}

/// archive_command / restore_command calling this pgpilot binary with the
/// member's own configuration file.
pub struct WalCommands {
    pub archive: String,
    pub restore: String,
}

impl WalCommands {
    pub fn for_config(config: &Config) -> Option<WalCommands> {
        config.backup.as_ref()?;
        let source = config.source.as_ref()?;
        let exe = pgpilot_exe().ok()?;
        let base = format!(
            "{} {{verb}} --config {}",
            shell_word(&exe.display().to_string()),
            shell_word(&source.display().to_string())
        );
        Some(WalCommands {
            archive: format!("{} %p", base.replace("{verb}", "archive-push")),
            restore: format!("{} %f %p", base.replace("{verb}", "archive-get")),
        })
    }
}

/// The pgpilot binary's path, for commands PostgreSQL runs later. When
/// the file was replaced while this process runs (an upgrade, a rebuild),
/// Linux reports the old inode as `<path> (deleted)`: the path itself,
/// where the new binary now is, is what PostgreSQL must call.
pub fn pgpilot_exe() -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let replaced = exe
        .to_str()
        .and_then(|s| s.strip_suffix(" (deleted)"))
        .map(std::path::PathBuf::from);
    Ok(replaced.unwrap_or(exe))
}

/// Quote for the shell PostgreSQL runs these commands with.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Where a replica streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

/// Replication slot name for a member: PostgreSQL allows [a-z0-9_] only.
pub fn slot_name(member: &str) -> String {
    member
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The replication role's line for the password file `primary_conninfo`
/// names ([`Config::replication_passfile`]), in libpq's pgpass format
/// (`host:port:database:user:password`, `:` and `\` escaped).
pub fn render_pgpass(config: &Config) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let repl = &config.postgresql.authentication.replication;
    format!(
        "*:*:*:{}:{}\n",
        escape(&repl.username),
        escape(&repl.password)
    )
}

/// The full postgresql.conf text. `upstream`: Some for a replica that streams.
pub fn render_postgresql_conf(
    config: &Config,
    parameters: &Parameters,
    upstream: Option<&Upstream>,
) -> String {
    let pg = &config.postgresql;
    let mut params = defaults();
    params.extend(parameters.cluster.clone());
    params.extend(pg.parameters.clone());
    params.extend(parameters.ha.clone());
    params.insert(
        "listen_addresses".into(),
        ParamValue::Text(pg.listen.clone()),
    );
    params.insert("port".into(), ParamValue::Int(pg.port.into()));
    params.insert(
        "unix_socket_directories".into(),
        ParamValue::Text(pg.socket_dir.display().to_string()),
    );
    params.insert(
        "cluster_name".into(),
        ParamValue::Text(config.cluster.name.clone()),
    );
    if let Some(tls) = &pg.tls {
        let path = |p: &std::path::Path| ParamValue::Text(p.display().to_string());
        params.insert("ssl".into(), ParamValue::Bool(true));
        params.insert("ssl_cert_file".into(), path(&tls.cert_file));
        params.insert("ssl_key_file".into(), path(&tls.key_file));
        if let Some(ca) = &tls.ca_file {
            params.insert("ssl_ca_file".into(), path(ca));
        }
    }
    if let Some(commands) = WalCommands::for_config(config) {
        // WAL goes to the backup repository through pgpilot itself; an
        // operator may still choose archive_mode = always.
        params
            .entry("archive_mode".into())
            .or_insert(ParamValue::Bool(true));
        params.insert("archive_command".into(), ParamValue::Text(commands.archive));
        params.insert("restore_command".into(), ParamValue::Text(commands.restore));
    }
    if let Some(up) = upstream {
        let repl = &pg.authentication.replication;
        // The password is in the passfile: a new one needs no change here
        // (the WAL receiver reads the file when it connects), and
        // PostgreSQL never logs it ("parameter primary_conninfo changed to").
        let conninfo = format!(
            "host={} port={} user={} passfile={} application_name={} sslmode=prefer connect_timeout=5",
            conninfo_quote(&up.host),
            up.port,
            conninfo_quote(&repl.username),
            conninfo_quote(&config.replication_passfile().display().to_string()),
            conninfo_quote(&config.cluster.name),
        );
        params.insert("primary_conninfo".into(), ParamValue::Text(conninfo));
        params.insert(
            "primary_slot_name".into(),
            ParamValue::Text(slot_name(&config.cluster.name)),
        );
        // recovery_target_timeline is left at its default, 'latest': writing
        // it would make a promoted leader report a pending restart.
    }

    let mut out = String::new();
    out.push_str("# Written by pgpilot; edits are overwritten. Change settings with\n");
    out.push_str("# `pgpilot ctl edit-config` (cluster-wide) or the member's TOML file.\n");
    let _ = writeln!(out, "include '{BASE_CONF}'");
    for (name, value) in &params {
        let _ = writeln!(out, "{name} = {}", value.to_conf());
    }
    out
}

/// pg_hba.conf: the operator's lines, or password rules for the pgpilot
/// roles (`hostssl` for TCP when `[postgresql.tls]` is set: a remote login
/// without TLS matches no line and is refused).
pub fn render_pg_hba(config: &Config) -> String {
    let mut out = String::from("# Written by pgpilot; set postgresql.pg_hba to change it.\n");
    if config.postgresql.pg_hba.is_empty() {
        let repl = &config.postgresql.authentication.replication.username;
        let host = if config.postgresql.tls.is_some() {
            "hostssl"
        } else {
            "host"
        };
        out.push_str("local   all          all                       scram-sha-256\n");
        for (database, user) in [("replication", repl.as_str()), ("all", "all")] {
            for net in ["0.0.0.0/0", "::/0"] {
                let _ = writeln!(
                    out,
                    "{host:<7} {database:<12} {user:<12} {net:<14} scram-sha-256"
                );
            }
        }
    } else {
        for line in &config.postgresql.pg_hba {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The settings of a recovery (restore_command, recovery_target_*): a
/// restore appends them to postgresql.auto.conf, and they are commented out
/// once recovery is over.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
];

/// Is this postgresql.auto.conf line one of the recovery settings?
pub fn is_recovery_setting(line: &str) -> bool {
    let name = line
        .split(['=', ' ', '\t'])
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    RECOVERY_SETTINGS.contains(&name.as_str())
}

/// `existing` with its recovery settings commented out, each with `why`.
pub fn comment_out_recovery_settings(existing: &str, why: &str) -> String {
    let mut out = String::new();
    for line in existing.lines() {
        if is_recovery_setting(line) {
            out.push_str(&format!("# {why}: {line}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            crate::config::tests_support::EXAMPLE,
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn local_parameters_override_cluster_ones_and_managed_win() {
        let cfg = config();
        let mut params = Parameters::default();
        params
            .cluster
            .insert("max_connections".to_string(), ParamValue::Int(500));
        params
            .cluster
            .insert("work_mem".to_string(), ParamValue::Text("8MB".into()));
        params.ha.insert(
            "synchronous_standby_names".to_string(),
            ParamValue::Text("*".into()),
        );
        let text = render_postgresql_conf(&cfg, &params, None);
        assert!(text.contains("max_connections = 50\n"), "{text}");
        assert!(text.contains("work_mem = '8MB'\n"));
        assert!(text.contains("synchronous_standby_names = '*'\n"));
        assert!(text.contains("port = 5432\n"));
        assert!(text.starts_with("#"));
        assert!(!text.contains("primary_conninfo"));
    }

    #[test]
    fn replica_gets_conninfo_and_slot() {
        let cfg = config();
        let up = Upstream {
            host: "10.0.0.2".into(),
            port: 5433,
        };
        let text = render_postgresql_conf(&cfg, &Parameters::default(), Some(&up));
        assert!(text.contains("primary_slot_name = 'pg1'"));
        assert!(text.contains("host=''10.0.0.2'' port=5433"), "{text}");
        // The password stays out of postgresql.conf (and PostgreSQL's log).
        assert!(!text.contains("secret2"), "{text}");
        assert!(
            text.contains("passfile=''/var/lib/pgpilot/pg1.pgpilot-pgpass''"),
            "{text}"
        );
    }

    #[test]
    fn the_passfile_escapes_what_pgpass_reads_as_syntax() {
        let mut cfg = config();
        assert_eq!(render_pgpass(&cfg), "*:*:*:replicator:secret2\n");
        cfg.postgresql.authentication.replication.password = r"a:b\c".into();
        assert_eq!(render_pgpass(&cfg), "*:*:*:replicator:a\\:b\\\\c\n");
    }

    #[test]
    fn backup_section_routes_wal_through_pgpilot() {
        let text = format!(
            "{}\n[backup]\nrepository = \"posix\"\n[backup.posix]\npath = \"/srv/repo\"\n",
            crate::config::tests_support::EXAMPLE
        );
        let mut cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        cfg.source = Some("/etc/pgpilot/my member.toml".into());
        let conf = render_postgresql_conf(&cfg, &Parameters::default(), None);
        assert!(conf.contains("archive_mode = on\n"), "{conf}");
        assert!(
            conf.contains(" archive-push --config ''/etc/pgpilot/my member.toml'' %p'"),
            "{conf}"
        );
        assert!(conf.contains(" archive-get --config ''/etc/pgpilot/my member.toml'' %f %p'"));
        let plain = render_postgresql_conf(&config(), &Parameters::default(), None);
        assert!(!plain.contains("archive_command"));
    }

    #[test]
    fn tls_turns_ssl_on_and_remote_rules_into_hostssl() {
        let mut cfg = config();
        let plain_hba = render_pg_hba(&cfg);
        assert!(plain_hba
            .contains("\nhost    all          all          0.0.0.0/0      scram-sha-256\n"));
        assert!(!plain_hba.contains("hostssl"));
        assert!(!render_postgresql_conf(&cfg, &Parameters::default(), None).contains("ssl"));
        cfg.postgresql.tls = Some(crate::config::PostgresTls {
            cert_file: "/tls/cert.pem".into(),
            key_file: "/tls/key.pem".into(),
            ca_file: Some("/tls/ca.pem".into()),
        });
        let conf = render_postgresql_conf(&cfg, &Parameters::default(), None);
        for line in [
            "ssl = on\n",
            "ssl_cert_file = '/tls/cert.pem'\n",
            "ssl_key_file = '/tls/key.pem'\n",
            "ssl_ca_file = '/tls/ca.pem'\n",
        ] {
            assert!(conf.contains(line), "{line}: {conf}");
        }
        let hba = render_pg_hba(&cfg);
        assert_eq!(
            hba.lines().filter(|l| l.starts_with("hostssl ")).count(),
            4,
            "{hba}"
        );
        assert!(!hba.lines().any(|l| l.starts_with("host ")), "{hba}");
        // The local socket is unchanged.
        assert!(hba.contains("\nlocal   all          all                       scram-sha-256\n"));
    }

    #[test]
    fn slot_names_are_sanitized() {
        assert_eq!(slot_name("PG-1.a"), "pg_1_a");
    }
}
