//! The member's TOML configuration file: schema, defaults and validation.
//!
//! Every key is declared once here with a `///` line; `docs/configuration.md`
//! documents the same keys for operators. Loading either yields a fully
//! validated [`Config`] or one [`ConfigError`] naming the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dynamic::DynamicConfig;

pub mod backup;
pub mod bootstrap_from;
mod callbacks;
pub mod live;
pub mod managed;
pub mod metrics;
pub mod reload;
pub mod target;
pub use callbacks::{split_words, CallbacksSection, CommandLine};
pub use live::LiveConfig;

/// Why a configuration file was refused. Always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}, line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("configuration file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The key this error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The error as text, without its message when the key holds a secret
    /// (serde's "invalid type" messages quote the value).
    pub fn redacted(&self) -> String {
        match self {
            ConfigError::Invalid { path, key, .. } if is_secret_key(key) => format!(
                "configuration file {}: key `{key}`: is not valid (value not shown: it is a secret)",
                path.display()
            ),
            other => other.to_string(),
        }
    }
}

/// Keys that hold secrets (`...password`, `...secret_key`): their values
/// never appear in messages.
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.contains("password") || last.contains("secret")
}

/// A value problem found by [`Config::validate`]: key plus explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which cluster this member belongs to and what it is called.
    pub cluster: ClusterSection,
    /// How to reach the etcd cluster.
    pub dcs: DcsSection,
    /// The local PostgreSQL instance.
    pub postgresql: PostgresSection,
    /// The REST API.
    pub api: ApiSection,
    /// Cluster-wide settings seeded into the store's `config` key at bootstrap.
    #[serde(default)]
    pub bootstrap: DynamicConfig,
    /// Member tags that steer failover and load balancing.
    #[serde(default)]
    pub tags: Tags,
    /// Log output.
    #[serde(default)]
    pub log: LogSection,
    /// `GET /metrics`: the monitoring connection and its limits.
    #[serde(default)]
    pub metrics: metrics::MetricsSection,
    /// The backup repository and WAL archiving; absent: no archiving.
    #[serde(default)]
    pub backup: Option<backup::BackupSection>,
    /// How the member that bootstraps the cluster creates it: initdb, or a
    /// backup from the repository; absent: initdb.
    #[serde(default)]
    pub bootstrap_from: Option<bootstrap_from::BootstrapFrom>,
    /// The file this configuration was read from (PostgreSQL's archive and
    /// restore commands point pgpilot back at it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name; every member of one cluster uses the same scope.
    pub scope: String,
    /// This member's name, unique within the scope.
    pub name: String,
    /// Top-level etcd key prefix; keys live under `/<namespace>/<scope>/`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DcsSection {
    /// etcd client URLs, e.g. `["http://10.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// etcd user (role-based auth), with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// etcd password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Seconds to wait for a connection to etcd at start.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// TLS towards etcd (https endpoints).
    #[serde(default)]
    pub tls: Option<DcsTls>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DcsTls {
    /// PEM bundle of the CA that signed etcd's server certificates.
    pub ca_file: PathBuf,
    /// Client certificate (PEM) for mutual TLS, with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Server name to verify when it differs from the endpoint's host.
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// Directory with initdb, pg_ctl, postgres, pg_basebackup, pg_controldata, pg_rewind.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// The data directory (PGDATA).
    pub data_dir: PathBuf,
    /// `listen_addresses` for PostgreSQL.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TCP port of PostgreSQL.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// host:port other members and clients use to reach this PostgreSQL.
    pub connect_address: String,
    /// Directory for the Unix socket; pgpilot connects through it.
    #[serde(default = "default_socket_dir")]
    pub socket_dir: PathBuf,
    /// OS user that owns the data directory and runs PostgreSQL when pgpilot runs as root.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// File that receives the postmaster's output; default `<data_dir>.log`.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Seconds allowed for PostgreSQL to start or stop.
    #[serde(default = "default_pg_ctl_timeout")]
    pub pg_ctl_timeout: u64,
    /// Extra arguments for initdb (data checksums are always on).
    #[serde(default)]
    pub initdb: Vec<String>,
    /// Extra arguments for pg_basebackup when cloning a replica.
    #[serde(default)]
    pub basebackup: Vec<String>,
    /// How a new replica is created, tried in order: `"backup"` (the newest
    /// backup of the cluster plus archived WAL, then streaming) and
    /// `"basebackup"` (pg_basebackup from the leader).
    #[serde(default = "default_replica_methods")]
    pub create_replica_methods: Vec<ReplicaMethod>,
    /// Lines of pg_hba.conf; when empty pgpilot renders password (scram) rules.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// Local PostgreSQL parameters; they override the cluster-wide ones.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
    /// Roles pgpilot creates and uses.
    pub authentication: Authentication,
    /// Programs run when PostgreSQL starts, stops, restarts, reloads or
    /// changes role (Patroni's `postgresql.callbacks`).
    #[serde(default)]
    pub callbacks: CallbacksSection,
    /// TLS for client and replication connections over TCP; absent: off.
    #[serde(default)]
    pub tls: Option<PostgresTls>,
}

/// `[postgresql.tls]`: PostgreSQL's `ssl = on` with these files, and
/// `hostssl` instead of `host` in the pg_hba rules pgpilot renders (remote
/// logins without TLS are refused; the local socket is unchanged). The
/// files are read again on SIGHUP (`pgpilot` reloads PostgreSQL), so a
/// renewed certificate needs no restart.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostgresTls {
    /// Server certificate chain (PEM): `ssl_cert_file`.
    pub cert_file: PathBuf,
    /// Its private key (PEM, mode 0600 owned by PostgreSQL's user): `ssl_key_file`.
    pub key_file: PathBuf,
    /// CA bundle (PEM) for client certificates: `ssl_ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// Superuser pgpilot connects as (local socket).
    pub superuser: Credentials,
    /// Role replicas stream with.
    pub replication: Credentials,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Role name.
    pub username: String,
    /// Password (scram-sha-256 is used on the wire).
    pub password: String,
}

/// One way of creating a replica (`postgresql.create_replica_methods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaMethod {
    /// Restore the newest backup of the cluster from the `[backup]`
    /// repository, replay the archived WAL, then stream from the leader.
    Backup,
    /// pg_basebackup from the leader.
    Basebackup,
}

impl ReplicaMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaMethod::Backup => "backup",
            ReplicaMethod::Basebackup => "basebackup",
        }
    }
}

/// A PostgreSQL parameter value as written in TOML or JSON.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl ParamValue {
    /// The value as postgresql.conf wants it (quoted, quotes escaped).
    pub fn to_conf(&self) -> String {
        match self {
            ParamValue::Bool(b) => if *b { "on" } else { "off" }.to_string(),
            ParamValue::Int(i) => i.to_string(),
            ParamValue::Float(f) => f.to_string(),
            ParamValue::Text(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address the REST API listens on.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// host:port other members use to reach this API; default is `listen`.
    #[serde(default)]
    pub connect_address: Option<String>,
    /// User for HTTP Basic auth on unsafe methods (POST, PUT, PATCH, DELETE).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// HTTPS for the REST API; absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<ApiTls>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// Server certificate chain (PEM). Also shown as this member's client
    /// certificate when it calls other members' APIs.
    pub cert_file: PathBuf,
    /// Private key (PEM) of `cert_file`.
    pub key_file: PathBuf,
    /// CA bundle (PEM) that signs client certificates, and that this member
    /// and `pgpilot ctl` trust for other members' API certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificates: `none`, `optional` (needed for unsafe methods
    /// only) or `required` (needed for every request).
    #[serde(default)]
    pub verify_client: VerifyClient,
}

/// When the REST API asks for a client certificate (verified against `api.tls.ca_file`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyClient {
    /// Never: any client may connect.
    #[default]
    None,
    /// Asked for; POST, PUT, PATCH and DELETE are refused (403) without one.
    Optional,
    /// Every connection must present one (the TLS handshake fails without).
    Required,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    /// Never promote this member automatically.
    #[serde(default)]
    pub nofailover: bool,
    /// Exclude from `/replica` load-balancing checks.
    #[serde(default)]
    pub noloadbalance: bool,
    /// Never pick this member as a synchronous standby.
    #[serde(default)]
    pub nosync: bool,
    /// Replicas may clone from this member instead of the leader.
    #[serde(default)]
    pub clonefrom: bool,
    /// Higher wins among equally advanced candidates; 0 means never promote.
    #[serde(default = "default_failover_priority")]
    pub failover_priority: u32,
}

impl Default for Tags {
    fn default() -> Self {
        Tags {
            nofailover: false,
            noloadbalance: false,
            nosync: false,
            clonefrom: false,
            failover_priority: default_failover_priority(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Log level filter: error, warn, info, debug, trace (or a tracing filter string).
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Emit JSON lines instead of text.
    #[serde(default)]
    pub json: bool,
    /// Also append the log to this file (stderr keeps it too).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: default_log_level(),
            json: false,
            file: None,
        }
    }
}

fn default_namespace() -> String {
    "pgpilot".into()
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_bin_dir() -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin")
}
fn default_listen() -> String {
    "127.0.0.1".into()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_socket_dir() -> PathBuf {
    PathBuf::from("/var/run/postgresql")
}
fn default_os_user() -> String {
    "postgres".into()
}
fn default_pg_ctl_timeout() -> u64 {
    60
}
fn default_replica_methods() -> Vec<ReplicaMethod> {
    vec![ReplicaMethod::Basebackup]
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8008))
}
fn default_failover_priority() -> u32 {
    1
}
fn default_log_level() -> String {
    "info".into()
}

/// Names may appear in etcd keys, slot names and URLs: keep them plain.
fn check_name(key: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(key, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(Invalid::new(key, "must be at most 63 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(Invalid::new(
            key,
            format!("{value:?} may only contain letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

fn check_host_port(key: &str, value: &str) -> Result<(), Invalid> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| Invalid::new(key, format!("{value:?} must be host:port")))?;
    if host.is_empty() {
        return Err(Invalid::new(key, format!("{value:?} has an empty host")));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(Invalid::new(
            key,
            format!("{value:?} has an invalid port {port:?}"),
        )),
    }
}

impl Config {
    /// Parse TOML text and validate its values; `path` is only used in
    /// messages. No file is read: [`Config::parse`] and [`Config::load`]
    /// ([`crate::member_file`]) also check the files the values name.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0)
        };
        let deserializer =
            toml::de::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: line_of(e.span()),
                message: e.message().trim().to_string(),
            })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().trim().to_string();
            // serde reports a missing field at its parent: name the field itself.
            let key = match missing_field_name(&message) {
                Some(field) if key == "." => field.to_string(),
                Some(field) => format!("{key}.{field}"),
                None => key,
            };
            ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            }
        })?;
        config.validate().map_err(|inv| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: inv.key,
            message: inv.message,
        })?;
        Ok(config)
    }

    /// Checks that serde cannot express: names, addresses, timing rules.
    ///
    /// Messages never quote a password's value.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("cluster.scope", &self.cluster.scope)?;
        check_name("cluster.name", &self.cluster.name)?;
        check_name("cluster.namespace", &self.cluster.namespace)?;

        if self.dcs.endpoints.is_empty() {
            return Err(Invalid::new("dcs.endpoints", "needs at least one etcd URL"));
        }
        for endpoint in &self.dcs.endpoints {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
                .ok_or_else(|| {
                    Invalid::new(
                        "dcs.endpoints",
                        format!("{endpoint:?} must start with http:// or https://"),
                    )
                })?;
            check_host_port("dcs.endpoints", rest.trim_end_matches('/'))?;
            if endpoint.starts_with("https://") && self.dcs.tls.is_none() {
                return Err(Invalid::new(
                    "dcs.tls",
                    format!("{endpoint:?} uses https: set dcs.tls.ca_file"),
                ));
            }
        }
        if self.dcs.username.is_some() != self.dcs.password.is_some() {
            return Err(Invalid::new(
                "dcs.password",
                "dcs.username and dcs.password must be set together",
            ));
        }
        crate::dynamic::check_seconds(
            "dcs.connect_timeout",
            self.dcs.connect_timeout,
            1,
            crate::dynamic::MAX_LEASE_TTL,
        )?;
        if let Some(tls) = &self.dcs.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(Invalid::new(
                    "dcs.tls.key_file",
                    "dcs.tls.cert_file and dcs.tls.key_file must be set together",
                ));
            }
        }

        let pg = &self.postgresql;
        if !pg.data_dir.is_absolute() {
            return Err(Invalid::new(
                "postgresql.data_dir",
                "must be an absolute path",
            ));
        }
        if !pg.bin_dir.is_absolute() {
            return Err(Invalid::new(
                "postgresql.bin_dir",
                "must be an absolute path",
            ));
        }
        if !pg.socket_dir.is_absolute() {
            return Err(Invalid::new(
                "postgresql.socket_dir",
                "must be an absolute path",
            ));
        }
        if pg.port == 0 {
            return Err(Invalid::new(
                "postgresql.port",
                "must be between 1 and 65535",
            ));
        }
        check_host_port("postgresql.connect_address", &pg.connect_address)?;
        if pg.os_user.is_empty() {
            return Err(Invalid::new("postgresql.os_user", "must not be empty"));
        }
        crate::dynamic::check_seconds(
            "postgresql.pg_ctl_timeout",
            pg.pg_ctl_timeout,
            1,
            crate::dynamic::MAX_LEASE_TTL,
        )?;
        for (role, key) in [
            (&pg.authentication.superuser, "superuser"),
            (&pg.authentication.replication, "replication"),
        ] {
            if role.username.is_empty() {
                return Err(Invalid::new(
                    format!("postgresql.authentication.{key}.username"),
                    "must not be empty",
                ));
            }
            if role.password.is_empty() {
                return Err(Invalid::new(
                    format!("postgresql.authentication.{key}.password"),
                    "must not be empty",
                ));
            }
        }
        if pg.authentication.superuser.username == pg.authentication.replication.username {
            return Err(Invalid::new(
                "postgresql.authentication.replication.username",
                "must differ from the superuser's name",
            ));
        }
        check_replica_methods(&pg.create_replica_methods, self.backup.is_some())?;
        pg.callbacks.validate()?;
        for name in pg.parameters.keys() {
            let owner = managed::managed_parameter(name).or_else(|| {
                (pg.tls.is_some() && managed::TLS_PARAMETERS.contains(&name.as_str()))
                    .then_some("postgresql.tls")
            });
            if let Some(owner) = owner {
                return Err(Invalid::new(
                    format!("postgresql.parameters.{name}"),
                    format!("is set by pgpilot from {owner}; remove it here"),
                ));
            }
        }
        if let Some(tls) = &pg.tls {
            tls.validate()?;
        }

        if let Some(addr) = &self.api.connect_address {
            check_host_port("api.connect_address", addr)?;
        }
        if self.api.username.is_some() != self.api.password.is_some() {
            return Err(Invalid::new(
                "api.password",
                "api.username and api.password must be set together",
            ));
        }
        if self.api.username.as_deref() == Some("") {
            return Err(Invalid::new("api.username", "must not be empty"));
        }
        if self
            .api
            .username
            .as_deref()
            .is_some_and(|u| u.contains(':'))
        {
            return Err(Invalid::new(
                "api.username",
                "must not contain ':' (HTTP Basic auth separates user and password with it)",
            ));
        }
        if self.api.password.as_deref() == Some("") {
            return Err(Invalid::new("api.password", "must not be empty"));
        }
        if let Some(tls) = &self.api.tls {
            if tls.verify_client != VerifyClient::None && tls.ca_file.is_none() {
                return Err(Invalid::new(
                    "api.tls.ca_file",
                    "verify_client needs ca_file: the CA bundle that signs client certificates",
                ));
            }
        }
        self.bootstrap.validate("bootstrap")?;
        self.metrics.validate()?;
        if self.log.level.trim().is_empty() {
            return Err(Invalid::new("log.level", "must not be empty"));
        }
        if self.log.file.as_ref().is_some_and(|f| !f.is_absolute()) {
            return Err(Invalid::new("log.file", "must be an absolute path"));
        }
        for (key, secret) in [
            (
                "postgresql.authentication.superuser.password",
                Some(pg.authentication.superuser.password.as_str()),
            ),
            (
                "postgresql.authentication.replication.password",
                Some(pg.authentication.replication.password.as_str()),
            ),
            ("api.password", self.api.password.as_deref()),
            ("dcs.password", self.dcs.password.as_deref()),
        ] {
            check_secret(key, secret)?;
        }
        if let Some(backup) = &self.backup {
            backup.validate()?;
            backup.validate_spool(&self.postgresql.data_dir)?;
        }
        if let Some(from) = &self.bootstrap_from {
            from.validate(self.backup.is_some())?;
        }
        Ok(())
    }

    /// The `[bootstrap_from]` section when it asks for a backup.
    pub fn bootstrap_from_backup(&self) -> Option<&bootstrap_from::BootstrapFrom> {
        self.bootstrap_from
            .as_ref()
            .filter(|b| b.method == bootstrap_from::BootstrapMethod::Backup)
    }

    /// The file set for the postmaster's output.
    pub fn postgres_log_file(&self) -> PathBuf {
        self.postgresql.log_file.clone().unwrap_or_else(|| {
            let mut name = self.postgresql.data_dir.as_os_str().to_owned();
            name.push(".log");
            PathBuf::from(name)
        })
    }

    /// `pgpilot run`'s pid file, beside the data directory (like the async
    /// archiving spool): `<data_dir>.pgpilot.pid` ([`crate::pidfile`]).
    pub fn pid_file(&self) -> PathBuf {
        let mut name = self.postgresql.data_dir.as_os_str().to_owned();
        name.push(".pgpilot.pid");
        PathBuf::from(name)
    }

    /// The password file a replica's `primary_conninfo` names (`passfile`),
    /// beside the data directory: `<data_dir>.pgpilot-pgpass`. Outside the
    /// data directory so that clones and backups never copy it; named rather
    /// than written into `primary_conninfo`, which PostgreSQL logs in full
    /// whenever a reload changes it.
    pub fn replication_passfile(&self) -> PathBuf {
        let mut name = self.postgresql.data_dir.as_os_str().to_owned();
        name.push(".pgpilot-pgpass");
        PathBuf::from(name)
    }

    /// URL other members and ctl use to reach this member's REST API.
    pub fn api_url(&self) -> String {
        let addr = self
            .api
            .connect_address
            .clone()
            .unwrap_or_else(|| self.api.listen.to_string());
        let scheme = if self.api.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}/patroni")
    }

    /// `postgres://host:port/postgres`, as Patroni publishes it.
    pub fn conn_url(&self) -> String {
        format!("postgres://{}/postgres", self.postgresql.connect_address)
    }
}

impl PostgresTls {
    /// The paths must be absolute ([`crate::member_file`] reads the files).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, path) in [
            ("postgresql.tls.cert_file", Some(&self.cert_file)),
            ("postgresql.tls.key_file", Some(&self.key_file)),
            ("postgresql.tls.ca_file", self.ca_file.as_ref()),
        ] {
            if path.is_some_and(|p| !p.is_absolute()) {
                return Err(Invalid::new(key, "must be an absolute path"));
            }
        }
        Ok(())
    }
}

fn check_replica_methods(methods: &[ReplicaMethod], backup: bool) -> Result<(), Invalid> {
    let key = "postgresql.create_replica_methods";
    if methods.is_empty() {
        return Err(Invalid::new(
            key,
            "needs at least one method: \"backup\" or \"basebackup\"",
        ));
    }
    for (i, method) in methods.iter().enumerate() {
        if methods[..i].contains(method) {
            return Err(Invalid::new(
                key,
                format!("lists {:?} twice", method.as_str()),
            ));
        }
    }
    if methods.contains(&ReplicaMethod::Backup) && !backup {
        return Err(Invalid::new(
            key,
            "\"backup\" needs a [backup] section: the repository to restore from",
        ));
    }
    Ok(())
}

fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// A password must be one line of printable characters: a newline or other
/// control character would break the files and connection strings it goes
/// into (pgpass, conninfo, HTTP headers). The message never shows the value.
pub fn check_secret(key: &str, secret: Option<&str>) -> Result<(), Invalid> {
    if secret.is_some_and(|s| s.chars().any(char::is_control)) {
        return Err(Invalid::new(
            key,
            "must not contain a newline or other control character (value not shown)",
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) const EXAMPLE: &str = r#"
[cluster]
scope = "demo"
name = "pg1"

[dcs]
endpoints = ["http://127.0.0.1:2379"]

[postgresql]
data_dir = "/var/lib/pgpilot/pg1"
connect_address = "127.0.0.1:5432"
parameters = { max_connections = 50, shared_buffers = "128MB" }

[postgresql.authentication.superuser]
username = "postgres"
password = "secret"

[postgresql.authentication.replication]
username = "replicator"
password = "secret2"

[api]
listen = "127.0.0.1:8008"
"#;
}

#[cfg(test)]
mod tests {
    use super::tests_support::EXAMPLE;
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn example_parses_with_defaults() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.cluster.namespace, "pgpilot");
        assert_eq!(c.postgresql.port, 5432);
        assert_eq!(c.bootstrap.ttl, DynamicConfig::default().ttl);
        assert_eq!(c.api_url(), "http://127.0.0.1:8008/patroni");
        assert_eq!(
            c.postgresql.parameters["max_connections"],
            ParamValue::Int(50)
        );
    }

    fn key_of(text: &str) -> String {
        match parse(text) {
            Err(e) => e.key().unwrap_or("<none>").to_string(),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn password_with_a_newline_is_refused_without_showing_it() {
        let text = EXAMPLE.replace("password = \"secret2\"", "password = \"top\\nsecret\"");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.key(),
            Some("postgresql.authentication.replication.password")
        );
        assert!(!err.to_string().contains("top"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = EXAMPLE.replace("[api]", "[api]\nlisten_port = 3");
        assert_eq!(key_of(&text), "api.listen_port");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = EXAMPLE.replace(
            "connect_address = \"127.0.0.1:5432\"",
            "connect_address = \"127.0.0.1:5432\"\nport = \"x\"",
        );
        assert_eq!(key_of(&text), "postgresql.port");
    }

    #[test]
    fn missing_value_is_named() {
        let text = EXAMPLE.replace("name = \"pg1\"", "");
        assert_eq!(key_of(&text), "cluster.name");
    }

    #[test]
    fn impossible_timing_is_named() {
        let text = format!("{EXAMPLE}\n[bootstrap]\nttl = 10\nloop_wait = 5\nretry_timeout = 3\n");
        assert_eq!(key_of(&text), "bootstrap.ttl");
    }

    #[test]
    fn huge_durations_are_refused() {
        let text = format!(
            "{EXAMPLE}\n[bootstrap]\nttl = 10\nloop_wait = 3\nretry_timeout = 9223372036854775807\n"
        );
        assert_eq!(key_of(&text), "bootstrap.retry_timeout");
        let text = format!("{EXAMPLE}\n[bootstrap]\nttl = 9223372036854775807\n");
        assert_eq!(key_of(&text), "bootstrap.ttl");
        let text = EXAMPLE.replace(
            "connect_address = \"127.0.0.1:5432\"",
            "connect_address = \"127.0.0.1:5432\"\npg_ctl_timeout = 9223372036854775807",
        );
        assert_eq!(key_of(&text), "postgresql.pg_ctl_timeout");
    }

    #[test]
    fn bad_name_is_refused() {
        let text = EXAMPLE.replace("name = \"pg1\"", "name = \"pg 1\"");
        assert_eq!(key_of(&text), "cluster.name");
    }

    #[test]
    fn managed_parameter_is_refused() {
        let text = EXAMPLE.replace("max_connections = 50", "port = 5433");
        assert_eq!(key_of(&text), "postgresql.parameters.port");
    }

    #[test]
    fn syntax_error_gives_line() {
        let text = format!("{EXAMPLE}\n[api\n");
        match parse(&text) {
            Err(ConfigError::Syntax { line, .. }) => assert!(line > 20, "line {line}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn api_tls_is_checked() {
        let text = EXAMPLE.replace(
            "[api]\nlisten = \"127.0.0.1:8008\"",
            "[api]\nlisten = \"127.0.0.1:8008\"\n[api.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\nverify_client = \"required\"",
        );
        assert_eq!(key_of(&text), "api.tls.ca_file");
        let text = text.replace("verify_client = \"required\"", "");
        assert_eq!(key_of(&text), "api.tls.cert_file");
        let text = text.replace("cert_file", "certfile");
        assert_eq!(key_of(&text), "api.tls.certfile");
        let text = EXAMPLE.replace(
            "[api]\nlisten = \"127.0.0.1:8008\"",
            "[api]\nlisten = \"127.0.0.1:8008\"\n[api.tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\nverify_client = \"sometimes\"",
        );
        assert_eq!(key_of(&text), "api.tls.verify_client");
    }

    #[test]
    fn api_credentials_are_checked() {
        let text = EXAMPLE.replace("[api]", "[api]\nusername = \"a:b\"\npassword = \"x\"");
        assert_eq!(key_of(&text), "api.username");
        let text = EXAMPLE.replace("[api]", "[api]\nusername = \"a\"");
        assert_eq!(key_of(&text), "api.password");
    }

    #[test]
    fn replica_methods_are_checked() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(
            c.postgresql.create_replica_methods,
            vec![ReplicaMethod::Basebackup]
        );
        let with = |methods: &str, tail: &str| {
            format!(
                "{}{tail}",
                EXAMPLE.replace(
                    "[postgresql]\n",
                    &format!("[postgresql]\ncreate_replica_methods = {methods}\n")
                )
            )
        };
        let repo = "\n[backup]\nrepository = \"posix\"\n[backup.posix]\npath = \"/srv/repo\"\n";
        assert_eq!(
            key_of(&with("[\"backup\", \"basebackup\"]", "")),
            "postgresql.create_replica_methods"
        );
        let c = parse(&with("[\"backup\", \"basebackup\"]", repo)).unwrap();
        assert_eq!(
            c.postgresql.create_replica_methods,
            vec![ReplicaMethod::Backup, ReplicaMethod::Basebackup]
        );
        for bad in ["[]", "[\"basebackup\", \"basebackup\"]", "[\"pgbackrest\"]"] {
            assert!(
                key_of(&with(bad, repo)).starts_with("postgresql.create_replica_methods"),
                "{bad}"
            );
        }
    }

    #[test]
    fn bootstrap_from_is_checked() {
        let text = format!("{EXAMPLE}\n[bootstrap_from]\nmethod = \"backup\"\n");
        assert_eq!(key_of(&text), "bootstrap_from.method");
        let text = format!(
            "{text}target_lsn = \"nowhere\"\n[backup]\nrepository = \"posix\"\n[backup.posix]\npath = \"/r\"\n"
        );
        assert_eq!(key_of(&text), "bootstrap_from.target_lsn");
        let c = parse(&text.replace("nowhere", "0/3000028")).unwrap();
        assert!(c.bootstrap_from_backup().is_some());
        assert!(parse(EXAMPLE).unwrap().bootstrap_from_backup().is_none());
    }

    #[test]
    fn param_rendering_quotes() {
        assert_eq!(ParamValue::Text("it's".into()).to_conf(), "'it''s'");
        assert_eq!(ParamValue::Bool(true).to_conf(), "on");
    }
}
